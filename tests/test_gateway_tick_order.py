"""The gateway function's tick and the stream: a tick asked for with no command does not
run ahead of commands already waiting in ``{T}:in`` (they were sent before it), but only
once in a row; a bare lease renewal touches nothing else."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from dispatchd import keys, scripts
from dispatchd.consumer import GROUP
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, ConfigureGroup

T0 = 1_700_000_000_000


async def _call(client: aioredis.Redis, tenant: str, now: int, **extra: Any) -> dict[str, Any]:
    args = {"lease": "me", "lease_ms": 5000, "group": GROUP, "dedupe_ms": 86_400_000,
            "out_maxlen": 1000, "dead_maxlen": 1000, "cmds": [], **extra}
    raw = await client.fcall(scripts.GATEWAY, 1, keys.root(tenant), now,
                             msgspec.msgpack.encode(args))
    reply: dict[str, Any] = msgspec.msgpack.decode(raw)
    return reply


async def test_a_tick_waits_once_for_entries_in_the_stream(engine: Engine,
                                                           redis_client: aioredis.Redis,
                                                           tenant: str) -> None:
    await engine.apply_batch(tenant, T0, [ConfigureGroup(group="g", queue_warning_ms=1000),
                                          Arrive(session="s1", group="g")])
    later = T0 + 5000  # the queue warning of s1 is due
    await redis_client.xadd(keys.key("inbound", tenant), {"json": "{}"})
    skipped = await _call(redis_client, tenant, later, tick=100)
    assert skipped == {"held": True, "skipped": True}
    assert await redis_client.xlen(keys.key("outbound", tenant)) == 0
    # skipped once already: `due` makes it fire whatever waits in the stream
    fired = await _call(redis_client, tenant, later, tick=100, due=True)
    assert fired["held"] is True and "skipped" not in fired
    assert fired["types"] == {"alert": 1}


async def test_a_tick_runs_when_the_stream_is_empty(engine: Engine,
                                                    redis_client: aioredis.Redis,
                                                    tenant: str) -> None:
    await engine.apply_batch(tenant, T0, [ConfigureGroup(group="g", queue_warning_ms=1000),
                                          Arrive(session="s1", group="g")])
    fired = await _call(redis_client, tenant, T0 + 5000, tick=100)
    assert fired["types"] == {"alert": 1}


async def test_a_bare_renewal_touches_nothing_else(engine: Engine,
                                                   redis_client: aioredis.Redis,
                                                   tenant: str) -> None:
    await engine.apply(tenant, T0, ConfigureGroup(group="g"))
    before = sorted(await redis_client.keys(keys.prefix(tenant) + "*"))
    assert await _call(redis_client, tenant, T0) == {"held": True}
    after = sorted(await redis_client.keys(keys.prefix(tenant) + "*"))
    assert after == sorted([*before, keys.key("lease", tenant).encode()])
    assert await redis_client.get(keys.key("lease", tenant)) == b"me"
    # another holder is refused and told who holds it
    raw = await redis_client.fcall(scripts.GATEWAY, 1, keys.root(tenant), T0,
                                   msgspec.msgpack.encode({"lease": "other", "lease_ms": 5000,
                                                           "cmds": []}))
    assert msgspec.msgpack.decode(raw) == {"held": False, "holder": "me"}
