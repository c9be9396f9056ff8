"""lua/transfer_session.lua: move a session to another group or to a named agent."""

from __future__ import annotations

import pytest
from helpers import (
    SEC,
    T0,
    add_agent,
    assert_refused,
    assert_session,
    groups,
    queued_view,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import (
    AgentBlocked,
    AgentOffline,
    AgentUnknown,
    BadArgument,
    BadId,
    GroupUnknown,
    SessionState,
    SessionUnknown,
)
from dispatchd.messages import (
    Assigned,
    PreferenceExpired,
    Queued,
    Transferred,
    TransferSession,
)

U_SUPPORT = 10 * SEC


async def world(engine, tenant, *, preference_ms=60_000):
    """sales (U 60 s) and support (U 10 s); alice {sales}, bob {support}, dave {sales}
    online with capacity 1; carol {sales, support} offline. s1 (priority 1) is alice's,
    s0 is bob's, s2 waits in sales (dave took the session ``d``)."""
    await engine.configure_group(tenant, T0, "sales", preference_ms=preference_ms)
    await engine.configure_group(tenant, T0, "support", priority_unit_ms=U_SUPPORT,
                                 preference_ms=preference_ms)
    await add_agent(engine, tenant, "alice", {"sales": 1.0})
    await add_agent(engine, tenant, "bob", {"support": 1.0})
    await add_agent(engine, tenant, "carol", {"sales": 1.0, "support": 1.0}, status="offline")
    await engine.arrive(tenant, T0, "s1", "sales", priority=1)
    await engine.arrive(tenant, T0, "s0", "support")
    await add_agent(engine, tenant, "dave", {"sales": 1.0}, now=T0 + SEC)
    await engine.arrive(tenant, T0 + SEC, "d", "sales")
    await engine.arrive(tenant, T0 + 2 * SEC, "s2", "sales")


async def test_assigned_to_group_keeps_arrival_and_uses_new_unit(engine, tenant):
    await world(engine, tenant)
    now = T0 + 30 * SEC
    out = await engine.transfer_session(tenant, now, "s1", to_group="support")
    assert out.events == [
        Transferred(session="s1", from_group="sales", to_group="support", from_agent="alice"),
        Queued(session="s1", group="support", virtual_arrival_ms=T0 - U_SUPPORT, priority=1,
               position=1, reason="transfer"),
        Assigned(session="s2", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=28 * SEC),
    ]
    assert await engine.session(tenant, "s1") == queued_view("s1", "support", T0, priority=1,
                                                             u=U_SUPPORT)
    assert await engine.queue(tenant, "support") == [QueueEntry("s1", T0 - U_SUPPORT)]
    assert await engine.queue(tenant, "sales") == []
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.last_assigned_ms) == (1, now)


async def test_queued_to_group_with_free_agent(engine, tenant):
    await world(engine, tenant)
    await engine.release_session(tenant, T0 + 3 * SEC, "s0")  # bob is free
    out = await engine.transfer_session(tenant, T0 + 9 * SEC, "s2", to_group="support")
    assert out.events == [
        Transferred(session="s2", from_group="sales", to_group="support"),
        Assigned(session="s2", agent="bob", group="support", tier=0, via="group",
                 wait_ms=7 * SEC),
    ]
    assert await engine.queue(tenant, "sales") == []
    assert_session(await engine.session(tenant, "s2"), state="assigned", agent="bob",
                   group="support", arrival_ms=T0 + 2 * SEC)


async def test_parked_to_group_drops_the_preference(engine, tenant):
    await world(engine, tenant)
    await engine.arrive(tenant, T0 + 3 * SEC, "p", "sales", directed_agent="bob")
    out = await engine.transfer_session(tenant, T0 + 4 * SEC, "p", to_group="sales")
    assert out.events[1] == Queued(session="p", group="sales", virtual_arrival_ms=T0 + 3 * SEC,
                                   priority=0, position=2, reason="transfer")
    assert await engine.parked(tenant, "bob") == []
    assert await engine.session(tenant, "p") == queued_view("p", "sales", T0 + 3 * SEC)
    assert (await engine.expire_preferences(tenant, T0 + 10**8)).events == []


async def test_to_free_agent(engine, tenant):
    await world(engine, tenant)
    await engine.release_session(tenant, T0 + 3 * SEC, "s0")
    now = T0 + 5 * SEC
    out = await engine.transfer_session(tenant, now, "s1", to_agent="bob")
    assert out.events == [
        Transferred(session="s1", from_group="sales", to_group="sales", from_agent="alice",
                    to_agent="bob"),
        Assigned(session="s1", agent="bob", group="sales", tier=0, via="transfer",
                 wait_ms=5 * SEC),
        Assigned(session="s2", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=3 * SEC),
    ]
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="bob",
                   group="sales")
    assert (await engine.agent(tenant, "bob")).load == 1


@pytest.mark.parametrize("busy_how", ["full", "away"])
async def test_to_busy_agent_parks_until_now_plus_preference(engine, tenant, busy_how):
    await world(engine, tenant, preference_ms=20 * SEC)
    if busy_how == "away":
        await engine.release_session(tenant, T0 + SEC, "s0")
        await engine.set_agent_status(tenant, T0 + SEC, "bob", "away")
    now = T0 + 5 * SEC
    out = await engine.transfer_session(tenant, now, "s2", to_agent="bob")
    assert out.events == [
        Transferred(session="s2", from_group="sales", to_group="sales", to_agent="bob"),
        Queued(session="s2", group="sales", virtual_arrival_ms=T0 + 2 * SEC, priority=0,
               position=1, reason="transfer", parked_with="bob"),
    ]
    assert await engine.parked(tenant, "bob") == [QueueEntry("s2", T0 + 2 * SEC)]
    assert await engine.session(tenant, "s2") == queued_view("s2", "sales", T0 + 2 * SEC,
                                                             parked_with="bob")
    assert await engine.queue(tenant, "sales") == []
    assert (await engine.expire_preferences(tenant, now + 20 * SEC - 1)).events == []
    out = await engine.expire_preferences(tenant, now + 20 * SEC)
    assert out.events[0] == PreferenceExpired(session="s2", agent="bob")


