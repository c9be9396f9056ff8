"""Service hours (docs/tickets.md "Service hours and the start of a shift"): outside its
group's hours a ticket is held until the next shift start, which is local wall-clock time
and so follows daylight saving time.

Every case is in America/New_York with shifts 09:00-17:00 every day unless it says
otherwise. The windows are computed by ``dispatchd.tickets.refresh_windows`` from the
group's ``meta``, as the daemon does. DST in 2026: clocks jump 02:00 EST -> 03:00 EDT on
Sunday 8 March, and fall back 02:00 EDT -> 01:00 EST on Sunday 1 November.
"""

from __future__ import annotations

from helpers import MIN
from ticket_helpers import (
    HOUR,
    NY,
    create,
    daily,
    local,
    set_hours,
    state_of,
    tick,
    utc,
    world,
)

from dispatchd.messages import (
    ForwardTicket,
    TicketAssigned,
    TicketCreated,
    TicketForwarded,
    TicketHeld,
    TicketQueued,
)


async def office(engine, tenant, now, hours=None, *, online=True):
    """Group g with agent a1 (online unless told) and the given service hours
    (09:00-17:00 New York every day by default), set at ``now``."""
    await world(engine, tenant, {"a1": ["g"]}, offline=() if online else ["a1"], now=now)
    await set_hours(engine, tenant, "g", hours or daily("09:00", "17:00"), now)


def held(ticket, until_ms, reason="created", group="g"):
    return TicketHeld(ticket=ticket, group=group, reason=reason, until_ms=until_ms)


def released(ticket, wait_ms, agent="a1", group="g"):
    return TicketAssigned(ticket=ticket, group=group, agent=agent, via="balanced",
                          reason="shift_start", wait_ms=wait_ms)


async def hold_and_release(engine, tenant, redis_client, *, created, opens, hours=None):
    """A ticket created at ``created`` (out of hours) is held until ``opens``: a tick a
    minute before leaves it held even though the group is looked at then (a1 comes on
    shift, which wakes it), and a tick at ``opens`` releases it to a1."""
    await office(engine, tenant, created, hours, online=False)
    assert await create(engine, tenant, created, "tk1", "g") == [
        TicketCreated(ticket="tk1", type="task", group="g", by="sys", priority=0),
        held("tk1", opens)]
    assert await state_of(redis_client, tenant, "tk1") == ("held", None)
    await engine.set_agent_status(tenant, opens - 2 * MIN, "a1", "online")
    assert await tick(engine, tenant, opens - 2 * MIN) == []
    assert await tick(engine, tenant, opens - MIN) == []
    assert await tick(engine, tenant, opens - 1) == []
    assert await state_of(redis_client, tenant, "tk1") == ("held", None)
    assert await tick(engine, tenant, opens) == [released("tk1", opens - created)]
    assert await state_of(redis_client, tenant, "tk1") == ("assigned", "a1")


async def test_held_overnight_and_released_at_nine(engine, tenant, redis_client):
    await hold_and_release(engine, tenant, redis_client,
                           created=local(NY, 2026, 4, 14, 20, 0),
                           opens=local(NY, 2026, 4, 15, 9, 0))


async def test_spring_forward_opens_at_nine_edt(engine, tenant, redis_client):
    # Saturday 20:00 EST = 01:00 UTC; Sunday 09:00 EDT = 13:00 UTC (not 14:00)
    created = utc(2026, 3, 8, 1, 0)
    assert created == local(NY, 2026, 3, 7, 20, 0)
    await hold_and_release(engine, tenant, redis_client, created=created,
                           opens=utc(2026, 3, 8, 13, 0))


