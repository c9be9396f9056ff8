"""One test (or a few) per numbered rule of SPEC §2, using note 002's own examples.

Each test drives the real Lua scripts on the embedded Valkey; time is the ``now_ms``
argument, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from dispatchd import keys
from dispatchd.engine import Engine
from dispatchd.errors import AgentBlocked, SessionExists
from dispatchd.messages import Arrive, Assigned, Queued, ReleaseSession, RoutingRule, Tier

S = 1000  # ms per second
MIN = 60 * S


async def online(
    engine: Engine, tenant: str, now: int, agent: str, capacity: int = 1, **abilities: float
) -> None:
    await engine.configure_agent(tenant, now, agent, capacity=capacity, abilities=abilities)
    await engine.set_agent_status(tenant, now, agent, "online")


def assigned(outcome) -> list[tuple[str, str]]:
    return [(e.session, e.agent) for e in outcome.events if isinstance(e, Assigned)]


async def served_order(engine: Engine, tenant: str, group: str) -> list[str]:
    return [q.session for q in await engine.queue(tenant, group)]


# ------------------------------------------------------------------------ 2.1 entry


async def test_2_1_customer_enters_the_named_group(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "hotel_presale")
    await engine.configure_group(tenant, 0, "flight_presale")
    out = await engine.arrive(tenant, 0, "c1", "hotel_presale")
    assert out.events == [
        Queued(
            session="c1",
            group="hotel_presale",
            virtual_arrival_ms=0,
            priority=0,
            position=1,
            reason="arrival",
        )
    ]
    assert await served_order(engine, tenant, "hotel_presale") == ["c1"]
    assert await served_order(engine, tenant, "flight_presale") == []


async def test_2_1_attributes_map_to_group_priority_and_agents(
    engine: Engine, tenant: str
) -> None:
    """Note 002: an order whose check-in time has passed is urgent; gold customers go to
    the high-ability group; a customer who rated an agent badly never gets that agent."""
    for g in ("hotel_aftersale", "hotel_vip"):
        await engine.configure_group(tenant, 0, g)
    await engine.configure_rules(tenant, 0, [
        RoutingRule(name="checking in now", group="hotel_aftersale", priority=10,
                    match={"business": "hotel", "minutes_to_checkin": {"max": 0}}),
        RoutingRule(name="gold", group="hotel_vip", match={"level": ["gold", "platinum"]},
                    blocked_agents=["rated_badly"]),
        RoutingRule(name="hotel", group="hotel_aftersale", match={"business": "hotel"}),
    ])
    out = await engine.arrive(tenant, 0, "late", None,
                              attributes={"business": "hotel", "minutes_to_checkin": -30})
    assert (out.events[0].group, out.events[0].priority) == ("hotel_aftersale", 10)
    out = await engine.arrive(tenant, 0, "gold", None, attributes={"level": "gold"})
    assert out.events[0].group == "hotel_vip"
    await online(engine, tenant, 0, "rated_badly", capacity=5, hotel_vip=1)
    assert (await engine.session(tenant, "gold")).state == "queued"  # type: ignore[union-attr]
    out = await engine.arrive(tenant, 1, "plain", None, attributes={"business": "hotel"})
    assert (out.events[0].group, out.events[0].priority) == ("hotel_aftersale", 0)
    assert await served_order(engine, tenant, "hotel_aftersale") == ["late", "plain"]


# ----------------------------------------------------------- 2.2 priority as virtual wait


async def test_2_2_priority_10_is_served_as_if_it_waited_600s_longer(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")  # U = 60 s by default
    await engine.arrive(tenant, 0, "early", "g")
    await engine.arrive(tenant, 599 * S, "vip_599", "g", priority=10)  # 600 s ahead: passes early
    await engine.arrive(tenant, 600 * S, "vip_600", "g", priority=10)  # exactly equal: tie
    await engine.arrive(tenant, 601 * S, "vip_601", "g", priority=10)  # 1 s behind early
    assert await served_order(engine, tenant, "g") == ["vip_599", "early", "vip_600", "vip_601"]


async def test_2_2_agent_takes_customers_in_virtual_wait_order(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g")
    await engine.arrive(tenant, 0, "early", "g")
    await engine.arrive(tenant, 599 * S, "vip", "g", priority=10)
    await engine.configure_agent(tenant, 0, "a", capacity=2, abilities={"g": 1})
    out = await engine.set_agent_status(tenant, 700 * S, "a", "online")
    assert [s for s, _ in assigned(out)] == ["vip", "early"]


async def test_2_2_the_unit_u_is_configurable(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g", priority_unit_ms=10 * S)
    await engine.arrive(tenant, 0, "early", "g")
    await engine.arrive(tenant, 99 * S, "p10", "g", priority=10)  # 100 s ahead only
    await engine.arrive(tenant, 101 * S, "p10_late", "g", priority=10)
    assert await served_order(engine, tenant, "g") == ["p10", "early", "p10_late"]


async def test_2_2_negative_priority_waits_longer_but_is_not_starved(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await engine.arrive(tenant, 0, "soft_blacklisted", "g", priority=-5)  # as if 300 s later
    # a steady stream of normal customers, one every 10 s for 10 minutes
    for i in range(60):
        await engine.arrive(tenant, (i + 1) * 10 * S, f"n{i:02d}", "g")
    order = await served_order(engine, tenant, "g")
    pos = order.index("soft_blacklisted")
    # everyone who arrived before 300 s is ahead of it, everyone after 300 s behind it
    assert order[:pos] == [f"n{i:02d}" for i in range(29)]  # arrivals at 10..290 s
    assert order[pos + 1] == "n29"  # arrived at exactly 300 s: tie, the earlier arrival wins
    # it is served once the agents get through the ones ahead of it
    await online(engine, tenant, 700 * S, "a", capacity=30, g=1)
    view = await engine.session(tenant, "soft_blacklisted")
    assert view is not None and view.state == "assigned"


async def test_2_2_ties_go_to_the_earlier_arrival(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g")
    await engine.arrive(tenant, 1000, "zzz", "g")
    await engine.arrive(tenant, 1000, "aaa", "g")  # same ms, later in order of arrival
    await engine.arrive(tenant, 1000 + 60 * S, "p1", "g", priority=1)  # equal virtual arrival
    assert await served_order(engine, tenant, "g") == ["zzz", "aaa", "p1"]


# ------------------------------------------------------------ 2.3 agent order in a group


def readiness(
    now: int, last: int, k: float, cap: int, load: int, m: float, pre: int, ability: float
) -> float:
    """SPEC 2.3, literally, with times in seconds."""
    return (now - last) / 1000 + k * (cap - load - m * pre) / cap * ability


async def test_2_3_candidates_are_ranked_by_the_readiness_formula(
    engine: Engine, tenant: str
) -> None:
    k, m = 30.0, 0.5
    await engine.configure_group(tenant, 0, "g", k=k, m=m)
    await engine.configure_group(tenant, 0, "other")
    # a: capacity 4, will carry 1 open session (assigned at t=100 s)
    # b: capacity 2, idle, ability 2, never assigned (online since 0)
    # c: capacity 3, 1 pre-closed session (assigned at t=50 s), ability 1.5
    await online(engine, tenant, 0, "a", capacity=4, g=1)
    await online(engine, tenant, 0, "b", capacity=2, g=2)
    await online(engine, tenant, 0, "c", capacity=3, g=1.5, other=1)
    await engine.arrive(tenant, 50 * S, "for_c", "other")
    await engine.preclose_session(tenant, 60 * S, "for_c")
    await engine.arrive(tenant, 100 * S, "for_a", "g", directed_agent="a")
    now = 200 * S
    expected = {
        "a": readiness(now, 100 * S, k, 4, 1, m, 0, 1),
        "b": readiness(now, 0, k, 2, 0, m, 0, 2),
        "c": readiness(now, 50 * S, k, 3, 0, m, 1, 1.5),
    }
    want = sorted(expected, key=lambda a: (-expected[a], a))
    assert [a for a, _ in await engine.ranking(tenant, "g")] == want
    # and the next customer goes to the top of that ranking
    out = await engine.arrive(tenant, now, "next", "g")
    assert assigned(out) == [("next", want[0])]


async def test_2_3_preclosed_lowers_the_score_but_not_the_load(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g", k=100.0, m=1.0)
    await online(engine, tenant, 0, "busy", capacity=2, g=1)
    await online(engine, tenant, 0, "fresh", capacity=2, g=1)
    await engine.arrive(tenant, 0, "s1", "g", directed_agent="busy")
    await engine.preclose_session(tenant, 0, "s1")
    busy = await engine.agent(tenant, "busy")
    assert busy is not None and (busy.load, busy.preclosed) == (0, 1)
    # same idle time, same load: the pre-closed session alone ranks busy below fresh
    assert [a for a, _ in await engine.ranking(tenant, "g")] == ["fresh", "busy"]
    # but it does not use capacity: busy still takes two customers at once
    await engine.set_agent_status(tenant, 0, "fresh", "away")
    out1 = await engine.arrive(tenant, 0, "x1", "g")
    out2 = await engine.arrive(tenant, 0, "x2", "g")
    assert assigned(out1) + assigned(out2) == [("x1", "busy"), ("x2", "busy")]


async def test_2_3_only_online_agents_under_capacity_are_candidates(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await online(engine, tenant, 0, "full", capacity=1, g=1)
    await online(engine, tenant, 0, "away", capacity=5, g=1)
    await engine.configure_agent(tenant, 0, "off", capacity=5, abilities={"g": 1})
    await engine.arrive(tenant, 0, "s0", "g", directed_agent="full")
    await engine.set_agent_status(tenant, 0, "away", "away")
    assert await engine.ranking(tenant, "g") == []
    out = await engine.arrive(tenant, 1, "s1", "g")
    assert isinstance(out.events[0], Queued)


# ------------------------------------------------------------------ 2.4 multi-skill


async def test_2_4_agent_takes_from_the_group_where_its_ability_is_highest(
    engine: Engine, tenant: str
) -> None:
    for g in ("overseas_presale", "domestic_presale", "overseas_aftersale"):
        await engine.configure_group(tenant, 0, g)
    # customers waiting in all three; the ability-1 group's customer waited longest
    await engine.arrive(tenant, 0, "c_after", "overseas_aftersale")
    await engine.arrive(tenant, 10 * S, "c_dom", "domestic_presale")
    await engine.arrive(tenant, 20 * S, "c_over", "overseas_presale")
    await engine.configure_agent(
        tenant,
        0,
        "A",
        capacity=1,
        abilities={"overseas_presale": 3, "domestic_presale": 2, "overseas_aftersale": 1},
    )
    out = await engine.set_agent_status(tenant, 30 * S, "A", "online")
    assert assigned(out) == [("c_over", "A")]
    out = await engine.release_session(tenant, 40 * S, "c_over")
    assert assigned(out) == [("c_dom", "A")]
    out = await engine.release_session(tenant, 50 * S, "c_dom")
    assert assigned(out) == [("c_after", "A")]


async def test_2_4_equal_abilities_tie_break_on_longest_virtual_wait(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g1")
    await engine.configure_group(tenant, 0, "g2")
    await engine.arrive(tenant, 0, "old", "g1")
    await engine.arrive(tenant, 100 * S, "vip", "g2", priority=5)  # virtual arrival -200 s
    await engine.configure_agent(tenant, 0, "A", capacity=1, abilities={"g1": 2, "g2": 2})
    out = await engine.set_agent_status(tenant, 200 * S, "A", "online")
    assert assigned(out) == [("vip", "A")]


# ---------------------------------------------------------- 2.5 directed, sticky, blocked


async def test_2_5_directed_customer_goes_to_the_named_agent(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g")
    await online(engine, tenant, 0, "best", capacity=1, g=1)
    await online(engine, tenant, 5 * S, "named", capacity=1, g=1)
    out = await engine.arrive(tenant, 10 * S, "c", "g", directed_agent="named")
    assert assigned(out) == [("c", "named")]
    assert out.events[0].via == "directed"


async def test_2_5_directed_waits_for_a_busy_agent_then_falls_back(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g", preference_ms=30 * S)
    await online(engine, tenant, 0, "named", capacity=1, g=1)
    await engine.arrive(tenant, 0, "first", "g", directed_agent="named")
    await online(engine, tenant, 0, "other", capacity=1, g=1)
    out = await engine.arrive(tenant, 1 * S, "c", "g", directed_agent="named")
    assert out.events == [
        Queued(
            session="c",
            group="g",
            virtual_arrival_ms=1 * S,
            priority=0,
            position=1,
            reason="arrival",
            parked_with="named",
        )
    ]
    # "other" is free the whole time but does not get c while the preference holds
    assert assigned(await engine.agent_ready(tenant, 10 * S, "other")) == []
    assert (await engine.expire_preferences(tenant, 30 * S)).events == []  # not due yet (31 s)
    out = await engine.expire_preferences(tenant, 31 * S)
    assert assigned(out) == [("c", "other")]


async def test_2_5_busy_preferred_agent_serves_parked_customer_when_free(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await online(engine, tenant, 0, "named", capacity=1, g=1)
    await engine.arrive(tenant, 0, "first", "g")
    await engine.arrive(tenant, 1 * S, "earlier_in_group", "g")
    await engine.arrive(tenant, 2 * S, "c", "g", directed_agent="named")
    out = await engine.release_session(tenant, 5 * S, "first")
    assert assigned(out) == [("c", "named")]


async def test_2_5_sticky_prefers_the_last_agent_within_the_window(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g", sticky_ms=10 * MIN)
    await online(engine, tenant, 0, "x", capacity=1, g=1)
    await online(engine, tenant, 0, "y", capacity=1, g=1)
    first = await engine.arrive(tenant, 0, "s1", "g", customer="cust")
    served_by = assigned(first)[0][1]
    await engine.release_session(tenant, 60 * S, "s1")
    other = "y" if served_by == "x" else "x"
    # make the other agent clearly readier; stickiness still wins
    await engine.arrive(tenant, 61 * S, "filler", "g", directed_agent=served_by)
    await engine.release_session(tenant, 62 * S, "filler")
    out = await engine.arrive(tenant, 5 * MIN, "s2", "g", customer="cust")
    assert assigned(out) == [("s2", served_by)] and out.events[0].via == "sticky"
    await engine.release_session(tenant, 6 * MIN, "s2")
    # outside the window: normal routing
    out = await engine.arrive(tenant, 6 * MIN + 10 * MIN + 1, "s3", "g", customer="cust")
    assert out.events[0].via == "group"
    # the gateway may name the last agent itself
    await engine.release_session(tenant, 17 * MIN, "s3")
    out = await engine.arrive(tenant, 17 * MIN, "s4", "g", customer="new", last_agent=other)
    assert assigned(out) == [("s4", other)] and out.events[0].via == "sticky"


async def test_2_5_blocked_agent_is_never_chosen(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g", preference_ms=10 * S)
    await online(engine, tenant, 0, "bad", capacity=5, g=1)
    # directed to a blocked agent: the block wins
    out = await engine.arrive(tenant, 0, "c", "g", directed_agent="bad", blocked_agents=["bad"])
    assert isinstance(out.events[0], Queued) and out.events[0].parked_with is None
    # bad is free with 5 slots, keeps taking everyone else, never c
    for i in range(3):
        out = await engine.arrive(tenant, 1 + i, f"n{i}", "g")
        assert assigned(out) == [(f"n{i}", "bad")]
    assert (await engine.expire_preferences(tenant, 10 * MIN)).events == []
    assert assigned(await engine.agent_ready(tenant, 10 * MIN, "bad")) == []
    with pytest.raises(AgentBlocked):
        await engine.transfer_session(tenant, 10 * MIN, "c", to_agent="bad", force=True)
    await online(engine, tenant, 10 * MIN, "good", capacity=1, g=1)
    assert (await engine.session(tenant, "c")).agent == "good"  # type: ignore[union-attr]


async def test_2_5_blocked_customer_behind_queue_head_is_skipped_not_lost(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await engine.arrive(tenant, 0, "blocks_a", "g", blocked_agents=["a"])
    await engine.arrive(tenant, 1, "plain", "g")
    await online(engine, tenant, 2, "a", capacity=2, g=1)
    assert await served_order(engine, tenant, "g") == ["blocks_a"]
    assert (await engine.session(tenant, "plain")).agent == "a"  # type: ignore[union-attr]


# ---------------------------------------------------------------- 2.6 tiered overflow


async def overflow_setup(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "tier1")
    await engine.configure_group(tenant, 0, "tier2")
    await engine.configure_group(tenant, 0, "bot")
    await engine.configure_group(
        tenant,
        0,
        "vip",
        tiers=[
            Tier(after_ms=30 * S, groups=["tier1"]),
            Tier(after_ms=90 * S, groups=["tier2"]),
            Tier(after_ms=300 * S, groups=["bot"]),
        ],
    )


async def test_2_6_overflow_agents_join_only_after_the_threshold(
    engine: Engine, tenant: str
) -> None:
    await overflow_setup(engine, tenant)
    await online(engine, tenant, 0, "t1", capacity=1, tier1=1)
    out = await engine.arrive(tenant, 0, "c", "vip")
    assert isinstance(out.events[0], Queued)
    assert (await engine.escalate_overflow(tenant, 29 * S)).events == []
    out = await engine.escalate_overflow(tenant, 30 * S)
    assert [type(e).__name__ for e in out.events] == ["TierOpened", "Assigned"]
    assert assigned(out) == [("c", "t1")] and out.events[1].tier == 1
    assert out.events[1].via == "overflow"


async def test_2_6_own_group_agent_beats_overflow_agent(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "helpers")
    await engine.configure_group(tenant, 0, "vip", tiers=[Tier(after_ms=0, groups=["helpers"])])
    # the overflow agent is far readier (idle longer, huge ability), the own agent is not
    await online(engine, tenant, 0, "helper", capacity=10, helpers=100)
    await online(engine, tenant, 50 * S, "own", capacity=1, vip=1)
    out = await engine.arrive(tenant, 60 * S, "c1", "vip")  # tier 1 is open from the start
    assert assigned(out) == [("c1", "own")] and out.events[0].tier == 0
    out = await engine.arrive(tenant, 61 * S, "c2", "vip")  # own is full now
    assert assigned(out) == [("c2", "helper")] and out.events[0].tier == 1


async def test_2_6_customer_side_prefers_own_then_tier1_then_tier2(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "tier1")
    await engine.configure_group(tenant, 0, "tier2")
    await engine.configure_group(
        tenant,
        0,
        "vip",
        preference_ms=200 * S,
        tiers=[Tier(after_ms=30 * S, groups=["tier1"]), Tier(after_ms=90 * S, groups=["tier2"])],
    )
    await online(engine, tenant, 0, "own", capacity=1, vip=1)
    await engine.arrive(tenant, 0, "blocker", "vip")  # own is now full
    await engine.arrive(tenant, 0, "c", "vip", directed_agent="own")  # parked with own
    await engine.arrive(tenant, 1, "d", "vip", directed_agent="own")  # parked with own
    # both tiers' agents free; tier 2's is much readier
    await online(engine, tenant, 0, "t2", capacity=1, tier2=50)
    await online(engine, tenant, 0, "t1", capacity=1, tier1=1)
    out = await engine.expire_preferences(tenant, 201 * S)  # waited 201 s: tiers 1+2 open
    assert assigned(out) == [("c", "t1"), ("d", "t2")]
    assert [e.tier for e in out.events if isinstance(e, Assigned)] == [1, 2]


async def test_2_6_agent_side_lower_tier_first(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "helpers")
    await engine.configure_group(tenant, 0, "a", tiers=[Tier(after_ms=0, groups=["helpers"])])
    await engine.configure_group(
        tenant,
        0,
        "b",
        tiers=[Tier(after_ms=0, groups=["a"]), Tier(after_ms=10 * S, groups=["helpers"])],
    )
    await engine.arrive(tenant, 0, "from_b", "b")  # waited longer, helpers are its tier 2
    await engine.arrive(tenant, 5 * S, "from_a", "a")  # helpers are its tier 1
    await engine.escalate_overflow(tenant, 20 * S)
    await engine.configure_agent(tenant, 0, "h", capacity=1, abilities={"helpers": 1})
    out = await engine.set_agent_status(tenant, 20 * S, "h", "online")
    assert assigned(out) == [("from_a", "h")]


async def test_2_6_overflowed_customer_stays_in_its_own_queue(engine: Engine, tenant: str) -> None:
    await overflow_setup(engine, tenant)
    await engine.arrive(tenant, 0, "c", "vip")
    await engine.escalate_overflow(tenant, 400 * S)  # every tier open, nobody free
    assert await served_order(engine, tenant, "vip") == ["c"]
    await online(engine, tenant, 400 * S, "own", capacity=1, vip=1)
    assert (await engine.session(tenant, "c")).agent == "own"  # type: ignore[union-attr]
    assert await served_order(engine, tenant, "vip") == []


async def test_2_6_overflow_can_end_in_a_bot_group(engine: Engine, tenant: str) -> None:
    await overflow_setup(engine, tenant)
    await online(engine, tenant, 0, "bot-1", capacity=1000, bot=1)
    await engine.arrive(tenant, 0, "c", "vip")
    out = await engine.escalate_overflow(tenant, 300 * S)
    assert [e.tier for e in out.events if not isinstance(e, Assigned)] == [1, 2, 3]
    assert assigned(out) == [("c", "bot-1")]


# ---------------------------------------------------------- 2.7 pre-close, reactivation


async def test_2_7_preclosed_session_reactivates_to_its_agent_even_at_capacity(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await online(engine, tenant, 0, "a", capacity=1, g=1)
    await engine.arrive(tenant, 0, "quiet", "g")
    await engine.arrive(tenant, 1, "waiting", "g")
    out = await engine.preclose_session(tenant, 10 * S, "quiet")
    assert assigned(out) == [("waiting", "a")]  # the freed slot is used at once
    out = await engine.reactivate_session(tenant, 20 * S, "quiet")
    assert [(e.session, e.agent, e.over_capacity) for e in out.events] == [("quiet", "a", True)]
    view = await engine.agent(tenant, "a")
    assert view is not None and (view.load, view.capacity) == (2, 1)


async def test_2_7_reactivation_requeues_with_original_wait_when_agent_is_gone(
    engine: Engine, tenant: str
) -> None:
    await engine.configure_group(tenant, 0, "g")
    await online(engine, tenant, 0, "a", capacity=1, g=1)
    await engine.arrive(tenant, 0, "busy", "g")
    await engine.arrive(tenant, 5 * S, "vip", "g", priority=2)  # virtual arrival -115 s
    await engine.release_session(tenant, 10 * S, "busy")  # a takes vip
    await engine.preclose_session(tenant, 20 * S, "vip")
    await engine.set_agent_status(tenant, 30 * S, "a", "offline")
    await engine.arrive(tenant, 40 * S, "newcomer", "g", priority=1)  # virtual arrival -20 s
    out = await engine.reactivate_session(tenant, 50 * S, "vip")
    assert out.events == [
        Queued(
            session="vip",
            group="g",
            virtual_arrival_ms=5 * S - 120 * S,
            priority=2,
            position=1,
            reason="reactivation",
        )
    ]
    assert await served_order(engine, tenant, "g") == ["vip", "newcomer"]


# ----------------------------------------------------------------------- 2.8 atomicity


async def test_2_8_a_session_id_is_taken_once(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g")
    await engine.arrive(tenant, 0, "s", "g")
    with pytest.raises(SessionExists):
        await engine.arrive(tenant, 1, "s", "g")
    assert await served_order(engine, tenant, "g") == ["s"]


async def test_2_8_concurrent_clients_never_double_assign_or_overfill(
    engine: Engine, tenant: str
) -> None:
    """Eight clients race arrivals and releases; the books must balance afterwards."""
    groups = ["g0", "g1", "g2"]
    for g in groups:
        await engine.configure_group(tenant, 0, g)
    agents = [f"a{i}" for i in range(10)]
    for i, a in enumerate(agents):
        await online(
            engine, tenant, 0, a, capacity=1 + i % 3, **{groups[i % 3]: 1, groups[(i + 1) % 3]: 2}
        )
    rng = random.Random(7)
    n_sessions = 400
    seen: dict[str, str] = {}

    async def worker(w: int) -> None:
        for j in range(n_sessions // 8):
            sid = f"w{w}-{j}"
            items = await engine.apply_batch(
                tenant,
                1000 + j,
                [Arrive(session=sid, group=rng.choice(groups), priority=rng.randint(-3, 3))],
            )
            for item in items:
                for e in getattr(item, "events", []):
                    if isinstance(e, Assigned):
                        assert e.session not in seen, f"{e.session} assigned twice"
                        seen[e.session] = e.agent
            if j % 2 and seen:
                done = rng.choice(sorted(seen))
                for item in await engine.apply_batch(
                    tenant, 1000 + j, [ReleaseSession(session=done)]
                ):
                    for e in getattr(item, "events", []):
                        if isinstance(e, Assigned):
                            assert e.session not in seen, f"{e.session} assigned twice"
                            seen[e.session] = e.agent

    await asyncio.gather(*(worker(w) for w in range(8)))
    total_load = 0
    for a in agents:
        view = await engine.agent(tenant, a)
        assert view is not None and view.load <= view.capacity
        assert view.load == await engine.redis.scard(keys.key("agent_sessions", tenant, a))
        total_load += view.load
    queued = sum([len(await engine.queue(tenant, g)) for g in groups])
    states = [
        (await engine.session(tenant, f"w{w}-{j}"))
        for w in range(8)
        for j in range(n_sessions // 8)
    ]
    assert all(s is not None for s in states)  # nobody lost
    by_state = {
        st: sum(1 for s in states if s and s.state == st) for st in ("queued", "assigned", "closed")
    }
    assert by_state["queued"] == queued
    assert by_state["assigned"] == total_load
    assert sum(by_state.values()) == n_sessions
