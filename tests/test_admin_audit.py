"""The audit log and the tokens of the admin API, over real HTTP: every change is
recorded with who made it and what the resource looked like before and after; tokens are
stored hashed, shown once, revocable and scoped to roles and tenants."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dispatchd import keys
from tests.admin_helpers import T0, Api

S = 1000


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


async def actor(api: Api, role: str) -> str:
    p = await api.admin.tokens.lookup(api.tokens[role])
    assert p is not None
    return p.actor


async def audit(api: Api, t: str, query: str = "",
                role: str = "supervisor") -> list[dict[str, Any]]:
    """The tenant's whole audit log (one page), oldest first."""
    page = await api.ok("GET", f"{base(t)}/audit?limit=1000{query}", role=role)
    assert page["next"] is None
    return list(reversed(page["items"]))


async def busy_tenant(api: Api, t: str) -> None:
    """One of every audited change of a tenant."""
    await api.ok("PUT", f"/v1/tenants/{t}", json={"name": "renamed"})
    await api.ok("POST", f"{base(t)}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{base(t)}/groups", json={"id": "h"}, status=201)
    await api.ok("PUT", f"{base(t)}/groups/g", json={"k": 5.0})
    await api.ok("POST", f"{base(t)}/teams", json={"id": "sh", "name": "SH"}, status=201)
    await api.ok("PUT", f"{base(t)}/teams/sh", json={"name": "Shanghai"})
    await api.ok("POST", f"{base(t)}/agents", status=201,
                 json={"id": "ann", "capacity": 1, "team": "sh", "abilities": {"g": 1.0}})
    await api.ok("PUT", f"{base(t)}/agents/ann",
                 json={"capacity": 2, "team": "sh", "abilities": {"g": 1.0}})
    await api.ok("PUT", f"{base(t)}/rules", json={"rules": [{"name": "r1", "group": "g"}]})
    await api.ok("POST", f"{base(t)}/rules", json={"name": "r2", "group": "h"}, status=201)
    await api.ok("PUT", f"{base(t)}/rules/r2", json={"group": "h", "priority": 3})
    await api.ok("DELETE", f"{base(t)}/rules/r2")
    await api.admin.engine.arrive(t, T0, "s1", "g")
    await api.admin.engine.arrive(t, T0, "s2", "g")
    await api.ok("POST", f"{base(t)}/agents/ann/status", role="supervisor",
                 json={"status": "online"})
    await api.ok("POST", f"{base(t)}/sessions/s2/transfer", role="supervisor",
                 json={"to_group": "h"})
    await api.ok("POST", f"{base(t)}/sessions/s2/assign", role="supervisor",
                 json={"agent": "ann"})
    await api.ok("POST", f"{base(t)}/sessions/s1/close", role="supervisor", json={})
    await api.ok("POST", f"{base(t)}/agents/ann/status", role="admin",
                 json={"status": "offline", "handover": True})
    await api.ok("DELETE", f"{base(t)}/teams/sh", status=409)  # refused: not audited
    await api.ok("POST", f"{base(t)}/sessions/s2/close", role="supervisor", json={})
    await api.ok("DELETE", f"{base(t)}/agents/ann", status=204)
    await api.ok("DELETE", f"{base(t)}/teams/sh", status=204)
    await api.ok("DELETE", f"{base(t)}/rules/r1")
    await api.ok("DELETE", f"{base(t)}/groups/h", status=204)


