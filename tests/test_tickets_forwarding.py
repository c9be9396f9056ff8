"""Forwarding (docs/tickets.md "Working, forwarding, closing" and "SLA clock"): the handler
or a supervisor sends a ticket on to another group; every hop is recorded, a hop back into
a group it has been in is a loop (reported, not refused), and the SLA clock runs on from
creation across every hop."""

from __future__ import annotations

from helpers import MIN, SEC, T0, assert_refused
from ticket_helpers import (
    HOUR,
    create,
    group,
    open_tickets,
    state_of,
    tick,
    ticket_type,
    view,
    world,
)

from dispatchd import tickets
from dispatchd.errors import (
    BadId,
    GroupUnknown,
    NotTicketHandler,
    SameGroup,
    TicketState,
    TicketUnknown,
)
from dispatchd.messages import (
    CloseTicket,
    ForwardTicket,
    RespondTicket,
    TicketAssigned,
    TicketClosed,
    TicketForwarded,
    TicketLoop,
    TicketOverdue,
    TicketQueued,
    TicketResponded,
)
from dispatchd.tickets import Hop

# g1 -> g2 -> g3 -> g4 -> g5 -> g6 -> g3 -> g4 -> g3 -> g1 -> g2: ten hops, five of them
# back into a group already visited (g3 three times in all)
PATH = ["g1", "g2", "g3", "g4", "g5", "g6", "g3", "g4", "g3", "g1", "g2"]
LOOPS = {6: 2, 7: 2, 8: 3, 9: 2, 10: 2}  # hop -> visits of the group it went into
HANDLER = {f"g{n}": f"h{n}" for n in range(1, 7)}  # each group's one member
BY_SUPERVISOR = {5, 9}  # h5 is offline (the ticket waits in g5); a supervisor steps in


def at(hop: int) -> int:
    """When hop ``hop`` is made (hop 0: the creation)."""
    return T0 + hop * 10 * MIN + hop * SEC


async def forward(engine, tenant, now, ticket, to, *, agent=None, supervisor=None, note=""):
    out = await engine.apply(tenant, now, ForwardTicket(ticket=ticket, to_group=to, note=note,
                                                        agent=agent, supervisor=supervisor))
    return out.events


async def chain(engine, tenant):
    """The ten-hop ticket tk1 (type ``sla``: first response 30 min, resolution 3 h),
    answered first in g3 a minute after it got there; returns each hop's events."""
    await world(engine, tenant, {h: [g] for g, h in HANDLER.items()}, offline=["h5"])
    await ticket_type(engine, tenant, "sla", first_response_ms=30 * MIN,
                      resolution_ms=3 * HOUR)
    await create(engine, tenant, T0, "tk1", "g1", type="sla", priority=4)
    per_hop = {}
    for hop in range(1, 11):
        src, dst = PATH[hop - 1], PATH[hop]
        who = {"supervisor": "sup"} if hop in BY_SUPERVISOR else {"agent": HANDLER[src]}
        per_hop[hop] = await forward(engine, tenant, at(hop), "tk1", dst, note=f"n{hop}",
                                     **who)
        if hop == 2:
            await engine.apply(tenant, at(2) + MIN, RespondTicket(ticket="tk1", agent="h3",
                                                                  note="looking"))
    return per_hop


def expected_hop(hop: int) -> Hop:
    src = PATH[hop - 1]
    return Hop(hop=hop, by="sup" if hop in BY_SUPERVISOR else HANDLER[src], at_ms=at(hop),
               from_group=src, to_group=PATH[hop], note=f"n{hop}",
               spent_ms=at(hop) - at(hop - 1), loop=hop in LOOPS,
               from_agent=None if src == "g5" else HANDLER[src])


async def test_ten_hops_with_loops_recorded(engine, tenant, redis_client):
    await chain(engine, tenant)
    assert await tickets.get_hops(redis_client, tenant, "tk1") == [
        expected_hop(hop) for hop in range(1, 11)]
    t = await view(redis_client, tenant, "tk1")
    assert (t.path, t.hops, t.group, t.agent, t.state) == (PATH, 10, "g2", "h2", "assigned")
    # creation time, priority and SLA deadlines kept across the hops
    assert (t.created_ms, t.priority) == (T0, 4)
    assert (t.first_response_due_ms, t.resolution_due_ms) == (T0 + 30 * MIN, T0 + 3 * HOUR)
    assert t.entered_group_ms == at(10)


