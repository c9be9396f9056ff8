"""Gateway path throughput: commands through ``{T}:in`` -> consumer -> events on ``{T}:out``.

Starts its own embedded Valkey (or ``--redis-url``), configures a centre (groups with
Zipf popularity, agents with 3 skills and capacity 3), pre-loads N commands (arrivals
and closes) into the inbound stream, then runs the real ``GatewayConsumer`` until the
stream is drained. Prints commands/s, events/s, batches, daemon CPU µs and server CPU µs
per command, and the same figure for the server's ceiling (a trivial EVALSHA pipelined
100 per round trip) measured in the same run; ends with ``RESULT k=v ...``.

    python bench/gateway_stream.py [--quick] [--batch-size 500] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis
import uvloop

from bench.centre import arrivals_and_closes, server_cpu_s, setup_centre, start_server
from dispatchd import keys
from dispatchd.client import GatewayClient
from dispatchd.cluster_consumer import consumer_for
from dispatchd.connect import client_for
from dispatchd.consumer import ConsumerOptions
from dispatchd.engine import Engine
from dispatchd.protocol import ArriveCmd, CloseSessionCmd, GatewayCommand

TENANT = "gwbench"


def commands(n: int, groups: int, seed: int = 3) -> list[GatewayCommand]:
    return [
        ArriveCmd(id=f"c{i}", session=sid, group=group, priority=prio, gateway="web")
        if kind == "arrive" else CloseSessionCmd(id=f"c{i}", session=sid)
        for i, (kind, sid, group, prio) in enumerate(arrivals_and_closes(n, groups, seed))
    ]


async def ceiling(client: aioredis.Redis, n: int) -> float:
    sha = await client.script_load("return 1")
    t0 = time.perf_counter()
    for _ in range(n // 100):
        pipe = client.pipeline(transaction=False)
        for _ in range(100):
            pipe.evalsha(sha, 1, "{x}:c")
        await pipe.execute()
    return n / (time.perf_counter() - t0)


async def run(args: argparse.Namespace) -> None:
    url, server = start_server(args.redis_url)
    client = client_for(url, decode_responses=False)
    await client.flushall()
    engine = Engine(client)
    await engine.load_scripts()
    n = 10_000 if args.quick else 100_000
    groups, agents = (10, 100) if args.quick else (50, 1000)
    await setup_centre(engine, TENANT, groups, agents)
    gw = GatewayClient(client, TENANT)
    cmds = commands(n, groups)
    for i in range(0, n, 1000):
        await gw.send_many(cmds[i : i + 1000])
    consumer = consumer_for(engine, ConsumerOptions(
        tenants=(TENANT,), batch_size=args.batch_size, block_ms=1, tick_ms=100))
    inbound = keys.key("inbound", TENANT)
    cpu0, srv0, t0 = time.process_time(), await server_cpu_s(client), time.perf_counter()
    while await client.xlen(inbound) > 0:
        await consumer.step()
    wall = time.perf_counter() - t0
    cpu, srv = time.process_time() - cpu0, await server_cpu_s(client) - srv0
    events = await client.xlen(keys.key("outbound", TENANT))
    top = await ceiling(client, 20_000)
    rate = n / wall
    print(f"commands {n}, batch size {args.batch_size}, batches {consumer.batches}")
    print(f"gateway path: {rate:,.0f} commands/s, {events / wall:,.0f} events/s, "
          f"daemon CPU {cpu / n * 1e6:.1f} µs/command, server CPU {srv / n * 1e6:.1f} µs/command")
    print(f"server ceiling (trivial EVALSHA, pipelined): {top:,.0f} calls/s; "
          f"ratio {rate / top:.2f}")
    print(f"RESULT commands_per_s={rate:.0f} events_per_s={events / wall:.0f} "
          f"daemon_cpu_us={cpu / n * 1e6:.1f} server_cpu_us={srv / n * 1e6:.1f} "
          f"ceiling_per_s={top:.0f} ratio={rate / top:.2f}")
    await client.aclose()
    if server is not None:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k commands instead of 100k")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--redis-url", help="use this server instead of an embedded Valkey")
    asyncio.Runner(loop_factory=uvloop.new_event_loop).run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
