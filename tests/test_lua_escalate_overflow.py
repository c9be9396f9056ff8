"""lua/escalate_overflow.lua: open due overflow tiers and route with the larger pool.

``overflow_world``: ``main`` overflows to ``t1`` after 30 s and to ``t2a``/``t2b`` after
60 s; agents m1 {main}, x1 {t1}, y1 {t2a}, y2 {t2b}, all offline.
"""

from __future__ import annotations

import pytest
from helpers import (
    SEC,
    T0,
    assert_refused,
    assert_session,
    dump_keyspace,
    names,
    overflow_world,
    queued_view,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import BadArgument
from dispatchd.messages import Assigned, EscalateOverflow, TierOpened


async def test_nothing_due(engine, redis_client, tenant):
    await overflow_world(engine, tenant)
    assert (await engine.escalate_overflow(tenant, T0)).events == []  # no customers at all
    await engine.arrive(tenant, T0, "s1", "main")
    before = await dump_keyspace(redis_client, tenant)
    assert (await engine.escalate_overflow(tenant, T0 + 30 * SEC - 1)).events == []
    assert await dump_keyspace(redis_client, tenant) == before


async def test_one_tier_without_candidate_then_the_next(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "main", priority=1)
    out = await engine.escalate_overflow(tenant, T0 + 30 * SEC)
    assert out.events == [TierOpened(session="s1", group="main", tier=1)]
    assert await engine.session(tenant, "s1") == queued_view("s1", "main", T0, priority=1,
                                                             open_tier=1)
    assert await engine.queue(tenant, "main") == [QueueEntry("s1", T0 - 60 * SEC)]
    assert (await engine.escalate_overflow(tenant, T0 + 60 * SEC - 1)).events == []
    out = await engine.escalate_overflow(tenant, T0 + 60 * SEC)
    assert out.events == [TierOpened(session="s1", group="main", tier=2)]
    assert (await engine.session(tenant, "s1")).open_tier == 2
    assert (await engine.escalate_overflow(tenant, T0 + 10**9)).events == []  # no tier 3


async def test_assigns_to_a_tier_agent(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.set_agent_status(tenant, T0, "x1", "online")
    await engine.arrive(tenant, T0, "s1", "main")
    now = T0 + 31 * SEC
    out = await engine.escalate_overflow(tenant, now)
    assert out.events == [
        TierOpened(session="s1", group="main", tier=1),
        Assigned(session="s1", agent="x1", group="main", tier=1, via="overflow",
                 wait_ms=31 * SEC),
    ]
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="x1",
                   group="main", virtual_arrival_ms=None)
    x1 = await engine.agent(tenant, "x1")
    assert (x1.load, x1.last_assigned_ms) == (1, now)
    assert await engine.queue(tenant, "main") == []
    assert await engine.ranking(tenant, "t1") == []
    assert (await engine.escalate_overflow(tenant, T0 + 10**9)).events == []


async def test_several_tiers_at_once_best_agent_across_tier_groups(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.set_agent_status(tenant, T0 + 5 * SEC, "y1", "online")
    await engine.set_agent_status(tenant, T0, "y2", "online")  # idle longer: more ready
    await engine.arrive(tenant, T0, "s1", "main")
    out = await engine.escalate_overflow(tenant, T0 + 70 * SEC)
    assert out.events == [
        TierOpened(session="s1", group="main", tier=1),
        TierOpened(session="s1", group="main", tier=2),
        Assigned(session="s1", agent="y2", group="main", tier=2, via="overflow",
                 wait_ms=70 * SEC),
    ]
    assert (await engine.agent(tenant, "y1")).load == 0


async def test_due_order_then_session_id_and_limit(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "b", "main")
    await engine.arrive(tenant, T0, "a", "main")
    await engine.arrive(tenant, T0 - SEC, "z", "main")  # due a second earlier
    await engine.arrive(tenant, T0 + 5 * SEC, "late", "main")
    now = T0 + 31 * SEC
    out = await engine.escalate_overflow(tenant, now, limit=2)
    assert out.events == [TierOpened(session="z", group="main", tier=1),
                          TierOpened(session="a", group="main", tier=1)]
    assert (await engine.session(tenant, "b")).open_tier == 0
    out = await engine.escalate_overflow(tenant, now, limit=2)
    assert out.events == [TierOpened(session="b", group="main", tier=1)]  # late not due
    # x1 then takes them in queue order (by virtual arrival), not in escalation order
    await engine.configure_agent(tenant, now, "x1", capacity=5, abilities={"t1": 1.0})
    out = await engine.set_agent_status(tenant, now, "x1", "online")
    assert [e.session for e in out.events[1:]] == ["z", "b", "a"]


async def test_parked_customers_have_no_overflow_steps(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.set_agent_status(tenant, T0, "m1", "away")
    await engine.set_agent_status(tenant, T0, "x1", "online")
    await engine.arrive(tenant, T0, "p", "main", directed_agent="m1")
    assert (await engine.escalate_overflow(tenant, T0 + 70 * SEC)).events == []
    assert (await engine.session(tenant, "p")).parked_with == "m1"


async def test_assigned_customers_are_no_longer_due(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "main")
    await engine.arrive(tenant, T0, "s2", "main")
    await engine.set_agent_status(tenant, T0 + SEC, "m1", "online")  # takes s1
    out = await engine.escalate_overflow(tenant, T0 + 30 * SEC, limit=1)
    assert names(out.events) == ["tier_opened"]
    assert out.events[0].session == "s2"


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("limit", [0, -1, 10_001, 1.5, "5"])
async def test_bad_limit(engine, redis_client, tenant, limit):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "main")
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.apply(tenant, T0 + 60 * SEC, EscalateOverflow(limit=limit)),
                         "limit")


@pytest.mark.parametrize("now", [-1, 10**15])
async def test_bad_now(engine, redis_client, tenant, now):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "main")
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.escalate_overflow(tenant, now), "now_ms")
