"""Replica failover: the gap in events after SIGKILLing one of two real daemons.

Starts its own embedded Valkey, ``--tenants`` tenants (one group, one agent with room for
everyone), and two ``python -m dispatchd run`` replicas serving them. Gateways send
``--rate`` commands/s per tenant (arrive, then close, alternating). Each trial waits
until the two replicas hold every tenant between them, SIGKILLs the one holding more,
and measures, for each tenant it held, the gap in that tenant's events: from its last
event before the kill to its first after (both on the server's clock, the ids of
``{T}:out``); then starts a replacement replica. Then the renewal traffic at idle (no
commands): Redis commands/s by command and the CPU of each replica, per replica and per
tenant, over ``--idle-s`` seconds.

Each configuration (``--configs``: ``lease_ms/heartbeat_ms`` pairs, ``1500/250`` the
default, ``5000/0`` the old lease without membership) runs on a fresh server. One line
per trial, then a summary per configuration::

    .venv/bin/python -m bench.failover_replicas --trials 5 --configs 1500/250,5000/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.servers import (
    Server,
    command_calls,
    die_with_parent,
    proc_cpu_s,
    redis_cpu_s,
    stop_process,
)
from dispatchd import keys
from dispatchd.embedded import free_port
from dispatchd.engine import Engine

TIMERS_OFF: dict[str, Any] = {name: 0 for name in (
    "queue_warning_ms", "queue_timeout_ms", "position_update_ms", "reply_sla_ms",
    "reply_reassign_ms", "silence_remind_ms", "silence_preclose_ms", "silence_close_ms",
    "confirm_close_ms")}


def say(*parts: object) -> None:
    print(*parts, flush=True)


class Replica:
    """One ``dispatchd run`` process; its log in ``workdir``."""

    def __init__(self, url: str, tenants: list[str], lease_ms: int, heartbeat_ms: int,
                 workdir: Path, n: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
        env |= {"DISPATCHD_REDIS_URL": url, "DISPATCHD_TENANTS": ",".join(tenants),
                "DISPATCHD_LEASE_MS": str(lease_ms),
                "DISPATCHD_HEARTBEAT_MS": str(heartbeat_ms),
                "DISPATCHD_ADMIN_ENABLED": "false",
                "DISPATCHD_METRICS_PORT": str(free_port()),
                "DISPATCHD_LOG_LEVEL": "INFO", "DISPATCHD_LOG_FORMAT": "text"}
        self.log = (workdir / f"replica-{n}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd", "run"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True,
            preexec_fn=die_with_parent)
        self.pid = self.proc.pid

    def holds(self, holder: bytes | None) -> bool:
        # the lease carries the consumer name: <host>-<pid>-<6 hex>
        return holder is not None and holder.rsplit(b"-", 2)[-2] == str(self.pid).encode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.log.close()


async def holders(redis: aioredis.Redis, tenants: list[str]) -> list[bytes | None]:
    pipe = redis.pipeline(transaction=False)
    for t in tenants:
        pipe.get(keys.key("lease", t))
    return list(await pipe.execute())


async def balanced(redis: aioredis.Redis, tenants: list[str], reps: list[Replica],
                   timeout_s: float = 30.0) -> dict[int, list[str]]:
    """Wait until every tenant is held by one of ``reps``, each holding some; pid ->
    the tenants it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = await holders(redis, tenants)
        by = {r.pid: [t for t, h in zip(tenants, held, strict=True) if r.holds(h)]
              for r in reps}
        if sum(len(v) for v in by.values()) == len(tenants) and all(by.values()):
            return by
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not balanced: {by}")
        await asyncio.sleep(0.05)