async def test_fall_back_opens_at_nine_est(engine, tenant, redis_client):
    # Saturday 20:00 EDT = 00:00 UTC; Sunday 09:00 EST = 14:00 UTC (not 13:00)
    created = utc(2026, 11, 1, 0, 0)
    assert created == local(NY, 2026, 10, 31, 20, 0)
    await office(engine, tenant, created, online=False)
    events = await create(engine, tenant, created, "tk1", "g")
    assert events[1] == held("tk1", utc(2026, 11, 1, 14, 0))
    # 13:00 UTC is 09:00 EDT, which would be the opening had the clocks not gone back
    await engine.set_agent_status(tenant, utc(2026, 11, 1, 13, 0), "a1", "online")
    assert await tick(engine, tenant, utc(2026, 11, 1, 13, 0)) == []
    assert await tick(engine, tenant, utc(2026, 11, 1, 13, 59)) == []
    assert await tick(engine, tenant, utc(2026, 11, 1, 14, 0)) == [
        released("tk1", 14 * HOUR)]


async def test_shift_start_in_the_spring_forward_gap_opens_at_the_jump(engine, tenant,
                                                                       redis_client):
    # a 02:30 start on 8 March 2026 does not exist locally: the shift opens at 03:00 EDT
    await hold_and_release(engine, tenant, redis_client,
                           hours=daily("02:30", "17:00"),
                           created=local(NY, 2026, 3, 7, 20, 0),
                           opens=utc(2026, 3, 8, 7, 0))


async def test_gap_start_is_02_30_local_on_ordinary_days(engine, tenant, redis_client):
    await hold_and_release(engine, tenant, redis_client,
                           hours=daily("02:30", "17:00"),
                           created=local(NY, 2026, 3, 8, 20, 0),
                           opens=local(NY, 2026, 3, 9, 2, 30))


async def test_shift_start_in_the_fall_back_fold_opens_the_first_time(engine, tenant,
                                                                       redis_client):
    # 01:30 happens twice on 1 November 2026: the shift opens at the first, 01:30 EDT
    await hold_and_release(engine, tenant, redis_client,
                           hours=daily("01:30", "17:00"),
                           created=local(NY, 2026, 10, 31, 20, 0),
                           opens=utc(2026, 11, 1, 5, 30))


async def test_closed_date_skipped(engine, tenant, redis_client):
    # Monday 9 March 2026 is closed: Sunday evening's ticket waits until Tuesday 09:00
    hours = daily("09:00", "17:00", closed=["2026-03-09"])
    created = local(NY, 2026, 3, 8, 20, 0)
    await office(engine, tenant, created, hours)
    events = await create(engine, tenant, created, "tk1", "g")
    assert events[1] == held("tk1", local(NY, 2026, 3, 10, 9, 0))
    monday_nine = local(NY, 2026, 3, 9, 9, 0)
    await engine.set_agent_status(tenant, monday_nine, "a1", "online")
    assert await tick(engine, tenant, monday_nine) == []
    assert await tick(engine, tenant, local(NY, 2026, 3, 9, 12, 0)) == []
    # a ticket created on the closed date during the usual hours is held too
    events = await create(engine, tenant, local(NY, 2026, 3, 9, 12, 0), "tk2", "g")
    assert events[1] == held("tk2", local(NY, 2026, 3, 10, 9, 0))
    opens = local(NY, 2026, 3, 10, 9, 0)
    assert [(e.ticket, e.reason) for e in await tick(engine, tenant, opens)] == [
        ("tk1", "shift_start"), ("tk2", "shift_start")]


async def test_created_in_hours_is_assigned_at_once(engine, tenant, redis_client):
    now = local(NY, 2026, 3, 8, 9, 0)  # the first minute of the first EDT shift
    await office(engine, tenant, now)
    events = await create(engine, tenant, now, "tk1", "g")
    assert events[1] == TicketAssigned(ticket="tk1", group="g", agent="a1", via="balanced",
                                       reason="created", wait_ms=0)
    # the shift ends at 17:00 local: a minute before, still in hours
    events = await create(engine, tenant, local(NY, 2026, 3, 8, 16, 59), "tk2", "g")
    assert events[1].reason == "created"
    events = await create(engine, tenant, local(NY, 2026, 3, 8, 17, 0), "tk3", "g")
    assert events[1] == held("tk3", local(NY, 2026, 3, 9, 9, 0))


async def test_in_hours_without_a_member_queued_not_held(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 10, 0)
    await office(engine, tenant, now, online=False)
    assert (await create(engine, tenant, now, "tk1", "g"))[1] == TicketQueued(
        ticket="tk1", group="g", reason="created", position=1)


