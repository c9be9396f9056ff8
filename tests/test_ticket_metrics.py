"""Ticket metrics against known ticket traffic (docs/metrics.md "Tickets").

Both paths that feed them: gateway commands and the daemon's ticket tick through the real
streams (in-process consumer, fake clock), and commands applied through the engine (the
admin API's path) whose typed events go to ``observe.observe_events``. Then the sampler's
ticket gauges on the state that traffic leaves.

Every test uses a fresh tenant, so the process-wide registry's series of one test are
its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from gateway_helpers import MIN, SEC, T0, open_gateway, types

from dispatchd import metrics, observe
from dispatchd.engine import Engine
from dispatchd.messages import (
    AssignTicket,
    CloseTicket,
    ConfigureTicketType,
    CreateTicket,
    Event,
    ForwardTicket,
    RespondTicket,
    ServiceWindows,
    SetServiceWindows,
    TicketAssigned,
    TicketClosed,
    TicketOverdue,
    TicketResponded,
    TicketTick,
)
from dispatchd.sampler import Sampler

HOUR = 60 * MIN


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant) as g:
        yield g


def value(name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels`` (0 when it does not exist)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def claim_type(engine: Engine, tenant: str, now: int) -> None:
    """Ticket type ``claim``: first response due in 10 min, resolution in 60 min."""
    await engine.apply(tenant, now, ConfigureTicketType(
        type="claim", name="Claim", first_response_ms=10 * MIN, resolution_ms=HOUR))


async def open_from(engine: Engine, tenant: str, now: int, group: str, start: int,
                    end: int) -> None:
    """``group`` (without service hours of its own) is in service from ``start`` to
    ``end`` only: its stored UTC windows, as the daemon would write them."""
    await engine.apply(tenant, now, SetServiceWindows(
        group=group, meta_sha1=hashlib.sha1(b"").hexdigest(),
        windows=ServiceWindows(hz=now + 21 * 24 * HOUR, iv=[start, end])))


def handler(events: list[dict[str, Any]], ticket: str) -> str:
    """The agent of the latest ``ticket_assigned`` of ``ticket`` in ``events``."""
    return [e["agent"] for e in events
            if e["type"] == "ticket_assigned" and e["ticket"] == ticket][-1]


# ------------------------------------------------------------------ the gateway path


async def test_gateway_commands_and_ticks_count_every_ticket_metric(gw, redis_client):
    """billing (ann, cat; untouched tickets reassigned after 20 min), refunds (bob) and
    night (nia; in service from T0 + 1 h): t1 is answered in 2 min, goes to refunds and
    back (a loop) and is closed at 15 min; t2 is never touched, reassigned, answered late
    and goes overdue twice; t3 is held until night opens, overdue twice, closed at 70 min."""
    t, e = gw.tenant, gw.engine
    t0 = gw.clock.now
    await claim_type(e, t, t0)
    await gw.group("billing", ticket_reassign_ms=20 * MIN)
    await gw.group("refunds")
    await gw.group("night", ticket_release_spread_ms=0)
    await open_from(e, t, t0, "night", t0 + HOUR, t0 + 9 * HOUR)
    for name, group in (("ann", "billing"), ("cat", "billing"), ("bob", "refunds"),
                        ("nia", "night")):
        await gw.agent(name, [group])

    async def send(kind: str, cmd_id: str, **fields: Any) -> list[dict[str, Any]]:
        return await gw.run({"type": kind, "id": cmd_id, **fields})

    log: list[dict[str, Any]] = []
    for ticket, group in (("t1", "billing"), ("t2", "billing"), ("t3", "night")):
        log += await send("create_ticket", f"c-{ticket}", ticket=ticket, ticket_type="claim",
                          group=group, by="crm")
    assert types(log).count("ticket_assigned") == 2 and "ticket_held" in types(log)

    snap = await Sampler(redis_client, [t], interval_s=1.0, clock=gw.clock).sample()
    assert sorted(lv for lv in snap["open_tickets"] if lv[0][0] == t) == [
        ((t, "billing"), 2.0), ((t, "night"), 1.0), ((t, "refunds"), 0.0)]
    assert ((t, "night"), 1.0) in snap["waiting_tickets"]
    assert ((t, "billing"), 0.0) in snap["waiting_tickets"]
    assert ((t,), 0.0) in snap["tickets_overdue_now"]

    gw.clock.advance(2 * MIN)
    await send("respond_ticket", "r-t1", ticket="t1", agent=handler(log, "t1"))
    gw.clock.advance(1 * MIN)
    log += await send("forward_ticket", "f1-t1", ticket="t1", agent=handler(log, "t1"),
                      to_group="refunds", note="a refund")
    gw.clock.advance(1 * MIN)
    log += await send("forward_ticket", "f2-t1", ticket="t1", agent="bob",
                      to_group="billing", note="not a refund after all")
    assert "ticket_loop" in types(log)
    gw.clock.advance(6 * MIN)  # T0 + 10 min: no first response on t2 and t3
    log += await gw.pump()
    gw.clock.advance(5 * MIN)
    log += await send("close_ticket", "cl-t1", ticket="t1", agent=handler(log, "t1"),
                      resolution="refunded")
    first = handler(log, "t2")
    gw.clock.advance(5 * MIN)  # T0 + 20 min: t2 untouched since T0
    log += await gw.pump()
    assert handler(log, "t2") != first
    gw.clock.advance(5 * MIN)
    await send("respond_ticket", "r-t2", ticket="t2", agent=handler(log, "t2"))
    gw.clock.advance(35 * MIN)  # T0 + 60 min: night opens; t2 and t3 are due
    log += await gw.pump()
    assert handler(log, "t3") == "nia"
    gw.clock.advance(10 * MIN)
    await send("close_ticket", "cl-t3", ticket="t3", agent="nia", resolution="done")

    assert [(x["ticket"], x["reason"]) for x in log if x["type"] == "ticket_assigned"] == [
        ("t1", "created"), ("t2", "created"), ("t1", "forwarded"), ("t1", "forwarded"),
        ("t2", "untouched"), ("t3", "shift_start")]
    assert value("dispatchd_tickets_created_total", tenant=t, group="billing",
                 type="claim") == 2
    assert value("dispatchd_tickets_created_total", tenant=t, group="night", type="claim") == 1

    def assigned(group: str, reason: str) -> float:
        return value("dispatchd_tickets_assigned_total", tenant=t, group=group, via="balanced",
                     reason=reason)

    assert assigned("billing", "created") == 2 and assigned("billing", "forwarded") == 1
    assert assigned("refunds", "forwarded") == 1 and assigned("billing", "untouched") == 1
    assert assigned("night", "shift_start") == 1
    assert value("dispatchd_tickets_reassigned_total", tenant=t, group="billing") == 1
    assert value("dispatchd_tickets_forwarded_total", tenant=t, from_group="billing",
                 to_group="refunds") == 1
    assert value("dispatchd_tickets_forwarded_total", tenant=t, from_group="refunds",
                 to_group="billing") == 1
    assert value("dispatchd_ticket_loops_total", tenant=t, group="billing") == 1
    assert value("dispatchd_ticket_loops_total", tenant=t, group="refunds") == 0
    for group in ("billing", "night"):
        for kind in ("first_response", "resolution"):
            assert value("dispatchd_tickets_overdue_total", tenant=t, group=group,
                         kind=kind) == 1, (group, kind)
    # first responses: t1 after 2 min, t2 after 25 min
    assert value("dispatchd_ticket_first_response_seconds_count", tenant=t,
                 group="billing") == 2
    assert value("dispatchd_ticket_first_response_seconds_sum", tenant=t,
                 group="billing") == 120 + 1500
    assert value("dispatchd_ticket_first_response_seconds_bucket", tenant=t, group="billing",
                 le="300.0") == 1
    # closed: t1 after 15 min in billing, t3 after 70 min in night
    assert value("dispatchd_ticket_resolution_seconds_count", tenant=t, group="billing") == 1
    assert value("dispatchd_ticket_resolution_seconds_sum", tenant=t, group="billing") == 900
    assert value("dispatchd_ticket_resolution_seconds_sum", tenant=t, group="night") == 4200
    assert value("dispatchd_ticket_resolution_seconds_bucket", tenant=t, group="night",
                 le="3600.0") == 0
    assert value("dispatchd_ticket_resolution_seconds_bucket", tenant=t, group="night",
                 le="7200.0") == 1
    assert value("dispatchd_commands_total", tenant=t, kind="forward_ticket",
                 outcome="applied") == 2
    assert value("dispatchd_events_total", tenant=t, kind="ticket_overdue") == 4

    # what is left: t2, open, assigned and overdue
    sampler = Sampler(redis_client, [t], interval_s=1.0, clock=gw.clock)
    snap = await sampler.sample()
    assert ((t, "billing"), 1.0) in snap["open_tickets"]
    assert ((t, "night"), 0.0) in snap["open_tickets"]
    assert ((t, "night"), 0.0) in snap["waiting_tickets"]
    assert ((t,), 1.0) in snap["tickets_overdue_now"]
    assert await sampler.sample_once()
    assert metrics.REGISTRY.get_sample_value("dispatchd_tickets_overdue_now", {"tenant": t}) == 1
    assert metrics.REGISTRY.get_sample_value(
        "dispatchd_open_tickets", {"tenant": t, "group": "billing"}) == 1


async def test_sampler_creates_the_ticket_alert_counters_at_zero(gw, redis_client):
    await gw.group("quiet")
    await Sampler(redis_client, [gw.tenant], interval_s=1.0, clock=gw.clock).sample()
    labels = {"tenant": gw.tenant, "group": "quiet"}
    assert metrics.REGISTRY.get_sample_value("dispatchd_ticket_loops_total", labels) == 0
    assert metrics.REGISTRY.get_sample_value("dispatchd_tickets_reassigned_total", labels) == 0
    for kind in ("first_response", "resolution"):
        assert metrics.REGISTRY.get_sample_value(
            "dispatchd_tickets_overdue_total", {**labels, "kind": kind}) == 0
    assert metrics.REGISTRY.get_sample_value(
        "dispatchd_ticket_resolution_seconds_count", labels) == 0


def test_batch_stats_with_unknown_labels_are_folded(tenant):
    """A newer script's via, reason or overdue kind is counted as ``other``."""
    stats = observe.BatchStats(
        n={"tka g robot created": 2, "tka g balanced psychic": 1, "tko g weekend": 1,
           "tkc g claim": 3},
        tkr=["g", 90_000, "h", 3 * 86_400_000], tkfr=["g", 30_000])
    observe.record_batch(tenant, stats, {}, [], 0.0)
    t = tenant
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g", via="other",
                 reason="created") == 2
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g", via="balanced",
                 reason="other") == 1
    assert value("dispatchd_tickets_overdue_total", tenant=t, group="g", kind="other") == 1
    assert value("dispatchd_tickets_created_total", tenant=t, group="g", type="claim") == 3
    assert value("dispatchd_ticket_resolution_seconds_sum", tenant=t, group="g") == 90
    assert value("dispatchd_ticket_resolution_seconds_bucket", tenant=t, group="h",
                 le="259200.0") == 1
    assert value("dispatchd_ticket_resolution_seconds_bucket", tenant=t, group="h",
                 le="172800.0") == 0
    assert value("dispatchd_ticket_first_response_seconds_sum", tenant=t, group="g") == 30


