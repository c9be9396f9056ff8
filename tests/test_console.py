"""The supervisor console over real HTTP (no browser): sign-in, sessions, CSRF, roles,
tenant scope, the wallboard's event stream (docs/console.md). The browser tests are in
tests/test_console_browser.py."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx

from tests.admin_helpers import Api


@contextlib.asynccontextmanager
async def signed_in(api: Api, role: str = "admin",
                    token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in to the console."""
    async with httpx.AsyncClient(base_url=api.base, timeout=10) as client:
        r = await client.post("/console/login", data={"token": token or api.tokens[role]})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/console"
        yield client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_sign_in_sets_an_httponly_strict_cookie(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        r = await client.get("/console/login")
        assert r.status_code == 200 and 'for="token"' in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        r = await client.post("/console/login", data={"token": api.tokens["viewer"]})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert api.tokens["viewer"] not in cookie  # the browser never holds the token


async def test_a_wrong_token_is_refused_with_a_message(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        r = await client.post("/console/login", data={"token": "dsp_wrong"})
        assert r.status_code == 401 and "Unknown or revoked token." in r.text
        assert "set-cookie" not in r.headers


async def test_pages_need_a_session(api: Api, atenant: str) -> None:
    async with httpx.AsyncClient(base_url=api.base) as client:
        for path in ("/console/", f"/console/t/{atenant}", f"/console/t/{atenant}/agents"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/console/login", path
        r = await client.get(f"/console/t/{atenant}/live")
        assert r.status_code == 401
        # a bearer token is not a console session
        r = await client.get(f"/console/t/{atenant}", headers=api.auth())
        assert r.status_code == 303


async def test_the_wallboard_renders_and_streams(api: Api, atenant: str) -> None:
    await api.ok("POST", f"/v1/tenants/{atenant}/groups", json={"id": "billing"}, status=201)
    async with signed_in(api, "viewer") as client:
        r = await client.get(f"/console/t/{atenant}")
        assert r.status_code == 200, r.text
        assert 'data-group="billing"' in r.text
        async with client.stream("GET", f"/console/t/{atenant}/live") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    assert line.strip() == "event: board"
                    break


async def test_sign_out_ends_the_session(api: Api, atenant: str) -> None:
    async with signed_in(api) as client:
        page = await client.get(f"/console/t/{atenant}")
        r = await client.post("/console/logout", data={"csrf": "nope"})
        assert r.status_code == 403  # CSRF
        r = await client.post("/console/logout", data={"csrf": csrf(page.text)})
        assert r.status_code == 303
        r = await client.get("/console/login")
        assert "You signed out." in r.text
        r = await client.get(f"/console/t/{atenant}")
        assert r.status_code == 303


async def test_a_revoked_token_signs_the_user_out_with_a_message(api: Api, atenant: str) -> None:
    made = await api.ok("POST", "/v1/tokens", json={"name": "temp", "role": "viewer"},
                        status=201)
    async with signed_in(api, token=made["token"]) as client:
        assert (await client.get(f"/console/t/{atenant}")).status_code == 200
        await api.ok("DELETE", f"/v1/tokens/{made['id']}", status=204)
        r = await client.get(f"/console/t/{atenant}")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        r = await client.get("/console/login")
        assert "Your token was revoked." in r.text


async def test_an_expired_token_signs_the_user_out(api: Api, atenant: str) -> None:
    made = await api.ok("POST", "/v1/tokens", json={
        "name": "short", "role": "viewer", "expires_ms": api.clock.now + 60_000}, status=201)
    async with signed_in(api, token=made["token"]) as client:
        assert (await client.get(f"/console/t/{atenant}")).status_code == 200
        api.clock.now += 120_000
        try:
            r = await client.get(f"/console/t/{atenant}")
            assert r.status_code == 303
            assert "Your token has expired." in (await client.get("/console/login")).text
        finally:
            api.clock.now -= 120_000


async def test_the_tenant_scope_of_the_token_holds(api: Api, atenant: str) -> None:
    made = await api.ok("POST", "/v1/tokens", json={
        "name": "other", "role": "admin", "tenants": [atenant]}, status=201)
    other = "a" + atenant[1:][::-1]
    await api.ok("POST", "/v1/tenants", json={"id": other}, status=201)
    async with signed_in(api, token=made["token"]) as client:
        assert (await client.get(f"/console/t/{atenant}")).status_code == 200
        r = await client.get(f"/console/t/{other}")
        assert r.status_code == 403 and "not valid for tenant" in r.text
        r = await client.get("/console/")
        assert r.status_code == 303 and r.headers["location"] == f"/console/t/{atenant}"
