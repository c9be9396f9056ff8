"""The gateway protocol end to end: every session state transition, command and timer of
docs/protocol.md, through the real ``{T}:in`` / ``{T}:out`` streams of the test server.

Each test drives an in-process consumer on a fake clock (tests/gateway_helpers.py) and
asserts the exact events in order: ``cmd`` is the command id (absent for timer events),
``gateway`` is echoed on session events, ``ts`` is the daemon's (fake) clock. Timer tests
advance the clock to the due time, then far beyond, to show each timer fires once.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from gateway_helpers import ANY_INT, MIN, SEC, T0, Gateway, assert_events, open_gateway, strip

from dispatchd import keys

W = "web"
HOUR = 60 * MIN


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant) as g:
        yield g


async def phase(gw: Gateway, session: str) -> tuple[str, str | None, str | None]:
    """(routing state, phase, agent) of a session."""
    view = await gw.engine.session(gw.tenant, session)
    assert view is not None
    return view.state, view.phase, view.agent


async def load(gw: Gateway, agent: str) -> tuple[int, int]:
    view = await gw.engine.agent(gw.tenant, agent)
    assert view is not None
    return view.load, view.preclosed


def assigned(session: str, agent: str, cmd: str | None = None, *, group: str = "g",
             wait_ms: int = 0, via: str = "group", tier: int = 0) -> dict:
    e = {"type": "assigned", "session": session, "gateway": W, "agent": agent,
         "group": group, "tier": tier, "via": via, "wait_ms": wait_ms}
    if cmd is not None:
        e["cmd"] = cmd
    return e


def changed(session: str, frm: str, to: str, cmd: str | None = None, **extra: int) -> dict:
    e = {"type": "state_changed", "session": session, "gateway": W, "from": frm, "to": to,
         **extra}
    if cmd is not None:
        e["cmd"] = cmd
    return e


async def served_one(gw: Gateway, agent: str = "a") -> None:
    """``agent`` (capacity 1) takes s0 at T0, so the group has a service rate (ETA) and
    the agent is busy."""
    await gw.client.arrive("s0", "g", id="c0")
    assert_events(await gw.pump(), [assigned("s0", agent, "c0")])


# ------------------------------------------------------------------------- arrivals


async def test_arrive_assigned(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.client.arrive("s1", "g", customer="u1", id="c1")
    assert_events(await gw.pump(), [assigned("s1", "a", "c1")], ts=T0)
    assert await phase(gw, "s1") == ("assigned", "waiting_agent", "a")
    assert await load(gw, "a") == (1, 0)


async def test_arrive_queued_with_position_and_eta(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await served_one(gw)  # one customer served: 1/300 per second, so position 1 -> 300 s
    await gw.client.arrive("s2", "g", id="c2")
    await gw.client.arrive("s3", "g", id="c3")
    await gw.client.arrive("s4", "g", priority=5, id="c4")
    queued = {"type": "queued", "gateway": W, "group": "g", "reason": "arrival"}
    assert_events(await gw.pump(), [
        {**queued, "cmd": "c2", "session": "s2", "position": 1, "eta_ms": 300_000,
         "priority": 0, "virtual_arrival_ms": T0},
        {**queued, "cmd": "c3", "session": "s3", "position": 2, "eta_ms": 600_000,
         "priority": 0, "virtual_arrival_ms": T0},
        {**queued, "cmd": "c4", "session": "s4", "position": 1, "eta_ms": 300_000,
         "priority": 5, "virtual_arrival_ms": T0 - 5 * MIN},
    ], ts=T0)
    assert [q.session for q in await gw.engine.queue(gw.tenant, "g")] == ["s4", "s2", "s3"]
    assert await phase(gw, "s2") == ("queued", "queued", None)


async def test_eta_is_null_when_group_served_nobody(gw):
    await gw.group("g")
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.query_position("s1", id="c2")
    events = await gw.pump()
    assert [e["type"] for e in events] == ["queued", "position"]
    assert all("eta_ms" in e and e["eta_ms"] is None for e in events)


async def test_arrive_errors(gw):
    await gw.group("g")
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.arrive("s1", "g", id="c2")
    await gw.client.arrive("s2", "nope", id="c3")
    await gw.client.arrive("s3", "g", directed_agent="ghost", id="c4")
    events = await gw.pump()
    assert [(e["type"], e.get("cmd"), e.get("code")) for e in events] == [
        ("queued", "c1", None), ("error", "c2", "E_SESSION_EXISTS"),
        ("error", "c3", "E_GROUP_UNKNOWN"), ("error", "c4", "E_AGENT_UNKNOWN")]
    assert await gw.engine.session(gw.tenant, "s2") is None
    assert await gw.engine.session(gw.tenant, "s3") is None


# -------------------------------------------------------------- conversation states


async def test_agent_message_first_response_only_on_first_reply(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    c = gw.client
    await c.arrive("s1", "g", id="c1")
    await gw.pump()
    gw.clock.advance(7 * SEC)
    await c.agent_message("s1", "a", id="c2")
    assert_events(await gw.pump(), [
        changed("s1", "waiting_agent", "waiting_customer", "c2", first_response_ms=7 * SEC),
    ], ts=T0 + 7 * SEC)
    assert await phase(gw, "s1") == ("assigned", "waiting_customer", "a")
    gw.clock.advance(SEC)
    await c.customer_message("s1", id="c3")
    assert_events(await gw.pump(), [changed("s1", "waiting_customer", "waiting_agent", "c3")])
    assert await phase(gw, "s1") == ("assigned", "waiting_agent", "a")
    gw.clock.advance(SEC)
    await c.agent_message("s1", "a", id="c4")
    assert_events(await gw.pump(), [changed("s1", "waiting_agent", "waiting_customer", "c4")])
    # another reply while already waiting for the customer changes nothing
    await c.agent_message("s1", "a", id="c5")
    assert await gw.pump() == []
    assert await phase(gw, "s1") == ("assigned", "waiting_customer", "a")


async def test_agent_message_refused_while_queued_or_by_a_stranger(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.agent("z", ["g"])
    await served_one(gw)          # a takes s0
    await gw.client.arrive("s1", "g", id="c1")   # z takes s1
    await gw.agent("q", ["g"], online=False)
    await gw.pump()
    await gw.run({"type": "set_agent_status", "id": "z-away", "agent": "z", "status": "away"})
    await gw.client.arrive("s2", "g", id="c2")   # nobody free: queued
    await gw.pump()
    e1 = await gw.client.agent_message("s2", "a", id="m1")
    e2 = await gw.client.agent_message("s0", "z", id="m2")
    e3 = await gw.client.agent_message("nope", "a", id="m3")
    events = await gw.pump()
    assert [(e["cmd"], e["code"]) for e in events] == [
        (e1, "E_SESSION_STATE"), (e2, "E_NOT_SESSION_AGENT"), (e3, "E_SESSION_UNKNOWN")]
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "a")


async def test_customer_message_changes_nothing_while_queued_or_waiting_agent(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    await gw.client.customer_message("s0", id="m1")
    await gw.client.customer_message("s1", id="m2")
    assert await gw.pump() == []
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "a")
    assert await phase(gw, "s1") == ("queued", "queued", None)
    assert await gw.dead() == []


async def conversation(gw: Gateway, **group_cfg: int) -> None:
    """Group g (``group_cfg`` timers); s1 assigned to a at T0, a replied:
    waiting_customer."""
    await gw.group("g", **group_cfg)
    await gw.agent("a", ["g"])
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.agent_message("s1", "a", id="c2")
    await gw.pump()
    assert await phase(gw, "s1") == ("assigned", "waiting_customer", "a")


async def test_request_close_pending_confirm(gw):
    await conversation(gw)
    await gw.client.request_close("s1", "a", id="c3")
    assert_events(await gw.pump(), [changed("s1", "waiting_customer", "pending_confirm", "c3")])
    assert await phase(gw, "s1") == ("assigned", "pending_confirm", "a")


async def test_request_close_from_waiting_agent(gw):
    await conversation(gw)
    await gw.client.customer_message("s1", id="c3")
    await gw.client.request_close("s1", "a", id="c4")
    assert_events(await gw.pump(), [
        changed("s1", "waiting_customer", "waiting_agent", "c3"),
        changed("s1", "waiting_agent", "pending_confirm", "c4")])


async def test_confirm_close_resolved_closes_and_frees_agent(gw):
    await conversation(gw)
    await gw.client.arrive("s2", "g", id="c3")     # waits for a
    await gw.client.request_close("s1", "a", id="c4")
    await gw.pump()
    gw.clock.advance(9 * SEC)
    await gw.client.confirm_close("s1", resolved=True, id="c5")
    assert_events(await gw.pump(), [
        {"type": "closed", "cmd": "c5", "session": "s1", "gateway": W, "agent": "a",
         "reason": "resolved", "state": "closed"},
        assigned("s2", "a", "c5", wait_ms=9 * SEC),
    ], ts=T0 + 9 * SEC)
    assert await phase(gw, "s1") == ("closed", "closed", "a")
    assert await load(gw, "a") == (1, 0)


async def test_confirm_close_unresolved_back_to_waiting_agent(gw):
    await conversation(gw)
    await gw.client.request_close("s1", "a", id="c3")
    await gw.client.confirm_close("s1", resolved=False, id="c4")
    assert_events(await gw.pump(), [
        changed("s1", "waiting_customer", "pending_confirm", "c3"),
        changed("s1", "pending_confirm", "waiting_agent", "c4")])
    assert await phase(gw, "s1") == ("assigned", "waiting_agent", "a")


async def test_confirm_close_refused_when_not_pending(gw):
    await conversation(gw)
    eid = await gw.client.confirm_close("s1", resolved=True, id="c3")
    assert [(e["type"], e["cmd"], e["code"]) for e in await gw.pump()] == [
        ("error", eid, "E_SESSION_STATE")]
    assert await phase(gw, "s1") == ("assigned", "waiting_customer", "a")


# ------------------------------------------------------------------------- closing


def closed_queued(session: str, cmd: str | None, wait_ms: int, reason: str,
                  state: str = "closed") -> dict:
    e = {"type": "closed", "session": session, "gateway": W, "group": "g",
         "wait_ms": wait_ms, "reason": reason, "state": state}
    if cmd is not None:
        e["cmd"] = cmd
    return e


async def test_customer_leave_while_queued_is_abandoned(gw):
    await gw.group("g")
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    gw.clock.advance(5 * SEC)
    await gw.client.customer_leave("s1", id="c2")
    assert_events(await gw.pump(), [closed_queued("s1", "c2", 5 * SEC, "abandoned")],
                  ts=T0 + 5 * SEC)
    assert await phase(gw, "s1") == ("closed", "closed", None)
    assert await gw.engine.queue(gw.tenant, "g") == []


async def test_customer_leave_while_assigned_is_customer_left(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    await gw.client.customer_leave("s0", id="c2")
    assert_events(await gw.pump(), [
        {"type": "closed", "cmd": "c2", "session": "s0", "gateway": W, "agent": "a",
         "reason": "customer_left", "state": "closed"},
        assigned("s1", "a", "c2")])


async def test_close_session_default_reason(gw):
    await conversation(gw)
    await gw.client.close_session("s1", id="c3")
    assert_events(await gw.pump(), [
        {"type": "closed", "cmd": "c3", "session": "s1", "gateway": W, "agent": "a",
         "reason": "closed", "state": "closed"}])
    assert await load(gw, "a") == (0, 0)


async def test_close_session_callback_requested_with_note(gw):
    await conversation(gw)
    await gw.client.close_session("s1", reason="callback", note="call +1 555 0100", id="c3")
    assert_events(await gw.pump(), [
        {"type": "callback_requested", "cmd": "c3", "session": "s1", "gateway": W,
         "group": "g", "agent": "a", "note": "call +1 555 0100"},
        {"type": "closed", "cmd": "c3", "session": "s1", "gateway": W, "agent": "a",
         "reason": "callback", "state": "closed"}])


async def test_close_session_callback_while_queued(gw):
    await gw.group("g")
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    gw.clock.advance(2 * SEC)
    await gw.client.close_session("s1", reason="callback", note="later", id="c2")
    assert_events(await gw.pump(), [
        {"type": "callback_requested", "cmd": "c2", "session": "s1", "gateway": W,
         "group": "g", "note": "later"},
        closed_queued("s1", "c2", 2 * SEC, "callback")])


async def test_close_session_note_and_reason_limits_are_characters(gw):
    """2000 / 64 characters, whatever their UTF-8 length (4-byte emoji included)."""
    await gw.group("g")
    await gw.agent("a", ["g"], capacity=3)
    for i in (1, 2, 3):
        await gw.client.arrive(f"s{i}", "g", id=f"c{i}")
    await gw.pump()
    await gw.client.close_session("s1", reason="callback", note="回电" * 1000, id="c4")
    await gw.client.close_session("s2", reason="é" * 64, id="c5")
    await gw.client.close_session("s3", reason="🙂" * 64, note="🙂" * 2000, id="c6")
    events = await gw.pump()
    assert [e["type"] for e in events] == ["callback_requested", "closed", "closed", "closed"]
    assert events[0]["note"] == "回电" * 1000
    assert [e["reason"] for e in events[1:]] == ["callback", "é" * 64, "🙂" * 64]


# ------------------------------------------------------------------------ transfers


async def test_transfer_to_group_keeps_wait_and_frees_old_agent(gw):
    await gw.group("g")
    await gw.group("h")
    await gw.agent("a", ["g"])
    await gw.agent("x", ["h"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")   # queued behind s0
    await gw.pump()
    gw.clock.advance(4 * SEC)
    await gw.client.transfer("s0", to_group="h", id="c2")
    assert_events(await gw.pump(), [
        {"type": "transferred", "cmd": "c2", "session": "s0", "gateway": W,
         "from_group": "g", "to_group": "h", "from_agent": "a"},
        assigned("s0", "x", "c2", group="h", wait_ms=4 * SEC),
        assigned("s1", "a", "c2", wait_ms=4 * SEC),
    ], ts=T0 + 4 * SEC)
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "x")


async def test_transfer_to_agent(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.agent("b", ["g"])
    await served_one(gw)          # a (tie on readiness goes to the smaller id)
    await gw.client.transfer("s0", to_agent="b", id="c1")
    assert_events(await gw.pump(), [
        {"type": "transferred", "cmd": "c1", "session": "s0", "gateway": W,
         "from_group": "g", "to_group": "g", "from_agent": "a", "to_agent": "b"},
        assigned("s0", "b", "c1", via="transfer")])
    assert await load(gw, "a") == (0, 0)
    assert await load(gw, "b") == (1, 0)


async def test_transfer_errors(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.agent("off", ["g"], online=False)
    await served_one(gw)
    c = gw.client
    ids = [await c.transfer("s0", to_group="nope", id="t1"),
           await c.transfer("s0", to_agent="ghost", id="t2"),
           await c.transfer("s0", to_agent="off", id="t3"),
           await c.transfer("s0", id="t4"),
           await c.transfer("nope", to_group="g", id="t5")]
    events = await gw.pump()
    assert [(e["cmd"], e["code"]) for e in events] == list(zip(ids, [
        "E_GROUP_UNKNOWN", "E_AGENT_UNKNOWN", "E_AGENT_OFFLINE", "E_BAD_ARG",
        "E_SESSION_UNKNOWN"], strict=True))
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "a")


async def test_invite_agent_then_invited_may_reply_and_stranger_may_not(gw):
    await gw.group("g")
    await gw.group("experts")
    await gw.agent("a", ["g"])
    await gw.agent("e", ["experts"])
    await gw.agent("z", ["g"])
    await served_one(gw)
    gw.clock.advance(3 * SEC)
    await gw.client.invite_agent("s0", "e", id="c1")
    assert_events(await gw.pump(), [
        {"type": "agent_invited", "cmd": "c1", "session": "s0", "gateway": W, "agent": "e",
         "by": "a"}])
    await gw.client.agent_message("s0", "e", id="c2")
    assert_events(await gw.pump(), [
        changed("s0", "waiting_agent", "waiting_customer", "c2", first_response_ms=3 * SEC)])
    stranger = {"type": "agent_message", "id": "c3", "session": "s0", "agent": "z"}
    entry = await gw.send(stranger)
    assert_events(await gw.pump(), [
        {"type": "error", "cmd": "c3", "code": "E_NOT_SESSION_AGENT", "message": "z",
         "entry": entry}])
    (dead,) = await gw.dead()
    assert dead["entry"] == entry
    assert dead["error"] == "E_NOT_SESSION_AGENT z"
    assert json.loads(dead["json"]) == stranger
    # the invitation did not take e's capacity and did not make it the session's agent
    assert await load(gw, "e") == (0, 0)
    assert await phase(gw, "s0") == ("assigned", "waiting_customer", "a")


# ------------------------------------------------------------------------ agents


async def test_set_agent_status_online_takes_waiting_customer(gw):
    await gw.group("g")
    await gw.agent("a", ["g"], online=False)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    gw.clock.advance(6 * SEC)
    await gw.client.agent_status("a", "online", id="c2")
    assert_events(await gw.pump(), [
        {"type": "agent_status", "cmd": "c2", "agent": "a", "status": "online",
         "previous": "offline"},
        assigned("s1", "a", "c2", wait_ms=6 * SEC)])


async def test_set_agent_status_handover_to_agent_of_same_group(gw):
    await gw.group("g")
    await gw.group("h")
    await gw.agent("a", ["g", "h"], capacity=2)
    await gw.agent("b", ["g"])
    await gw.agent("x", ["h"], online=False)
    await served_one(gw)                          # a takes s0
    await gw.client.arrive("s1", "h", id="c1")    # a takes s1 too (x offline)
    await gw.pump()
    gw.clock.advance(2 * SEC)
    await gw.client.agent_status("a", "away", handover=True, id="c2")
    handover = {"type": "transferred", "cmd": "c2", "gateway": W, "from_agent": "a",
                "reason": "handover"}
    queued_h = {"type": "queued", "cmd": "c2", "session": "s1", "gateway": W, "group": "h",
                "position": 1, "priority": 0, "virtual_arrival_ms": T0, "reason": "transfer"}
    assert_events(await gw.pump(), [
        {"type": "agent_status", "cmd": "c2", "agent": "a", "status": "away",
         "previous": "online"},
        {**handover, "session": "s0", "from_group": "g", "to_group": "g"},
        assigned("s0", "b", "c2", wait_ms=2 * SEC),
        {**handover, "session": "s1", "from_group": "h", "to_group": "h"},
        queued_h | {"eta_ms": ANY_INT},
    ], ts=T0 + 2 * SEC)
    assert await load(gw, "a") == (0, 0)
    assert await phase(gw, "s1") == ("queued", "queued", None)


async def test_set_agent_status_errors(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    e1 = await gw.client.agent_status("ghost", "online", id="c1")
    e2 = await gw.client.agent_status("a", "online", handover=True, id="c2")
    events = await gw.pump()
    assert [(e["cmd"], e["code"]) for e in events] == [
        (e1, "E_AGENT_UNKNOWN"), (e2, "E_BAD_ARG")]


async def test_agent_ready(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    await gw.client.agent_ready("a", id="c2")
    assert await gw.pump() == []                  # still busy: takes nobody
    # The gateway learns out of band that a has room for one more (white box: the
    # capacity field is raised in place, without configure_agent, which would fill).
    await gw.redis.hset(keys.key("agent", gw.tenant, "a"), "cap", 2)
    gw.clock.advance(SEC)
    await gw.client.agent_ready("a", id="c3")
    assert_events(await gw.pump(), [assigned("s1", "a", "c3", wait_ms=SEC)])
    eid = await gw.client.agent_ready("ghost", id="c4")
    assert [(e["cmd"], e["code"]) for e in await gw.pump()] == [(eid, "E_AGENT_UNKNOWN")]


async def test_query_position(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.arrive("s2", "g", id="c2")
    await gw.pump()
    gw.clock.advance(5 * SEC)
    await gw.client.query_position("s2", id="c3")
    assert_events(await gw.pump(), [
        {"type": "position", "cmd": "c3", "session": "s2", "gateway": W, "group": "g",
         "position": 2, "eta_ms": ANY_INT, "wait_ms": 5 * SEC}], ts=T0 + 5 * SEC)
    eid = await gw.client.query_position("s0", id="c4")
    assert [(e["cmd"], e["code"]) for e in await gw.pump()] == [(eid, "E_SESSION_STATE")]


# ------------------------------------------------------------------------- timers


async def advance(gw: Gateway, ms: int) -> list[dict]:
    gw.clock.advance(ms)
    return await gw.pump()


def no_cmd(events: list[dict]) -> None:
    assert all("cmd" not in e for e in events), events


async def test_timer_queue_wait_alert_once(gw):
    await gw.group("g", queue_warning_ms=5 * SEC)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    assert await advance(gw, 5 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "alert", "kind": "queue_wait", "session": "s1", "gateway": W, "group": "g",
         "waited_ms": 5 * SEC}], ts=T0 + 5 * SEC)
    assert await advance(gw, 10 * HOUR) == []
    assert await phase(gw, "s1") == ("queued", "queued", None)


async def test_timer_queue_timeout_closes_as_system_closed(gw):
    await gw.group("g", queue_timeout_ms=8 * SEC)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    assert await advance(gw, 8 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [closed_queued("s1", None, 8 * SEC, "queue_timeout",
                                         "system_closed")], ts=T0 + 8 * SEC)
    assert await phase(gw, "s1") == ("closed", "system_closed", None)
    assert await advance(gw, 10 * HOUR) == []


async def test_timer_position_updates_repeat_while_queued(gw):
    await gw.group("g", position_update_ms=3 * SEC)
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    position = {"type": "position", "session": "s1", "gateway": W, "group": "g",
                "position": 1, "eta_ms": ANY_INT}
    for n in (1, 2, 3):
        events = await advance(gw, 3 * SEC)
        no_cmd(events)
        assert_events(events, [{**position, "wait_ms": n * 3 * SEC}], ts=T0 + n * 3 * SEC)
    assert await advance(gw, 3 * SEC - 1) == []
    await gw.client.close_session("s0", id="c2")    # s1 gets a; updates stop
    assert [e["type"] for e in await gw.pump()] == ["closed", "assigned"]
    assert await advance(gw, 10 * HOUR) == []


async def test_timer_reply_sla_alert_once_per_entry_into_waiting_agent(gw):
    await gw.group("g", reply_sla_ms=10 * SEC)
    await gw.agent("a", ["g"])
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    assert await advance(gw, 10 * SEC - 1) == []
    sla = {"type": "alert", "kind": "reply_sla", "session": "s1", "gateway": W, "group": "g",
           "agent": "a", "waited_ms": 10 * SEC}
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [sla], ts=T0 + 10 * SEC)
    assert await advance(gw, HOUR) == []
    # a new entry into waiting_agent starts it again, once
    await gw.client.agent_message("s1", "a", id="c2")
    await gw.client.customer_message("s1", id="c3")
    assert [e["type"] for e in await gw.pump()] == ["state_changed", "state_changed"]
    assert_events(await advance(gw, 10 * SEC), [sla])
    assert await advance(gw, HOUR) == []


async def test_timer_reply_reassign_transfers_back_to_group(gw):
    await gw.group("g", reply_reassign_ms=20 * SEC)
    await gw.agent("a", ["g"])
    gw.clock.advance(SEC)
    await gw.agent("b", ["g"])                     # b idle since T0+1s, a since T0
    gw.clock.advance(SEC)
    await gw.client.arrive("s1", "g", id="c1")     # a ranks first
    assert [e.get("agent") for e in await gw.pump()] == ["a"]
    assert await advance(gw, 20 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "transferred", "session": "s1", "gateway": W, "from_group": "g",
         "to_group": "g", "from_agent": "a", "reason": "reply_timeout"},
        assigned("s1", "b", wait_ms=20 * SEC)], ts=T0 + 22 * SEC)
    await gw.client.agent_message("s1", "b", id="c2")   # b replies in time
    assert [e["type"] for e in await gw.pump()] == ["state_changed"]
    assert await advance(gw, 10 * HOUR) == []
    assert await load(gw, "a") == (0, 0)
    assert await load(gw, "b") == (1, 0)


async def test_timer_silence_reminder_preclose_then_message_reactivates(gw):
    await gw.group("g", silence_remind_ms=20 * SEC, silence_preclose_ms=30 * SEC)
    await gw.agent("a", ["g"])
    await served_one(gw)
    await gw.client.agent_message("s0", "a", id="c1")
    await gw.client.arrive("s1", "g", id="c2")       # waits for a
    await gw.pump()
    assert await advance(gw, 20 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "alert", "kind": "customer_silence", "session": "s0", "gateway": W,
         "group": "g", "agent": "a", "waited_ms": 20 * SEC}], ts=T0 + 20 * SEC)
    assert await advance(gw, 10 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "preclosed", "session": "s0", "gateway": W, "agent": "a"},
        assigned("s1", "a", wait_ms=30 * SEC)], ts=T0 + 30 * SEC)   # capacity freed
    assert await phase(gw, "s0") == ("preclosed", "waiting_customer", "a")
    assert await load(gw, "a") == (1, 1)
    assert await advance(gw, 10 * HOUR) == []        # silence_close is off
    await gw.client.customer_message("s0", id="c3")
    assert_events(await gw.pump(), [
        {"type": "reactivated", "cmd": "c3", "session": "s0", "gateway": W, "agent": "a",
         "over_capacity": True},
        changed("s0", "waiting_customer", "waiting_agent", "c3")])
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "a")
    assert await load(gw, "a") == (2, 0)


async def test_timer_silence_close(gw):
    await conversation(gw, silence_close_ms=50 * SEC)
    assert await advance(gw, 50 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "closed", "session": "s1", "gateway": W, "agent": "a",
         "reason": "customer_silence", "state": "system_closed"}], ts=T0 + 50 * SEC)
    assert await phase(gw, "s1") == ("closed", "system_closed", "a")
    assert await load(gw, "a") == (0, 0)
    assert await advance(gw, 10 * HOUR) == []


async def test_timer_silence_chain_in_due_order(gw):
    await conversation(gw, silence_remind_ms=20 * SEC, silence_preclose_ms=30 * SEC,
                       silence_close_ms=100 * SEC)
    events = await advance(gw, HOUR)     # all three due in one tick: in due order
    no_cmd(events)
    assert [e["type"] for e in events] == ["alert", "preclosed", "closed"]
    assert strip(events[2]) == {"type": "closed", "session": "s1", "gateway": W,
                                "agent": "a", "reason": "customer_silence",
                                "state": "system_closed"}
    assert await load(gw, "a") == (0, 0)
    assert await advance(gw, 10 * HOUR) == []


async def test_timer_confirm_close_timeout(gw):
    await conversation(gw, confirm_close_ms=50 * SEC)
    await gw.client.request_close("s1", "a", id="c3")
    await gw.pump()
    assert await advance(gw, 50 * SEC - 1) == []
    events = await advance(gw, 1)
    no_cmd(events)
    assert_events(events, [
        {"type": "closed", "session": "s1", "gateway": W, "agent": "a",
         "reason": "confirm_timeout", "state": "system_closed"}], ts=T0 + 50 * SEC)
    assert await phase(gw, "s1") == ("closed", "system_closed", "a")
    assert await advance(gw, 10 * HOUR) == []


@pytest.mark.parametrize("released", [True, False], ids=["released", "abandoned"])
async def test_timers_survive_a_consumer_restart(engine, redis_client, tenant, released):
    """Timers live in Redis: a new consumer instance fires the one scheduled before.
    Without release() the new instance waits for the old lease to run out."""
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 200}) as gw:
        await gw.group("g", reply_sla_ms=10 * SEC)
        await gw.agent("a", ["g"])
        await gw.client.arrive("s1", "g", id="c1")
        await gw.pump()
        old = gw.consumer
        if released:
            await old.release()
        gw.new_consumer(name="restarted")
        assert gw.consumer is not old
        events = await advance(gw, 10 * SEC)
        assert_events(events, [
            {"type": "alert", "kind": "reply_sla", "session": "s1", "gateway": W,
             "group": "g", "agent": "a", "waited_ms": 10 * SEC}])
        assert await advance(gw, HOUR) == []


# ------------------------------------------------------------ idempotency, encoding


def duplicate(cmd: str, entry: str) -> dict[str, Any]:
    return {"type": "duplicate", "cmd": cmd, "entry": entry}


async def test_duplicate_command_id_produces_events_once(gw):
    """A repeat of an applied command id changes nothing; it gets one `duplicate` event
    (its id and inbound entry), within a batch and across batches."""
    await gw.group("g")
    await gw.agent("a", ["g"], capacity=5)
    cmd = {"type": "arrive", "id": "dup", "session": "s1", "group": "g", "gateway": "web"}
    await gw.send(cmd)
    again = await gw.send(cmd)                               # same batch
    assert_events(await gw.pump(), [assigned("s1", "a", "dup"), duplicate("dup", again)])
    await gw.client.arrive("s1", "g", id="dup")             # a later batch
    await gw.client.arrive("s9", "g", id="dup")             # same id, other payload
    await gw.client.close_session("s1", id="close")
    await gw.client.close_session("s1", id="close")
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("duplicate", "dup"), ("duplicate", "dup"), ("closed", "close"), ("duplicate", "close")]
    assert len({e["entry"] for e in events if e["type"] == "duplicate"}) == 3
    assert await gw.engine.session(gw.tenant, "s9") is None
    assert await gw.dead() == []
    assert await gw.inbound_state() == (0, 0)


async def test_refused_command_can_be_retried_with_the_same_id(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.client.agent_message("s1", "a", id="m1")     # raced ahead of the arrival
    assert [e["code"] for e in await gw.pump()] == ["E_SESSION_UNKNOWN"]
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.agent_message("s1", "a", id="m1")     # the retry
    assert [e["type"] for e in await gw.pump()] == ["assigned", "state_changed"]
    await gw.client.agent_message("s1", "a", id="m1")     # now it was applied: ignored
    assert [(e["type"], e["cmd"]) for e in await gw.pump()] == [("duplicate", "m1")]


async def test_msgpack_commands(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    c = gw.mp_client
    await c.arrive("s1", "g", customer="u1", id="m1")
    await c.agent_message("s1", "a", id="m2")
    await c.customer_message("s1", id="m3")
    await c.request_close("s1", "a", id="m4")
    await c.confirm_close("s1", resolved=True, id="m5")
    await gw.send({"type": "query_position", "id": "m6", "session": "s1",
                   "x-future": {"nested": [1, 2]}}, msgpack=True)
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("assigned", "m1"), ("state_changed", "m2"), ("state_changed", "m3"),
        ("state_changed", "m4"), ("closed", "m5"), ("error", "m6")]
    assert events[-1]["code"] == "E_SESSION_STATE"   # closed: the field itself was fine
    (dead,) = await gw.dead()
    assert msgspec.msgpack.decode(dead["msgpack"])["x-future"] == {"nested": [1, 2]}
    assert all(e.get("gateway") == W for e in events[:-1])


async def test_unknown_fields_are_accepted(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.send({"type": "arrive", "id": "c1", "session": "s1", "group": "g",
                   "gateway": W, "channel": "wechat", "meta": {"utm": ["a", 1, None]},
                   "v": 2})
    assert_events(await gw.pump(), [assigned("s1", "a", "c1")])


# ------------------------------------------------------------- partial batch failure


async def test_eta_of_a_long_idle_group_does_not_break_the_batch(
    engine, redis_client, tenant, caplog
):
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 150}) as gw:
        await gw.group("g")
        await gw.agent("a", ["g"])
        await served_one(gw)
        await gw.client.close_session("s0", id="c1")
        await gw.client.agent_status("a", "away", id="c2")
        await gw.pump()
        gw.clock.advance(215_000_000)   # ~60 h: the decayed rate is a denormal double
        await gw.client.arrive("s1", "g", id="c3")
        await gw.client.arrive("s2", "g", id="c4")
        events = await gw.pump()
        assert [(e["type"], e.get("cmd")) for e in events] == [("queued", "c3"),
                                                              ("queued", "c4")]
        assert [e["eta_ms"] for e in events] == [None, None]
        assert "batch failed" not in caplog.text


async def test_restart_picks_up_where_the_old_consumer_stopped(engine, redis_client, tenant):
    """Entries read by a consumer that died before applying them are applied by the next
    one (after the lease), once, in stream order."""
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 150}) as gw:
        await gw.group("g")
        await gw.agent("a", ["g"], capacity=10)
        for i in range(5):
            await gw.client.arrive(f"s{i}", "g", id=f"c{i}")
        # the old consumer reads the entries (they become pending) and "dies"
        rows = await gw.redis.xreadgroup("dispatchd", gw.consumer.name, {gw.inbound: ">"})
        assert len(rows[0][1]) == 5
        assert await gw.inbound_state() == (5, 5)
        gw.new_consumer(name="second")
        events = await gw.pump()
        assert [(e["type"], e["cmd"]) for e in events] == [("assigned", f"c{i}")
                                                          for i in range(5)]
        assert await gw.pump() == []


# ------------------------------------------------------------------------ more paths


async def test_customer_message_while_pending_confirm_reopens_and_cancels_auto_close(gw):
    await conversation(gw, confirm_close_ms=50 * SEC)
    await gw.client.request_close("s1", "a", id="c3")
    await gw.pump()
    gw.clock.advance(10 * SEC)
    await gw.client.customer_message("s1", id="c4")
    assert_events(await gw.pump(), [changed("s1", "pending_confirm", "waiting_agent", "c4")])
    assert await advance(gw, 10 * HOUR) == []
    assert await phase(gw, "s1") == ("assigned", "waiting_agent", "a")


async def test_message_after_preclose_with_agent_offline_routes_again(gw):
    await gw.group("g", silence_preclose_ms=30 * SEC)
    await gw.agent("a", ["g"])
    await gw.agent("b", ["g"], online=False)
    await served_one(gw)
    await gw.client.agent_message("s0", "a", id="c1")
    await gw.pump()
    assert [e["type"] for e in await advance(gw, 30 * SEC)] == ["preclosed"]
    await gw.client.agent_status("a", "offline", id="c2")
    await gw.client.agent_status("b", "online", id="c3")
    await gw.client.customer_message("s0", id="c4")
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("agent_status", "c2"), ("agent_status", "c3"), ("assigned", "c4")]
    assert strip(events[-1]) == assigned("s0", "b", "c4", wait_ms=30 * SEC)
    assert await phase(gw, "s0") == ("assigned", "waiting_agent", "b")
    assert await load(gw, "a") == (0, 0)


async def test_transfer_queued_session_to_group(gw):
    await gw.group("g")
    await gw.group("h")
    await gw.agent("x", ["h"])
    await gw.client.arrive("s1", "g", id="c1")
    await gw.pump()
    gw.clock.advance(7 * SEC)
    await gw.client.transfer("s1", to_group="h", id="c2")
    assert_events(await gw.pump(), [
        {"type": "transferred", "cmd": "c2", "session": "s1", "gateway": W,
         "from_group": "g", "to_group": "h"},
        assigned("s1", "x", "c2", group="h", wait_ms=7 * SEC)])


async def test_session_opened_without_gateway_has_no_gateway_field(gw):
    await gw.group("g")
    await gw.agent("a", ["g"])
    await gw.send({"type": "arrive", "id": "c1", "session": "s1", "group": "g"})
    await gw.send({"type": "agent_message", "id": "c2", "session": "s1", "agent": "a"})
    events = await gw.pump()
    assert [e["type"] for e in events] == ["assigned", "state_changed"]
    assert all("gateway" not in e for e in events)


async def test_dedupe_window_is_24_hours(gw):
    await gw.group("g")
    await gw.client.arrive("s1", "g", id="same")
    await gw.pump()
    gw.clock.advance(23 * HOUR)
    await gw.client.arrive("s2", "g", id="same")
    assert [(e["type"], e["cmd"]) for e in await gw.pump()] == [("duplicate", "same")]
    # the window runs from the application, not from the last repeat
    gw.clock.advance(HOUR)
    await gw.client.arrive("s3", "g", id="same")     # exactly 24 h: still inside
    assert [(e["type"], e["cmd"]) for e in await gw.pump()] == [("duplicate", "same")]
    gw.clock.advance(1)
    await gw.client.arrive("s3", "g", id="same")
    assert [(e["type"], e["session"]) for e in await gw.pump()] == [("queued", "s3")]
    assert await gw.engine.session(gw.tenant, "s2") is None


async def test_commands_of_an_unserved_tenant_wait_until_it_is_served(
    engine, redis_client, tenant
):
    other = tenant + "-new"
    opts = {"tenants_refresh_ms": 1}
    async with open_gateway(engine, redis_client, tenant, options=opts) as gw:
        late = Gateway(engine, redis_client, other, clock=gw.clock)
        try:
            await engine.configure_group(other, T0, "g")
            await late.client.arrive("s1", "g", id="c1")
            for _ in range(5):     # each step may block ~100 ms in XREADGROUP
                await gw.consumer.step()
            assert other not in gw.consumer.tenants
            assert await late.inbound_state() == (1, 0)
            await redis_client.sadd(keys.TENANTS_KEY, other)   # the operator adds it
            late.consumer = gw.consumer
            events = await late.pump()
            assert [(e["type"], e["cmd"]) for e in events] == [("queued", "c1")]
        finally:
            await redis_client.srem(keys.TENANTS_KEY, other)
