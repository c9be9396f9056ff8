"""What tickets keep alive and how long they are kept (docs/tickets.md): a group or an
agent with open tickets cannot be deleted; closed tickets are purged by the ticket tick
after the tenant's ``ticket_retention_ms`` (default 90 days), open ones never."""

from __future__ import annotations

from helpers import MIN, T0, assert_refused
from ticket_helpers import DAY, HOUR, NY, create, daily, local, set_hours, tick, world

from dispatchd import keys, tickets
from dispatchd.errors import AgentBusy, GroupBusy
from dispatchd.messages import (
    AgentDeleted,
    CloseTicket,
    DeleteAgent,
    DeleteGroup,
    ForwardTicket,
    GroupDeleted,
    QueryTicket,
)
from dispatchd.tickets import Query


async def test_group_with_open_tickets_cannot_be_deleted(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"], "b1": ["other"]}, offline=["a1"])
    await create(engine, tenant, T0, "tk1", "g")  # queued
    call = engine.apply(tenant, T0 + MIN, DeleteGroup(group="g"))
    await assert_refused(redis_client, tenant, GroupBusy, call, "1 open tickets")
    await engine.apply(tenant, T0 + MIN, ForwardTicket(ticket="tk1", to_group="other",
                                                       supervisor="sup"))
    # it left g: g can go, the group it is in now cannot
    call = engine.apply(tenant, T0 + 2 * MIN, DeleteGroup(group="other"))
    await assert_refused(redis_client, tenant, GroupBusy, call, "1 open tickets")
    out = await engine.apply(tenant, T0 + 2 * MIN, DeleteGroup(group="g"))
    assert out.events == [GroupDeleted(group="g")]


async def test_group_with_held_tickets_cannot_be_deleted(engine, tenant, redis_client):
    now = local(NY, 2026, 4, 15, 22, 0)
    await world(engine, tenant, {"a1": ["g"]}, now=now)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), now)
    await create(engine, tenant, now, "tk1", "g")
    await create(engine, tenant, now, "tk2", "g")
    call = engine.apply(tenant, now + MIN, DeleteGroup(group="g"))
    await assert_refused(redis_client, tenant, GroupBusy, call, "2 open tickets")