async def test_every_change_is_audited(api: Api, atenant: str) -> None:
    t = atenant
    await busy_tenant(api, t)
    adm, sup = await actor(api, "admin"), await actor(api, "supervisor")
    assert adm.startswith("token:") and adm.endswith(":test-admin")
    log = await audit(api, t)
    got = [(e["actor"], e["role"], e["action"], e["resource"], e["resource_id"], e["version"])
           for e in log]
    A, U = (adm, "admin"), (sup, "supervisor")
    assert got == [
        (*A, "create", "tenant", t, 1), (*A, "update", "tenant", t, 2),
        (*A, "create", "group", "g", 1), (*A, "create", "group", "h", 1),
        (*A, "update", "group", "g", 2),
        (*A, "create", "team", "sh", 1), (*A, "update", "team", "sh", 2),
        (*A, "create", "agent", "ann", 1), (*A, "update", "agent", "ann", 2),
        (*A, "replace", "rules", "all", 1), (*A, "create_rule", "rules", "all", 2),
        (*A, "update_rule", "rules", "all", 3), (*A, "delete_rule", "rules", "all", 4),
        (*U, "status", "agent", "ann", 3), (*U, "transfer", "session", "s2", 0),
        (*U, "assign", "session", "s2", 0), (*U, "close", "session", "s1", 0),
        (*A, "status", "agent", "ann", 4), (*U, "close", "session", "s2", 0),
        (*A, "delete", "agent", "ann", 5), (*A, "delete", "team", "sh", 3),
        (*A, "delete_rule", "rules", "all", 5), (*A, "delete", "group", "h", 2),
    ]
    assert all(e["ts"] == T0 for e in log)
    assert len({e["id"] for e in log}) == len(log)
    by = {(e["action"], e["resource"], e["resource_id"], e["version"]): e for e in log}

    e = by["update", "tenant", t, 2]
    assert (e["before"], e["after"], e["command"]) == (["test", "86400000", "7776000000"],
                                                       ["renamed", "86400000", "7776000000"],
                                                       None)
    e = by["create", "group", "g", 1]
    assert e["before"] == [False] and e["after"][0]["k"] == "60"
    assert e["command"]["op"] == "configure_group" and e["command"]["group"] == "g"
    e = by["update", "group", "g", 2]
    assert (e["before"][0]["k"], e["after"][0]["k"], e["command"]["k"]) == ("60", "5", 5)
    assert e["events"] == 1
    e = by["update", "team", "sh", 2]
    assert e["before"] == [{"name": "SH", "site": "", "manager": ""}]
    assert e["after"] == [{"name": "Shanghai", "site": "", "manager": ""}]
    e = by["update", "agent", "ann", 2]
    assert (e["before"][0]["cap"], e["after"][0]["cap"]) == ("1", "2")
    assert e["before"][1] == e["after"][1] == {"g": "1"}  # the skills hash
    assert e["command"] == {"op": "configure_agent", "agent": "ann", "capacity": 2,
                            "abilities": {"g": 1}, "team": "sh", "ticket_limit": 20}
    e = by["update_rule", "rules", "all", 3]
    assert [r["priority"] for r in e["before"][0]] == [0, 0]
    assert [r["priority"] for r in e["after"][0]] == [0, 3]
    e = by["delete", "group", "h", 2]
    assert e["before"][0]["k"] == "60" and e["after"] == [False]
    assert e["command"] == {"op": "delete_group", "group": "h"}
    e = by["delete", "agent", "ann", 5]
    assert e["before"][0]["st"] == "offline" and e["after"] == [False, False]
    e = by["close", "session", "s1", 0]
    assert (e["before"][0]["st"], e["after"][0]["st"], e["after"][0]["rs"]) == (
        "assigned", "closed", "closed")


