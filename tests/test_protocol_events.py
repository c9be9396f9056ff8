"""docs/protocol.md as a contract for the events: every event type, with exactly the keys
its table row lists (tests/event_schema.py, applied to every event the gateway tests
read), the `duplicate` event, state names in E_SESSION_STATE, the encoding rules and
where a gateway resumes reading ``{T}:out``.

Real streams and a real Valkey; the daemon's consumer on a fake clock
(tests/gateway_helpers.py); configuration events through the admin API over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from admin_helpers import Api, api, atenant  # noqa: F401 (fixtures)
from event_schema import SCHEMA, SESSION_TYPES, check_event
from gateway_helpers import SEC, Gateway, open_gateway, read_events

from dispatchd import keys
from dispatchd.messages import Tier


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant) as g:
        yield g


async def advance(gw: Gateway, ms: int) -> list[dict[str, Any]]:
    gw.clock.advance(ms)
    return await gw.pump()


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# ------------------------------------------------------------------ every event's keys


async def test_every_session_event_has_exactly_its_documented_keys(gw):
    """One conversation that produces every session event of the table (and error,
    duplicate, agent_status); each is checked against its row by read_events."""
    await gw.group("h")
    await gw.group("g", tiers=[Tier(after_ms=20 * SEC, groups=["h"])], preference_ms=60 * SEC,
                   queue_warning_ms=10 * SEC, silence_preclose_ms=30 * SEC)
    out: list[dict[str, Any]] = []
    out += await gw.agent("a", ["g"], capacity=1)
    out += await gw.agent("b", ["h"], capacity=1)
    c = gw.client
    await c.arrive("s1", "g", id="c1")                                  # assigned to a
    await c.arrive("s2", "g", directed_agent="a", id="c2")              # a is full: parked
    await c.arrive("s3", "g", id="c3")                                  # queued in g
    await c.query_position("s2", id="c4")
    await c.query_position("s3", id="c5")
    await c.agent_message("s1", "a", id="c6")                           # first reply
    await c.customer_message("s1", id="c7")
    await c.agent_message("s1", "a", id="c8")                           # a later reply
    await c.query_position("s1", id="c9")                               # E_SESSION_STATE
    await c.agent_message("s1", "a", id="c8")                           # a duplicate
    out += (first := await gw.pump())
    parked, queued = of(first, "queued")
    assert parked["parked_with"] == "a" and parked["eta_ms"] is None
    assert "parked_with" not in queued and "eta_ms" in queued
    p_parked, p_queued = of(first, "position")
    assert p_parked["parked_with"] == "a" and p_parked["eta_ms"] is None
    assert "parked_with" not in p_queued and "eta_ms" in p_queued
    replies = [e for e in of(first, "state_changed") if e["to"] == "waiting_customer"]
    assert "first_response_ms" in replies[0] and "first_response_ms" not in replies[1]
    assert [(e["code"], e["message"]) for e in of(first, "error")] == [
        ("E_SESSION_STATE", "waiting_customer")]
    assert [e["cmd"] for e in of(first, "duplicate")] == ["c8"]
    out += await advance(gw, 20 * SEC)        # queue_wait alerts, tier_opened for s3
    out += await advance(gw, 20 * SEC)        # s1 silent 30 s: pre-closed, a takes s2
    await c.customer_message("s1", id="d1")   # reactivated (over capacity)
    await c.invite_agent("s1", "b", id="d2")
    await c.transfer("s3", to_group="h", id="d3")
    await c.close_session("s1", reason="callback", note="call me", id="d4")
    await c.arrive("s4", "g", directed_agent="a", id="d5")             # parked again
    out += await gw.pump()
    out += await advance(gw, 61 * SEC)        # preference_expired, then queued (fallback)
    await c.customer_leave("s4", id="d6")     # closed while queued: group and wait_ms
    out += await gw.pump()
    kinds = {e["type"] for e in out}
    expected = SESSION_TYPES | {"agent_status", "error", "duplicate"}
    assert expected <= kinds, sorted(expected - kinds)
    closes = of(out, "closed")
    assert {"agent" in e for e in closes} == {True, False}


async def test_configuration_events_of_the_admin_api_fit_the_table(
    api: Api, atenant: str, engine, redis_client,  # noqa: F811
):
    t = atenant
    base = f"/v1/tenants/{t}"
    await api.ok("POST", f"{base}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{base}/agents", json={"id": "a", "capacity": 1,
                                                 "abilities": {"g": 1}}, status=201)
    await api.ok("POST", f"{base}/rules", json={"name": "r", "group": "g"}, status=201)
    await api.ok("POST", f"{base}/ticket-types", json={"id": "refund"}, status=201)
    await api.ok("DELETE", f"{base}/ticket-types/refund")
    await api.ok("DELETE", f"{base}/rules/r")
    await api.ok("DELETE", f"{base}/agents/a")
    await api.ok("DELETE", f"{base}/groups/g")
    events = await read_events(redis_client, t)  # each checked against its row
    kinds = {e["type"] for e in events}
    admin_kinds = {"group_configured", "group_deleted", "agent_configured", "agent_deleted",
                   "rules_configured", "ticket_type_configured", "ticket_type_deleted"}
    assert admin_kinds <= kinds, sorted(admin_kinds - kinds)


def test_the_key_check_refuses_what_the_table_does_not_say():
    ok = {"type": "queued", "ts": 1, "session": "s", "group": "g", "position": 1,
          "eta_ms": None, "priority": 0, "virtual_arrival_ms": 0, "reason": "arrival"}
    check_event(ok)
    check_event(ok | {"parked_with": "a", "gateway": "web", "cmd": "c1"})
    for bad in ({k: v for k, v in ok.items() if k != "eta_ms"},  # a listed key missing
                ok | {"parked_with": None},                      # a ? key as null
                ok | {"colour": "red"}):                         # a key not listed
        with pytest.raises(AssertionError):
            check_event(bad)
    assert {"duplicate", "error", "ticket_status"} <= set(SCHEMA)


# ------------------------------------------------------------ duplicates, state names


async def test_a_duplicate_says_which_entry_and_command(gw):
    await gw.group("g")
    cmd = {"type": "arrive", "id": "x1", "session": "s1", "group": "g"}
    await gw.send(cmd)
    await gw.pump()
    entry = await gw.send(cmd | {"session": "s2"})       # same id, other payload
    events = await gw.pump()
    assert [{k: v for k, v in e.items() if k not in ("ts", "_entry")} for e in events] == [
        {"type": "duplicate", "cmd": "x1", "entry": entry}]
    assert await gw.engine.session(gw.tenant, "s2") is None
    assert await gw.dead() == []


async def test_session_state_errors_name_the_documented_state(gw):
    """E_SESSION_STATE's message is one of the six states, or preclosed: never the
    router's internal `assigned`."""
    await gw.group("g", silence_preclose_ms=10 * SEC, silence_close_ms=20 * SEC)
    await gw.agent("a", ["g"], capacity=1)
    c = gw.client
    await c.arrive("s1", "g", id="a1")
    await c.arrive("s2", "g", id="a2")                                   # queued
    await gw.pump()
    await c.query_position("s1", id="q1")                                # waiting_agent
    await c.confirm_close("s2", resolved=True, id="q2")                  # queued
    await c.agent_message("s1", "a", id="m1")
    await c.query_position("s1", id="q3")                                # waiting_customer
    await c.request_close("s1", "a", id="m2")
    await c.request_close("s1", "a", id="q4")                            # pending_confirm
    await c.confirm_close("s1", resolved=False, id="m3")
    await c.agent_message("s1", "a", id="m4")
    errors = of(await gw.pump(), "error")
    await advance(gw, 10 * SEC)                                          # pre-closed
    await c.agent_message("s1", "a", id="q5")                            # preclosed
    await c.invite_agent("s1", "a", id="q6")
    errors += of(await gw.pump(), "error")
    await advance(gw, 10 * SEC)                                          # system_closed
    await c.customer_message("s1", id="q7")
    errors += of(await gw.pump(), "error")
    assert [(e["cmd"], e["code"], e["message"]) for e in errors] == [
        ("q1", "E_SESSION_STATE", "waiting_agent"),
        ("q2", "E_SESSION_STATE", "queued"),
        ("q3", "E_SESSION_STATE", "waiting_customer"),
        ("q4", "E_SESSION_STATE", "pending_confirm"),
        ("q5", "E_SESSION_STATE", "preclosed"),
        ("q6", "E_SESSION_STATE", "preclosed"),
        ("q7", "E_SESSION_STATE", "system_closed")]