async def test_each_hop_reports_forward_loop_and_entry(engine, tenant, redis_client):
    per_hop = await chain(engine, tenant)
    for hop, events in per_hop.items():
        h = expected_hop(hop)
        forwarded = TicketForwarded(ticket="tk1", from_group=h.from_group,
                                    to_group=h.to_group, by=h.by, note=h.note, hop=hop,
                                    spent_ms=h.spent_ms, loop=h.loop, from_agent=h.from_agent)
        expected: list = [forwarded]
        if hop in LOOPS:
            expected.append(TicketLoop(ticket="tk1", group=h.to_group, hop=hop,
                                       visits=LOOPS[hop]))
        if h.to_group == "g5":  # h5 is offline
            expected.append(TicketQueued(ticket="tk1", group="g5", reason="forwarded",
                                         position=1))
        else:
            expected.append(TicketAssigned(ticket="tk1", group=h.to_group,
                                           agent=HANDLER[h.to_group], via="balanced",
                                           reason="forwarded", wait_ms=0))
        assert events == expected, hop


async def test_history_keeps_every_event_in_order(engine, tenant, redis_client):
    await chain(engine, tenant)
    history = await tickets.get_history(redis_client, tenant, "tk1")
    kinds = [e["type"] for e in history]
    assert kinds[:2] == ["ticket_created", "ticket_assigned"]
    assert kinds.count("ticket_forwarded") == 10
    assert [e["hop"] for e in history if e["type"] == "ticket_loop"] == list(LOOPS)
    assert [e["visits"] for e in history if e["type"] == "ticket_loop"] == list(LOOPS.values())
    responded = [e for e in history if e["type"] == "ticket_responded"]
    assert [(e["group"], e["first_response_ms"]) for e in responded] == [
        ("g3", at(2) + MIN - T0)]
    assert [e["ts"] for e in history] == sorted(e["ts"] for e in history)


async def test_sla_clock_runs_from_creation_across_hops(engine, tenant, redis_client):
    await chain(engine, tenant)
    t = await view(redis_client, tenant, "tk1")
    # first response given in g3, counted from creation in g1
    assert t.first_response_ms == at(2) + MIN - T0
    assert await tick(engine, tenant, T0 + 30 * MIN) == []  # answered in time
    assert await tick(engine, tenant, T0 + 3 * HOUR - 1) == []
    assert await tick(engine, tenant, T0 + 3 * HOUR) == [
        TicketOverdue(ticket="tk1", kind="resolution", group="g2", type="sla",
                      agent="h2", due_ms=T0 + 3 * HOUR)]
    out = await engine.apply(tenant, T0 + 4 * HOUR, CloseTicket(ticket="tk1", agent="h2",
                                                                resolution="sorted"))
    assert out.events == [TicketClosed(ticket="tk1", group="g2", type="sla", by="h2",
                                       resolution="sorted", resolution_ms=4 * HOUR, hops=10,
                                       agent="h2", breached=["resolution"])]


async def test_first_response_due_from_creation_not_from_the_last_hop(engine, tenant,
                                                                      redis_client):
    await world(engine, tenant, {"h1": ["g1"], "h2": ["g2"], "h3": ["g3"]})
    await ticket_type(engine, tenant, "sla", first_response_ms=30 * MIN)
    await create(engine, tenant, T0, "tk1", "g1", type="sla")
    await forward(engine, tenant, T0 + 10 * MIN, "tk1", "g2", agent="h1")
    await forward(engine, tenant, T0 + 20 * MIN, "tk1", "g3", agent="h2")
    assert await tick(engine, tenant, T0 + 30 * MIN) == [
        TicketOverdue(ticket="tk1", kind="first_response", group="g3", type="sla",
                      agent="h3", due_ms=T0 + 30 * MIN)]
    out = await engine.apply(tenant, T0 + 40 * MIN, RespondTicket(ticket="tk1", agent="h3"))
    assert out.events == [TicketResponded(ticket="tk1", group="g3", agent="h3",
                                          first_response_ms=40 * MIN)]
    # later responses, in any group, are not first responses
    await forward(engine, tenant, T0 + 50 * MIN, "tk1", "g1", agent="h3")
    out = await engine.apply(tenant, T0 + 60 * MIN, RespondTicket(ticket="tk1", agent="h1"))
    assert out.events == [TicketResponded(ticket="tk1", group="g1", agent="h1")]
    assert (await view(redis_client, tenant, "tk1")).first_response_ms == 40 * MIN


