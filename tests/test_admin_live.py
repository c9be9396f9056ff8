"""The admin API against the real router, over real HTTP: configuration changes take
effect on routing at once, the live views (queue, agent, session, summary) say what the
router holds, and supervisor actions move work and reach the tenant's outbound stream in
the documented form (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dispatchd import keys
from dispatchd.messages import Arrive
from tests.admin_helpers import T0, Api

S = 1000  # ms


@pytest.fixture(autouse=True)
def _clock(api: Api) -> None:
    api.clock.now = T0


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


async def group(api: Api, t: str, gid: str, **fields: Any) -> None:
    await api.ok("POST", f"{base(t)}/groups", json={"id": gid, **fields}, status=201)


async def agent(api: Api, t: str, aid: str, capacity: int, abilities: dict[str, float],
                status: str | None = "online") -> None:
    await api.ok("POST", f"{base(t)}/agents", status=201,
                 json={"id": aid, "capacity": capacity, "abilities": abilities})
    if status is not None:
        await api.ok("POST", f"{base(t)}/agents/{aid}/status", role="supervisor",
                     json={"status": status})


async def arrive(api: Api, t: str, at: int, sid: str, grp: str | None, **kw: Any) -> dict[str, Any]:
    """An arrival through the engine at ``at``; its one event, as a dict."""
    out = await api.admin.engine.arrive(t, at, sid, grp, **kw)
    assert len(out.events) == 1
    ev: dict[str, Any] = {k: v for k, v in _plain(out.events[0]).items() if v is not None}
    return ev


def _plain(e: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(e)  # type: ignore[no-any-return]


class Outbound:
    """The tenant's outbound stream ({t}:out), read from where the last read stopped."""

    def __init__(self, api: Api, t: str) -> None:
        self.api, self.key, self.last = api, keys.key("outbound", t), "-"

    async def new(self) -> list[dict[str, Any]]:
        rows = await self.api.admin.redis.xrange(self.key, min=self.last)
        rows = [r for r in rows if r[0].decode() != self.last]
        if rows:
            self.last = rows[-1][0].decode()
        return [json.loads(fields[b"json"]) for _, fields in rows]

    async def skip(self) -> None:
        await self.new()


async def session(api: Api, t: str, sid: str) -> dict[str, Any]:
    return await api.ok("GET", f"{base(t)}/sessions/{sid}", role="viewer")  # type: ignore[no-any-return]


async def queue(api: Api, t: str, grp: str, q: str = "") -> dict[str, Any]:
    return await api.ok("GET", f"{base(t)}/groups/{grp}/queue{q}", role="viewer")  # type: ignore[no-any-return]


# ------------------------------------------------------- configuration drives routing


