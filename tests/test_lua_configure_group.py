"""lua/configure_group.lua: create or replace a skill group's settings."""

from __future__ import annotations

import msgspec
import pytest
from helpers import (
    MIN,
    SEC,
    T0,
    add_agent,
    assert_refused,
    groups,
    names,
    queued_view,
    rank,
)

from dispatchd import keys
from dispatchd.errors import BadArgument, BadId, BadTier, GroupUnknown
from dispatchd.messages import ConfigureGroup, GroupConfigured, Tier


async def stored(redis_client, tenant, group):
    raw = await redis_client.hgetall(keys.key("group", tenant, group))
    f = {k.decode(): v for k, v in raw.items()}
    f["tiers"] = msgspec.msgpack.decode(f["tiers"])
    f["timers"] = msgspec.msgpack.decode(f["timers"])
    return f


DEFAULT_TIMERS = {
    "qwarn": 60000, "qtimeout": 0, "posint": 0, "sla": 60000, "reassign": 0,
    "sremind": 120000, "spreclose": 300000, "sclose": 1800000, "cclose": 300000,
    "slms": 20000, "slt": 0.8,  # the service-level threshold and target
    "treassign": 14400000, "tspread": 900000,  # tickets: untouched reassignment, release spread
}


async def test_create_with_defaults(engine, redis_client, tenant):
    out = await engine.configure_group(tenant, T0, "sales")
    assert out.events == [GroupConfigured(group="sales")]
    assert await stored(redis_client, tenant, "sales") == {
        "k": b"60", "m": b"0.5", "u": b"60000", "sticky": b"0", "pref": b"60000",
        "tiers": [], "timers": DEFAULT_TIMERS,
    }
    assert await redis_client.smembers(keys.key("groups", tenant)) == {b"sales"}
    # views of an empty group
    assert await engine.queue(tenant, "sales") == []
    assert await engine.ranking(tenant, "sales") == []


async def test_create_with_everything(engine, redis_client, tenant):
    await groups(engine, tenant, "a", "b", "c")
    tiers = [Tier(after_ms=0, groups=["a"]), Tier(after_ms=30 * SEC, groups=["b", "c"])]
    out = await engine.configure_group(tenant, T0, "main", k=12.5, m=2.0,
                                       priority_unit_ms=1000, tiers=tiers, sticky_ms=5 * MIN,
                                       preference_ms=0)
    assert out.events == [GroupConfigured(group="main")]
    assert await stored(redis_client, tenant, "main") == {
        "k": b"12.5", "m": b"2", "u": b"1000", "sticky": b"300000", "pref": b"0",
        "tiers": [{"after_ms": 0, "groups": ["a"]}, {"after_ms": 30000, "groups": ["b", "c"]}],
        "timers": DEFAULT_TIMERS,
    }
    src = keys.key("sources", tenant, "b")
    assert await redis_client.hgetall(src) == {b"main": b"2"}


async def test_replace_recomputes_member_ranks(engine, tenant):
    await groups(engine, tenant, "sales")
    await add_agent(engine, tenant, "alice", {"sales": 2.0}, capacity=2)
    await engine.arrive(tenant, T0 + SEC, "s1", "sales")
    await engine.preclose_session(tenant, T0 + 2 * SEC, "s1")
    assert await engine.ranking(tenant, "sales") == [
        ("alice", rank(T0 + SEC, cap=2, pre=1, ability=2.0))]
    out = await engine.configure_group(tenant, T0 + 3 * SEC, "sales", k=30.0, m=1.0)
    assert out.events == [GroupConfigured(group="sales")]
    assert await engine.ranking(tenant, "sales") == [
        ("alice", rank(T0 + SEC, k=30.0, m=1.0, cap=2, pre=1, ability=2.0))]


async def test_queued_customers_keep_virtual_arrival_and_open_tier(engine, tenant):
    await groups(engine, tenant, "help")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=0, groups=["help"])])
    await engine.arrive(tenant, T0, "s1", "main", priority=1)
    await engine.configure_group(tenant, T0 + SEC, "main", priority_unit_ms=10 * SEC,
                                 tiers=[Tier(after_ms=0, groups=["help"])])
    assert await engine.session(tenant, "s1") == queued_view("s1", "main", T0, priority=1,
                                                             open_tier=1)
    await engine.arrive(tenant, T0 + SEC, "s2", "main", priority=1)
    assert await engine.session(tenant, "s2") == queued_view("s2", "main", T0 + SEC,
                                                             priority=1, u=10 * SEC, open_tier=1)
    assert [q.session for q in await engine.queue(tenant, "main")] == ["s1", "s2"]


