"""lua/agent_ready.lua: an agent takes waiting customers while it has free capacity."""

from __future__ import annotations

import pytest
from helpers import (
    SEC,
    T0,
    add_agent,
    assert_refused,
    assert_session,
    dump_keyspace,
    groups,
    queued_view,
    rank,
    sales_support,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import AgentUnknown, BadId
from dispatchd.messages import AgentReady, Assigned, Tier


async def test_nobody_waiting_returns_nothing(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    before = await dump_keyspace(redis_client, tenant)
    out = await engine.agent_ready(tenant, T0 + SEC, "alice")
    assert out.events == []
    assert await dump_keyspace(redis_client, tenant) == before


@pytest.mark.parametrize("why", ["away", "offline", "full"])
async def test_agent_without_free_capacity_takes_nobody(engine, redis_client, tenant, why):
    await sales_support(engine, tenant, online=("alice",))
    if why == "full":
        await engine.arrive(tenant, T0, "s0", "sales")
    else:
        await engine.set_agent_status(tenant, T0, "alice", why)
    await engine.arrive(tenant, T0, "s1", "sales")
    before = await dump_keyspace(redis_client, tenant)
    assert (await engine.agent_ready(tenant, T0 + SEC, "alice")).events == []
    assert await dump_keyspace(redis_client, tenant) == before
    assert await engine.queue(tenant, "sales") == [QueueEntry("s1", T0)]


async def test_customers_whose_pool_gained_a_free_agent_are_served_at_once(engine, tenant):
    """Re-pointing a tier of ``main`` at ``new`` re-evaluates main's queue in service order
    (configure_group), so ``new``'s free agent takes them; agent_ready then has nothing."""
    await groups(engine, tenant, "old", "new")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=0, groups=["old"])])
    await add_agent(engine, tenant, "n1", {"new": 1.0}, capacity=2)
    for i, prio in enumerate([0, 2, 1]):
        await engine.arrive(tenant, T0 + i * SEC, f"s{i}", "main", priority=prio)
    assert [q.session for q in await engine.queue(tenant, "main")] == ["s1", "s2", "s0"]

    now = T0 + 10 * SEC
    out = await engine.configure_group(tenant, now, "main",
                                       tiers=[Tier(after_ms=0, groups=["new"])])
    assert out.events[1:] == [
        Assigned(session="s1", agent="n1", group="main", tier=1, via="overflow",
                 wait_ms=now - (T0 + SEC)),
        Assigned(session="s2", agent="n1", group="main", tier=1, via="overflow",
                 wait_ms=now - (T0 + 2 * SEC)),
    ]
    n1 = await engine.agent(tenant, "n1")
    assert (n1.load, n1.last_assigned_ms) == (2, now)
    assert await engine.ranking(tenant, "new") == []
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="n1",
                   group="main", virtual_arrival_ms=None, parked_with=None)
    assert await engine.session(tenant, "s0") == queued_view("s0", "main", T0, open_tier=1)
    assert await engine.queue(tenant, "main") == [QueueEntry("s0", T0)]
    # the agent now has no free capacity: a second call takes nobody
    assert (await engine.agent_ready(tenant, now, "n1")).events == []


async def test_ready_agent_rank_is_unchanged_when_it_takes_nobody(engine, tenant):
    await sales_support(engine, tenant)
    await engine.agent_ready(tenant, T0 + 5 * SEC, "alice")
    assert await engine.ranking(tenant, "sales") == [("alice", rank(T0))]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("agent", ["", "a b", "x" * 65, "ä"])
async def test_bad_id(engine, redis_client, tenant, agent):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadId,
                         engine.apply(tenant, T0, AgentReady(agent=agent)), "agent")


async def test_agent_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, AgentUnknown,
                         engine.agent_ready(tenant, T0, "ghost"), "ghost")
