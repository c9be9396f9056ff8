"""lua/configure_agent.lua: create or replace an agent's capacity, abilities and team."""

from __future__ import annotations

import pytest
from helpers import SEC, T0, add_agent, assert_refused, groups, rank, sales_support

from dispatchd import keys
from dispatchd.engine import AgentView, QueueEntry
from dispatchd.errors import BadArgument, BadId, GroupUnknown
from dispatchd.messages import AgentConfigured, Assigned, ConfigureAgent, ConfigureGroup


async def test_new_agent_starts_offline(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", "support")
    out = await engine.configure_agent(tenant, T0, "alice", capacity=3,
                                       abilities={"sales": 1.5, "support": 0.25}, team="blue")
    assert out.events == [AgentConfigured(agent="alice")]
    assert await engine.agent(tenant, "alice") == AgentView(
        agent="alice", status="offline", capacity=3, load=0, preclosed=0,
        last_assigned_ms=None, team="blue", abilities={"sales": 1.5, "support": 0.25})
    assert await engine.ranking(tenant, "sales") == []
    assert await redis_client.hgetall(keys.key("members", tenant, "sales")) == {
        b"alice": b"1.5"}
    assert await redis_client.smembers(keys.key("agents", tenant)) == {b"alice"}


async def test_no_abilities_means_member_of_nothing(engine, tenant):
    await sales_support(engine, tenant, online=())
    await engine.arrive(tenant, T0, "s1", "sales")
    out = await engine.configure_agent(tenant, T0, "zed", capacity=2, abilities={})
    assert out.events == [AgentConfigured(agent="zed")]
    assert await engine.agent(tenant, "zed") == AgentView(
        agent="zed", status="offline", capacity=2, load=0, preclosed=0,
        last_assigned_ms=None, team="", abilities={})
    out = await engine.set_agent_status(tenant, T0 + SEC, "zed", "online")
    assert len(out.events) == 1  # takes nobody: no groups
    assert await engine.ranking(tenant, "sales") == []
    assert await engine.queue(tenant, "sales") == [QueueEntry("s1", T0)]


async def test_replace_abilities_moves_memberships(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("carol",))
    out = await engine.configure_agent(tenant, T0 + SEC, "carol", capacity=1,
                                       abilities={"support": 2.0}, team="red")
    assert out.events == [AgentConfigured(agent="carol")]
    assert await engine.agent(tenant, "carol") == AgentView(
        agent="carol", status="online", capacity=1, load=0, preclosed=0,
        last_assigned_ms=T0, team="red", abilities={"support": 2.0})
    assert await engine.ranking(tenant, "sales") == []
    assert await engine.ranking(tenant, "support") == [("carol", rank(T0, ability=2.0))]
    assert await redis_client.hgetall(keys.key("members", tenant, "sales")) == {
        b"alice": b"1"}


async def test_more_capacity_takes_waiting_work(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s0", "sales")
    await engine.arrive(tenant, T0 + SEC, "s1", "sales")
    await engine.arrive(tenant, T0 + 2 * SEC, "s2", "sales")
    now = T0 + 10 * SEC
    out = await engine.configure_agent(tenant, now, "alice", capacity=3,
                                       abilities={"sales": 1.0})
    assert out.events == [
        AgentConfigured(agent="alice"),
        Assigned(session="s1", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=9 * SEC),
        Assigned(session="s2", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=8 * SEC),
    ]
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.capacity, alice.last_assigned_ms) == (3, 3, now)
    assert await engine.queue(tenant, "sales") == []
    assert await engine.ranking(tenant, "sales") == []


async def test_joining_a_group_takes_its_queue(engine, tenant):
    await sales_support(engine, tenant, online=("bob",))
    await engine.arrive(tenant, T0, "s1", "sales")
    out = await engine.configure_agent(tenant, T0 + SEC, "bob", capacity=1,
                                       abilities={"support": 1.0, "sales": 1.0})
    assert out.events[1] == Assigned(session="s1", agent="bob", group="sales", tier=0,
                                     via="group", wait_ms=SEC)


async def test_capacity_below_load_keeps_sessions(engine, tenant):
    await sales_support(engine, tenant, online=("alice",), capacity=2)
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0, "s2", "sales")
    await engine.configure_agent(tenant, T0, "alice", capacity=0, abilities={"sales": 1.0})
    alice = await engine.agent(tenant, "alice")
    assert (alice.capacity, alice.load) == (0, 2)
    assert await engine.ranking(tenant, "sales") == []
    assert (await engine.session(tenant, "s1")).agent == "alice"


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "detail"),
    [({"agent": ""}, "agent"), ({"agent": "al ice"}, "agent"), ({"agent": "x" * 65}, "agent"),
     ({"abilities": {"bad id": 1.0}}, "abilities"), ({"abilities": ["sales"]}, "abilities")],
)
async def test_bad_id(engine, redis_client, tenant, fields, detail):
    await sales_support(engine, tenant)
    cmd = ConfigureAgent(**{"agent": "alice", "capacity": 1, **fields})
    await assert_refused(redis_client, tenant, BadId, engine.apply(tenant, T0, cmd), detail)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"capacity": -1}, "capacity"),
        ({"capacity": 1001}, "capacity"),
        ({"capacity": 1.5}, "capacity"),
        ({"capacity": "2"}, "capacity"),
        ({"team": "x" * 257}, "team"),
        ({"team": 7}, "team"),
        ({"abilities": 5}, "abilities"),
        ({"abilities": {"sales": 0.0}}, "abilities.sales"),
        ({"abilities": {"sales": -1.0}}, "abilities.sales"),
        ({"abilities": {"sales": 1e6 + 1}}, "abilities.sales"),
        ({"abilities": {"sales": "1"}}, "abilities.sales"),
    ],
)
async def test_bad_arg(engine, redis_client, tenant, fields, detail):
    await sales_support(engine, tenant)
    cmd = ConfigureAgent(**{"agent": "alice", "capacity": 1, **fields})
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd),
                         detail)


async def test_too_many_abilities(engine, redis_client, tenant):
    names = [f"g{i}" for i in range(257)]
    await engine.apply_batch(tenant, T0, [ConfigureGroup(group=n) for n in names])
    cmd = ConfigureAgent(agent="alice", capacity=1, abilities=dict.fromkeys(names, 1.0))
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd),
                         "abilities")


@pytest.mark.parametrize("existing", [False, True])
async def test_group_unknown(engine, redis_client, tenant, existing):
    await sales_support(engine, tenant)
    await add_agent(engine, tenant, "dave", {"sales": 1.0}, status="offline")
    name = "dave" if existing else "erin"
    await assert_refused(redis_client, tenant, GroupUnknown,
                         engine.configure_agent(tenant, T0, name, capacity=1,
                                                abilities={"sales": 1.0, "ghost": 1.0}),
                         "ghost")
