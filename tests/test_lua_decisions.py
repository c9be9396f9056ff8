"""Decision records (docs/routing.md "Why this agent?", lua/lib/15_decisions.lua): every
assignment path of a group with record_decisions records, in the `assigned` history
entry only, the candidates compared with their score terms, the tier, the rule and the
preferred agent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import MIN, SEC, T0, add_agent, groups, overflow_world, rank

from dispatchd import keys
from dispatchd.engine import Engine
from dispatchd.messages import RoutingRule, Tier


async def history(redis_client: Any, tenant: str, sid: str) -> list[dict[str, Any]]:
    return [json.loads(r) for r in await Engine(redis_client).session_history(tenant, sid)]


async def decisions(redis_client: Any, tenant: str, sid: str) -> list[dict[str, Any]]:
    return [e["decision"] for e in await history(redis_client, tenant, sid)
            if e["type"] == "assigned"]


async def only_decision(redis_client: Any, tenant: str, sid: str) -> dict[str, Any]:
    ds = await decisions(redis_client, tenant, sid)
    assert len(ds) == 1
    return ds[0]


def no_decision_in(events: Any) -> None:
    for e in events:
        assert not hasattr(e, "decision") and "decision" not in (e if isinstance(e, dict) else {})


def agents_of(d: dict[str, Any]) -> list[str]:
    return [c["agent"] for c in d["candidates"]]


async def staggered(engine: Engine, tenant: str, n: int, group: str = "sales",
                    capacity: int = 1) -> None:
    """Agents a1..an of ``group``, a1 online first (so the longest idle: ranked first)."""
    for i in range(1, n + 1):
        await add_agent(engine, tenant, f"a{i}", {group: 1.0}, capacity=capacity,
                        now=T0 + i * SEC)


async def test_arrival_records_the_top_five_in_rank_order_with_their_terms(
        engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, k=30.0, m=0.5)
    await staggered(engine, tenant, 7, capacity=2)
    now = T0 + MIN
    out = await engine.arrive(tenant, now, "s1", "sales", blocked_agents=["a1"])
    assert out.events[0].agent == "a2"
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "customer" and d["agent"] == "a2" and d["via"] == "group"
    assert d["tier"] == 0 and d["open_tier"] == 0 and d["group"] == "sales"
    assert d["rule"] is None and d["preferred"] is None and "customers" not in d
    assert agents_of(d) == ["a1", "a2", "a3", "a4", "a5"]
    assert [c["blocked"] for c in d["candidates"]] == [True] + [False] * 4
    c = d["candidates"][1]
    last = T0 + 2 * SEC
    assert c == {
        "agent": "a2", "group": "sales", "capacity": 2, "load": 0, "preclosed": 0,
        "blocked": False, "idle_ms": now - last, "ability": 1, "spare_term": 30,
        "preclosed_term": 0, "rank": pytest.approx(rank(last, k=30.0, cap=2)),
        "readiness": pytest.approx(now / 1000 - rank(last, k=30.0, cap=2)),
    }
    assert c["readiness"] == pytest.approx(c["idle_ms"] / 1000 + c["spare_term"])
    # the event itself (what the engine returns) carries no decision
    no_decision_in(out.events)


async def test_the_winner_is_added_when_the_customer_blocks_the_top_five(
        engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True)
    await staggered(engine, tenant, 7)
    await engine.arrive(tenant, T0 + MIN, "s1", "sales",
                        blocked_agents=["a1", "a2", "a3", "a4", "a5"])
    d = await only_decision(redis_client, tenant, "s1")
    assert agents_of(d) == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert [c["blocked"] for c in d["candidates"]] == [True] * 5 + [False]
    assert d["agent"] == "a6"


async def test_pre_closed_sessions_show_in_the_terms(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, k=60.0, m=0.5)
    await add_agent(engine, tenant, "a1", {"sales": 2.0}, capacity=4)
    await engine.arrive(tenant, T0 + SEC, "s0", "sales")
    await engine.preclose_session(tenant, T0 + 2 * SEC, "s0")
    await engine.arrive(tenant, T0 + 3 * SEC, "s1", "sales")
    c = (await only_decision(redis_client, tenant, "s1"))["candidates"][0]
    assert c["load"] == 0 and c["preclosed"] == 1 and c["ability"] == 2
    assert c["spare_term"] == pytest.approx(60 * 4 / 4 * 2)
    assert c["preclosed_term"] == pytest.approx(-60 * 0.5 * 1 / 4 * 2)
    assert c["rank"] == pytest.approx(rank(T0 + SEC, cap=4, pre=1, ability=2.0))


async def test_nothing_is_recorded_while_the_setting_is_off(engine, redis_client, tenant):
    await groups(engine, tenant, "sales")
    await staggered(engine, tenant, 2)
    await engine.arrive(tenant, T0 + MIN, "s1", "sales")
    h = await history(redis_client, tenant, "s1")
    assert h[0]["type"] == "assigned" and "decision" not in h[0]
    # no note fields either
    assert await redis_client.hget(keys.key("session", tenant, "s1"), "pn") is None


async def test_agent_side_records_the_queue_heads_it_compared(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", "support", "vip", record_decisions=True)
    await add_agent(engine, tenant, "carol", {"sales": 2.0, "support": 1.0, "vip": 3.0},
                    status="offline")
    await engine.arrive(tenant, T0, "s_sup", "support")
    await engine.arrive(tenant, T0 + SEC, "s_sal", "sales", priority=1)
    await engine.arrive(tenant, T0 + 2 * SEC, "s_sal2", "sales")
    await engine.set_agent_status(tenant, T0 + 10 * SEC, "carol", "online")
    d = await only_decision(redis_client, tenant, "s_sal")
    assert d["side"] == "agent" and d["agent"] == "carol" and d["via"] == "group"
    assert d["customers"] == [
        {"session": "s_sal", "group": "sales", "via_group": "sales", "kind": "group",
         "tier": 0, "ability": 2, "virtual_arrival_ms": T0 + SEC - MIN},
        {"session": "s_sup", "group": "support", "via_group": "support", "kind": "group",
         "tier": 0, "ability": 1, "virtual_arrival_ms": T0},
    ]
    [c] = d["candidates"]
    assert c["agent"] == "carol" and c["group"] == "sales" and c["ability"] == 2
    assert c["load"] == 0 and c["idle_ms"] == 0


async def test_overflow_step_records_the_tier_pool(engine, redis_client, tenant):
    await overflow_world(engine, tenant)
    await engine.configure_group(
        tenant, T0, "main", record_decisions=True,
        tiers=[Tier(after_ms=30 * SEC, groups=["t1"]),
               Tier(after_ms=60 * SEC, groups=["t2a", "t2b"])])
    for a in ("y1", "y2"):
        await engine.set_agent_status(tenant, T0 + SEC, a, "online")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "x1", "away")
    await engine.arrive(tenant, T0 + 5 * SEC, "s1", "main")
    await engine.escalate_overflow(tenant, T0 + 65 * SEC)
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "customer" and d["via"] == "overflow"
    assert d["tier"] == 2 and d["open_tier"] == 2
    assert agents_of(d) == ["y1", "y2"] and d["agent"] == "y1"
    assert [c["group"] for c in d["candidates"]] == ["t2a", "t2b"]


async def test_agent_side_overflow_names_the_tier_and_the_group_it_came_through(
        engine, redis_client, tenant):
    await overflow_world(engine, tenant)
    await engine.configure_group(
        tenant, T0, "main", record_decisions=True,
        tiers=[Tier(after_ms=30 * SEC, groups=["t1"])])
    await engine.arrive(tenant, T0, "s1", "main")
    await engine.escalate_overflow(tenant, T0 + 31 * SEC)
    await engine.set_agent_status(tenant, T0 + 40 * SEC, "x1", "online")
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "agent" and d["via"] == "overflow" and d["tier"] == 1
    assert d["customers"] == [
        {"session": "s1", "group": "main", "via_group": "t1", "kind": "overflow",
         "tier": 1, "ability": None, "virtual_arrival_ms": T0}]
    assert d["candidates"][0]["group"] == "t1"


async def test_directed_agent_with_free_capacity(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", "other", record_decisions=True)
    await staggered(engine, tenant, 2)
    await add_agent(engine, tenant, "zed", {"other": 1.0})
    await engine.arrive(tenant, T0 + MIN, "s1", "sales", directed_agent="zed")
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "preferred" and d["via"] == "directed" and d["agent"] == "zed"
    assert d["preferred"] == {"agent": "zed", "kind": "directed", "used": True,
                              "reason": "free capacity"}
    [c] = d["candidates"]
    # not a member of sales: no ability there, so no score
    assert c["agent"] == "zed" and c["ability"] is None and c["rank"] is None


@pytest.mark.parametrize(("status", "reason"), [
    ("online", "at capacity, preference_ms is 0"),
    ("away", "away, preference_ms is 0"),
    ("offline", "offline"),
])
async def test_directed_agent_not_used(engine, redis_client, tenant, status, reason):
    await groups(engine, tenant, "sales", record_decisions=True, preference_ms=0)
    await staggered(engine, tenant, 2)
    await add_agent(engine, tenant, "zed", {"sales": 1.0}, status="offline")
    if status == "online":
        await engine.configure_agent(tenant, T0, "zed", capacity=0, abilities={"sales": 1.0})
    await engine.set_agent_status(tenant, T0 + 5 * SEC, "zed", status)
    await engine.arrive(tenant, T0 + MIN, "s1", "sales", directed_agent="zed")
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "customer" and d["agent"] == "a1"
    assert d["preferred"] == {"agent": "zed", "kind": "directed", "used": False,
                              "reason": reason}


async def test_sticky_agent_blocked_or_gone(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, sticky_ms=MIN)
    await staggered(engine, tenant, 2)
    await engine.arrive(tenant, T0 + MIN, "s1", "sales", last_agent="a2",
                        blocked_agents=["a2"])
    d = await only_decision(redis_client, tenant, "s1")
    assert d["preferred"] == {"agent": "a2", "kind": "sticky", "used": False,
                              "reason": "blocked by the customer"}
    await engine.arrive(tenant, T0 + MIN, "s2", "sales", last_agent="ghost")
    d = await only_decision(redis_client, tenant, "s2")
    assert d["preferred"] == {"agent": "ghost", "kind": "sticky", "used": False,
                              "reason": "unknown agent"}


async def test_parked_customer_taken_by_its_agent(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, preference_ms=MIN)
    await add_agent(engine, tenant, "zed", {"sales": 1.0})
    await engine.arrive(tenant, T0, "s0", "sales")
    await engine.arrive(tenant, T0 + SEC, "s1", "sales", directed_agent="zed")
    await engine.release_session(tenant, T0 + 10 * SEC, "s0")
    d = await only_decision(redis_client, tenant, "s1")
    assert d["side"] == "agent" and d["via"] == "directed" and d["agent"] == "zed"
    assert d["preferred"] == {"agent": "zed", "kind": "directed", "used": True,
                              "reason": "took its parked customer"}
    assert d["customers"][0]["kind"] == "parked"
    assert d["customers"][0]["session"] == "s1" and d["customers"][0]["via_group"] is None


async def test_preference_wait_over_and_agent_gone_offline(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, preference_ms=MIN)
    await add_agent(engine, tenant, "zed", {"sales": 1.0})
    await add_agent(engine, tenant, "amy", {"sales": 1.0}, status="offline")
    await engine.arrive(tenant, T0, "s0", "sales")  # zed busy
    await engine.arrive(tenant, T0 + SEC, "s1", "sales", directed_agent="zed")
    await engine.arrive(tenant, T0 + SEC, "s2", "sales", directed_agent="zed")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "amy", "online")
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "amy", "away")
    # s1, s2 wait for zed; s1 falls back when its wait is over and amy takes it
    await engine.set_agent_status(tenant, T0 + 30 * SEC, "amy", "online")
    assert await decisions(redis_client, tenant, "s1") == []
    await engine.expire_preferences(tenant, T0 + SEC + MIN)
    d1 = await only_decision(redis_client, tenant, "s1")
    assert d1["side"] == "customer" and d1["agent"] == "amy"
    assert d1["preferred"] == {"agent": "zed", "kind": "directed", "used": False,
                               "reason": "preference_ms passed"}
    # s2 fell back too and is queued: its note is kept for its later assignment
    d2s = await decisions(redis_client, tenant, "s2")
    assert d2s == []
    await engine.release_session(tenant, T0 + 2 * MIN, "s1")
    d2 = await only_decision(redis_client, tenant, "s2")
    assert d2["side"] == "agent" and d2["agent"] == "amy"
    assert d2["preferred"] == {"agent": "zed", "kind": "directed", "used": False,
                               "reason": "preference_ms passed"}
    # the note is dropped once used
    assert await redis_client.hget(keys.key("session", tenant, "s2"), "pn") is None


async def test_preferred_agent_went_offline(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, preference_ms=MIN)
    await add_agent(engine, tenant, "zed", {"sales": 1.0})
    await add_agent(engine, tenant, "amy", {"sales": 1.0}, status="away")
    await engine.arrive(tenant, T0, "s0", "sales")
    await engine.arrive(tenant, T0 + SEC, "s1", "sales", directed_agent="zed")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "amy", "online")
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "zed", "offline")
    d = await only_decision(redis_client, tenant, "s1")
    assert d["agent"] == "amy" and d["preferred"] == {
        "agent": "zed", "kind": "directed", "used": False, "reason": "went offline"}


async def test_routing_rule_is_named_now_and_after_waiting(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", "vip", record_decisions=True)
    await engine.configure_rules(tenant, T0, [
        RoutingRule(name="gold", match={"level": "gold"}, group="vip"),
        RoutingRule(name="rest", group="sales"),
    ])
    await staggered(engine, tenant, 1)
    await engine.arrive(tenant, T0 + MIN, "s1", None, attributes={"level": "x"})
    d = await only_decision(redis_client, tenant, "s1")
    assert d["rule"] == {"name": "rest", "position": 2}
    await engine.arrive(tenant, T0 + MIN, "s2", None, attributes={"level": "gold"})
    await add_agent(engine, tenant, "v1", {"vip": 1.0}, now=T0 + 2 * MIN)
    d = await only_decision(redis_client, tenant, "s2")
    assert d["side"] == "agent" and d["rule"] == {"name": "gold", "position": 1}


async def test_transfers(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", "support", record_decisions=True, preference_ms=0)
    await add_agent(engine, tenant, "a1", {"sales": 1.0})
    await add_agent(engine, tenant, "b1", {"support": 1.0}, now=T0 + SEC)
    await add_agent(engine, tenant, "b2", {"support": 1.0}, now=T0 + 2 * SEC)
    await engine.arrive(tenant, T0 + 10 * SEC, "s1", "sales")
    # to an agent with free capacity
    await engine.transfer_session(tenant, T0 + 20 * SEC, "s1", to_agent="b1")
    # to a group
    await engine.transfer_session(tenant, T0 + 30 * SEC, "s1", to_group="support")
    # forced, over capacity
    await engine.transfer_session(tenant, T0 + 40 * SEC, "s1", to_agent="a1", force=True)
    ds = await decisions(redis_client, tenant, "s1")
    assert [(d["side"], d["agent"], d["via"]) for d in ds] == [
        ("customer", "a1", "group"), ("preferred", "b1", "transfer"),
        ("customer", "b2", "group"), ("preferred", "a1", "forced")]
    assert ds[1]["preferred"] == {"agent": "b1", "kind": "transfer", "used": True,
                                  "reason": "free capacity"}
    # b1, freed by the transfer, is a candidate again (ranked after b2, idle longer)
    assert ds[2]["group"] == "support" and agents_of(ds[2]) == ["b2", "b1"]
    assert ds[3]["preferred"] == {"agent": "a1", "kind": "forced", "used": True,
                                  "reason": "forced"}


async def test_transfer_to_a_busy_agent_without_preference_wait(engine, redis_client, tenant):
    await groups(engine, tenant, "sales", record_decisions=True, preference_ms=0)
    await add_agent(engine, tenant, "a1", {"sales": 1.0})
    await add_agent(engine, tenant, "a2", {"sales": 1.0}, now=T0 + SEC)
    await engine.arrive(tenant, T0 + 10 * SEC, "s1", "sales")
    await engine.arrive(tenant, T0 + 10 * SEC, "s2", "sales")
    await add_agent(engine, tenant, "a3", {"sales": 1.0}, now=T0 + 11 * SEC)
    await engine.transfer_session(tenant, T0 + 20 * SEC, "s2", to_agent="a1")
    ds = await decisions(redis_client, tenant, "s2")
    assert ds[-1]["agent"] == "a2" and ds[-1]["preferred"] == {
        "agent": "a1", "kind": "transfer", "used": False,
        "reason": "at capacity, preference_ms is 0"}


async def test_the_gateway_stream_never_carries_the_decision(engine, redis_client, tenant):
    from gateway_helpers import open_gateway

    async with open_gateway(engine, redis_client, tenant) as gw:
        await gw.group("g", record_decisions=True)
        await gw.agent("ann", ["g"])
        events = await gw.run({"type": "arrive", "id": "c1", "session": "s1", "group": "g"})
        [assigned] = [e for e in events if e["type"] == "assigned"]
        assert "decision" not in assigned and assigned["agent"] == "ann"
        raw = await redis_client.xrange(keys.key("outbound", tenant))
        assert all(b"decision" not in fields[b"json"] for _, fields in raw)
        # the history entry is the stream's event plus the decision
        [entry] = [e for e in await history(redis_client, tenant, "s1")
                   if e["type"] == "assigned"]
        d = entry.pop("decision")
        assert entry == {k: v for k, v in assigned.items() if k != "_entry"}
        assert d["agent"] == "ann" and d["side"] == "customer"