async def test_replaced_tiers_no_longer_reach_old_tier_groups(engine, tenant):
    await groups(engine, tenant, "old", "new")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=0, groups=["old"])])
    await engine.arrive(tenant, T0, "s1", "main")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=0, groups=["new"])])
    await add_agent(engine, tenant, "o1", {"old": 1.0}, status="offline")
    out = await engine.set_agent_status(tenant, T0 + SEC, "o1", "online")
    assert len(out.events) == 1  # only agent_status: o1 is no longer in s1's pool
    await add_agent(engine, tenant, "n1", {"new": 1.0}, status="offline")
    out = await engine.set_agent_status(tenant, T0 + SEC, "n1", "online")
    assert [(e.session, e.tier, e.via) for e in out.events[1:]] == [("s1", 1, "overflow")]


async def test_tiers_added_later_apply_from_the_next_overflow_step(engine, tenant):
    await groups(engine, tenant, "main", "help")
    await engine.arrive(tenant, T0, "s1", "main")
    await engine.configure_group(tenant, T0 + SEC, "main",
                                 tiers=[Tier(after_ms=30 * SEC, groups=["help"])])
    await add_agent(engine, tenant, "h1", {"help": 1.0})
    out = await engine.escalate_overflow(tenant, T0 + 30 * SEC)
    assert names(out.events) == ["tier_opened", "assigned"]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "detail"),
    [({"group": ""}, "group"), ({"group": "a:b"}, "group"), ({"group": "x" * 65}, "group"),
     ({"tiers": [Tier(after_ms=0, groups=["bad id"])]}, "tiers.groups")],
)
async def test_bad_id(engine, redis_client, tenant, fields, detail):
    await groups(engine, tenant, "main", "help")
    cmd = ConfigureGroup(**{"group": "main", **fields})
    await assert_refused(redis_client, tenant, BadId, engine.apply(tenant, T0, cmd), detail)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"k": -1.0}, "k"),
        ({"k": "60"}, "k"),
        ({"m": -0.5}, "m"),
        ({"priority_unit_ms": 1.5}, "priority_unit_ms"),
        ({"priority_unit_ms": -1}, "priority_unit_ms"),
        ({"sticky_ms": -1}, "sticky_ms"),
        ({"preference_ms": 10**11 + 1}, "preference_ms"),
        ({"tiers": "help"}, "tiers"),
        ({"tiers": [5]}, "tiers"),
        ({"tiers": [Tier(after_ms=-1, groups=["help"])]}, "tiers.after_ms"),
        ({"tiers": [Tier(after_ms=0, groups=[])]}, "tiers.groups"),
        ({"tiers": [Tier(after_ms=i, groups=["help"]) for i in range(17)]}, "tiers"),
        ({"tiers": [Tier(after_ms=0, groups=[f"g{i}" for i in range(65)])]}, "tiers.groups"),
    ],
)
async def test_bad_arg(engine, redis_client, tenant, fields, detail):
    await groups(engine, tenant, "main", "help")
    cmd = ConfigureGroup(**{"group": "main", **fields})
    await assert_refused(redis_client, tenant, BadArgument, engine.apply(tenant, T0, cmd),
                         detail)


async def test_tier_group_unknown(engine, redis_client, tenant):
    await groups(engine, tenant, "main", "help")
    tiers = [Tier(after_ms=0, groups=["help", "ghost"])]
    await assert_refused(redis_client, tenant, GroupUnknown,
                         engine.configure_group(tenant, T0, "main", tiers=tiers), "ghost")


@pytest.mark.parametrize(
    ("tiers", "detail"),
    [
        ([Tier(after_ms=0, groups=["main"])], "a group cannot overflow to itself"),
        ([Tier(after_ms=0, groups=["help", "help"])], "group repeated: help"),
        ([Tier(after_ms=0, groups=["help"]), Tier(after_ms=5, groups=["other", "help"])],
         "group repeated: help"),
        ([Tier(after_ms=5, groups=["help"]), Tier(after_ms=5, groups=["other"])],
         "after_ms must increase"),
        ([Tier(after_ms=5, groups=["help"]), Tier(after_ms=4, groups=["other"])],
         "after_ms must increase"),
    ],
)
async def test_bad_tier(engine, redis_client, tenant, tiers, detail):
    await groups(engine, tenant, "main", "help", "other")
    await engine.configure_group(tenant, T0, "main", tiers=[Tier(after_ms=9, groups=["other"])])
    await assert_refused(redis_client, tenant, BadTier,
                         engine.configure_group(tenant, T0, "main", tiers=tiers), detail)


async def test_refused_new_group_leaves_no_trace(engine, redis_client, tenant):
    await assert_refused(redis_client, tenant, BadTier,
                         engine.configure_group(tenant, T0, "solo",
                                                tiers=[Tier(after_ms=0, groups=["solo"])]))
    assert await redis_client.keys("{" + tenant + "}:*") == []
