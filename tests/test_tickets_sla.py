"""The SLA clock (docs/tickets.md "SLA clock"): a ticket is overdue while it is open and a
target it has not met is past due; ``ticket_overdue`` fires at the deadline (by the ticket
tick), a late first response ends the first-response part, closing ends it all, and the
missed targets stay listed in ``breached``."""

from __future__ import annotations

from helpers import MIN, T0
from ticket_helpers import HOUR, create, tick, ticket_type, view, world

from dispatchd.messages import (
    CloseTicket,
    QueryTicket,
    RespondTicket,
    TicketClosed,
    TicketOverdue,
    TicketResponded,
    TicketStatus,
)

FR, RES = 30 * MIN, 4 * HOUR


async def sla(engine, tenant, *, offline=(), first_response_ms=FR, resolution_ms=RES):
    """Type ``sla`` with the targets, group g with agent a1; ticket tk1 created at T0."""
    await world(engine, tenant, {"a1": ["g"]}, offline=offline)
    await ticket_type(engine, tenant, "sla", first_response_ms=first_response_ms,
                      resolution_ms=resolution_ms)
    await create(engine, tenant, T0, "tk1", "g", type="sla")


def overdue(kind, due_ms, agent="a1"):
    return TicketOverdue(ticket="tk1", kind=kind, group="g", type="sla", agent=agent,
                         due_ms=due_ms)


async def status(engine, tenant, now) -> TicketStatus:
    [s] = (await engine.apply(tenant, now, QueryTicket(ticket="tk1"))).events
    assert isinstance(s, TicketStatus)
    return s


async def test_deadlines_from_creation(engine, tenant, redis_client):
    await sla(engine, tenant)
    t = await view(redis_client, tenant, "tk1")
    assert (t.first_response_due_ms, t.resolution_due_ms) == (T0 + FR, T0 + RES)
    assert (t.overdue, t.breached, t.first_response_ms) == (False, [], None)
    s = await status(engine, tenant, T0)
    assert (s.first_response_due_ms, s.resolution_due_ms, s.overdue) == (T0 + FR, T0 + RES,
                                                                        False)


async def test_first_response_overdue_then_answered_late(engine, tenant, redis_client):
    await sla(engine, tenant)
    assert await tick(engine, tenant, T0 + FR - 1) == []
    assert await tick(engine, tenant, T0 + FR) == [overdue("first_response", T0 + FR)]
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached) == (True, ["first_response"])
    assert (await status(engine, tenant, T0 + FR)).overdue is True
    assert await tick(engine, tenant, T0 + FR + MIN) == []  # reported once

    out = await engine.apply(tenant, T0 + 40 * MIN, RespondTicket(ticket="tk1", agent="a1",
                                                                  note="on it"))
    assert out.events == [TicketResponded(ticket="tk1", group="g", agent="a1", note="on it",
                                          first_response_ms=40 * MIN)]
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached, t.first_response_ms) == (False, ["first_response"],
                                                              40 * MIN)
    assert (await status(engine, tenant, T0 + 40 * MIN)).overdue is False


async def test_resolution_overdue_until_closed(engine, tenant, redis_client):
    await sla(engine, tenant)
    await engine.apply(tenant, T0 + 10 * MIN, RespondTicket(ticket="tk1", agent="a1"))
    assert await tick(engine, tenant, T0 + FR) == []  # answered in time
    assert await tick(engine, tenant, T0 + RES - 1) == []
    assert await tick(engine, tenant, T0 + RES) == [overdue("resolution", T0 + RES)]
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached) == (True, ["resolution"])
    # a response does not end a resolution breach
    await engine.apply(tenant, T0 + RES + MIN, RespondTicket(ticket="tk1", agent="a1"))
    assert (await view(redis_client, tenant, "tk1")).overdue is True
    out = await engine.apply(tenant, T0 + 5 * HOUR, CloseTicket(ticket="tk1", agent="a1",
                                                                resolution="refunded"))
    assert out.events == [TicketClosed(ticket="tk1", group="g", type="sla", by="a1",
                                       resolution="refunded", resolution_ms=5 * HOUR, hops=0,
                                       agent="a1", breached=["resolution"])]
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached, t.resolution_ms) == (False, ["resolution"], 5 * HOUR)


async def test_both_targets_missed(engine, tenant, redis_client):
    await sla(engine, tenant, offline=["a1"])  # it waits: nobody answers
    assert await tick(engine, tenant, T0 + FR) == [overdue("first_response", T0 + FR, None)]
    assert await tick(engine, tenant, T0 + RES) == [overdue("resolution", T0 + RES, None)]
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached) == (True, ["first_response", "resolution"])
    out = await engine.apply(tenant, T0 + RES + MIN, CloseTicket(ticket="tk1",
                                                                 supervisor="sup",
                                                                 resolution="duplicate"))
    assert out.events[0].breached == ["first_response", "resolution"]
    assert (await view(redis_client, tenant, "tk1")).overdue is False


async def test_closed_in_time_never_overdue(engine, tenant, redis_client):
    await sla(engine, tenant)
    out = await engine.apply(tenant, T0 + 5 * MIN, CloseTicket(ticket="tk1", agent="a1",
                                                               resolution="done"))
    assert out.events[0].breached is None
    assert await tick(engine, tenant, T0 + FR) == []
    assert await tick(engine, tenant, T0 + RES) == []
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached, t.first_response_ms) == (False, [], None)


async def test_closed_after_first_response_breach_keeps_it(engine, tenant, redis_client):
    await sla(engine, tenant)
    await tick(engine, tenant, T0 + FR)
    out = await engine.apply(tenant, T0 + HOUR, CloseTicket(ticket="tk1", agent="a1",
                                                            resolution="done"))
    assert out.events[0].breached == ["first_response"]
    assert await tick(engine, tenant, T0 + RES) == []
    t = await view(redis_client, tenant, "tk1")
    assert (t.overdue, t.breached) == (False, ["first_response"])


async def test_no_targets_no_deadlines(engine, tenant, redis_client):
    await sla(engine, tenant, first_response_ms=0, resolution_ms=0)
    t = await view(redis_client, tenant, "tk1")
    assert (t.first_response_due_ms, t.resolution_due_ms) == (None, None)
    assert await tick(engine, tenant, T0 + 365 * 24 * HOUR) == []
    assert (await view(redis_client, tenant, "tk1")).overdue is False


async def test_only_a_resolution_target(engine, tenant, redis_client):
    await sla(engine, tenant, first_response_ms=0)
    assert await tick(engine, tenant, T0 + RES - 1) == []
    assert await tick(engine, tenant, T0 + RES) == [overdue("resolution", T0 + RES)]
