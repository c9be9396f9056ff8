"""From what happened to each customer to the figures of SPEC §5.

The figures cover the **window** [warm-up, end of arrivals): customers who arrived in
it, and agent time inside it. Definitions (also in docs/simulate.md):

* offered: customers who arrived; answered: assigned an agent; abandoned: left the
  queue (patience); unserved: still waiting when the run ended (nobody could serve them).
* service level: answered within the threshold / (answered + abandoned + unserved).
* ASA: mean wait of the answered, arrival to assignment; p90: its 90th percentile.
* P(wait>0): share of the answered who were not assigned at once.
* abandonment: abandoned / offered. overflow: share of the answered served by an agent
  of an overflow tier.
* occupancy: busy session-slot time / staffed slot time (online time x capacity).
* fairness: Jain's index (sum x)^2 / (n sum x^2) of the agents' occupancies within a
  pool (1 = evenly loaded), averaged over pools weighted by their size.
"""

from __future__ import annotations

import math
from collections import defaultdict

import msgspec

from dispatchd.simulate.loop import Records
from dispatchd.simulate.workload import Workload


class Figures(msgspec.Struct, kw_only=True):
    """Customer figures of a set of customers (a group, or all)."""

    offered: int
    answered: int
    abandoned: int
    unserved: int
    service_level: float | None
    asa_s: float | None
    p90_wait_s: float | None
    p_wait: float | None
    abandonment: float | None
    overflow: float | None


class PoolFigures(msgspec.Struct, kw_only=True):
    """Agent figures of one pool."""

    pool: str
    agents: int
    handled_per_agent: float
    occupancy: float | None
    occupancy_min: float | None
    occupancy_max: float | None
    fairness: float | None


class Bucket(msgspec.Struct, kw_only=True):
    """Customers who arrived in [start_h, start_h + width) hours."""

    start_h: float
    offered: int
    service_level: float | None
    asa_s: float | None


class Summary(msgspec.Struct, kw_only=True):
    """Every figure of one policy's run."""

    policy: str
    engine: str
    total: Figures
    groups: dict[str, Figures]
    pools: list[PoolFigures]
    occupancy: float | None
    fairness: float | None
    worst_group: str | None
    buckets: list[Bucket]
    agent_occupancy: list[float]
    calls: int
    commands: int
    elapsed_s: float


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def percentile(values: list[int], q: float) -> float | None:
    """Nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def figures(work: Workload, rec: Records, idx: list[int]) -> Figures:
    """The customer figures of customers ``idx``."""
    threshold = work.scenario.service_level_s * 1000
    waits = [rec.wait_ms[i] for i in idx if rec.wait_ms[i] >= 0]
    abandoned = sum(rec.abandoned[i] for i in idx)
    unserved = len(idx) - len(waits) - abandoned
    within = sum(w <= threshold for w in waits)
    over = sum(rec.tier[i] > 0 for i in idx if rec.wait_ms[i] >= 0)
    p90 = percentile(waits, 90)
    return Figures(
        offered=len(idx),
        answered=len(waits),
        abandoned=abandoned,
        unserved=unserved,
        service_level=_ratio(within, len(idx)),
        asa_s=_ratio(sum(waits) / 1000, len(waits)),
        p90_wait_s=None if p90 is None else p90 / 1000,
        p_wait=_ratio(sum(w > 0 for w in waits), len(waits)),
        abandonment=_ratio(abandoned, len(idx)),
        overflow=_ratio(over, len(waits)),
    )


def _overlap(a: int, b: int, lo: int, hi: int) -> int:
    return max(0, min(b, hi) - max(a, lo))


def agent_time(work: Workload, rec: Records) -> tuple[list[int], list[int], list[int]]:
    """Per agent, in the window: busy slot-ms, staffed slot-ms, sessions started."""
    lo, hi = work.warmup_ms, work.horizon_ms
    busy = [0] * len(work.agents)
    handled = [0] * len(work.agents)
    for c in work.customers:
        ai = rec.agent[c.idx]
        if ai >= 0:
            start = c.at_ms + rec.wait_ms[c.idx]
            busy[ai] += _overlap(start, rec.end_ms[c.idx], lo, hi)
            handled[ai] += lo <= start < hi
    staffed = [a.capacity * sum(_overlap(s, e, lo, hi) for s, e in a.online)
               for a in work.agents]
    return busy, staffed, handled


def jain(values: list[float]) -> float | None:
    """Jain's fairness index of ``values`` (1 = all equal); None for no values."""
    if not values:
        return None
    square = sum(v * v for v in values)
    return 1.0 if square == 0 else sum(values) ** 2 / (len(values) * square)


def pools(work: Workload, rec: Records) -> tuple[list[PoolFigures], list[float]]:
    """Per-pool agent figures, and the occupancy of each staffed agent."""
    busy, staffed, handled = agent_time(work, rec)
    members: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(work.agents):
        members[a.pool].append(i)
    out: list[PoolFigures] = []
    every: list[float] = []
    for p, pool in enumerate(work.scenario.agents):
        ids = members.get(p, [])
        occ = [busy[i] / staffed[i] for i in ids if staffed[i]]
        every += occ
        out.append(PoolFigures(
            pool=pool.name, agents=len(ids),
            handled_per_agent=_ratio(sum(handled[i] for i in ids), len(ids)) or 0.0,
            occupancy=_ratio(sum(busy[i] for i in ids), sum(staffed[i] for i in ids)),
            occupancy_min=min(occ) if occ else None,
            occupancy_max=max(occ) if occ else None,
            fairness=jain(occ),
        ))
    return out, every


def buckets(work: Workload, rec: Records, count: int = 24) -> list[Bucket]:
    """Service level and ASA by arrival time, in ``count`` equal buckets of the window."""
    lo, hi = work.warmup_ms, work.horizon_ms
    width = max(1, (hi - lo) // count)
    members: list[list[int]] = [[] for _ in range(count)]
    for c in work.customers:
        if lo <= c.at_ms < hi:
            members[min(count - 1, (c.at_ms - lo) // width)].append(c.idx)
    out = []
    for k, idx in enumerate(members):
        f = figures(work, rec, idx)
        out.append(Bucket(start_h=(lo + k * width) / 3_600_000, offered=f.offered,
                          service_level=f.service_level, asa_s=f.asa_s))
    return out


def summarize(work: Workload, rec: Records, policy: str, engine: str) -> Summary:
    """Every figure of one run."""
    lo, hi = work.warmup_ms, work.horizon_ms
    window = [c.idx for c in work.customers if lo <= c.at_ms < hi]
    by_group: dict[str, list[int]] = {g.name: [] for g in work.scenario.groups}
    for i in window:
        by_group[work.customers[i].group].append(i)
    groups = {g: figures(work, rec, idx) for g, idx in by_group.items() if idx}
    pool_figures, occupancies = pools(work, rec)
    busy, staffed, _ = agent_time(work, rec)
    weighted = [(p.fairness, p.agents) for p in pool_figures if p.fairness is not None]
    ranked = [(f.service_level, g) for g, f in groups.items() if f.service_level is not None]
    return Summary(
        policy=policy,
        engine=engine,
        total=figures(work, rec, window),
        groups=groups,
        pools=pool_figures,
        occupancy=_ratio(sum(busy), sum(staffed)),
        fairness=_ratio(sum(f * n for f, n in weighted), sum(n for _, n in weighted)),
        worst_group=min(ranked)[1] if ranked else None,
        buckets=buckets(work, rec),
        agent_occupancy=occupancies,
        calls=rec.calls,
        commands=rec.commands,
        elapsed_s=rec.elapsed_s,
    )
