"""``dispatchd bench``: start a server and the real daemon, run the scenarios, report.

Order: ``ceiling`` (before anything else loads the server), ``ops`` and ``sweep``
(``FCALL dispatchd_gateway`` straight from the bench, in their own tenants, deleted
after), then with the daemon running ``throughput`` and ``latency`` (one load generator,
one centre), ``scale`` (the daemon paused while preloading), then ``durability`` (a
second server with the append-only file on and its own daemon) and ``bullmq`` (our
daemon stopped, the same server), then ``multitenant`` (only when asked for: 30 tenants on
the same server, then on a 3-master cluster the bench starts). ``dispatchd/cli.py``
defines the command line and calls :func:`main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from bench import scenarios
from bench.centre import (
    GROUP_SETTINGS,
    ArrivalStream,
    apply_in_batches,
    build_centre,
    centre_commands,
)
from bench.loadgen import LoadGen, StepResult
from bench.multitenant import multitenant_scenario
from bench.peer import BULLMQ_VERSION, PREFIX, BullmqPeer, PeerUnavailable, find_node
from bench.peer import install as install_bullmq
from bench.peer import workers as bullmq_workers
from bench.report import Report, latency_text
from bench.scale import ScaleEnv, wait_aof_idle
from bench.scenarios import TENANT, Ctx, Profile
from bench.servers import (
    BenchError,
    Daemon,
    Server,
    delete_matching,
    describe,
    reset_tenant,
    server_malloc,
    server_name,
    stop_all_servers,
)
from dispatchd import keys
from dispatchd.embedded import check_server
from dispatchd.engine import Engine
from dispatchd.errors import DispatchError

SCENARIOS = ("ceiling", "ops", "sweep", "throughput", "latency", "scale", "durability",
             "bullmq", "multitenant")
#: What runs without --scenarios: all but ``multitenant`` (two more ramps, a cluster to
#: start: it would make the full run about half as long again).
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "multitenant")

QUICK = Profile(name="quick", agents=500, warm_s=0.5, measure_s=1.0, ramp_start=1000,
                ramp_factor=2.0, ramp_steps=6, bisect=False, scale_sizes=(1000, 10_000),
                scale_cycles=1000, ceiling_calls=10_000, retry=False, handle_s=0.3,
                quiesce_s=30.0, ops_count=2000, sweep_sizes=(500, 5000), sweep_cycles=2000)
FULL = Profile(name="full", agents=5000, warm_s=2.0, measure_s=6.0, ramp_start=1000,
               ramp_factor=1.25, ramp_steps=20, bisect=True,
               scale_sizes=(1000, 10_000, 100_000, 1_000_000), scale_cycles=10_000,
               ceiling_calls=100_000)
#: Arrivals handed to BullMQ (it cycles through them): the start of our stream.
BULLMQ_ARRIVALS = 200_000


@dataclass(frozen=True)
class BenchOptions:
    """What the command line asked for."""

    quick: bool = False
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    redis_url: str | None = None
    node: str = "node"
    seed: int = 1
    malloc: str = "auto"
    record_decisions: bool = False


#: After an interrupt, how long the run gets to clean up before the bench gives up on it.
INTERRUPT_GRACE_S = 30.0


def main(options: BenchOptions) -> int:
    """Run the bench; the exit status (0 ran, 1 could not start, 130 interrupted)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(options))


def _on_interrupt(task: asyncio.Task[int]) -> None:
    """SIGINT/SIGTERM: cancel the run (it stops the daemon and its servers on the way
    out); if that hangs (redis-py can stay stuck in a cancelled command), stop the
    bench's own servers and exit anyway. Children die with the bench (PDEATHSIG)."""
    if task.cancelling():
        return
    print("bench: interrupted, cleaning up", file=sys.stderr, flush=True)
    task.cancel()

    def give_up() -> None:
        print("bench: clean-up hung; stopping the servers and exiting", file=sys.stderr)
        stop_all_servers()
        os._exit(130)

    asyncio.get_running_loop().call_later(INTERRUPT_GRACE_S, give_up)