async def test_agents_created_over_http_take_customers(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g")
    await agent(api, t, "ann", 2, {"g": 1.0})
    assert (await arrive(api, t, T0, "s1", "g"))["agent"] == "ann"
    ev = await arrive(api, t, T0 + S, "s2", "g")
    assert ev == {"event": "assigned", "session": "s2", "agent": "ann", "group": "g",
                  "tier": 0, "via": "group", "wait_ms": 0}
    ev = await arrive(api, t, T0 + 2 * S, "s3", "g")
    assert ev["event"] == "queued" and ev["position"] == 1
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert (ann["load"], ann["sessions"]) == (2, ["s1", "s2"])
    assert ann["groups"][0]["candidate"] is False


async def test_more_capacity_assigns_a_waiting_customer_at_once(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await agent(api, t, "ann", 1, {"g": 1.0})
    await arrive(api, t, T0, "s1", "g")
    assert (await arrive(api, t, T0 + S, "s2", "g"))["event"] == "queued"
    await out.skip()

    api.clock.now = T0 + 5 * S
    ann = await api.ok("PUT", f"{base(t)}/agents/ann", json={"capacity": 2, "abilities": {"g": 1}})
    assert (ann["capacity"], ann["load"], ann["sessions"]) == (2, 2, ["s1", "s2"])
    assert ann["last_assigned_ms"] == T0 + 5 * S
    assert await out.new() == [
        {"type": "agent_configured", "agent": "ann", "ts": T0 + 5 * S},
        {"type": "assigned", "session": "s2", "agent": "ann", "group": "g", "tier": 0,
         "via": "group", "wait_ms": 4 * S, "ts": T0 + 5 * S},
    ]
    s2 = await session(api, t, "s2")
    assert (s2["state"], s2["agent"], s2["phase"]) == ("assigned", "ann", "waiting_agent")
    assert (await queue(api, t, "g"))["length"] == 0


async def test_new_overflow_tier_reevaluates_the_queue(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await group(api, t, "h")
    await agent(api, t, "bob", 2, {"h": 1.0})
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0 + 25 * S, "s2", "g")
    await out.skip()

    # s1 has waited 30 s, past the new tier's 20 s; s2 only 5 s
    api.clock.now = T0 + 30 * S
    await api.ok("PUT", f"{base(t)}/groups/g", json={"tiers": [{"after_ms": 20 * S,
                                                                  "groups": ["h"]}]})
    assert await out.new() == [
        {"type": "group_configured", "group": "g", "ts": T0 + 30 * S},
        {"type": "assigned", "session": "s1", "agent": "bob", "group": "g", "tier": 1,
         "via": "overflow", "wait_ms": 30 * S, "ts": T0 + 30 * S},
    ]
    q = await queue(api, t, "g")
    assert [(i["session"], i["open_tier"]) for i in q["items"]] == [("s2", 0)]
    assert (await api.ok("GET", f"{base(t)}/agents/bob"))["sessions"] == ["s1"]

    # its own tier comes due 20 s after its arrival
    out_ev = await api.admin.engine.escalate_overflow(t, T0 + 44 * S)
    assert out_ev.events == []
    out_ev = await api.admin.engine.escalate_overflow(t, T0 + 45 * S)
    assert [_plain(e)["event"] for e in out_ev.events] == ["tier_opened", "assigned"]
    s2 = await session(api, t, "s2")
    assert (s2["state"], s2["agent"], s2["open_tier"]) == ("assigned", "bob", 1)


async def test_routing_rule_routes_an_arrival_by_attributes(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "vip", priority_unit_ms=10 * S)
    await group(api, t, "general")
    await api.ok("POST", f"{base(t)}/rules", status=201, json={
        "name": "gold", "group": "vip", "priority": 5, "blocked_agents": ["troll"],
        "match": {"level": ["gold", "platinum"], "spend": {"min": 1000}}})
    await api.ok("POST", f"{base(t)}/rules", status=201, json={"name": "rest", "group": "general"})

    ev = await arrive(api, t, T0, "s1", None, attributes={"level": "gold", "spend": 5000})
    assert (ev["event"], ev["group"], ev["priority"]) == ("queued", "vip", 5)
    assert ev["virtual_arrival_ms"] == T0 - 5 * 10 * S
    ev = await arrive(api, t, T0, "s2", None, attributes={"level": "gold", "spend": 10})
    assert (ev["group"], ev["priority"]) == ("general", 0)
    ev = await arrive(api, t, T0 + S, "s3", "vip", priority=1)
    s1 = await session(api, t, "s1")
    assert (s1["group"], s1["priority"], s1["blocked_agents"]) == ("vip", 5, ["troll"])

    api.clock.now = T0 + 2 * S
    q = await queue(api, t, "vip")
    assert [(i["session"], i["priority"], i["wait_ms"], i["virtual_wait_ms"])
            for i in q["items"]] == [("s1", 5, 2 * S, 52 * S), ("s3", 1, S, 11 * S)]

    # a changed rule applies to the next arrival; a queued customer keeps its priority
    await api.ok("PUT", f"{base(t)}/rules/gold", json={"group": "vip", "priority": -2,
                                                      "match": {"level": "gold"}})
    ev = await arrive(api, t, T0 + 2 * S, "s4", None, attributes={"level": "gold"})
    assert (ev["group"], ev["priority"]) == ("vip", -2)
    assert (await session(api, t, "s1"))["priority"] == 5
    # an online vip agent takes the best customer first
    await agent(api, t, "vic", 1, {"vip": 1.0})
    assert (await session(api, t, "s1"))["agent"] == "vic"
    await api.ok("DELETE", f"{base(t)}/rules/gold")
    r = await api.admin.engine.arrive(t, T0 + 3 * S, "s5", None, attributes={"level": "gold"})
    assert _plain(r.events[0])["group"] == "general"


# ------------------------------------------------------------------------- live views


async def test_queue_view_in_service_order(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "h")
    await group(api, t, "g", priority_unit_ms=10 * S,
                tiers=[{"after_ms": 25 * S, "groups": ["h"]}])
    arrivals = [("s1", 0, 0), ("s2", 5 * S, 1), ("s3", 10 * S, -1), ("s4", 12 * S, 0)]
    for sid, at, prio in arrivals:
        await arrive(api, t, T0 + at, sid, "g", priority=prio)
    now = T0 + 30 * S
    await api.admin.engine.escalate_overflow(t, now)  # s1 and s2 have waited 25 s or more
    api.clock.now = now
    q = await queue(api, t, "g")
    # virtual wait = wait + priority x 10 s: s2 35 s, s1 30 s, s4 18 s, s3 10 s
    assert q == {"group": "g", "length": 4, "items": [
        {"position": 1, "session": "s2", "priority": 1, "wait_ms": 25 * S,
         "virtual_wait_ms": 35 * S, "open_tier": 1, "parked_with": None},
        {"position": 2, "session": "s1", "priority": 0, "wait_ms": 30 * S,
         "virtual_wait_ms": 30 * S, "open_tier": 1, "parked_with": None},
        {"position": 3, "session": "s4", "priority": 0, "wait_ms": 18 * S,
         "virtual_wait_ms": 18 * S, "open_tier": 0, "parked_with": None},
        {"position": 4, "session": "s3", "priority": -1, "wait_ms": 20 * S,
         "virtual_wait_ms": 10 * S, "open_tier": 0, "parked_with": None},
    ]}
    for item in q["items"]:
        assert item["virtual_wait_ms"] == item["wait_ms"] + item["priority"] * 10 * S
    page = await queue(api, t, "g", "?offset=1&limit=2")
    assert page["length"] == 4 and page["items"] == q["items"][1:3]
    api.clock.now = now + 7 * S  # the view follows the clock
    assert [i["wait_ms"] for i in (await queue(api, t, "g"))["items"]] == [
        32 * S, 37 * S, 25 * S, 27 * S]
    assert (await api.call("GET", f"{base(t)}/groups/zz/queue")).status_code == 404
    # the agent that frees up takes the first one
    await agent(api, t, "ann", 1, {"g": 1.0})
    assert [i["session"] for i in (await queue(api, t, "g"))["items"]] == ["s1", "s4", "s3"]


async def test_agent_view_readiness_is_the_spec_formula(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g", k=30.0, m=0.5)
    await group(api, t, "h", k=60.0, m=1.0)
    await api.ok("POST", f"{base(t)}/agents", status=201,
                 json={"id": "ann", "capacity": 3, "abilities": {"g": 2.0, "h": 0.5}})
    api.clock.now = T0
    await api.ok("POST", f"{base(t)}/agents/ann/status", role="supervisor",
                 json={"status": "online"})
    await arrive(api, t, T0 + 1 * S, "s1", "g")
    await arrive(api, t, T0 + 2 * S, "s2", "h")
    await api.admin.engine.preclose_session(t, T0 + 3 * S, "s1")

    now = T0 + 10 * S
    api.clock.now = now
    ann = await api.ok("GET", f"{base(t)}/agents/ann", role="viewer")
    assert (ann["status"], ann["capacity"], ann["load"], ann["preclosed"]) == ("online", 3, 1, 1)
    assert (ann["sessions"], ann["preclosed_sessions"]) == (["s2"], ["s1"])
    last = ann["last_assigned_ms"]
    assert last == T0 + 2 * S
    cap, load, pre = 3, 1, 1
    for g, (k, m, ability) in {"g": (30.0, 0.5, 2.0), "h": (60.0, 1.0, 0.5)}.items():
        # SPEC 2.3, literally
        expected = (now - last) / 1000 + k * (cap - load - m * pre) / cap * ability
        row = next(x for x in ann["groups"] if x["group"] == g)
        assert row["candidate"] is True and row["ability"] == ability
        assert row["readiness"] == pytest.approx(expected, abs=1e-6)
    assert [x["readiness"] for x in ann["groups"]] == pytest.approx([38.0, 18.0], abs=1e-6)

    # a new K for g re-ranks the agent at once
    await api.ok("PUT", f"{base(t)}/groups/g", json={"k": 90.0, "m": 0.5})
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert ann["groups"][0]["readiness"] == pytest.approx(
        (now - last) / 1000 + 90.0 * (cap - load - 0.5 * pre) / cap * 2.0, abs=1e-6)

    # full: no longer a candidate, no readiness
    await arrive(api, t, now, "s3", "g")
    await arrive(api, t, now, "s4", "g")
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert ann["load"] == 3
    assert [(x["candidate"], x["readiness"]) for x in ann["groups"]] == [(False, None)] * 2
    assert (await api.call("GET", f"{base(t)}/agents/zz")).status_code == 404


async def test_session_view_with_full_history(api: Api, atenant: str) -> None:
    t = atenant
    eng = api.admin.engine
    await group(api, t, "g")
    await agent(api, t, "ann", 1, {"g": 1.0}, status=None)
    await eng.apply(t, T0, Arrive(session="s1", group="g", customer="c9", gateway="web",
                                  priority=2))
    api.clock.now = T0 + 4 * S
    await api.ok("POST", f"{base(t)}/agents/ann/status", role="supervisor",
                 json={"status": "online"})
    await eng.agent_message(t, T0 + 10 * S, "s1", "ann")
    await eng.customer_message(t, T0 + 20 * S, "s1")
    await eng.request_close(t, T0 + 30 * S, "s1", "ann")
    await eng.confirm_close(t, T0 + 40 * S, "s1", resolved=True)

    s1 = await session(api, t, "s1")
    history = s1.pop("history")
    assert s1 == {"id": "s1", "state": "closed", "phase": "closed", "group": "g",
                  "priority": 2, "arrival_ms": T0, "customer": "c9", "agent": "ann",
                  "open_tier": 0, "parked_with": None, "blocked_agents": []}
    assert [(h["type"], h["ts"]) for h in history] == [
        ("queued", T0), ("assigned", T0 + 4 * S), ("state_changed", T0 + 10 * S),
        ("state_changed", T0 + 20 * S), ("state_changed", T0 + 30 * S),
        ("closed", T0 + 40 * S)]
    assert all(h["session"] == "s1" and h["gateway"] == "web" for h in history)
    assert history[1] == {"type": "assigned", "session": "s1", "gateway": "web", "agent": "ann",
                          "group": "g", "tier": 0, "via": "group", "wait_ms": 4 * S,
                          "ts": T0 + 4 * S}
    assert [(h["from"], h["to"]) for h in history[2:5]] == [
        ("waiting_agent", "waiting_customer"), ("waiting_customer", "waiting_agent"),
        ("waiting_agent", "pending_confirm")]
    assert history[2]["first_response_ms"] == 6 * S
    assert (history[5]["reason"], history[5]["state"], history[5]["agent"]) == (
        "resolved", "closed", "ann")
    assert (await api.call("GET", f"{base(t)}/sessions/nope")).status_code == 404


async def test_tenant_summary_counts(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g")
    await group(api, t, "h")
    await agent(api, t, "ann", 2, {"g": 1.0})
    await agent(api, t, "bob", 5, {"g": 1.0, "h": 1.0}, status="away")
    await agent(api, t, "cat", 1, {"h": 1.0}, status=None)
    await agent(api, t, "dan", 3, {"h": 1.0})
    for sid, grp in (("s1", "g"), ("s2", "g"), ("s3", "g"), ("s4", "h")):
        await arrive(api, t, T0, sid, grp)
    api.clock.now = T0 + 9 * S
    assert await api.ok("GET", f"{base(t)}/summary", role="viewer") == {
        "tenant": t,
        "groups": [
            {"group": "g", "queued": 1, "open_sessions": 3, "oldest_virtual_wait_ms": 9 * S,
             "candidates": 0, "members": 2},
            {"group": "h", "queued": 0, "open_sessions": 1, "oldest_virtual_wait_ms": None,
             "candidates": 1, "members": 3},
        ],
        "agents": {"online": 2, "away": 1, "offline": 1},
        "load": 3, "capacity": 5, "stream_backlog": 0, "dead_letters": 0,
    }


# ------------------------------------------------------------------- supervisor actions


async def audit_head(api: Api, t: str) -> dict[str, Any]:
    return (await api.ok("GET", f"{base(t)}/audit?limit=1", role="supervisor"))["items"][0]  # type: ignore[no-any-return]


async def supervisor_actor(api: Api) -> str:
    p = await api.admin.tokens.lookup(api.tokens["supervisor"])
    assert p is not None
    return p.actor


async def test_assign_over_capacity_is_forced_and_audited(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await agent(api, t, "ann", 1, {"g": 1.0})
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0 + S, "s2", "g")
    await out.skip()
    api.clock.now = T0 + 3 * S
    body = await api.ok("POST", f"{base(t)}/sessions/s2/assign", role="supervisor",
                        json={"agent": "ann"}, status=200)
    assert [(e["type"], e.get("via")) for e in body["events"]] == [
        ("transferred", None), ("assigned", "forced")]
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert (ann["capacity"], ann["load"], ann["sessions"]) == (1, 2, ["s1", "s2"])
    assert body["events"] == await out.new() == [
        {"type": "transferred", "session": "s2", "from_group": "g", "to_group": "g",
         "to_agent": "ann", "ts": T0 + 3 * S},
        {"type": "assigned", "session": "s2", "agent": "ann", "group": "g", "tier": 0,
         "via": "forced", "wait_ms": 2 * S, "ts": T0 + 3 * S},
    ]
    entry = await audit_head(api, t)
    assert entry["id"] == body["audit"]
    assert (entry["actor"], entry["role"], entry["action"], entry["resource"],
            entry["resource_id"], entry["events"]) == (
        await supervisor_actor(api), "supervisor", "assign", "session", "s2", 2)
    assert entry["command"] == {"op": "transfer_session", "session": "s2", "to_agent": "ann",
                                "force": True}
    assert entry["before"][0]["st"] == "queued" and entry["after"][0]["st"] == "assigned"
    assert entry["after"][0]["ag"] == "ann"


async def test_assign_refusals(api: Api, atenant: str) -> None:
    t = atenant
    await group(api, t, "g")
    await agent(api, t, "ann", 1, {"g": 1.0})
    await agent(api, t, "off", 1, {"g": 1.0}, status=None)
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0, "s2", "g")
    path = f"{base(t)}/sessions"
    n = len((await api.ok("GET", f"{base(t)}/audit?limit=1000"))["items"])
    r = await api.call("POST", f"{path}/s1/assign", role="supervisor", json={"agent": "ann"})
    # the state as docs/protocol.md names it (s1 is assigned, nobody replied yet)
    assert r.status_code == 409 and r.json()["code"] == "E_SESSION_STATE"
    assert r.json()["detail"].endswith("waiting_agent"), r.text
    r = await api.call("POST", f"{path}/nope/assign", role="supervisor", json={"agent": "ann"})
    assert r.status_code == 404
    r = await api.call("POST", f"{path}/s2/assign", role="supervisor", json={"agent": "zed"})
    assert r.status_code == 422 and r.json()["detail"] == "unknown agent: zed"
    r = await api.call("POST", f"{path}/s2/assign", role="supervisor", json={"agent": "off"})
    assert r.status_code == 409 and r.json()["code"] == "E_AGENT_OFFLINE"
    r = await api.call("POST", f"{path}/s2/assign", role="viewer", json={"agent": "ann"})
    assert r.status_code == 403
    r = await api.call("POST", f"{path}/s2/transfer", role="supervisor", json={})
    assert r.status_code == 400 and "exactly one of to_group and to_agent" in r.text
    r = await api.call("POST", f"{path}/s2/transfer", role="supervisor", json={"to_group": "zz"})
    assert r.status_code == 422 and r.json()["detail"] == "unknown group: zz"
    assert len((await api.ok("GET", f"{base(t)}/audit?limit=1000"))["items"]) == n
    assert (await session(api, t, "s2"))["state"] == "queued"


async def test_concurrent_assigns_of_one_customer_one_wins(api: Api, atenant: str) -> None:
    """Regression: the 'queued' check ran in Python before the atomic change, so several
    concurrent assigns succeeded, each taking the session from the agent just given it."""
    t = atenant
    await group(api, t, "g")
    for a in "abcde":
        await agent(api, t, a, 1, {"g": 1.0}, status="away")
    for n in range(20):
        await arrive(api, t, T0, f"s{n}", "g")
        rs = await asyncio.gather(*[
            api.call("POST", f"{base(t)}/sessions/s{n}/assign", role="supervisor",
                     json={"agent": a}) for a in "abcde"])
        assert sorted(r.status_code for r in rs) == [200, 409, 409, 409, 409]


async def test_transfer_to_group_and_to_agent(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await group(api, t, "h")
    await agent(api, t, "ann", 1, {"g": 1.0})
    await agent(api, t, "bob", 1, {"h": 1.0})
    await agent(api, t, "cat", 1, {"h": 1.0}, status=None)
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0 + S, "s2", "g")  # waits for ann
    await out.skip()

    api.clock.now = T0 + 10 * S
    body = await api.ok("POST", f"{base(t)}/sessions/s1/transfer", role="supervisor",
                        json={"to_group": "h"})
    assert await out.new() == [
        {"type": "transferred", "session": "s1", "from_group": "g", "to_group": "h",
         "from_agent": "ann", "ts": T0 + 10 * S},
        {"type": "assigned", "session": "s1", "agent": "bob", "group": "h", "tier": 0,
         "via": "group", "wait_ms": 10 * S, "ts": T0 + 10 * S},  # keeps its wait
        {"type": "assigned", "session": "s2", "agent": "ann", "group": "g", "tier": 0,
         "via": "group", "wait_ms": 9 * S, "ts": T0 + 10 * S},  # ann freed, takes s2
    ]
    assert len(body["events"]) == 3
    assert (await audit_head(api, t))["action"] == "transfer"

    await api.ok("POST", f"{base(t)}/agents/cat/status", role="supervisor",
                 json={"status": "online"})
    await out.skip()
    api.clock.now = T0 + 20 * S
    await api.ok("POST", f"{base(t)}/sessions/s1/transfer", role="supervisor",
                 json={"to_agent": "cat"})
    assert await out.new() == [
        {"type": "transferred", "session": "s1", "from_group": "h", "to_group": "h",
         "from_agent": "bob", "to_agent": "cat", "ts": T0 + 20 * S},
        {"type": "assigned", "session": "s1", "agent": "cat", "group": "h", "tier": 0,
         "via": "transfer", "wait_ms": 20 * S, "ts": T0 + 20 * S},
    ]
    bob = await api.ok("GET", f"{base(t)}/agents/bob")
    assert (bob["load"], bob["groups"][0]["candidate"]) == (0, True)
    history = (await session(api, t, "s1"))["history"]
    assert [h["type"] for h in history] == [
        "assigned", "transferred", "assigned", "transferred", "assigned"]


async def test_close_queued_and_assigned_sessions(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await agent(api, t, "ann", 1, {"g": 1.0})
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0 + S, "s2", "g")
    await arrive(api, t, T0 + 2 * S, "s3", "g")
    await out.skip()
    path = f"{base(t)}/sessions"

    api.clock.now = T0 + 5 * S
    await api.ok("POST", f"{path}/s3/close", role="supervisor", json={"reason": "spam"})
    assert await out.new() == [
        {"type": "closed", "session": "s3", "group": "g", "wait_ms": 3 * S, "reason": "spam",
         "state": "closed", "ts": T0 + 5 * S}]
    assert (await session(api, t, "s3"))["state"] == "closed"
    assert [i["session"] for i in (await queue(api, t, "g"))["items"]] == ["s2"]

    api.clock.now = T0 + 6 * S
    body = await api.ok("POST", f"{path}/s1/close", role="supervisor",
                        json={"reason": "callback", "note": "call back at 5"})
    # the answer is what {t}:out got: the close is `closed`, as gateways see it
    assert [e["type"] for e in body["events"]] == ["callback_requested", "closed", "assigned"]
    assert body["events"] == await out.new() == [
        {"type": "callback_requested", "session": "s1", "agent": "ann", "group": "g",
         "note": "call back at 5", "ts": T0 + 6 * S},
        {"type": "closed", "session": "s1", "agent": "ann", "reason": "callback",
         "state": "closed", "ts": T0 + 6 * S},
        {"type": "assigned", "session": "s2", "agent": "ann", "group": "g", "tier": 0,
         "via": "group", "wait_ms": 5 * S, "ts": T0 + 6 * S},  # ann freed: takes s2
    ]
    assert (await api.ok("GET", f"{base(t)}/agents/ann"))["sessions"] == ["s2"]
    entry = await audit_head(api, t)
    assert (entry["action"], entry["resource_id"]) == ("close", "s1")
    assert entry["command"] == {"op": "close_session", "session": "s1", "reason": "callback",
                                "note": "call back at 5"}

    r = await api.call("POST", f"{path}/s1/close", role="supervisor", json={})
    assert r.status_code == 409 and r.json()["code"] == "E_SESSION_STATE"
    r = await api.call("POST", f"{path}/s2/close", role="supervisor", json={"reason": "Bad!"})
    assert r.status_code == 400 and "reason" in r.text
    r = await api.call("POST", f"{path}/zz/close", role="supervisor", json={})
    assert r.status_code == 404


async def test_forced_offline_with_handover(api: Api, atenant: str) -> None:
    t = atenant
    out = Outbound(api, t)
    await group(api, t, "g")
    await agent(api, t, "ann", 2, {"g": 5.0})
    await arrive(api, t, T0, "s1", "g")
    await arrive(api, t, T0 + S, "s2", "g")
    await agent(api, t, "bob", 3, {"g": 1.0})
    await out.skip()

    api.clock.now = T0 + 8 * S
    body = await api.ok("POST", f"{base(t)}/agents/ann/status", role="supervisor",
                        json={"status": "offline", "handover": True})
    assert await out.new() == [
        {"type": "agent_status", "agent": "ann", "status": "offline", "previous": "online",
         "ts": T0 + 8 * S},
        {"type": "transferred", "session": "s1", "from_group": "g", "to_group": "g",
         "from_agent": "ann", "reason": "handover", "ts": T0 + 8 * S},
        {"type": "assigned", "session": "s1", "agent": "bob", "group": "g", "tier": 0,
         "via": "group", "wait_ms": 8 * S, "ts": T0 + 8 * S},
        {"type": "transferred", "session": "s2", "from_group": "g", "to_group": "g",
         "from_agent": "ann", "reason": "handover", "ts": T0 + 8 * S},
        {"type": "assigned", "session": "s2", "agent": "bob", "group": "g", "tier": 0,
         "via": "group", "wait_ms": 7 * S, "ts": T0 + 8 * S},
    ]
    assert len(body["events"]) == 5
    ann = await api.ok("GET", f"{base(t)}/agents/ann")
    assert (ann["status"], ann["load"], ann["sessions"]) == ("offline", 0, [])
    assert (await api.ok("GET", f"{base(t)}/agents/bob"))["sessions"] == ["s1", "s2"]
    entry = await audit_head(api, t)
    assert (entry["action"], entry["resource"], entry["resource_id"], entry["role"]) == (
        "status", "agent", "ann", "supervisor")
    assert entry["before"][0]["st"] == "online" and entry["after"][0]["st"] == "offline"
    r = await api.call("POST", f"{base(t)}/agents/ann/status", role="supervisor",
                       json={"status": "online", "handover": True})
    assert r.status_code == 422 and r.json()["code"] == "E_BAD_ARG"
    r = await api.call("POST", f"{base(t)}/agents/zz/status", role="supervisor",
                       json={"status": "online"})
    assert r.status_code == 404


async def test_group_timers_and_tenant_retention_apply(api: Api, atenant: str) -> None:
    t = atenant
    await api.ok("PUT", f"/v1/tenants/{t}", json={"name": "x", "retention_ms": 120 * S})
    await group(api, t, "g", timers={"queue_warning_ms": 10 * S, "queue_timeout_ms": 30 * S})
    await arrive(api, t, T0, "s1", "g")
    eng = api.admin.engine
    assert (await eng.fire_timers(t, T0 + 10 * S - 1)).events == []
    assert [_plain(e)["kind"] for e in (await eng.fire_timers(t, T0 + 10 * S)).events] == [
        "queue_wait"]
    assert (await eng.fire_timers(t, T0 + 30 * S - 1)).events == []
    await eng.fire_timers(t, T0 + 30 * S)
    s1 = await session(api, t, "s1")
    assert s1["history"][-1] == {
        "type": "closed", "session": "s1", "group": "g", "wait_ms": 30 * S,
        "reason": "queue_timeout", "state": "system_closed", "ts": T0 + 30 * S}
    assert (s1["state"], s1["phase"]) == ("closed", "system_closed")
    ttl = await api.admin.redis.pttl(keys.key("session", t, "s1"))
    assert 0 < ttl <= 120 * S
