"""Scale: the daemon's throughput with 1k .. 1M customers already queued.

For each size, with the daemon paused (SIGSTOP):

1. the tenant is reset and the centre configured, every agent offline;
2. ``slots + size`` customers arrive through ``Engine.apply_batch`` (1,000 per call, 4
   calls per round trip): all of them queue. The preload rate and the server's
   ``used_memory`` growth per queued customer are measured here;
3. the agents go online and fill up to capacity, so ``size`` customers stay queued;
4. a fixed drain workload is appended to ``{T}:in``: per cycle, an ``agent_message``
   and a ``close_session`` on an assigned session (the freed agent takes the head of a
   deep queue) and a new ``arrive`` (queued at the back), so the queue keeps its size;
5. the daemon is resumed (SIGCONT) and timed until ``{T}:in`` is empty.

The same on a server with the append-only file on (``appendfsync everysec``) gives the
durability cost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from bench.centre import ArrivalStream, Centre, apply_in_batches, centre_commands
from bench.servers import BenchError, Daemon, Server, redis_cpu_s, reset_tenant, used_memory
from dispatchd import keys
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Assigned, Command, Outcome, SetAgentStatus
from dispatchd.protocol import (
    AgentMessageCmd,
    ArriveCmd,
    CloseSessionCmd,
    GatewayCommand,
    encode_command,
)

_PRELOAD_CHUNK = 20_000
#: A drain that takes longer than this means the daemon is stuck (it drains thousands
#: of commands a second).
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ScaleResult:
    """One size. Rates: arrivals/s (preload), commands/s (drain); CPU: µs per command."""

    size: int
    queued: int
    preload_rate: float
    bytes_per_queued: float
    rate: float
    commands: int
    redis_cpu_us: float
    daemon_cpu_us: float


@dataclass
class ScaleEnv:
    """What a scale run needs: the server and its daemon, the tenant and the centre."""

    server: Server
    client: aioredis.Redis
    engine: Engine
    daemon: Daemon
    tenant: str
    centre: Centre
    cycles: int
    seed: int
    progress: Callable[[str], None]


async def preload(env: ScaleEnv, stream: ArrivalStream, total: int) -> None:
    """``total`` arrivals ``p0..`` through ``apply_batch``, generated chunk by chunk."""
    shown = time.monotonic()
    for start in range(0, total, _PRELOAD_CHUNK):
        cmds: list[Command] = []
        for i in range(start, min(total, start + _PRELOAD_CHUNK)):
            group, priority = stream.next()
            cmds.append(Arrive(session=f"p{i}", group=f"g{group}", priority=priority))
        await apply_in_batches(env.engine, env.tenant, cmds)
        if time.monotonic() - shown > 10:
            shown = time.monotonic()
            env.progress(f"preloaded {start + len(cmds):,} of {total:,} customers")


async def go_online(env: ScaleEnv) -> list[tuple[str, str]]:
    """Every agent online; the (session, agent) pairs they took."""
    cmds = [SetAgentStatus(agent=f"a{a}", status="online") for a in range(env.centre.agents)]
    items = await apply_in_batches(env.engine, env.tenant, cmds, size=500)
    return [(e.session, e.agent) for item in items if isinstance(item, Outcome)
            for e in item.events if isinstance(e, Assigned)]


async def queued_now(client: aioredis.Redis, tenant: str, groups: int) -> int:
    """Customers in the group queues."""
    pipe = client.pipeline(transaction=False)
    for g in range(groups):
        pipe.zcard(keys.key("queue", tenant, f"g{g}"))
    return sum(await pipe.execute())


async def push_drain(env: ScaleEnv, assigned: list[tuple[str, str]],
                     stream: ArrivalStream) -> int:
    """Append the drain workload to ``{T}:in``; how many commands."""
    cmds: list[GatewayCommand] = []
    for i, (session, agent) in enumerate(assigned[: env.cycles]):
        group, priority = stream.next()
        cmds += [AgentMessageCmd(id=f"m-{session}", session=session, agent=agent),
                 CloseSessionCmd(id=f"c-{session}", session=session),
                 ArriveCmd(id=f"n{i}", session=f"n{i}", group=f"g{group}",
                           priority=priority, gateway="bench")]
    inbound = keys.key("inbound", env.tenant)
    for start in range(0, len(cmds), 2000):
        pipe = env.client.pipeline(transaction=False)
        for cmd in cmds[start : start + 2000]:
            pipe.xadd(inbound, encode_command(cmd))  # type: ignore[arg-type]
        await pipe.execute()
    return len(cmds)


async def drain(env: ScaleEnv, commands: int) -> tuple[float, float, float]:
    """Resume the daemon until ``{T}:in`` is empty: commands/s, Redis and daemon CPU µs
    per command."""
    inbound = keys.key("inbound", env.tenant)
    redis0, daemon0 = await redis_cpu_s(env.client), env.daemon.cpu_s()
    t0 = time.perf_counter()
    env.daemon.resume()
    while await env.client.xlen(inbound) > 0:
        if not env.daemon.alive or time.perf_counter() - t0 > DRAIN_TIMEOUT_S:
            raise BenchError(f"the daemon did not drain {commands:,} commands in "
                             f"{DRAIN_TIMEOUT_S:.0f} s: {env.daemon.log_tail()}")
        await asyncio.sleep(0.005)
    wall = time.perf_counter() - t0
    env.daemon.pause()
    redis_cpu = await redis_cpu_s(env.client) - redis0
    daemon_cpu = env.daemon.cpu_s() - daemon0
    return commands / wall, redis_cpu / commands * 1e6, daemon_cpu / commands * 1e6


async def wait_aof_idle(client: aioredis.Redis, timeout: float = 600.0) -> None:
    """Wait until no append-only-file rewrite runs or is scheduled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        await asyncio.sleep(0.1)


async def scale_point(env: ScaleEnv, size: int) -> ScaleResult:
    """Measure one size (see the module docstring)."""
    env.daemon.pause()
    await reset_tenant(env.server, env.client, env.tenant)
    setup = centre_commands(env.centre, env.seed, online=False)
    await apply_in_batches(env.engine, env.tenant, setup, size=500)
    stream = ArrivalStream(env.centre.groups, env.seed + size)
    total = env.centre.slots + size
    mem0, t0 = await used_memory(env.client), time.perf_counter()
    await preload(env, stream, total)
    preload_rate = total / (time.perf_counter() - t0)
    grown = await used_memory(env.client) - mem0
    assigned = await go_online(env)
    queued = await queued_now(env.client, env.tenant, env.centre.groups)
    commands = await push_drain(env, assigned, stream)
    await wait_aof_idle(env.client)
    rate, redis_us, daemon_us = await drain(env, commands)
    return ScaleResult(size=size, queued=queued, preload_rate=preload_rate,
                       bytes_per_queued=grown / total, rate=rate, commands=commands,
                       redis_cpu_us=redis_us, daemon_cpu_us=daemon_us)