async def load(redis: aioredis.Redis, tenants: list[str], rate: int,
               stop: asyncio.Event) -> None:
    """``rate`` commands/s per tenant: arrive s<i>, close s<i>, ..."""
    i, every = 0, 1 / rate
    started = time.monotonic()
    while not stop.is_set():
        pipe = redis.pipeline(transaction=False)
        for t in tenants:
            n = i // 2
            cmd = (f'{{"type":"arrive","id":"a{n}","session":"s{n}","group":"g"}}' if i % 2 == 0
                   else f'{{"type":"close_session","id":"c{n}","session":"s{n}"}}')
            pipe.xadd(keys.key("inbound", t), {"json": cmd})
        await pipe.execute()
        i += 1
        await asyncio.sleep(max(0.0, started + i * every - time.monotonic()))


def _ms(entry_id: Any) -> int:
    return int(bytes(entry_id).split(b"-")[0])


async def gap_ms(redis: aioredis.Redis, tenant: str, kill_ms: int) -> int | None:
    """From the tenant's last event before ``kill_ms`` to its first after (None: none
    after yet)."""
    out = keys.key("outbound", tenant)
    before = await redis.xrevrange(out, max=kill_ms, count=1)
    after = await redis.xrange(out, min=kill_ms + 1, count=1)
    if not after or not before:
        return None
    return _ms(after[0][0]) - _ms(before[0][0])


async def server_ms(redis: aioredis.Redis) -> int:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) // 1000


async def trials(redis: aioredis.Redis, url: str, tenants: list[str], cfg: tuple[int, int],
                 n: int, rate: int, workdir: Path) -> list[int]:
    lease_ms, hb = cfg
    made = 0

    def replica() -> Replica:
        nonlocal made
        made += 1
        return Replica(url, tenants, lease_ms, hb, workdir, made)

    reps = [replica(), replica()]
    gaps: list[int] = []
    stop = asyncio.Event()
    loader = asyncio.create_task(load(redis, tenants, rate, stop))
    try:
        for trial in range(n):
            if hb == 0:
                # no membership: the first replica holds everything; kill that one
                by = await holders_of_all(redis, tenants, reps)
            else:
                by = await balanced(redis, tenants, reps)
            victim = max(reps, key=lambda r: len(by[r.pid]))
            theirs = by[victim.pid]
            await asyncio.sleep(1.0)
            kill_ms = await server_ms(redis)
            victim.kill()
            reps.remove(victim)
            deadline = time.monotonic() + 30
            per_tenant: list[int] = []
            for t in theirs:
                while (g := await gap_ms(redis, t, kill_ms)) is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no events for {t} after the kill")
                    await asyncio.sleep(0.02)
                per_tenant.append(g)
            gaps.extend(per_tenant)
            say(f"  trial {trial + 1}: killed a replica holding {len(theirs)} of "
                f"{len(tenants)} tenants; gap in events per tenant (ms): "
                f"{sorted(per_tenant)}, max {max(per_tenant)}")
            reps.append(replica())
    finally:
        stop.set()
        await loader
        for r in reps:
            r.stop()
    return gaps


async def holders_of_all(redis: aioredis.Redis, tenants: list[str],
                         reps: list[Replica]) -> dict[int, list[str]]:
    deadline = time.monotonic() + 30
    while True:
        held = await holders(redis, tenants)
        by = {r.pid: [t for t, h in zip(tenants, held, strict=True) if r.holds(h)]
              for r in reps}
        if sum(len(v) for v in by.values()) == len(tenants):
            return by
        if time.monotonic() > deadline:
            raise RuntimeError(f"tenants not all held: {by}")
        await asyncio.sleep(0.05)