# -------------------------------------------------------------------- the admin path


async def test_engine_events_count_every_ticket_metric(engine, tenant):
    """What the admin API does: ann owns order o1, so her ticket comes back to her after a
    supervisor sent it to bob's group and back; a supervisor hands it to cid, it goes
    overdue, and a supervisor closes it."""
    t = tenant
    events: list[Event] = []

    async def apply(now: int, command: Any) -> None:
        events.extend((await engine.apply(t, now, command)).events)

    await claim_type(engine, t, T0)
    for group in ("g1", "g2"):
        await engine.configure_group(t, T0, group, ticket_reassign_ms=0)
    for name, group in (("ann", "g1"), ("cid", "g1"), ("bob", "g2")):
        await engine.configure_agent(t, T0, name, capacity=1, abilities={group: 1.0})
        await engine.set_agent_status(t, T0, name, "online")
    await apply(T0, CreateTicket(ticket="k1", type="claim", group="g1", by="crm",
                                 order_id="o1", order_owner="ann"))
    await apply(T0 + 5 * MIN, RespondTicket(ticket="k1", agent="ann", note="looking"))
    await apply(T0 + 6 * MIN, RespondTicket(ticket="k1", agent="ann", note="still"))
    await apply(T0 + 7 * MIN, ForwardTicket(ticket="k1", to_group="g2", note="yours",
                                            supervisor="sue"))
    await apply(T0 + 8 * MIN, ForwardTicket(ticket="k1", to_group="g1", note="no, yours",
                                            agent="bob"))
    await apply(T0 + 9 * MIN, AssignTicket(ticket="k1", agent="cid", supervisor="sue"))
    await apply(T0 + HOUR, TicketTick())
    await apply(T0 + HOUR + 30 * SEC, CloseTicket(ticket="k1", resolution="done",
                                                  supervisor="sue"))
    assert [(e.agent, e.via, e.reason) for e in events if isinstance(e, TicketAssigned)] == [
        ("ann", "owner", "created"), ("bob", "balanced", "forwarded"),
        ("ann", "owner", "forwarded"), ("cid", "manual", "manual")]
    assert [e.kind for e in events if isinstance(e, TicketOverdue)] == ["resolution"]
    assert [e.first_response_ms for e in events if isinstance(e, TicketResponded)] == [
        5 * MIN, None]
    assert [e.resolution_ms for e in events if isinstance(e, TicketClosed)] == [
        HOUR + 30 * SEC]

    observe.observe_events(t, events)

    assert value("dispatchd_tickets_created_total", tenant=t, group="g1", type="claim") == 1
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g1", via="owner",
                 reason="created") == 1
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g1", via="owner",
                 reason="forwarded") == 1
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g2", via="balanced",
                 reason="forwarded") == 1
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g1", via="manual",
                 reason="manual") == 1
    assert value("dispatchd_tickets_reassigned_total", tenant=t, group="g1") == 0
    assert value("dispatchd_tickets_forwarded_total", tenant=t, from_group="g1",
                 to_group="g2") == 1
    assert value("dispatchd_tickets_forwarded_total", tenant=t, from_group="g2",
                 to_group="g1") == 1
    assert value("dispatchd_ticket_loops_total", tenant=t, group="g1") == 1
    assert value("dispatchd_tickets_overdue_total", tenant=t, group="g1",
                 kind="resolution") == 1
    assert value("dispatchd_tickets_overdue_total", tenant=t, group="g1",
                 kind="first_response") == 0
    assert value("dispatchd_ticket_first_response_seconds_count", tenant=t, group="g1") == 1
    assert value("dispatchd_ticket_first_response_seconds_sum", tenant=t, group="g1") == 300
    assert value("dispatchd_ticket_resolution_seconds_sum", tenant=t, group="g1") == 3630
    assert value("dispatchd_events_total", tenant=t, kind="ticket_responded") == 2
    assert value("dispatchd_events_total", tenant=t, kind="ticket_loop") == 1


