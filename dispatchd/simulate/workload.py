"""The input every policy is run on: customers with their arrival, handle time and
patience drawn once (or read from a recorded trace), and agents with their shifts.

Drawing each customer's handle time and patience up front, not when it is served, is
what makes a comparison of policies fair: every policy sees the very same customers, and
only the handle-time factor of the agent who serves (``handle_factor``) may change a
session's length.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import msgspec

from dispatchd.simulate.scenario import (
    AgentPool,
    Constant,
    Dist,
    Exponential,
    Lognormal,
    Never,
    Scenario,
    ScenarioError,
    Stream,
    Uniform,
)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Agents keep to their shifts for this long after the last arrival while the run drains.
DRAIN_MS = DAY_MS


#: A customer before numbering: (arrival ms, group, priority, handle s, patience s); a
#: handle time or patience of None is drawn from the scenario's distributions.
Row = tuple[int, str, int, float | None, float | None]


class Customer(msgspec.Struct, frozen=True, gc=False):
    """One customer: session ``c<idx>``; times in ms from the start of the run."""

    idx: int
    at_ms: int
    group: str
    priority: int
    handle_ms: int
    patience_ms: int | None  # None: never abandons


class Agent(msgspec.Struct, frozen=True):
    """One agent of a pool, with the intervals (ms, [start, end)) it is online."""

    id: str
    pool: int
    capacity: int
    abilities: dict[str, float]
    handle_factor: dict[str, float]
    online: list[tuple[int, int]]


class Workload(msgspec.Struct, frozen=True):
    """Everything a run needs, in ms: identical for every policy."""

    scenario: Scenario
    horizon_ms: int  # arrivals happen in [0, horizon_ms)
    warmup_ms: int
    customers: list[Customer]
    agents: list[Agent]
    source: str  # "poisson" or "trace <path>"
    volume: float = 1.0  # the factor the Poisson rates were drawn with


def sample(dist: Dist, rng: random.Random) -> float | None:
    """One draw of ``dist`` in seconds (None for ``Never``)."""
    match dist:
        case Exponential(mean_s=mean):
            return rng.expovariate(1.0 / mean)
        case Lognormal(mean_s=mean, sd_s=sd):
            sigma2 = math.log1p((sd / mean) ** 2)
            return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))
        case Constant(value_s=value):
            return value
        case Uniform(min_s=low, max_s=high):
            return rng.uniform(low, high)
        case Never():
            return None
    raise AssertionError(dist)  # pragma: no cover - the union is closed


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# ----------------------------------------------------------------------- arrivals


def poisson_times(
    stream: Stream, scenario: Scenario, horizon_s: float, volume: float, rng: random.Random
) -> Iterator[float]:
    """Arrival times (s) of a Poisson process whose rate is piecewise constant: the
    stream's rate times the profile value of each profile step (the profile repeats)."""
    profile = stream.profile or scenario.profile
    step = scenario.profile_step_minutes * 60.0
    t = 0.0
    while t < horizon_s:
        k = int(t // step)
        end = min((k + 1) * step, horizon_s)
        rate = stream.rate_per_hour * profile[k % len(profile)] * volume / 3600.0
        gap = rng.expovariate(rate) if rate > 0 else math.inf
        if t + gap >= end:
            t = end  # memoryless: start the next step afresh at its boundary
            continue
        t += gap
        yield t


def _arrival_rows(scenario: Scenario, horizon_s: float, volume: float) -> list[Row]:
    rng = random.Random(f"{scenario.seed}/arrivals")
    drawn: list[tuple[int, int, str, int]] = []
    for i, stream in enumerate(scenario.arrivals):
        for t in poisson_times(stream, scenario, horizon_s, volume, rng):
            drawn.append((round(t * 1000), i, stream.group, stream.priority))
    drawn.sort()
    return [(at, group, prio, None, None) for at, _, group, prio in drawn]


def _customers(scenario: Scenario, rows: list[Row]) -> list[Customer]:
    """Number the arrivals and give each its handle time and patience (drawn when the
    row does not give them)."""
    rng = random.Random(f"{scenario.seed}/work")
    out: list[Customer] = []
    for idx, (at, group, prio, handle_s, patience_s) in enumerate(rows):
        handle = sample(scenario.handle_of(group), rng) if handle_s is None else handle_s
        patience = sample(scenario.patience_of(group), rng) if patience_s is None else patience_s
        out.append(Customer(
            idx=idx, at_ms=at, group=group, priority=prio, handle_ms=_ms(handle or 0.0),
            patience_ms=None if patience is None or math.isinf(patience) else _ms(patience),
        ))
    return out


# -------------------------------------------------------------------------- traces


def _number(value: object, what: str, where: str, *, blank: bool = True) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if blank:
            return None
        raise ScenarioError(f"{where}: {what} is missing")
    if isinstance(value, str) and value.strip().lower() in ("inf", "none", "never"):
        return math.inf
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: {what} is not a number: {value!r}") from None
    if not number >= 0:
        raise ScenarioError(f"{where}: {what} must be >= 0: {value!r}")
    return number


def _priority(value: object, where: str) -> int:
    if value is None or value == "":
        return 0
    try:
        prio = int(str(value))
    except ValueError:
        raise ScenarioError(f"{where}: priority is not an integer: {value!r}") from None
    if not -1000 <= prio <= 1000:
        raise ScenarioError(f"{where}: priority must be an integer -1000..1000: {value!r}")
    return prio


def _trace_row(raw: dict[str, object], where: str, groups: set[str]) -> Row:
    at = _number(raw.get("time_s"), "time_s", where, blank=False)
    if at is not None and math.isinf(at):
        raise ScenarioError(f"{where}: time_s must be finite")
    group = raw.get("group")
    if not isinstance(group, str) or group not in groups:
        raise ScenarioError(f"{where}: group {group!r} is not a group of the scenario")
    prio = _priority(raw.get("priority"), where)
    handle = _number(raw.get("handle_s"), "handle_s", where)
    if handle is not None and math.isinf(handle):
        raise ScenarioError(f"{where}: handle_s must be finite")
    patience = _number(raw.get("patience_s"), "patience_s", where)
    return (round((at or 0.0) * 1000), group, prio, handle, patience)


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScenarioError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ScenarioError(f"{path}:{n}: not a JSON object")
            yield f"{path}:{n}", obj


def read_trace(path: str | Path, scenario: Scenario) -> list[Row]:
    """The rows of a trace file (CSV with a header, or JSON lines), sorted by time."""
    path = Path(path)
    groups = {g.name for g in scenario.groups}
    rows: list[Row] = []
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"time_s", "group"} <= set(reader.fieldnames):
                    raise ScenarioError(f"{path}: the header must name time_s and group")
                for row in reader:
                    rows.append(_trace_row(dict(row), f"{path}:{reader.line_num}", groups))
        else:
            for where, obj in _jsonl_records(path):
                rows.append(_trace_row(obj, where, groups))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text: {exc}") from None
    rows.sort(key=lambda r: r[0])
    return rows


