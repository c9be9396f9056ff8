"""dispatchd.protocol: decoding inbound entries, the script form, encoding, error codes.

Pure unit tests (no server): each command type round-trips through ``encode_command`` /
``decode_entry`` in JSON and msgpack and has a known ``to_script`` form; each protocol
error code comes out of ``decode_entry`` for the inputs docs/protocol.md gives for it,
with the command id salvaged when it is readable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dispatchd import protocol as p
from dispatchd.protocol import (
    AgentMessageCmd,
    AgentReadyCmd,
    ArriveCmd,
    CloseSessionCmd,
    CloseTicketCmd,
    ConfirmCloseCmd,
    CreateTicketCmd,
    CustomerLeaveCmd,
    CustomerMessageCmd,
    ForwardTicketCmd,
    InviteAgentCmd,
    QueryPositionCmd,
    QueryTicketCmd,
    Rejected,
    RequestCloseCmd,
    RespondTicketCmd,
    SetAgentStatusCmd,
    TransferSessionCmd,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
T = "acme"
E = "1700000000000-0"

# One full example per command type, and its exact form for the gateway_batch script.
EXAMPLES: list[tuple[Any, dict[str, Any]]] = [
    (ArriveCmd(id="c1", session="s1", group="billing", customer="u7", priority=-3,
               directed_agent="ann", last_agent="bob", blocked_agents=["eve", "mal"],
               gateway="web", tenant=T, ts=123),
     {"op": "arrive", "_id": "c1", "_e": E, "session": "s1", "group": "billing",
      "attributes": None, "customer": "u7", "priority": -3, "directed_agent": "ann",
      "last_agent": "bob", "blocked_agents": ["eve", "mal"], "gateway": "web"}),
    (ArriveCmd(id="c1b", session="s1", group="billing"),
     {"op": "arrive", "_id": "c1b", "_e": E, "session": "s1", "group": "billing",
      "attributes": None, "customer": None, "priority": 0, "directed_agent": None,
      "last_agent": None, "blocked_agents": [], "gateway": None}),
    (ArriveCmd(id="c1c", session="s1", attributes={"lang": "de", "vip": True, "spend": 120.5,
                                                   "tier": 3}),
     {"op": "arrive", "_id": "c1c", "_e": E, "session": "s1", "group": None,
      "attributes": {"lang": "de", "vip": True, "spend": 120.5, "tier": 3}, "customer": None,
      "priority": 0, "directed_agent": None, "last_agent": None, "blocked_agents": [],
      "gateway": None}),
    (CustomerMessageCmd(id="c2", session="s1"),
     {"op": "customer_message", "_id": "c2", "_e": E, "session": "s1"}),
    (AgentMessageCmd(id="c3", session="s1", agent="ann"),
     {"op": "agent_message", "_id": "c3", "_e": E, "session": "s1", "agent": "ann"}),
    (CustomerLeaveCmd(id="c4", session="s1"),
     {"op": "customer_leave", "_id": "c4", "_e": E, "session": "s1"}),
    (RequestCloseCmd(id="c5", session="s1", agent="ann"),
     {"op": "request_close", "_id": "c5", "_e": E, "session": "s1", "agent": "ann"}),
    (ConfirmCloseCmd(id="c6", session="s1", resolved=False),
     {"op": "confirm_close", "_id": "c6", "_e": E, "session": "s1", "resolved": False}),
    (CloseSessionCmd(id="c7", session="s1", reason="callback", note="ring me 回电"),
     {"op": "close_session", "_id": "c7", "_e": E, "session": "s1", "reason": "callback",
      "note": "ring me 回电"}),
    (CloseSessionCmd(id="c7b", session="s1"),
     {"op": "close_session", "_id": "c7b", "_e": E, "session": "s1", "reason": "closed",
      "note": ""}),
    (TransferSessionCmd(id="c8", session="s1", to_group="sales"),
     {"op": "transfer_session", "_id": "c8", "_e": E, "session": "s1", "to_group": "sales",
      "to_agent": None}),
    (TransferSessionCmd(id="c9", session="s1", to_agent="bob"),
     {"op": "transfer_session", "_id": "c9", "_e": E, "session": "s1", "to_group": None,
      "to_agent": "bob"}),
    (InviteAgentCmd(id="c10", session="s1", agent="exp"),
     {"op": "invite_agent", "_id": "c10", "_e": E, "session": "s1", "agent": "exp"}),
    (SetAgentStatusCmd(id="c11", agent="ann", status="away", handover=True),
     {"op": "set_agent_status", "_id": "c11", "_e": E, "agent": "ann", "status": "away",
      "handover": True}),
    (SetAgentStatusCmd(id="c11b", agent="ann", status="online"),
     {"op": "set_agent_status", "_id": "c11b", "_e": E, "agent": "ann", "status": "online",
      "handover": False}),
    (AgentReadyCmd(id="c12", agent="ann"),
     {"op": "agent_ready", "_id": "c12", "_e": E, "agent": "ann"}),
    (QueryPositionCmd(id="c13", session="s1"),
     {"op": "query_position", "_id": "c13", "_e": E, "session": "s1"}),
    # the ticket's type travels as "ticket_type" ("type" is the tag); the script's is "type"
    (CreateTicketCmd(id="c14", ticket="t1", ticket_type="refund", group="back", by="shop 1",
                     fields={"order_no": "A-1", "amount": 12.5, "qty": 2, "urgent": True},
                     title="Refund", priority=-7, order_id="o1", order_owner="ann"),
     {"op": "create_ticket", "_id": "c14", "_e": E, "ticket": "t1", "type": "refund",
      "group": "back", "by": "shop 1",
      "fields": {"order_no": "A-1", "amount": 12.5, "qty": 2, "urgent": True},
      "title": "Refund", "priority": -7, "order_id": "o1", "order_owner": "ann"}),
    (CreateTicketCmd(id="c14b", ticket="t1", ticket_type="refund", group="back", by="shop"),
     {"op": "create_ticket", "_id": "c14b", "_e": E, "ticket": "t1", "type": "refund",
      "group": "back", "by": "shop", "fields": {}, "title": "", "priority": 0,
      "order_id": None, "order_owner": None}),
    (RespondTicketCmd(id="c15", ticket="t1", agent="ann", note="on it"),
     {"op": "respond_ticket", "_id": "c15", "_e": E, "ticket": "t1", "agent": "ann",
      "note": "on it"}),
    (RespondTicketCmd(id="c15b", ticket="t1", agent="ann"),
     {"op": "respond_ticket", "_id": "c15b", "_e": E, "ticket": "t1", "agent": "ann",
      "note": ""}),
    (ForwardTicketCmd(id="c16", ticket="t1", agent="ann", to_group="legal", note="yours"),
     {"op": "forward_ticket", "_id": "c16", "_e": E, "ticket": "t1", "agent": "ann",
      "to_group": "legal", "note": "yours"}),
    (CloseTicketCmd(id="c17", ticket="t1", agent="ann", resolution="refunded"),
     {"op": "close_ticket", "_id": "c17", "_e": E, "ticket": "t1", "agent": "ann",
      "resolution": "refunded"}),
    (QueryTicketCmd(id="c18", ticket="t1"),
     {"op": "query_ticket", "_id": "c18", "_e": E, "ticket": "t1"}),
]


def ids(examples: list[tuple[Any, dict[str, Any]]]) -> list[str]:
    return [f"{type(c).__name__}-{c.id}" for c, _ in examples]


def js(doc: Any) -> dict[bytes, bytes]:
    return {b"json": json.dumps(doc).encode()}


def mp(doc: Any) -> dict[bytes, bytes]:
    return {b"msgpack": msgspec.msgpack.encode(doc)}


def rejected(fields: dict[bytes, bytes], tenant: str = T) -> Rejected:
    out = p.decode_entry(fields, tenant)
    assert isinstance(out, Rejected), out
    return out


# --------------------------------------------------------------------- command types


def documented_command_types() -> set[str]:
    """The ``type`` column of the command tables of docs/protocol.md (sessions, tickets)."""
    text = DOCS.read_text(encoding="utf-8")
    tables = [t.split("\n\n", 1)[0] for t in text.split("| type | fields | effect |")[1:]]
    assert len(tables) == 2
    return {name for table in tables
            for name in re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)}


def test_command_types_are_the_documented_ones():
    assert documented_command_types() == p.COMMAND_TYPES
    assert len(p.COMMAND_TYPES) == 17
    covered = {type(c).__struct_config__.tag for c, _ in EXAMPLES}
    assert covered == p.COMMAND_TYPES


@pytest.mark.parametrize(("cmd", "script"), EXAMPLES, ids=ids(EXAMPLES))
@pytest.mark.parametrize("use_msgpack", [False, True], ids=["json", "msgpack"])
def test_round_trip_and_script_form(cmd, script, use_msgpack):
    fields = p.encode_command(cmd, msgpack=use_msgpack)
    assert list(fields) == [b"msgpack" if use_msgpack else b"json"]
    decoded = p.decode_entry(fields, T)
    assert decoded == cmd
    assert p.to_script(decoded, E) == script


@pytest.mark.parametrize(("cmd", "script"), EXAMPLES, ids=ids(EXAMPLES))
def test_hand_written_json_with_only_the_documented_fields(cmd, script):
    """What a gateway in another language sends: no nulls, no defaults."""
    doc = {k: v for k, v in msgspec.to_builtins(cmd).items()
           if v is not None and v != [] and k not in ("tenant", "ts")}
    decoded = p.decode_entry({b"json": json.dumps(doc).encode()}, T)
    assert p.to_script(decoded, E) == script


def test_encode_command_json_is_the_documented_shape():
    fields = p.encode_command(AgentMessageCmd(id="c2", session="s1", agent="ann"))
    assert json.loads(fields[b"json"]) == {
        "type": "agent_message", "id": "c2", "session": "s1", "agent": "ann",
        "tenant": None, "ts": None}


def test_to_script_drops_the_envelope():
    cmd = p.decode_entry(js({"type": "agent_ready", "id": "x", "agent": "a", "tenant": T,
                             "ts": 5}), T)
    assert p.to_script(cmd, E) == {"op": "agent_ready", "_id": "x", "_e": E, "agent": "a"}


def test_unknown_fields_are_ignored():
    doc = {"type": "agent_ready", "id": "x", "agent": "a", "future": {"a": [1, None]},
           "op": "configure_group", "_id": "spoof", "_e": "0-1", "force": True}
    for fields in (js(doc), mp(doc)):
        cmd = p.decode_entry(fields, T)
        assert p.to_script(cmd, E) == {"op": "agent_ready", "_id": "x", "_e": E, "agent": "a"}


def test_transfer_force_cannot_be_smuggled_in():
    cmd = p.decode_entry(js({"type": "transfer_session", "id": "x", "session": "s",
                             "to_agent": "a", "force": True}), T)
    assert "force" not in p.to_script(cmd, E)


def test_supervisor_cannot_be_smuggled_into_ticket_commands():
    """A gateway never acts as a supervisor: the scripts' ``supervisor`` is not passed on."""
    for doc in (FORWARD, CLOSE):
        cmd = p.decode_entry(js(doc | {"supervisor": "boss"}), T)
        assert "supervisor" not in p.to_script(cmd, E)
    assert rejected(js({k: v for k, v in CLOSE.items() if k != "agent"}
                       | {"supervisor": "boss"})).code == "E_INVALID"


