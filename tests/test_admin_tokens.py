"""Tokens over real HTTP (issue 13): an agent-bound token lives in one tenant; deleting a
tenant takes it from every token and keeps its audit log; OPTIONS, 401 challenges, the
last admin token, expiry and last use."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from litestar.exceptions import ImproperlyConfiguredException

from admin.auth import ROLES, TOUCH_EVERY_MS
from dispatchd import keys
from tests.admin_helpers import T0, Api
from tests.test_admin_auth import concrete, routes

S = 1000
REALM = 'Bearer realm="dispatchd"'
INVALID = 'Bearer realm="dispatchd", error="invalid_token"'


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def hdr(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def new_tenant(api: Api, agents: tuple[str, ...] = ()) -> str:
    t = "k" + uuid.uuid4().hex[:12]
    await api.ok("POST", "/v1/tenants", json={"id": t}, status=201)
    if agents:
        await api.ok("POST", f"/v1/tenants/{t}/groups", json={"id": "g"}, status=201)
    for a in agents:
        await api.ok("POST", f"/v1/tenants/{t}/agents", status=201,
                     json={"id": a, "capacity": 1, "abilities": {"g": 1.0}})
    return t


async def global_audit(api: Api, rid: str) -> list[dict[str, Any]]:
    page = await api.ok("GET", "/v1/audit?limit=200")
    return [e for e in reversed(page["items"]) if e["resource_id"] == rid]


async def token(api: Api, **body: Any) -> dict[str, Any]:
    return await api.ok("POST", "/v1/tokens", status=201, json={"name": "n", **body})  # type: ignore[no-any-return]


# ------------------------------------------------------------------ 1. agent-bound tokens


async def test_an_agent_bound_token_names_one_tenant_where_its_agent_exists(api: Api) -> None:
    t = await new_tenant(api, agents=("a1",))
    other = await new_tenant(api, agents=("a1",))
    refused: list[tuple[dict[str, Any], str]] = [
        ({"role": "agent", "agent": "a1"}, "exactly one tenant"),
        ({"role": "agent", "agent": "a1", "tenants": [t, other]}, "exactly one tenant"),
        ({"role": "agent", "agent": "a9", "tenants": [t]}, f"unknown agent a9 in tenant {t}"),
        ({"role": "agent", "agent": "a1", "tenants": ["nope" + t]}, f"unknown tenant nope{t}"),
        ({"role": "viewer", "tenants": [t, "gone1", "gone2"]}, "unknown tenant gone1, gone2"),
    ]
    for body, why in refused:
        r = await api.call("POST", "/v1/tokens", json={"name": "desk", **body})
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert why in r.json()["detail"], (body, r.text)
    r = await api.call("POST", "/v1/tokens", json={"name": "d", "role": "viewer", "agent": "a1",
                                                   "tenants": [t]})
    assert r.status_code == 422  # only a token of role agent is bound to an agent

    made = await token(api, role="agent", agent="a1", tenants=[t, t])
    assert (made["tenants"], made["agent"]) == ([t], "a1")
    h = hdr(made["token"])
    assert (await api.http.get(f"/v1/tenants/{t}/summary", headers=h)).status_code == 200
    # the same agent id in another tenant is someone else: refused there, reads and writes
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/tenants/{other}/summary", None),
        ("POST", f"/v1/tenants/{other}/tickets", {"type": "x", "group": "g"}),
        ("GET", f"/v1/tenants/{other}/tickets", None)]
    for method, path, payload in calls:
        r = await api.http.request(method, path, headers=h, json=payload)
        assert r.status_code == 403, (method, path, r.text)
    listed = (await api.http.get("/v1/tenants?limit=1000", headers=h)).json()
    assert [x["id"] for x in listed["items"]] == [t]


async def test_an_agent_bound_token_made_before_the_rule_is_refused(api: Api) -> None:
    """A bound token stored without tenants (the API accepted it before) acts nowhere."""
    t = await new_tenant(api, agents=("a1",))
    made = await api.admin.tokens.create(name="old-desk", role="agent", tenants=None,
                                         by="tests", now_ms=api.clock(), agent="a1")
    assert made is not None
    r = await api.http.get(f"/v1/tenants/{t}/summary", headers=hdr(made[0]))
    assert r.status_code == 403 and "without naming its one tenant" in r.json()["detail"]


# ------------------------------------------------------------------ 2. tenant deletion


async def test_deleting_a_tenant_takes_it_from_its_tokens(api: Api) -> None:
    x = await new_tenant(api)
    other = await new_tenant(api)
    only_x = await token(api, role="supervisor", tenants=[x])
    both = await token(api, role="viewer", tenants=[x, other])
    unscoped = await token(api, role="viewer")
    assert (await api.http.get(f"/v1/tenants/{x}", headers=hdr(only_x["token"]))).status_code == 200

    api.clock.now = T0 + 5 * S
    await api.ok("DELETE", f"/v1/tenants/{x}", status=204)
    await api.ok("POST", "/v1/tenants", json={"id": x, "name": "new owner"}, status=201)

    r = await api.http.get(f"/v1/tenants/{x}", headers=hdr(only_x["token"]))
    assert r.status_code == 401 and r.headers["www-authenticate"] == INVALID
    r = await api.http.get(f"/v1/tenants/{x}", headers=hdr(both["token"]))
    assert r.status_code == 403
    assert (await api.http.get(f"/v1/tenants/{other}",
                               headers=hdr(both["token"]))).status_code == 200
    assert (await api.http.get(f"/v1/tenants/{x}",
                               headers=hdr(unscoped["token"]))).status_code == 200
    listed = {p["id"]: p for p in await api.ok("GET", "/v1/tokens")}
    assert only_x["id"] not in listed and listed[both["id"]]["tenants"] == [other]

    adm = (await api.admin.tokens.lookup(api.tokens["admin"])).actor  # type: ignore[union-attr]
    revoked = await global_audit(api, only_x["id"])
    assert [(e["action"], e["actor"], e["ts"]) for e in revoked] == [
        ("create", adm, T0), ("revoke", adm, T0 + 5 * S)]
    assert revoked[1]["before"]["tenants"] == [x] and revoked[1]["after"] is None
    updated = await global_audit(api, both["id"])
    assert [(e["action"], e["actor"], e["ts"]) for e in updated] == [
        ("create", adm, T0), ("update", adm, T0 + 5 * S)]
    assert (updated[1]["before"]["tenants"], updated[1]["after"]["tenants"]) == (
        [x, other], [other])


async def test_creating_a_tenant_takes_its_id_from_stale_tokens(api: Api) -> None:
    """A token naming a tenant id that does not exist (a deletion cut short, or a token
    made while the deletion ran) does not reach a tenant created later with that id."""
    x = "k" + uuid.uuid4().hex[:12]
    made = await api.admin.tokens.create(name="stale", role="admin", tenants=[x],
                                         by="tests", now_ms=api.clock())
    assert made is not None
    await api.ok("POST", "/v1/tenants", json={"id": x}, status=201)
    r = await api.http.get(f"/v1/tenants/{x}", headers=hdr(made[0]))
    assert r.status_code == 401
    assert [e["action"] for e in await global_audit(api, made[1].id)] == ["create", "revoke"]


async def test_a_deleted_tenants_audit_log_is_archived(api: Api) -> None:
    x = await new_tenant(api)
    await api.ok("PUT", f"/v1/tenants/{x}", json={"name": "first"})
    api.clock.now = T0 + 5 * S
    await api.ok("DELETE", f"/v1/tenants/{x}", status=204)
    assert not await api.admin.redis.exists(keys.key("audit", x))

    # re-created: its own log starts empty, the old one is not in it
    api.clock.now = T0 + 6 * S
    await api.ok("POST", "/v1/tenants", json={"id": x}, status=201)
    page = await api.ok("GET", f"/v1/tenants/{x}/audit")
    assert [(e["action"], e["ts"]) for e in page["items"]] == [("create", T0 + 6 * S)]

    api.clock.now = T0 + 7 * S
    await api.ok("DELETE", f"/v1/tenants/{x}", status=204)  # skips the first archive
    adm = (await api.admin.tokens.lookup(api.tokens["admin"])).actor  # type: ignore[union-attr]
    listed = await api.ok("GET", f"/v1/audit/archives?tenant={x}")
    assert listed == {"next": None, "items": [
        {"tenant": x, "deleted_ms": T0 + 7 * S, "deleted_by": adm,
         "expires_ms": T0 + 7 * S + 400 * 86_400_000, "entries": 2},
        {"tenant": x, "deleted_ms": T0 + 5 * S, "deleted_by": adm,
         "expires_ms": T0 + 5 * S + 400 * 86_400_000, "entries": 3}]}
    ttl = await api.admin.redis.pttl(keys.audit_archive(x, T0 + 5 * S))
    assert 399 * 86_400_000 < ttl <= 400 * 86_400_000

    first = await api.ok("GET", f"/v1/audit/archives/{x}/{T0 + 5 * S}")
    assert first["next"] is None
    got = [(e["action"], e["resource"], e["resource_id"], e["actor"], e["version"])
           for e in reversed(first["items"])]
    assert got == [("create", "tenant", x, adm, 1), ("update", "tenant", x, adm, 2),
                   ("delete", "tenant", x, adm, 3)]
    deletion = first["items"][0]
    assert (deletion["ts"], deletion["role"], deletion["before"], deletion["after"]) == (
        T0 + 5 * S, "admin", ["first", "86400000", "7776000000"], [False, False, False])
    # pages and filters as the tenant's log does
    page = await api.ok("GET", f"/v1/audit/archives/{x}/{T0 + 5 * S}?limit=1")
    assert [e["action"] for e in page["items"]] == ["delete"] and page["next"]
    rest = await api.ok("GET", f"/v1/audit/archives/{x}/{T0 + 5 * S}?before={page['next']}"
                               "&action=create")
    assert [e["action"] for e in rest["items"]] == ["create"] and rest["next"] is None

    # paging the listing
    one = await api.ok("GET", f"/v1/audit/archives?tenant={x}&limit=1")
    assert one["next"] == f"{T0 + 7 * S}:{x}"
    two = await api.ok("GET", f"/v1/audit/archives?tenant={x}&limit=1&cursor={one['next']}")
    assert [a["deleted_ms"] for a in two["items"]] == [T0 + 5 * S] and two["next"] is None
    everyone = await api.ok("GET", "/v1/audit/archives?limit=1000")
    assert {(a["tenant"], a["deleted_ms"]) for a in everyone["items"]} >= {
        (x, T0 + 5 * S), (x, T0 + 7 * S)}

    for path, status in ((f"/v1/audit/archives/{x}/{T0}", 404),
                         (f"/v1/audit/archives/zz{x}/{T0 + 5 * S}", 404),
                         (f"/v1/audit/archives/{x}/12a", 400),
                         ("/v1/audit/archives?cursor=bogus", 400)):
        assert (await api.call("GET", path)).status_code == status, path
    for role in ROLES[:-1]:
        assert (await api.call("GET", "/v1/audit/archives", role=role)).status_code == 403

    # an archive that expired leaves the listing
    await api.admin.redis.delete(keys.audit_archive(x, T0 + 5 * S))
    listed = await api.ok("GET", f"/v1/audit/archives?tenant={x}")
    assert [a["deleted_ms"] for a in listed["items"]] == [T0 + 7 * S]
    assert (await api.call("GET", f"/v1/audit/archives/{x}/{T0 + 5 * S}")).status_code == 404


# --------------------------------------------------- 6. OPTIONS, 401s, last admin, expiry


async def test_options_answers_on_every_route(api: Api, atenant: str) -> None:
    methods: dict[str, set[str]] = {}
    for method, path, _ in routes(api):
        methods.setdefault(path, set()).add(method)
    for path, expected in methods.items():
        url = concrete(path, atenant)
        r = await api.http.options(url)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert r.headers["www-authenticate"] == REALM
        r = await api.call("OPTIONS", url, role="viewer")
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert expected <= set(r.headers["allow"].split(", ")), (path, r.headers)
    scoped = await token(api, role="viewer", tenants=[atenant])
    other = await new_tenant(api)
    r = await api.http.options(f"/v1/tenants/{other}/groups", headers=hdr(scoped["token"]))
    assert r.status_code == 403


@pytest.mark.parametrize("error", [RuntimeError, ImproperlyConfiguredException])
async def test_an_unexpected_error_is_logged_with_its_traceback(
        api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        error: type[Exception]) -> None:
    """Litestar's own 500s too (an HTTPException: OPTIONS failed so, silently)."""

    async def broken(_: str) -> None:
        raise error("token store exploded")

    monkeypatch.setattr(api.admin.tokens, "lookup", broken)
    with caplog.at_level(logging.ERROR, logger="dispatchd.admin"):
        r = await api.call("GET", "/v1/tenants")
    assert r.status_code == 500
    failed = [rec for rec in caplog.records if rec.name == "dispatchd.admin"]
    assert failed and failed[0].exc_info is not None
    assert "token store exploded" in caplog.text and "Traceback" in caplog.text