async def test_group_with_only_closed_tickets_can_be_deleted(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await engine.apply(tenant, T0 + MIN, CloseTicket(ticket="tk1", agent="a1",
                                                     resolution="done"))
    out = await engine.apply(tenant, T0 + 2 * MIN, DeleteGroup(group="g"))
    assert out.events == [GroupDeleted(group="g")]
    # the closed ticket is still there to read
    assert (await tickets.get_ticket(redis_client, tenant, "tk1")).state == "closed"


async def test_agent_with_open_tickets_cannot_be_deleted(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await create(engine, tenant, T0, "tk1", "g")
    await engine.set_agent_status(tenant, T0 + MIN, "a1", "offline")  # still holds it
    call = engine.apply(tenant, T0 + MIN, DeleteAgent(agent="a1"))
    await assert_refused(redis_client, tenant, AgentBusy, call, "1 open tickets")
    await engine.apply(tenant, T0 + 2 * MIN, CloseTicket(ticket="tk1", agent="a1",
                                                         resolution="done"))
    out = await engine.apply(tenant, T0 + 3 * MIN, DeleteAgent(agent="a1"))
    assert out.events == [AgentDeleted(agent="a1")]


async def closed_and_open(engine, tenant, *, retention_ms=None):
    """Order o1 (owner a1): tk1 closed at T0 + 1 min (with a forward, so it has hops), tk2
    open since T0."""
    await world(engine, tenant, {"a1": ["g"], "b1": ["other"]})
    if retention_ms is not None:
        await engine.redis.hset(keys.root(tenant), "ticket_retention_ms", retention_ms)
    await create(engine, tenant, T0, "tk1", "g", order_id="o1", order_owner="a1")
    await create(engine, tenant, T0, "tk2", "g", order_id="o1")
    await engine.apply(tenant, T0, ForwardTicket(ticket="tk1", to_group="other", agent="a1"))
    await engine.apply(tenant, T0 + MIN, CloseTicket(ticket="tk1", agent="b1",
                                                     resolution="done"))


async def gone(redis_client, tenant, tid) -> bool:
    """Whether nothing is left of ticket ``tid``: not readable, no history, no hops, and in
    no listing."""
    if await tickets.get_ticket(redis_client, tenant, tid) is not None:
        return False
    if await tickets.get_history(redis_client, tenant, tid):
        return False
    if await tickets.get_hops(redis_client, tenant, tid):
        return False
    for q in (Query(), Query(group="other"), Query(order_id="o1"), Query(state="closed"),
              Query(handled_by="b1")):
        found, _ = await tickets.find(redis_client, tenant, q)
        if tid in [t.ticket for t in found]:
            return False
    return True


async def test_closed_ticket_purged_after_retention(engine, tenant, redis_client):
    await closed_and_open(engine, tenant, retention_ms=HOUR)
    assert await tick(engine, tenant, T0 + MIN + HOUR - 1) == []
    assert not await gone(redis_client, tenant, "tk1")
    assert len(await tickets.get_hops(redis_client, tenant, "tk1")) == 1
    assert await tick(engine, tenant, T0 + MIN + HOUR) == []
    assert await gone(redis_client, tenant, "tk1")
    # the open ticket of the same age stays
    assert (await tickets.get_ticket(redis_client, tenant, "tk2")).state == "assigned"
    # the id can be used again
    await create(engine, tenant, T0 + 2 * HOUR, "tk1", "g")


async def test_purge_forgets_an_order_once_its_last_ticket_is_gone(engine, tenant,
                                                                   redis_client):
    """An order's owner and handlers live as long as one of its tickets does (else every
    order ever seen would stay in Redis for good)."""
    await closed_and_open(engine, tenant, retention_ms=HOUR)
    order_keys = [keys.key("order", tenant, "o1"), keys.key("order_handlers", tenant, "o1")]
    await tick(engine, tenant, T0 + 2 * HOUR)  # tk1 purged, tk2 still open
    assert await redis_client.exists(*order_keys) == 2
    await engine.apply(tenant, T0 + 2 * HOUR, CloseTicket(ticket="tk2", agent="a1",
                                                          resolution="done"))
    await tick(engine, tenant, T0 + 3 * HOUR - 1)
    assert await redis_client.exists(*order_keys) == 2
    await tick(engine, tenant, T0 + 3 * HOUR)
    assert await redis_client.exists(*order_keys) == 0
    assert await redis_client.exists(keys.key("order_tickets", tenant, "o1")) == 0


async def test_default_retention_is_ninety_days(engine, tenant, redis_client):
    await closed_and_open(engine, tenant)
    await tick(engine, tenant, T0 + MIN + 90 * DAY - 1)
    assert not await gone(redis_client, tenant, "tk1")
    await tick(engine, tenant, T0 + MIN + 90 * DAY)
    assert await gone(redis_client, tenant, "tk1")


async def test_open_tickets_never_purged(engine, tenant, redis_client):
    await closed_and_open(engine, tenant, retention_ms=MIN)
    for years in (1, 5):
        await tick(engine, tenant, T0 + years * 365 * DAY)
        assert (await tickets.get_ticket(redis_client, tenant, "tk2")).state == "assigned"
    [status] = (await engine.apply(tenant, T0 + 5 * 365 * DAY,
                                   QueryTicket(ticket="tk2"))).events
    assert status.state == "assigned"


async def test_purge_many_over_several_ticks(engine, tenant, redis_client):
    """A tick purges at most its limit; the rest go at the next ticks."""
    count = 150
    await world(engine, tenant, {"a1": ["g"]}, limit=count)
    await engine.redis.hset(keys.root(tenant), "ticket_retention_ms", MIN)
    for n in range(count):
        await create(engine, tenant, T0, f"t{n:03}", "g")
        await engine.apply(tenant, T0, CloseTicket(ticket=f"t{n:03}", agent="a1",
                                                   resolution="x"))
    await tick(engine, tenant, T0 + MIN, limit=100)
    left, _ = await tickets.find(redis_client, tenant, Query(state="closed"), limit=1000)
    assert len(left) == count - 100
    await tick(engine, tenant, T0 + MIN, limit=100)
    assert await tickets.find(redis_client, tenant, Query(), limit=1000) == ([], None)
