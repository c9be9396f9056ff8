"""docs/admin.md's answers made exact, over real HTTP: ETag and If-Match (``*`` too),
DELETE of a rule, service hours without a shift, an unknown order owner, TransferIn's
"exactly one of", a non-forced assignment to a full agent outside the group, and the
document's example, run as written."""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.admin_helpers import T0, Api

DOC = Path(__file__).resolve().parent.parent / "docs" / "admin.md"


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


# ----------------------------------------------------------------------- ETag, If-Match


async def test_every_versioned_get_sends_its_version_as_etag(api: Api, atenant: str) -> None:
    t = atenant
    b = base(t)
    await api.ok("POST", f"{b}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{b}/teams", json={"id": "tm"}, status=201)
    await api.ok("POST", f"{b}/agents", json={"id": "ann", "capacity": 1,
                                              "abilities": {"g": 1}}, status=201)
    await api.ok("POST", f"{b}/ticket-types", json={"id": "tt"}, status=201)
    await api.ok("POST", f"{b}/rules", json={"name": "r", "group": "g"}, status=201)
    await api.ok("PUT", f"{b}/groups/g", json={"k": 5})  # version 2
    for path in (f"/v1/tenants/{t}", f"{b}/groups/g", f"{b}/teams/tm", f"{b}/agents/ann",
                 f"{b}/ticket-types/tt", f"{b}/rules"):
        r = await api.call("GET", path, role="viewer")
        assert r.status_code == 200
        assert r.headers["etag"] == f'"{r.json()["version"]}"', (path, r.headers)
    rules = (await api.call("GET", f"{b}/rules")).json()
    r = await api.call("GET", f"{b}/rules/r", role="viewer")
    assert r.headers["etag"] == f'"{rules["version"]}"'
    # the tag is what If-Match takes
    tag = (await api.call("GET", f"{b}/groups/g")).headers["etag"]
    assert tag == '"2"'
    r = await api.call("PUT", f"{b}/groups/g", json={"k": 6}, headers={"If-Match": tag})
    assert r.status_code == 200 and r.headers["etag"] == '"3"'
    r = await api.call("PUT", f"{b}/groups/g", json={"k": 7}, headers={"If-Match": tag})
    assert r.status_code == 412
    # not versioned: no tag
    r = await api.call("GET", f"{b}/summary")
    assert "etag" not in r.headers
    # the document says so
    doc = (await api.call("GET", "/schema/openapi.json")).json()
    op = doc["paths"]["/v1/tenants/{tenant}/groups/{group}"]["get"]
    assert "ETag" in op["responses"]["200"]["headers"]
    op = doc["paths"]["/v1/tenants/{tenant}/rules/{name}"]["get"]
    assert "ETag" in op["responses"]["200"]["headers"]


async def test_if_match_star_matches_any_current_version(api: Api, atenant: str) -> None:
    b = base(atenant)
    star = {"If-Match": "*"}
    await api.ok("POST", f"{b}/groups", json={"id": "g"}, status=201)
    await api.ok("PUT", f"{b}/groups/g", json={"k": 5}, headers=star)
    await api.ok("PUT", f"/v1/tenants/{atenant}", json={"name": "n"}, headers=star)
    await api.ok("PUT", f"{b}/rules", json={"rules": []}, headers=star)
    await api.ok("POST", f"{b}/rules", json={"name": "r", "group": "g"}, headers=star,
                 status=201)
    await api.ok("DELETE", f"{b}/rules/r", headers=star, status=204)
    await api.ok("DELETE", f"{b}/groups/g", headers=star, status=204)
    r = await api.call("PUT", f"{b}/groups/g", json={}, headers=star)
    assert r.status_code == 404  # no current representation: as without the header
    r = await api.call("PUT", f"/v1/tenants/{atenant}", json={}, headers={"If-Match": "x"})
    assert r.status_code == 400


async def test_delete_of_a_rule_is_204(api: Api, atenant: str) -> None:
    b = base(atenant)
    await api.ok("POST", f"{b}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{b}/rules", json={"name": "r", "group": "g"}, status=201)
    r = await api.call("DELETE", f"{b}/rules/r")
    assert r.status_code == 204 and r.content == b""
    assert (await api.ok("GET", f"{b}/rules"))["rules"] == []
    assert (await api.call("DELETE", f"{b}/rules/r")).status_code == 404
    doc = (await api.call("GET", "/schema/openapi.json")).json()
    assert "204" in doc["paths"]["/v1/tenants/{tenant}/rules/{name}"]["delete"]["responses"]


# ------------------------------------------------------------------------------ bodies