async def test_every_401_carries_its_challenge(api: Api) -> None:
    for headers, challenge in (({}, REALM), ({"Authorization": "Basic abc"}, REALM),
                               (hdr("dsp_wrong"), INVALID)):
        r = await api.http.get("/v1/tenants", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == challenge
    schema = await api.ok("GET", "/schema/openapi.json")
    header = schema["paths"]["/v1/tenants"]["get"]["responses"]["401"]["headers"]
    assert "WWW-Authenticate" in header


async def test_the_last_admin_token_for_all_tenants_stays(api: Api) -> None:
    mine = (await api.admin.tokens.lookup(api.tokens["admin"])).id  # type: ignore[union-attr]
    for p in await api.ok("GET", "/v1/tokens"):  # other modules' admins: only ours is left
        if p["role"] == "admin" and p["tenants"] is None and p["id"] != mine:
            await api.ok("DELETE", f"/v1/tokens/{p['id']}", status=204)
    # a scoped admin and an expired one do not count
    t = await new_tenant(api)
    await token(api, role="admin", tenants=[t])
    soon = await token(api, role="admin", expires_ms=T0 + 10 * S)
    api.clock.now = T0 + 10 * S
    for _ in range(2):  # whoever asks: itself too
        r = await api.call("DELETE", f"/v1/tokens/{mine}")
        assert r.status_code == 409 and "last admin token" in r.json()["detail"], r.text
    await api.ok("GET", "/v1/tokens")  # still works
    # with a second one, either may go, but not both
    spare = await token(api, role="admin")
    await api.ok("DELETE", f"/v1/tokens/{soon['id']}", status=204)
    await api.ok("DELETE", f"/v1/tokens/{spare['id']}", status=204, headers=hdr(spare["token"]))
    assert (await api.call("DELETE", f"/v1/tokens/{mine}")).status_code == 409


async def test_tokens_expire(api: Api) -> None:
    for bad, status in ((T0, 422), (T0 - 1, 422), (0, 400), ("soon", 400), (10**16, 400)):
        r = await api.call("POST", "/v1/tokens",
                           json={"name": "n", "role": "viewer", "expires_ms": bad})
        assert r.status_code == status, (bad, r.text)
        if status == 422:
            assert r.json()["detail"] == "expires_ms: not in the future"
    made = await token(api, role="viewer", expires_ms=T0 + 60 * S)
    assert made["expires_ms"] == T0 + 60 * S
    h = hdr(made["token"])
    api.clock.now = T0 + 60 * S - 1
    assert (await api.http.get("/v1/tenants", headers=h)).status_code == 200
    api.clock.now = T0 + 60 * S
    r = await api.http.get("/v1/tenants", headers=h)
    assert r.status_code == 401 and r.headers["www-authenticate"] == INVALID
    assert "expired" in r.json()["detail"]
    listed = {p["id"]: p for p in await api.ok("GET", "/v1/tokens")}
    assert listed[made["id"]]["expires_ms"] == T0 + 60 * S  # listed until revoked


async def test_last_use_is_listed_and_written_at_most_once_a_minute(api: Api) -> None:
    made = await token(api, role="viewer")

    async def last_used() -> int | None:
        listed = {p["id"]: p for p in await api.ok("GET", "/v1/tokens")}
        return listed[made["id"]]["last_used_ms"]  # type: ignore[no-any-return]

    assert await last_used() is None
    h = hdr(made["token"])
    api.clock.now = T0 + 3 * S
    assert (await api.http.get("/v1/tenants", headers=h)).status_code == 200
    assert await last_used() == T0 + 3 * S
    api.clock.now = T0 + 3 * S + TOUCH_EVERY_MS - 1
    await api.http.get("/v1/tenants", headers=h)
    assert await last_used() == T0 + 3 * S  # no write within the minute
    api.clock.now = T0 + 3 * S + TOUCH_EVERY_MS
    await api.http.get("/v1/tenants", headers=h)
    assert await last_used() == T0 + 3 * S + TOUCH_EVERY_MS


async def test_the_openapi_document_says_it(api: Api) -> None:
    doc = await api.ok("GET", "/schema/openapi.json")
    comps = doc["components"]["schemas"]
    expires = comps["TokenIn"]["properties"]["expires_ms"]
    assert {"type": "null"} in expires["anyOf"] and "expires_ms" not in comps["TokenIn"].get(
        "required", [])
    for field in ("expires_ms", "last_used_ms"):
        assert field in comps["TokenOut"]["properties"]
    assert "/v1/audit/archives" in doc["paths"]
    assert "/v1/audit/archives/{tenant_id}/{deleted_ms}" in doc["paths"]
    assert "409" in doc["paths"]["/v1/tokens/{token_id}"]["delete"]["responses"]


async def test_deleting_an_agent_revokes_the_tokens_bound_to_it(api: Api) -> None:
    """A new agent with a deleted agent's id is someone else: the old desk token must not
    act as it."""
    t = await new_tenant(api, agents=("a1", "a2"))
    bound = await token(api, role="agent", agent="a1", tenants=[t])
    other = await token(api, role="agent", agent="a2", tenants=[t])
    await api.ok("DELETE", f"/v1/tenants/{t}/agents/a1", status=204)
    await api.ok("POST", f"/v1/tenants/{t}/agents", status=201,
                 json={"id": "a1", "capacity": 1, "abilities": {"g": 1.0}})
    r = await api.http.get(f"/v1/tenants/{t}/summary", headers=hdr(bound["token"]))
    assert r.status_code == 401, r.text
    r = await api.http.get(f"/v1/tenants/{t}/summary", headers=hdr(other["token"]))
    assert r.status_code == 200, r.text
    assert [e["action"] for e in await global_audit(api, bound["id"])] == ["create", "revoke"]
