"""GET .../sessions/{s}/decisions and the decision in a session's history, over real
HTTP (docs/admin.md "Live views", docs/routing.md "Why this agent?"): a supervisor's
assign records its decision, the action answer (as {T}:out) does not carry it."""

from __future__ import annotations

from typing import Any

from dispatchd import keys
from tests.admin_helpers import T0, Api

S = 1000


def base(t: str) -> str:
    return f"/v1/tenants/{t}"


async def setup(api: Api, t: str, record: bool = True) -> None:
    await api.ok("POST", f"{base(t)}/groups", status=201,
                 json={"id": "g", "record_decisions": record})
    for i, aid in enumerate(("ann", "bob")):
        api.clock.now = T0 + i * S
        await api.ok("POST", f"{base(t)}/agents", status=201,
                     json={"id": aid, "capacity": 1, "abilities": {"g": 1.0}})
        await api.ok("POST", f"{base(t)}/agents/{aid}/status", role="supervisor",
                     json={"status": "online"})


async def test_decisions_route_lists_each_assignment(api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t)
    got = await api.ok("GET", f"{base(t)}/groups/g")
    assert got["record_decisions"] is True
    await api.admin.engine.arrive(t, T0 + 10 * S, "s1", "g")
    await api.admin.engine.arrive(t, T0 + 11 * S, "s2", "g")
    await api.admin.engine.arrive(t, T0 + 12 * S, "s3", "g")  # queued: both busy
    api.clock.now = T0 + 20 * S
    answer = await api.ok("POST", f"{base(t)}/sessions/s3/assign", role="supervisor",
                          json={"agent": "bob"})
    # the action answer is what {T}:out got: no decision there
    assert [e["type"] for e in answer["events"]] == ["transferred", "assigned"]
    assert all("decision" not in e for e in answer["events"])
    raw = await api.admin.redis.xrange(keys.key("outbound", t))
    assert all(b"decision" not in fields[b"json"] for _, fields in raw)

    out = await api.ok("GET", f"{base(t)}/sessions/s1/decisions", role="viewer")
    assert out["session"] == "s1" and out["record_decisions"] is True
    [d] = out["decisions"]
    assert d["ts"] == T0 + 10 * S and d["side"] == "customer" and d["agent"] == "ann"
    assert d["via"] == "group" and d["tier"] == 0 and d["open_tier"] == 0
    assert d["rule"] is None and d["preferred"] is None and d["customers"] == []
    assert [c["agent"] for c in d["candidates"]] == ["ann", "bob"]
    assert set(d["candidates"][0]) == {
        "agent", "group", "rank", "readiness", "idle_ms", "capacity", "load", "preclosed",
        "ability", "spare_term", "preclosed_term", "blocked"}
    assert d["candidates"][0]["idle_ms"] == 10 * S

    [d3] = (await api.ok("GET", f"{base(t)}/sessions/s3/decisions"))["decisions"]
    assert d3["side"] == "preferred" and d3["via"] == "forced" and d3["agent"] == "bob"
    assert d3["preferred"] == {"agent": "bob", "kind": "forced", "used": True,
                               "reason": "forced"}
    # the same record is in the session's history
    history = (await api.ok("GET", f"{base(t)}/sessions/s3"))["history"]
    [entry] = [e for e in history if e["type"] == "assigned"]
    assert {**entry["decision"], "ts": entry["ts"], "customers": []} == d3


async def test_no_decisions_while_off_and_404_for_an_unknown_session(
        api: Api, atenant: str) -> None:
    t = atenant
    await setup(api, t, record=False)
    await api.admin.engine.arrive(t, T0 + 10 * S, "s1", "g")
    out: dict[str, Any] = await api.ok("GET", f"{base(t)}/sessions/s1/decisions")
    assert out == {"session": "s1", "record_decisions": False, "decisions": []}
    r = await api.call("GET", f"{base(t)}/sessions/nope/decisions")
    assert r.status_code == 404
