"""The text report: which runs were made how, then one table per view of the figures."""

from __future__ import annotations

from collections.abc import Sequence

from dispatchd.simulate import erlang
from dispatchd.simulate.scenario import Exponential, Never
from dispatchd.simulate.stats import Summary
from dispatchd.simulate.workload import Workload

ENGINES = {
    "lua": "real Lua engine",
    "python": "Python baseline",
}


def pct(x: float | None) -> str:
    """A ratio as a percentage with one decimal, "-" for none."""
    return "-" if x is None else f"{100 * x:.1f}"


def secs(x: float | None) -> str:
    """Seconds with one decimal, "-" for none."""
    return "-" if x is None else f"{x:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def erlang_reference(work: Workload) -> tuple[int, float, float] | None:
    """(c, offered load in Erlang, mean handle s) when the workload is an M/M/c queue:
    one group, no tiers, Poisson arrivals at a constant rate, exponential handle times,
    no abandonment, always-online agents of capacity 1 with no handle factor."""
    s = work.scenario
    if len(s.groups) != 1 or s.groups[0].tiers or work.source != "poisson":
        return None
    handle, patience = s.handle_of(s.groups[0].name), s.patience_of(s.groups[0].name)
    profiles = [st.profile or s.profile for st in s.arrivals]
    if not isinstance(handle, Exponential) or not isinstance(patience, Never):
        return None
    if any(len(set(p)) != 1 for p in profiles):
        return None
    if any(p.capacity != 1 or p.shifts is not None or p.handle_factor for p in s.agents):
        return None
    per_hour = sum(st.rate_per_hour * p[0] for st, p in zip(s.arrivals, profiles, strict=True))
    load = per_hour * work.volume / 3600 * handle.mean_s
    c = len(work.agents)
    return (c, load, handle.mean_s) if load < c else None


def theory_line(work: Workload) -> str | None:
    """Erlang C's figures for an M/M/c workload, else None."""
    ref = erlang_reference(work)
    if ref is None:
        return None
    c, load, mean = ref
    sl_s = work.scenario.service_level_s
    return (
        f"theory (Erlang C, M/M/c, c={c}, offered load {load:.2f} Erlang): "
        f"P(wait>0) {pct(erlang.erlang_c(c, load))} %, ASA {secs(erlang.asa_s(c, load, mean))} s, "
        f"SL {pct(erlang.service_level(c, load, mean, sl_s))} % within {sl_s:g} s"
    )


def runs_table(summaries: Sequence[Summary], where: dict[str, str]) -> str:
    """Which policy ran on what, with its cost."""
    rows = [
        [s.policy, ENGINES.get(s.engine, s.engine), where.get(s.policy, ""),
         f"{s.calls:,}" if s.engine == "lua" else "-", f"{s.elapsed_s:.1f}"]
        for s in summaries
    ]
    return table(["policy", "routing by", "where", "engine calls", "wall s"], rows, left=3)


def totals_table(summaries: Sequence[Summary], sl_s: float) -> str:
    """One row per policy: every customer of the window."""
    rows = []
    for s in summaries:
        t = s.total
        worst = s.groups[s.worst_group].service_level if s.worst_group else None
        rows.append([
            s.policy, s.engine, f"{t.offered:,}", f"{t.answered:,}", pct(t.service_level),
            secs(t.asa_s), secs(t.p90_wait_s), pct(t.p_wait), pct(t.abandonment),
            pct(s.occupancy), pct(t.overflow),
            "-" if s.fairness is None else f"{s.fairness:.3f}",
            f"{s.worst_group} {pct(worst)}" if s.worst_group else "-",
        ])
    headers = ["policy", "engine", "offered", "answered", f"SL{sl_s:g}s%", "ASA s", "p90 s",
               "Pwait%", "aband%", "occup%", "overfl%", "fairness", "worst group SL%"]
    return table(headers, rows, left=2)


def groups_table(summaries: Sequence[Summary], sl_s: float) -> str:
    """One row per group and policy."""
    rows = []
    names = list(summaries[0].groups) if summaries else []
    for g in names:
        for s in summaries:
            f = s.groups[g]
            rows.append([g, s.policy, f"{f.offered:,}", pct(f.service_level), secs(f.asa_s),
                         secs(f.p90_wait_s), pct(f.abandonment), pct(f.overflow),
                         f"{f.unserved:,}"])
    headers = ["group", "policy", "offered", f"SL{sl_s:g}s%", "ASA s", "p90 s", "aband%",
               "overfl%", "unserved"]
    return table(headers, rows, left=2)


def pools_table(summaries: Sequence[Summary]) -> str:
    """One row per agent pool and policy."""
    rows = []
    names = [p.pool for p in summaries[0].pools] if summaries else []
    for i, name in enumerate(names):
        for s in summaries:
            p = s.pools[i]
            rows.append([name, s.policy, str(p.agents), f"{p.handled_per_agent:.1f}",
                         pct(p.occupancy), pct(p.occupancy_min), pct(p.occupancy_max),
                         "-" if p.fairness is None else f"{p.fairness:.3f}"])
    headers = ["pool", "policy", "agents", "sessions/agent", "occup%", "min%", "max%",
               "fairness"]
    return table(headers, rows, left=2)


def render(work: Workload, summaries: Sequence[Summary], where: dict[str, str],
           title: str) -> str:
    """The whole report."""
    s = work.scenario
    window = (work.horizon_ms - work.warmup_ms) / 3_600_000
    parts = [
        title,
        f"{len(work.customers):,} customers ({work.source}) over {work.horizon_ms / 3.6e6:g} h, "
        f"{len(work.agents):,} agents in {len(s.agents)} pools, {len(s.groups)} groups, "
        f"seed {s.seed}; figures over {window:g} h after a {work.warmup_ms / 60_000:g} min "
        "warm-up; every policy got the same customers",
        "",
        runs_table(summaries, where),
        "",
        totals_table(summaries, s.service_level_s),
    ]
    theory = theory_line(work)
    if theory:
        parts += ["", theory]
    parts += ["", groups_table(summaries, s.service_level_s), "", pools_table(summaries)]
    return "\n".join(parts)
