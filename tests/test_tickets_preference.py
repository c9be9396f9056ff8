"""Who gets a ticket among the eligible members (docs/tickets.md "Assignment"): the
order's owner, else whoever handled earlier tickets of the order (latest first), else the
least loaded (fewest open tickets, then longest since its last ticket, then id); the
``via`` of ``ticket_assigned`` says which."""

from __future__ import annotations

from helpers import MIN, SEC, T0
from ticket_helpers import agent, create, group, handlers, open_tickets, world

from dispatchd.messages import AssignTicket, CloseTicket, TicketAssigned

AGENTS = {"a1": ["g"], "a2": ["g"], "a3": ["g"], "a4": ["g"]}


def via(events) -> tuple[str, str]:
    """(agent, via) of the one ticket_assigned in ``events``."""
    [e] = [e for e in events if isinstance(e, TicketAssigned)]
    return e.agent, e.via


async def test_order_owner_preferred_when_eligible(engine, tenant, redis_client):
    await world(engine, tenant, AGENTS)
    await create(engine, tenant, T0, "x1", "g")  # a1 is the most loaded now
    await create(engine, tenant, T0, "x2", "g")
    await create(engine, tenant, T0, "x3", "g")
    events = await create(engine, tenant, T0 + SEC, "tk1", "g", order_id="o1",
                          order_owner="a1")
    assert via(events) == ("a1", "owner")
    # kept per order: a later ticket of the order without an owner goes to it too
    assert via(await create(engine, tenant, T0 + 2 * SEC, "tk2", "g", order_id="o1")) == (
        "a1", "owner")


async def test_a_later_ticket_may_name_a_new_owner(engine, tenant, redis_client):
    await world(engine, tenant, AGENTS)
    await create(engine, tenant, T0, "tk1", "g", order_id="o1", order_owner="a3")
    events = await create(engine, tenant, T0 + SEC, "tk2", "g", order_id="o1",
                          order_owner="a2")
    assert via(events) == ("a2", "owner")
    assert via(await create(engine, tenant, T0 + 2 * SEC, "tk3", "g", order_id="o1")) == (
        "a2", "owner")


async def history(engine, tenant, *, now=T0):
    """Order o1, owned first by a3 and then by a4: a3 handled its older ticket h1, a4 its
    newer h2, and both keep them open (a1 and a2 are the least loaded)."""
    await world(engine, tenant, AGENTS, now=now)
    await group(engine, tenant, "elsewhere", now=now)
    await create(engine, tenant, now, "h1", "g", order_id="o1", order_owner="a3")
    await create(engine, tenant, now + SEC, "h2", "g", order_id="o1", order_owner="a4")


async def test_owner_offline_goes_to_earlier_handler(engine, tenant, redis_client):
    await history(engine, tenant)
    await engine.set_agent_status(tenant, T0 + MIN, "a4", "offline")
    # handlers of o1: a3 (older), a4 (newer, offline): a3 takes it though a1 is idle
    assert via(await create(engine, tenant, T0 + MIN, "tk1", "g", order_id="o1")) == (
        "a3", "order_history")


async def test_earlier_handlers_latest_first(engine, tenant, redis_client):
    await history(engine, tenant)
    await engine.set_agent_status(tenant, T0 + MIN, "a4", "offline")
    await engine.apply(tenant, T0 + MIN, AssignTicket(ticket="h1", agent="a2",
                                                      supervisor="sup"))
    # handlers of o1, latest first: a2, a4 (offline), a3
    assert via(await create(engine, tenant, T0 + 2 * MIN, "tk1", "g", order_id="o1")) == (
        "a2", "order_history")
    await engine.apply(tenant, T0 + 3 * MIN, AssignTicket(ticket="h1", agent="a3",
                                                          supervisor="sup"))
    # now a3 handled the order last (a2 still holds tk1)
    assert via(await create(engine, tenant, T0 + 4 * MIN, "tk2", "g", order_id="o1")) == (
        "a3", "order_history")


async def test_owner_at_its_limit_goes_to_earlier_handler(engine, tenant, redis_client):
    await history(engine, tenant)
    await agent(engine, tenant, "a4", ["g"], limit=1, now=T0 + MIN)  # holds h2
    assert via(await create(engine, tenant, T0 + MIN, "tk1", "g", order_id="o1")) == (
        "a3", "order_history")


async def test_owner_not_a_member_goes_to_earlier_handler(engine, tenant, redis_client):
    await history(engine, tenant)
    await agent(engine, tenant, "a4", ["elsewhere"], now=T0 + MIN)
    await engine.apply(tenant, T0 + MIN, AssignTicket(ticket="h2", agent="a2",
                                                      supervisor="sup"))
    # o1's handlers, latest first: a2 (h2 reassigned to it), a4 (not a member), a3
    assert via(await create(engine, tenant, T0 + 2 * MIN, "tk1", "g", order_id="o1")) == (
        "a2", "order_history")


async def test_no_eligible_owner_or_handler_least_loaded(engine, tenant, redis_client):
    await history(engine, tenant)
    for name in ("a3", "a4"):
        await engine.set_agent_status(tenant, T0 + MIN, name, "offline")
    assert via(await create(engine, tenant, T0 + MIN, "tk1", "g", order_id="o1")) == (
        "a1", "balanced")


async def test_least_loaded_then_longest_idle_then_id(engine, tenant, redis_client):
    await world(engine, tenant, {"a3": ["g"], "a2": ["g"], "a1": ["g"]})
    # all idle, none ever assigned a ticket: by id
    got = handlers(await create(engine, tenant, T0, "t1", "g"))
    got |= handlers(await create(engine, tenant, T0 + SEC, "t2", "g"))
    got |= handlers(await create(engine, tenant, T0 + 2 * SEC, "t3", "g"))
    assert got == {"t1": "a1", "t2": "a2", "t3": "a3"}
    # all hold one: the one whose last ticket is oldest (a1 at T0)
    assert via(await create(engine, tenant, T0 + 3 * SEC, "t4", "g")) == ("a1", "balanced")
    # a2 finishes its ticket: it has the fewest open tickets although it is not idlest
    await engine.apply(tenant, T0 + 4 * SEC, CloseTicket(ticket="t2", agent="a2",
                                                         resolution="x"))
    assert via(await create(engine, tenant, T0 + 5 * SEC, "t5", "g")) == ("a2", "balanced")
    # a2 and a3 hold one each, a2 got its ticket later: a3
    assert via(await create(engine, tenant, T0 + 6 * SEC, "t6", "g")) == ("a3", "balanced")
    assert sorted(await open_tickets(redis_client, tenant, "a1")) == ["t1", "t4"]


async def test_manual_assignment_has_via_manual(engine, tenant, redis_client):
    await world(engine, tenant, AGENTS)
    await create(engine, tenant, T0, "tk1", "g")
    out = await engine.apply(tenant, T0 + MIN, AssignTicket(ticket="tk1", agent="a3",
                                                            supervisor="sup"))
    assert out.events == [TicketAssigned(ticket="tk1", group="g", agent="a3", via="manual",
                                         reason="manual", wait_ms=MIN, previous_agent="a1",
                                         by="sup")]
