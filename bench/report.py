"""What the bench prints: progress on stderr, one or more lines per scenario on stdout,
and at the end one ``RESULT key=value ...`` line for scripts.

RESULT values never contain spaces: numbers (rates rounded to integers, latencies in ms
and CPU in µs with 2 decimals, ratios with 3), or words (``yes``/``no``,
``unavailable``, a version such as ``valkey-9.1.2``).
"""

from __future__ import annotations

import re
import sys
import time

from bench.loadgen import StepResult

_TOKEN = re.compile(r"^[A-Za-z0-9_.:/+-]+\Z")


def label(n: float) -> str:
    """1000 -> 1k, 20000 -> 20k, 1000000 -> 1M, 1500 -> 1500."""
    n = int(n)
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def latency_text(r: StepResult, which: str = "assign") -> str:
    """``p50 1.2 ms, p99 8.0 ms, p99.9 15.1 ms`` (``≥`` when some had no event yet)."""
    values = r.assign if which == "assign" else r.latency
    ge = "≥" if r.lower_bound else ""
    names = ("p50", "p99", "p99.9")
    return ", ".join(f"{n} {ge}{v:,.1f} ms" for n, v in zip(names, values, strict=True))


def cpu_text(r: StepResult, unit: str = "command", own: str = "daemon") -> str:
    """Redis and daemon (or Node) CPU per command (or customer)."""
    text = (f"Redis CPU {r.redis_cpu_us:,.1f} µs/{unit}, {own} CPU "
            f"{r.daemon_cpu_us:,.1f} µs/{unit}")
    if r.gen_cpu_us:
        text += f", bench generator CPU {r.gen_cpu_us:,.1f} µs/{unit}"
    return text


def step_text(r: StepResult, unit: str = "cmd") -> str:
    """One ramp step for the progress output."""
    verdict = "sustained" if r.sustained else f"NOT sustained ({r.why_not})"
    return (f"{r.target:,.0f} {unit}/s: sent {r.rate:,.0f}/s, applied {r.applied_rate:,.0f}/s, "
            f"p99 {'≥' if r.lower_bound else ''}{r.latency[1]:,.1f} ms, "
            f"backlog {r.backlog_growth:+,} -> {verdict}")


class Report:
    """Collects the figures; prints lines as they come."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.values: dict[str, str] = {}

    def progress(self, text: str) -> None:
        """A progress line on stderr, with the seconds since the start."""
        print(f"bench {time.monotonic() - self.t0:7.1f}s  {text}", file=sys.stderr, flush=True)

    def line(self, scenario: str, text: str) -> None:
        """A result line on stdout."""
        print(f"{scenario:<11} {text}", flush=True)

    def put(self, key: str, value: float | int | str, digits: int = 0) -> None:
        """Record ``key=value`` for the RESULT line (numbers rounded to ``digits``)."""
        if isinstance(value, str):
            text = value
        elif digits == 0:
            text = str(round(value))
        else:
            text = f"{value:.{digits}f}"
        if not _TOKEN.match(key) or not _TOKEN.match(text):
            raise ValueError(f"not a RESULT token: {key}={text}")
        self.values[key] = text

    def ratio(self, key: str, top: float | None, bottom: float | None) -> None:
        """Record ``top / bottom`` when both are known and ``bottom`` > 0."""
        if top is not None and bottom:
            self.put(key, top / bottom, 3)

    def result_line(self) -> str:
        """``RESULT k=v ...`` in the order the figures were recorded."""
        return "RESULT " + " ".join(f"{k}={v}" for k, v in self.values.items())