async def test_forward_keeps_creation_time_and_priority(engine, tenant, redis_client):
    """In its new group the ticket queues by its creation time and priority, with the new
    group's priority unit (10 s in g2): score T0 + 60 s - 2 x 10 s = T0 + 40 s, after a
    ticket created in g2 at T0 + 30 s."""
    await world(engine, tenant, {"h1": ["g1"]})
    await group(engine, tenant, "g2", priority_unit_ms=10 * SEC)
    await create(engine, tenant, T0 + 30 * SEC, "mine", "g2")
    await create(engine, tenant, T0 + 60 * SEC, "tk1", "g1", priority=2)
    await create(engine, tenant, T0 + 45 * SEC, "late", "g2")  # score T0 + 45 s
    events = await forward(engine, tenant, T0 + 10 * MIN, "tk1", "g2", agent="h1")
    assert events[-1] == TicketQueued(ticket="tk1", group="g2", reason="forwarded",
                                      position=2)


async def test_forward_leaves_the_handler(engine, tenant, redis_client):
    await world(engine, tenant, {"h1": ["g1"], "h2": ["g2"]})
    await create(engine, tenant, T0, "tk1", "g1")
    await engine.apply(tenant, T0 + MIN, RespondTicket(ticket="tk1", agent="h1"))
    await forward(engine, tenant, T0 + 2 * MIN, "tk1", "g2", agent="h1")
    assert await open_tickets(redis_client, tenant, "h1") == []
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "h2")
    # h1 is no longer its handler
    call = forward(engine, tenant, T0 + 3 * MIN, "tk1", "g1", agent="h1")
    await assert_refused(redis_client, tenant, NotTicketHandler, call, "h2")


async def test_only_the_handler_may_forward(engine, tenant, redis_client):
    await world(engine, tenant, {"h1": ["g1"], "o1": ["g1"], "h2": ["g2"]})
    await create(engine, tenant, T0, "tk1", "g1")  # to h1
    call = forward(engine, tenant, T0 + MIN, "tk1", "g2", agent="o1")
    await assert_refused(redis_client, tenant, NotTicketHandler, call, "h1")
    # a waiting ticket has no handler
    await world(engine, tenant, {"h1": ["g1"], "o1": ["g1"]}, limit=0)
    await create(engine, tenant, T0, "tk2", "g1")
    call = forward(engine, tenant, T0 + MIN, "tk2", "g2", agent="o1")
    await assert_refused(redis_client, tenant, NotTicketHandler, call, "none")


async def test_supervisor_may_forward_any_open_ticket(engine, tenant, redis_client):
    await world(engine, tenant, {"h1": ["g1"], "h2": ["g2"]})
    await create(engine, tenant, T0, "tk1", "g1")
    events = await forward(engine, tenant, T0 + MIN, "tk1", "g2", supervisor="sup",
                           note="wrong desk")
    assert events[0] == TicketForwarded(ticket="tk1", from_group="g1", to_group="g2",
                                        by="sup", note="wrong desk", hop=1, spent_ms=MIN,
                                        loop=False, from_agent="h1")
    await engine.set_agent_status(tenant, T0 + 2 * MIN, "h1", "offline")
    events = await forward(engine, tenant, T0 + 2 * MIN, "tk1", "g1", supervisor="sup")
    assert events[-1] == TicketQueued(ticket="tk1", group="g1", reason="forwarded",
                                      position=1)
    events = await forward(engine, tenant, T0 + 3 * MIN, "tk1", "g2", supervisor="sup")
    assert events[:2] == [
        TicketForwarded(ticket="tk1", from_group="g1", to_group="g2", by="sup", note="",
                        hop=3, spent_ms=MIN, loop=True),
        TicketLoop(ticket="tk1", group="g2", hop=3, visits=2)]


async def test_forward_refusals(engine, tenant, redis_client):
    await world(engine, tenant, {"h1": ["g1"], "h2": ["g2"]})
    await create(engine, tenant, T0, "tk1", "g1")
    await assert_refused(redis_client, tenant, SameGroup,
                         forward(engine, tenant, T0, "tk1", "g1", agent="h1"), "g1")
    await assert_refused(redis_client, tenant, GroupUnknown,
                         forward(engine, tenant, T0, "tk1", "nowhere", agent="h1"), "nowhere")
    await assert_refused(redis_client, tenant, BadId,
                         forward(engine, tenant, T0, "tk1", "no where", agent="h1"),
                         "to_group")
    await assert_refused(redis_client, tenant, TicketUnknown,
                         forward(engine, tenant, T0, "tk9", "g2", agent="h1"), "tk9")
    await engine.apply(tenant, T0 + MIN, CloseTicket(ticket="tk1", agent="h1",
                                                     resolution="done"))
    await assert_refused(redis_client, tenant, TicketState,
                         forward(engine, tenant, T0 + 2 * MIN, "tk1", "g2", supervisor="sup"),
                         "closed")
