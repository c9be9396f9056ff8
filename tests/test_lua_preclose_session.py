"""lua/preclose_session.lua: an assigned session is pre-closed."""

from __future__ import annotations

import pytest
from helpers import SEC, T0, assert_refused, assert_session, rank, sales_support

from dispatchd.errors import BadId, SessionState, SessionUnknown
from dispatchd.messages import Assigned, Preclosed, PrecloseSession

#: the state as docs/protocol.md names it in E_SESSION_STATE (an assigned session that no
#: agent answered yet is waiting_agent)
DOCUMENTED = {"assigned": "waiting_agent"}


async def test_preclose_frees_capacity_and_weighs_m(engine, tenant):
    await sales_support(engine, tenant, online=("alice",), capacity=2)
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0 + SEC, "s2", "sales")
    out = await engine.preclose_session(tenant, T0 + 5 * SEC, "s1")
    assert out.events == [Preclosed(session="s1", agent="alice")]
    assert_session(await engine.session(tenant, "s1"), state="preclosed", agent="alice",
                   group="sales", parked_with=None, virtual_arrival_ms=None)
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed, alice.last_assigned_ms) == (1, 1, T0 + SEC)
    assert await engine.ranking(tenant, "sales") == [
        ("alice", rank(T0 + SEC, cap=2, load=1, pre=1))]


async def test_agent_takes_the_next_customer(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0 + SEC, "s2", "sales")
    now = T0 + 5 * SEC
    out = await engine.preclose_session(tenant, now, "s1")
    assert out.events == [
        Preclosed(session="s1", agent="alice"),
        Assigned(session="s2", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=4 * SEC),
    ]
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed, alice.last_assigned_ms) == (1, 1, now)
    assert await engine.queue(tenant, "sales") == []
    assert await engine.ranking(tenant, "sales") == []


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("session", ["", "s#1", "x" * 65, 7])
async def test_bad_id(engine, redis_client, tenant, session):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadId,
                         engine.apply(tenant, T0, PrecloseSession(session=session)), "session")


async def test_session_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, SessionUnknown,
                         engine.preclose_session(tenant, T0, "nope"), "nope")


@pytest.mark.parametrize("state", ["queued", "preclosed", "closed"])
async def test_session_state(engine, redis_client, tenant, state):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    if state == "queued":
        await engine.arrive(tenant, T0, "s2", "sales")
        sid = "s2"
    else:
        sid = "s1"
        await engine.preclose_session(tenant, T0, "s1")
        if state == "closed":
            await engine.release_session(tenant, T0, "s1")
    await assert_refused(redis_client, tenant, SessionState,
                         engine.preclose_session(tenant, T0 + 1, sid), DOCUMENTED.get(state, state))
