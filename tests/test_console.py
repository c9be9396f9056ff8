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


async def _centre(api: Api, t: str) -> None:
    b = f"/v1/tenants/{t}"
    await api.ok("POST", f"{b}/groups", json={"id": "billing"}, status=201)
    await api.ok("POST", f"{b}/agents", json={"id": "ann", "capacity": 1,
                                              "abilities": {"billing": 1}}, status=201)


async def test_a_viewer_can_change_nothing(api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    async with signed_in(api, "viewer") as client:
        page = await client.get(f"/console/t/{atenant}/agents")
        assert page.status_code == 200 and "Set status of ann" not in page.text
        token = csrf(page.text)  # the viewer's own session token: still refused
        base = f"/console/t/{atenant}"
        for path, data in ((f"{base}/agents/ann/status", {"status": "online"}),
                           (f"{base}/sessions/s1/close", {}),
                           (f"{base}/config/groups/billing", {"k": "1"}),
                           (f"{base}/config/rules", {"op": "delete", "index": "0"})):
            r = await client.post(path, data={**data, "csrf": token})
            assert r.status_code == 403, (path, r.status_code)
        for path in (f"{base}/config", f"{base}/config/groups/billing", f"{base}/audit"):
            assert (await client.get(path)).status_code == 403, path
    agent = await api.ok("GET", f"/v1/tenants/{atenant}/agents/ann")
    assert agent["status"] == "offline"


async def test_a_supervisor_sets_a_status_through_the_api_and_its_audit(
        api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    async with signed_in(api, "supervisor") as client:
        page = await client.get(f"/console/t/{atenant}/agents")
        r = await client.post(f"/console/t/{atenant}/agents/ann/status",
                              data={"status": "online", "csrf": csrf(page.text)})
        assert r.status_code == 303, r.text
        r = await client.post(f"/console/t/{atenant}/agents/ann/status",
                              data={"status": "lunch", "csrf": csrf(page.text)})
        assert r.status_code == 400 and "status: Invalid enum value" in r.text  # by its field
    assert (await api.ok("GET", f"/v1/tenants/{atenant}/agents/ann"))["status"] == "online"
    audit = await api.ok("GET", f"/v1/tenants/{atenant}/audit", params={"resource": "agent"})
    assert audit["items"][0]["action"] == "status"
    assert audit["items"][0]["actor"].endswith(":test-supervisor")


async def test_two_admins_editing_a_group_get_the_version_conflict(
        api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    path = f"/console/t/{atenant}/config/groups/billing"
    async with signed_in(api) as one, signed_in(api) as two:
        form_one, form_two = (await one.get(path)).text, (await two.get(path)).text
        fields = dict(re.findall(r'<input id="[^"]+" name="([^"]+)" type="text" value="([^"]*)"',
                                 form_one))
        version = re.search(r'name="version" value="(\d+)"', form_one).group(1)  # type: ignore[union-attr]
        r = await one.post(path, data={**fields, "k": "10", "version": version,
                                       "csrf": csrf(form_one)})
        assert r.status_code == 303, r.text
        r = await two.post(path, data={**fields, "k": "20", "version": version,
                                       "csrf": csrf(form_two)})
        assert r.status_code == 412 and "Someone else changed this group" in r.text
        assert 'value="10.0"' in r.text  # the form now shows the current values
        r = await one.post(path, data={**fields, "k": "-1", "version": str(int(version) + 1),
                                       "csrf": csrf(form_one)})
        assert r.status_code == 400
        assert re.search(r'id="f-k-error">[^<]*Expected `float` &gt;= 0', r.text), r.text
    group = await api.ok("GET", f"/v1/tenants/{atenant}/groups/billing")
    assert group["k"] == 10


async def test_the_audit_log_spells_out_the_stored_keys(api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    g = await api.ok("GET", f"/v1/tenants/{atenant}/groups/billing")
    body = {k: g[k] for k in ("k", "m", "priority_unit_ms", "tiers", "timers")}
    body["timers"] = {**body["timers"], "queue_warning_ms": 5000}
    await api.ok("PUT", f"/v1/tenants/{atenant}/groups/billing", json=body)
    async with signed_in(api, "supervisor") as client:
        r = await client.get(f"/console/t/{atenant}/audit")
        assert r.status_code == 200
        assert "queue warning ms" in r.text and "qwarn" not in r.text


def _version_in(html: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', html)
    assert found, html
    return found.group(1)


async def test_an_admin_creates_a_group_agent_and_ticket_type(api: Api, atenant: str) -> None:
    base = f"/console/t/{atenant}/config"
    async with signed_in(api) as client:
        page = await client.get(base)
        assert page.status_code == 200
        for label in ("New group id", "New agent id", "New ticket type id"):
            assert f'>{label}</label>' in page.text
        token = csrf(page.text)
        r = await client.post(f"{base}/groups", data={"id": "billing", "csrf": token})
        assert r.status_code == 303, r.text  # then its edit page, which says so
        assert r.headers["location"].startswith(f"{base}/groups/billing?done=")
        r = await client.get(r.headers["location"])
        assert "Group billing created (version 1)." in r.text and "Save group" in r.text
        r = await client.post(f"{base}/agents", data={"id": "ann", "capacity": "2",
                                                      "csrf": token})
        assert r.status_code == 303 and "/config/agents/ann?" in r.headers["location"]
        r = await client.post(f"{base}/ticket-types", data={"id": "refund", "csrf": token})
        assert r.status_code == 303 and "/config/ticket-types/refund?" in r.headers["location"]
        # a taken id: the API's 409, by the id field of that form, what was typed kept
        r = await client.post(f"{base}/groups", data={"id": "billing", "csrf": token})
        assert r.status_code == 409
        err = re.search(r'id="f-new-group-id-error">([^<]*)<', r.text)
        assert err and err.group(1) == "this id is taken (E_EXISTS group billing)", r.text
        assert re.search(r'id="f-new-group-id" name="id" type="text" value="billing" '
                         r'required aria-invalid="true"', r.text)
        assert 'id="f-new-agent-id-error"' not in r.text  # only that form's
        # the API's validation, by its field: a capacity out of range, a bad id
        r = await client.post(f"{base}/agents", data={"id": "bob", "capacity": "-1",
                                                      "csrf": token})
        assert r.status_code == 400
        assert re.search(r'id="f-new-agent-capacity-error">[^<]*&gt;= 0', r.text), r.text
        r = await client.post(f"{base}/ticket-types", data={"id": "no way", "csrf": token})
        assert r.status_code == 400 and 'id="f-new-ticket-type-id-error"' in r.text
        r = await client.post(f"{base}/groups", data={"id": "sales", "csrf": "nope"})
        assert r.status_code == 403  # CSRF
    assert (await api.ok("GET", f"/v1/tenants/{atenant}/agents/ann"))["capacity"] == 2
    assert (await api.call("GET", f"/v1/tenants/{atenant}/groups/sales")).status_code == 404
    audit = await api.ok("GET", f"/v1/tenants/{atenant}/audit", params={"action": "create"})
    assert {(e["resource"], e["resource_id"]) for e in audit["items"]} >= {
        ("group", "billing"), ("agent", "ann"), ("ticket_type", "refund")}


async def test_delete_confirms_and_sends_the_version_shown(api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    await api.ok("POST", f"/v1/tenants/{atenant}/ticket-types", json={"id": "refund"},
                 status=201)
    base = f"/console/t/{atenant}/config"
    async with signed_in(api) as client:
        edit = await client.get(f"{base}/ticket-types/refund")
        assert f'href="{base}/ticket-types/refund/delete"' in edit.text
        confirm = await client.get(f"{base}/ticket-types/refund/delete")
        assert confirm.status_code == 200 and "Delete ticket type refund?" in confirm.text
        shown = _version_in(confirm.text)
        # changed meanwhile: the API's 412 for the version shown, and the new version
        t = await api.ok("GET", f"/v1/tenants/{atenant}/ticket-types/refund")
        await api.ok("PUT", f"/v1/tenants/{atenant}/ticket-types/refund",
                     json={"name": "Refunds"}, headers={"If-Match": f'"{t["version"]}"'})
        r = await client.post(f"{base}/ticket-types/refund/delete",
                              data={"version": shown, "csrf": csrf(confirm.text)})
        assert r.status_code == 412 and "Someone else changed this ticket type" in r.text
        assert _version_in(r.text) == str(int(shown) + 1)
        assert (await api.call("GET", f"/v1/tenants/{atenant}/ticket-types/refund")
                ).status_code == 200
        r = await client.post(f"{base}/ticket-types/refund/delete",
                              data={"version": _version_in(r.text), "csrf": csrf(r.text)})
        assert r.status_code == 303 and r.headers["location"].startswith(f"{base}?done=")
        assert "Ticket type refund deleted" in (await client.get(r.headers["location"])).text
        # a group and an agent, each after its confirmation page
        for segment, rid in (("agents", "ann"), ("groups", "billing")):
            confirm = await client.get(f"{base}/{segment}/{rid}/delete")
            r = await client.post(f"{base}/{segment}/{rid}/delete", data={
                "version": _version_in(confirm.text), "csrf": csrf(confirm.text)})
            assert r.status_code == 303, r.text
        r = await client.post(f"{base}/groups/billing/delete",
                              data={"version": "x", "csrf": csrf(confirm.text)})
        assert r.status_code == 400  # no version: never a delete without If-Match
    for path in ("ticket-types/refund", "agents/ann", "groups/billing"):
        assert (await api.call("GET", f"/v1/tenants/{atenant}/{path}")).status_code == 404
    audit = await api.ok("GET", f"/v1/tenants/{atenant}/audit", params={"action": "delete"})
    assert len(audit["items"]) == 3
    assert all(e["actor"].endswith(":test-admin") for e in audit["items"])


async def test_deleting_a_busy_agent_shows_the_apis_refusal(api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    await api.ok("POST", f"/v1/tenants/{atenant}/agents/ann/status", role="supervisor",
                 json={"status": "online"})
    out = await api.admin.engine.arrive(atenant, api.clock(), "s1", "billing")
    assert out.events[0].agent == "ann"  # type: ignore[union-attr]
    path = f"/console/t/{atenant}/config/agents/ann/delete"
    async with signed_in(api) as client:
        confirm = await client.get(path)
        assert "s1" in confirm.text  # its sessions are shown before confirming
        r = await client.post(path, data={"version": _version_in(confirm.text),
                                          "csrf": csrf(confirm.text)})
        assert r.status_code == 409
        err = re.search(r'role="alert" id="delete-error">([^<]*)<', r.text)
        assert err and "1 assigned" in err.group(1), r.text
        confirm = await client.get(f"/console/t/{atenant}/config/groups/billing/delete")
        r = await client.post(f"/console/t/{atenant}/config/groups/billing/delete", data={
            "version": _version_in(confirm.text), "csrf": csrf(confirm.text)})
        assert r.status_code == 409 and 'id="delete-error"' in r.text
    assert (await api.ok("GET", f"/v1/tenants/{atenant}/agents/ann"))["sessions"] == ["s1"]


async def test_a_supervisor_can_neither_create_nor_delete(api: Api, atenant: str) -> None:
    await _centre(api, atenant)
    base = f"/console/t/{atenant}/config"
    async with signed_in(api, "supervisor") as client:
        page = await client.get(f"/console/t/{atenant}/agents")
        assert "Create group" not in page.text and "/delete" not in page.text
        token = csrf(page.text)  # the supervisor's own session token: still refused
        for path, data in ((f"{base}/groups", {"id": "sales"}),
                           (f"{base}/agents", {"id": "bob", "capacity": "1"}),
                           (f"{base}/ticket-types", {"id": "refund"}),
                           (f"{base}/groups/billing/delete", {"version": "1"}),
                           (f"{base}/agents/ann/delete", {"version": "1"})):
            r = await client.post(path, data={**data, "csrf": token})
            assert r.status_code == 403, (path, r.status_code)
        for path in (f"{base}/groups/billing/delete", f"{base}/agents/ann/delete"):
            assert (await client.get(path)).status_code == 403, path
    for path in ("groups/billing", "agents/ann"):
        assert (await api.call("GET", f"/v1/tenants/{atenant}/{path}")).status_code == 200
    assert (await api.call("GET", f"/v1/tenants/{atenant}/groups/sales")).status_code == 404