async def _main(options: BenchOptions) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_interrupt, task)
    report = Report()
    try:
        with tempfile.TemporaryDirectory(prefix="dispatchd-bench-") as tmp:
            await _run(options, report, Path(tmp))
    except (BenchError, DispatchError, RedisError, OSError) as exc:
        # the server is unreachable or too old, a server or the daemon did not start
        print(f"bench: {describe(exc)}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("bench: stopped", file=sys.stderr)
        return 130
    print(report.result_line(), flush=True)
    return 0


async def _run(options: BenchOptions, report: Report, workdir: Path) -> None:
    profile = QUICK if options.quick else FULL
    if options.redis_url is None:
        report.progress("starting an embedded Valkey (append-only file off)")
        server = Server.start_embedded(workdir / "valkey", append_only=False,
                                       malloc=options.malloc)
    else:
        server = Server(options.redis_url)
    client = server.client()
    try:
        await check_server(client)
        engine = Engine(client)
        await engine.load_scripts()
        centre = build_centre(profile.groups, profile.agents, profile.capacity, options.seed)
        ctx = Ctx(profile=profile, report=report, server=server, client=client, engine=engine,
                  workdir=workdir, centre=centre, seed=options.seed, node=options.node,
                  malloc=options.malloc)
        report.put("mode", profile.name)
        report.put("server", await server_name(client))
        report.put("server_malloc", await server_malloc(client))
        report.put("record_decisions", "on" if options.record_decisions else "off")
        GROUP_SETTINGS.clear()
        if options.record_decisions:
            GROUP_SETTINGS["record_decisions"] = True
        await _scenarios(ctx, set(options.scenarios))
        _ratios(ctx)
    finally:
        await _cleanup(server, client, profile)
        server.stop()


async def _scenarios(ctx: Ctx, chosen: set[str]) -> None:
    if "ceiling" in chosen:
        ctx.report.progress("ceiling: the server's own limits")
        await scenarios.ceiling_scenario(ctx)
    if "ops" in chosen:
        ctx.report.progress(f"ops: Redis CPU per operation type, {ctx.profile.ops_count:,} of "
                            "each through dispatchd_gateway")
        await scenarios.ops_scenario(ctx)
    if "sweep" in chosen:
        ctx.report.progress("sweep: Redis CPU per command at "
                            + ", ".join(f"{n:,}" for n in ctx.profile.sweep_sizes) + " agents")
        await scenarios.sweep_scenario(ctx)
    if chosen & {"throughput", "latency", "scale", "durability"}:
        await _with_daemon(ctx, chosen)
    if "durability" in chosen:
        await _durability(ctx)
    if "bullmq" in chosen:
        await _bullmq(ctx)
    if "multitenant" in chosen:
        ctx.report.progress("multitenant: 30 tenants on one server, then on a 3-master cluster")
        await multitenant_scenario(ctx)


async def _with_daemon(ctx: Ctx, chosen: set[str]) -> None:
    """The scenarios that run against the daemon on the main server."""
    await reset_tenant(ctx.server, ctx.client, TENANT)
    daemon = Daemon(ctx.server.url, [TENANT], ctx.workdir / "daemon.log")
    ctx.report.progress("starting the daemon (python -m dispatchd run)")
    await daemon.start(ctx.client)
    try:
        if chosen & {"throughput", "latency"}:
            await _load(ctx, daemon, chosen)
        env = scenarios.scale_env(ctx, ctx.server, ctx.client, ctx.engine, daemon)
        if "scale" in chosen:
            await scenarios.scale_scenario(ctx, env)
        elif "durability" in chosen:
            ctx.report.progress("durability: measuring with the append-only file off first")
            ctx.scale = await scenarios.scale_sizes(env, ctx, "durability (AOF off)")
        await reset_tenant(ctx.server, ctx.client, TENANT)
    finally:
        daemon.stop()


async def _load(ctx: Ctx, daemon: Daemon, chosen: set[str]) -> None:
    ctx.report.progress(f"configuring {ctx.centre.agents:,} agents in {ctx.centre.groups} "
                        "groups, all online")
    cmds = centre_commands(ctx.centre, ctx.seed, online=True)
    await apply_in_batches(ctx.engine, TENANT, cmds, size=500)
    reader = ctx.server.client()
    stream = ArrivalStream(ctx.centre.groups, ctx.seed)
    try:
        async with LoadGen(ctx.client, reader, TENANT, stream, handle_s=ctx.profile.handle_s,
                           seed=ctx.seed, daemon_cpu=daemon.cpu_s) as gen:
            if "throughput" in chosen:
                await scenarios.throughput_scenario(ctx, gen)
            if "latency" in chosen:
                await scenarios.latency_scenario(ctx, gen)
            # error events for the generator's commands: 0 unless the bench or the
            # daemon has a bug (counted up to here; what is still in flight is dropped)
            ctx.report.put("errors", gen.errors)
    finally:
        await reader.aclose()


@contextlib.asynccontextmanager
async def _aof_env(ctx: Ctx) -> AsyncIterator[ScaleEnv]:
    """A server with the append-only file on (everysec) and a daemon on it: a second
    embedded Valkey, or the external server switched with CONFIG SET and back after."""
    restore: dict[str, str] = {}
    if ctx.server.owned:
        server = Server.start_embedded(ctx.workdir / "valkey-aof", append_only=True,
                                       malloc=ctx.malloc)
    else:
        server = ctx.server
        for name in ("appendonly", "appendfsync"):
            restore |= {str(k): str(v) for k, v in (await ctx.client.config_get(name)).items()}
        await ctx.client.config_set("appendonly", "yes")
        await ctx.client.config_set("appendfsync", "everysec")
    client = server.client() if server is not ctx.server else ctx.client
    daemon = Daemon(server.url, [TENANT], ctx.workdir / "daemon-aof.log")
    try:
        await wait_aof_idle(client)
        engine = Engine(client)
        await engine.load_scripts()
        await reset_tenant(server, client, TENANT)
        await daemon.start(client)
        yield scenarios.scale_env(ctx, server, client, engine, daemon)
    finally:
        daemon.stop()
        if server is ctx.server:
            await reset_tenant(server, client, TENANT)
            for name, value in restore.items():
                await client.config_set(name, value)
        else:
            await client.aclose()
            server.stop()


async def _durability(ctx: Ctx) -> None:
    ctx.report.progress("durability: the scale sizes with the append-only file on (everysec)")
    try:
        async with _aof_env(ctx) as env:
            await scenarios.durability_scenario(ctx, env)
    except Exception as exc:  # a server refusing CONFIG SET, for one
        if isinstance(exc, BenchError):
            raise
        ctx.report.line("durability", f"unavailable: {describe(exc)}")
        ctx.report.put("durability", "unavailable")


async def _bullmq(ctx: Ctx) -> None:
    try:
        node, npm = find_node(ctx.node)
        modules = install_bullmq(npm, ctx.report.progress)
    except PeerUnavailable as exc:
        ctx.report.line("bullmq", f"unavailable: {exc}")
        ctx.report.put("bullmq", "unavailable")
        return
    ctx.report.put("bullmq_version", BULLMQ_VERSION)
    arrivals = ArrivalStream(ctx.centre.groups, ctx.seed).take(BULLMQ_ARRIVALS)
    for pooled in (False, True):
        name = "bullmq_pooled" if pooled else "bullmq"
        spec = bullmq_workers(ctx.centre, pooled=pooled)
        config: dict[str, Any] = {"modules": str(modules), "url": ctx.server.url, "prefix": PREFIX,
                  "queues": ctx.centre.groups, "arrivals": arrivals, "seed": ctx.seed,
                  "workers": spec,
                  "handle_ms": ctx.profile.handle_s * 1000}
        await delete_matching(ctx.client, PREFIX + ":*")
        ctx.report.progress(f"{name}: starting {len(spec):,} workers")
        try:
            peer = await BullmqPeer.start(node, config, ctx.workdir / f"{name}.json")
        except PeerUnavailable as exc:
            ctx.report.line("bullmq", f"unavailable: {exc}")
            ctx.report.put(name, "unavailable")
            continue
        try:
            best, failed = await scenarios.ramp(peer, ctx, name, unit="customers",
                                                scale=1 / 3)
        finally:
            await peer.close()
        _bullmq_report(ctx, name, len(spec), best, failed)
    await delete_matching(ctx.client, PREFIX + ":*")


def _bullmq_report(ctx: Ctx, name: str, n_workers: int, best: StepResult | None,
                   failed: StepResult | None) -> None:
    how = ("one worker per queue, concurrency = the capacity of its agents" if "pooled" in name
           else "agents as workers, concurrency = capacity")
    put = ctx.report.put
    put(f"{name}_workers", n_workers)
    if best is None:
        ctx.report.line("bullmq", f"{name} ({n_workers:,} workers, {how}): no rate sustained")
        put(f"{name}_customers_per_s", 0)
        return
    text = (f"{name} ({n_workers:,} workers, {how}): max sustained {best.rate:,.0f} "
            f"customers/s; add->active {latency_text(best)}; Redis CPU "
            f"{best.redis_cpu_us:,.1f} µs/customer, Node CPU {best.daemon_cpu_us:,.1f} "
            "µs/customer")
    if failed is not None:
        text += f"; first rate not sustained: {failed.target:,.0f}/s ({failed.why_not})"
    ctx.report.line("bullmq", text)
    put(f"{name}_customers_per_s", best.rate)
    put(f"{name}_p99_ms", best.assign[1], 2)
    put(f"{name}_redis_cpu_us", best.redis_cpu_us, 2)
    put(f"{name}_node_cpu_us", best.daemon_cpu_us, 2)


def _ratios(ctx: Ctx) -> None:
    """ours / ceiling and ours / BullMQ, when both sides were measured."""
    ours = ctx.ours
    if ours is None:
        return
    r = ctx.report
    r.ratio("ours_vs_ceiling", ours.rate, ctx.ceiling_rate)
    r.ratio("ours_vs_ceiling_assign", ours.rate, ctx.ceiling_assign_rate)
    for name in ("bullmq", "bullmq_pooled"):
        peer = r.values.get(f"{name}_customers_per_s")
        if peer is not None:
            r.ratio(f"ours_vs_{name}", ours.arrivals_rate, float(peer))
    units = {"ceiling": "commands/s / trivial EVALSHA calls/s",
             "ceiling_assign": "commands/s / assignment-sized script calls/s",
             "bullmq": "customers/s", "bullmq_pooled": "customers/s"}
    shown = [f"ours/{name} {r.values[f'ours_vs_{name}']} ({unit})"
             for name, unit in units.items() if f"ours_vs_{name}" in r.values]
    if shown:
        r.line("ratios", ", ".join(shown))


async def _cleanup(server: Server, client: aioredis.Redis, profile: Profile) -> None:
    """On an external server: delete what the bench made (never FLUSHALL)."""
    try:
        if not server.owned:
            for tenant in scenarios.bench_tenants(profile):
                await delete_matching(client, keys.prefix(tenant) + "*")
                await client.srem(keys.TENANTS_KEY, tenant)
            await delete_matching(client, PREFIX + ":*")
    finally:
        await client.aclose()
