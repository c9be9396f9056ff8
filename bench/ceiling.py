"""The server's own ceiling, measured in the same run as everything else.

* ``trivial``: ``EVALSHA`` of ``return 1``, pipelined 100 per round trip from one client:
  the most script calls per second this server and redis-py can do.
* ``assign``: a script making as many Redis calls as one assignment does on the gateway
  path, pipelined the same way. That number is counted, not guessed:
  :func:`count_assign_calls` sends a batch of ``arrive`` commands that are all assigned
  through the real ``gateway_batch`` script and reads ``INFO commandstats`` (which counts
  the calls scripts make) before and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from bench.servers import command_calls, redis_cpu_s
from dispatchd import keys, protocol, scripts
from dispatchd.consumer import GROUP
from dispatchd.engine import Engine
from dispatchd.messages import Command, ConfigureAgent, ConfigureGroup, SetAgentStatus
from dispatchd.protocol import ArriveCmd

PIPELINE = 100
#: Commands the calibration's own client sends (not made by the script being counted).
_CLIENT_COMMANDS = ("evalsha", "eval", "fcall", "info", "script|load")

#: One statement per kind of call an assignment makes (reads and writes on hashes,
#: sorted sets and sets), each touching a key derived from KEYS[1], state kept bounded.
_CALLS = (
    "redis.call('HINCRBY', k .. ':h', 'n', 1)",
    "redis.call('ZADD', k .. ':z', 1, ARGV[1])",
    "redis.call('ZRANGE', k .. ':z', 0, 0)",
    "redis.call('HSET', k .. ':h2', 'a', 1, 'b', 2)",
    "redis.call('SADD', k .. ':s', ARGV[1])",
    "redis.call('ZREM', k .. ':z', ARGV[1])",
    "redis.call('HMGET', k .. ':h2', 'a', 'b')",
    "redis.call('SREM', k .. ':s', ARGV[1])",
)


@dataclass(frozen=True)
class Ceiling:
    """Script calls per second and the server's CPU µs per call."""

    rate: float
    redis_cpu_us: float


def n_call_script(n: int) -> str:
    """A Lua script making exactly ``n`` Redis calls."""
    body = "\n".join(_CALLS[i % len(_CALLS)] for i in range(n))
    return f"local k = KEYS[1]\n{body}\nreturn 1\n"


async def ceiling(client: aioredis.Redis, body: str, calls: int, tenant: str) -> Ceiling:
    """Run ``body`` ``calls`` times, ``PIPELINE`` per round trip."""
    sha = await client.script_load(body)
    key = keys.prefix(tenant) + "ceiling"
    cpu0, t0 = await redis_cpu_s(client), time.perf_counter()
    for _ in range(max(1, calls // PIPELINE)):
        pipe = client.pipeline(transaction=False)
        for _ in range(PIPELINE):
            pipe.evalsha(sha, 1, key, "x")
        await pipe.execute()
    wall = time.perf_counter() - t0
    cpu = await redis_cpu_s(client) - cpu0
    done = max(1, calls // PIPELINE) * PIPELINE
    return Ceiling(rate=done / wall, redis_cpu_us=cpu / done * 1e6)


async def count_assign_calls(engine: Engine, tenant: str, n: int = 200) -> float:
    """Redis calls per ``arrive`` that is assigned at once, on the gateway path.

    One ``gateway_batch`` call (as the daemon makes it) with ``n`` arrivals, every one of
    them assigned, to agents with 3 skills like the bench centre's (an assignment re-ranks
    the agent in each of its groups). The batch's own calls (lease, dedupe trim,
    acknowledgements) are shared by the ``n`` commands, as in the daemon's batches.
    """
    now = time.time_ns() // 1_000_000
    agents = range(n // 20 + 1)  # with 3 skills each, like the bench centre's agents
    skills = {"g0": 3.0, "g1": 2.0, "g2": 1.0}
    setup: list[Command] = [
        *(ConfigureGroup(group=g) for g in skills),
        *(ConfigureAgent(agent=f"a{i}", capacity=20, abilities=skills) for i in agents),
        *(SetAgentStatus(agent=f"a{i}", status="online") for i in agents),
    ]
    await engine.apply_batch(tenant, now, setup)
    cmds = [protocol.to_script(ArriveCmd(id=f"c{i}", session=f"s{i}", group="g0"), f"1-{i + 1}")
            for i in range(n)]
    args = {"lease": "bench", "lease_ms": 5000, "group": GROUP, "dedupe_ms": 86_400_000,
            "out_maxlen": 1_000_000, "dead_maxlen": 100_000, "cmds": cmds}
    before = await command_calls(engine.redis)
    await engine.redis.fcall(scripts.GATEWAY, 1, keys.root(tenant), now,
                             msgspec.msgpack.encode(args))
    after = await command_calls(engine.redis)
    made = sum(c - before.get(name, 0) for name, c in after.items()
               if name not in _CLIENT_COMMANDS)
    return made / n
