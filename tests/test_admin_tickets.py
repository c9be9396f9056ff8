"""The ticket routes of the admin API over real HTTP (docs/admin.md "Tickets"): ticket
types, creating and viewing tickets, the supervision query, the handler's and the
supervisor's actions with their roles, and the group, agent and tenant settings tickets
use. The daemon's tick does not run here: timers fire by applying TicketTick at an
explicit time."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from dispatchd import keys
from dispatchd.messages import TicketTick
from tests.admin_helpers import T0, Api

S = 1000  # ms
H = 3_600_000
#: T0 is Wednesday 2023-11-15 06:13:20 in Shanghai; 09:00 there is T0 + OPENS
OPENS = 10_000 * S
WEEKDAYS = {"time_zone": "Asia/Shanghai",
            "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
                        "end": "18:00"}]}
REFUND = {"name": "Refund", "first_response_ms": 60 * S, "resolution_ms": H, "fields": [
    {"name": "amount", "type": "number", "required": True},
    {"name": "reason", "type": "enum", "values": ["late", "broken"]},
    {"name": "order_ref", "type": "string", "max_length": 12, "required": True},
    {"name": "count", "type": "integer"},
    {"name": "urgent", "type": "boolean"},
    {"name": "due", "type": "date"},
]}
GOOD = {"amount": 12.5, "order_ref": "o-1"}


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


async def actor(api: Api, role: str) -> str:
    p = await api.admin.tokens.lookup(api.tokens[role])
    assert p is not None
    return p.actor


async def setup(api: Api, t: str, agents: dict[str, dict[str, float]],
                groups: tuple[str, ...] = ("g", "h"), **group_fields: Any) -> None:
    """Groups, the refund type, and online agents with their groups."""
    for g in groups:
        await api.ok("POST", f"{base(t)}/groups", json={"id": g, **group_fields}, status=201)
    await api.ok("POST", f"{base(t)}/ticket-types", json={"id": "refund", **REFUND}, status=201)
    for aid, abilities in agents.items():
        await api.ok("POST", f"{base(t)}/agents", status=201,
                     json={"id": aid, "capacity": 1, "abilities": abilities})
        await api.ok("POST", f"{base(t)}/agents/{aid}/status", role="supervisor",
                     json={"status": "online"})


async def create(api: Api, t: str, tid: str, group: str = "g", role: str = "agent",
                 **fields: Any) -> dict[str, Any]:
    body = {"id": tid, "type": "refund", "group": group, "fields": GOOD, **fields}
    return await api.ok("POST", f"{base(t)}/tickets", role=role, json=body,  # type: ignore[no-any-return]
                        status=201)


async def ticket(api: Api, t: str, tid: str) -> dict[str, Any]:
    return await api.ok("GET", f"{base(t)}/tickets/{tid}", role="viewer")  # type: ignore[no-any-return]


async def act(api: Api, t: str, tid: str, action: str, role: str = "agent",
              **body: Any) -> dict[str, Any]:
    return await api.ok("POST", f"{base(t)}/tickets/{tid}/{action}", role=role,  # type: ignore[no-any-return]
                        json=body, status=200)


async def refused(api: Api, method: str, path: str, status: int, role: str = "admin",
                  **body: Any) -> dict[str, Any]:
    r = await api.call(method, path, role=role, json=body)
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()  # type: ignore[no-any-return]


async def audit(api: Api, t: str, query: str = "") -> list[dict[str, Any]]:
    page = await api.ok("GET", f"{base(t)}/audit?limit=1000{query}", role="supervisor")
    return page["items"]  # type: ignore[no-any-return]


async def tick(api: Api, t: str, at: int) -> list[dict[str, Any]]:
    """Fire the ticket timers due at ``at`` (the daemon's tick does not run here)."""
    out = await api.admin.engine.apply(t, at, TicketTick())
    return [msgspec.to_builtins(e) for e in out.events]


def assigned(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["agent"], e["reason"], e.get("previous_agent")) for e in events
            if e.get("event", e.get("type")) == "ticket_assigned"]