async def test_engine_untouched_reassignment_counts_as_reassigned(engine, tenant):
    t = tenant
    await claim_type(engine, t, T0)
    await engine.configure_group(t, T0, "g", ticket_reassign_ms=30 * MIN)
    for name in ("ann", "bob"):
        await engine.configure_agent(t, T0, name, capacity=1, abilities={"g": 1.0})
        await engine.set_agent_status(t, T0, name, "online")
    created = await engine.apply(t, T0, CreateTicket(ticket="k", type="claim", group="g",
                                                     by="crm"))
    ticked = await engine.apply(t, T0 + 30 * MIN, TicketTick())
    observe.observe_events(t, [*created.events, *ticked.events])
    moved = [e for e in ticked.events if isinstance(e, TicketAssigned)]
    assert [(e.reason, e.previous_agent) for e in moved] == [("untouched", "ann")]
    assert value("dispatchd_tickets_reassigned_total", tenant=t, group="g") == 1
    assert value("dispatchd_tickets_assigned_total", tenant=t, group="g", via="balanced",
                 reason="untouched") == 1
    assert value("dispatchd_tickets_overdue_total", tenant=t, group="g",
                 kind="first_response") == 1


def test_engine_events_with_unknown_labels_are_folded(tenant):
    observe.observe_events(tenant, [
        TicketAssigned(ticket="k", group="g", agent="a", via="robot", reason="magic",
                       wait_ms=0),
        TicketOverdue(ticket="k", kind="weekend", group="g", type="claim", due_ms=T0),
    ])
    assert value("dispatchd_tickets_assigned_total", tenant=tenant, group="g", via="other",
                 reason="other") == 1
    assert value("dispatchd_tickets_overdue_total", tenant=tenant, group="g",
                 kind="other") == 1
