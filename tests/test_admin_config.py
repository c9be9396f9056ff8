"""The admin API's configuration resources over real HTTP: tenants, skill groups, teams,
agents and routing rules (create, read, update, list, delete, and every refusal), with
``If-Match`` versions and the guarantee that a refused change leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from dispatchd import keys
from tests.admin_helpers import T0, Api

# ------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


async def group(api: Api, t: str, gid: str, **fields: Any) -> dict[str, Any]:
    return await api.ok("POST", f"{base(t)}/groups", json={"id": gid, **fields},  # type: ignore[no-any-return]
                        status=201)


async def agent(api: Api, t: str, aid: str, capacity: int = 1, **fields: Any) -> dict[str, Any]:
    return await api.ok("POST", f"{base(t)}/agents",  # type: ignore[no-any-return]
                        json={"id": aid, "capacity": capacity, **fields}, status=201)


async def audit_len(api: Api, t: str) -> int:
    return len((await api.ok("GET", f"{base(t)}/audit?limit=1000"))["items"])


A_SHIFT = {"weekly": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}


async def refused(api: Api, method: str, path: str, status: int, get: str, t: str,
                  **kwargs: Any) -> dict[str, Any]:
    """Call a change that must be refused with ``status``; the resource at ``get`` and the
    tenant's audit log must be exactly as before. Returns the error body."""
    before = (await api.call("GET", get)).json()
    n = await audit_len(api, t)
    r = await api.call(method, path, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert (await api.call("GET", get)).json() == before
    assert await audit_len(api, t) == n
    return r.json()  # type: ignore[no-any-return]


def strip(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in names}


# ------------------------------------------------------------------------------ tenants


async def test_tenant_create_get_update_delete(api: Api) -> None:
    tid = "t" + uuid.uuid4().hex[:12]
    made = await api.ok("POST", "/v1/tenants", status=201,
                        json={"id": tid, "name": "Acme", "retention_ms": 3_600_000})
    assert made == {"id": tid, "name": "Acme", "retention_ms": 3_600_000,
                    "ticket_retention_ms": 90 * 86_400_000, "version": 1}
    dup = await api.call("POST", "/v1/tenants", json={"id": tid})
    assert dup.status_code == 409 and tid in dup.json()["detail"]
    assert await api.ok("GET", f"/v1/tenants/{tid}", role="viewer") == made

    upd = await api.ok("PUT", f"/v1/tenants/{tid}", status=200,
                       json={"name": "Acme Ltd", "ticket_retention_ms": 3_600_000})
    assert upd == {"id": tid, "name": "Acme Ltd", "retention_ms": 86_400_000,
                   "ticket_retention_ms": 3_600_000, "version": 2}
    assert await api.ok("GET", f"/v1/tenants/{tid}") == upd
    assert (await api.call("PUT", "/v1/tenants/nosuch" + tid, json={})).status_code == 404
    assert (await api.call("GET", "/v1/tenants/nosuch" + tid)).status_code == 404

    await group(api, tid, "g1")
    busy = await api.call("DELETE", f"/v1/tenants/{tid}")
    assert busy.status_code == 409 and "1 groups" in busy.json()["detail"]
    assert await api.ok("GET", f"/v1/tenants/{tid}") == upd
    await api.ok("DELETE", f"{base(tid)}/groups/g1", status=204)
    await api.ok("DELETE", f"/v1/tenants/{tid}", status=204)
    assert (await api.call("GET", f"/v1/tenants/{tid}")).status_code == 404
    assert (await api.call("GET", f"{base(tid)}/groups")).status_code == 404
    assert (await api.call("DELETE", f"/v1/tenants/{tid}")).status_code == 404
    # the id can be used again, from scratch
    again = await api.ok("POST", "/v1/tenants", json={"id": tid}, status=201)
    assert again == {"id": tid, "name": "", "retention_ms": 86_400_000,
                     "ticket_retention_ms": 90 * 86_400_000, "version": 1}
    assert (await api.ok("GET", f"{base(tid)}/groups"))["items"] == []
    assert len((await api.ok("GET", f"{base(tid)}/audit"))["items"]) == 1
    await api.ok("DELETE", f"/v1/tenants/{tid}", status=204)


async def test_tenant_bad_body(api: Api) -> None:
    r = await api.call("POST", "/v1/tenants", json={"id": "x" + uuid.uuid4().hex[:8], "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.text
    r = await api.call("POST", "/v1/tenants", json={"id": "x" + uuid.uuid4().hex[:8],
                                                    "retention_ms": 5})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "retention_ms"
    r = await api.call("POST", "/v1/tenants", json={"id": "x" + uuid.uuid4().hex[:8],
                                                    "ticket_retention_ms": 3_599_999})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "ticket_retention_ms"
    r = await api.call("POST", "/v1/tenants", json={"id": "no spaces"})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "id"


async def test_tenant_list_paging(api: Api) -> None:
    # "-" sorts before every other id character, so these three are the first ids after
    # the bare prefix whatever other tenants the session holds
    prefix = "p" + uuid.uuid4().hex[:12]
    ids = [f"{prefix}-{c}" for c in "abc"]
    for tid in reversed(ids):
        await api.ok("POST", "/v1/tenants", json={"id": tid, "name": tid}, status=201)
    page1 = await api.ok("GET", f"/v1/tenants?limit=2&cursor={prefix}", role="viewer")
    assert [t["id"] for t in page1["items"]] == ids[:2]
    assert page1["items"][0] == {"id": ids[0], "name": ids[0], "retention_ms": 86_400_000,
                                 "ticket_retention_ms": 90 * 86_400_000, "version": 1}
    assert page1["next"] == ids[1]
    page2 = await api.ok("GET", f"/v1/tenants?limit=2&cursor={page1['next']}")
    assert page2["items"][0]["id"] == ids[2]
    last = await api.ok("GET", f"/v1/tenants?limit=1000&cursor={ids[1]}")
    assert last["items"][0]["id"] == ids[2]
    assert all(a["id"] < b["id"] for a, b in zip(last["items"], last["items"][1:], strict=False))
    for tid in ids:
        await api.ok("DELETE", f"/v1/tenants/{tid}", status=204)
    after = await api.ok("GET", f"/v1/tenants?limit=2&cursor={prefix}")
    assert not any(t["id"].startswith(prefix) for t in after["items"])


# ------------------------------------------------------------------------------- groups

FULL_GROUP: dict[str, Any] = {
    "name": "Billing (zh)",
    "business_line": "payments",
    "channel": "app",
    "language": "zh",
    "scene": "after_sale",
    "service_mode": "im",
    "ability_tier": "senior",
    "service_hours": {
        "time_zone": "Asia/Shanghai",
        "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"},
                   {"days": ["sat"], "start": "22:00", "end": "06:00"}],
        "closed_dates": ["2023-10-01", "2024-02-10"],
    },
    "k": 12.5,
    "m": 0.25,
    "priority_unit_ms": 30_000,
    "tiers": [{"after_ms": 30_000, "groups": ["l2"]},
              {"after_ms": 120_000, "groups": ["bot", "l3"]}],
    "sticky_ms": 600_000,
    "preference_ms": 45_000,
    "timers": {"queue_warning_ms": 90_000, "queue_timeout_ms": 900_000,
               "position_update_ms": 15_000, "reply_sla_ms": 30_000,
               "reply_reassign_ms": 240_000, "silence_remind_ms": 60_000,
               "silence_preclose_ms": 180_000, "silence_close_ms": 600_000,
               "confirm_close_ms": 120_000},
    "service_level_ms": 15_000,
    "service_level_target": 0.9,
    "tickets": {"reassign_untouched_ms": 7_200_000, "release_spread_ms": 0},
    "record_decisions": True,
}


async def test_group_full_round_trip(api: Api, atenant: str) -> None:
    t = atenant
    for g in ("l2", "l3", "bot"):
        await group(api, t, g)
    # T0 is Wednesday 06:13 in Shanghai: before the 09:00 shift
    made = await group(api, t, "billing", **FULL_GROUP)
    assert strip(made, "id", "version", "in_service_hours") == FULL_GROUP
    assert made["id"] == "billing" and made["version"] == 1
    assert made["in_service_hours"] is False
    assert await api.ok("GET", f"{base(t)}/groups/billing", role="viewer") == made
    api.clock.now = T0 + 4 * 3_600_000  # 10:13 local
    assert (await api.ok("GET", f"{base(t)}/groups/billing"))["in_service_hours"] is True

    changed = {**FULL_GROUP, "name": "Billing", "k": 5.0, "tiers": [
        {"after_ms": 10_000, "groups": ["bot"]}], "service_hours": None,
        "timers": {**FULL_GROUP["timers"], "queue_timeout_ms": 0}}
    upd = await api.ok("PUT", f"{base(t)}/groups/billing", json=changed, status=200)
    assert strip(upd, "id", "version", "in_service_hours") == changed
    assert upd["version"] == 2 and upd["in_service_hours"] is True
    assert await api.ok("GET", f"{base(t)}/groups/billing") == upd

    # PUT replaces: what the body leaves out goes back to its default
    reset = await api.ok("PUT", f"{base(t)}/groups/billing", json={"channel": "web"})
    defaults = await group(api, t, "fresh")
    assert strip(reset, "id", "version") == {**strip(defaults, "id", "version"),
                                             "channel": "web"}
    assert reset["version"] == 3


async def test_service_hours_follow_the_zone_and_dst(api: Api, atenant: str) -> None:
    t = atenant
    hours = {"time_zone": "Europe/Berlin", "closed_dates": [], "weekly": [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"},
        {"days": ["sat"], "start": "22:00", "end": "06:00"}]}
    await group(api, t, "g", service_hours=hours)

    async def open_at(ms: int) -> bool:
        api.clock.now = ms
        return (await api.ok("GET", f"{base(t)}/groups/g"))["in_service_hours"]  # type: ignore[no-any-return]

    # the same 07:30 UTC is 08:30 local before the clocks change and 09:30 after
    assert await open_at(1_711_697_400_000) is False  # Fri 2024-03-29 07:30Z
    assert await open_at(1_712_302_200_000) is True  # Fri 2024-04-05 07:30Z
    # the Saturday night shift runs into Sunday, across the change itself
    assert await open_at(1_711_837_800_000) is True  # Sat 23:30 CET
    assert await open_at(1_711_855_800_000) is True  # Sun 05:30 CEST
    assert await open_at(1_711_863_000_000) is False  # Sun 07:30 CEST
    await api.ok("PUT", f"{base(t)}/groups/g",
                 json={"service_hours": {**hours, "closed_dates": ["2024-04-05"]}})
    assert await open_at(1_712_302_200_000) is False  # a public holiday


async def test_group_list_paging(api: Api, atenant: str) -> None:
    t = atenant
    for g in ("g5", "g3", "g1", "g4", "g2"):
        await group(api, t, g, name=g.upper())
    seen, cursor, pages = [], None, 0
    while True:
        q = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = await api.ok("GET", f"{base(t)}/groups{q}", role="viewer")
        pages += 1
        seen += [(g["id"], g["name"]) for g in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
        assert cursor == page["items"][-1]["id"]
    assert pages == 3
    assert seen == [(f"g{n}", f"G{n}") for n in range(1, 6)]
    assert (await api.ok("GET", f"{base(t)}/groups?limit=5"))["next"] is None
    assert (await api.call("GET", f"{base(t)}/groups?limit=0")).status_code == 400


async def test_group_refusals_name_the_problem(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g1")
    path = f"{base(t)}/groups"
    for method, p in (("GET", "/nope"), ("PUT", "/nope"), ("DELETE", "/nope")):
        r = await api.call(method, path + p, json={} if method == "PUT" else None)
        assert r.status_code == 404, (method, r.text)
        assert "nope" in r.json()["detail"]
    r = await api.call("POST", path, json={"id": "g1"})
    assert r.status_code == 409 and r.json()["code"] == "E_EXISTS" and "g1" in r.json()["detail"]

    r = await api.call("POST", path, json={"id": "g2",
                                           "tiers": [{"after_ms": 1, "groups": ["gx"]}]})
    assert r.status_code == 422 and r.json()["detail"] == "unknown group: gx"
    r = await api.call("POST", path, json={"id": "g2",
                                           "tiers": [{"after_ms": 1, "groups": ["g2"]}]})
    assert r.status_code == 422 and r.json()["code"] == "E_BAD_TIER"
    r = await api.call("POST", path, json={"id": "g2", "tiers": [
        {"after_ms": 5, "groups": ["g1"]}, {"after_ms": 5, "groups": ["g1"]}]})
    assert r.status_code == 422 and r.json()["code"] == "E_BAD_TIER"

    bad = [({"id": "g2", "colour": "red"}, "colour"), ({"id": "g2", "k": -1}, "k"),
           ({"id": "g2", "scene": "bogus"}, "scene"),
           ({"id": "g2", "service_level_target": 1.5}, "service_level_target"),
           ({"id": "g2", "timers": {"reply_sla_ms": -1}}, "timers.reply_sla_ms"),
           ({"id": "g2", "service_hours": {"time_zone": "UTC", "weekly": [
               {"days": ["mon"], "start": "25:00", "end": "26:00"}]}},
            "service_hours.weekly[0].start")]
    for body, field in bad:
        r = await api.call("POST", path, json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.text, (field, r.text)
    r = await api.call("POST", path,
                       json={"id": "g2", "service_hours": {"time_zone": "Mars/Olympus", **A_SHIFT}})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("service_hours.time_zone:")
    assert "Mars/Olympus" in r.json()["detail"]
    r = await api.call("PUT", f"{path}/g1",
                       json={"service_hours": {"time_zone": "Nowhere/X", **A_SHIFT}})
    assert r.status_code == 422 and "service_hours.time_zone" in r.json()["detail"]
    assert (await api.call("GET", f"{path}/g2")).status_code == 404
    assert (await api.ok("GET", f"{path}/g1"))["version"] == 1


async def test_group_delete_refused_while_used(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/groups"
    for g in ("g", "src", "other"):
        await group(api, t, g)
    await agent(api, t, "ann", abilities={"g": 1.0, "other": 2.0})

    # a queued customer
    await api.admin.engine.arrive(t, T0, "s1", "g")
    body = await refused(api, "DELETE", f"{path}/g", 409, f"{path}/g", t)
    assert body["code"] == "E_GROUP_BUSY" and "1 open sessions" in body["detail"]
    await api.ok("POST", f"{base(t)}/sessions/s1/close", role="supervisor", json={})

    # another group overflows into it
    await api.ok("PUT", f"{path}/src", json={"tiers": [{"after_ms": 0, "groups": ["g"]}]})
    body = await refused(api, "DELETE", f"{path}/g", 409, f"{path}/g", t)
    assert body["code"] == "E_GROUP_IN_USE" and "overflow tier of src" in body["detail"]
    await api.ok("PUT", f"{path}/src", json={})

    # a routing rule sends customers to it
    await api.ok("POST", f"{base(t)}/rules", json={"name": "to-g", "group": "g"}, status=201)
    body = await refused(api, "DELETE", f"{path}/g", 409, f"{path}/g", t)
    assert body["code"] == "E_GROUP_IN_USE" and "routing rule to-g" in body["detail"]
    await api.ok("DELETE", f"{base(t)}/rules/to-g")

    await api.ok("DELETE", f"{path}/g", status=204)
    assert (await api.call("GET", f"{path}/g")).status_code == 404
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert ann["abilities"] == {"other": 2.0}  # membership gone, other groups untouched
    assert [g["id"] for g in (await api.ok("GET", path))["items"]] == ["other", "src"]
    # the id is free again; its version goes on counting (create, delete, create), so an
    # If-Match taken before the delete cannot match the new group
    assert (await group(api, t, "g"))["version"] == 3


# -------------------------------------------------------------------------------- teams


async def test_team_crud(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/teams"
    made = await api.ok("POST", path, status=201,
                        json={"id": "sh", "name": "Shanghai", "site": "SH", "manager": "Li"})
    assert made == {"id": "sh", "name": "Shanghai", "site": "SH", "manager": "Li", "version": 1}
    assert (await api.call("POST", path, json={"id": "sh"})).status_code == 409
    assert await api.ok("GET", f"{path}/sh", role="viewer") == made
    upd = await api.ok("PUT", f"{path}/sh", json={"name": "SH-1", "site": "SH"})
    assert upd == {"id": "sh", "name": "SH-1", "site": "SH", "manager": "", "version": 2}
    assert await api.ok("GET", f"{path}/sh") == upd
    assert (await api.call("PUT", f"{path}/nope", json={})).status_code == 404
    assert (await api.call("GET", f"{path}/nope")).status_code == 404
    assert (await api.call("DELETE", f"{path}/nope")).status_code == 404

    for tid in ("bj", "gz"):
        await api.ok("POST", path, json={"id": tid}, status=201)
    page = await api.ok("GET", f"{path}?limit=2")
    assert [x["id"] for x in page["items"]] == ["bj", "gz"] and page["next"] == "gz"
    page = await api.ok("GET", f"{path}?limit=2&cursor=gz")
    assert page == {"items": [upd], "next": None}

    r = await api.call("POST", f"{base(t)}/agents", json={"id": "a1", "capacity": 1, "team": "xx"})
    assert r.status_code == 422 and "team" in r.json()["detail"] and "xx" in r.json()["detail"]
    await agent(api, t, "a1", team="sh")
    body = await refused(api, "DELETE", f"{path}/sh", 409, f"{path}/sh", t)
    assert "a1" in body["detail"]
    await api.ok("PUT", f"{base(t)}/agents/a1", json={"capacity": 1, "team": "bj"})
    await api.ok("DELETE", f"{path}/sh", status=204)
    assert (await api.call("GET", f"{path}/sh")).status_code == 404
    assert (await api.ok("GET", f"{base(t)}/agents/a1"))["team"] == "bj"


# ------------------------------------------------------------------------------- agents


async def test_agent_crud(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/agents"
    await group(api, t, "g1")
    await group(api, t, "g2")
    await api.ok("POST", f"{base(t)}/teams", json={"id": "sh"}, status=201)
    made = await agent(api, t, "ann", capacity=3, name="Ann", team="sh",
                       abilities={"g1": 2.0, "g2": 0.5})
    assert made == {
        "id": "ann", "name": "Ann", "team": "sh", "capacity": 3,
        "abilities": {"g1": 2.0, "g2": 0.5}, "status": "offline", "load": 0, "preclosed": 0,
        "sessions": [], "preclosed_sessions": [], "parked": [], "last_assigned_ms": None,
        "groups": [{"group": "g1", "ability": 2.0, "candidate": False, "readiness": None},
                   {"group": "g2", "ability": 0.5, "candidate": False, "readiness": None}],
        "ticket_limit": 20, "open_tickets": 0, "version": 1,
    }
    assert await api.ok("GET", f"{path}/ann", role="viewer") == made
    assert (await api.call("POST", path, json={"id": "ann", "capacity": 1})).status_code == 409

    upd = await api.ok("PUT", f"{path}/ann", json={"capacity": 5, "abilities": {"g2": 4.0}})
    assert upd["capacity"] == 5 and upd["abilities"] == {"g2": 4.0}
    assert upd["team"] is None and upd["name"] == "" and upd["version"] == 2
    assert await api.ok("GET", f"{path}/ann") == upd
    members = await api.ok("GET", f"{path}?group=g1")
    assert members["items"] == []
    assert [a["id"] for a in (await api.ok("GET", f"{path}?group=g2"))["items"]] == ["ann"]

    r = await api.call("POST", path, json={"id": "bob", "capacity": 1, "abilities": {"zz": 1}})
    assert r.status_code == 422 and r.json()["detail"] == "unknown group: zz"
    r = await api.call("POST", path, json={"id": "bob", "capacity": -1})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "capacity"
    r = await api.call("POST", path, json={"id": "bob", "capacity": 1, "abilities": {"g1": 0}})
    assert r.status_code == 400 and "abilities" in r.text
    r = await api.call("POST", path, json={"id": "bob"})
    assert r.status_code == 400 and "capacity" in r.text
    for method in ("GET", "PUT", "DELETE"):
        body = {"capacity": 1} if method == "PUT" else None
        r = await api.call(method, f"{path}/nope", json=body)
        assert r.status_code == 404, (method, r.text)

    for aid in ("bob", "cat", "dan"):
        await agent(api, t, aid, abilities={"g1": 1.0})
    page = await api.ok("GET", f"{path}?limit=3")
    assert [a["id"] for a in page["items"]] == ["ann", "bob", "cat"] and page["next"] == "cat"
    page = await api.ok("GET", f"{path}?limit=3&cursor=cat")
    assert [a["id"] for a in page["items"]] == ["dan"] and page["next"] is None
    await api.ok("POST", f"{path}/cat/status", role="supervisor", json={"status": "online"})
    online = await api.ok("GET", f"{path}?status=online")
    assert [a["id"] for a in online["items"]] == ["cat"]
    offline = await api.ok("GET", f"{path}?status=offline&limit=2")
    assert [a["id"] for a in offline["items"]] == ["ann", "bob"] and offline["next"] == "bob"

    await api.ok("DELETE", f"{path}/dan", status=204)
    assert (await api.call("GET", f"{path}/dan")).status_code == 404
    assert [a["id"] for a in (await api.ok("GET", f"{path}?group=g1"))["items"]] == ["bob", "cat"]


async def test_agent_delete_refused_while_it_has_sessions(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/agents"
    await group(api, t, "g")
    await agent(api, t, "ann", capacity=2, abilities={"g": 1.0})
    await api.ok("POST", f"{path}/ann/status", role="supervisor", json={"status": "online"})
    out = await api.admin.engine.arrive(t, T0, "s1", "g")
    assert out.events[0].agent == "ann"  # type: ignore[union-attr]
    body = await refused(api, "DELETE", f"{path}/ann", 409, f"{path}/ann", t)
    assert body["code"] == "E_AGENT_BUSY" and "1 assigned" in body["detail"]
    # pre-closed sessions count too
    await api.admin.engine.preclose_session(t, T0, "s1")
    body = await refused(api, "DELETE", f"{path}/ann", 409, f"{path}/ann", t)
    assert "1 pre-closed" in body["detail"]
    await api.ok("POST", f"{base(t)}/sessions/s1/close", role="supervisor", json={})
    # so do customers waiting for it (directed to it while it is away)
    await api.ok("POST", f"{path}/ann/status", role="supervisor", json={"status": "away"})
    await api.admin.engine.arrive(t, T0, "s2", "g", directed_agent="ann")
    ann = await api.ok("GET", f"{path}/ann")
    assert (ann["status"], ann["load"], ann["parked"]) == ("away", 0, ["s2"])
    assert (await api.ok("GET", f"{base(t)}/sessions/s2"))["parked_with"] == "ann"
    body = await refused(api, "DELETE", f"{path}/ann", 409, f"{path}/ann", t)
    assert "1 parked" in body["detail"]
    await api.ok("POST", f"{base(t)}/sessions/s2/close", role="supervisor", json={})
    await api.ok("DELETE", f"{path}/ann", status=204)
    assert (await api.ok("GET", f"{base(t)}/summary"))["groups"][0]["members"] == 0


# -------------------------------------------------------------------------------- rules


def rule(name: str, grp: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "group": grp, "match": {}, "priority": 0, "preferred_agent": None,
            "blocked_agents": [], **fields}


async def test_rules_crud(api: Api, atenant: str) -> None:
    t = atenant
    path = f"{base(t)}/rules"
    for g in ("vip", "sales", "general"):
        await group(api, t, g)
    assert await api.ok("GET", path, role="viewer") == {"rules": [], "version": 0}

    vip = rule("vip", "vip", match={"level": ["gold", "platinum"], "spend": {"min": 1000}},
               priority=5, blocked_agents=["troll"])
    general = rule("general", "general")
    out = await api.ok("PUT", path, json={"rules": [vip, general]})
    assert out == {"rules": [vip, general], "version": 1}

    sales = rule("sales", "sales", match={"scene": "pre_sale", "new": True},
                 preferred_agent="ann")
    out = await api.ok("POST", path, json={**sales, "position": 1}, status=201)
    assert [r["name"] for r in out["rules"]] == ["vip", "sales", "general"]
    assert out["rules"][1] == sales and out["version"] == 2
    first = rule("first", "sales", match={"lang": "en"})
    out = await api.ok("POST", path, json={**first, "position": 0}, status=201)
    last = rule("last", "general", match={"age": {"max": 17.5}})
    out = await api.ok("POST", path, json=last, status=201)
    assert [r["name"] for r in out["rules"]] == ["first", "vip", "sales", "general", "last"]
    assert await api.ok("GET", path) == out

    assert await api.ok("GET", f"{path}/sales") == sales
    assert (await api.call("GET", f"{path}/nope")).status_code == 404

    new_sales = rule("sales", "general", priority=-3)
    out = await api.ok("PUT", f"{path}/sales", json=strip(new_sales, "name"))
    assert [r["name"] for r in out["rules"]] == ["first", "vip", "sales", "general", "last"]
    assert out["rules"][2] == new_sales
    assert (await api.call("PUT", f"{path}/nope", json={"group": "sales"})).status_code == 404

    await api.ok("DELETE", f"{path}/vip", status=204)
    out = await api.ok("GET", path)
    assert [r["name"] for r in out["rules"]] == ["first", "sales", "general", "last"]
    assert (await api.call("DELETE", f"{path}/vip")).status_code == 404
    version = out["version"]

    # refusals change nothing
    body = await refused(api, "POST", path, 409, path, t, json=rule("sales", "vip"))
    assert "sales" in body["detail"]
    body = await refused(api, "PUT", path, 422, path, t,
                         json={"rules": [rule("a", "vip"), rule("a", "sales")]})
    assert "unique" in body["detail"]
    body = await refused(api, "POST", path, 422, path, t, json=rule("x", "nogroup"))
    assert body["detail"] == "unknown group: nogroup"
    body = await refused(api, "PUT", f"{path}/sales", 422, path, t, json={"group": "nogroup"})
    assert body["detail"] == "unknown group: nogroup"
    body = await refused(api, "PUT", path, 422, path, t, json={"rules": [rule("y", "zz")]})
    assert body["detail"] == "unknown group: zz"
    await refused(api, "POST", path, 400, path, t, json={**rule("x", "vip"), "priority": 5000})
    await refused(api, "POST", path, 400, path, t, json={**rule("x", "vip"), "colour": 1})
    assert (await api.ok("GET", path))["version"] == version

    out = await api.ok("PUT", path, json={"rules": []})
    assert out == {"rules": [], "version": version + 1}


# ------------------------------------------------------------------------------ If-Match


async def test_if_match_versions(api: Api, atenant: str) -> None:
    t = atenant
    g = await group(api, t, "g")
    stale = {"If-Match": f'"{g["version"]}"'}
    g2 = await api.ok("PUT", f"{base(t)}/groups/g", json={"k": 1}, headers=stale)
    assert g2["version"] == 2
    body = await refused(api, "PUT", f"{base(t)}/groups/g", 412, f"{base(t)}/groups/g", t,
                         json={"k": 9}, headers=stale)
    assert body["code"] == "E_VERSION" and "now 2" in body["detail"]
    await refused(api, "DELETE", f"{base(t)}/groups/g", 412, f"{base(t)}/groups/g", t,
                  headers=stale)
    assert (await api.call("PUT", f"{base(t)}/groups/g", json={},
                           headers={"If-Match": "soon"})).status_code == 400
    weak = await api.ok("PUT", f"{base(t)}/groups/g", json={"k": 2}, headers={"If-Match": 'W/"2"'})
    assert weak["version"] == 3 and weak["k"] == 2.0

    a = await agent(api, t, "ann")
    await api.ok("PUT", f"{base(t)}/agents/ann", json={"capacity": 2},
                 headers={"If-Match": f'"{a["version"]}"'})
    await refused(api, "PUT", f"{base(t)}/agents/ann", 412, f"{base(t)}/agents/ann", t,
                  json={"capacity": 9}, headers={"If-Match": '"1"'})
    await api.ok("DELETE", f"{base(t)}/agents/ann", headers={"If-Match": '"2"'}, status=204)

    tm = await api.ok("POST", f"{base(t)}/teams", json={"id": "sh"}, status=201)
    await api.ok("PUT", f"{base(t)}/teams/sh", json={"name": "x"},
                 headers={"If-Match": f'"{tm["version"]}"'})
    await refused(api, "DELETE", f"{base(t)}/teams/sh", 412, f"{base(t)}/teams/sh", t,
                  headers={"If-Match": '"1"'})
    await api.ok("DELETE", f"{base(t)}/teams/sh", headers={"If-Match": '"2"'}, status=204)

    tenant = await api.ok("GET", f"/v1/tenants/{t}")
    await api.ok("PUT", f"/v1/tenants/{t}", json={"name": "n"},
                 headers={"If-Match": f'"{tenant["version"]}"'})
    await refused(api, "PUT", f"/v1/tenants/{t}", 412, f"/v1/tenants/{t}", t,
                  json={"name": "m"}, headers={"If-Match": f'"{tenant["version"]}"'})

    rules = await api.ok("PUT", f"{base(t)}/rules", json={"rules": [rule("r", "g")]},
                         headers={"If-Match": '"0"'})
    assert rules["version"] == 1
    stale_rules = {"If-Match": '"0"'}
    await refused(api, "PUT", f"{base(t)}/rules", 412, f"{base(t)}/rules", t,
                  json={"rules": []}, headers=stale_rules)
    await refused(api, "POST", f"{base(t)}/rules", 412, f"{base(t)}/rules", t,
                  json=rule("r2", "g"), headers=stale_rules)
    await refused(api, "PUT", f"{base(t)}/rules/r", 412, f"{base(t)}/rules", t,
                  json={"group": "g", "priority": 1}, headers=stale_rules)
    await refused(api, "DELETE", f"{base(t)}/rules/r", 412, f"{base(t)}/rules", t,
                  headers=stale_rules)
    await api.ok("DELETE", f"{base(t)}/rules/r", headers={"If-Match": '"1"'}, status=204)
    assert await api.ok("GET", f"{base(t)}/rules") == {"rules": [], "version": 2}


# ----------------------------------------------------------------------- concurrency


async def test_concurrent_creates_of_one_tenant(api: Api) -> None:
    """One create wins, the others are 409 (regression: the existence check and the write
    were apart, so two creates could both get 201, the second overwriting the first)."""
    tid = "c" + uuid.uuid4().hex[:12]
    rs = await asyncio.gather(*[api.call("POST", "/v1/tenants", json={"id": tid, "name": str(i)})
                                for i in range(5)])
    assert sorted(r.status_code for r in rs) == [201, 409, 409, 409, 409]
    winner = next(r.json() for r in rs if r.status_code == 201)
    assert await api.ok("GET", f"/v1/tenants/{tid}") == winner
    assert winner["version"] == 1
    assert [(e["action"], e["after"]) for e in (await api.ok("GET", f"{base(tid)}/audit"))[
        "items"]] == [("create", [winner["name"], "86400000", "7776000000"])]
    await api.ok("DELETE", f"/v1/tenants/{tid}", status=204)


async def test_concurrent_rule_edits_lose_nothing(api: Api, atenant: str) -> None:
    """Each rule edit is a read-modify-write of the whole list, retried on a version
    clash; an edit that succeeded must be in the result (regression: the rules and their
    version were read apart, so an edit of stale rules could pass the check)."""
    t = atenant
    await group(api, t, "g")
    for _ in range(3):
        start = (await api.ok("PUT", f"{base(t)}/rules", json={"rules": []}))["version"]
        rs = await asyncio.gather(*[api.call("POST", f"{base(t)}/rules", json=rule(f"r{i}", "g"))
                                    for i in range(6)])
        made = {f"r{i}" for i, r in enumerate(rs) if r.status_code == 201}
        for r in rs:  # a request that lost every retry says so and changed nothing
            assert r.status_code == 201 or (r.status_code == 409 and "try again" in r.text)
        final = await api.ok("GET", f"{base(t)}/rules")
        assert {r["name"] for r in final["rules"]} == made
        assert final["version"] == start + len(made)


async def test_a_body_and_its_version_are_read_together(api: Api, atenant: str) -> None:
    """What GET returns with a version is that version's body, even while it changes, so
    If-Match on an edit of it cannot undo a change the client never saw."""
    t = atenant
    await group(api, t, "g", k=1.0)  # version n has k = n
    await api.ok("POST", f"{base(t)}/teams", json={"id": "sh", "name": "1"}, status=201)
    await agent(api, t, "ann", capacity=1)
    await api.ok("PUT", f"/v1/tenants/{t}", json={"name": "2"})  # version n has name n

    async def writer() -> None:
        for n in range(2, 16):
            await api.ok("PUT", f"{base(t)}/groups/g", json={"k": float(n)})
            await api.ok("PUT", f"{base(t)}/teams/sh", json={"name": str(n)})
            await api.ok("PUT", f"{base(t)}/agents/ann", json={"capacity": n})
            await api.ok("PUT", f"/v1/tenants/{t}", json={"name": str(n + 1)})

    async def reader() -> None:
        for _ in range(25):
            g, tm, a, tn = await asyncio.gather(
                api.ok("GET", f"{base(t)}/groups/g"), api.ok("GET", f"{base(t)}/teams/sh"),
                api.ok("GET", f"{base(t)}/agents/ann"), api.ok("GET", f"/v1/tenants/{t}"))
            assert g["version"] == g["k"]
            assert str(tm["version"]) == tm["name"]
            assert a["version"] == a["capacity"]
            assert str(tn["version"]) == tn["name"]

    await asyncio.gather(writer(), reader(), reader())


# ------------------------------------------------------------------ nothing half-applied


async def test_refused_changes_leave_no_trace(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g", k=7.0)
    await group(api, t, "h")
    await agent(api, t, "ann", capacity=2, abilities={"g": 1.0})
    gpath, apath = f"{base(t)}/groups/g", f"{base(t)}/agents/ann"
    out_key = keys.key("outbound", t)
    out_len = await api.admin.redis.xlen(out_key)

    # the tier check fails after other fields were validated: nothing of it is kept
    await refused(api, "PUT", gpath, 422, gpath, t, json={
        "k": 99.0, "name": "changed", "tiers": [{"after_ms": 0, "groups": ["h", "zz"]}]})
    await refused(api, "PUT", gpath, 422, gpath, t, json={
        "k": 99.0, "tiers": [{"after_ms": 0, "groups": ["h"]}, {"after_ms": 0, "groups": ["g"]}]})
    await refused(api, "PUT", gpath, 422, gpath, t,
                  json={"k": 99.0, "service_hours": {"time_zone": "Atlantis/Lost", **A_SHIFT}})
    # abilities name a group that does not exist, alongside one that does
    await refused(api, "PUT", apath, 422, apath, t,
                  json={"capacity": 9, "name": "Zed", "abilities": {"h": 1.0, "zz": 1.0}})
    await refused(api, "PUT", apath, 422, apath, t, json={"capacity": 9, "team": "nope"})
    await refused(api, "POST", f"{base(t)}/agents", 422, f"{base(t)}/agents", t,
                  json={"id": "bob", "capacity": 1, "abilities": {"zz": 1.0}})
    await refused(api, "POST", f"{base(t)}/groups", 409, f"{base(t)}/groups", t,
                  json={"id": "g", "k": 1.0})
    await refused(api, "PUT", f"{base(t)}/rules", 422, f"{base(t)}/rules", t,
                  json={"rules": [rule("ok", "g"), rule("bad", "zz")]})
    assert await api.admin.redis.xlen(out_key) == out_len
    assert (await api.ok("GET", gpath))["k"] == 7.0
    assert (await api.ok("GET", apath))["abilities"] == {"g": 1.0}
    assert [g["members"] for g in (await api.ok("GET", f"{base(t)}/summary"))["groups"]] == [1, 0]


async def test_roles(api: Api, atenant: str) -> None:
    t = atenant
    r = await api.call("POST", f"{base(t)}/groups", role="supervisor", json={"id": "g"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert (await api.call("POST", f"{base(t)}/groups", role="viewer",
                           json={"id": "g"})).status_code == 403
    assert (await api.call("POST", "/v1/tenants", role="supervisor",
                           json={"id": "zz" + t})).status_code == 403
    await group(api, t, "g")
    assert (await api.call("GET", f"{base(t)}/groups/g", role="viewer")).status_code == 200
    assert (await api.call("DELETE", f"{base(t)}/groups/g", role="viewer")).status_code == 403
    r = await api.http.get(f"{base(t)}/groups/g")
    assert r.status_code == 401
    r = await api.http.get(f"{base(t)}/groups/g", headers={"Authorization": "Bearer dsp_nope"})
    assert r.status_code == 401
    assert (await api.call("GET", f"{base(t)}/groups/g")).status_code == 200