async def test_commands_accepted_without_an_event(gw):
    """The "—" cells of the state table: applied (a repeat is a duplicate), no event."""
    await gw.group("g")
    await gw.agent("a", ["g"], capacity=1)
    c = gw.client
    await c.arrive("s1", "g", id="a1")
    await c.arrive("s2", "g", id="a2")
    await gw.pump()
    await c.customer_message("s2", id="n1")                 # queued
    await c.customer_message("s1", id="n2")                 # waiting_agent
    await c.agent_ready("a", id="n3")                       # no free capacity
    assert await gw.pump() == []
    await c.agent_message("s1", "a", id="m1")
    await gw.pump()
    await c.agent_message("s1", "a", id="n4")               # waiting_customer
    await c.request_close("s1", "a", id="m2")
    await gw.pump()
    await c.agent_message("s1", "a", id="n5")               # pending_confirm
    assert await gw.pump() == []
    await c.customer_message("s2", id="n1")
    assert [(e["type"], e["cmd"]) for e in await gw.pump()] == [("duplicate", "n1")]


# ------------------------------------------------------------------------ encoding


@pytest.mark.parametrize(("payload", "code"), [
    ({b"msgpack": msgspec.msgpack.encode(
        {"type": "agent_ready", "id": "e1", "agent": b"a"})}, "E_INVALID"),   # bin, not str
    ({b"json": b'{"type":"agent_ready","id":"e1","agent":"a","ts":9223372036854775808}'},
     "E_INVALID"),                                                            # over int64
    ({b"json": b'{"type":"arrive","id":"e1","session":"s","group":"g","priority":1.0}'},
     "E_INVALID"),                                                            # a float
    ({b"json": b'{"type":"confirm_close","id":"e1","session":"s","resolved":1}'},
     "E_INVALID"),                                                            # 1 is no bool
    ({b"json": b'{"type":"arrive","id":"e1","session":"s","group":"g","priority":null}'},
     "E_INVALID"),                                                            # null default
    ({b"json": b'\xef\xbb\xbf{"type":"agent_ready","id":"e1","agent":"a"}'}, "E_MALFORMED"),
    ({b"json": b'{"type":"agent_ready","id":"e1","agent":"a"} {}'}, "E_MALFORMED"),
    ({b"json": b'{"type":"agent_ready","id":"e1","agent":"a","x":"\\ud800"}'}, "E_MALFORMED"),
    ({b"json": b'{"type":"agent_ready","id":"e1","agent":"a","x":' + b"[" * 1000
      + b"]" * 1000 + b"}"}, "E_MALFORMED"),                                  # too deep
    ({b"json": b'{"type":"agent_ready","id":"e1","agent":"a:b"}'}, "E_INVALID"),  # bad id
    ({b"json": b'{"type":"arrive","id":"e1","session":"s 1","group":"g"}'}, "E_INVALID"),
    ({b"json": b'{"type":"transfer_session","id":"e1","session":"s","to_agent":"a\\n"}'},
     "E_INVALID"),
], ids=["msgpack-bin", "int64", "float-for-int", "int-for-bool", "null-for-default", "bom",
        "trailing-data", "lone-surrogate", "nested-1000", "id-colon", "id-space",
        "id-newline"])
