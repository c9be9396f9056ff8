"""Every route of the admin app refuses a missing token, a wrong token, a revoked token
and a too-weak role or tenant scope; checked by enumerating the app's routes, so a new
route is covered the day it is added."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.routes import HTTPRoute

from admin.auth import ROLES
from tests.admin_helpers import Api


def routes(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, handler opt) of every route, the OpenAPI document's too;
    not the console's (/console: a session cookie, not a token; tests/test_console.py)."""
    out = []
    for route in api.app.routes:
        assert isinstance(route, HTTPRoute), route
        if route.path.startswith("/console"):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                out.append((method, route.path, dict(handler.opt)))
    return out


def concrete(path: str, tenant: str) -> str:
    path = path.replace("{tenant:str}", tenant)
    return re.sub(r"\{(\w+):\w+\}", lambda m: f"x-{m.group(1)}", path)


async def test_every_route_is_enumerated(api: Api) -> None:
    found = {(m, p) for m, p, _ in routes(api)}
    assert ("GET", "/schema/openapi.json") in found
    assert ("POST", "/v1/tenants/{tenant:str}/groups") in found
    assert len(found) >= 30


async def test_every_route_refuses_a_missing_or_wrong_token(api: Api, atenant: str) -> None:
    for method, path, _ in routes(api):
        url = concrete(path, atenant)
        bad_headers: list[dict[str, str]] = [
            {}, {"Authorization": "Bearer dsp_wrong"}, {"Authorization": "Basic abc"},
            {"Authorization": f"Token {api.tokens['admin']}"}, {"Authorization": "Bearer"},
        ]
        for headers in bad_headers:
            r = await api.http.request(method, url, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)


async def test_every_route_refuses_a_too_weak_role(api: Api, atenant: str) -> None:
    checked = 0
    for method, path, opt in routes(api):
        need = ROLES.index(opt.get("role", "viewer"))
        for weaker in ROLES[:need]:
            r = await api.call(method, concrete(path, atenant), role=weaker, json={})
            assert r.status_code == 403, (method, path, weaker, r.status_code, r.text)
            checked += 1
    assert checked >= 30


async def test_tenant_scoped_tokens_stay_in_their_tenants(api: Api, atenant: str) -> None:
    made = await api.admin.tokens.create(name="scoped", role="admin", tenants=[atenant],
                                         by="tests", now_ms=api.clock())
    assert made is not None
    scoped = {"Authorization": f"Bearer {made[0]}"}
    for method, path, opt in routes(api):
        url = concrete(path, "someone-else")
        r = await api.http.request(method, url, headers=scoped, json={})
        if "{tenant:str}" in path or opt.get("all_tenants"):
            assert r.status_code == 403, (method, path, r.status_code, r.text)
    r = await api.http.get(f"/v1/tenants/{atenant}/groups", headers=scoped)
    assert r.status_code == 200
    listed = await api.http.get("/v1/tenants", headers=scoped)
    assert [t["id"] for t in listed.json()["items"]] == [atenant]


async def test_a_revoked_token_is_refused(api: Api) -> None:
    made = await api.admin.tokens.create(name="short-lived", role="viewer", tenants=None,
                                         by="tests", now_ms=api.clock())
    assert made is not None
    secret, rec = made
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.http.get("/v1/tenants", headers=headers)).status_code == 200
    await api.ok("DELETE", f"/v1/tokens/{rec.id}", status=204)
    r = await api.http.get("/v1/tenants", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_reaches_what_it_may(api: Api, atenant: str, role: str) -> None:
    await api.ok("GET", f"/v1/tenants/{atenant}/summary", role=role)
    r = await api.call("POST", f"/v1/tenants/{atenant}/groups", role=role, json={"id": "g"})
    assert r.status_code == (201 if role == "admin" else 403)
