"""lua/abandon_customer.lua: a queued (or parked) customer leaves."""

from __future__ import annotations

import pytest
from helpers import SEC, T0, assert_refused, assert_session, overflow_world, sales_support

from dispatchd import keys
from dispatchd.engine import QueueEntry
from dispatchd.errors import BadId, SessionState, SessionUnknown
from dispatchd.messages import AbandonCustomer, Abandoned

#: the state as docs/protocol.md names it in E_SESSION_STATE (an assigned session that no
#: agent answered yet is waiting_agent)
DOCUMENTED = {"assigned": "waiting_agent"}


async def test_queued_customer_leaves(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=())
    await engine.arrive(tenant, T0, "s1", "sales", customer="c1")
    await engine.arrive(tenant, T0 + SEC, "s2", "sales")
    out = await engine.abandon_customer(tenant, T0 + 45 * SEC, "s1")
    assert out.events == [Abandoned(session="s1", group="sales", wait_ms=45 * SEC)]
    assert_session(await engine.session(tenant, "s1"), state="closed", group="sales",
                   agent=None, customer="c1", parked_with=None, virtual_arrival_ms=None)
    assert await engine.queue(tenant, "sales") == [QueueEntry("s2", T0 + SEC)]
    assert await redis_client.pttl(keys.key("session", tenant, "s1")) > 0
    # nobody takes the abandoned customer, and no sticky memory was written
    out = await engine.set_agent_status(tenant, T0 + 50 * SEC, "alice", "online")
    assert [e.session for e in out.events[1:]] == ["s2"]
    assert await redis_client.exists(keys.key("customer", tenant, "c1")) == 0


async def test_parked_customer_leaves(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.set_agent_status(tenant, T0, "alice", "away")
    await engine.arrive(tenant, T0, "p", "sales", directed_agent="alice")
    assert await engine.parked(tenant, "alice") == [QueueEntry("p", T0)]
    out = await engine.abandon_customer(tenant, T0 + 5 * SEC, "p")
    assert out.events == [Abandoned(session="p", group="sales", wait_ms=5 * SEC)]
    assert await engine.parked(tenant, "alice") == []
    assert_session(await engine.session(tenant, "p"), state="closed", parked_with=None)
    assert (await engine.expire_preferences(tenant, T0 + 10**8)).events == []
    out = await engine.set_agent_status(tenant, T0 + 6 * SEC, "alice", "online")
    assert len(out.events) == 1


async def test_customer_with_open_tiers_leaves_every_queue(engine, tenant):
    await overflow_world(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "main")
    await engine.escalate_overflow(tenant, T0 + 30 * SEC)
    assert (await engine.session(tenant, "s1")).open_tier == 1
    await engine.abandon_customer(tenant, T0 + 31 * SEC, "s1")
    assert await engine.queue(tenant, "main") == []
    out = await engine.set_agent_status(tenant, T0 + 32 * SEC, "x1", "online")
    assert len(out.events) == 1  # the tier-1 overflow set no longer holds s1
    assert (await engine.escalate_overflow(tenant, T0 + 10**8)).events == []


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("session", ["", "s 1", "x" * 65, None])
async def test_bad_id(engine, redis_client, tenant, session):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadId,
                         engine.apply(tenant, T0, AbandonCustomer(session=session)), "session")


async def test_session_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, SessionUnknown,
                         engine.abandon_customer(tenant, T0, "nope"), "nope")


@pytest.mark.parametrize("state", ["assigned", "preclosed", "closed"])
async def test_session_state(engine, redis_client, tenant, state):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    if state != "assigned":
        await engine.preclose_session(tenant, T0, "s1")
    if state == "closed":
        await engine.release_session(tenant, T0, "s1")
    await assert_refused(redis_client, tenant, SessionState,
                         engine.abandon_customer(tenant, T0 + 1, "s1"),
                         DOCUMENTED.get(state, state))
