"""Reassignment of untouched tickets (docs/tickets.md "Reassignment of untouched
tickets"): a ticket still ``assigned`` ``ticket_reassign_ms`` after it was assigned goes
to another eligible member (never the same), with reason ``untouched`` and the previous
handler; without one it stays and is checked again after the same time; outside service
hours the check moves to the next opening plus that time."""

from __future__ import annotations

from helpers import MIN, SEC, T0
from ticket_helpers import (
    HOUR,
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

from dispatchd.messages import AssignTicket, RespondTicket, TicketAssigned

RA = HOUR


def untouched(ticket, agent, previous, wait_ms, via="balanced"):
    return TicketAssigned(ticket=ticket, group="g", agent=agent, via=via, reason="untouched",
                          wait_ms=wait_ms, previous_agent=previous)


async def test_untouched_goes_to_another_member(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=RA)
    await create(engine, tenant, T0, "tk1", "g")  # to a1
    assert await tick(engine, tenant, T0 + RA - 1) == []
    assert await tick(engine, tenant, T0 + RA) == [untouched("tk1", "a2", "a1", RA)]
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a2")
    assert await open_tickets(redis_client, tenant, "a1") == []
    assert await open_tickets(redis_client, tenant, "a2") == ["tk1"]
    # a2 does not touch it either: back to a1 after another reassign time
    assert await tick(engine, tenant, T0 + 2 * RA - 1) == []
    assert await tick(engine, tenant, T0 + 2 * RA) == [untouched("tk1", "a1", "a2", 2 * RA)]


async def test_default_reassign_time_is_four_hours(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]})
    await engine.configure_group(tenant, T0, "g")  # every ticket setting by default
    await create(engine, tenant, T0, "tk1", "g")
    assert await tick(engine, tenant, T0 + 4 * HOUR - 1) == []
    assert await tick(engine, tenant, T0 + 4 * HOUR) == [
        untouched("tk1", "a2", "a1", 4 * HOUR)]


async def test_reassign_zero_never(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=0)
    await create(engine, tenant, T0, "tk1", "g")
    assert await tick(engine, tenant, T0 + 30 * 24 * HOUR) == []
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a1")


async def test_responded_ticket_is_not_reassigned(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=RA)
    await create(engine, tenant, T0, "tk1", "g")
    await engine.apply(tenant, T0 + RA - 1, RespondTicket(ticket="tk1", agent="a1"))
    assert await state_of(redis_client, tenant, "tk1") == ("in_progress", "a1")
    for n in (1, 2, 5):
        assert await tick(engine, tenant, T0 + n * RA) == []
    assert await state_of(redis_client, tenant, "tk1") == ("in_progress", "a1")


async def test_no_other_eligible_member_stays_and_is_checked_again(engine, tenant,
                                                                   redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, offline=["a2"], reassign_ms=RA)
    await create(engine, tenant, T0, "tk1", "g")
    # a1 is the only one eligible: never reassigned to itself
    assert await tick(engine, tenant, T0 + RA) == []
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a1")
    await engine.set_agent_status(tenant, T0 + RA + 10 * MIN, "a2", "online")
    # not before the next check, one reassign time after the last
    assert await tick(engine, tenant, T0 + RA + 10 * MIN) == []
    assert await tick(engine, tenant, T0 + 2 * RA - 1) == []
    assert await tick(engine, tenant, T0 + 2 * RA) == [untouched("tk1", "a2", "a1", 2 * RA)]


async def test_other_members_at_their_limit_do_not_take_it(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=RA, limit=1)
    await create(engine, tenant, T0, "tk1", "g")  # a1
    await create(engine, tenant, T0 + SEC, "tk2", "g")  # a2, now at its limit
    await engine.apply(tenant, T0 + 2 * SEC, RespondTicket(ticket="tk2", agent="a2"))
    assert await tick(engine, tenant, T0 + RA) == []
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a1")


async def test_reassignment_follows_the_order_preferences(engine, tenant, redis_client):
    """The owner (a1, the handler) is never chosen again; the order's earlier handler a3
    is preferred over the idle a2."""
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"], "a3": ["g"]}, reassign_ms=RA)
    await create(engine, tenant, T0, "old", "g", order_id="o1", order_owner="a3")
    await engine.apply(tenant, T0 + SEC, RespondTicket(ticket="old", agent="a3"))
    await create(engine, tenant, T0 + 2 * SEC, "tk1", "g", order_id="o1", order_owner="a1")
    assert await tick(engine, tenant, T0 + 2 * SEC + RA) == [
        untouched("tk1", "a3", "a1", RA, via="order_history")]


async def test_manual_assignment_restarts_the_untouched_clock(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=RA)
    await create(engine, tenant, T0, "tk1", "g")
    await engine.apply(tenant, T0 + 30 * MIN, AssignTicket(ticket="tk1", agent="a2",
                                                           supervisor="sup"))
    assert await tick(engine, tenant, T0 + RA) == []
    assert await tick(engine, tenant, T0 + 30 * MIN + RA) == [
        untouched("tk1", "a1", "a2", 30 * MIN + RA)]


async def test_out_of_hours_check_moves_to_next_opening_plus_reassign_time(
        engine, tenant, redis_client):
    assigned_at = local(NY, 2026, 4, 15, 16, 30)  # due at 17:30, after closing
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"]}, reassign_ms=RA, now=assigned_at)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), assigned_at)
    await create(engine, tenant, assigned_at, "tk1", "g")
    assert await tick(engine, tenant, assigned_at + RA) == []
    ten = local(NY, 2026, 4, 16, 10, 0)  # next opening 09:00 + 1 h
    assert await tick(engine, tenant, local(NY, 2026, 4, 16, 9, 0)) == []
    assert await tick(engine, tenant, ten - 1) == []
    assert await tick(engine, tenant, ten) == [
        untouched("tk1", "a2", "a1", ten - assigned_at)]


async def test_reassignment_frees_the_previous_handler(engine, tenant, redis_client):
    """a1 (limit 1) loses its untouched ticket: its freed slot takes a ticket waiting in
    its other group g2 at the next tick."""
    await world(engine, tenant, {"a1": ["g", "g2"], "a2": ["g"]}, reassign_ms=RA, limit=1)
    await create(engine, tenant, T0, "tk1", "g")  # a1
    await create(engine, tenant, T0 + SEC, "tk2", "g2")  # waits: a1 is at its limit
    assert await tick(engine, tenant, T0 + RA) == [untouched("tk1", "a2", "a1", RA)]
    assert await tick(engine, tenant, T0 + RA) == [
        TicketAssigned(ticket="tk2", group="g2", agent="a1", via="balanced", reason="queue",
                       wait_ms=RA - SEC)]
