"""lua/set_agent_status.lua: online / away / offline, and what the agent then takes."""

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
    rank,
    sales_support,
)

from dispatchd.engine import AgentView, QueueEntry
from dispatchd.errors import AgentUnknown, BadArgument, BadId
from dispatchd.messages import AgentStatusChanged, Assigned, Queued, SetAgentStatus, Tier


async def test_online_with_nothing_waiting(engine, tenant):
    await sales_support(engine, tenant, online=())
    out = await engine.set_agent_status(tenant, T0 + SEC, "carol", "online")
    assert out.events == [AgentStatusChanged(agent="carol", status="online",
                                             previous="offline")]
    assert await engine.agent(tenant, "carol") == AgentView(
        agent="carol", status="online", capacity=1, load=0, preclosed=0,
        last_assigned_ms=T0 + SEC, team="", abilities={"sales": 1.0, "support": 1.0})
    assert await engine.ranking(tenant, "sales") == [("carol", rank(T0 + SEC))]
    assert await engine.ranking(tenant, "support") == [("carol", rank(T0 + SEC))]


async def test_unchanged_status_still_reported(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    out = await engine.set_agent_status(tenant, T0 + SEC, "alice", "online")
    assert out.events == [AgentStatusChanged(agent="alice", status="online", previous="online")]
    # going online again does not reset last_assigned_ms
    assert (await engine.agent(tenant, "alice")).last_assigned_ms == T0


async def test_online_takes_parked_then_best_ability_then_skips_blockers(engine, tenant):
    await groups(engine, tenant, "sales", "support")
    await add_agent(engine, tenant, "alice", {"sales": 1.0, "support": 2.0}, capacity=4,
                    status="away")
    await engine.arrive(tenant, T0, "sal", "sales")
    await engine.arrive(tenant, T0 + 5 * SEC, "blk", "support", blocked_agents=["alice"])
    await engine.arrive(tenant, T0 + 10 * SEC, "sup", "support")
    await engine.arrive(tenant, T0 + 20 * SEC, "par", "sales", directed_agent="alice")
    now = T0 + 30 * SEC
    out = await engine.set_agent_status(tenant, now, "alice", "online")
    assert out.events == [
        AgentStatusChanged(agent="alice", status="online", previous="away"),
        Assigned(session="par", agent="alice", group="sales", tier=0, via="directed",
                 wait_ms=10 * SEC),
        Assigned(session="sup", agent="alice", group="support", tier=0, via="group",
                 wait_ms=20 * SEC),
        Assigned(session="sal", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=30 * SEC),
    ]
    assert await engine.queue(tenant, "support") == [QueueEntry("blk", T0 + 5 * SEC)]
    assert await engine.parked(tenant, "alice") == []
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.last_assigned_ms) == (3, now)
    assert await engine.ranking(tenant, "sales") == [("alice", rank(now, cap=4, load=3))]


async def test_online_overflow_agent_takes_lower_tier_first(engine, tenant):
    await groups(engine, tenant, "h", "x")
    await engine.configure_group(tenant, T0, "s1", tiers=[Tier(after_ms=0, groups=["h"])])
    await engine.configure_group(tenant, T0, "s2", tiers=[Tier(after_ms=0, groups=["x"]),
                                                          Tier(after_ms=SEC, groups=["h"])])
    await engine.arrive(tenant, T0, "c2", "s2")
    await engine.arrive(tenant, T0 + 5 * SEC, "c1", "s1")
    await engine.escalate_overflow(tenant, T0 + 5 * SEC)
    assert (await engine.session(tenant, "c2")).open_tier == 2
    await add_agent(engine, tenant, "hh", {"h": 1.0}, capacity=2, status="offline")
    out = await engine.set_agent_status(tenant, T0 + 10 * SEC, "hh", "online")
    assert out.events[1:] == [
        Assigned(session="c1", agent="hh", group="s1", tier=1, via="overflow", wait_ms=5 * SEC),
        Assigned(session="c2", agent="hh", group="s2", tier=2, via="overflow",
                 wait_ms=10 * SEC),
    ]