def test_ticket_type_is_not_the_command_type():
    fields = p.encode_command(QueryTicketCmd(id="q", ticket="t1"))
    assert json.loads(fields[b"json"])["type"] == "query_ticket"
    doc = json.loads(p.encode_command(CreateTicketCmd(
        id="c", ticket="t1", ticket_type="refund", group="g", by="x"))[b"json"])
    assert (doc["type"], doc["ticket_type"]) == ("create_ticket", "refund")
    # a gateway that puts the ticket's type under "type" sends an unknown command
    r = rejected(js(TK | {"type": "refund"}))
    assert r.code == "E_UNKNOWN_TYPE"


def test_ticket_byte_limits_name_the_field():
    r = rejected(js(RESPOND | {"note": "é" * 2001}))
    assert r.message == "Expected `str` of at most 4000 UTF-8 bytes - at `$.note`"


def test_ticket_commands_check_their_limits_when_built():
    """The client's commands are checked where they are made, before they are sent."""
    with pytest.raises(ValueError, match=r"\$\.resolution"):
        CloseTicketCmd(id="c", ticket="t1", agent="a", resolution="x" * 4001)
    with pytest.raises(ValueError, match=r"\$\.by"):
        CreateTicketCmd(id="c", ticket="t1", ticket_type="r", group="g", by="é" * 129)


