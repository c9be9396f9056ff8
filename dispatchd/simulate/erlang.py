"""Erlang C: the M/M/c queue (Poisson arrivals, exponential handle times, c agents of
capacity 1, nobody abandons), against which the simulator is validated."""

from __future__ import annotations

import math


def erlang_c(c: int, load: float) -> float:
    """Probability that a customer waits at all (P(wait > 0)).

    Args:
        c: number of agents.
        load: offered load in Erlang (arrival rate x mean handle time); must be < c.
    """
    if not 0 <= load < c:
        raise ValueError(f"Erlang C needs 0 <= load < c, got load={load}, c={c}")
    # Erlang B by its stable recursion, then C from B.
    b = 1.0
    for k in range(1, c + 1):
        b = load * b / (k + load * b)
    rho = load / c
    return b / (1 - rho + rho * b)


def asa_s(c: int, load: float, mean_handle_s: float) -> float:
    """Average speed of answer (mean wait of all customers), in seconds."""
    return erlang_c(c, load) * mean_handle_s / (c - load)


def service_level(c: int, load: float, mean_handle_s: float, within_s: float) -> float:
    """Share of customers answered within ``within_s`` seconds."""
    return 1 - erlang_c(c, load) * math.exp(-(c - load) * within_s / mean_handle_s)
