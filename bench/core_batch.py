"""Routing-core throughput: one script call per command vs batches, against the ceiling.

Starts its own embedded Valkey (or uses ``--redis-url``), builds a contact centre
(groups with Zipf popularity, agents with a few skills each), then runs the same
arrive/release command stream through:

* ``ceiling``: a trivial ``EVALSHA`` (``return 1``), pipelined 100 per round trip: what
  the server and redis-py can do at best;
* ``ceiling-8``: a script making 8 Redis calls (like one assignment), pipelined;
* ``single``: ``Engine.apply`` per command (one round trip per command);
* ``batch-N``: ``Engine.apply_batch`` with N commands per round trip.

Prints one line per scenario: commands/s, ratio to the ceiling, p50/p99 latency per
round trip, client CPU µs and server CPU µs per command; then ``RESULT k=v ...``.

    python bench/core_batch.py [--quick] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import uvloop

from bench.centre import arrivals_and_closes, server_cpu_s, setup_centre, start_server
from dispatchd.connect import client_for
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Command, ReleaseSession

TENANT = "bench"


def workload(n: int, groups: int, seed: int = 1) -> list[Command]:
    """An arrive/release stream that keeps the centre busy with a queue."""
    return [
        Arrive(session=sid, group=group, priority=prio) if kind == "arrive"
        else ReleaseSession(session=sid)
        for kind, sid, group, prio in arrivals_and_closes(n, groups, seed)
    ]


async def setup(engine: Engine, groups: int, agents: int) -> None:
    await engine.redis.flushall()
    await setup_centre(engine, TENANT, groups, agents)


async def measure(
    client: aioredis.Redis, n_cmds: int, rounds: list[Callable[[], Awaitable[object]]]
) -> dict[str, float]:
    lat: list[float] = []
    cpu0, srv0, t0 = time.process_time(), await server_cpu_s(client), time.perf_counter()
    for fn in rounds:
        s = time.perf_counter()
        await fn()
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    cpu1, srv1 = time.process_time(), await server_cpu_s(client)
    lat.sort()
    return {
        "rate": n_cmds / wall,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
        "client_us": (cpu1 - cpu0) / n_cmds * 1e6,
        "server_us": (srv1 - srv0) / n_cmds * 1e6,
    }


async def ceiling(client: aioredis.Redis, n: int, body: str) -> dict[str, float]:
    sha = await client.script_load(body)
    key = "{" + TENANT + "}:ceiling"

    def one_round() -> Callable[[], Awaitable[object]]:
        async def go() -> object:
            pipe = client.pipeline(transaction=False)
            for _ in range(100):
                pipe.evalsha(sha, 1, key, "x")
            return await pipe.execute()

        return go

    return await measure(client, n, [one_round() for _ in range(n // 100)])


EIGHT_CALLS = """
local k = KEYS[1]
redis.call('HINCRBY', k .. ':h', 'n', 1)
redis.call('ZADD', k .. ':z', 1, ARGV[1])
redis.call('ZRANGE', k .. ':z', 0, 0)
redis.call('HSET', k .. ':h2', 'a', 1, 'b', 2)
redis.call('SADD', k .. ':s', ARGV[1])
redis.call('ZREM', k .. ':z', ARGV[1])
redis.call('HMGET', k .. ':h2', 'a', 'b')
redis.call('SREM', k .. ':s', ARGV[1])
return 1
"""


async def run(args: argparse.Namespace) -> None:
    url, server = start_server(args.redis_url)
    client = client_for(url, decode_responses=False)
    engine = Engine(client)
    await engine.load_scripts()
    n = 5_000 if args.quick else 40_000
    groups, agents = (10, 100) if args.quick else (50, 1000)
    cmds = workload(n, groups)
    results: dict[str, dict[str, float]] = {}
    results["ceiling"] = await ceiling(client, n, "return 1")
    results["ceiling-8"] = await ceiling(client, n, EIGHT_CALLS)

    await setup(engine, groups, agents)
    single_n = min(n, 5_000)

    def single(c: Command) -> Callable[[], Awaitable[object]]:
        async def go() -> object:
            try:
                return await engine.apply(TENANT, 1_000, c)
            except Exception as exc:  # a refused command is still one command's work
                return exc

        return go

    results["single"] = await measure(client, single_n, [single(c) for c in cmds[:single_n]])
    for size in (10, 100, 500):
        await setup(engine, groups, agents)

        def batch(chunk: list[Command]) -> Callable[[], Awaitable[object]]:
            return lambda: engine.apply_batch(TENANT, 1_000, chunk)

        rounds = [batch(cmds[i : i + size]) for i in range(0, n, size)]
        results[f"batch-{size}"] = await measure(client, n, rounds)

    top = results["ceiling"]["rate"]
    print(f"{'scenario':<11} {'cmd/s':>9} {'/ceiling':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'client µs':>10} {'server µs':>10}")
    for name, r in results.items():
        print(f"{name:<11} {r['rate']:>9.0f} {r['rate'] / top:>9.2f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['client_us']:>10.1f} {r['server_us']:>10.1f}")
    info = await client.info("memory")
    print(f"server memory: {info['used_memory_human']}")
    print("RESULT " + " ".join(
        f"{name}_rate={r['rate']:.0f} {name}_server_us={r['server_us']:.1f}"
        for name, r in results.items()
    ) + f" batch500_vs_ceiling={results['batch-500']['rate'] / top:.2f}")
    await client.aclose()
    if server is not None:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few seconds)")
    parser.add_argument("--redis-url", help="use this server instead of an embedded Valkey")
    asyncio.Runner(loop_factory=uvloop.new_event_loop).run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