def test_json_field_wins_when_both_are_present():
    fields = {b"msgpack": msgspec.msgpack.encode({"type": "agent_ready", "id": "m",
                                                  "agent": "b"}),
              b"json": b'{"type":"agent_ready","id":"j","agent":"a"}'}
    cmd = p.decode_entry(fields, T)
    assert isinstance(cmd, AgentReadyCmd) and cmd.id == "j"


def test_same_tenant_and_null_optionals_accepted():
    cmd = p.decode_entry(js({"type": "arrive", "id": "x", "session": "s", "group": "g",
                             "tenant": T, "customer": None, "gateway": None, "ts": None}), T)
    assert isinstance(cmd, ArriveCmd) and cmd.tenant == T


# ------------------------------------------------------------------------ error codes


@pytest.mark.parametrize(("fields", "cid"), [
    ({}, None),
    ({b"data": b'{"type":"agent_ready","id":"x","agent":"a"}'}, None),
    ({b"JSON": b'{"type":"agent_ready","id":"x","agent":"a"}'}, None),
    ({b"json": b"{not json"}, None),
    ({b"json": b""}, None),
    ({b"json": b'{"type":"agent_ready","id":"x","agent":"a"}{}'}, None),
    ({b"json": b"\xef\xbb\xbf{}"}, None),
    ({b"json": b'{"type":"arrive","id":"x","priority":NaN}'}, None),
    ({b"json": b'{"type":"arrive","id":"x","priority":1e400}'}, None),
    ({b"json": b"[1, 2]"}, None),
    ({b"json": b'[{"type":"agent_ready","id":"x","agent":"a"}]'}, None),
    ({b"json": b'"agent_ready"'}, None),
    ({b"json": b"null"}, None),
    ({b"msgpack": b""}, None),
    ({b"msgpack": b"\xc1"}, None),
    ({b"msgpack": msgspec.msgpack.encode({"type": "agent_ready", "id": "x"})[:-1]}, None),
    ({b"msgpack": msgspec.msgpack.encode({"type": "agent_ready", "id": "x"}) + b"\x00"}, None),
    ({b"msgpack": msgspec.msgpack.encode([1, 2])}, None),
    ({b"msgpack": msgspec.msgpack.encode("arrive")}, None),
])
def test_e_malformed(fields, cid):
    r = rejected(fields)
    assert (r.code, r.command_id) == ("E_MALFORMED", cid)
    assert r.message


