"""Ids in URL paths, over real HTTP (admin/checks.py): every route of the app, walked from
its route table, answers a malformed path id with 404 and the error body before the id
reaches a Redis key name; sub-resources of a group, agent, session or ticket that does
not exist are 404; and bodies are decoded strictly (a JSON value of the wrong type is 400).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from litestar.routes import HTTPRoute

from tests.admin_helpers import T0, Api

MALFORMED = ["g1:m", "a1:sk", "tk1:h", "x{y}", "x" * 300, "a b", "é", "*"]
BODIES: dict[str, Any] = {"POST": {}, "PUT": {}}


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


async def _setup(api: Api, t: str) -> None:
    """Group g1, agent a1 in it, ticket type tt1 and ticket tk1: the keys a malformed id
    like ``g1:m`` used to collide with."""
    b = f"/v1/tenants/{t}"
    await api.ok("POST", f"{b}/groups", json={"id": "g1"}, status=201)
    await api.ok("POST", f"{b}/agents", json={"id": "a1", "capacity": 2,
                                              "abilities": {"g1": 1}}, status=201)
    await api.ok("POST", f"{b}/ticket-types", json={"id": "tt1"}, status=201)
    await api.ok("POST", f"{b}/tickets", json={"id": "tk1", "type": "tt1", "group": "g1"},
                 status=201)
    await api.ok("POST", f"{b}/rules", json={"name": "r1", "group": "g1"}, status=201)


def _routes(api: Api) -> list[tuple[str, str, list[str]]]:
    """(method, path template, path parameter names) of every /v1 route."""
    out: list[tuple[str, str, list[str]]] = []
    for route in api.app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/v1"):
            continue
        names = [p if isinstance(p, str) else p.name for p in route.path_parameters]
        for method in sorted(route.methods):
            if method not in ("OPTIONS", "HEAD"):
                out.append((getattr(method, "value", method), route.path, names))
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: quote(values[m.group(1)], safe=""), template)


VALID = {"tenant": "", "group": "g1", "agent": "a1", "team": "tm1", "name": "r1",
         "session": "s1", "ticket_type": "tt1", "ticket": "tk1", "token_id": "abc",
         "tenant_id": "t1", "deleted_ms": "1"}


async def test_every_route_answers_a_malformed_path_id_with_404(api: Api, atenant: str) -> None:
    await _setup(api, atenant)
    routes = _routes(api)
    assert len(routes) > 30  # the walk covers the app
    seen_params: set[str] = set()
    for method, template, names in routes:
        for param in names:
            seen_params.add(param)
            for bad in MALFORMED:
                values = {**VALID, "tenant": atenant, param: bad}
                path = _fill(template, values)
                r = await api.call(method, path, json=BODIES.get(method))
                assert r.status_code == 404, (method, path, r.status_code, r.text)
                body = r.json()
                assert body["status_code"] == 404 and body["detail"], body
                if param == "ticket":
                    assert body["code"] == "E_TICKET_UNKNOWN", body
    assert seen_params == set(VALID)  # a new path parameter needs a thought here


async def test_the_reported_paths(api: Api, atenant: str) -> None:
    await _setup(api, atenant)
    b = f"/v1/tenants/{atenant}"
    for path in (f"{b}/groups/g1:m", f"{b}/agents/a1:sk", f"{b}/tickets/tk1:h",
                 f"{b}/groups/g1:m/queue", f"{b}/tickets/tk1:h/history",
                 f"{b}/ticket-types/tt1:x", f"{b}/sessions/s1:h", "/v1/tenants/acme:x"):
        r = await api.call("GET", path, role="viewer")
        assert r.status_code == 404, (path, r.status_code, r.text)
    r = await api.call("GET", f"{b}/groups/g1:m", role="viewer")
    assert "ids match ^[A-Za-z0-9_.@-]{1,64}$" in r.json()["detail"]
    # the same routes with well-formed ids answer as before
    for path in (f"{b}/groups/g1", f"{b}/agents/a1", f"{b}/tickets/tk1",
                 f"{b}/groups/g1/queue", f"{b}/tickets/tk1/history", f"{b}/rules/r1"):
        await api.ok("GET", path, role="viewer", status=200)


async def test_sub_resources_of_what_does_not_exist_are_404(api: Api, atenant: str) -> None:
    await _setup(api, atenant)
    b = f"/v1/tenants/{atenant}"
    for method, path, body in [
        ("GET", f"{b}/groups/nope/queue", None),
        ("POST", f"{b}/agents/nope/status", {"status": "online"}),
        ("GET", f"{b}/tickets/nope/history", None),
        ("POST", f"{b}/tickets/nope/respond", {"agent": "a1"}),
        ("POST", f"{b}/tickets/nope/close", {"resolution": "x"}),
        ("POST", f"{b}/tickets/nope/assign", {"agent": "a1"}),
        ("POST", f"{b}/tickets/nope/forward", {"to_group": "g1"}),
        ("POST", f"{b}/sessions/nope/assign", {"agent": "a1"}),
        ("POST", f"{b}/sessions/nope/transfer", {"to_group": "g1"}),
        ("POST", f"{b}/sessions/nope/close", {}),
        ("GET", f"{b}/sessions/nope", None),
        ("GET", "/v1/tenants/nope/groups/g1/queue", None),
    ]:
        r = await api.call(method, path, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        if "/tickets/" in path:
            assert r.json()["code"] == "E_TICKET_UNKNOWN", r.text


@pytest.mark.parametrize(("path", "body", "key"), [
    ("ticket-types", {"id": "tt9", "fields": [{"name": "n", "type": "string",
                                                "required": 0}]}, "fields[0].required"),
    ("ticket-types", {"id": "tt9", "fields": [{"name": "n", "type": "string",
                                                "required": "true"}]}, "fields[0].required"),
    ("agents", {"id": "a9", "capacity": "2", "abilities": {}}, "capacity"),
    ("groups", {"id": "g9", "k": "60"}, "k"),
])
async def test_bodies_are_decoded_strictly(api: Api, atenant: str, path: str,
                                           body: dict[str, Any], key: str) -> None:
    r = await api.call("POST", f"/v1/tenants/{atenant}/{path}", json=body)
    assert r.status_code == 400, r.text
    extra = r.json()["extra"]
    assert extra[0]["key"] == key and extra[0]["source"] == "body", extra
    assert extra[0]["message"].startswith("Expected `"), extra
    # and nothing was made
    r = await api.call("GET", f"/v1/tenants/{atenant}/{path}/{body['id']}")
    assert r.status_code == 404


async def test_a_strict_body_on_an_action(api: Api, atenant: str) -> None:
    await _setup(api, atenant)
    r = await api.call("POST", f"/v1/tenants/{atenant}/agents/a1/status",
                       json={"status": "online", "handover": 1})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "handover", r.text
    # a float field takes a JSON integer (JSON Schema's number)
    await api.ok("POST", f"/v1/tenants/{atenant}/groups", json={"id": "g8", "k": 60},
                 status=201)
