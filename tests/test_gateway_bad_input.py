"""Hostile inbound entries mixed with good traffic, through the real streams.

A seeded generator interleaves a few hundred bad entries (broken JSON/msgpack, no payload
field, payloads over 16 KiB, unknown types, wrong field types and sizes, wrong tenant,
unknown agents/sessions/groups, commands in the wrong state) with good commands
(arrivals, messages, closes; some msgpack, some with unknown extra fields, which must be
accepted). Every bad entry must give exactly one ``error`` event with its documented code
and one ``{T}:dead`` entry with the original payload; every good command must be applied,
in order; the inbound stream must end empty; the consumer must never fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from gateway_helpers import Gateway, open_gateway

SEED = 20_240_611
N_GOOD = 300
N_BAD = 330
W = "web"


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant, options={"batch_size": 64}) as g:
        yield g


def dead_copy(fields: dict[bytes, bytes]) -> dict[str, bytes]:
    """What docs/protocol.md ("Dead letters") says a dead letter keeps of ``fields``
    (names unique here): each payload field's first 16384 bytes, its size and SHA-1; at
    most 32 other fields, names cut to 64 bytes, values to 256."""
    out: dict[str, bytes] = {}
    others = 0
    for k, v in fields.items():
        if k in (b"json", b"msgpack"):
            name = k.decode()
            out[name] = v[:16384]
            out[name + "_bytes"] = str(len(v)).encode()
            out[name + "_sha1"] = hashlib.sha1(v).hexdigest().encode()
        elif others < 32:
            others += 1
            out["field:" + k[:64].decode(errors="replace")] = v[:256]
    return out


@dataclass
class Bad:
    fields: dict[bytes, bytes]
    code: str
    cmd: str | None
    entry: str = ""


@dataclass
class Good:
    fields: dict[bytes, bytes]
    id: str
    expected: list[tuple[str, str]]      # (event type, session) in order
    entry: str = ""


@dataclass
class Model:
    """What the good traffic did so far: the phase of each session (all go to a1)."""

    rng: random.Random
    tenant: str
    phases: dict[str, str] = field(default_factory=dict)
    blocks_z: set[str] = field(default_factory=set)
    n: int = 0

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def pick(self, *phases: str) -> str | None:
        found = sorted(s for s, p in self.phases.items() if p in phases)
        return self.rng.choice(found) if found else None


OPEN = ("waiting_agent", "waiting_customer")


def encode(doc: Any, rng: random.Random, *, msgpack: bool | None = None) -> dict[bytes, bytes]:
    if msgpack is None:
        msgpack = rng.random() < 0.2
    if msgpack:
        return {b"msgpack": msgspec.msgpack.encode(doc)}
    return {b"json": json.dumps(doc).encode()}


# ------------------------------------------------------------------------ good traffic


def good(m: Model) -> Good:
    rng = m.rng
    gid = m.next_id("good-")
    choices = ["arrive"]
    if m.pick("waiting_agent"):
        choices += ["agent_message"] * 3
    if m.pick("waiting_customer"):
        choices += ["customer_message"] * 3
    if m.pick(*OPEN):
        choices += ["close_session", "customer_leave"]
    kind = rng.choice(choices)
    doc: dict[str, Any] = {"type": kind, "id": gid}
    if kind == "arrive":
        sid = m.next_id("s")
        doc |= {"session": sid, "group": "g", "gateway": W}
        if rng.random() < 0.3:
            doc["customer"] = f"u{rng.randrange(50)}"
        if rng.random() < 0.2:
            doc["blocked_agents"] = ["z"]
            m.blocks_z.add(sid)
        m.phases[sid] = "waiting_agent"
        expected = [("assigned", sid)]
    elif kind == "agent_message":
        sid = m.pick("waiting_agent") or ""
        doc |= {"session": sid, "agent": "a1"}
        m.phases[sid] = "waiting_customer"
        expected = [("state_changed", sid)]
    elif kind == "customer_message":
        sid = m.pick("waiting_customer") or ""
        doc |= {"session": sid}
        m.phases[sid] = "waiting_agent"
        expected = [("state_changed", sid)]
    else:
        sid = m.pick(*OPEN) or ""
        doc |= {"session": sid}
        if kind == "close_session" and rng.random() < 0.5:
            doc |= {"reason": "spam", "note": "n" * rng.randrange(0, 2001)}
        m.phases[sid] = "closed"
        expected = [("closed", sid)]
    r = rng.random()
    if r < 0.15:   # forward compatibility: unknown fields are ignored
        doc |= {"x_trace": {"span": [1, 2, {"deep": None}]}, "x_flag": True, "zz": 1.5}
    elif r < 0.25:
        doc |= {"tenant": m.tenant, "ts": rng.randrange(10**13)}
    return Good(encode(doc, rng), gid, expected)


# ------------------------------------------------------------------------- bad entries


def bad(m: Model) -> Bad:
    rng = m.rng
    bid = m.next_id("bad-")
    maker = rng.choice(BAD_MAKERS)
    out = maker(m, bid)
    if out is None:            # needs state the model does not have yet
        return bad(m)
    return out


def _valid(m: Model, bid: str) -> dict[str, Any]:
    """A well-formed command that would be accepted (a fresh arrival)."""
    return {"type": "arrive", "id": bid, "session": m.next_id("never-"), "group": "g"}


def bad_json_garbage(m: Model, bid: str) -> Bad:
    junk = bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(0, 40)))
    return Bad({b"json": b"}" + junk}, "E_MALFORMED", None)


def bad_json_truncated(m: Model, bid: str) -> Bad:
    text = json.dumps(_valid(m, bid)).encode()
    return Bad({b"json": text[: m.rng.randrange(1, len(text) - 1)]}, "E_MALFORMED", None)


def bad_json_not_object(m: Model, bid: str) -> Bad:
    doc = m.rng.choice([[1, 2], "arrive", 42, None, True, [{"type": "arrive", "id": bid}]])
    return Bad({b"json": json.dumps(doc).encode()}, "E_MALFORMED", None)


def bad_msgpack_garbage(m: Model, bid: str) -> Bad:
    junk = bytes(m.rng.randrange(256) for _ in range(m.rng.randrange(0, 40)))
    return Bad({b"msgpack": b"\xc1" + junk}, "E_MALFORMED", None)


def bad_msgpack_truncated(m: Model, bid: str) -> Bad:
    data = msgspec.msgpack.encode(_valid(m, bid))
    return Bad({b"msgpack": data[: m.rng.randrange(1, len(data) - 1)]}, "E_MALFORMED", None)


def bad_msgpack_not_map(m: Model, bid: str) -> Bad:
    doc = m.rng.choice([[1, 2], "arrive", 7, None, b"bytes"])
    return Bad({b"msgpack": msgspec.msgpack.encode(doc)}, "E_MALFORMED", None)


def bad_no_payload(m: Model, bid: str) -> Bad:
    valid = json.dumps(_valid(m, bid)).encode()
    fields = m.rng.choice([{b"data": valid}, {b"JSON": valid}, {b"payload": b"x", b"v": b"1"},
                           {b"Msgpack": msgspec.msgpack.encode(_valid(m, bid))}])
    return Bad(fields, "E_MALFORMED", None)


def bad_too_large(m: Model, bid: str) -> Bad:
    doc = _valid(m, bid) | {"pad": "x" * m.rng.randrange(16_400, 40_000)}
    if m.rng.random() < 0.5:
        doc = {"type": "close_session", "id": bid, "session": "s1",
               "note": "x" * m.rng.randrange(16_400, 20_000)}
    return Bad(encode(doc, m.rng), "E_TOO_LARGE", None)


def bad_unknown_type(m: Model, bid: str) -> Bad:
    kind = m.rng.choice(["nope", "ARRIVE", "", 42, None, 1.5, "release_session",
                         "configure_group", "configure_agent", "fire_timers", "reject",
                         "apply_batch", "abandon_customer", "arrive "])
    doc = _valid(m, bid) | {"type": kind}
    if m.rng.random() < 0.2:
        del doc["type"]
    return Bad(encode(doc, m.rng), "E_UNKNOWN_TYPE", bid)


def bad_invalid_field(m: Model, bid: str) -> Bad:
    rng = m.rng
    sid = m.pick(*OPEN) or "s1"
    variants: list[dict[str, Any]] = [
        _valid(m, bid) | {"session": 42},
        _valid(m, bid) | {"session": "bad id!"},
        _valid(m, bid) | {"session": "s" * 65},
        _valid(m, bid) | {"session": ""},
        _valid(m, bid) | {"group": 7},
        _valid(m, bid) | {"attributes": {"lang": None}},
        _valid(m, bid) | {"attributes": {f"k{i}": i for i in range(33)}},
        _valid(m, bid) | {"priority": "high"},
        _valid(m, bid) | {"priority": 1001},
        _valid(m, bid) | {"priority": -1001},
        _valid(m, bid) | {"priority": 1.5},
        _valid(m, bid) | {"priority": True},
        _valid(m, bid) | {"customer": 42},
        _valid(m, bid) | {"gateway": "w" * 65},
        _valid(m, bid) | {"blocked_agents": "z"},
        _valid(m, bid) | {"blocked_agents": [f"b{i}" for i in range(101)]},
        _valid(m, bid) | {"blocked_agents": ["ok", "not ok"]},
        _valid(m, bid) | {"ts": "now"},
        _valid(m, bid) | {"tenant": 42},
        {"type": "arrive", "id": bid, "group": "g"},
        {"type": "customer_message", "id": bid},
        {"type": "agent_message", "id": bid, "session": sid},
        {"type": "confirm_close", "id": bid, "session": sid, "resolved": "yes"},
        {"type": "confirm_close", "id": bid, "session": sid},
        {"type": "set_agent_status", "id": bid, "agent": "a1", "status": "busy"},
        {"type": "set_agent_status", "id": bid, "agent": "a1", "status": "away",
         "handover": "no"},
        {"type": "close_session", "id": bid, "session": sid, "note": "n" * 2001},
        {"type": "close_session", "id": bid, "session": sid, "reason": ""},
        {"type": "close_session", "id": bid, "session": sid, "reason": "r" * 65},
        {"type": "close_session", "id": bid, "session": sid, "note": None},
        {"type": "transfer_session", "id": bid, "session": sid, "to_group": 42},
        {"type": "invite_agent", "id": bid, "session": sid, "agent": ["a1"]},
        {"type": "agent_ready", "id": bid, "agent": {"id": "a1"}},
    ]
    doc = rng.choice(variants)
    return Bad(encode(doc, rng), "E_INVALID", bid)


def bad_invalid_id(m: Model, bid: str) -> Bad:
    """The command id itself is unreadable: no ``cmd`` on the error."""
    cid = m.rng.choice(["i" * 129, "", 42, None, ["x"]])
    doc = _valid(m, bid) | {"id": cid}
    if m.rng.random() < 0.2:
        del doc["id"]
    return Bad(encode(doc, m.rng), "E_INVALID", None)


def bad_wrong_tenant(m: Model, bid: str) -> Bad:
    other = m.rng.choice(["other", m.tenant + "x", m.tenant.upper(), "default"])
    return Bad(encode(_valid(m, bid) | {"tenant": other}, m.rng), "E_WRONG_TENANT", bid)


def bad_session_unknown(m: Model, bid: str) -> Bad:
    ghost = m.next_id("ghost-")
    doc = m.rng.choice([
        {"type": "customer_message", "session": ghost},
        {"type": "agent_message", "session": ghost, "agent": "a1"},
        {"type": "customer_leave", "session": ghost},
        {"type": "close_session", "session": ghost},
        {"type": "request_close", "session": ghost, "agent": "a1"},
        {"type": "confirm_close", "session": ghost, "resolved": True},
        {"type": "query_position", "session": ghost},
        {"type": "invite_agent", "session": ghost, "agent": "z"},
        {"type": "transfer_session", "session": ghost, "to_group": "g"},
    ])
    return Bad(encode(doc | {"id": bid}, m.rng), "E_SESSION_UNKNOWN", bid)


def bad_session_state(m: Model, bid: str) -> Bad | None:
    rng = m.rng
    closed, live = m.pick("closed"), m.pick(*OPEN)
    docs: list[dict[str, Any]] = []
    if closed:
        docs += [{"type": "customer_message", "session": closed},
                 {"type": "agent_message", "session": closed, "agent": "a1"},
                 {"type": "close_session", "session": closed},
                 {"type": "customer_leave", "session": closed},
                 {"type": "transfer_session", "session": closed, "to_group": "h"}]
    if live:
        docs += [{"type": "confirm_close", "session": live, "resolved": rng.random() < 0.5},
                 {"type": "query_position", "session": live}]
    if not docs:
        return None
    return Bad(encode(rng.choice(docs) | {"id": bid}, rng), "E_SESSION_STATE", bid)


def bad_not_session_agent(m: Model, bid: str) -> Bad | None:
    live = m.pick(*OPEN)
    if not live:
        return None
    doc = {"type": "agent_message", "id": bid, "session": live, "agent": "z"}
    if m.pick("waiting_agent") and m.rng.random() < 0.5:
        doc = {"type": "request_close", "id": bid, "session": m.pick("waiting_agent"),
               "agent": "z"}
    return Bad(encode(doc, m.rng), "E_NOT_SESSION_AGENT", bid)


def bad_session_exists(m: Model, bid: str) -> Bad | None:
    sid = m.pick(*OPEN, "closed")
    if not sid:
        return None
    doc = {"type": "arrive", "id": bid, "session": sid, "group": "g"}
    return Bad(encode(doc, m.rng), "E_SESSION_EXISTS", bid)


def bad_group_unknown(m: Model, bid: str) -> Bad:
    live = m.pick(*OPEN)
    doc: dict[str, Any] = {"type": "arrive", "id": bid, "session": m.next_id("never-"),
                           "group": "nogroup"}
    if live and m.rng.random() < 0.5:
        doc = {"type": "transfer_session", "id": bid, "session": live, "to_group": "nogroup"}
    return Bad(encode(doc, m.rng), "E_GROUP_UNKNOWN", bid)


def bad_no_route(m: Model, bid: str) -> Bad:
    """No group, and no routing rule (the tenant has none) matches the attributes."""
    doc: dict[str, Any] = {"type": "arrive", "id": bid, "session": m.next_id("never-")}
    if m.rng.random() < 0.7:
        doc["attributes"] = m.rng.choice([{}, {"lang": "de"}, {"vip": True, "spend": 9.5}])
    return Bad(encode(doc, m.rng), "E_NO_ROUTE", bid)


def bad_agent_unknown(m: Model, bid: str) -> Bad:
    live = m.pick(*OPEN)
    docs: list[dict[str, Any]] = [
        {"type": "agent_ready", "agent": "ghost"},
        {"type": "set_agent_status", "agent": "ghost", "status": "online"},
        {"type": "arrive", "session": m.next_id("never-"), "group": "g",
         "directed_agent": "ghost"},
    ]
    if live:
        docs += [{"type": "invite_agent", "session": live, "agent": "ghost"},
                 {"type": "transfer_session", "session": live, "to_agent": "ghost"}]
    return Bad(encode(m.rng.choice(docs) | {"id": bid}, m.rng), "E_AGENT_UNKNOWN", bid)


def bad_router_args(m: Model, bid: str) -> Bad | None:
    """Well-formed fields the router refuses: E_BAD_ARG, E_AGENT_OFFLINE, E_AGENT_BLOCKED."""
    live = m.pick(*OPEN)
    docs: list[tuple[dict[str, Any], str]] = [
        ({"type": "set_agent_status", "agent": "a1", "status": "online", "handover": True},
         "E_BAD_ARG")]
    if live:
        docs += [({"type": "transfer_session", "session": live}, "E_BAD_ARG"),
                 ({"type": "transfer_session", "session": live, "to_group": "g",
                   "to_agent": "z"}, "E_BAD_ARG"),
                 ({"type": "invite_agent", "session": live, "agent": "a1"}, "E_BAD_ARG"),
                 ({"type": "transfer_session", "session": live, "to_agent": "a1"}, "E_BAD_ARG"),
                 ({"type": "transfer_session", "session": live, "to_agent": "off"},
                  "E_AGENT_OFFLINE"),
                 ({"type": "invite_agent", "session": live, "agent": "off"},
                  "E_AGENT_OFFLINE")]
    blocking = sorted(s for s in m.blocks_z if m.phases.get(s) in OPEN)
    if blocking:
        docs.append(({"type": "transfer_session", "session": m.rng.choice(blocking),
                      "to_agent": "z"}, "E_AGENT_BLOCKED"))
    doc, code = m.rng.choice(docs)
    return Bad(encode(doc | {"id": bid}, m.rng), code, bid)


BAD_MAKERS = [
    bad_json_garbage, bad_json_truncated, bad_json_not_object,
    bad_msgpack_garbage, bad_msgpack_truncated, bad_msgpack_not_map, bad_no_payload,
    bad_too_large, bad_unknown_type, bad_invalid_field, bad_invalid_field, bad_invalid_id,
    bad_wrong_tenant, bad_session_unknown, bad_session_state, bad_not_session_agent,
    bad_session_exists, bad_group_unknown, bad_no_route, bad_agent_unknown, bad_router_args,
    bad_router_args,
]


# ------------------------------------------------------------------------------ test


async def setup_world(gw: Gateway) -> None:
    await gw.group("g")
    await gw.group("h")
    await gw.agent("a1", ["g"], capacity=1000)   # every arrival in g goes to a1
    await gw.agent("z", ["h"])                   # exists, online, never in g's sessions
    await gw.agent("off", ["g"], online=False)
    await gw.drain()
    await gw.new_events()


async def test_hostile_entries_among_good_traffic(gw, caplog):
    caplog.set_level(logging.WARNING, logger="dispatchd")
    await setup_world(gw)
    rng = random.Random(SEED)
    model = Model(rng, gw.tenant)
    plan: list[Good | Bad] = []
    n_good = n_bad = 0
    while n_good < N_GOOD or n_bad < N_BAD:
        if n_bad >= N_BAD or (n_good < N_GOOD and rng.random() < 0.5):
            plan.append(good(model))
            n_good += 1
        else:
            plan.append(bad(model))
            n_bad += 1

    # send in chunks of random size, pumping in between (several batches per chunk)
    i = 0
    while i < len(plan):
        chunk = plan[i : i + rng.randrange(1, 120)]
        for item in chunk:
            item.entry = await gw.send_raw(item.fields)
        await gw.drain()
        i += len(chunk)

    events = await gw.new_events()      # everything since setup_world
    goods = [p for p in plan if isinstance(p, Good)]
    bads = {p.entry: p for p in plan if isinstance(p, Bad)}
    assert len(goods) == N_GOOD and len(bads) == N_BAD

    # every event is either an error of a bad entry or an event of a good command
    good_ids = {g.id for g in goods}
    errors: dict[str, list[dict[str, Any]]] = {}
    by_cmd: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for n, e in enumerate(events):
        if e["type"] == "error":
            errors.setdefault(e["entry"], []).append(e)
        else:
            assert e.get("cmd") in good_ids, e
            by_cmd.setdefault(e["cmd"], []).append((n, e))

    # bad: exactly one error event with the documented code, cmd iff a readable id
    assert set(errors) == set(bads), "error events for entries that were not bad"
    mismatches = []
    for entry, b in bads.items():
        (err,) = errors[entry]
        got = (err["code"], err.get("cmd"))
        if got != (b.code, b.cmd):
            mismatches.append((b.fields, (b.code, b.cmd), got, err["message"]))
        assert isinstance(err["message"], str)
    assert mismatches == []

    # bad: exactly one dead letter with the original fields and the error
    dead = await gw.dead()
    assert len(dead) == N_BAD
    dead_by_entry = {d["entry"]: d for d in dead}
    assert set(dead_by_entry) == set(bads)
    for entry, b in bads.items():
        d = dead_by_entry[entry]
        assert isinstance(d["error"], str) and d["error"].startswith(b.code + " ")
        assert {k: v for k, v in d.items() if k not in ("entry", "error", "ts")} == (
            dead_copy(b.fields))
        assert d["error"] == f"{b.code} {errors[entry][0]['message']}"

    # good: applied, with exactly the expected events, in command order
    last = -1
    for g in goods:
        got = by_cmd.get(g.id, [])
        assert [(e["type"], e.get("session")) for _, e in got] == g.expected, g.fields
        assert all(e.get("gateway") == W for _, e in got)
        positions = [n for n, _ in got]
        assert positions[0] > last and positions == list(range(positions[0],
                                                               positions[0] + len(got)))
        last = positions[-1]

    # nothing left behind; the state is the model's; the consumer never failed
    assert await gw.inbound_state() == (0, 0)
    for sid, ph in model.phases.items():
        view = await gw.engine.session(gw.tenant, sid)
        assert view is not None and view.phase == ph, (sid, view)
    open_sessions = sum(1 for p in model.phases.values() if p in OPEN)
    a1 = await gw.engine.agent(gw.tenant, "a1")
    assert a1 is not None and a1.load == open_sessions
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_duplicate_ids_across_good_and_bad(gw):
    """A bad entry's id does not stop a good command with a fresh id; the same good id
    sent twice around bad entries is applied once."""
    await setup_world(gw)
    await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
    await gw.send_raw({b"json": b"{not json"})
    await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
    await gw.send_raw({b"msgpack": b"\xc1"})
    await gw.send({"type": "arrive", "id": "g2", "session": "s2", "group": "g"})
    events = await gw.pump()
    assert [(e["type"], e.get("cmd")) for e in events] == [
        ("assigned", "g1"), ("error", None), ("duplicate", "g1"), ("error", None),
        ("assigned", "g2")]


async def test_exactly_16_kib_is_accepted(gw):
    await setup_world(gw)
    doc = {"type": "arrive", "id": "g1", "session": "s1", "group": "g", "pad": ""}
    base = len(json.dumps(doc).encode())
    doc["pad"] = "p" * (16 * 1024 - base)
    assert len(json.dumps(doc).encode()) == 16 * 1024
    await gw.send(doc)
    doc2 = doc | {"id": "g2", "session": "s2", "pad": doc["pad"] + "p"}
    entry = await gw.send(doc2)
    events = await gw.pump()
    assert [(e["type"], e.get("cmd"), e.get("code")) for e in events] == [
        ("assigned", "g1", None), ("error", None, "E_TOO_LARGE")]
    assert events[1]["entry"] == entry


DEPTH = 5000
POISON: dict[str, tuple[dict[bytes, bytes], set[str]]] = {
    "type-is-a-list": ({b"json": b'{"type":["arrive"],"id":"b1"}'}, {"E_UNKNOWN_TYPE"}),
    "type-is-an-object": ({b"msgpack": msgspec.msgpack.encode({"type": {"x": 1}, "id": "b1"})},
                          {"E_UNKNOWN_TYPE"}),
    "nested-json": ({b"json": b"[" * DEPTH + b"]" * DEPTH}, {"E_MALFORMED"}),
    "nested-msgpack": ({b"msgpack": b"\x91" * DEPTH + b"\x90"}, {"E_MALFORMED"}),
    "nested-in-unknown-field": (
        {b"json": b'{"type":"agent_ready","id":"b1","agent":"z","x":' + b"[" * DEPTH
         + b"]" * DEPTH + b"}"}, {"E_MALFORMED", "E_INVALID"}),
    "bad-utf8-json-string": ({b"json": b'{"type":"agent_ready","id":"b1","agent":"\xff"}'},
                             {"E_MALFORMED", "E_INVALID"}),
    "bad-utf8-msgpack-string": (
        {b"msgpack": b"\x83\xa4type\xabagent_ready\xa2id\xa2b1\xa5agent\xa1\xff"},
        {"E_MALFORMED", "E_INVALID"}),
}


@pytest.mark.parametrize("name", sorted(POISON))
async def test_poison_entries_are_refused_not_fatal(gw, name):
    fields, codes = POISON[name]
    await setup_world(gw)
    entry = await gw.send_raw(fields)
    await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
    try:
        events = await gw.pump()
    finally:
        await gw.redis.delete(gw.inbound)   # do not leave a poison pill behind
    assert [(e["type"], e.get("entry")) for e in events] == [("error", entry),
                                                              ("assigned", None)]
    assert events[0]["code"] in codes
    (dead,) = await gw.dead()
    assert dead["entry"] == entry and dead["error"].startswith(events[0]["code"] + " ")


async def test_huge_attribute_integer_is_refused_not_fatal(gw):
    await setup_world(gw)
    entry = await gw.send_raw({b"json": b'{"type":"arrive","id":"b1","session":"x1",'
                                        b'"attributes":{"n":100000000000000000000000}}'})
    await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
    try:
        events = await gw.pump()
    finally:
        await gw.redis.delete(gw.inbound)   # do not leave a poison pill behind
    assert [(e["type"], e.get("entry")) for e in events] == [("error", entry),
                                                              ("assigned", None)]
    assert (events[0]["code"], events[0]["cmd"]) == ("E_INVALID", "b1")


async def test_entry_with_thousands_of_fields_is_dead_lettered(
    engine, redis_client, tenant, caplog
):
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 150}) as gw:
        await setup_world(gw)
        await gw.send({"type": "arrive", "id": "g0", "session": "s0", "group": "g"})
        entry = await gw.send_raw({f"f{i}".encode(): b"v" for i in range(4000)})
        await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
        try:
            events = await gw.pump(timeout_s=1.0)
        finally:
            await gw.redis.delete(gw.inbound)   # do not leave the wedged stream behind
        assert [(e["type"], e.get("cmd"), e.get("entry")) for e in events] == [
            ("assigned", "g0", None), ("error", None, entry), ("assigned", "g1", None)]
        assert events[1]["code"] == "E_MALFORMED"
        (dead,) = await gw.dead()
        assert (dead["entry"], dead["error"].split()[0]) == (entry, "E_MALFORMED")
        copied = {k: v for k, v in dead.items() if k not in ("entry", "error", "ts")}
        assert copied == {f"field:f{i}": b"v" for i in range(32)}  # at most 32, prefixed
        assert "batch failed" not in caplog.text


async def test_dead_letter_metadata_cannot_be_forged_by_the_entry(gw):
    await setup_world(gw)
    entry = await gw.send_raw({b"error": b"E_NONE all fine", b"entry": b"0-1", b"ts": b"1"})
    (event,) = await gw.pump()
    assert (event["code"], event["entry"]) == ("E_MALFORMED", entry)
    (dead,) = await gw.dead()
    assert dead["entry"] == entry
    assert dead["error"].startswith("E_MALFORMED ")
    assert (dead["field:error"], dead["field:entry"], dead["field:ts"]) == (
        b"E_NONE all fine", b"0-1", b"1")


async def test_oversized_entry_is_dead_lettered_as_a_bounded_copy(gw):
    """An 8 MB entry is refused (E_TOO_LARGE) and its dead letter keeps the payload's
    first 16 KiB, its size and SHA-1, not the 8 MB; other fields are cut too."""
    await setup_world(gw)
    payload = json.dumps({"type": "arrive", "id": "big", "session": "s9", "group": "g",
                          "pad": "x" * (8 * 1024 * 1024)}).encode()
    junk = bytes(range(256)) * 4096  # 1 MiB, binary
    name = b"n" * 100
    entry = await gw.send_raw({b"json": payload, name: junk, b"small": b"v"})
    await gw.send({"type": "arrive", "id": "g1", "session": "s1", "group": "g"})
    events = await gw.pump()
    assert [(e["type"], e.get("code"), e.get("entry")) for e in events] == [
        ("error", "E_TOO_LARGE", entry), ("assigned", None, None)]
    (dead,) = await gw.dead()
    assert list(dead) == ["entry", "error", "ts", "json", "json_bytes", "json_sha1",
                          "field:" + "n" * 64, "field:small"]
    assert dead["entry"] == entry and dead["error"].startswith("E_TOO_LARGE ")
    assert dead["json"] == payload[:16384]
    assert dead["json_bytes"] == str(len(payload)).encode()
    assert dead["json_sha1"] == hashlib.sha1(payload).hexdigest().encode()
    assert dead["field:" + "n" * 64] == junk[:256]
    assert dead["field:small"] == b"v"
    assert dead == {"entry": entry, "error": dead["error"], "ts": dead["ts"],
                    **dead_copy({b"json": payload, name: junk, b"small": b"v"})}
    # the server keeps the copy, not the entry
    assert await gw.redis.memory_usage(gw.dead_key) < 64 * 1024


async def test_dead_letter_error_text_is_cut_at_a_character_boundary(gw):
    """An error message that quotes a long command value is cut to 1024 bytes, at a UTF-8
    boundary, in the dead letter and in the error event alike."""
    await setup_world(gw)
    doc = {"type": "agent_ready", "id": "b1", "agent": "a1", "tenant": "é" * 4000}
    payload = json.dumps(doc, ensure_ascii=False).encode()
    entry = await gw.send_raw({b"json": payload})
    (event,) = await gw.pump()
    assert (event["code"], event["entry"]) == ("E_WRONG_TENANT", entry)
    (dead,) = await gw.dead()
    error = dead["error"]
    assert isinstance(error, str)  # read_dead decodes it: valid UTF-8
    assert 1020 < len(error.encode()) <= 1024 and error.endswith("é")
    assert error == f"E_WRONG_TENANT {event['message']}"
    assert dead["json"] == payload and dead["json_bytes"] == str(len(payload)).encode()