async def idle_traffic(redis: aioredis.Redis, url: str, tenants: list[str],
                       cfg: tuple[int, int], seconds: float, workdir: Path) -> None:
    lease_ms, hb = cfg
    reps = [Replica(url, tenants, lease_ms, hb, workdir, 100 + i) for i in range(2)]
    try:
        if hb:
            await balanced(redis, tenants, reps)
        else:
            await holders_of_all(redis, tenants, reps)
        await asyncio.sleep(2.0)
        calls0, cpu0 = await command_calls(redis), [proc_cpu_s(r.pid) for r in reps]
        redis0, usec0 = await redis_cpu_s(redis), await command_usec(redis)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        calls1, cpu1 = await command_calls(redis), [proc_cpu_s(r.pid) for r in reps]
        redis1, usec1 = await redis_cpu_s(redis), await command_usec(redis)
        dt = time.monotonic() - t0
    finally:
        for r in reps:
            r.stop()
    rates = {c: (calls1[c] - calls0.get(c, 0)) / dt for c in calls1}
    rates = {c: r for c, r in rates.items() if r >= 0.05 and c not in ("info",)}
    per = len(reps) * len(tenants)
    # at idle only the heartbeats ZADD (one ZADD, TIME, ZREMRANGEBYSCORE, ZRANGE each);
    # commandstats also counts the commands scripts run, so TIME and ZRANGE are not theirs
    beats = rates.get("zadd", 0.0) / len(reps)
    shown = ", ".join(f"{c} {r:.1f}" for c, r in sorted(rates.items(), key=lambda x: -x[1]))
    usec = {c: (usec1[c] - usec0.get(c, 0)) / dt for c in usec1}
    fcall_us = usec.get("fcall", 0.0) / len(tenants)
    daemon_cpu = [(b - a) / dt for a, b in zip(cpu0, cpu1, strict=True)]
    say(f"  idle, 2 replicas x {len(tenants)} tenants, {dt:.0f} s: Redis calls/s, scripts' "
        f"own included: {shown}")
    say(f"  per replica per tenant: fcall {rates.get('fcall', 0.0) / per:.2f}/s (timer ticks,"
        f" which renew the lease of a held tenant, and take attempts); per replica: "
        f"{beats:.1f} heartbeats/s = {4 * beats:.1f} commands/s, xreadgroup "
        f"{rates.get('xreadgroup', 0.0) / len(reps):.1f}/s; Redis CPU "
        f"{(redis1 - redis0) / dt * 100:.2f} % of a core in all (fcall {fcall_us:.0f} us/s per "
        f"tenant, {usec.get('zadd', 0.0) / len(reps):.0f} us/s per replica in the "
        f"heartbeats' ZADD); daemon CPU "
        + ", ".join(f"{c * 100:.2f} %" for c in daemon_cpu) + " of a core "
        f"({sum(daemon_cpu) / per * 1e6:.0f} us/s per replica per tenant)")


async def command_usec(client: aioredis.Redis) -> dict[str, int]:
    """Server CPU microseconds per command so far (``INFO commandstats``)."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in stats.items()}


async def run_config(args: argparse.Namespace, cfg: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="dispatchd-failover-") as tmp:
        workdir = Path(tmp)
        server = Server.start_embedded(workdir / "valkey", append_only=False)
        redis = server.client()
        try:
            engine = Engine(redis)
            await engine.load_scripts()
            tenants = [f"fo-{i}" for i in range(args.tenants)]
            now = int(time.time() * 1000)
            for t in tenants:
                await engine.configure_group(t, now, "g", **TIMERS_OFF)
                await engine.configure_agent(t, now, "a", capacity=100,
                                             abilities={"g": 1.0})
                await engine.set_agent_status(t, now, "a", "online")
            say(f"lease_ms={cfg[0]} heartbeat_ms={cfg[1]}: {args.tenants} tenants, "
                f"{args.rate} commands/s each, {args.trials} trials")
            gaps = await trials(redis, server.url, tenants, cfg, args.trials, args.rate,
                                workdir)
            gaps.sort()
            if gaps:
                say(f"  gap after SIGKILL over {len(gaps)} tenant moves: min {gaps[0]} ms, "
                    f"median {gaps[len(gaps) // 2]} ms, max {gaps[-1]} ms")
            await idle_traffic(redis, server.url, tenants, cfg, args.idle_s, workdir)
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--rate", type=int, default=50, help="commands/s per tenant")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--configs", default="1500/250",
                        help="comma-separated lease_ms/heartbeat_ms pairs")
    args = parser.parse_args()
    for spec in args.configs.split(","):
        lease, hb = (int(x) for x in spec.split("/"))
        asyncio.run(run_config(args, (lease, hb)))


if __name__ == "__main__":
    main()