async def test_forwarded_into_a_closed_group_is_held(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 20, 0)
    await world(engine, tenant, {"a1": ["g"], "b1": ["night"]}, now=now)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), now)
    await create(engine, tenant, now, "tk1", "night")
    out = await engine.apply(tenant, now + MIN, ForwardTicket(ticket="tk1", agent="b1",
                                                              to_group="g", note="day work"))
    assert out.events == [
        TicketForwarded(ticket="tk1", from_group="night", to_group="g", by="b1",
                        from_agent="b1", note="day work", hop=1, spent_ms=MIN, loop=False),
        held("tk1", local(NY, 2026, 4, 16, 9, 0), reason="forwarded"),
    ]
    opens = local(NY, 2026, 4, 16, 9, 0)
    assert await tick(engine, tenant, opens) == [
        released("tk1", opens - now - MIN)]


async def test_group_without_service_hours_is_always_in_service(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 3, 0)
    await world(engine, tenant, {"a1": ["g"]}, now=now)
    assert (await create(engine, tenant, now, "tk1", "g"))[1].reason == "created"


async def test_stored_windows_run_out_counts_as_in_service(engine, tenant, redis_client):
    """The windows cover 21 days from the refresh; past them (no daemon to refresh) the
    group is in service rather than holding tickets forever."""
    refreshed = local(NY, 2026, 4, 15, 12, 0)
    await office(engine, tenant, refreshed)
    night = local(NY, 2026, 5, 5, 23, 0)  # 20 days later: still covered, held
    assert isinstance((await create(engine, tenant, night, "tk1", "g"))[1], TicketHeld)
    night = local(NY, 2026, 5, 7, 23, 0)  # 22 days later: beyond the stored windows
    events = await create(engine, tenant, night, "tk2", "g")
    # the held one (its opening passed unticked) goes first, then the new one at once
    assert [(e.ticket, e.reason) for e in events if isinstance(e, TicketAssigned)] == [
        ("tk1", "shift_start"), ("tk2", "created")]


async def test_held_tickets_released_when_hours_are_removed(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 20, 0)
    await office(engine, tenant, now)
    await create(engine, tenant, now, "tk1", "g")
    await set_hours(engine, tenant, "g", None, now + MIN)
    assert await tick(engine, tenant, now + MIN) == [released("tk1", MIN)]


async def test_held_tickets_follow_changed_hours(engine, tenant, redis_client):
    """New hours take effect for tickets already held: an earlier start releases them
    then, and no tick at the old start is needed."""
    now = local(NY, 2026, 4, 15, 20, 0)
    await office(engine, tenant, now)
    await create(engine, tenant, now, "tk1", "g")
    await set_hours(engine, tenant, "g", daily("07:00", "17:00"), now + MIN)
    assert await tick(engine, tenant, now + MIN) == []
    seven = local(NY, 2026, 4, 16, 7, 0)
    assert await tick(engine, tenant, seven - 1) == []
    assert await tick(engine, tenant, seven) == [released("tk1", seven - now)]


async def test_held_for_days_over_a_weekend_schedule(engine, tenant, redis_client):
    weekdays = {"time_zone": NY, "closed_dates": [],
                "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                            "start": "09:00", "end": "17:00"}]}
    friday_evening = local(NY, 2026, 3, 6, 18, 0)
    await office(engine, tenant, friday_evening, weekdays)
    events = await create(engine, tenant, friday_evening, "tk1", "g")
    monday = local(NY, 2026, 3, 9, 9, 0)  # after the DST change: 13:00 UTC
    assert events[1] == held("tk1", monday)
    assert monday == utc(2026, 3, 9, 13, 0)
    for day in (1, 2):  # Saturday and Sunday 09:00 local: nothing
        assert await tick(engine, tenant, local(NY, 2026, 3, 6 + day, 9, 0)) == []
    assert await tick(engine, tenant, monday) == [released("tk1", monday - friday_evening)]
    assert monday - friday_evening == 62 * HOUR  # 63 h of wall clock, one hour skipped
