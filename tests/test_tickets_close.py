"""Working on and closing a ticket (docs/tickets.md "Working, forwarding, closing"): only
the handler responds; the handler closes with a resolution, a supervisor may close any
open ticket (also one still waiting); a closed ticket is final."""

from __future__ import annotations

import pytest
from helpers import MIN, T0, assert_refused
from ticket_helpers import (
    NY,
    create,
    daily,
    local,
    open_tickets,
    set_hours,
    state_of,
    tick,
    view,
    world,
)

from dispatchd.errors import BadArgument, NotTicketHandler, TicketState, TicketUnknown
from dispatchd.messages import (
    AssignTicket,
    CloseTicket,
    ForwardTicket,
    RespondTicket,
    TicketClosed,
    TicketResponded,
)


async def close(engine, tenant, now, ticket="tk1", resolution="done", **who):
    return (await engine.apply(tenant, now, CloseTicket(ticket=ticket, resolution=resolution,
                                                        **who))).events


async def test_respond_moves_assigned_to_in_progress(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    out = await engine.apply(tenant, T0 + MIN, RespondTicket(ticket="tk1", agent="a1"))
    assert out.events == [TicketResponded(ticket="tk1", group="g", agent="a1",
                                          first_response_ms=MIN)]
    assert await state_of(redis_client, tenant, "tk1") == ("in_progress", "a1")
    out = await engine.apply(tenant, T0 + 2 * MIN, RespondTicket(ticket="tk1", agent="a1",
                                                                 note="again"))
    assert out.events == [TicketResponded(ticket="tk1", group="g", agent="a1", note="again")]
    assert await state_of(redis_client, tenant, "tk1") == ("in_progress", "a1")


async def test_only_the_handler_responds(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, limit=1)
    await create(engine, tenant, T0, "tk1", "g")
    await create(engine, tenant, T0, "tk2", "g")
    await create(engine, tenant, T0, "tk3", "g")  # waits
    call = engine.apply(tenant, T0, RespondTicket(ticket="tk1", agent="a2"))
    await assert_refused(redis_client, tenant, NotTicketHandler, call, "a1")
    call = engine.apply(tenant, T0, RespondTicket(ticket="tk3", agent="a2"))
    await assert_refused(redis_client, tenant, NotTicketHandler, call, "none")


async def test_closed_by_its_handler(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await engine.apply(tenant, T0 + MIN, RespondTicket(ticket="tk1", agent="a1"))
    assert await close(engine, tenant, T0 + 2 * MIN, agent="a1", resolution="refunded") == [
        TicketClosed(ticket="tk1", group="g", type="task", by="a1", resolution="refunded",
                     resolution_ms=2 * MIN, hops=0, agent="a1")]
    t = await view(redis_client, tenant, "tk1")
    assert (t.state, t.group, t.agent, t.closed_ms, t.closed_by, t.resolution,
            t.resolution_ms) == ("closed", "g", "a1", T0 + 2 * MIN, "a1", "refunded", 2 * MIN)
    assert await open_tickets(redis_client, tenant, "a1") == []


async def test_closed_while_assigned_without_a_response(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await close(engine, tenant, T0 + MIN, agent="a1")
    assert await state_of(redis_client, tenant, "tk1") == ("closed", "a1")


async def test_supervisor_closes_an_assigned_ticket(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    assert await close(engine, tenant, T0 + MIN, supervisor="sup") == [
        TicketClosed(ticket="tk1", group="g", type="task", by="sup", resolution="done",
                     resolution_ms=MIN, hops=0, agent="a1")]
    assert await open_tickets(redis_client, tenant, "a1") == []


async def test_supervisor_closes_a_queued_ticket(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]}, offline=["a1"])
    await create(engine, tenant, T0, "tk1", "g")
    assert await close(engine, tenant, T0 + MIN, supervisor="sup") == [
        TicketClosed(ticket="tk1", group="g", type="task", by="sup", resolution="done",
                     resolution_ms=MIN, hops=0)]
    await engine.set_agent_status(tenant, T0 + 2 * MIN, "a1", "online")
    assert await tick(engine, tenant, T0 + 2 * MIN) == []  # no longer waiting
    assert await state_of(redis_client, tenant, "tk1") == ("closed", None)


async def test_supervisor_closes_a_held_ticket(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 22, 0)
    await world(engine, tenant, {"a1": ["g"]}, now=now)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), now)
    await create(engine, tenant, now, "tk1", "g")
    assert (await close(engine, tenant, now + MIN, supervisor="sup"))[0].agent is None
    assert await tick(engine, tenant, local(NY, 2026, 4, 16, 9, 0)) == []
    assert await state_of(redis_client, tenant, "tk1") == ("closed", None)


async def test_wrong_agent_cannot_close(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, limit=1)
    await create(engine, tenant, T0, "tk1", "g")
    await create(engine, tenant, T0, "tk2", "g")
    await create(engine, tenant, T0, "tk3", "g")  # waits
    await assert_refused(redis_client, tenant, NotTicketHandler,
                         close(engine, tenant, T0, "tk1", agent="a2"), "a1")
    await assert_refused(redis_client, tenant, NotTicketHandler,
                         close(engine, tenant, T0, "tk3", agent="a2"), "none")


@pytest.mark.parametrize("who", [{"agent": "a1"}, {"supervisor": "sup"}])
async def test_empty_resolution_refused(engine, tenant, redis_client, who):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await assert_refused(redis_client, tenant, BadArgument,
                         close(engine, tenant, T0, resolution="", **who), "resolution")


async def test_closed_ticket_is_final(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"], "b1": ["other"]})
    await create(engine, tenant, T0, "tk1", "g")
    await close(engine, tenant, T0 + MIN, agent="a1")
    later = T0 + 2 * MIN
    for call in (
        engine.apply(tenant, later, RespondTicket(ticket="tk1", agent="a1")),
        engine.apply(tenant, later, ForwardTicket(ticket="tk1", to_group="other", agent="a1")),
        engine.apply(tenant, later, ForwardTicket(ticket="tk1", to_group="other",
                                                  supervisor="sup")),
        close(engine, tenant, later, agent="a1"),
        close(engine, tenant, later, supervisor="sup"),
        engine.apply(tenant, later, AssignTicket(ticket="tk1", agent="a2", supervisor="sup")),
    ):
        await assert_refused(redis_client, tenant, TicketState, call, "closed")


async def test_unknown_ticket(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await assert_refused(redis_client, tenant, TicketUnknown,
                         close(engine, tenant, T0, "nope", agent="a1"), "nope")
    call = engine.apply(tenant, T0, RespondTicket(ticket="nope", agent="a1"))
    await assert_refused(redis_client, tenant, TicketUnknown, call, "nope")
