"""A session's history (lua/lib/90_entry.lua): every path that applies a command records
the session's events in their outbound form, oldest first; the list expires with the
closed session."""

from __future__ import annotations

import json

from helpers import SEC, T0, sales_support

from dispatchd import keys
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, ReleaseSession


async def history(redis_client, tenant, sid):
    return [json.loads(r) for r in await Engine(redis_client).session_history(tenant, sid)]


async def test_single_calls_and_batches_record_the_same_history(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=())
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.apply_batch(tenant, T0 + SEC, [Arrive(session="s2", group="sales")])
    await engine.set_agent_status(tenant, T0 + 5 * SEC, "alice", "online")
    h1 = await history(redis_client, tenant, "s1")
    assert [e["type"] for e in h1] == ["queued", "assigned"]
    assert h1[0]["ts"] == T0 and h1[1]["ts"] == T0 + 5 * SEC
    assert h1[1]["agent"] == "alice" and h1[1]["wait_ms"] == 5 * SEC
    assert [e["type"] for e in await history(redis_client, tenant, "s2")] == ["queued"]
    await engine.apply_batch(tenant, T0 + 9 * SEC, [ReleaseSession(session="s1")])
    h1 = await history(redis_client, tenant, "s1")
    assert h1[-1]["type"] == "closed" and h1[-1]["state"] == "closed"
    # the history is kept as long as the closed session, no longer
    session_ttl = await redis_client.pttl(keys.key("session", tenant, "s1"))
    history_ttl = await redis_client.pttl(keys.key("history", tenant, "s1"))
    assert session_ttl > 0 and abs(session_ttl - history_ttl) < 1000


async def test_history_is_capped_to_the_newest_entries(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    for n in range(300):  # each exchange emits two state changes
        await engine.customer_message(tenant, T0 + n * SEC, "s1")
        await engine.agent_message(tenant, T0 + n * SEC + 1, "s1", "alice")
    h = await history(redis_client, tenant, "s1")
    assert len(h) == 500
    assert h[-1]["ts"] == T0 + 299 * SEC + 1
