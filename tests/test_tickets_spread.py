"""The start of a shift (docs/tickets.md "Service hours and the start of a shift"): the
held tickets are released together and, for ``ticket_release_spread_ms`` after the start,
each member takes at most ceil(held / members) of them, so the first agent to log in does
not get them all; after that window, or with a spread of 0, they go to whoever is
eligible.

Group g (09:00-17:00 New York) has four members a1..a4; twelve tickets were created the
evening before, so the share is 3.
"""

from __future__ import annotations

from collections import Counter

from helpers import MIN, SEC
from ticket_helpers import (
    NY,
    create,
    daily,
    handlers,
    local,
    open_tickets,
    set_hours,
    tick,
    view,
    world,
)

from dispatchd.messages import CreateTicket, TicketAssigned, TicketHeld, TicketQueued

EVENING = local(NY, 2026, 4, 14, 20, 0)
OPENS = local(NY, 2026, 4, 15, 9, 0)
SPREAD = 15 * MIN
MEMBERS = ("a1", "a2", "a3", "a4")
TICKETS = [f"t{n:02}" for n in range(1, 13)]


def arrival(n: int) -> int:
    """When the n-th agent comes on shift: never at one of the group's minute polls when
    the tests tick a minute after each arrival, so only the arrival can wake the group."""
    return OPENS + 30 * SEC + (n - 1) * 90 * SEC


async def night(engine, tenant, *, spread=SPREAD, online=(), count=12, limit=20):
    """The group, its members (offline unless in ``online``) and ``count`` held tickets
    t01.. created a second apart from 20:00 the evening before."""
    await world(engine, tenant, {a: ["g"] for a in MEMBERS}, now=EVENING, limit=limit,
                offline=[a for a in MEMBERS if a not in online], spread_ms=spread)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), EVENING)
    for n, tid in enumerate(TICKETS[:count]):
        await engine.apply(tenant, EVENING + n * SEC,
                           CreateTicket(ticket=tid, type="task", group="g", by="sys"))


async def come_online(engine, tenant, name, now):
    """``name`` comes on shift at ``now``; the events of the next tick."""
    await engine.set_agent_status(tenant, now, name, "online")
    return await tick(engine, tenant, now)


async def test_released_at_opening_queued_when_nobody_is_on_shift(engine, tenant,
                                                                   redis_client):
    await night(engine, tenant)
    events = await tick(engine, tenant, OPENS)
    assert events == [TicketQueued(ticket=t, group="g", reason="shift_start", position=n)
                      for n, t in enumerate(TICKETS, 1)]
    assert {(await view(redis_client, tenant, t)).state for t in TICKETS} == {"queued"}


async def test_agents_coming_one_by_one_each_take_their_share(engine, tenant, redis_client):
    await night(engine, tenant)
    await tick(engine, tenant, OPENS)
    taken: dict[str, list[str]] = {}
    for n, name in enumerate(MEMBERS, 1):
        events = await come_online(engine, tenant, name, arrival(n))
        assert {type(e) for e in events} == {TicketAssigned}
        assert {(e.reason, e.via) for e in events} == {("queue", "balanced")}
        taken[name] = [e.ticket for e in events]
        # a minute later (the group's poll) the cap still holds
        assert await tick(engine, tenant, arrival(n) + MIN) == []
    # oldest first, three each
    assert taken == {"a1": TICKETS[0:3], "a2": TICKETS[3:6], "a3": TICKETS[6:9],
                     "a4": TICKETS[9:12]}
    for name in MEMBERS:
        assert sorted(await open_tickets(redis_client, tenant, name)) == taken[name]


async def test_after_the_spread_the_rest_go_to_whoever_is_eligible(engine, tenant,
                                                                   redis_client):
    await night(engine, tenant)
    await tick(engine, tenant, OPENS)
    assert len(await come_online(engine, tenant, "a1", OPENS + 30 * SEC)) == 3
    assert len(await come_online(engine, tenant, "a2", OPENS + 80 * SEC)) == 3
    assert await tick(engine, tenant, OPENS + SPREAD - 1) == []
    events = await tick(engine, tenant, OPENS + SPREAD)
    assert {(e.reason, e.via) for e in events} == {("queue", "balanced")}
    assert Counter(handlers(events).values()) == {"a1": 3, "a2": 3}
    # a latecomer finds nothing left
    assert await come_online(engine, tenant, "a3", OPENS + SPREAD + MIN) == []


async def test_agents_already_on_shift_share_at_the_opening(engine, tenant, redis_client):
    await night(engine, tenant, online=MEMBERS)
    events = await tick(engine, tenant, OPENS)
    assert {(e.reason, e.via, e.wait_ms) for e in events if e.ticket == "t01"} == {
        ("shift_start", "balanced", OPENS - EVENING)}
    # each to the least loaded, in queue order
    assert handlers(events) == {t: MEMBERS[n % 4] for n, t in enumerate(TICKETS)}