def sized(encoder: Any, doc: dict[str, Any], target: int) -> dict[str, Any]:
    """``doc`` plus a ``pad`` field making its encoding exactly ``target`` bytes."""
    doc = dict(doc, pad="")
    n = target - len(next(iter(encoder(doc).values())))
    while True:   # the msgpack string header grows with the string
        doc["pad"] = "p" * n
        size = len(next(iter(encoder(doc).values())))
        if size == target:
            return doc
        n -= size - target


@pytest.mark.parametrize("encoder", [js, mp], ids=["json", "msgpack"])
def test_e_too_large_above_16_kib(encoder):
    doc = sized(encoder, {"type": "arrive", "id": "x", "session": "s", "group": "g"},
                16 * 1024)
    fields = encoder(doc)
    assert len(next(iter(fields.values()))) == p.MAX_PAYLOAD == 16 * 1024
    assert isinstance(p.decode_entry(fields, T), ArriveCmd)
    doc["pad"] += "p"
    r = rejected(encoder(doc))
    assert (r.code, r.command_id) == ("E_TOO_LARGE", None)
    assert "16385" in r.message


def test_e_too_large_is_checked_before_parsing():
    r = rejected({b"json": b"\xff" * 20_000})
    assert r.code == "E_TOO_LARGE"


