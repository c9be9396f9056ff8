"""``dispatchd simulate``: build the workload, run each policy on it, report.

The SPEC policy runs on the real Lua engine, in a tenant of its own (``sim-<random>``)
on an embedded Valkey started in a temporary directory, or on ``redis_url``; the
tenant's keys are deleted afterwards either way. The baselines run in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from dispatchd import keys
from dispatchd.connect import client_for
from dispatchd.daemon import redact
from dispatchd.embedded import check_server, throwaway
from dispatchd.engine import Engine
from dispatchd.errors import DispatchError
from dispatchd.simulate import baseline, report, scenario, stats, workload
from dispatchd.simulate.loop import LuaRouter, Router, Simulation

SPEC = "spec"
POLICIES = (SPEC, *baseline.POLICIES)
POLICY_CHOICES = (*POLICIES, "all")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimulateOptions:
    """What ``dispatchd simulate`` was asked for (see its ``--help``)."""

    scenario: str
    hours: float | None = None
    seed: int | None = None
    policy: str = "all"
    trace: str | None = None
    out: str | None = "simulate.png"
    json_out: str | None = None
    volume: float = 1.0
    staff: float = 1.0
    redis_url: str | None = None
    quiet: bool = False


def chosen(policy: str) -> list[str]:
    """The policies ``--policy`` names, in report order."""
    return list(POLICIES) if policy == "all" else [policy]


# ------------------------------------------------------------------- the engine run


@contextlib.asynccontextmanager
async def _server(url: str | None) -> AsyncIterator[str]:
    if url is not None:
        yield url
        return
    async with throwaway("dispatchd-simulate-") as embedded:
        yield embedded


async def delete_tenant(client: aioredis.Redis, tenant: str) -> int:
    """Delete every key of ``tenant``; returns how many there were."""
    doomed: list[bytes] = []
    async for key in client.scan_iter(match=keys.prefix(tenant) + "*", count=1000):
        doomed.append(key)
    for i in range(0, len(doomed), 1000):
        await client.unlink(*doomed[i : i + 1000])
    return len(doomed)


async def _fresh_tenant(client: aioredis.Redis) -> str:
    while True:
        tenant = f"sim-{secrets.token_hex(6)}"
        if not await client.exists(keys.root(tenant), keys.key("agents", tenant)):
            return tenant


async def _run(work: workload.Workload, policy: str, router: Router, engine: str,
               progress: Progress | None) -> stats.Summary:
    def tick(t_ms: int, calls: int) -> None:
        if progress:
            progress(policy, t_ms, calls)

    records = await Simulation(work, router, tick).run()
    return stats.summarize(work, records, policy, engine)


async def run_spec(work: workload.Workload, url: str,
                   progress: Progress | None = None) -> tuple[stats.Summary, str]:
    """The SPEC policy on the real engine at ``url``: (summary, where it ran)."""
    client: Any = client_for(url, decode_responses=False)
    try:
        await check_server(client)
        engine = Engine(client)
        await engine.load_scripts()
        tenant = await _fresh_tenant(client)
        try:
            summary = await _run(work, SPEC, LuaRouter(engine, tenant), "lua", progress)
        finally:
            await delete_tenant(client, tenant)
        return summary, f"{redact(url)} tenant {tenant} (deleted)"
    finally:
        await client.aclose()


async def simulate(work: workload.Workload, policies: list[str], redis_url: str | None = None,
                   progress: Progress | None = None) -> tuple[list[stats.Summary], dict[str, str]]:
    """Run ``policies`` on ``work``: summaries in order, and where each ran."""
    summaries: list[stats.Summary] = []
    where: dict[str, str] = {}
    for policy in policies:
        if policy == SPEC:
            async with _server(redis_url) as url:
                summary, where[policy] = await run_spec(work, url, progress)
        else:
            router = baseline.BaselineRouter(policy)  # type: ignore[arg-type]
            summary = await _run(work, policy, router, "python", progress)
            where[policy] = "in-process (dispatchd.simulate.baseline)"
        summaries.append(summary)
    return summaries, where


# ------------------------------------------------------------------------ the command


def _progress(horizon_ms: int) -> Progress:
    started = time.monotonic()

    def show(policy: str, t_ms: int, calls: int) -> None:
        engine = f"{calls:,} engine calls, " if policy == SPEC else ""
        print(f"simulate: {policy}: {min(t_ms, horizon_ms) / 3.6e6:.1f} of "
              f"{horizon_ms / 3.6e6:g} h simulated, {engine}"
              f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    return show


def _workload(opts: SimulateOptions) -> workload.Workload:
    sc = scenario.load(opts.scenario)
    if opts.seed is not None:
        sc = msgspec.structs.replace(sc, seed=opts.seed)
    return workload.build(sc, hours=opts.hours, trace=opts.trace, volume=opts.volume,
                          staff=opts.staff)


def _outputs(opts: SimulateOptions, work: workload.Workload, summaries: list[stats.Summary],
             where: dict[str, str]) -> int:
    title = f"dispatchd simulate: {Path(opts.scenario).name}"
    if work.scenario.name:
        title += f" ({work.scenario.name})"
    print(report.render(work, summaries, where, title))
    status = EXIT_OK
    if opts.json_out:
        figures = {"title": title, "customers": len(work.customers),
                   "hours": work.horizon_ms / 3.6e6, "runs": summaries}
        try:
            Path(opts.json_out).write_bytes(msgspec.json.format(msgspec.json.encode(figures)))
            print(f"\nfigures written to {opts.json_out}")
        except OSError as exc:
            status = _cannot_write(opts.json_out, exc)
    if opts.out:
        from dispatchd.simulate.plot import plot

        try:
            skipped = plot(work, summaries, opts.out, title)
            print(f"\nplot written to {opts.out}" if skipped is None
                  else f"\nplot skipped: {skipped}")
        except OSError as exc:
            status = _cannot_write(opts.out, exc)
    return status


def _cannot_write(path: str, exc: OSError) -> int:
    print(f"dispatchd simulate: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_FAILED


async def _main(opts: SimulateOptions) -> int:
    try:
        work = _workload(opts)
    except scenario.ScenarioError as exc:
        print(f"dispatchd simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = None if opts.quiet else _progress(work.horizon_ms)
    try:
        summaries, where = await simulate(work, chosen(opts.policy), opts.redis_url, progress)
    except (DispatchError, RedisError, OSError) as exc:
        print(f"dispatchd simulate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return _outputs(opts, work, summaries, where)


def run(opts: SimulateOptions) -> int:
    """Run the command on a uvloop event loop; returns the process exit status."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_main(opts))
    except KeyboardInterrupt:
        print("dispatchd simulate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
