"""The scenarios of ``dispatchd bench``; :mod:`bench.run` runs them in order.

Each takes the run's :class:`Ctx`, prints its lines and records its RESULT keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from bench.ceiling import ceiling, count_assign_calls, n_call_script
from bench.centre import Centre
from bench.direct import PER_CALL, Tally
from bench.loadgen import LoadGen, StepResult
from bench.ops import OpsRun
from bench.report import Report, cpu_text, label, latency_text, step_text
from bench.scale import ScaleEnv, ScaleResult, scale_point
from bench.servers import Daemon, Server, delete_matching
from bench.sweep import SweepPoint, SweepSpec, sweep
from dispatchd import keys
from dispatchd.engine import Engine

TENANT = "dispatchd-bench"
CALIBRATION_TENANT = "dispatchd-bench-cal"
OPS_TENANT = "dispatchd-bench-ops"
#: ``sweep``'s tenants are this, a dash and the number of agents (``-500``, ``-5k``).
SWEEP_TENANT = "dispatchd-bench-sweep"


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of a run (``--quick`` or full)."""

    name: str
    agents: int
    warm_s: float
    measure_s: float
    ramp_start: float
    ramp_factor: float
    ramp_steps: int
    bisect: bool
    scale_sizes: tuple[int, ...]
    scale_cycles: int
    ceiling_calls: int
    retry: bool = True
    """Run a failed ramp step once more before giving up (the machine is noisy)."""
    groups: int = 50
    capacity: int = 3
    handle_s: float = 1.0
    latency_rates: tuple[int, ...] = (1000, 5000, 20000)
    quiesce_s: float = 120.0
    ops_count: int = 20_000
    """Operations of each type in ``ops``."""
    sweep_sizes: tuple[int, ...] = (500, 5000, 50_000)
    """Numbers of agents in ``sweep``."""
    sweep_cycles: int = 10_000
    """Cycles (3 commands each) of ``sweep``'s workload, at every size."""


def sweep_tenant(agents: int) -> str:
    """The tenant of ``sweep``'s centre of ``agents`` agents."""
    return f"{SWEEP_TENANT}-{label(agents)}"


def bench_tenants(profile: Profile) -> tuple[str, ...]:
    """Every tenant a run with ``profile`` may write to."""
    from bench.multitenant import tenant_names

    return (TENANT, CALIBRATION_TENANT, OPS_TENANT,
            *(sweep_tenant(n) for n in profile.sweep_sizes), *tenant_names())


@dataclass
class Ctx:
    """Everything a scenario needs, and what earlier scenarios found."""

    profile: Profile
    report: Report
    server: Server
    client: aioredis.Redis
    engine: Engine
    workdir: Path
    centre: Centre
    seed: int
    node: str = "node"
    malloc: str = "auto"
    ceiling_rate: float | None = None
    ceiling_assign_rate: float | None = None
    ours: StepResult | None = None
    scale: dict[int, ScaleResult] = field(default_factory=dict)


class Runner(Protocol):
    """Our load generator or the BullMQ peer."""

    async def step(self, target: float, warm_s: float, measure_s: float) -> StepResult: ...

    async def quiesce(self, timeout: float) -> bool: ...


# ---------------------------------------------------------------------------- ramp


async def _step(run: Runner, ctx: Ctx, rate: float, name: str, unit: str) -> StepResult:
    r = await run.step(round(rate, -1) or rate, ctx.profile.warm_s, ctx.profile.measure_s)
    ctx.report.progress(f"{name} {step_text(r, unit)}")
    return r


async def _try(run: Runner, ctx: Ctx, rate: float, name: str, unit: str) -> StepResult:
    """One step; a failed one is run again after a quiesce if the profile says so."""
    r = await _step(run, ctx, rate, name, unit)
    if not r.sustained and ctx.profile.retry:
        await run.quiesce(ctx.profile.quiesce_s)
        r = await _step(run, ctx, rate, name, unit)
    return r