async def test_audit_filters_and_paging(api: Api, atenant: str) -> None:
    t = atenant
    await busy_tenant(api, t)
    every = await audit(api, t)
    sup = await actor(api, "supervisor")
    cases: dict[str, Callable[[dict[str, Any]], bool]] = {
        f"&actor={sup}": lambda e: e["actor"] == sup,
        "&resource=group": lambda e: e["resource"] == "group",
        "&resource=agent&resource_id=ann": lambda e: e["resource_id"] == "ann",
        "&resource_id=s2": lambda e: e["resource_id"] == "s2",
        "&action=update": lambda e: e["action"] == "update",
        "&action=delete&resource=team": lambda e: (e["action"], e["resource"]) == (
            "delete", "team"),
        "&actor=nobody": lambda e: False,
    }
    for query, keep in cases.items():
        assert await audit(api, t, query) == [e for e in every if keep(e)], query
    assert [e["action"] for e in await audit(api, t, f"&actor={sup}")] == [
        "status", "transfer", "assign", "close", "close"]

    # newest first, pages of 4, each page's `next` is the next `before`
    pages, before = [], None
    while True:
        q = f"?limit=4&before={before}" if before else "?limit=4"
        page = await api.ok("GET", f"{base(t)}/audit{q}", role="supervisor")
        pages.append(page["items"])
        before = page["next"]
        if before is None:
            break
        assert before == page["items"][-1]["id"]
    assert [e for p in pages for e in p] == list(reversed(every))
    assert all(len(p) == 4 for p in pages[:-1]) and len(pages) == (len(every) + 3) // 4
    # a page that holds exactly what is left says there is no more (regression: `next`
    # was set whenever the page was full)
    page = await api.ok("GET", f"{base(t)}/audit?limit={len(every)}", role="supervisor")
    assert len(page["items"]) == len(every) and page["next"] is None
    page = await api.ok("GET", f"{base(t)}/audit?limit=3&resource=team", role="supervisor")
    assert [e["action"] for e in page["items"]] == ["delete", "update", "create"]
    assert page["next"] is None
    # filtered pages
    page = await api.ok("GET", f"{base(t)}/audit?limit=2&resource=rules", role="supervisor")
    rest = await api.ok("GET", f"{base(t)}/audit?limit=100&resource=rules&before={page['next']}",
                        role="supervisor")
    rules = [e for e in reversed(every) if e["resource"] == "rules"]
    assert page["items"] + rest["items"] == rules and rest["next"] is None

    assert (await api.call("GET", f"{base(t)}/audit", role="viewer")).status_code == 403
    assert (await api.call("GET", f"{base(t)}/audit?before=bogus")).status_code == 400
    # ids the pattern lets through but Redis refuses (regression: a 500): beyond the
    # largest entry id, every entry is older
    newest = await api.ok("GET", f"{base(t)}/audit?limit=1")
    for path in (f"{base(t)}/audit", "/v1/audit"):
        r = await api.ok("GET", f"{path}?before=99999999999999999999-0&limit=1")
        if path.endswith(f"{t}/audit"):
            assert r["items"] == newest["items"]
        for zero in ("0-0", "00-0"):
            assert await api.ok("GET", f"{path}?before={zero}") == {"items": [], "next": None}
    assert (await api.call("GET", f"{base('zz' + t)}/audit")).status_code == 404


async def test_a_rare_filter_on_a_long_log_pages_on(api: Api, atenant: str) -> None:
    """A filter that matches nothing among the newest 10,000 entries returns a page that
    is not the last one (regression: the scan stopped there with `next` null, so older
    matches could never be reached)."""
    t = atenant
    await api.ok("POST", f"{base(t)}/teams", json={"id": "needle"}, status=201)
    stream = keys.key("audit", t)
    pipe = api.admin.redis.pipeline(transaction=False)
    for n in range(10_500):  # a long log of other changes, written straight to the stream
        pipe.xadd(stream, {"ts": T0, "actor": "x", "role": "admin", "action": "update",
                           "resource": "team", "id": f"hay{n}", "version": 1})
    await pipe.execute()
    found, before, pages = [], None, 0
    while True:
        q = f"&before={before}" if before else ""
        page = await api.ok("GET", f"{base(t)}/audit?limit=10&resource_id=needle{q}")
        found += page["items"]
        pages += 1
        before = page["next"]
        if before is None:
            break
    assert [(e["action"], e["resource_id"]) for e in found] == [("create", "needle")]
    assert pages == 2


async def global_audit(api: Api, rid: str) -> list[dict[str, Any]]:
    page = await api.ok("GET", "/v1/audit?limit=50")
    return [e for e in reversed(page["items"]) if e["resource_id"] == rid]


