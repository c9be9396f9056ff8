"""lua/arrive.lua: a customer arrives and is assigned, parked or queued."""

from __future__ import annotations

import pytest
from helpers import (
    MIN,
    SEC,
    T0,
    add_agent,
    assert_refused,
    assert_session,
    groups,
    queued_view,
    rank,
    sales_support,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import AgentUnknown, BadArgument, BadId, GroupUnknown, SessionExists
from dispatchd.messages import Arrive, Assigned, Queued, Tier


async def test_assigned_to_best_agent_of_group(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "bob", "carol"))
    now = T0 + 5 * SEC
    out = await engine.arrive(tenant, now, "s1", "sales", customer="c1", priority=3)
    # alice and carol both have readiness 60 in sales; the tie goes to the smaller id
    assert out.events == [Assigned(session="s1", agent="alice", group="sales", tier=0,
                                   via="group", wait_ms=0)]
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="alice",
                   group="sales", priority=3, arrival_ms=now, customer="c1",
                   parked_with=None, virtual_arrival_ms=None, blocked_agents=[])
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.last_assigned_ms) == (1, now)
    assert await engine.ranking(tenant, "sales") == [("carol", rank(T0))]
    assert await engine.queue(tenant, "sales") == []


async def test_queued_when_nobody_is_online(engine, tenant):
    await sales_support(engine, tenant, online=())
    assert await engine.queue(tenant, "sales") == []  # empty queue view
    out = await engine.arrive(tenant, T0, "s1", "sales")
    assert out.events == [Queued(session="s1", group="sales", virtual_arrival_ms=T0,
                                 priority=0, position=1, reason="arrival")]
    assert await engine.session(tenant, "s1") == queued_view("s1", "sales", T0)
    assert await engine.queue(tenant, "sales") == [QueueEntry("s1", T0)]
    assert await engine.ranking(tenant, "sales") == []


async def test_priority_orders_the_queue_by_virtual_arrival(engine, tenant):
    await sales_support(engine, tenant, online=())
    await engine.arrive(tenant, T0, "p0", "sales")
    out = await engine.arrive(tenant, T0 + 10 * SEC, "p5", "sales", priority=5)
    assert out.events[0].position == 1
    assert out.events[0].virtual_arrival_ms == T0 + 10 * SEC - 5 * MIN
    out = await engine.arrive(tenant, T0 + 20 * SEC, "neg", "sales", priority=-2)
    assert out.events[0].position == 3
    # same virtual arrival as p0 (one point = 60 s): the earlier arrival goes first
    out = await engine.arrive(tenant, T0 + MIN, "p1", "sales", priority=1)
    assert out.events[0].position == 3
    # same virtual arrival and arrival time as p1: the lower sequence number goes first
    out = await engine.arrive(tenant, T0 + MIN, "a-later", "sales", priority=1)
    assert out.events[0].position == 4
    assert await engine.queue(tenant, "sales") == [
        QueueEntry("p5", T0 + 10 * SEC - 5 * MIN), QueueEntry("p0", T0), QueueEntry("p1", T0),
        QueueEntry("a-later", T0), QueueEntry("neg", T0 + 20 * SEC + 2 * MIN)]
    out = await engine.set_agent_status(tenant, T0 + 2 * MIN, "alice", "online")
    assert [e.session for e in out.events[1:]] == ["p5"]


async def test_directed_agent_online_is_assigned_even_outside_the_group(engine, tenant):
    await sales_support(engine, tenant)
    out = await engine.arrive(tenant, T0, "s1", "sales", directed_agent="bob")
    assert out.events == [Assigned(session="s1", agent="bob", group="sales", tier=0,
                                   via="directed", wait_ms=0)]
    assert (await engine.agent(tenant, "bob")).load == 1
    assert (await engine.agent(tenant, "alice")).load == 0


@pytest.mark.parametrize("busy_how", ["at_capacity", "away"])
async def test_directed_agent_busy_parks_the_customer(engine, tenant, busy_how):
    await sales_support(engine, tenant)
    if busy_how == "at_capacity":
        await engine.arrive(tenant, T0, "s0", "support")
    else:
        await engine.set_agent_status(tenant, T0, "bob", "away")
    out = await engine.arrive(tenant, T0 + SEC, "s1", "sales", directed_agent="bob")
    assert out.events == [Queued(session="s1", group="sales", virtual_arrival_ms=T0 + SEC,
                                 priority=0, position=1, reason="arrival", parked_with="bob")]
    assert await engine.session(tenant, "s1") == queued_view("s1", "sales", T0 + SEC,
                                                             parked_with="bob")
    assert await engine.parked(tenant, "bob") == [QueueEntry("s1", T0 + SEC)]
    assert await engine.queue(tenant, "sales") == []
    assert (await engine.agent(tenant, "alice")).load == 0  # free, but not preferred


async def test_directed_agent_offline_routes_normally(engine, tenant):
    await sales_support(engine, tenant)
    out = await engine.arrive(tenant, T0, "s1", "sales", directed_agent="carol")
    assert out.events == [Assigned(session="s1", agent="alice", group="sales", tier=0,
                                   via="group", wait_ms=0)]
    assert await engine.parked(tenant, "carol") == []


async def test_directed_busy_without_preference_wait_routes_normally(engine, tenant):
    await sales_support(engine, tenant, preference_ms=0)
    await engine.arrive(tenant, T0, "s0", "support")  # bob is now full
    out = await engine.arrive(tenant, T0, "s1", "sales", directed_agent="bob")
    assert out.events[0].agent == "alice" and out.events[0].via == "group"
    assert await engine.parked(tenant, "bob") == []