@pytest.mark.parametrize("kind", ["nope", "", "ARRIVE", "arrive ", 42, None, 1.5, True,
                                  "release_session", "configure_group", "configure_agent",
                                  "fire_timers", "escalate_overflow", "reject", "apply_batch"])
@pytest.mark.parametrize("encoder", [js, mp], ids=["json", "msgpack"])
def test_e_unknown_type(kind, encoder):
    r = rejected(encoder({"type": kind, "id": "c9", "session": "s", "group": "g"}))
    assert (r.code, r.command_id) == ("E_UNKNOWN_TYPE", "c9")


def test_e_unknown_type_when_missing():
    r = rejected(js({"id": "c9", "session": "s"}))
    assert (r.code, r.command_id) == ("E_UNKNOWN_TYPE", "c9")


def test_e_unknown_type_message_is_bounded():
    r = rejected(js({"type": "x" * 10_000, "id": "c9"}))
    assert r.code == "E_UNKNOWN_TYPE" and len(r.message) <= 200


A = {"type": "arrive", "id": "c1", "session": "s1", "group": "g"}
INVALID: list[tuple[str, dict[str, Any], str | None]] = [
    ("session-int", A | {"session": 1}, "c1"),
    ("session-empty", A | {"session": ""}, "c1"),
    ("session-65", A | {"session": "s" * 65}, "c1"),
    ("session-space", A | {"session": "a b"}, "c1"),
    ("session-unicode", A | {"session": "é"}, "c1"),
    ("session-missing", {k: v for k, v in A.items() if k != "session"}, "c1"),
    ("group-int", A | {"group": 5}, "c1"),
    ("attributes-list", A | {"attributes": ["lang"]}, "c1"),
    ("attributes-33", A | {"attributes": {f"k{i}": i for i in range(33)}}, "c1"),
    ("attribute-name", A | {"attributes": {"bad name": 1}}, "c1"),
    ("attribute-null", A | {"attributes": {"lang": None}}, "c1"),
    ("attribute-list", A | {"attributes": {"lang": ["de"]}}, "c1"),
    ("attribute-object", A | {"attributes": {"lang": {"v": "de"}}}, "c1"),
    ("customer-int", A | {"customer": 5}, "c1"),
    ("gateway-65", A | {"gateway": "g" * 65}, "c1"),
    ("priority-str", A | {"priority": "1"}, "c1"),
    ("priority-float", A | {"priority": 1.0}, "c1"),
    ("priority-bool", A | {"priority": True}, "c1"),
    ("priority-1001", A | {"priority": 1001}, "c1"),
    ("priority--1001", A | {"priority": -1001}, "c1"),
    ("blocked-101", A | {"blocked_agents": [f"a{i}" for i in range(101)]}, "c1"),
    ("blocked-str", A | {"blocked_agents": "a"}, "c1"),
    ("blocked-bad-id", A | {"blocked_agents": ["ok", "n o"]}, "c1"),
    ("ts-str", A | {"ts": "now"}, "c1"),
    ("ts-float", A | {"ts": 1.5}, "c1"),
    ("tenant-int", A | {"tenant": 7}, "c1"),
    ("id-129", A | {"id": "i" * 129}, None),
    ("id-empty", A | {"id": ""}, None),
    ("id-int", A | {"id": 7}, None),
    ("id-null", A | {"id": None}, None),
    ("id-missing", {k: v for k, v in A.items() if k != "id"}, None),
    ("resolved-str", {"type": "confirm_close", "id": "c1", "session": "s", "resolved": "yes"},
     "c1"),
    ("resolved-int", {"type": "confirm_close", "id": "c1", "session": "s", "resolved": 1},
     "c1"),
    ("resolved-missing", {"type": "confirm_close", "id": "c1", "session": "s"}, "c1"),
    ("status-busy", {"type": "set_agent_status", "id": "c1", "agent": "a", "status": "busy"},
     "c1"),
    ("handover-str", {"type": "set_agent_status", "id": "c1", "agent": "a", "status": "away",
                      "handover": "yes"}, "c1"),
    ("reason-empty", {"type": "close_session", "id": "c1", "session": "s", "reason": ""},
     "c1"),
    ("reason-65", {"type": "close_session", "id": "c1", "session": "s", "reason": "r" * 65},
     "c1"),
    ("note-2001", {"type": "close_session", "id": "c1", "session": "s", "note": "n" * 2001},
     "c1"),
    ("note-null", {"type": "close_session", "id": "c1", "session": "s", "note": None}, "c1"),
    ("to_group-int", {"type": "transfer_session", "id": "c1", "session": "s", "to_group": 1},
     "c1"),
    ("agent-list", {"type": "agent_ready", "id": "c1", "agent": ["a"]}, "c1"),
    ("agent-missing", {"type": "agent_message", "id": "c1", "session": "s"}, "c1"),
]

