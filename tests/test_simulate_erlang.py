"""The simulator against queueing theory: one group of c single-capacity agents, Poisson
arrivals, exponential handle times, nobody abandons: an M/M/c queue, whose probability
of waiting and average speed of answer Erlang C gives exactly.

The SPEC policy runs on the real Lua engine (the session's Valkey); a confidence interval
from batch means (20 batches of consecutive customers after a warm-up, Student t at
99 %) must contain Erlang C's values. An engine call costs about half a millisecond, so
that run is kept to ~21,000 customers and its interval is loose (about ±13 % on
P(wait>0), ±33 % on ASA); the same workload through the Python baseline must then give
every customer exactly the same wait, and the Python router, fast, is held to a tight
interval on ~290,000 customers. The runs are seeded, so the test is deterministic; the
figures are printed (``pytest -s``) for bench/RESULTS-simulate.md.
"""

from __future__ import annotations

import math
import statistics

from dispatchd.engine import Engine
from dispatchd.simulate import erlang, report, scenario, stats
from dispatchd.simulate.baseline import BaselineRouter
from dispatchd.simulate.loop import LuaRouter, Records, Simulation
from dispatchd.simulate.workload import Workload, build

C, LOAD, HANDLE_S = 10, 8.0, 300.0
BATCHES = 20
T_995_19 = 2.861  # Student t quantile 0.995 with 19 degrees of freedom: a 99 % interval

MMC = """
hours = {hours}
seed = {seed}
warmup_minutes = 120
handle = {{ dist = "exponential", mean_s = {handle} }}
patience = {{ dist = "none" }}
[[groups]]
name = "g"
[[agents]]
name = "a"
count = {c}
capacity = 1
abilities = {{ g = 1.0 }}
[[arrivals]]
group = "g"
rate_per_hour = {rate}
"""


def mmc(hours: float, seed: int) -> Workload:
    text = MMC.format(hours=hours, seed=seed, handle=HANDLE_S, c=C,
                      rate=LOAD / HANDLE_S * 3600)
    return build(scenario.parse(text.encode(), "toml"))


def batch_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 99 % interval) by the method of batch means."""
    size = len(values) // BATCHES
    means = [statistics.fmean(values[i * size : (i + 1) * size]) for i in range(BATCHES)]
    return statistics.fmean(means), T_995_19 * statistics.stdev(means) / math.sqrt(BATCHES)


def compare(work: Workload, rec: Records, label: str) -> tuple[float, float, float, float]:
    """Assert Erlang C is inside both intervals; returns (P, ±, ASA, ±)."""
    window = [c.idx for c in work.customers if c.at_ms >= work.warmup_ms]
    assert all(rec.wait_ms[i] >= 0 for i in window)  # infinite patience: all answered
    p, p_hw = batch_ci([float(rec.wait_ms[i] > 0) for i in window])
    asa, asa_hw = batch_ci([rec.wait_ms[i] / 1000 for i in window])
    theory_p, theory_asa = erlang.erlang_c(C, LOAD), erlang.asa_s(C, LOAD, HANDLE_S)
    print(f"\n{label}: {len(window):,} customers; P(wait>0) {p:.4f} ± {p_hw:.4f} "
          f"(Erlang C {theory_p:.4f}); ASA {asa:.2f} ± {asa_hw:.2f} s "
          f"(Erlang C {theory_asa:.2f} s); {rec.calls:,} router calls in {rec.elapsed_s:.1f} s")
    assert abs(p - theory_p) <= p_hw, (p, p_hw, theory_p)
    assert abs(asa - theory_asa) <= asa_hw, (asa, asa_hw, theory_asa)
    return p, p_hw, asa, asa_hw


def test_erlang_c_values() -> None:
    """The module's formulas against published values (and a closed form)."""
    assert erlang.erlang_c(1, 0.5) == 0.5  # M/M/1: P(wait) = rho
    assert math.isclose(erlang.erlang_c(10, 8.0), 0.409180, abs_tol=1e-6)
    assert math.isclose(erlang.asa_s(10, 8.0, 300.0), 61.3770, abs_tol=1e-3)
    assert math.isclose(erlang.service_level(10, 8.0, 300.0, 20.0), 0.641896, abs_tol=1e-5)


async def test_spec_engine_matches_erlang_c(engine: Engine, tenant: str) -> None:
    """About 21,000 customers through the Lua scripts (~42,000 calls, 20-40 s)."""
    work = mmc(hours=220, seed=7)
    rec = await Simulation(work, LuaRouter(engine, tenant)).run()
    compare(work, rec, "spec (Lua engine)")
    # The report shows the theory line for this M/M/c workload.
    summary = stats.summarize(work, rec, "spec", "lua")
    line = report.theory_line(work)
    assert line is not None and "c=10" in line and "8.00 Erlang" in line
    assert summary.total.unserved == 0 and summary.total.abandoned == 0
    # With identical agents, who serves does not change when anyone is served: the
    # Python engine must give every customer the very same wait as the Lua engine.
    twin = await Simulation(work, BaselineRouter("longest-idle")).run()
    assert twin.wait_ms == rec.wait_ms


async def test_simulation_loop_matches_erlang_c_tightly() -> None:
    """The loop and the statistics, with ten times the customers (Python router)."""
    work = mmc(hours=3000, seed=11)
    rec = await Simulation(work, BaselineRouter("round-robin")).run()
    _, p_hw, _, asa_hw = compare(work, rec, "round-robin (Python)")
    assert p_hw < 0.03 and asa_hw < 8  # and the interval is tight