async def ramp(run: Runner, ctx: Ctx, name: str, *, unit: str = "cmd",
               scale: float = 1.0) -> tuple[StepResult | None, StepResult | None]:
    """Raise the rate by ``ramp_factor`` until a step is not sustained (twice in a row).

    Leaves the last step's load in flight (the caller quiesces or resets as it needs).
    Starts with an unmeasured warm-up step (connections, caches, JIT), then measures from
    ``ramp_start x scale``; if that fails, halves (at most 3 times). With ``bisect``,
    tries the midpoint between the best and the failed rate once.
    Returns: (the best sustained step or None, the first failed step or None).
    """
    p = ctx.profile
    best: StepResult | None = None
    failed: StepResult | None = None
    rate = p.ramp_start * scale
    await run.step(rate, p.warm_s, p.warm_s)
    for _ in range(p.ramp_steps):
        r = await _try(run, ctx, rate, name, unit)
        if r.sustained:
            best, rate = r, rate * p.ramp_factor
            continue
        failed = r
        if best is not None or rate < p.ramp_start * scale / 7:
            break
        await run.quiesce(p.quiesce_s)
        rate /= 2
    if p.bisect and best is not None and failed is not None:
        await run.quiesce(p.quiesce_s)
        r = await _try(run, ctx, (best.target + failed.target) / 2, name, unit)
        best, failed = (r, failed) if r.sustained else (best, r)
    return best, failed


# ------------------------------------------------------------------------- ceiling


async def ceiling_scenario(ctx: Ctx) -> None:
    """Trivial EVALSHA and an assignment-sized script, both pipelined."""
    calls = await count_assign_calls(ctx.engine, CALIBRATION_TENANT)
    n = max(1, round(calls))
    trivial = await ceiling(ctx.client, "return 1", ctx.profile.ceiling_calls, TENANT)
    assign = await ceiling(ctx.client, n_call_script(n), ctx.profile.ceiling_calls, TENANT)
    await delete_matching(ctx.client, keys.prefix(CALIBRATION_TENANT) + "*")
    ctx.ceiling_rate, ctx.ceiling_assign_rate = trivial.rate, assign.rate
    ctx.report.line("ceiling", f"trivial EVALSHA: {trivial.rate:,.0f} calls/s (Redis CPU "
                    f"{trivial.redis_cpu_us:.1f} µs/call), pipelined 100 per round trip")
    ctx.report.line("ceiling", f"{n}-call script (one assignment on the gateway path makes "
                    f"{calls:.1f} Redis calls): {assign.rate:,.0f} calls/s (Redis CPU "
                    f"{assign.redis_cpu_us:.1f} µs/call)")
    put = ctx.report.put
    put("ceiling_per_s", trivial.rate)
    put("ceiling_redis_cpu_us", trivial.redis_cpu_us, 2)
    put("assign_calls", calls, 2)
    put("ceiling_assign_per_s", assign.rate)
    put("ceiling_assign_redis_cpu_us", assign.redis_cpu_us, 2)


# ---------------------------------------------------------------------- ops, sweep

#: The order ``ops`` prints its figures in.
_OPS_ORDER = ("arrive_assigned", "arrive_queued", "agent_ready", "agent_message",
              "close_take", "close", "tick_idle", "empty_call")


async def ops_scenario(ctx: Ctx) -> None:
    """Redis µs per operation type on the gateway path (``bench.ops``)."""
    n = ctx.profile.ops_count
    run = OpsRun(ctx.engine, OPS_TENANT, n, ctx.report.progress)
    try:
        results = {op.name: op for op in await run.run()}
    finally:
        await run.gw.delete()
    for name in _OPS_ORDER:
        op = results[name]
        how = (f"{op.ops:,} ops, {op.per_call} per FCALL" if op.per_call > 1
               else f"{op.ops:,} calls")
        text = (f"{name}: {op.us:,.1f} µs/op in FCALL, {op.cpu_us:,.1f} µs/op whole server; "
                f"{op.text}; {how}")
        wrong = op.mismatch()
        if wrong:
            text += f"; NOT AS EXPECTED: {wrong}"
        ctx.report.line("ops", text)
        ctx.report.put(f"ops_{name}_us", op.us, 2)
    _source(ctx, "ops", [op.tally for op in results.values()])


def _source(ctx: Ctx, scenario: str, tallies: list[Tally]) -> None:
    """Record ``<scenario>_source``; say so when a figure "in FCALL" is not one."""
    sources = {t.source for t in tallies}
    if sources != {"commandstats"}:
        ctx.report.line(scenario, "µs in FCALL: the server has no cmdstat_fcall in INFO "
                        "commandstats, so these figures are the whole server's CPU (INFO cpu)")
    ctx.report.put(f"{scenario}_source", "+".join(sorted(sources)))