# Tickets: the scripts' limits, text in UTF-8 bytes (lua/tickets/*.lua).
TK = {"type": "create_ticket", "id": "c1", "ticket": "t1", "ticket_type": "refund",
      "group": "back", "by": "shop"}
RESPOND = {"type": "respond_ticket", "id": "c1", "ticket": "t1", "agent": "ann"}
FORWARD = {"type": "forward_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
           "to_group": "legal"}
CLOSE = {"type": "close_ticket", "id": "c1", "ticket": "t1", "agent": "ann",
         "resolution": "done"}
INVALID += [
    ("ticket-missing", {k: v for k, v in TK.items() if k != "ticket"}, "c1"),
    ("ticket-bad-id", TK | {"ticket": "t/1"}, "c1"),
    ("ticket_type-missing", {k: v for k, v in TK.items() if k != "ticket_type"}, "c1"),
    ("ticket_type-int", TK | {"ticket_type": 1}, "c1"),
    ("by-missing", {k: v for k, v in TK.items() if k != "by"}, "c1"),
    ("by-empty", TK | {"by": ""}, "c1"),
    ("by-257-bytes", TK | {"by": "b" * 257}, "c1"),
    ("by-258-bytes-in-129-chars", TK | {"by": "é" * 129}, "c1"),
    ("title-501-bytes", TK | {"title": "t" * 501}, "c1"),
    ("title-null", TK | {"title": None}, "c1"),
    ("ticket-priority-1001", TK | {"priority": 1001}, "c1"),
    ("fields-list", TK | {"fields": [1]}, "c1"),
    ("fields-101", TK | {"fields": {f"f{i}": i for i in range(101)}}, "c1"),
    ("fields-bad-name", TK | {"fields": {"a b": 1}}, "c1"),
    ("fields-null-value", TK | {"fields": {"a": None}}, "c1"),
    ("fields-list-value", TK | {"fields": {"a": [1]}}, "c1"),
    ("fields-object-value", TK | {"fields": {"a": {"b": 1}}}, "c1"),
    ("order_owner-bad-id", TK | {"order_id": "o1", "order_owner": "a b"}, "c1"),
    ("respond-note-4001-bytes", RESPOND | {"note": "n" * 4001}, "c1"),
    ("respond-note-4002-bytes-in-1334-chars", RESPOND | {"note": "回" * 1334}, "c1"),
    ("respond-agent-missing", {k: v for k, v in RESPOND.items() if k != "agent"}, "c1"),
    ("forward-to_group-missing", {k: v for k, v in FORWARD.items() if k != "to_group"},
     "c1"),
    ("forward-agent-missing", {k: v for k, v in FORWARD.items() if k != "agent"}, "c1"),
    ("forward-note-4001-bytes", FORWARD | {"note": "n" * 4001}, "c1"),
    ("close-resolution-empty", CLOSE | {"resolution": ""}, "c1"),
    ("close-resolution-missing", {k: v for k, v in CLOSE.items() if k != "resolution"}, "c1"),
    ("close-resolution-4001-bytes", CLOSE | {"resolution": "ü" * 2000 + "u"}, "c1"),
    ("close-agent-missing", {k: v for k, v in CLOSE.items() if k != "agent"}, "c1"),
    ("query_ticket-ticket-int", {"type": "query_ticket", "id": "c1", "ticket": 1}, "c1"),
]