async def test_sticky_last_agent_only_when_group_is_sticky(engine, tenant):
    await sales_support(engine, tenant)
    await engine.configure_group(tenant, T0, "sticky", sticky_ms=5 * MIN)
    await add_agent(engine, tenant, "dave", {"sticky": 1.0})
    out = await engine.arrive(tenant, T0, "s1", "sticky", last_agent="bob")
    assert out.events == [Assigned(session="s1", agent="bob", group="sticky", tier=0,
                                   via="sticky", wait_ms=0)]
    # sticky_ms = 0: the command's last_agent is not trusted
    out = await engine.arrive(tenant, T0, "s2", "sales", last_agent="carol")
    assert out.events[0].agent == "alice" and out.events[0].via == "group"
    # an unknown sticky agent is ignored
    out = await engine.arrive(tenant, T0, "s3", "sticky", last_agent="ghost")
    assert out.events[0].agent == "dave" and out.events[0].via == "group"


@pytest.mark.parametrize(("gap", "sticky"), [(5 * MIN, True), (5 * MIN + 1, False)])
async def test_sticky_from_customer_memory(engine, tenant, gap, sticky):
    await groups(engine, tenant, "sales", sticky_ms=5 * MIN)
    await add_agent(engine, tenant, "alice", {"sales": 1.0})
    await add_agent(engine, tenant, "bob", {"sales": 1.0})
    await engine.arrive(tenant, T0, "s0", "sales", customer="c1", directed_agent="bob")
    released = T0 + 10 * SEC
    await engine.release_session(tenant, released, "s0")
    out = await engine.arrive(tenant, released + gap, "s1", "sales", customer="c1")
    expected = ("bob", "sticky") if sticky else ("alice", "group")
    assert (out.events[0].agent, out.events[0].via) == expected


async def test_sticky_agent_busy_parks_with_kind_sticky(engine, tenant):
    await groups(engine, tenant, "sales", sticky_ms=5 * MIN, preference_ms=30 * SEC)
    await add_agent(engine, tenant, "alice", {"sales": 1.0})
    await add_agent(engine, tenant, "bob", {"sales": 1.0})
    await engine.arrive(tenant, T0, "s0", "sales", last_agent="bob")
    out = await engine.arrive(tenant, T0 + SEC, "s1", "sales", last_agent="bob")
    assert out.events[0].parked_with == "bob"
    out = await engine.release_session(tenant, T0 + 2 * SEC, "s0")
    assert out.events[1] == Assigned(session="s1", agent="bob", group="sales", tier=0,
                                     via="sticky", wait_ms=SEC)


async def test_blocked_agents_are_skipped(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "bob", "carol"))
    out = await engine.arrive(tenant, T0, "s1", "sales", blocked_agents=["alice", "zed"])
    assert out.events[0].agent == "carol"
    assert_session(await engine.session(tenant, "s1"), blocked_agents=["alice", "zed"])
    # a blocked directed agent is ignored; blocking everyone queues the customer
    out = await engine.arrive(tenant, T0, "s2", "sales", directed_agent="alice",
                              blocked_agents=["alice"])
    assert out.events[0].reason == "arrival" and out.events[0].parked_with is None
    assert await engine.session(tenant, "s2") == queued_view("s2", "sales", T0,
                                                             blocked=["alice"])


async def test_open_tier_at_arrival_routes_to_overflow_agent(engine, tenant):
    await groups(engine, tenant, "help")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=0, groups=["help"])])
    await add_agent(engine, tenant, "h1", {"help": 1.0})
    out = await engine.arrive(tenant, T0, "s1", "main")
    assert out.events == [Assigned(session="s1", agent="h1", group="main", tier=1,
                                   via="overflow", wait_ms=0)]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"session": "bad id"}, "session"),
        ({"session": "x" * 65}, "session"),
        ({"group": ""}, "group"),
        ({"customer": "c/1"}, "customer"),
        ({"directed_agent": "a b"}, "directed_agent"),
        ({"last_agent": "ä"}, "last_agent"),
        ({"blocked_agents": ["ok", "not ok"]}, "blocked_agents"),
    ],
)
async def test_bad_id(engine, redis_client, tenant, fields, detail):
    await sales_support(engine, tenant)
    cmd = Arrive(**{"session": "s1", "group": "sales", **fields})
    await assert_refused(redis_client, tenant, BadId, engine.apply(tenant, T0, cmd), detail)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"priority": 1001}, "priority"),
        ({"priority": -1001}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"blocked_agents": "alice"}, "blocked_agents"),
        ({"blocked_agents": [f"a{i}" for i in range(101)]}, "blocked_agents"),
    ],
)
async def test_bad_arg(engine, redis_client, tenant, fields, detail):
    await sales_support(engine, tenant)
    cmd = Arrive(**{"session": "s1", "group": "sales", **fields})
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd), detail)


async def test_bad_now(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.arrive(tenant, -1, "s1", "sales"), "now_ms")


async def test_group_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, GroupUnknown,
                         engine.arrive(tenant, T0, "s1", "nosuch"), "nosuch")


@pytest.mark.parametrize("first_state", ["assigned", "closed"])
async def test_session_exists(engine, redis_client, tenant, first_state):
    await sales_support(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "sales")
    if first_state == "closed":
        await engine.release_session(tenant, T0 + 1, "s1")
    await assert_refused(redis_client, tenant, SessionExists,
                         engine.arrive(tenant, T0 + 2, "s1", "support"), "s1")


async def test_directed_agent_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, AgentUnknown,
                         engine.arrive(tenant, T0, "s1", "sales", directed_agent="ghost"),
                         "ghost")