async def test_encoding_rules(gw, payload, code):
    await gw.group("g")
    await gw.send_raw(payload)
    assert [e["code"] for e in await gw.pump()] == [code]


async def test_encoding_what_is_accepted(gw):
    """What the encoding rules allow: int64 bounds, null for an optional field,
    whitespace, a key given twice (the last counts), 200 levels in an unknown field,
    invalid UTF-8 in an unknown msgpack field."""
    await gw.group("g")
    await gw.agent("a", ["g"], capacity=5, online=False)
    nested = b"[" * 200 + b"]" * 200
    await gw.send_raw({b"json": b' {"type":"agent_ready","id":"k1","agent":"a",'
                       b'"ts":-9223372036854775808,"x":' + nested + b'} \n'})
    await gw.send_raw({b"json": b'{"type":"arrive","id":"k2","session":"s1","group":"g",'
                       b'"customer":null,"ts":9223372036854775807}'})
    await gw.send_raw({b"json": b'{"type":"arrive","id":"k3","session":"zz","group":"g",'
                       b'"session":"s2"}'})
    await gw.send_raw({b"msgpack": b"\x84\xa4type\xabagent_ready\xa2id\xa2k4\xa5agent\xa1a"
                       b"\xa2zz\xa1\xff"})
    events = await gw.pump()
    assert [(e["type"], e.get("session")) for e in events] == [
        ("queued", "s1"), ("queued", "s2")]
    assert await gw.dead() == []


# ------------------------------------------------------------ reading {T}:out


async def test_a_trim_past_the_last_processed_id_is_detectable(gw):
    """The recipe of "Where to start reading": while the last processed entry is still in
    {T}:out nothing after it was lost; after a trim past it, XRANGE of its id is empty
    (XREAD from it does not fail, and max-deleted-entry-id does not show the trim)."""
    await gw.group("g")
    await gw.client.arrive("s0", "g", id="c0")
    last = (await gw.pump())[-1]["_entry"]
    for i in range(1, 6):
        await gw.client.arrive(f"s{i}", "g", id=f"c{i}")
    await gw.pump()
    assert len(await gw.redis.xrange(gw.outbound, last, last)) == 1     # nothing lost
    await gw.redis.xtrim(gw.outbound, maxlen=2, approximate=False)  # as MAXLEN ~ does
    assert await gw.redis.xrange(gw.outbound, last, last) == []         # events lost
    rows = await gw.redis.xread({gw.outbound: last})                     # no error:
    assert [json.loads(f[b"json"])["session"] for _, f in rows[0][1]] == ["s4", "s5"]
    info = await gw.redis.xinfo_stream(gw.outbound)
    assert info["max-deleted-entry-id"] in (b"0-0", "0-0")
    assert keys.key("outbound", gw.tenant) == gw.outbound
