"""Tickets over the gateway streams (docs/protocol.md "Tickets"): a system creates and
follows tickets, agents work on them, through the real ``{T}:in`` / ``{T}:out`` /
``{T}:dead`` streams of the test server.

Each test drives an in-process consumer on a fake clock (tests/gateway_helpers.py) and
asserts the exact events in order: ``cmd`` is the command id (absent for the events of
ticket timers, which fire in the consumer's tick), ``ts`` the daemon's (fake) clock, and
the ticket's type travels as ``ticket_type`` (``type`` is the event's name).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from gateway_helpers import MIN, SEC, T0, Gateway, assert_events, open_gateway, strip, types

from dispatchd import keys, tickets
from dispatchd.messages import ConfigureTicketType, TicketField

HOUR = 60 * MIN
#: The ticket type of these tests: a refund, first response due in 1 h, resolution in 1 day.
REFUND = ConfigureTicketType(
    type="refund", name="Refund", first_response_ms=HOUR, resolution_ms=24 * HOUR,
    fields=[TicketField(name="order_no", type="string", required=True, max_length=20),
            TicketField(name="amount", type="number"),
            TicketField(name="reason", type="enum", values=["late", "broken"])])
FIELDS = {"order_no": "A-1001", "amount": 12.5, "reason": "late"}
#: A create_ticket as another system writes it by hand (only the fields it needs).
CREATE = {"type": "create_ticket", "id": "c1", "ticket": "t1", "ticket_type": "refund",
          "group": "back", "by": "shop", "fields": FIELDS}


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant) as g:
        await engine.apply(tenant, g.clock.now, REFUND)
        yield g


async def back_office(gw: Gateway, *agents: str) -> None:
    """Groups ``back`` and ``legal`` (tickets reassigned only where a test says so);
    ``agents`` online members of ``back``, ``lea`` an online member of ``legal``."""
    await gw.group("back", ticket_reassign_ms=0)
    await gw.group("legal", ticket_reassign_ms=0)
    for name in agents:
        await gw.agent(name, ["back"])
    await gw.agent("lea", ["legal"])


def assigned(ticket: str, agent: str, cmd: str | None, *, group: str = "back",
             reason: str = "created", via: str = "balanced", wait_ms: int = 0,
             **extra: Any) -> dict[str, Any]:
    e = {"type": "ticket_assigned", "ticket": ticket, "group": group, "agent": agent,
         "via": via, "reason": reason, "wait_ms": wait_ms, **extra}
    if cmd is not None:
        e["cmd"] = cmd
    return e


def error(events: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    """(cmd, code, message) of each event, which must all be errors."""
    assert types(events) == ["error"] * len(events), events
    return [(e.get("cmd"), e["code"], e["message"]) for e in events]


async def ticket_state(gw: Gateway, ticket: str) -> tuple[str, str, str | None] | None:
    view = await tickets.get_ticket(gw.redis, gw.tenant, ticket)
    return None if view is None else (view.state, view.group, view.agent)


# -------------------------------------------------------------------- a ticket's life


async def test_create_and_follow_a_ticket_to_its_close(gw):
    await back_office(gw, "ann")
    await gw.client.create_ticket("t1", "refund", "back", by="shop", fields=FIELDS,
                                  title="Refund A-1001", priority=5, order_id="o1", id="c1")
    assert_events(await gw.pump(), [
        {"type": "ticket_created", "cmd": "c1", "ticket": "t1", "ticket_type": "refund",
         "group": "back", "by": "shop", "priority": 5, "order_id": "o1",
         "title": "Refund A-1001"},
        assigned("t1", "ann", "c1"),
    ], ts=T0)

    gw.clock.advance(5 * MIN)
    await gw.client.respond_ticket("t1", "ann", note="refund started", id="c2")
    await gw.client.respond_ticket("t1", "ann", id="c3")
    responded = {"type": "ticket_responded", "ticket": "t1", "group": "back", "agent": "ann"}
    assert_events(await gw.pump(), [
        {**responded, "cmd": "c2", "note": "refund started", "first_response_ms": 5 * MIN},
        {**responded, "cmd": "c3"},               # no note, not the first response
    ], ts=T0 + 5 * MIN)
    assert await ticket_state(gw, "t1") == ("in_progress", "back", "ann")

    gw.clock.advance(10 * MIN)
    await gw.client.forward_ticket("t1", "ann", "legal", note="needs a lawyer", id="c4")
    assert_events(await gw.pump(), [
        {"type": "ticket_forwarded", "cmd": "c4", "ticket": "t1", "from_group": "back",
         "to_group": "legal", "by": "ann", "from_agent": "ann", "note": "needs a lawyer",
         "hop": 1, "spent_ms": 15 * MIN, "loop": False},
        assigned("t1", "lea", "c4", group="legal", reason="forwarded"),
    ], ts=T0 + 15 * MIN)

    gw.clock.advance(HOUR)
    await gw.client.close_ticket("t1", "lea", "refunded", id="c5")
    assert_events(await gw.pump(), [
        {"type": "ticket_closed", "cmd": "c5", "ticket": "t1", "group": "legal",
         "ticket_type": "refund", "agent": "lea", "by": "lea", "resolution": "refunded",
         "resolution_ms": 75 * MIN, "hops": 1},
    ], ts=T0 + 75 * MIN)
    assert await ticket_state(gw, "t1") == ("closed", "legal", "lea")
    # the ticket's history is its events exactly as published
    history = await tickets.get_history(gw.redis, gw.tenant, "t1")
    published = [e for e in await gw.all_events() if e.get("ticket") == "t1"]
    assert history == [{k: v for k, v in e.items() if k != "_entry"} for e in published]
    assert types(history) == ["ticket_created", "ticket_assigned", "ticket_responded",
                              "ticket_responded", "ticket_forwarded", "ticket_assigned",
                              "ticket_closed"]
    assert await gw.dead() == []


async def test_msgpack_and_hand_written_json_commands(gw):
    await back_office(gw, "ann")
    await gw.send(CREATE)
    await gw.mp_client.create_ticket("t2", "refund", "back", fields=FIELDS, id="c2")
    await gw.send({"type": "respond_ticket", "id": "c3", "ticket": "t2", "agent": "ann"},
                  msgpack=True)
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("ticket_created", "c1"), ("ticket_assigned", "c1"),
        ("ticket_created", "c2"), ("ticket_assigned", "c2"), ("ticket_responded", "c3")]
    assert events[2]["by"] == "web"              # the client's default: its gateway id
    assert "title" not in events[0] and "order_id" not in events[0]


async def test_query_ticket_status(gw):
    await back_office(gw, "ann")
    await gw.send(CREATE | {"priority": -3, "title": "late parcel", "order_id": "o9"})
    await gw.pump()
    gw.clock.advance(2 * MIN)
    await gw.client.query_ticket("t1", id="q1")
    await gw.mp_client.query_ticket("t1", id="q2")
    status = {"type": "ticket_status", "ticket": "t1", "ticket_type": "refund",
              "state": "assigned", "group": "back", "agent": "ann", "order_id": "o9",
              "priority": -3, "created_ms": T0, "created_by": "shop", "title": "late parcel",
              "hops": 0, "first_response_due_ms": T0 + HOUR,
              "resolution_due_ms": T0 + 24 * HOUR, "overdue": False, "fields": FIELDS}
    assert_events(await gw.pump(), [status | {"cmd": "q1"}, status | {"cmd": "q2"}],
                  ts=T0 + 2 * MIN)

    await gw.client.respond_ticket("t1", "ann", id="r1")
    await gw.client.close_ticket("t1", "ann", "done", id="r2")
    await gw.client.query_ticket("t1", id="q3")
    await gw.client.query_ticket("t404", id="q4")
    events = await gw.pump()
    assert strip(events[2]) == status | {"cmd": "q3", "state": "closed",
                                         "first_response_ms": 2 * MIN}
    assert error(events[3:]) == [("q4", "E_TICKET_UNKNOWN", "t404")]
    # a status answer is not part of the ticket's history
    history = await tickets.get_history(gw.redis, gw.tenant, "t1")
    assert "ticket_status" not in types(history)


# ------------------------------------------------------------------ refused commands


MISSING: list[tuple[dict[str, Any], str]] = [
    (CREATE, "ticket"), (CREATE, "ticket_type"), (CREATE, "group"), (CREATE, "by"),
    ({"type": "respond_ticket", "id": "c1", "ticket": "t1", "agent": "ann"}, "ticket"),
    ({"type": "respond_ticket", "id": "c1", "ticket": "t1", "agent": "ann"}, "agent"),
    ({"type": "forward_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "to_group": "legal"}, "to_group"),
    ({"type": "forward_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "to_group": "legal"}, "agent"),
    ({"type": "close_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "resolution": "ok"}, "resolution"),
    ({"type": "close_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "resolution": "ok"}, "agent"),
    ({"type": "query_ticket", "id": "c1", "ticket": "t1"}, "ticket"),
]


async def test_a_missing_required_field_is_an_error_and_a_dead_letter(gw):
    await back_office(gw, "ann")
    sent = []
    for n, (doc, field) in enumerate(MISSING):
        bad = {k: v for k, v in doc.items() if k != field} | {"id": f"m{n}"}
        sent.append((await gw.send(bad), bad, field))
    events = await gw.pump()
    assert len(events) == len(MISSING)
    dead = {d["entry"]: d for d in await gw.dead()}
    for event, (entry, bad, field) in zip(events, sent, strict=True):
        assert strip(event) == {"type": "error", "cmd": bad["id"], "code": "E_INVALID",
                                "entry": entry,
                                "message": f"Object missing required field `{field}`"}
        assert dead[entry]["error"] == f"E_INVALID {event['message']}"
        assert json.loads(dead[entry]["json"]) == bad
    assert await ticket_state(gw, "t1") is None


INVALID: list[tuple[dict[str, Any], str]] = [
    (CREATE | {"ticket": "t 1"}, "$.ticket"),
    (CREATE | {"ticket_type": 7}, "$.ticket_type"),
    (CREATE | {"group": "b" * 65}, "$.group"),
    (CREATE | {"by": ""}, "$.by"),
    (CREATE | {"by": "é" * 129}, "$.by"),                      # 258 bytes
    (CREATE | {"title": "t" * 501}, "$.title"),
    (CREATE | {"title": None}, "$.title"),
    (CREATE | {"priority": 1001}, "$.priority"),
    (CREATE | {"priority": 1.5}, "$.priority"),
    (CREATE | {"order_id": "o/1"}, "$.order_id"),
    (CREATE | {"order_owner": 3}, "$.order_owner"),
    (CREATE | {"fields": ["order_no"]}, "$.fields"),
    (CREATE | {"fields": {"order_no": None}}, "$.fields"),
    (CREATE | {"fields": {"order_no": {"n": 1}}}, "$.fields"),
    (CREATE | {"fields": {"bad name": 1}}, "$.fields"),
    (CREATE | {"fields": {f"f{i}": i for i in range(101)}}, "$.fields"),
    (CREATE | {"fields": {"n": 2**63}}, "$.fields"),
    ({"type": "respond_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "note": "n" * 4001}, "$.note"),
    ({"type": "respond_ticket", "id": "c1", "ticket": "t1", "agent": ["ann"]}, "$.agent"),
    ({"type": "forward_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "to_group": "legal", "note": "回" * 1334}, "$.note"),  # 4002 bytes
    ({"type": "close_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "resolution": ""}, "$.resolution"),
    ({"type": "close_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
      "resolution": "r" * 4001}, "$.resolution"),
    ({"type": "query_ticket", "id": "c1", "ticket": 1}, "$.ticket"),
]


@pytest.mark.parametrize("use_msgpack", [False, True], ids=["json", "msgpack"])
async def test_malformed_fields_are_invalid(gw, use_msgpack):
    await back_office(gw, "ann")
    entries = [await gw.send(doc | {"id": f"i{n}"}, msgpack=use_msgpack)
               for n, (doc, _) in enumerate(INVALID)]
    events = await gw.pump()
    assert [(e["cmd"], e["code"], e["entry"]) for e in events] == [
        (f"i{n}", "E_INVALID", entry) for n, entry in enumerate(entries)]
    for event, (_, path) in zip(events, INVALID, strict=True):
        assert path in event["message"], (path, event["message"])
    assert [d["entry"] for d in await gw.dead()] == entries
    assert await ticket_state(gw, "t1") is None


async def test_the_largest_valid_values_are_applied(gw):
    """The protocol's limits are the scripts': what it lets through is applied."""
    await back_office(gw, "ann")
    wide = ConfigureTicketType(type="wide", fields=[
        TicketField(name=f"f{i}", type="string", max_length=2) for i in range(100)])
    await gw.engine.apply(gw.tenant, gw.clock.now, wide)
    await gw.send(CREATE | {"ticket": "t" * 64, "by": "é" * 128, "title": "t" * 500,
                            "priority": 1000, "order_id": "o" * 64, "order_owner": "ann"})
    await gw.send(CREATE | {"id": "c2", "ticket": "t2", "ticket_type": "wide",
                            "fields": {f"f{i}": "ab" for i in range(100)}, "priority": -1000})
    await gw.send({"type": "respond_ticket", "id": "c3", "ticket": "t" * 64, "agent": "ann",
                   "note": "é" * 2000})
    await gw.send({"type": "forward_ticket", "id": "c4", "ticket": "t" * 64, "agent": "ann",
                   "to_group": "legal", "note": "回" * 1333})
    await gw.send({"type": "close_ticket", "id": "c5", "ticket": "t" * 64, "agent": "lea",
                   "resolution": "ü" * 2000})
    events = await gw.pump()
    assert "error" not in types(events), [e for e in events if e["type"] == "error"]
    assert types(events)[-1] == "ticket_closed" and events[-1]["resolution"] == "ü" * 2000
    assert events[0]["by"] == "é" * 128


async def test_script_errors_come_back_as_error_events(gw):
    await back_office(gw, "ann")
    await gw.send(CREATE)
    await gw.pump()
    bad = [
        CREATE | {"id": "e1"},                                       # same ticket id
        CREATE | {"id": "e2", "ticket": "t2", "ticket_type": "nope"},
        CREATE | {"id": "e3", "ticket": "t2", "group": "nope"},
        CREATE | {"id": "e4", "ticket": "t2", "fields": {"amount": 1}},
        CREATE | {"id": "e5", "ticket": "t2", "fields": FIELDS | {"amount": "1"}},
        CREATE | {"id": "e6", "ticket": "t2", "fields": FIELDS | {"colour": "red"}},
        CREATE | {"id": "e7", "ticket": "t2", "order_owner": "ann"},
        {"type": "respond_ticket", "id": "e8", "ticket": "t404", "agent": "ann"},
        {"type": "forward_ticket", "id": "e9", "ticket": "t1", "agent": "ann",
         "to_group": "back"},
        {"type": "forward_ticket", "id": "e10", "ticket": "t1", "agent": "ann",
         "to_group": "nope"},
    ]
    for doc in bad:
        await gw.send(doc)
    assert error(await gw.pump()) == [
        ("e1", "E_TICKET_EXISTS", "t1"),
        ("e2", "E_TICKET_TYPE_UNKNOWN", "nope"),
        ("e3", "E_GROUP_UNKNOWN", "nope"),
        ("e4", "E_TICKET_FIELD", "missing required field order_no"),
        ("e5", "E_TICKET_FIELD", "amount: expected a number"),
        ("e6", "E_TICKET_FIELD", "not in the template: colour"),
        ("e7", "E_BAD_ARG", "order_owner needs order_id"),
        ("e8", "E_TICKET_UNKNOWN", "t404"),
        ("e9", "E_SAME_GROUP", "back"),
        ("e10", "E_GROUP_UNKNOWN", "nope"),
    ]
    assert len(await gw.dead()) == len(bad)
    await gw.client.close_ticket("t1", "ann", "done", id="c2")
    await gw.client.respond_ticket("t1", "ann", id="e11")
    await gw.client.close_ticket("t1", "ann", "again", id="e12")
    events = await gw.pump()
    assert error(events[1:]) == [("e11", "E_TICKET_STATE", "closed"),
                                 ("e12", "E_TICKET_STATE", "closed")]
    assert await ticket_state(gw, "t2") is None


async def test_only_the_handler_may_respond_forward_or_close(gw):
    await back_office(gw, "ann", "bob")
    await gw.send(CREATE)                                   # to ann (least loaded, by id)
    await gw.send(CREATE | {"id": "c2", "ticket": "t2", "group": "legal"})   # to lea
    await gw.run({"type": "set_agent_status", "id": "off", "agent": "lea",
                  "status": "offline"})
    await gw.send(CREATE | {"id": "c3", "ticket": "t3", "group": "legal"})   # queued
    assert types(await gw.pump())[-1] == "ticket_queued"
    c = gw.client
    await c.respond_ticket("t1", "bob", id="x1")
    await c.forward_ticket("t1", "bob", "legal", id="x2")
    await c.close_ticket("t1", "bob", "not mine", id="x3")
    await c.close_ticket("t3", "lea", "nobody has it", id="x4")
    # a gateway cannot act as a supervisor: the field is not part of the protocol
    await gw.send({"type": "forward_ticket", "id": "x5", "ticket": "t1", "agent": "bob",
                   "supervisor": "boss", "to_group": "legal"})
    await gw.send({"type": "close_ticket", "id": "x6", "ticket": "t1", "supervisor": "boss",
                   "resolution": "closed by a supervisor?"})
    events = await gw.pump()
    assert error(events) == [
        ("x1", "E_NOT_TICKET_HANDLER", "ann"), ("x2", "E_NOT_TICKET_HANDLER", "ann"),
        ("x3", "E_NOT_TICKET_HANDLER", "ann"), ("x4", "E_NOT_TICKET_HANDLER", "none"),
        ("x5", "E_NOT_TICKET_HANDLER", "ann"),
        ("x6", "E_INVALID", "Object missing required field `agent`")]
    assert await ticket_state(gw, "t1") == ("assigned", "back", "ann")
    assert await ticket_state(gw, "t3") == ("queued", "legal", None)
    await c.respond_ticket("t1", "ann", id="ok1")
    await c.forward_ticket("t1", "ann", "legal", id="ok2")
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("ticket_responded", "ok1"), ("ticket_forwarded", "ok2"), ("ticket_queued", "ok2")]


async def test_a_command_id_is_applied_once(gw):
    await back_office(gw, "ann")
    await gw.send(CREATE)
    await gw.send(CREATE)                                        # retried at once
    await gw.client.respond_ticket("t1", "ann", id="r1")
    await gw.client.respond_ticket("t1", "ann", id="r1")
    events = await gw.pump()
    assert [(e["type"], e["cmd"]) for e in events] == [
        ("ticket_created", "c1"), ("ticket_assigned", "c1"), ("duplicate", "c1"),
        ("ticket_responded", "r1"), ("duplicate", "r1")]
    gw.clock.advance(MIN)
    await gw.send(CREATE, msgpack=True)                          # a late retry
    await gw.client.respond_ticket("t1", "ann", id="r1")
    assert [(e["type"], e["cmd"]) for e in await gw.pump()] == [
        ("duplicate", "c1"), ("duplicate", "r1")]
    # a refused command changed nothing: the same id is applied once the cause is gone
    await gw.send(CREATE | {"id": "c2", "ticket": "t2", "ticket_type": "claim"})
    assert error(await gw.pump()) == [("c2", "E_TICKET_TYPE_UNKNOWN", "claim")]
    await gw.engine.apply(gw.tenant, gw.clock.now, ConfigureTicketType(type="claim"))
    await gw.send(CREATE | {"id": "c2", "ticket": "t2", "ticket_type": "claim",
                            "fields": {}})
    assert types(await gw.pump()) == ["ticket_created", "ticket_assigned"]


# ------------------------------------------------------------------- ticket timers


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


BERLIN = ZoneInfo("Europe/Berlin")
#: Weekdays 09:00-17:00 in Berlin. T0 is Tuesday 2023-11-14 23:13 there: off shift.
OFFICE = {"time_zone": "Europe/Berlin", "closed_dates": [],
          "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                      "start": "09:00", "end": "17:00"}]}
OPENS = ms(datetime(2023, 11, 15, 9, 0, tzinfo=BERLIN))


async def test_held_off_shift_then_spread_over_the_agents_at_shift_start(gw):
    """A ticket created off shift waits (``ticket_held``); at the shift start the tick
    assigns the held tickets, at most ceil(held / members) each for the spread."""
    await back_office(gw, "ann")
    await gw.engine.apply(gw.tenant, gw.clock.now, ConfigureTicketType(type="claim"))
    await gw.agent("bob", ["back"], online=False)
    await gw.redis.hset(keys.key("group", gw.tenant, "back"), "meta",
                        msgspec.msgpack.encode({"service_hours": OFFICE}))
    assert await tickets.refresh_windows(gw.engine, gw.tenant, gw.clock.now) == 2
    events = []
    for n in (1, 2, 3):
        events += await gw.run(CREATE | {"id": f"c{n}", "ticket": f"t{n}",
                                         "ticket_type": "claim", "fields": {}})
        gw.clock.advance(SEC)
    assert types(events) == ["ticket_created", "ticket_held"] * 3
    assert [strip(e) for e in events[1::2]] == [
        {"type": "ticket_held", "cmd": f"c{n}", "ticket": f"t{n}", "group": "back",
         "reason": "created", "until_ms": OPENS} for n in (1, 2, 3)]
    assert await ticket_state(gw, "t1") == ("held", "back", None)

    gw.clock.now = OPENS - 1
    assert await gw.pump() == []                  # the tick runs, nothing is due yet
    gw.clock.now = OPENS
    # 3 held tickets, 2 members: for the spread (15 min) each member takes at most 2
    assert_events(await gw.pump(), [
        assigned("t1", "ann", None, reason="shift_start", wait_ms=OPENS - T0),
        assigned("t2", "ann", None, reason="shift_start", wait_ms=OPENS - T0 - SEC),
        {"type": "ticket_queued", "ticket": "t3", "group": "back", "reason": "shift_start",
         "position": 1},
    ], ts=OPENS)
    gw.clock.advance(MIN)
    await gw.client.agent_status("bob", "online", id="bob-on")
    events = await gw.pump()
    assert types(events) == ["agent_status", "ticket_assigned"]
    assert strip(events[1]) == assigned("t3", "bob", None, reason="queue",
                                        wait_ms=OPENS + MIN - T0 - 2 * SEC)


async def test_overdue_and_untouched_tickets_in_the_tick(gw):
    await gw.group("back", ticket_reassign_ms=45 * MIN)
    await gw.agent("ann", ["back"])
    await gw.agent("bob", ["back"])
    await gw.send(CREATE)
    await gw.pump()
    gw.clock.advance(45 * MIN)                    # ann never touched it
    assert_events(await gw.pump(), [
        assigned("t1", "bob", None, reason="untouched", previous_agent="ann",
                 wait_ms=45 * MIN)], ts=T0 + 45 * MIN)
    gw.clock.now = T0 + HOUR
    overdue = {"type": "ticket_overdue", "ticket": "t1", "group": "back",
               "ticket_type": "refund", "agent": "bob"}
    assert_events(await gw.pump(), [
        overdue | {"kind": "first_response", "due_ms": T0 + HOUR}], ts=T0 + HOUR)
    gw.clock.advance(MIN)
    await gw.client.respond_ticket("t1", "bob", id="r1")    # late, and no more untouched
    assert_events(await gw.pump(), [
        {"type": "ticket_responded", "cmd": "r1", "ticket": "t1", "group": "back",
         "agent": "bob", "first_response_ms": HOUR + MIN}])
    gw.clock.now = T0 + 24 * HOUR
    assert_events(await gw.pump(), [
        overdue | {"kind": "resolution", "due_ms": T0 + 24 * HOUR}], ts=T0 + 24 * HOUR)
    gw.clock.now = T0 + 25 * HOUR
    await gw.client.close_ticket("t1", "bob", "late", id="r2")
    assert_events(await gw.pump(), [
        {"type": "ticket_closed", "cmd": "r2", "ticket": "t1", "group": "back",
         "ticket_type": "refund", "agent": "bob", "by": "bob", "resolution": "late",
         "resolution_ms": 25 * HOUR, "hops": 0, "breached": ["first_response", "resolution"]},
    ])


async def test_a_forward_back_into_a_group_is_a_loop(gw):
    await back_office(gw, "ann")
    await gw.send(CREATE)
    await gw.client.forward_ticket("t1", "ann", "legal", note="yours", id="c2")
    await gw.client.forward_ticket("t1", "lea", "back", note="no, yours", id="c3")
    events = await gw.pump()
    assert types(events) == ["ticket_created", "ticket_assigned", "ticket_forwarded",
                             "ticket_assigned", "ticket_forwarded", "ticket_loop",
                             "ticket_assigned"]
    assert_events(events[4:], [
        {"type": "ticket_forwarded", "cmd": "c3", "ticket": "t1", "from_group": "legal",
         "to_group": "back", "by": "lea", "from_agent": "lea", "note": "no, yours", "hop": 2,
         "spent_ms": 0, "loop": True},
        {"type": "ticket_loop", "cmd": "c3", "ticket": "t1", "group": "back", "hop": 2,
         "visits": 2},
        assigned("t1", "ann", "c3", reason="forwarded"),
    ])