def sent(ts: int, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` (the router's form: named by ``event``) as appended to {t}:out, as the
    actions answer it: named by ``type``, the ticket's type as ``ticket_type``, nulls
    left out, with ``ts``."""
    out = {k: v for k, v in event.items() if v is not None and k not in ("event", "type")}
    out["type"] = event["event"]
    if "type" in event:
        out["ticket_type"] = event["type"]
    return {**out, "ts": ts}


# ---------------------------------------------------------------------------- ticket types


async def test_ticket_type_crud_with_versions_and_audit(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/ticket-types"
    made = await api.ok("POST", path, json={"id": "refund", **REFUND}, status=201)
    fields = REFUND["fields"]
    assert made == {
        "id": "refund", "name": "Refund", "first_response_ms": 60 * S, "resolution_ms": H,
        "version": 1, "fields": [
            fields[0],
            {**fields[1], "required": False},
            fields[2],
            {**fields[3], "required": False},
            {**fields[4], "required": False},
            {**fields[5], "required": False}]}
    assert await api.ok("GET", f"{path}/refund", role="viewer") == made
    minimal = await api.ok("POST", path, json={"id": "note"}, status=201)
    assert minimal == {"id": "note", "name": "", "fields": [], "first_response_ms": 0,
                       "resolution_ms": 0, "version": 1}
    assert (await refused(api, "POST", path, 409, id="note"))["code"] == "E_EXISTS"
    page = await api.ok("GET", f"{path}?limit=1", role="viewer")
    assert (page["items"], page["next"]) == ([minimal], "note")
    page = await api.ok("GET", f"{path}?limit=1&cursor=note", role="viewer")
    assert (page["items"], page["next"]) == ([made], None)

    upd = await api.ok("PUT", f"{path}/refund", headers={"If-Match": '"1"'},
                       json={"name": "Refunds", "fields": [fields[0]]})
    assert (upd["name"], upd["fields"], upd["version"]) == ("Refunds", [fields[0]], 2)
    assert upd["first_response_ms"] == 0
    r = await api.call("PUT", f"{path}/refund", headers={"If-Match": '"1"'}, json={})
    assert r.status_code == 412 and r.json()["detail"].endswith("now 2")
    r = await api.call("DELETE", f"{path}/refund", headers={"If-Match": '"1"'})
    assert r.status_code == 412
    await refused(api, "PUT", f"{path}/nope", 404)
    await refused(api, "POST", path, 403, role="supervisor", id="x")

    await api.ok("DELETE", f"{path}/refund", headers={"If-Match": '"2"'}, status=204)
    await refused(api, "GET", f"{path}/refund", 404)
    await refused(api, "DELETE", f"{path}/refund", 404)

    log = [(e["action"], e["resource_id"], e["version"]) for e in
           await audit(api, t, "&resource=ticket_type")]
    assert log == [("delete", "refund", 3), ("update", "refund", 2), ("create", "note", 1),
                   ("create", "refund", 1)]
    entry = (await audit(api, t, "&resource=ticket_type&action=update"))[0]
    assert entry["actor"] == await actor(api, "admin")
    assert entry["command"]["op"] == "configure_ticket_type"
    assert entry["before"][0]["name"] == "Refund" and entry["after"][0]["name"] == "Refunds"
    assert entry["after"][0]["fields"] == [{**fields[0]}]
    deleted = (await audit(api, t, "&action=delete"))[0]
    assert (deleted["command"], deleted["after"]) == (
        {"op": "delete_ticket_type", "type": "refund"}, [False])


async def test_ticket_type_refusals_name_the_problem(api: Api, atenant: str) -> None:
    path = f"{base(atenant)}/ticket-types"
    dup = {"id": "x", "fields": [{"name": "a", "type": "string"},
                                 {"name": "a", "type": "integer"}]}
    body = await refused(api, "POST", path, 422, **dup)
    assert body["detail"] == "fields: duplicate name a"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"fields": [{"name": "a b", "type": "string"}]}, "fields[0].name"),
        ({"fields": [{"name": "a", "type": "colour"}]}, "fields[0].type"),
        ({"fields": [{"name": "a", "type": "enum"}]}, "fields[0]"),  # no values
        ({"fields": [{"name": "a", "type": "enum", "values": []}]}, "fields[0].values"),
        ({"fields": [{"name": "a", "type": "string", "values": ["x"]}]}, "fields[0]"),
        ({"fields": [{"name": "a", "type": "string", "max_length": 0}]},
         "fields[0].max_length"),
        ({"fields": [{"name": "a", "type": "enum", "values": ["x" * 201]}]},
         "fields[0].values[0]"),
        ({"fields": [{"name": f"f{n}", "type": "date"} for n in range(101)]}, "fields"),
        ({"first_response_ms": -1}, "first_response_ms"),
        ({"resolution_ms": -1}, "resolution_ms"),
    ]
    for fields, key in cases:
        body = await refused(api, "POST", path, 400, id="x", **fields)
        assert body["extra"][0]["key"] == key, (fields, body)
    # within 200 characters but over 200 bytes: the script's limit is in bytes
    body = await refused(api, "POST", path, 422, id="x", fields=[
        {"name": "a", "type": "enum", "values": ["ü" * 101]}])
    assert body["detail"] == "fields.a.values: longer than 200 bytes (UTF-8)"
    assert (await api.ok("GET", path))["items"] == []
    assert await audit(api, atenant, "&resource=ticket_type") == []


# --------------------------------------------------------------------------------- tickets


async def test_create_view_and_history(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1.0}})
    api.clock.now = T0 + 5 * S
    body = await api.ok("POST", f"{base(t)}/tickets", role="agent", status=201, json={
        "type": "refund", "group": "g", "fields": {**GOOD, "reason": "late", "count": 2,
                                                   "urgent": True, "due": "2023-12-01"},
        "title": "Refund order 1", "priority": 3, "order_id": "o1"})
    tid = body["ticket"]["id"]
    assert tid.startswith("tk-") and len(tid) == 15 and int(tid[3:], 16) >= 0
    by = await actor(api, "agent")
    assert body["events"] == [sent(api.clock.now, e) for e in [
        {"event": "ticket_created", "ticket": tid, "type": "refund", "group": "g", "by": by,
         "priority": 3, "order_id": "o1", "title": "Refund order 1"},
        {"event": "ticket_assigned", "ticket": tid, "group": "g", "agent": "ann",
         "via": "balanced", "reason": "created", "wait_ms": 0, "previous_agent": None,
         "by": None}]]
    assert body["ticket"] == await ticket(api, t, tid) == {
        "id": tid, "type": "refund", "state": "assigned", "group": "g", "agent": "ann",
        "order_id": "o1", "priority": 3, "title": "Refund order 1",
        "fields": {**GOOD, "reason": "late", "count": 2, "urgent": True, "due": "2023-12-01"},
        "created_ms": T0 + 5 * S, "created_by": by, "entered_group_ms": T0 + 5 * S,
        "assigned_ms": T0 + 5 * S, "first_response_ms": None,
        "first_response_due_ms": T0 + 65 * S, "resolution_due_ms": T0 + 5 * S + H,
        "overdue": False, "breached": [], "hops": [], "path": ["g"], "closed_ms": None,
        "closed_by": None, "resolution": None, "resolution_ms": None}

    # the first response is late: overdue until it comes, breached for good
    assert [e["kind"] for e in await tick(api, t, T0 + 65 * S)] == ["first_response"]
    view = await ticket(api, t, tid)
    assert (view["overdue"], view["breached"]) == (True, ["first_response"])
    api.clock.now = T0 + 70 * S
    await act(api, t, tid, "respond", agent="ann", note="looking")
    view = await ticket(api, t, tid)
    assert (view["state"], view["overdue"], view["breached"], view["first_response_ms"]) == (
        "in_progress", False, ["first_response"], 65 * S)

    history = (await api.ok("GET", f"{base(t)}/tickets/{tid}/history", role="viewer"))["events"]
    assert [(e["type"], e["ts"]) for e in history] == [
        ("ticket_created", T0 + 5 * S), ("ticket_assigned", T0 + 5 * S),
        ("ticket_overdue", T0 + 65 * S), ("ticket_responded", T0 + 70 * S)]
    assert history[0] == {"type": "ticket_created", "ticket": tid, "ticket_type": "refund",
                          "group": "g", "by": by, "priority": 3, "order_id": "o1",
                          "title": "Refund order 1", "ts": T0 + 5 * S}
    assert history[3]["note"] == "looking"
    # what the API's changes did went out on the outbound stream in the same form (the
    # tick, applied here without a gateway, publishes nothing)
    rows = await api.admin.redis.xrange(keys.key("outbound", t))
    published = [json.loads(f[b"json"]) for _, f in rows]
    assert [e for e in published if e.get("ticket") == tid] == [
        e for e in history if e["type"] != "ticket_overdue"]

    entry = (await audit(api, t, "&resource=ticket&action=create"))[0]
    assert (entry["actor"], entry["role"], entry["resource_id"], entry["version"],
            entry["events"]) == (by, "agent", tid, 0, 2)
    assert entry["before"] == [False] and entry["after"][0]["st"] == "assigned"
    assert entry["after"][0]["f"] == {**GOOD, "reason": "late", "count": 2, "urgent": True,
                                      "due": "2023-12-01"}
    assert entry["command"]["op"] == "create_ticket" and entry["command"]["by"] == by
    await refused(api, "GET", f"{base(t)}/tickets/nope", 404, role="viewer")
    await refused(api, "GET", f"{base(t)}/tickets/nope/history", 404, role="viewer")
    await refused(api, "GET", f"{base('nosuch')}/tickets/{tid}", 404)


async def test_create_refusals_name_the_problem(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {})
    path = f"{base(t)}/tickets"

    async def field_error(fields: dict[str, Any]) -> str:
        body = await refused(api, "POST", path, 422, role="agent", type="refund", group="g",
                             fields=fields)
        assert body["code"] == "E_TICKET_FIELD"
        return body["detail"]  # type: ignore[no-any-return]

    assert await field_error({"order_ref": "o-1"}) == "E_TICKET_FIELD missing required field amount"
    assert await field_error({"amount": 1, "order_ref": ""}) == (
        "E_TICKET_FIELD missing required field order_ref")
    assert await field_error({**GOOD, "amount": "12"}) == "E_TICKET_FIELD amount: expected a number"
    assert await field_error({**GOOD, "count": 1.5}) == (
        "E_TICKET_FIELD count: expected an integer")
    assert await field_error({**GOOD, "reason": "bored"}) == (
        "E_TICKET_FIELD reason: expected one of late, broken")
    assert await field_error({**GOOD, "due": "1 Dec"}) == (
        "E_TICKET_FIELD due: expected a date YYYY-MM-DD")
    assert await field_error({**GOOD, "order_ref": "x" * 13}) == (
        "E_TICKET_FIELD order_ref: longer than 12 bytes")
    assert await field_error({**GOOD, "colour": "red", "size": 1}) == (
        "E_TICKET_FIELD not in the template: colour, size")

    ok = {"type": "refund", "group": "g", "fields": GOOD}
    body = await refused(api, "POST", path, 422, role="agent", **{**ok, "type": "nope"})
    assert (body["code"], body["detail"]) == ("E_TICKET_TYPE_UNKNOWN", "unknown ticket type: nope")
    body = await refused(api, "POST", path, 422, role="agent", **{**ok, "group": "zz"})
    assert body["detail"] == "unknown group: zz"
    body = await refused(api, "POST", path, 422, role="agent", **ok, order_owner="ann")
    assert body["detail"] == "order_owner needs order_id"
    body = await refused(api, "POST", path, 422, role="agent", **ok, title="é" * 251)
    assert body["detail"] == "title: longer than 500 bytes (UTF-8)"
    for bad, key in (({"priority": 1001}, "priority"), ({"id": "a b"}, "id"),
                     ({"fields": {"a b": 1}}, "fields"), ({"bogus": 1}, "bogus")):
        body = await refused(api, "POST", path, 400, role="agent", **{**ok, **bad})
        assert key in body["extra"][0]["key"] or key in body["extra"][0]["message"], body
    await refused(api, "POST", path, 403, role="viewer", **ok)
    await refused(api, "POST", f"{base('nosuch')}/tickets", 404, role="agent", **ok)
    assert await audit(api, t, "&resource=ticket") == []

    await create(api, t, "t1")
    body = await refused(api, "POST", path, 409, role="agent", id="t1", **ok)
    assert body["code"] == "E_EXISTS"
    created_by = await create(api, t, "t2", created_by="crm")
    assert created_by["ticket"]["created_by"] == "crm"


async def test_handler_actions_and_their_refusals(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1.0}, "bob": {"h": 1.0}})
    await create(api, t, "t1")
    await create(api, t, "t2", order_id="o2")
    path = f"{base(t)}/tickets/t1"

    body = await refused(api, "POST", f"{path}/respond", 409, role="agent", agent="bob")
    assert (body["code"], body["detail"]) == ("E_NOT_TICKET_HANDLER", "E_NOT_TICKET_HANDLER ann")
    api.clock.now = T0 + 10 * S
    out = await act(api, t, "t1", "respond", agent="ann")
    assert out["events"] == [sent(T0 + 10 * S, {
        "event": "ticket_responded", "ticket": "t1", "group": "g", "agent": "ann",
        "note": None, "first_response_ms": 10 * S})]
    assert (out["ticket"]["state"], out["ticket"]["first_response_ms"]) == ("in_progress", 10 * S)

    await refused(api, "POST", f"{path}/forward", 409, role="agent", agent="bob", to_group="h")
    body = await refused(api, "POST", f"{path}/forward", 422, role="agent", agent="ann",
                         to_group="g")
    assert body["code"] == "E_SAME_GROUP"
    body = await refused(api, "POST", f"{path}/forward", 422, role="agent", agent="ann",
                         to_group="zz")
    assert body["detail"] == "unknown group: zz"
    api.clock.now = T0 + 30 * S
    out = await act(api, t, "t1", "forward", agent="ann", to_group="h", note="billing")
    assert [e["type"] for e in out["events"]] == ["ticket_forwarded", "ticket_assigned"]
    assert (out["ticket"]["group"], out["ticket"]["agent"], out["ticket"]["state"]) == (
        "h", "bob", "assigned")
    api.clock.now = T0 + 50 * S
    out = await act(api, t, "t1", "forward", agent="bob", to_group="g", note="back")
    assert [e["type"] for e in out["events"]] == [
        "ticket_forwarded", "ticket_loop", "ticket_assigned"]
    view = out["ticket"]
    assert view["path"] == ["g", "h", "g"] and view["agent"] == "ann"
    assert view["hops"] == [
        {"hop": 1, "by": "ann", "at_ms": T0 + 30 * S, "from_group": "g", "from_agent": "ann",
         "to_group": "h", "note": "billing", "spent_ms": 30 * S, "loop": False},
        {"hop": 2, "by": "bob", "at_ms": T0 + 50 * S, "from_group": "h", "from_agent": "bob",
         "to_group": "g", "note": "back", "spent_ms": 20 * S, "loop": True}]
    assert view == await ticket(api, t, "t1")

    await refused(api, "POST", f"{path}/close", 409, role="agent", agent="bob", resolution="x")
    await refused(api, "POST", f"{path}/close", 400, role="agent", agent="ann", resolution="")
    api.clock.now = T0 + 90 * S
    out = await act(api, t, "t1", "close", agent="ann", resolution="refunded")
    assert out["events"] == [sent(T0 + 90 * S, {
        "event": "ticket_closed", "ticket": "t1", "group": "g", "type": "refund",
        "agent": "ann", "by": "ann", "resolution": "refunded", "resolution_ms": 90 * S,
        "hops": 2, "breached": None})]
    view = out["ticket"]
    assert (view["state"], view["closed_ms"], view["closed_by"], view["resolution"],
            view["resolution_ms"], view["agent"]) == (
        "closed", T0 + 90 * S, "ann", "refunded", 90 * S, "ann")
    for action, body in (("respond", {"agent": "ann"}), ("close", {"resolution": "again"}),
                         ("forward", {"agent": "ann", "to_group": "h"})):
        got = await refused(api, "POST", f"{path}/{action}", 409, role="supervisor", **body)
        assert (got["code"], got["detail"]) == ("E_TICKET_STATE", "E_TICKET_STATE closed")
    for action, body in (("respond", {"agent": "ann"}), ("close", {"resolution": "r"}),
                         ("forward", {"to_group": "h"}), ("assign", {"agent": "ann"})):
        await refused(api, "POST", f"{base(t)}/tickets/nope/{action}", 404,
                      role="supervisor", **body)

    log = [(e["action"], e["resource_id"], e["role"]) for e in
           await audit(api, t, "&resource=ticket")]
    assert log == [("close", "t1", "agent"), ("forward", "t1", "agent"),
                   ("forward", "t1", "agent"), ("respond", "t1", "agent"),
                   ("create", "t2", "agent"), ("create", "t1", "agent")]


async def test_roles_and_supervisor_actions(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1.0}, "bob": {"g": 1.0}, "cat": {"h": 1.0}})
    supervisor = await actor(api, "supervisor")
    await create(api, t, "t1")  # to ann: least loaded, then by id
    path = f"{base(t)}/tickets/t1"
    await refused(api, "POST", f"{path}/assign", 403, role="agent", agent="bob")
    await refused(api, "POST", f"{path}/forward", 403, role="agent", to_group="h")
    await refused(api, "POST", f"{path}/close", 403, role="agent", resolution="r")
    await refused(api, "POST", f"{path}/respond", 403, role="viewer", agent="ann")
    body = await refused(api, "POST", f"{path}/assign", 422, role="supervisor", agent="cat")
    assert (body["code"], body["detail"]) == ("E_AGENT_NOT_IN_GROUP",
                                              "E_AGENT_NOT_IN_GROUP cat g")
    body = await refused(api, "POST", f"{path}/assign", 422, role="supervisor", agent="zed")
    assert body["detail"] == "unknown agent: zed"
    body = await refused(api, "POST", f"{path}/assign", 409, role="supervisor", agent="ann")
    assert body["detail"] == "E_TICKET_STATE already with ann"

    api.clock.now = T0 + 7 * S
    out = await act(api, t, "t1", "assign", role="supervisor", agent="bob")
    assert out["events"] == [sent(T0 + 7 * S, {
        "event": "ticket_assigned", "ticket": "t1", "group": "g", "agent": "bob",
        "via": "manual", "reason": "manual", "wait_ms": 7 * S, "previous_agent": "ann",
        "by": supervisor})]
    assert (out["ticket"]["agent"], out["ticket"]["assigned_ms"]) == ("bob", T0 + 7 * S)
    entry = (await audit(api, t, "&action=assign"))[0]
    assert entry["id"] == out["audit"]
    assert (entry["actor"], entry["role"], entry["resource"], entry["resource_id"]) == (
        supervisor, "supervisor", "ticket", "t1")
    assert entry["command"] == {"op": "assign_ticket", "ticket": "t1", "agent": "bob",
                                "supervisor": supervisor}
    assert (entry["before"][0]["ag"], entry["after"][0]["ag"]) == ("ann", "bob")

    # a supervisor forwards and closes without being the handler
    out = await act(api, t, "t1", "forward", role="supervisor", to_group="h")
    assert out["events"][0]["by"] == supervisor
    assert out["ticket"]["hops"][0]["by"] == supervisor
    await create(api, t, "t2", group="h")  # cat took t1, and takes t2 too
    await api.ok("POST", f"{base(t)}/agents/cat/status", role="supervisor",
                 json={"status": "offline"})
    await create(api, t, "t3", group="h")
    assert (await ticket(api, t, "t3"))["state"] == "queued"
    out = await act(api, t, "t3", "close", role="supervisor", resolution="duplicate")
    assert (out["ticket"]["state"], out["ticket"]["closed_by"], out["ticket"]["agent"]) == (
        "closed", supervisor, None)
    # an admin is a supervisor too
    out = await act(api, t, "t2", "close", role="admin", resolution="done")
    assert out["ticket"]["closed_by"] == await actor(api, "admin")


async def test_query_filters(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1.0}, "bob": {"g": 1.0, "h": 1.0}})
    await api.ok("PUT", f"{base(t)}/agents/ann", json={"capacity": 1, "abilities": {"g": 1},
                                                       "ticket_limit": 2})
    await api.ok("POST", f"{base(t)}/agents/bob/status", role="supervisor",
                 json={"status": "offline"})
    # t1, t2 -> ann (her limit is 2); t3 queued in g; t4 queued in h
    for n, (tid, grp, order) in enumerate((("t1", "g", "o1"), ("t2", "g", "o2"),
                                           ("t3", "g", "o1"), ("t4", "h", None))):
        api.clock.now = T0 + n * S
        await create(api, t, tid, group=grp, **({"order_id": order} if order else {}))
    api.clock.now = T0 + 10 * S
    await act(api, t, "t1", "respond", agent="ann")  # t1 answered, t2 not
    await act(api, t, "t2", "forward", agent="ann", to_group="h")  # ann handled t2
    # ann's freed slot takes t3; the first responses of t2, t3 and t4 are late
    await tick(api, t, T0 + 63 * S)
    await act(api, t, "t4", "close", role="supervisor", resolution="dup")

    async def ids(query: str) -> list[str]:
        page = await api.ok("GET", f"{base(t)}/tickets{query}", role="viewer")
        assert page["next"] is None
        return [x["id"] for x in page["items"]]

    assert await ids("") == ["t1", "t2", "t3", "t4"]
    assert await ids("?group=g") == ["t1", "t3"]
    assert await ids("?group=h") == ["t2", "t4"]
    assert await ids("?handler=ann") == ["t1", "t3"]  # t3 took ann's freed slot
    assert await ids("?handled_by=ann") == ["t1", "t2", "t3"]
    assert await ids("?handled_by=ann&group=h") == ["t2"]
    assert await ids("?order_id=o1") == ["t1", "t3"]
    assert await ids("?state=queued") == ["t2"]
    assert await ids("?state=closed") == ["t4"]
    assert await ids("?state=in_progress&order_id=o1") == ["t1"]
    assert await ids("?overdue=true") == ["t2", "t3"]
    assert await ids("?overdue=false") == ["t1", "t4"]
    assert await ids("?handler=bob") == []
    page = await api.ok("GET", f"{base(t)}/tickets?limit=3", role="viewer")
    assert [x["id"] for x in page["items"]] == ["t1", "t2", "t3"]
    assert page["next"] == f"{T0 + 2 * S}:t3"
    rest = await api.ok("GET", f"{base(t)}/tickets?limit=3&cursor={page['next']}")
    assert ([x["id"] for x in rest["items"]], rest["next"]) == (["t4"], None)
    t2 = page["items"][1]
    assert (t2["state"], t2["overdue"], t2["breached"], t2["hops"][0]["to_group"]) == (
        "queued", True, ["first_response"], "h")
    for bad in ("?state=open", "?overdue=maybe", "?limit=0", "?cursor=nope", "?group=a%20b"):
        await refused(api, "GET", f"{base(t)}/tickets{bad}", 400, role="viewer")
    await refused(api, "GET", f"{base('nosuch')}/tickets", 404)


# ---------------------------------------------------------- groups, agents and tenants


async def test_group_ticket_settings_and_service_hours(api: Api, atenant: str) -> None:
    t = atenant
    settings = {"reassign_untouched_ms": 60 * S, "release_spread_ms": 0}
    await setup(api, t, {"ann": {"g": 1.0}, "bob": {"g": 1.0}}, groups=("g",),
                service_hours=WEEKDAYS, tickets=settings)
    g = await api.ok("GET", f"{base(t)}/groups/g", role="viewer")
    assert (g["tickets"], g["in_service_hours"]) == (settings, False)
    stored = await api.admin.redis.hget(keys.key("group", t, "g"), "win")
    assert stored is not None
    await api.ok("POST", f"{base(t)}/groups", json={"id": "d"}, status=201)
    default = await api.ok("GET", f"{base(t)}/groups/d")
    assert default["tickets"] == {"reassign_untouched_ms": 4 * H, "release_spread_ms": 15 * 60 * S}

    # outside its hours: held until 09:00 Shanghai, then released to a member
    body = await create(api, t, "t1")
    assert body["events"][1] == sent(api.clock.now, {
        "event": "ticket_held", "ticket": "t1", "group": "g", "reason": "created",
        "until_ms": T0 + OPENS})
    assert body["ticket"]["state"] == "held"
    assert assigned(await tick(api, t, T0 + OPENS - 1)) == []
    assert assigned(await tick(api, t, T0 + OPENS)) == [("ann", "shift_start", None)]
    # untouched for the group's 60 s: another member takes it
    assert assigned(await tick(api, t, T0 + OPENS + 60 * S)) == [("bob", "untouched", "ann")]

    # without service hours the windows are gone: always in service
    await api.ok("PUT", f"{base(t)}/groups/g", json={"tickets": settings})
    assert await api.admin.redis.hget(keys.key("group", t, "g"), "win") is None
    body = await create(api, t, "t2")
    assert body["ticket"]["state"] == "assigned"
    entry = (await audit(api, t, "&resource=group&action=update"))[0]
    assert entry["command"]["ticket_reassign_ms"] == 60 * S
    assert "win" not in entry["before"][0]  # derived: not in the audit log
    await refused(api, "PUT", f"{base(t)}/groups/g", 400,
                  tickets={"reassign_untouched_ms": -1})


async def test_agent_ticket_limit(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1.0}})
    path = f"{base(t)}/agents/ann"
    ann = await api.ok("PUT", path, json={"capacity": 1, "abilities": {"g": 1},
                                          "ticket_limit": 1})
    assert (ann["ticket_limit"], ann["open_tickets"]) == (1, 0)
    await create(api, t, "t1")
    assert (await create(api, t, "t2"))["ticket"]["state"] == "queued"
    assert (await api.ok("GET", path, role="viewer"))["open_tickets"] == 1
    await api.ok("PUT", path, json={"capacity": 1, "abilities": {"g": 1}, "ticket_limit": 5})
    assert assigned(await tick(api, t, T0)) == [("ann", "queue", None)]
    ann = await api.ok("GET", path)
    assert (ann["ticket_limit"], ann["open_tickets"]) == (5, 2)
    await refused(api, "PUT", path, 400, capacity=1, ticket_limit=-1)
    await refused(api, "PUT", path, 400, capacity=1, ticket_limit=100_001)


async def test_tenant_ticket_retention_purges_closed_tickets(api: Api, atenant: str) -> None:
    t = atenant
    tenant = await api.ok("PUT", f"/v1/tenants/{t}", json={"ticket_retention_ms": H})
    assert tenant["ticket_retention_ms"] == H
    await setup(api, t, {"ann": {"g": 1.0}})
    await create(api, t, "t1")
    await act(api, t, "t1", "close", agent="ann", resolution="done")
    await tick(api, t, T0 + H - 1)
    assert (await ticket(api, t, "t1"))["state"] == "closed"
    await tick(api, t, T0 + H)
    await refused(api, "GET", f"{base(t)}/tickets/t1", 404)
    await refused(api, "GET", f"{base(t)}/tickets/t1/history", 404)


async def test_a_token_bound_to_an_agent_acts_only_as_that_agent(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, {"ann": {"g": 1}, "bob": {"g": 1}})
    made = await api.ok("POST", "/v1/tokens", status=201,
                        json={"name": "ann's desk", "role": "agent", "agent": "ann",
                              "tenants": [t]})
    assert made["agent"] == "ann"
    desk = {"Authorization": f"Bearer {made['token']}"}
    r = await api.http.post(f"{base(t)}/tickets", headers=desk,
                            json={"id": "b1", "type": "refund", "group": "g", "fields": GOOD})
    assert r.status_code == 201, r.text
    out = r.json()["ticket"]
    assert out["created_by"] == "ann"  # a bound token creates as its agent
    handler = out["agent"]
    other = "bob" if handler == "ann" else "ann"
    # it may not name another agent, whoever handles the ticket
    for action, body in (("respond", {"agent": other}),
                         ("forward", {"agent": other, "to_group": "h"}),
                         ("close", {"agent": other, "resolution": "x"})):
        r = await api.http.post(f"{base(t)}/tickets/b1/{action}", headers=desk, json=body)
        assert r.status_code == 403, (action, r.text)
        assert "acts only as agent ann" in r.json()["detail"]
    r = await api.http.post(f"{base(t)}/tickets", headers=desk, json={
        "id": "b2", "type": "refund", "group": "g", "fields": GOOD, "created_by": "bob"})
    assert r.status_code == 403, r.text
    if handler == "ann":
        r = await api.http.post(f"{base(t)}/tickets/b1/respond", headers=desk,
                                json={"agent": "ann", "note": "on it"})
        assert r.status_code == 200, r.text
    # only a token of role agent is bound to an agent
    r = await api.call("POST", "/v1/tokens", json={"name": "x", "role": "viewer", "agent": "ann"})
    assert r.status_code == 422, r.text