def _sweep_text(p: SweepPoint) -> str:
    t = p.tally
    arrivals, queued = t.commands // 3, t.types.get("queued", 0)
    taken = t.types.get("assigned", 0) - (arrivals - queued)
    text = (f"{p.agents:,} agents ({p.slots:,} slots, {p.queued:,} queued at the start): "
            f"{t.us():,.1f} µs/command in FCALL, {t.cpu_us():,.1f} µs/command whole server, "
            f"over {t.commands:,} commands, {PER_CALL} per FCALL ({arrivals:,} arrivals: "
            f"{arrivals - queued:,} assigned at once, {queued:,} queued; {taken:,} closes "
            "handed the agent a queued customer)")
    problems = [f"{t.failed:,} refused"] if t.failed else []
    if t.not_held:
        problems.append(f"{t.not_held:,} calls without the lease")
    if problems:
        text += "; NOT AS EXPECTED: " + ", ".join(problems)
    return text


async def sweep_scenario(ctx: Ctx) -> None:
    """Redis µs per command of one workload at several numbers of agents
    (``bench.sweep``)."""
    p = ctx.profile
    spec = SweepSpec(groups=p.groups, capacity=p.capacity, cycles=p.sweep_cycles,
                     seed=ctx.seed)
    tenants = {agents: sweep_tenant(agents) for agents in p.sweep_sizes}
    points = {pt.agents: pt for pt in await sweep(ctx.engine, tenants, spec,
                                                  ctx.report.progress)}
    for agents, point in points.items():
        ctx.report.line("sweep", _sweep_text(point))
        ctx.report.put(f"sweep_{label(agents)}_us", point.tally.us(), 2)
    small, large = min(points), max(points)
    if large != small:
        ratio = points[large].tally.us() / points[small].tally.us()
        ctx.report.line("sweep", f"µs/command {label(large)}/{label(small)} agents = "
                        f"{ratio:.3f} (1.0: nothing on this path grows with the number of agents)")
        ctx.report.put("sweep_ratio", ratio, 3)
    _source(ctx, "sweep", [pt.tally for pt in points.values()])


# ---------------------------------------------------------------- throughput, latency


async def throughput_scenario(ctx: Ctx, gen: LoadGen) -> None:
    """Ramp the command rate; the max sustained one."""
    best, failed = await ramp(gen, ctx, "throughput")
    ctx.ours = best
    put = ctx.report.put
    if best is None:
        ctx.report.line("throughput", "no rate sustained, not even the lowest tried")
        put("max_sustained", "none")
        return
    ctx.report.line("throughput", (
        f"max sustained {best.rate:,.0f} commands/s ({best.arrivals_rate:,.0f} customers/s, "
        f"{ctx.centre.agents:,} agents, {ctx.centre.groups} Zipf groups): command->event "
        f"{latency_text(best, 'first')}; {cpu_text(best)}"))
    if failed is not None:
        ctx.report.line("throughput", f"first rate not sustained: {failed.target:,.0f}/s "
                        f"({failed.why_not})")
    put("max_cmd_per_s", best.rate)
    put("max_customers_per_s", best.arrivals_rate)
    put("max_p99_ms", best.latency[1], 2)
    put("redis_cpu_us_per_cmd", best.redis_cpu_us, 2)
    put("daemon_cpu_us_per_cmd", best.daemon_cpu_us, 2)
    put("generator_cpu_us_per_cmd", best.gen_cpu_us, 2)


async def latency_scenario(ctx: Ctx, gen: LoadGen) -> None:
    """p50/p99/p99.9 arrival -> assignment at fixed rates; honest when not sustained."""
    p = ctx.profile
    for rate in p.latency_rates:
        await gen.quiesce(p.quiesce_s)
        r = await gen.step(rate, p.warm_s, p.measure_s)
        ctx.report.progress(f"latency {step_text(r)}")
        key = f"lat_{label(rate)}"
        if r.sustained:
            head = f"{rate:,}/s sustained"
        else:
            head = (f"{rate:,}/s NOT sustained ({r.why_not}): achieved {r.rate:,.0f} "
                    f"commands/s sent, {r.applied_rate:,.0f}/s applied, backlog "
                    f"{r.backlog_end:,} commands ({r.backlog_growth:+,} in "
                    f"{r.seconds:.1f} s)")
        ctx.report.line("latency", f"{head}: arrival->assignment {latency_text(r)}; "
                        f"queued first {r.queued_first}; {cpu_text(r)}")
        put = ctx.report.put
        put(f"{key}_sustained", "yes" if r.sustained else "no")
        put(f"{key}_rate", r.rate)
        put(f"{key}_applied", r.applied_rate)
        put(f"{key}_backlog", r.backlog_end)
        for name, value in zip(("p50", "p99", "p999"), r.assign, strict=True):
            put(f"{key}_{name}_ms", value, 2)
        put(f"{key}_redis_cpu_us", r.redis_cpu_us, 2)
        put(f"{key}_daemon_cpu_us", r.daemon_cpu_us, 2)


