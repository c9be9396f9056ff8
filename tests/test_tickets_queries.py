"""Supervision queries and history (docs/tickets.md "Queries and history"):
``dispatchd.tickets.find`` by group, handler, handled_by, order_id, state and overdue, in
any combination and page by page; ``get_history`` keeps every event of a ticket."""

from __future__ import annotations

import pytest
from helpers import MIN, SEC, T0
from ticket_helpers import create, group, tick, ticket_type, world

from dispatchd import tickets
from dispatchd.messages import (
    CloseTicket,
    ForwardTicket,
    QueryTicket,
    RespondTicket,
)
from dispatchd.tickets import Query


async def desk(engine, tenant):
    """g1 (a1, a2), g2 (b1), g3 (nobody); type ``sla`` (first response 30 min):
    q1 o1 g1 a1 in progress; q2 o1 g1 a2 untouched; q3 o2 g2 b1 in progress;
    q4 g1 a1 -> forwarded to g2, b1; q5 g1 a2 closed; q6 g3 queued.
    A tick at T0 + 31 min finds q2, q4 and q6 overdue (no first response)."""
    await world(engine, tenant, {"a1": ["g1"], "a2": ["g1"], "b1": ["g2"]})
    await group(engine, tenant, "g3")
    await ticket_type(engine, tenant, "sla", first_response_ms=30 * MIN)
    await create(engine, tenant, T0, "q1", "g1", type="sla", order_id="o1")
    await create(engine, tenant, T0 + 1 * SEC, "q2", "g1", type="sla", order_id="o1",
                 order_owner="a2")
    await create(engine, tenant, T0 + 2 * SEC, "q3", "g2", type="sla", order_id="o2")
    await create(engine, tenant, T0 + 3 * SEC, "q4", "g1", type="sla")
    await create(engine, tenant, T0 + 4 * SEC, "q5", "g1", type="sla")
    await create(engine, tenant, T0 + 5 * SEC, "q6", "g3", type="sla")
    for tid, agent in (("q1", "a1"), ("q3", "b1"), ("q5", "a2")):
        await engine.apply(tenant, T0 + MIN, RespondTicket(ticket=tid, agent=agent))
    await engine.apply(tenant, T0 + 2 * MIN, ForwardTicket(ticket="q4", agent="a1",
                                                           to_group="g2"))
    await engine.apply(tenant, T0 + 3 * MIN, CloseTicket(ticket="q5", agent="a2",
                                                         resolution="done"))
    await tick(engine, tenant, T0 + 31 * MIN)


QUERIES = [
    (Query(), ["q1", "q2", "q3", "q4", "q5", "q6"]),
    (Query(group="g1"), ["q1", "q2", "q5"]),  # q5 closed in g1; q4 left it
    (Query(group="g2"), ["q3", "q4"]),
    (Query(group="g3"), ["q6"]),
    (Query(handler="a1"), ["q1"]),
    (Query(handler="a2"), ["q2"]),  # q5 is closed: nobody holds it
    (Query(handler="b1"), ["q3", "q4"]),
    (Query(handled_by="a1"), ["q1", "q4"]),
    (Query(handled_by="a2"), ["q2", "q5"]),
    (Query(handled_by="b1"), ["q3", "q4"]),
    (Query(order_id="o1"), ["q1", "q2"]),
    (Query(order_id="o2"), ["q3"]),
    (Query(order_id="o9"), []),
    (Query(state="closed"), ["q5"]),
    (Query(state="queued"), ["q6"]),
    (Query(state="in_progress"), ["q1", "q3"]),
    (Query(state="assigned"), ["q2", "q4"]),
    (Query(state="held"), []),
    (Query(overdue=True), ["q2", "q4", "q6"]),
    (Query(overdue=False), ["q1", "q3", "q5"]),
    # combinations
    (Query(group="g1", state="assigned"), ["q2"]),
    (Query(group="g1", overdue=True), ["q2"]),
    (Query(handled_by="a1", group="g2"), ["q4"]),
    (Query(handled_by="a1", handler="b1"), ["q4"]),
    (Query(handled_by="a2", state="closed"), ["q5"]),
    (Query(order_id="o1", overdue=True), ["q2"]),
    (Query(order_id="o1", handler="a1"), ["q1"]),
    (Query(handler="b1", state="in_progress"), ["q3"]),
    (Query(handler="b1", overdue=True, group="g2"), ["q4"]),
    (Query(group="g2", state="closed"), []),
]


@pytest.mark.parametrize(("query", "expected"), QUERIES)
async def test_find(engine, tenant, redis_client, query, expected):
    await desk(engine, tenant)
    found, cursor = await tickets.find(redis_client, tenant, query)
    assert sorted(t.ticket for t in found) == expected
    assert cursor is None or (await tickets.find(redis_client, tenant, query,
                                                 cursor=cursor)) == ([], None)