async def test_agent_takes_a_customer_parked_by_transfer(engine, tenant):
    await world(engine, tenant)
    await engine.transfer_session(tenant, T0 + 5 * SEC, "s2", to_agent="bob")
    out = await engine.release_session(tenant, T0 + 6 * SEC, "s0")
    assert out.events[1] == Assigned(session="s2", agent="bob", group="sales", tier=0,
                                     via="transfer", wait_ms=4 * SEC)
    assert await engine.parked(tenant, "bob") == []


async def test_to_busy_agent_without_preference_wait_routes_in_group(engine, tenant):
    await world(engine, tenant, preference_ms=0)
    out = await engine.transfer_session(tenant, T0 + 5 * SEC, "s2", to_agent="bob")
    assert out.events[1] == Queued(session="s2", group="sales",
                                   virtual_arrival_ms=T0 + 2 * SEC, priority=0, position=1,
                                   reason="transfer")
    assert await engine.parked(tenant, "bob") == []


async def test_force_over_capacity(engine, tenant):
    await world(engine, tenant)
    now = T0 + 5 * SEC
    out = await engine.transfer_session(tenant, now, "s1", to_agent="bob", force=True)
    assert out.events == [
        Transferred(session="s1", from_group="sales", to_group="sales", from_agent="alice",
                    to_agent="bob"),
        Assigned(session="s1", agent="bob", group="sales", tier=0, via="forced",
                 wait_ms=5 * SEC),
        Assigned(session="s2", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=3 * SEC),
    ]
    bob = await engine.agent(tenant, "bob")
    assert (bob.load, bob.capacity, bob.last_assigned_ms) == (2, 1, now)
    assert await engine.ranking(tenant, "support") == []


async def test_force_from_the_queue_to_an_away_agent(engine, tenant):
    await world(engine, tenant)
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "bob", "away")
    out = await engine.transfer_session(tenant, T0 + 5 * SEC, "s2", to_agent="bob", force=True)
    assert out.events[1] == Assigned(session="s2", agent="bob", group="sales", tier=0,
                                     via="forced", wait_ms=3 * SEC)
    assert await engine.queue(tenant, "sales") == []


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "detail"),
    [({"session": "s 1", "to_group": "support"}, "session"),
     ({"to_group": "bad/group"}, "to_group"),
     ({"to_agent": ""}, "to_agent")],
)
async def test_bad_id(engine, redis_client, tenant, fields, detail):
    await world(engine, tenant)
    cmd = TransferSession(**{"session": "s1", **fields})
    await assert_refused(redis_client, tenant, BadId, engine.apply(tenant, T0, cmd), detail)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"to_group": "support", "force": "yes"}, "force"),
        ({}, "exactly one of to_group, to_agent"),
        ({"to_group": "support", "to_agent": "bob"}, "exactly one of to_group, to_agent"),
        ({"to_agent": "alice"}, "to_agent: already there"),
    ],
)
async def test_bad_arg(engine, redis_client, tenant, fields, detail):
    await world(engine, tenant)
    cmd = TransferSession(**{"session": "s1", **fields})
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd),
                         detail)


async def test_session_unknown(engine, redis_client, tenant):
    await world(engine, tenant)
    await assert_refused(redis_client, tenant, SessionUnknown,
                         engine.transfer_session(tenant, T0, "nope", to_group="sales"), "nope")


@pytest.mark.parametrize("state", ["preclosed", "closed"])
async def test_session_state(engine, redis_client, tenant, state):
    await world(engine, tenant)
    await engine.preclose_session(tenant, T0 + 3 * SEC, "s1")
    if state == "closed":
        await engine.release_session(tenant, T0 + 3 * SEC, "s1")
    await assert_refused(redis_client, tenant, SessionState,
                         engine.transfer_session(tenant, T0 + 4 * SEC, "s1", to_group="support"),
                         state)


async def test_group_unknown(engine, redis_client, tenant):
    await world(engine, tenant)
    await assert_refused(redis_client, tenant, GroupUnknown,
                         engine.transfer_session(tenant, T0, "s1", to_group="ghost"), "ghost")


async def test_agent_unknown(engine, redis_client, tenant):
    await world(engine, tenant)
    await assert_refused(redis_client, tenant, AgentUnknown,
                         engine.transfer_session(tenant, T0, "s2", to_agent="ghost"), "ghost")


@pytest.mark.parametrize("force", [False, True])
async def test_agent_offline(engine, redis_client, tenant, force):
    await world(engine, tenant)
    await assert_refused(redis_client, tenant, AgentOffline,
                         engine.transfer_session(tenant, T0, "s1", to_agent="carol",
                                                 force=force), "carol")


@pytest.mark.parametrize("force", [False, True])
async def test_agent_blocked(engine, redis_client, tenant, force):
    await world(engine, tenant)
    await groups(engine, tenant, "vip")
    await engine.arrive(tenant, T0 + 3 * SEC, "b", "vip", blocked_agents=["bob"])
    await assert_refused(redis_client, tenant, AgentBlocked,
                         engine.transfer_session(tenant, T0 + 4 * SEC, "b", to_agent="bob",
                                                 force=force), "bob")

