"""lua/delete_agent.lua: delete an agent that holds no work."""

from __future__ import annotations

from helpers import SEC, T0, assert_refused, sales_support

from dispatchd import keys
from dispatchd.errors import AgentBusy, AgentUnknown, BadId
from dispatchd.messages import AgentDeleted, DeleteAgent


async def delete(engine, tenant, agent, now=T0):
    return await engine.apply(tenant, now, DeleteAgent(agent=agent))


async def test_delete_an_idle_online_agent(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"))
    out = await delete(engine, tenant, "carol", T0 + SEC)
    assert out.events == [AgentDeleted(agent="carol")]
    assert await engine.agent(tenant, "carol") is None
    assert await redis_client.smembers(keys.key("agents", tenant)) == {b"alice", b"bob"}
    for g in ("sales", "support"):
        assert b"carol" not in await redis_client.hkeys(keys.key("members", tenant, g))
        assert [a for a, _ in await engine.ranking(tenant, g)] == (["alice"] if g == "sales"
                                                                  else [])
    # nobody serves support now: a customer waits instead of going to carol
    await engine.arrive(tenant, T0 + 2 * SEC, "s1", "support")
    assert [e.session for e in await engine.queue(tenant, "support")] == ["s1"]


async def test_an_offline_agent_without_groups(engine, tenant):
    await engine.configure_agent(tenant, T0, "solo", capacity=1, abilities={})
    assert (await delete(engine, tenant, "solo")).events == [AgentDeleted(agent="solo")]


async def test_a_sticky_customer_of_a_deleted_agent_is_routed_normally(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"), sticky_ms=3_600_000)
    await engine.arrive(tenant, T0, "s1", "sales", customer="c1")
    first = (await engine.session(tenant, "s1")).agent
    await engine.release_session(tenant, T0 + SEC, "s1")
    await delete(engine, tenant, first, T0 + 2 * SEC)
    out = await engine.arrive(tenant, T0 + 3 * SEC, "s2", "sales", customer="c1")
    other = {"alice", "carol"} - {first}
    assert out.events[-1].agent in other


async def test_refused_while_it_holds_work(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await assert_refused(redis_client, tenant, AgentBusy, delete(engine, tenant, "alice"),
                         "1 assigned, 0 pre-closed, 0 parked sessions")
    await engine.preclose_session(tenant, T0 + SEC, "s1")
    await assert_refused(redis_client, tenant, AgentBusy, delete(engine, tenant, "alice"),
                         "0 assigned, 1 pre-closed, 0 parked sessions")
    await engine.release_session(tenant, T0 + 2 * SEC, "s1")
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "alice", "away")
    await engine.arrive(tenant, T0 + 4 * SEC, "p", "sales", directed_agent="alice")
    await assert_refused(redis_client, tenant, AgentBusy, delete(engine, tenant, "alice"),
                         "0 assigned, 0 pre-closed, 1 parked sessions")


async def test_unknown_and_bad_ids(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=())
    await assert_refused(redis_client, tenant, AgentUnknown, delete(engine, tenant, "zed"))
    await assert_refused(redis_client, tenant, BadId, delete(engine, tenant, ""))
