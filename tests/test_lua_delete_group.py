"""lua/delete_group.lua: delete a skill group nothing depends on any more."""

from __future__ import annotations

from helpers import SEC, T0, add_agent, assert_refused, groups, overflow_world, sales_support

from dispatchd import keys
from dispatchd.errors import BadId, GroupBusy, GroupInUse, GroupUnknown
from dispatchd.messages import DeleteGroup, GroupDeleted, RoutingRule


async def delete(engine, tenant, group, now=T0):
    return await engine.apply(tenant, now, DeleteGroup(group=group))


async def test_delete_leaves_members_their_other_groups(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("carol",))
    out = await delete(engine, tenant, "sales", T0 + SEC)
    assert out.events == [GroupDeleted(group="sales")]
    assert await redis_client.smembers(keys.key("groups", tenant)) == {b"support"}
    for name in ("group", "members", "ready", "queue"):
        assert await redis_client.exists(keys.key(name, tenant, "sales")) == 0
    assert (await engine.agent(tenant, "carol")).abilities == {"support": 1.0}
    assert (await engine.agent(tenant, "alice")).abilities == {}
    # carol still takes support customers
    out = await engine.arrive(tenant, T0 + 2 * SEC, "s1", "support")
    assert out.events[-1].agent == "carol"


async def test_an_empty_group_without_members(engine, redis_client, tenant):
    await groups(engine, tenant, "lonely")
    assert (await delete(engine, tenant, "lonely")).events == [GroupDeleted(group="lonely")]
    assert await redis_client.smembers(keys.key("groups", tenant)) == set()


async def test_a_group_with_tiers_leaves_the_reverse_overflow_map(engine, redis_client, tenant):
    await overflow_world(engine, tenant)
    await delete(engine, tenant, "main")
    for h in ("t1", "t2a", "t2b"):
        assert await redis_client.hgetall(keys.key("sources", tenant, h)) == {}
    await delete(engine, tenant, "t1")  # nothing overflows into it any more


async def test_refused_while_customers_are_open(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")  # assigned to alice
    await assert_refused(redis_client, tenant, GroupBusy, delete(engine, tenant, "sales"),
                         "1 open sessions")
    await engine.arrive(tenant, T0, "s2", "sales")  # queued
    await assert_refused(redis_client, tenant, GroupBusy, delete(engine, tenant, "sales"),
                         "2 open sessions")
    await engine.release_session(tenant, T0 + SEC, "s1")  # alice takes s2
    await engine.transfer_session(tenant, T0 + 2 * SEC, "s2", to_group="support")
    assert (await delete(engine, tenant, "sales", T0 + 3 * SEC)).events
    await assert_refused(redis_client, tenant, GroupBusy, delete(engine, tenant, "support"),
                         "1 open sessions")


async def test_refused_while_an_overflow_tier_or_a_rule_names_it(engine, redis_client, tenant):
    await overflow_world(engine, tenant)
    await assert_refused(redis_client, tenant, GroupInUse, delete(engine, tenant, "t2b"),
                         "overflow tier of main")
    await engine.configure_rules(tenant, T0, [RoutingRule(name="vip", group="t1")])
    await delete(engine, tenant, "main")
    await assert_refused(redis_client, tenant, GroupInUse, delete(engine, tenant, "t1"),
                         "routing rule vip")


async def test_unknown_and_bad_ids(engine, redis_client, tenant):
    await add_agent(engine, tenant, "a", {}, status="offline")
    await assert_refused(redis_client, tenant, GroupUnknown, delete(engine, tenant, "nope"))
    await assert_refused(redis_client, tenant, BadId, delete(engine, tenant, "bad id"))
