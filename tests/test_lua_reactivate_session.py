"""lua/reactivate_session.lua: a pre-closed session's customer is back."""

from __future__ import annotations

import pytest
from helpers import (
    MIN,
    SEC,
    T0,
    add_agent,
    assert_refused,
    assert_session,
    names,
    overflow_world,
    queued_view,
    rank,
    sales_support,
)

from dispatchd.engine import QueueEntry
from dispatchd.errors import BadId, SessionState, SessionUnknown
from dispatchd.messages import Assigned, Queued, Reactivated, ReactivateSession

#: the state as docs/protocol.md names it in E_SESSION_STATE (an assigned session that no
#: agent answered yet is waiting_agent)
DOCUMENTED = {"assigned": "waiting_agent"}


async def test_back_to_the_same_agent(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"), capacity=2)
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.preclose_session(tenant, T0 + SEC, "s1")
    out = await engine.reactivate_session(tenant, T0 + 2 * SEC, "s1")
    assert out.events == [Reactivated(session="s1", agent="alice", over_capacity=False)]
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="alice",
                   group="sales", arrival_ms=T0, virtual_arrival_ms=None)
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed, alice.last_assigned_ms) == (1, 0, T0)
    assert await engine.ranking(tenant, "sales") == [
        ("carol", rank(T0, cap=2)), ("alice", rank(T0, cap=2, load=1))]


async def test_over_capacity(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0, "s2", "sales")
    await engine.preclose_session(tenant, T0 + SEC, "s1")  # alice takes s2
    out = await engine.reactivate_session(tenant, T0 + 2 * SEC, "s1")
    assert out.events == [Reactivated(session="s1", agent="alice", over_capacity=True)]
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed, alice.capacity) == (2, 0, 1)
    assert await engine.ranking(tenant, "sales") == []
    assert_session(await engine.session(tenant, "s1"), state="assigned", agent="alice")


async def test_away_agent_gets_it_back(engine, tenant):
    await sales_support(engine, tenant, online=("alice", "carol"))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.preclose_session(tenant, T0 + SEC, "s1")
    await engine.set_agent_status(tenant, T0 + SEC, "alice", "away")
    out = await engine.reactivate_session(tenant, T0 + 2 * SEC, "s1")
    assert out.events == [Reactivated(session="s1", agent="alice", over_capacity=False)]
    alice = await engine.agent(tenant, "alice")
    assert (alice.status, alice.load, alice.preclosed) == ("away", 1, 0)


async def test_offline_agent_requeues_with_original_arrival(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s0", "sales", priority=2, customer="c9")
    await engine.preclose_session(tenant, T0 + SEC, "s0")
    await engine.arrive(tenant, T0 + 2 * SEC, "s1", "sales")  # alice takes it
    await engine.arrive(tenant, T0 + 3 * SEC, "s2", "sales")  # waits
    await engine.set_agent_status(tenant, T0 + 4 * SEC, "alice", "offline")
    out = await engine.reactivate_session(tenant, T0 + 5 * SEC, "s0")
    assert out.events == [Queued(session="s0", group="sales", virtual_arrival_ms=T0 - 2 * MIN,
                                 priority=2, position=1, reason="reactivation")]
    assert await engine.session(tenant, "s0") == queued_view("s0", "sales", T0, priority=2,
                                                             customer="c9")
    assert await engine.queue(tenant, "sales") == [
        QueueEntry("s0", T0 - 2 * MIN), QueueEntry("s2", T0 + 3 * SEC)]
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed) == (1, 0)


async def test_offline_agent_requeue_goes_to_another_agent(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s0", "sales")
    await engine.preclose_session(tenant, T0 + SEC, "s0")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "alice", "offline")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "carol", "online")
    out = await engine.reactivate_session(tenant, T0 + 5 * SEC, "s0")
    assert out.events == [Assigned(session="s0", agent="carol", group="sales", tier=0,
                                   via="group", wait_ms=5 * SEC)]
    assert (await engine.agent(tenant, "alice")).preclosed == 0
    assert (await engine.agent(tenant, "carol")).load == 1


async def test_requeue_opens_the_tiers_its_wait_earned(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.set_agent_status(tenant, T0, "m1", "online")
    await engine.arrive(tenant, T0, "s0", "main")
    await engine.preclose_session(tenant, T0 + SEC, "s0")
    await engine.set_agent_status(tenant, T0 + SEC, "m1", "offline")
    out = await engine.reactivate_session(tenant, T0 + 45 * SEC, "s0")
    assert out.events[0].reason == "reactivation"
    assert await engine.session(tenant, "s0") == queued_view("s0", "main", T0, open_tier=1)
    out = await engine.set_agent_status(tenant, T0 + 50 * SEC, "x1", "online")
    assert out.events[1:] == [Assigned(session="s0", agent="x1", group="main", tier=1,
                                       via="overflow", wait_ms=50 * SEC)]


async def test_requeue_is_a_candidate_for_the_next_overflow_step(engine, tenant):
    await overflow_world(engine, tenant)
    await add_agent(engine, tenant, "m1", {"main": 1.0})
    await engine.arrive(tenant, T0, "s0", "main")
    await engine.preclose_session(tenant, T0 + SEC, "s0")
    await engine.set_agent_status(tenant, T0 + SEC, "m1", "offline")
    await engine.reactivate_session(tenant, T0 + 2 * SEC, "s0")
    await engine.set_agent_status(tenant, T0 + 2 * SEC, "x1", "online")
    out = await engine.escalate_overflow(tenant, T0 + 30 * SEC)
    assert names(out.events) == ["tier_opened", "assigned"]
    assert out.events[1] == Assigned(session="s0", agent="x1", group="main", tier=1,
                                     via="overflow", wait_ms=30 * SEC)


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("session", ["", "s:1", "x" * 65])
async def test_bad_id(engine, redis_client, tenant, session):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadId,
                         engine.apply(tenant, T0, ReactivateSession(session=session)),
                         "session")


async def test_session_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, SessionUnknown,
                         engine.reactivate_session(tenant, T0, "nope"), "nope")


@pytest.mark.parametrize("state", ["queued", "assigned", "closed"])
async def test_session_state(engine, redis_client, tenant, state):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    sid = "s1"
    if state == "queued":
        await engine.arrive(tenant, T0, "s2", "sales")
        sid = "s2"
    elif state == "closed":
        await engine.preclose_session(tenant, T0, "s1")
        await engine.release_session(tenant, T0, "s1")
    await assert_refused(redis_client, tenant, SessionState,
                         engine.reactivate_session(tenant, T0 + 1, sid),
                         DOCUMENTED.get(state, state))