@pytest.mark.parametrize(("doc", "cid"), [(d, c) for _, d, c in INVALID],
                         ids=[n for n, _, _ in INVALID])
@pytest.mark.parametrize("encoder", [js, mp], ids=["json", "msgpack"])
def test_e_invalid(doc, cid, encoder):
    r = rejected(encoder(doc))
    assert (r.code, r.command_id) == ("E_INVALID", cid)
    assert "$." in r.message or "field" in r.message       # names the field


def test_e_invalid_message_is_bounded():
    r = rejected(js(A | {"session": {"x" * 5000: 1}}))
    assert r.code == "E_INVALID" and len(r.message) <= 500


LIMITS_OK: list[tuple[str, dict[str, Any]]] = [
    ("id-128", A | {"id": "i" * 128}),
    ("id-any-chars", A | {"id": "命令 #1 \u0000"}),
    ("session-64", A | {"session": "s" * 64}),
    ("session-charset", A | {"session": "Az09_.@-"}),
    ("priority-1000", A | {"priority": 1000}),
    ("priority--1000", A | {"priority": -1000}),
    ("blocked-100", A | {"blocked_agents": [f"a{i}" for i in range(100)]}),
    ("reason-64", {"type": "close_session", "id": "c1", "session": "s", "reason": "r" * 64}),
    ("note-2000", {"type": "close_session", "id": "c1", "session": "s", "note": "n" * 2000}),
    ("ts-big", A | {"ts": 2**63 - 1}),
    ("no-group", {k: v for k, v in A.items() if k != "group"}),
    ("group-null", A | {"group": None}),
    ("attributes-32", A | {"attributes": {f"k{i}": i for i in range(32)}}),
    ("attributes-empty", A | {"attributes": {}}),
    ("by-256-bytes", TK | {"by": "é" * 128}),
    ("title-500-bytes", TK | {"title": "回" * 166 + "tt"}),
    ("fields-100", TK | {"fields": {f"f{i}": i for i in range(100)}}),
    ("fields-values", TK | {"fields": {"s": "x", "i": -(2**63), "f": 0.5, "b": False}}),
    ("ticket-priority--1000", TK | {"priority": -1000}),
    ("order_owner-without-order_id", TK | {"order_owner": "ann"}),   # the script's E_BAD_ARG
    ("note-4000-bytes", RESPOND | {"note": "é" * 2000}),
    ("forward-note-4000-bytes", FORWARD | {"note": "n" * 4000}),
    ("resolution-4000-bytes", CLOSE | {"resolution": "ü" * 2000}),
]


@pytest.mark.parametrize("doc", [d for _, d in LIMITS_OK], ids=[n for n, _ in LIMITS_OK])
@pytest.mark.parametrize("encoder", [js, mp], ids=["json", "msgpack"])
def test_limits_accepted(doc, encoder):
    assert not isinstance(p.decode_entry(encoder(doc), T), Rejected)


