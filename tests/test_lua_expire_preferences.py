"""lua/expire_preferences.lua: parked customers whose preference wait is over fall back."""

from __future__ import annotations

import pytest
from helpers import (
    MIN,
    SEC,
    T0,
    add_agent,
    assert_refused,
    assert_session,
    dump_keyspace,
    groups,
    overflow_world,
    queued_view,
    sales_support,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import BadArgument
from dispatchd.messages import Assigned, ExpirePreferences, PreferenceExpired, Queued


async def park(engine, tenant, sid, at, group="sales", agent="alice", **kw):
    out = await engine.arrive(tenant, at, sid, group, directed_agent=agent, **kw)
    assert out.events[0].parked_with == agent


async def test_nothing_due(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=())
    await engine.set_agent_status(tenant, T0, "alice", "away")
    assert (await engine.expire_preferences(tenant, T0)).events == []  # nobody parked
    await park(engine, tenant, "p", T0)
    before = await dump_keyspace(redis_client, tenant)
    assert (await engine.expire_preferences(tenant, T0 + MIN - 1)).events == []
    assert await dump_keyspace(redis_client, tenant) == before


async def test_fallback_queues_in_the_group(engine, tenant):
    await sales_support(engine, tenant, online=())
    await engine.set_agent_status(tenant, T0, "alice", "away")
    await park(engine, tenant, "p", T0, priority=2, customer="c1")
    out = await engine.expire_preferences(tenant, T0 + MIN)
    assert out.events == [
        PreferenceExpired(session="p", agent="alice"),
        Queued(session="p", group="sales", virtual_arrival_ms=T0 - 2 * MIN, priority=2,
               position=1, reason="fallback"),
    ]
    assert await engine.session(tenant, "p") == queued_view("p", "sales", T0, priority=2,
                                                            customer="c1")
    assert await engine.parked(tenant, "alice") == []
    assert await engine.queue(tenant, "sales") == [QueueEntry("p", T0 - 2 * MIN)]
    assert (await engine.expire_preferences(tenant, T0 + 10**9)).events == []


async def test_fallback_routes_to_a_group_agent(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"))
    await engine.arrive(tenant, T0, "s0", "sales")  # alice
    await park(engine, tenant, "p", T0 + SEC)
    await engine.arrive(tenant, T0 + 2 * SEC, "s2", "sales")  # carol
    await engine.release_session(tenant, T0 + 3 * SEC, "s2")  # carol free again
    now = T0 + SEC + MIN
    out = await engine.expire_preferences(tenant, now)
    assert out.events == [
        PreferenceExpired(session="p", agent="alice"),
        Assigned(session="p", agent="carol", group="sales", tier=0, via="group", wait_ms=MIN),
    ]
    assert_session(await engine.session(tenant, "p"), state="assigned", agent="carol",
                   parked_with=None)
    carol = await engine.agent(tenant, "carol")
    assert (carol.load, carol.last_assigned_ms) == (1, now)
    assert await engine.parked(tenant, "alice") == []


async def test_fallback_opens_the_tiers_its_wait_earned(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.set_agent_status(tenant, T0, "m1", "away")
    await engine.set_agent_status(tenant, T0, "y1", "online")
    await park(engine, tenant, "p", T0, group="main", agent="m1")
    out = await engine.expire_preferences(tenant, T0 + MIN)
    assert out.events == [
        PreferenceExpired(session="p", agent="m1"),
        Assigned(session="p", agent="y1", group="main", tier=2, via="overflow", wait_ms=MIN),
    ]


async def test_due_order_then_session_id_and_limit(engine, tenant):
    await groups(engine, tenant, "sales", preference_ms=MIN)
    await groups(engine, tenant, "short", preference_ms=10 * SEC)
    await add_agent(engine, tenant, "alice", {"sales": 1.0}, status="away")
    await park(engine, tenant, "b", T0)
    await park(engine, tenant, "a", T0)
    await park(engine, tenant, "z", T0 + 30 * SEC, group="short")  # due at T0 + 40 s
    now = T0 + MIN
    out = await engine.expire_preferences(tenant, now, limit=2)
    assert [(type(e).__name__, e.session) for e in out.events] == [
        ("PreferenceExpired", "z"), ("Queued", "z"), ("PreferenceExpired", "a"),
        ("Queued", "a")]
    assert await engine.parked(tenant, "alice") == [QueueEntry("b", T0)]
    out = await engine.expire_preferences(tenant, now, limit=2)
    assert [e.session for e in out.events] == ["b", "b"]
    assert [q.session for q in await engine.queue(tenant, "sales")] == ["b", "a"]


async def test_transfer_parking_falls_back_too(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "bob"), preference_ms=20 * SEC)
    await engine.arrive(tenant, T0, "s0", "support")  # bob is full
    await engine.arrive(tenant, T0, "s1", "sales")  # alice
    await engine.transfer_session(tenant, T0 + 5 * SEC, "s1", to_agent="bob")
    out = await engine.expire_preferences(tenant, T0 + 25 * SEC)
    assert out.events == [
        PreferenceExpired(session="s1", agent="bob"),
        Assigned(session="s1", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=25 * SEC),
    ]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("limit", [0, 10_001, 2.5, "1"])
async def test_bad_limit(engine, redis_client, tenant, limit):
    await sales_support(engine, tenant, online=())
    await engine.set_agent_status(tenant, T0, "alice", "away")
    await park(engine, tenant, "p", T0)
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.apply(tenant, T0 + MIN, ExpirePreferences(limit=limit)),
                         "limit")


async def test_bad_now(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=())
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.expire_preferences(tenant, -5), "now_ms")
