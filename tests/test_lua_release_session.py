"""lua/release_session.lua: an assigned or pre-closed session ends."""

from __future__ import annotations

import pytest
from helpers import SEC, T0, assert_refused, assert_session, rank, sales_support

from dispatchd import keys
from dispatchd.engine import QueueEntry
from dispatchd.errors import BadArgument, BadId, SessionState, SessionUnknown
from dispatchd.messages import Assigned, Released, ReleaseSession

DAY = 86_400_000


async def test_release_assigned_frees_agent_and_remembers_customer(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales", customer="c1")
    now = T0 + 30 * SEC
    out = await engine.release_session(tenant, now, "s1")
    assert out.events == [Released(session="s1", agent="alice", reason="closed")]
    assert_session(await engine.session(tenant, "s1"), state="closed", agent="alice",
                   group="sales", customer="c1", parked_with=None, virtual_arrival_ms=None)
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed, alice.last_assigned_ms) == (0, 0, T0)
    assert await engine.ranking(tenant, "sales") == [("alice", rank(T0))]
    memory = keys.key("customer", tenant, "c1")
    assert await redis_client.hgetall(memory) == {b"ag": b"alice", b"at": str(now).encode()}
    assert 0 < await redis_client.pttl(memory) <= 30 * DAY
    assert 0 < await redis_client.pttl(keys.key("session", tenant, "s1")) <= DAY


async def test_release_with_reason_and_no_customer(engine, redis_client, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    out = await engine.release_session(tenant, T0 + 1, "s1", reason="timeout")
    assert out.events == [Released(session="s1", agent="alice", reason="timeout")]
    assert await redis_client.keys("{" + tenant + "}:c:*") == []


async def test_agent_takes_the_next_customer(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0 + SEC, "s2", "sales")
    await engine.arrive(tenant, T0 + 2 * SEC, "s3", "sales", priority=1)
    now = T0 + 10 * SEC
    out = await engine.release_session(tenant, now, "s1")
    assert out.events == [
        Released(session="s1", agent="alice", reason="closed"),
        Assigned(session="s3", agent="alice", group="sales", tier=0, via="group",
                 wait_ms=8 * SEC),
    ]
    assert await engine.queue(tenant, "sales") == [QueueEntry("s2", T0 + SEC)]
    assert_session(await engine.session(tenant, "s3"), state="assigned", agent="alice")
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.last_assigned_ms) == (1, now)


async def test_release_preclosed_session(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0, "s2", "sales")
    out = await engine.preclose_session(tenant, T0 + SEC, "s1")
    assert out.events[1].session == "s2"  # alice took s2 with the freed capacity
    out = await engine.release_session(tenant, T0 + 2 * SEC, "s1", reason="done")
    assert out.events == [Released(session="s1", agent="alice", reason="done")]
    alice = await engine.agent(tenant, "alice")
    assert (alice.load, alice.preclosed) == (1, 0)
    assert_session(await engine.session(tenant, "s1"), state="closed", agent="alice")
    assert_session(await engine.session(tenant, "s2"), state="assigned", agent="alice")
    assert await engine.ranking(tenant, "sales") == []


async def test_away_agent_takes_nobody(engine, tenant):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s1", "sales")
    await engine.arrive(tenant, T0, "s2", "sales")
    await engine.set_agent_status(tenant, T0, "alice", "away")
    out = await engine.release_session(tenant, T0 + SEC, "s1")
    assert out.events == [Released(session="s1", agent="alice", reason="closed")]
    assert await engine.queue(tenant, "sales") == [QueueEntry("s2", T0)]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("session", ["", "s 1", "x" * 65])
async def test_bad_id(engine, redis_client, tenant, session):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, BadId,
                         engine.release_session(tenant, T0, session), "session")


@pytest.mark.parametrize("reason", ["r" * 257, "é" * 129, 42])  # limit: 256 bytes of UTF-8
async def test_bad_reason(engine, redis_client, tenant, reason):
    await sales_support(engine, tenant)
    await engine.arrive(tenant, T0, "s1", "sales")
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.apply(tenant, T0, ReleaseSession(session="s1", reason=reason)),
                         "reason")


async def test_session_unknown(engine, redis_client, tenant):
    await sales_support(engine, tenant)
    await assert_refused(redis_client, tenant, SessionUnknown,
                         engine.release_session(tenant, T0, "nope"), "nope")


@pytest.mark.parametrize("state", ["queued", "parked", "closed"])
async def test_session_state(engine, redis_client, tenant, state):
    await sales_support(engine, tenant, online=("alice",))
    await engine.arrive(tenant, T0, "s0", "sales")
    if state == "closed":
        await engine.release_session(tenant, T0, "s0")
        sid = "s0"
    else:
        sid = "s1"
        directed = "alice" if state == "parked" else None
        await engine.arrive(tenant, T0, sid, "sales", directed_agent=directed)
    detail = "closed" if state == "closed" else "queued"
    await assert_refused(redis_client, tenant, SessionState,
                         engine.release_session(tenant, T0 + 1, sid), detail)