@pytest.mark.parametrize("other", ["other", T.upper(), T + " ", ""])
def test_e_wrong_tenant(other):
    r = rejected(js(A | {"tenant": other}))
    assert (r.code, r.command_id) == ("E_WRONG_TENANT", "c1")
    assert repr(other) in r.message


def test_the_codes_are_documented():
    text = DOCS.read_text(encoding="utf-8")
    errors = text.split("## Errors", 1)[1].split("## ", 1)[0]
    documented = set(re.findall(r"`(E_[A-Z_]+)`", errors))
    assert {p.E_MALFORMED, p.E_TOO_LARGE, p.E_UNKNOWN_TYPE, p.E_INVALID,
            p.E_WRONG_TENANT} <= documented


def test_reject_to_script():
    r = Rejected("E_INVALID", "Expected `int` - at `$.priority`", "c1")
    assert p.reject_to_script(r, E) == {
        "op": "reject", "_e": E, "_id": "c1",
        "error": "E_INVALID Expected `int` - at `$.priority`"}
    assert p.reject_to_script(Rejected("E_MALFORMED", "not valid JSON"), E) == {
        "op": "reject", "_e": E, "error": "E_MALFORMED not valid JSON"}


def test_decode_event():
    fields = {b"json": b'{"type":"queued","ts":1,"cmd":"c1","session":"s","eta_ms":null}'}
    assert p.decode_event(fields) == {"type": "queued", "ts": 1, "cmd": "c1", "session": "s",
                                      "eta_ms": None}


# ----------------------------------------------------------------- hostile payloads


@pytest.mark.parametrize("field", ["session", "group", "customer", "gateway"])
def test_id_with_trailing_newline_is_invalid(field):
    r = p.decode_entry(js(A | {field: "ann\n"}), T)
    assert isinstance(r, Rejected) and r.code == "E_INVALID"


POISON: dict[str, dict[bytes, bytes]] = {
    "type-list": js({"type": ["arrive"], "id": "x"}),
    "type-object": mp({"type": {"a": 1}, "id": "x"}),
    "nested-json-1000": {b"json": b"[" * 1000 + b"]" * 1000},
    "nested-msgpack-1000": {b"msgpack": b"\x91" * 1000 + b"\x90"},
    "nested-extra-field": {b"json": b'{"type":"agent_ready","id":"x","agent":"a","z":'
                           + b"[" * 1000 + b"]" * 1000 + b"}"},
    "utf8-json": {b"json": b'{"type":"agent_ready","id":"x","agent":"\xff"}'},
    "utf8-json-id": {b"json": b'{"type":"agent_ready","id":"\xc3","agent":"a"}'},
    "utf8-msgpack": {b"msgpack": b"\x83\xa4type\xabagent_ready\xa2id\xa1x\xa5agent\xa1\xff"},
}


@pytest.mark.parametrize("name", sorted(POISON))
def test_decode_entry_never_raises(name):
    out = p.decode_entry(POISON[name], T)
    assert isinstance(out, Rejected)
    assert out.code in {"E_MALFORMED", "E_UNKNOWN_TYPE", "E_INVALID"}


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
@pytest.mark.parametrize("field", ["attributes", "ts"])
def test_integers_beyond_64_bits_are_invalid(field, value):
    """Everything decoded must be packable for the script (msgpack: 64-bit integers)."""
    doc = A | ({"attributes": {"n": value}} if field == "attributes" else {"ts": value})
    r = rejected(js(doc))
    assert (r.code, r.command_id) == ("E_INVALID", "c1")


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 1.5e308, True, "x" * 256])
def test_attribute_values_at_the_limits_can_be_packed(value):
    out = p.decode_entry(js(A | {"attributes": {"n": value}}), T)
    assert isinstance(out, ArriveCmd)
    msgspec.msgpack.encode([p.to_script(out, E)])


def test_attribute_string_over_256_chars_is_invalid():
    assert rejected(js(A | {"attributes": {"n": "x" * 257}})).code == "E_INVALID"
