"""configure_rules.lua and rule-based entry in arrive.lua (SPEC 2.1)."""

from __future__ import annotations

import pytest

from dispatchd.engine import Engine
from dispatchd.errors import BadArgument, BadId, GroupUnknown, NoRoute
from dispatchd.messages import ConfigureRules, Queued, RoutingRule, RulesConfigured
from tests.helpers import assert_refused

T0 = 1_700_000_000_000

RULES = [
    RoutingRule(name="vip hotel", match={"level": ["gold", "platinum"], "business": "hotel"},
                group="vip", priority=5, blocked_agents=["rude"]),
    RoutingRule(name="checking in now", match={"hours_to_checkin": {"max": 0}},
                group="urgent", priority=10),
    RoutingRule(name="english", match={"language": "en", "vip": True}, group="en_vip"),
    RoutingRule(name="everything else", group="general"),
]


async def centre(engine: Engine, tenant: str) -> None:
    for g in ("vip", "urgent", "en_vip", "general"):
        await engine.configure_group(tenant, T0, g)
    out = await engine.configure_rules(tenant, T0, RULES)
    assert out.events == [RulesConfigured(count=4)]


async def entered(engine: Engine, tenant: str, sid: str, **attributes: object) -> Queued:
    out = await engine.arrive(tenant, T0, sid, None, attributes=attributes)  # type: ignore[arg-type]
    event = out.events[0]
    assert isinstance(event, Queued)
    return event


@pytest.mark.parametrize(
    ("attributes", "group", "priority"),
    [
        ({"level": "gold", "business": "hotel"}, "vip", 5),
        ({"level": "platinum", "business": "hotel", "hours_to_checkin": -1}, "vip", 5),
        ({"level": "gold", "business": "flight", "hours_to_checkin": -1}, "urgent", 10),
        ({"hours_to_checkin": 0}, "urgent", 10),
        ({"hours_to_checkin": 0.5}, "general", 0),
        ({"language": "en", "vip": True}, "en_vip", 0),
        ({"language": "en", "vip": "true"}, "general", 0),  # types must match
        ({}, "general", 0),
    ],
)
async def test_first_matching_rule_decides(engine, tenant, attributes, group, priority):
    await centre(engine, tenant)
    event = await entered(engine, tenant, "s1", **attributes)
    assert (event.group, event.priority) == (group, priority)


async def test_rule_priority_adds_to_the_customers_and_blocks_merge(engine, tenant):
    await centre(engine, tenant)
    out = await engine.arrive(tenant, T0, "s1", None, priority=3, blocked_agents=["x"],
                              attributes={"level": "gold", "business": "hotel"})
    assert out.events[0].priority == 8  # type: ignore[union-attr]
    view = await engine.session(tenant, "s1")
    assert view is not None and view.blocked_agents == ["rude", "x"]


async def test_a_named_group_skips_the_rules(engine, tenant):
    await centre(engine, tenant)
    event = (await engine.arrive(tenant, T0, "s1", "vip", attributes={"hours_to_checkin": -5}))
    assert (event.events[0].group, event.events[0].priority) == ("vip", 0)  # type: ignore[union-attr]


async def test_preferred_agent_of_a_rule(engine, tenant):
    await engine.configure_group(tenant, T0, "g")
    await engine.configure_agent(tenant, T0, "best", capacity=1, abilities={"g": 1})
    await engine.configure_agent(tenant, T0, "other", capacity=1, abilities={"g": 1})
    for a in ("best", "other"):
        await engine.set_agent_status(tenant, T0, a, "online")
    await engine.configure_rules(tenant, T0, [
        RoutingRule(match={"tier": "key_account"}, group="g", preferred_agent="other"),
        RoutingRule(match={"tier": "ghost"}, group="g", preferred_agent="gone")])
    out = await engine.arrive(tenant, T0, "s1", None, attributes={"tier": "key_account"})
    assert [(e.agent, e.via) for e in out.events] == [("other", "directed")]  # type: ignore[union-attr]
    out = await engine.arrive(tenant, T0, "s2", None, attributes={"tier": "ghost"})
    assert [(e.agent, e.via) for e in out.events] == [("best", "group")]  # type: ignore[union-attr]


async def test_no_rules_no_route(engine, redis_client, tenant):
    await engine.configure_group(tenant, T0, "g")
    await assert_refused(redis_client, tenant, NoRoute,
                         engine.arrive(tenant, T0, "s1", None, attributes={"a": 1}))
    await engine.configure_rules(tenant, T0, [RoutingRule(match={"a": 2}, group="g")])
    await assert_refused(redis_client, tenant, NoRoute,
                         engine.arrive(tenant, T0, "s1", None, attributes={"a": 1}))
    await assert_refused(redis_client, tenant, NoRoute, engine.arrive(tenant, T0, "s1", None))


async def test_empty_rule_list(engine, tenant):
    await engine.configure_group(tenant, T0, "g")
    await engine.configure_rules(tenant, T0, [RoutingRule(group="g")])
    assert (await engine.configure_rules(tenant, T0, [])).events == [RulesConfigured(count=0)]
    with pytest.raises(NoRoute):
        await engine.arrive(tenant, T0, "s1", None, attributes={})


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ([{"group": "nope"}], GroupUnknown),
        ([{"group": "bad id"}], BadId),
        ([{"group": "g", "priority": 5000}], BadArgument),
        ([{"group": "g", "match": {"a": []}}], BadArgument),
        ([{"group": "g", "match": {"a": {"lo": 1}}}], BadArgument),
        ([{"group": "g", "match": {"a": {"min": "1"}}}], BadArgument),
        ([{"group": "g", "match": {"bad key": 1}}], BadId),
        ([{"group": "g", "match": {"a": "x" * 257}}], BadArgument),
        ([{"group": "g", "match": {f"k{i}": 1 for i in range(33)}}], BadArgument),
        ([{"group": "g", "preferred_agent": ""}], BadId),
        ([{"group": "g", "blocked_agents": ["ok", "not ok"]}], BadId),
        ([{"group": "g"}] * 1001, BadArgument),
        ("not a list", BadArgument),
    ],
)
async def test_refused_rules_change_nothing(engine, redis_client, tenant, rules, error):
    await engine.configure_group(tenant, T0, "g")
    await engine.configure_rules(tenant, T0, [RoutingRule(group="g")])
    cmd = ConfigureRules(rules=rules)  # msgspec does not validate on construction
    await assert_refused(redis_client, tenant, error, engine.apply(tenant, T0, cmd))