async def test_tokens_create_list_revoke(api: Api, atenant: str) -> None:
    t = atenant
    adm = await actor(api, "admin")
    api.clock.now = T0 + 7 * S
    made = await api.ok("POST", "/v1/tokens", status=201,
                        json={"name": "ops", "role": "supervisor", "tenants": [t]})
    secret, tid = made.pop("token"), made["id"]
    assert secret.startswith("dsp_") and len(secret) > 40
    assert made == {"id": tid, "name": "ops", "role": "supervisor", "tenants": [t],
                    "created_ms": T0 + 7 * S, "created_by": adm, "agent": None,
                    "expires_ms": None, "last_used_ms": None}

    listed = await api.call("GET", "/v1/tokens")
    assert listed.status_code == 200 and secret not in listed.text
    mine = [x for x in listed.json() if x["id"] == tid]
    assert mine == [made]
    assert all("token" not in x for x in listed.json())

    # the server keeps the SHA-256 only
    stored = await api.admin.redis.hgetall(keys.TOKENS_KEY)
    sha = hashlib.sha256(secret.encode()).hexdigest()
    assert sha.encode() in stored
    blob = b"".join(k + v for k, v in stored.items())
    assert secret.encode() not in blob and secret[4:].encode() not in blob
    assert await api.admin.redis.hget(keys.TOKEN_IDS_KEY, tid) == sha.encode()

    hdr = {"Authorization": f"Bearer {secret}"}
    assert (await api.http.get(f"{base(t)}/summary", headers=hdr)).status_code == 200
    assert (await api.http.get(f"{base(t)}/audit", headers=hdr)).status_code == 200
    assert (await api.http.get("/v1/tokens", headers=hdr)).status_code == 403

    api.clock.now = T0 + 9 * S
    await api.ok("DELETE", f"/v1/tokens/{tid}", status=204)
    r = await api.http.get(f"{base(t)}/summary", headers=hdr)
    assert r.status_code == 401
    assert (await api.call("DELETE", f"/v1/tokens/{tid}")).status_code == 404
    assert tid not in {x["id"] for x in await api.ok("GET", "/v1/tokens")}
    assert await api.admin.redis.hget(keys.TOKEN_IDS_KEY, tid) is None

    log = await global_audit(api, tid)
    assert [(e["action"], e["resource"], e["actor"], e["ts"]) for e in log] == [
        ("create", "token", adm, T0 + 7 * S), ("revoke", "token", adm, T0 + 9 * S)]
    stored_rec = {k: v for k, v in made.items() if k != "last_used_ms"}  # not in the record
    assert log[0]["before"] is None and log[0]["after"] == stored_rec
    assert log[1]["before"] == stored_rec and log[1]["after"] is None
    text = (await api.call("GET", "/v1/audit?limit=50")).text
    assert secret not in text and sha not in text


async def test_tenant_scoped_tokens(api: Api, atenant: str) -> None:
    t = atenant
    other = "o" + uuid.uuid4().hex[:12]
    await api.ok("POST", "/v1/tenants", json={"id": other}, status=201)
    made = await api.ok("POST", "/v1/tokens", status=201,
                        json={"name": "scoped-admin", "role": "admin", "tenants": [t]})
    hdr = {"Authorization": f"Bearer {made['token']}"}

    r = await api.http.post(f"{base(t)}/groups", json={"id": "g"}, headers=hdr)
    assert r.status_code == 201
    for method, path in (("GET", f"{base(other)}/groups"), ("GET", f"/v1/tenants/{other}"),
                         ("POST", f"{base(other)}/groups"), ("GET", f"{base(other)}/audit")):
        r = await api.http.request(method, path, headers=hdr, json={"id": "g"})
        assert r.status_code == 403, (method, path, r.text)
        assert other in r.json()["detail"]
    listed = (await api.http.get("/v1/tenants?limit=1000", headers=hdr)).json()
    assert [x["id"] for x in listed["items"]] == [t]
    # token and tenant administration need a token for all tenants
    for method, path, body in (("POST", "/v1/tenants", {"id": "x" + other}),
                               ("DELETE", f"/v1/tenants/{t}", None),
                               ("POST", "/v1/tokens", {"name": "n", "role": "viewer"}),
                               ("GET", "/v1/tokens", None), ("GET", "/v1/audit", None)):
        r = await api.http.request(method, path, headers=hdr, json=body)
        assert r.status_code == 403, (method, path, r.text)
    # an unscoped supervisor may not either
    assert (await api.call("GET", "/v1/audit", role="supervisor")).status_code == 403
    assert (await api.call("POST", "/v1/tokens", role="supervisor",
                           json={"name": "n", "role": "viewer"})).status_code == 403
    r = await api.call("POST", "/v1/tokens", json={"name": "n", "role": "root"})
    assert r.status_code == 400 and "role" in r.text
    await api.ok("DELETE", f"/v1/tokens/{made['id']}", status=204)


async def test_tenant_deletion_is_in_the_global_audit(api: Api) -> None:
    tid = "d" + uuid.uuid4().hex[:12]
    await api.ok("POST", "/v1/tenants", json={"id": tid}, status=201)
    api.clock.now = T0 + 5 * S
    await api.ok("DELETE", f"/v1/tenants/{tid}", status=204)
    log = await global_audit(api, tid)
    assert [(e["action"], e["resource"], e["actor"], e["ts"]) for e in log] == [
        ("delete", "tenant", await actor(api, "admin"), T0 + 5 * S)]