async def test_members_not_on_shift_still_count_in_the_share(engine, tenant, redis_client):
    """ceil(12 / 4 members) = 3, even with only two of them on shift at the opening: the
    other six wait for the others or for the end of the spread."""
    await night(engine, tenant, online=("a1", "a2"))
    events = await tick(engine, tenant, OPENS)
    assert Counter(handlers(events).values()) == {"a1": 3, "a2": 3}
    assert [e.ticket for e in events if isinstance(e, TicketQueued)] == TICKETS[6:]
    assert all(e.reason == "shift_start" for e in events)


async def test_share_rounds_up(engine, tenant, redis_client):
    await night(engine, tenant, count=10)  # ceil(10 / 4) = 3
    await tick(engine, tenant, OPENS)
    for n, name in enumerate(MEMBERS, 1):
        events = await come_online(engine, tenant, name, arrival(n))
        assert len(events) == (3 if n <= 3 else 1), name


async def test_ticket_limit_still_applies_during_the_spread(engine, tenant, redis_client):
    await night(engine, tenant, limit=2)
    await tick(engine, tenant, OPENS)
    assert len(await come_online(engine, tenant, "a1", arrival(1))) == 2


async def test_new_tickets_during_the_spread_count_against_the_share(engine, tenant,
                                                                     redis_client):
    await night(engine, tenant, online=("a1",), count=4)  # share 1
    assert len(handlers(await tick(engine, tenant, OPENS))) == 1
    events = await create(engine, tenant, OPENS + MIN, "new", "g")
    assert events[1] == TicketQueued(ticket="new", group="g", reason="created", position=4)


async def test_spread_zero_no_cap(engine, tenant, redis_client):
    await night(engine, tenant, spread=0)
    await tick(engine, tenant, OPENS)
    events = await come_online(engine, tenant, "a1", arrival(1))
    assert handlers(events) == dict.fromkeys(TICKETS, "a1")


async def test_spread_zero_at_the_opening_goes_to_whoever_is_on_shift(engine, tenant,
                                                                      redis_client):
    await night(engine, tenant, spread=0, online=("a2",))
    events = await tick(engine, tenant, OPENS)
    assert handlers(events) == dict.fromkeys(TICKETS, "a2")
    assert {e.reason for e in events} == {"shift_start"}


async def test_next_days_release_has_its_own_share(engine, tenant, redis_client):
    """The share is fixed per shift start: taking tickets one day does not count
    against the next day's release."""
    await night(engine, tenant, count=4, online=MEMBERS)
    assert Counter(handlers(await tick(engine, tenant, OPENS)).values()) == dict.fromkeys(
        MEMBERS, 1)
    evening = EVENING + 24 * 60 * MIN
    for n in range(8):
        await create(engine, tenant, evening + n * SEC, f"n{n}", "g")
    events = await tick(engine, tenant, OPENS + 24 * 60 * MIN)
    assert Counter(handlers(events).values()) == dict.fromkeys(MEMBERS, 2)


async def test_ticket_created_before_the_opening_tick_waits_for_the_release(
        engine, tenant, redis_client):
    """A ticket created at the opening, before the tick that releases the held ones (the
    gateway applies a batch's commands before its tick), must not let the one agent on
    shift take every held ticket: the release comes first, with its cap, and keeps the
    queue order."""
    await night(engine, tenant, online=("a1",))
    events = await create(engine, tenant, OPENS, "new", "g")
    assert [e.ticket for e in events if isinstance(e, TicketAssigned)] == TICKETS[:3]
    assert {e.reason for e in events if isinstance(e, TicketAssigned)} == {"shift_start"}
    assert events[-1] == TicketQueued(ticket="new", group="g", reason="created", position=10)
    assert await tick(engine, tenant, OPENS) == []
    assert sorted(await open_tickets(redis_client, tenant, "a1")) == TICKETS[:3]


async def test_tickets_left_waiting_at_closing_are_held_and_released(engine, tenant,
                                                                     redis_client):
    """Eight tickets still waiting when the shift ends at 17:00 are held overnight like
    the four that come in later, and the next opening releases all twelve with the
    share ceil(12 / 4) = 3: the four members on shift take them all at once."""
    late = local(NY, 2026, 4, 14, 16, 50)
    await world(engine, tenant, {a: ["g"] for a in MEMBERS}, offline=MEMBERS, now=late,
                spread_ms=SPREAD)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), late)
    for n in range(8):
        await create(engine, tenant, late + n * SEC, f"q{n}", "g")
    closing = local(NY, 2026, 4, 14, 17, 0)
    assert await tick(engine, tenant, closing - 1) == []  # the group's poll, still open
    assert await tick(engine, tenant, closing) == []  # not looked at again yet
    assert await tick(engine, tenant, closing - 1 + MIN) == [
        TicketHeld(ticket=f"q{n}", group="g", reason="shift_end", until_ms=OPENS)
        for n in range(8)]
    assert (await view(redis_client, tenant, "q0")).state == "held"
    for n in range(4):
        await create(engine, tenant, EVENING + n * SEC, f"h{n}", "g")
    for name in MEMBERS:
        await engine.set_agent_status(tenant, OPENS - MIN, name, "online")
    events = await tick(engine, tenant, OPENS)
    assert Counter(handlers(events).values()) == dict.fromkeys(MEMBERS, 3)
    assert {e.reason for e in events} == {"shift_start"}