# -------------------------------------------------------------------------- agents


def online_intervals(pool: AgentPool, end_ms: int) -> list[tuple[int, int]]:
    """The pool's shifts, repeated every 24 h from the start, as merged [start, end) ms
    intervals within [0, end_ms); no shifts means online throughout."""
    if pool.shifts is None:
        return [(0, end_ms)]
    spans: list[tuple[int, int]] = []
    for day in range(-1, end_ms // DAY_MS + 1):
        for start, end in pool.shifts:
            a = max(0, day * DAY_MS + round(start * HOUR_MS))
            b = min(end_ms, day * DAY_MS + round(end * HOUR_MS))
            if a < b:
                spans.append((a, b))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def agents(scenario: Scenario, end_ms: int, staff: float = 1.0) -> list[Agent]:
    """Every agent of every pool, in pool order; ``staff`` scales each pool's count."""
    out: list[Agent] = []
    for p, pool in enumerate(scenario.agents):
        count = int(pool.count * staff + 0.5)
        online = online_intervals(pool, end_ms)
        width = len(str(count))
        for i in range(1, count + 1):
            out.append(Agent(
                id=f"{pool.name}-{i:0{width}d}", pool=p, capacity=pool.capacity,
                abilities=dict(pool.abilities), handle_factor=dict(pool.handle_factor),
                online=online,
            ))
    return out


# ------------------------------------------------------------------------ workload


def build(
    scenario: Scenario,
    *,
    hours: float | None = None,
    trace: str | Path | None = None,
    volume: float = 1.0,
    staff: float = 1.0,
) -> Workload:
    """Draw (or read) the customers and lay out the agents.

    Args:
        hours: arrivals stop after this many hours; default the scenario's ``hours``,
            or with a trace the time of its last arrival.
        trace: a recorded trace to use instead of the scenario's Poisson arrivals.
        volume: multiplies every Poisson arrival rate (not a trace).
        staff: multiplies the size of every agent pool (rounded).
    """
    if trace is not None:
        rows = read_trace(trace, scenario)
        if hours is not None:
            rows = [r for r in rows if r[0] < hours * HOUR_MS]
        horizon_ms = round(hours * HOUR_MS) if hours is not None else (
            rows[-1][0] + 1 if rows else 1)
        source = f"trace {trace}"
    else:
        if not scenario.arrivals:
            raise ScenarioError("the scenario has no [[arrivals]] and no trace was given")
        horizon_ms = round((hours if hours is not None else scenario.hours) * HOUR_MS)
        rows = _arrival_rows(scenario, horizon_ms / 1000, volume)
        source = "poisson"
    return Workload(
        scenario=scenario,
        horizon_ms=horizon_ms,
        warmup_ms=min(round(scenario.warmup_minutes * 60_000), horizon_ms),
        customers=_customers(scenario, rows),
        agents=agents(scenario, horizon_ms + DRAIN_MS, staff),
        source=source,
        volume=volume,
    )