# --------------------------------------------------------------- scale, durability


def scale_env(ctx: Ctx, server: Server, client: aioredis.Redis, engine: Engine,
              daemon: Daemon) -> ScaleEnv:
    """The scale run's environment on ``server``."""
    return ScaleEnv(server=server, client=client, engine=engine, daemon=daemon, tenant=TENANT,
                    centre=ctx.centre, cycles=ctx.profile.scale_cycles, seed=ctx.seed,
                    progress=ctx.report.progress)


async def scale_sizes(env: ScaleEnv, ctx: Ctx, name: str) -> dict[int, ScaleResult]:
    """Every size of the profile on ``env``."""
    out: dict[int, ScaleResult] = {}
    for size in ctx.profile.scale_sizes:
        ctx.report.progress(f"{name}: {label(size)} queued customers")
        r = out[size] = await scale_point(env, size)
        ctx.report.progress(f"{name}: {label(size)}: drained {r.rate:,.0f} commands/s, "
                            f"preload {r.preload_rate:,.0f} arrivals/s")
    return out


async def scale_scenario(ctx: Ctx, env: ScaleEnv) -> None:
    """Throughput with 1k .. 1M queued; bytes per queued customer."""
    ctx.scale = await scale_sizes(env, ctx, "scale")
    put = ctx.report.put
    for size, r in ctx.scale.items():
        key = f"scale_{label(size)}"
        ctx.report.line("scale", (
            f"{label(size)} queued ({r.queued:,} in queues at the start): "
            f"{r.rate:,.0f} commands/s over {r.commands:,} commands; preload "
            f"{r.preload_rate:,.0f} arrivals/s; {r.bytes_per_queued:,.0f} bytes per queued "
            f"customer; Redis CPU {r.redis_cpu_us:.1f} µs/command, daemon CPU "
            f"{r.daemon_cpu_us:.1f} µs/command"))
        put(f"{key}_cmd_per_s", r.rate)
        put(f"{key}_queued", r.queued)
        put(f"{key}_preload_per_s", r.preload_rate)
        put(f"{key}_bytes_per_queued", r.bytes_per_queued)
    small, large = min(ctx.scale), max(ctx.scale)
    if large != small:
        ratio = ctx.scale[large].rate / ctx.scale[small].rate
        ctx.report.line("scale", f"throughput {label(large)}/{label(small)} = {ratio:.3f}")
        put(f"scale_ratio_{label(large)}_{label(small)}", ratio, 3)


async def durability_scenario(ctx: Ctx, aof: ScaleEnv) -> None:
    """The scale sizes with the append-only file on (``appendfsync everysec``), against
    the same sizes with it off (``ctx.scale``, measured first)."""
    results = await scale_sizes(aof, ctx, "durability")
    put = ctx.report.put
    for size, r in results.items():
        off = ctx.scale.get(size)
        key = f"aof_{label(size)}"
        put(f"{key}_cmd_per_s", r.rate)
        put(f"{key}_preload_per_s", r.preload_rate)
        text = (f"{label(size)} queued, AOF everysec: {r.rate:,.0f} commands/s, preload "
                f"{r.preload_rate:,.0f} arrivals/s, Redis CPU {r.redis_cpu_us:.1f} µs/command")
        if off is not None:
            text += (f"; AOF off: {off.rate:,.0f} commands/s, preload {off.preload_rate:,.0f}"
                     f" arrivals/s; everysec/off: drain x{r.rate / off.rate:.3f}, preload "
                     f"x{r.preload_rate / off.preload_rate:.3f}")
            put(f"{key}_vs_off", r.rate / off.rate, 3)
            put(f"{key}_preload_vs_off", r.preload_rate / off.preload_rate, 3)
        ctx.report.line("durability", text)
