"""Manual assignment (docs/tickets.md "Manual assignment"): a supervisor assigns an open
ticket to a member of its group, whatever the agent's status and ticket limit and the
group's service hours; never outside the group."""

from __future__ import annotations

from helpers import MIN, SEC, T0, assert_refused
from ticket_helpers import (
    NY,
    create,
    daily,
    local,
    open_tickets,
    set_hours,
    state_of,
    tick,
    world,
)

from dispatchd.errors import (
    AgentNotInGroup,
    AgentUnknown,
    BadArgument,
    TicketState,
    TicketUnknown,
)
from dispatchd.messages import AssignTicket, CloseTicket, TicketAssigned


def manual(ticket, agent, wait_ms, previous=None, group="g"):
    return TicketAssigned(ticket=ticket, group=group, agent=agent, via="manual",
                          reason="manual", wait_ms=wait_ms, previous_agent=previous, by="sup")


async def assign(engine, tenant, now, ticket, agent, supervisor="sup"):
    out = await engine.apply(tenant, now, AssignTicket(ticket=ticket, agent=agent,
                                                       supervisor=supervisor))
    return out.events


async def test_ignores_status_limit_and_hours(engine, tenant, redis_client):
    """A held ticket (the group is closed) goes to an offline agent with limit 0."""
    now = local(NY, 2026, 4, 15, 22, 0)
    await world(engine, tenant, {"a1": ["g"]}, offline=["a1"], limit=0, now=now)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), now)
    await create(engine, tenant, now, "tk1", "g")
    assert await state_of(redis_client, tenant, "tk1") == ("held", None)
    assert await assign(engine, tenant, now + MIN, "tk1", "a1") == [manual("tk1", "a1", MIN)]
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a1")
    assert await open_tickets(redis_client, tenant, "a1") == ["tk1"]
    # no longer waiting: the opening releases nothing
    assert await tick(engine, tenant, local(NY, 2026, 4, 16, 9, 0)) == []


async def test_queued_ticket_assigned_by_hand(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]}, offline=["a1"])
    await create(engine, tenant, T0, "tk1", "g")
    assert await assign(engine, tenant, T0 + MIN, "tk1", "a1") == [manual("tk1", "a1", MIN)]
    assert await tick(engine, tenant, T0 + 10 * MIN) == []


async def test_takes_it_from_its_handler(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, limit=1)
    await create(engine, tenant, T0, "tk1", "g")  # a1
    await create(engine, tenant, T0, "tk2", "g")  # a2
    await create(engine, tenant, T0, "tk3", "g")  # queued
    assert await assign(engine, tenant, T0 + 30 * SEC, "tk1", "a2") == [
        manual("tk1", "a2", 30 * SEC, previous="a1")]
    assert sorted(await open_tickets(redis_client, tenant, "a2")) == ["tk1", "tk2"]
    # a1's freed slot takes the waiting ticket at the next tick
    events = await tick(engine, tenant, T0 + 30 * SEC)
    assert [(e.ticket, e.agent, e.reason) for e in events] == [("tk3", "a1", "queue")]


async def test_refuses_an_agent_outside_the_group(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "x1": ["other"]})
    await create(engine, tenant, T0, "tk1", "g")
    call = assign(engine, tenant, T0 + MIN, "tk1", "x1")
    await assert_refused(redis_client, tenant, AgentNotInGroup, call, "x1 g")


async def test_refuses_the_agent_it_is_already_with(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    call = assign(engine, tenant, T0 + MIN, "tk1", "a1")
    await assert_refused(redis_client, tenant, TicketState, call, "already with a1")


async def test_refuses_a_closed_ticket(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await engine.apply(tenant, T0 + MIN, CloseTicket(ticket="tk1", agent="a1",
                                                     resolution="done"))
    call = assign(engine, tenant, T0 + 2 * MIN, "tk1", "a2")
    await assert_refused(redis_client, tenant, TicketState, call, "closed")


async def test_refuses_unknown_ticket_agent_and_empty_supervisor(engine, tenant,
                                                                 redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await assert_refused(redis_client, tenant, TicketUnknown,
                         assign(engine, tenant, T0, "nope", "a2"), "nope")
    await assert_refused(redis_client, tenant, AgentUnknown,
                         assign(engine, tenant, T0, "tk1", "ghost"), "ghost")
    await assert_refused(redis_client, tenant, BadArgument,
                         assign(engine, tenant, T0, "tk1", "a2", supervisor=""), "supervisor")