async def test_find_orders_by_creation(engine, tenant, redis_client):
    await desk(engine, tenant)
    found, _ = await tickets.find(redis_client, tenant, Query())
    assert [t.ticket for t in found] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert [t.created_ms for t in found] == [T0 + n * SEC for n in range(6)]


async def all_pages(redis_client, tenant, query, limit):
    """Every page of ``query``: the ids, page by page."""
    pages, cursor = [], None
    while True:
        found, cursor = await tickets.find(redis_client, tenant, query, limit=limit,
                                           cursor=cursor)
        pages.append([t.ticket for t in found])
        if cursor is None:
            return [p for p in pages if p]
        assert len(pages) < 100, "paging does not end"


async def test_paging_through_many_tickets_of_the_same_ms(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]}, offline=["a1"])
    ids = [f"t{n:03}" for n in range(37)]
    for tid in ids:
        await create(engine, tenant, T0, tid, "g")
    for limit in (1, 5, 10, 36, 37, 100):
        pages = await all_pages(redis_client, tenant, Query(group="g"), limit)
        assert [tid for page in pages for tid in page] == ids, limit
        assert all(len(p) == limit for p in pages[:-1])


async def test_paging_across_equal_and_distinct_ms(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]}, offline=["a1"])
    expected = []
    for ms in range(4):
        for n in range(7):
            tid = f"m{ms}n{n}"
            await create(engine, tenant, T0 + ms, tid, "g")
            expected.append(tid)
    pages = await all_pages(redis_client, tenant, Query(), 4)
    assert [tid for page in pages for tid in page] == expected


async def test_paging_with_a_selective_condition(engine, tenant, redis_client):
    """A page looks at most 10 x limit index entries: with few matches it may come back
    short, and the cursor carries on from there."""
    await world(engine, tenant, {"a1": ["g"]})
    closed = []
    for n in range(60):
        tid = f"t{n:02}"
        await create(engine, tenant, T0 + n // 3, tid, "g")
        if n % 7 == 0:
            await engine.apply(tenant, T0 + MIN, CloseTicket(ticket=tid, supervisor="sup",
                                                             resolution="x"))
            closed.append(tid)
    pages = await all_pages(redis_client, tenant, Query(group="g", state="closed"), 1)
    assert [tid for page in pages for tid in page] == closed


async def test_bad_cursor(engine, tenant, redis_client):
    with pytest.raises(ValueError):
        await tickets.find(redis_client, tenant, Query(), cursor="nonsense")


async def test_history_keeps_every_event_in_order(engine, tenant, redis_client):
    await desk(engine, tenant)
    await engine.apply(tenant, T0 + 31 * MIN, QueryTicket(ticket="q4"))  # not kept
    await engine.apply(tenant, T0 + 32 * MIN, RespondTicket(ticket="q4", agent="b1",
                                                            note="hello"))
    await engine.apply(tenant, T0 + 33 * MIN, CloseTicket(ticket="q4", supervisor="sup",
                                                          resolution="fixed"))
    history = await tickets.get_history(redis_client, tenant, "q4")
    assert [(e["type"], e["ts"]) for e in history] == [
        ("ticket_created", T0 + 3 * SEC),
        ("ticket_assigned", T0 + 3 * SEC),
        ("ticket_forwarded", T0 + 2 * MIN),
        ("ticket_assigned", T0 + 2 * MIN),
        ("ticket_overdue", T0 + 31 * MIN),
        ("ticket_responded", T0 + 33 * MIN - MIN),
        ("ticket_closed", T0 + 33 * MIN),
    ]
    assert history[1] | {"ts": 0} == {
        "type": "ticket_assigned", "ticket": "q4", "group": "g1", "agent": "a1",
        "via": "balanced", "reason": "created", "wait_ms": 0, "ts": 0}
    assert {k: history[2][k] for k in ("from_group", "to_group", "by", "from_agent", "hop",
                                       "spent_ms", "loop")} == {
        "from_group": "g1", "to_group": "g2", "by": "a1", "from_agent": "a1", "hop": 1,
        "spent_ms": 2 * MIN - 3 * SEC, "loop": False}
    assert (history[4]["kind"], history[4]["due_ms"]) == ("first_response", T0 + 3 * SEC
                                                          + 30 * MIN)
    assert (history[5]["note"], history[5]["first_response_ms"]) == (
        "hello", 32 * MIN - 3 * SEC)
    assert (history[6]["by"], history[6]["resolution"], history[6]["breached"]) == (
        "sup", "fixed", ["first_response"])


async def test_history_of_unknown_ticket_is_empty(engine, tenant, redis_client):
    assert await tickets.get_history(redis_client, tenant, "nope") == []
    assert await tickets.get_ticket(redis_client, tenant, "nope") is None