async def test_equal_abilities_take_the_lowest_virtual_arrival(engine, tenant):
    await sales_support(engine, tenant, online=())
    await engine.arrive(tenant, T0 + 5 * SEC, "sal", "sales")
    await engine.arrive(tenant, T0 + 9 * SEC, "sup", "support", priority=1)
    out = await engine.set_agent_status(tenant, T0 + 10 * SEC, "carol", "online")
    assert [e.session for e in out.events[1:]] == ["sup"]


async def test_overflow_agent_in_two_tiers_of_a_group_counts_the_lowest(engine, tenant):
    await groups(engine, tenant, "h1", "h2")
    await engine.configure_group(tenant, T0, "s", tiers=[Tier(after_ms=0, groups=["h2"]),
                                                         Tier(after_ms=SEC, groups=["h1"])])
    await engine.arrive(tenant, T0, "c", "s")  # open tier 1 only
    await add_agent(engine, tenant, "hh", {"h1": 1.0, "h2": 1.0}, status="offline")
    out = await engine.set_agent_status(tenant, T0 + 100, "hh", "online")
    assert out.events[1:] == [Assigned(session="c", agent="hh", group="s", tier=1,
                                       via="overflow", wait_ms=100)]

async def test_away_keeps_sessions_and_parked_customers(engine, tenant):
    await sales_support(engine, tenant, online=("alice",), capacity=2)
    await engine.arrive(tenant, T0, "s1", "sales")
    out = await engine.set_agent_status(tenant, T0 + SEC, "alice", "away")
    assert out.events == [AgentStatusChanged(agent="alice", status="away", previous="online")]
    await engine.arrive(tenant, T0 + 2 * SEC, "s2", "sales", directed_agent="alice")
    assert await engine.ranking(tenant, "sales") == []
    alice = await engine.agent(tenant, "alice")
    assert (alice.status, alice.load) == ("away", 1)
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="alice")
    assert await engine.parked(tenant, "alice") == [QueueEntry("s2", T0 + 2 * SEC)]
    out = await engine.set_agent_status(tenant, T0 + 3 * SEC, "alice", "away")
    assert out.events == [AgentStatusChanged(agent="alice", status="away", previous="away")]
    assert await engine.parked(tenant, "alice") == [QueueEntry("s2", T0 + 2 * SEC)]


async def test_offline_sends_parked_customers_to_normal_routing(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"))
    await engine.arrive(tenant, T0, "s0", "sales")  # alice (tie with carol, smaller id)
    await engine.arrive(tenant, T0 + SEC, "p1", "sales", directed_agent="alice")
    await engine.arrive(tenant, T0 + 2 * SEC, "p2", "support", directed_agent="alice",
                        priority=1)
    assert [q.session for q in await engine.parked(tenant, "alice")] == ["p2", "p1"]
    now = T0 + 10 * SEC
    out = await engine.set_agent_status(tenant, now, "alice", "offline")
    assert out.events == [
        AgentStatusChanged(agent="alice", status="offline", previous="online"),
        Assigned(session="p2", agent="carol", group="support", tier=0, via="group",
                 wait_ms=8 * SEC),
        Queued(session="p1", group="sales", virtual_arrival_ms=T0 + SEC, priority=0,
               position=1, reason="agent_offline"),
    ]
    assert await engine.parked(tenant, "alice") == []
    assert await engine.session(tenant, "p1") == queued_view("p1", "sales", T0 + SEC)
    assert await engine.queue(tenant, "sales") == [QueueEntry("p1", T0 + SEC)]
    alice = await engine.agent(tenant, "alice")
    assert (alice.status, alice.load) == ("offline", 1)  # keeps its session
    # the preference timers went with the parking
    assert (await engine.expire_preferences(tenant, now + 10**9)).events == []


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("agent", ["", "a b", "x" * 65])
async def test_bad_id(engine, redis_client, tenant, agent):
    await sales_support(engine, tenant)
    cmd = SetAgentStatus(agent=agent, status="online")
    await assert_refused(redis_client, tenant, BadId, engine.apply(tenant, T0, cmd), "agent")


@pytest.mark.parametrize("status", ["busy", "", "ONLINE", 1])
async def test_bad_status(engine, redis_client, tenant, status):
    await sales_support(engine, tenant)
    cmd = SetAgentStatus(agent="alice", status=status)
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd),
                         "status")


async def test_agent_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, AgentUnknown,
                         engine.set_agent_status(tenant, T0, "ghost", "offline"), "ghost")