async def test_service_hours_need_a_shift(api: Api, atenant: str) -> None:
    b = base(atenant)
    for hours in ({"time_zone": "UTC", "weekly": []}, {"time_zone": "UTC"}):
        r = await api.call("POST", f"{b}/groups", json={"id": "g", "service_hours": hours})
        assert r.status_code == 400, r.text
        assert "weekly" in r.text
    assert (await api.call("GET", f"{b}/groups/g")).status_code == 404
    await api.ok("POST", f"{b}/groups", status=201, json={"id": "g", "service_hours": {
        "time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}})
    await api.ok("PUT", f"{b}/groups/g", json={"service_hours": None})


async def test_an_unknown_order_owner_is_refused(api: Api, atenant: str) -> None:
    b = base(atenant)
    await api.ok("POST", f"{b}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{b}/ticket-types", json={"id": "tt"}, status=201)
    ticket = {"type": "tt", "group": "g", "order_id": "o1"}
    r = await api.call("POST", f"{b}/tickets", json={**ticket, "order_owner": "ghost"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "E_AGENT_UNKNOWN" and r.json()["detail"] == "unknown agent: ghost"
    assert (await api.ok("GET", f"{b}/tickets"))["items"] == []
    await api.ok("POST", f"{b}/agents", json={"id": "ann", "capacity": 1,
                                              "abilities": {"g": 1}}, status=201)
    await api.ok("POST", f"{b}/tickets", json={**ticket, "order_owner": "ann"}, status=201)
    r = await api.call("POST", f"/v1/tenants/nosuch{uuid.uuid4().hex[:6]}/tickets",
                       json={**ticket, "order_owner": "ghost"})
    assert r.status_code == 404


async def _queued(api: Api, t: str) -> None:
    """Group g with a queued session s1 (nobody online), and agent bob outside g, online
    and full (capacity 1, holding s0 of group h)."""
    b = base(t)
    await api.ok("POST", f"{b}/groups", json={"id": "g"}, status=201)
    await api.ok("POST", f"{b}/groups", json={"id": "h"}, status=201)
    await api.ok("POST", f"{b}/agents", json={"id": "bob", "capacity": 1,
                                              "abilities": {"h": 1}}, status=201)
    await api.ok("POST", f"{b}/agents/bob/status", json={"status": "online"})
    await api.admin.engine.arrive(t, T0, "s0", "h")
    await api.admin.engine.arrive(t, T0, "s1", "g")


async def test_transfer_needs_exactly_one_target(api: Api, atenant: str) -> None:
    await _queued(api, atenant)
    path = f"{base(atenant)}/sessions/s1/transfer"
    for body in ({}, {"to_group": "h", "to_agent": "bob"}, {"to_group": None},
                 {"force": True}):
        r = await api.call("POST", path, json=body)
        assert r.status_code == 400, (body, r.text)
        assert "exactly one of to_group and to_agent" in r.text
    await api.ok("POST", path, json={"to_group": "h", "to_agent": None})
    doc = (await api.call("GET", "/schema/openapi.json")).json()
    one_of = doc["components"]["schemas"]["TransferIn"]["oneOf"]
    assert [b["required"] for b in one_of] == [["to_group"], ["to_agent"]]


async def test_assign_without_force_to_a_full_agent_outside_the_group_parks(
        api: Api, atenant: str) -> None:
    """docs/admin.md "Supervisor actions": a directed request, as SPEC 2.5."""
    t = atenant
    await _queued(api, t)
    out = await api.ok("POST", f"{base(t)}/sessions/s1/assign",
                       json={"agent": "bob", "force": False})
    assert [e["type"] for e in out["events"]] == ["transferred", "queued"]
    assert out["events"][1]["parked_with"] == "bob"
    s1 = await api.ok("GET", f"{base(t)}/sessions/s1")
    assert (s1["state"], s1["parked_with"], s1["agent"]) == ("queued", "bob", None)
    bob = await api.ok("GET", f"{base(t)}/agents/bob")
    assert bob["parked"] == ["s1"] and bob["load"] == 1


# ----------------------------------------------------------------------------- example


def _example_calls() -> list[tuple[str, str, Any, dict[str, str], str | None]]:
    """The curl lines of docs/admin.md "## Example": (method, path, body, headers, the
    ETag its comment promises)."""
    text = DOC.read_text().split("## Example", 1)[1]
    block = text.split("```sh", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    calls = []
    for line in block.splitlines():
        line, _, comment = line.partition("#")
        if not line.strip().startswith("curl"):
            continue
        words = shlex.split(line)
        method, body, headers = "GET", None, {}
        path = next(w for w in words if w.startswith("localhost:8080"))[len("localhost:8080"):]
        for n, w in enumerate(words):
            if w == "-X":
                method = words[n + 1]
            elif w == "-d":
                body = words[n + 1]
            elif w == "-H" and words[n + 1] != "$H":
                name, _, value = words[n + 1].partition(":")
                headers[name] = value.strip()
        tag = re.search(r'ETag: ("\d+")', comment)
        calls.append((method, path, body, headers, tag.group(1) if tag else None))
    return calls


async def test_the_example_runs_as_written(api: Api) -> None:
    calls = _example_calls()
    assert len(calls) >= 10
    tenant = "ex" + uuid.uuid4().hex[:10]  # "acme" on a server other tests share
    for method, path, body, headers, tag in calls:
        path = path.replace("/acme", f"/{tenant}").replace('"acme"', f'"{tenant}"')
        content = None if body is None else body.replace('"acme"', f'"{tenant}"')
        r = await api.call(method, path, content=content, headers=headers)
        assert 200 <= r.status_code < 300, (method, path, r.status_code, r.text)
        if tag is not None:
            assert r.headers["etag"] == tag
    ticket = await api.ok("GET", f"/v1/tenants/{tenant}/tickets/tk-17")
    assert (ticket["state"], ticket["agent"]) == ("in_progress", "ann")
