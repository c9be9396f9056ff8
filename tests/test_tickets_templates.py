"""Ticket types (docs/tickets.md "Ticket types"): a ticket's fields must fit its type's
template, and a refusal names the field; changing or deleting a type leaves the tickets
already created alone."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import MIN, T0, assert_refused
from ticket_helpers import DAY, HOUR, create, ticket_type, view, world

from dispatchd import errors
from dispatchd.errors import BadArgument, BadId, TicketTypeUnknown
from dispatchd.messages import (
    CloseTicket,
    ConfigureTicketType,
    DeleteTicketType,
    QueryTicket,
    RespondTicket,
    TicketCreated,
    TicketField,
    TicketStatus,
    TicketTypeConfigured,
    TicketTypeDeleted,
)

FIELDS = [
    TicketField(name="note", type="string", max_length=10),
    TicketField(name="count", type="integer"),
    TicketField(name="amount", type="number"),
    TicketField(name="urgent", type="boolean"),
    TicketField(name="due", type="date"),
    TicketField(name="reason", type="enum", values=["late", "broken"]),
]


async def claims(engine, tenant, *, required: bool = False):
    """Type ``claim`` with one field of each kind (all optional unless ``required``), and
    group ``g`` with agent a1 online."""
    await world(engine, tenant, {"a1": ["g"]})
    fields = [TicketField(name=f.name, type=f.type, required=required, values=f.values,
                          max_length=f.max_length) for f in FIELDS]
    await ticket_type(engine, tenant, "claim", fields=fields)


ACCEPTED = [
    ("note", "late box"),
    ("note", "é" * 5),  # 10 bytes: max_length counts bytes
    ("note", ""),  # an optional string may be empty
    ("count", 3),
    ("count", -7),
    ("count", 0),
    ("amount", 2.5),
    ("amount", 3),
    ("amount", -0.25),
    ("urgent", True),
    ("urgent", False),
    ("due", "2026-03-08"),
    ("due", "2024-02-29"),
    ("due", "2026-12-31"),
    ("reason", "late"),
    ("reason", "broken"),
]


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
async def test_field_value_accepted(engine, tenant, redis_client, field, value):
    await claims(engine, tenant)
    await create(engine, tenant, T0, "tk1", "g", type="claim", fields={field: value})
    assert (await view(redis_client, tenant, "tk1")).fields == {field: value}


REFUSED = [
    ("note", 5, "note: expected a string"),
    ("note", True, "note: expected a string"),
    ("note", "x" * 11, "note: longer than 10 bytes"),
    ("note", "é" * 6, "note: longer than 10 bytes"),
    ("count", 2.5, "count: expected an integer"),
    ("count", "3", "count: expected an integer"),
    ("count", True, "count: expected an integer"),
    ("amount", "2.5", "amount: expected a number"),
    ("amount", False, "amount: expected a number"),
    ("amount", float("nan"), "amount: expected a number"),
    ("amount", float("inf"), "amount: expected a number"),
    ("urgent", 1, "urgent: expected true or false"),
    ("urgent", "true", "urgent: expected true or false"),
    ("due", "2026-3-8", "due: expected a date YYYY-MM-DD"),
    ("due", "08/03/2026", "due: expected a date YYYY-MM-DD"),
    ("due", "2026-03-08T10:00", "due: expected a date YYYY-MM-DD"),
    ("due", 20260308, "due: expected a date YYYY-MM-DD"),
    ("due", "2026-13-01", "due: expected a date YYYY-MM-DD"),
    ("due", "2026-00-10", "due: expected a date YYYY-MM-DD"),
    ("due", "2026-04-31", "due: expected a date YYYY-MM-DD"),
    ("due", "2026-02-29", "due: expected a date YYYY-MM-DD"),
    ("due", "2026-01-00", "due: expected a date YYYY-MM-DD"),
    ("reason", "lost", "reason: expected one of late, broken"),
    ("reason", "Late", "reason: expected one of late, broken"),
    ("reason", 1, "reason: expected one of late, broken"),
]


@pytest.mark.parametrize(("field", "value", "message"), REFUSED)
async def test_field_value_refused_naming_the_field(engine, tenant, redis_client, field,
                                                    value, message):
    await claims(engine, tenant)
    call = create(engine, tenant, T0, "tk1", "g", type="claim", fields={field: value})
    await assert_refused(redis_client, tenant, errors.TicketField, call, message)


@pytest.mark.parametrize("field", [f.name for f in FIELDS])
async def test_required_field_missing(engine, tenant, redis_client, field):
    await claims(engine, tenant, required=True)
    full: dict[str, Any] = {"note": "n", "count": 1, "amount": 1.5, "urgent": False,
                            "due": "2026-03-08", "reason": "late"}
    await create(engine, tenant, T0, "ok", "g", type="claim", fields=full)
    del full[field]
    call = create(engine, tenant, T0, "tk1", "g", type="claim", fields=full)
    await assert_refused(redis_client, tenant, errors.TicketField, call,
                         f"missing required field {field}")


async def test_empty_required_string_counts_as_missing(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await ticket_type(engine, tenant, "claim",
                      fields=[TicketField(name="ref", type="string", required=True)])
    call = create(engine, tenant, T0, "tk1", "g", type="claim", fields={"ref": ""})
    await assert_refused(redis_client, tenant, errors.TicketField, call,
                         "missing required field ref")


async def test_field_not_in_the_template(engine, tenant, redis_client):
    await claims(engine, tenant)
    call = create(engine, tenant, T0, "tk1", "g", type="claim",
                  fields={"count": 1, "colour": "red"})
    await assert_refused(redis_client, tenant, errors.TicketField, call,
                         "not in the template: colour")
    call = create(engine, tenant, T0, "tk1", "g", type="claim",
                  fields={"size": 1, "colour": "red"})
    await assert_refused(redis_client, tenant, errors.TicketField, call,
                         "not in the template: colour, size")


async def test_unknown_type(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    call = create(engine, tenant, T0, "tk1", "g", type="nope")
    await assert_refused(redis_client, tenant, TicketTypeUnknown, call, "nope")


@pytest.mark.parametrize(("fields", "error", "detail"), [
    ([TicketField(name="x", type="colour")], BadArgument, "fields.x.type"),  # type: ignore[arg-type]
    ([TicketField(name="x", type="enum")], BadArgument, "fields.x.values"),
    ([TicketField(name="x", type="enum", values=[])], BadArgument, "fields.x.values"),
    ([TicketField(name="x", type="string", max_length=0)], BadArgument,
     "fields.x.max_length"),
    ([TicketField(name="x", type="string"), TicketField(name="x", type="integer")],
     BadArgument, "fields: x twice"),
    ([TicketField(name="bad name", type="string")], BadId, "fields.name"),
])
async def test_bad_template_refused(engine, tenant, redis_client, fields, error, detail):
    call = engine.apply(tenant, T0, ConfigureTicketType(type="claim", fields=fields))
    await assert_refused(redis_client, tenant, error, call, detail)


async def test_type_configured_event_and_sla_targets(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    out = await engine.apply(tenant, T0, ConfigureTicketType(
        type="claim", first_response_ms=30 * MIN, resolution_ms=4 * HOUR))
    assert out.events == [TicketTypeConfigured(type="claim")]
    await create(engine, tenant, T0 + MIN, "tk1", "g", type="claim")
    t = await view(redis_client, tenant, "tk1")
    assert (t.first_response_due_ms, t.resolution_due_ms) == (T0 + 31 * MIN, T0 + 241 * MIN)


async def test_type_replaced_does_not_change_existing_tickets(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await ticket_type(engine, tenant, "claim", first_response_ms=HOUR, resolution_ms=DAY,
                      fields=[TicketField(name="amount", type="number", required=True)])
    await create(engine, tenant, T0, "old", "g", type="claim", fields={"amount": 9.5})
    await ticket_type(engine, tenant, "claim", now=T0 + MIN, first_response_ms=MIN,
                      fields=[TicketField(name="colour", type="enum", values=["red"],
                                    required=True)])

    old = await view(redis_client, tenant, "old")
    assert old.fields == {"amount": 9.5}
    assert (old.first_response_due_ms, old.resolution_due_ms) == (T0 + HOUR, T0 + DAY)
    status = (await engine.apply(tenant, T0 + MIN, QueryTicket(ticket="old"))).events
    assert isinstance(status[0], TicketStatus)
    assert status[0].fields == {"amount": 9.5}
    # the old ticket is still worked on and closed as usual
    await engine.apply(tenant, T0 + 2 * MIN, RespondTicket(ticket="old", agent="a1"))
    await engine.apply(tenant, T0 + 3 * MIN, CloseTicket(ticket="old", agent="a1",
                                                         resolution="paid"))

    # new tickets follow the new template
    call = create(engine, tenant, T0 + 4 * MIN, "new", "g", type="claim",
                  fields={"amount": 9.5})
    await assert_refused(redis_client, tenant, errors.TicketField, call,
                         "missing required field colour")
    await create(engine, tenant, T0 + 4 * MIN, "new", "g", type="claim",
                 fields={"colour": "red"})
    new = await view(redis_client, tenant, "new")
    assert (new.first_response_due_ms, new.resolution_due_ms) == (T0 + 5 * MIN, None)


async def test_deleted_type_refuses_new_tickets_but_keeps_old_ones(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g"]})
    await ticket_type(engine, tenant, "claim",
                      fields=[TicketField(name="amount", type="number")])
    await create(engine, tenant, T0, "old", "g", type="claim", fields={"amount": 1})
    out = await engine.apply(tenant, T0 + MIN, DeleteTicketType(type="claim"))
    assert out.events == [TicketTypeDeleted(type="claim")]

    call = create(engine, tenant, T0 + 2 * MIN, "new", "g", type="claim")
    await assert_refused(redis_client, tenant, TicketTypeUnknown, call, "claim")
    old = await view(redis_client, tenant, "old")
    assert (old.type, old.state, old.agent, old.fields) == ("claim", "assigned", "a1",
                                                            {"amount": 1})
    await engine.apply(tenant, T0 + 3 * MIN, RespondTicket(ticket="old", agent="a1"))
    await engine.apply(tenant, T0 + 4 * MIN, CloseTicket(ticket="old", agent="a1",
                                                         resolution="done"))
    assert (await view(redis_client, tenant, "old")).state == "closed"

    # deleting it again: unknown; configuring it again makes it usable again
    call = engine.apply(tenant, T0 + 5 * MIN, DeleteTicketType(type="claim"))
    await assert_refused(redis_client, tenant, TicketTypeUnknown, call, "claim")
    await ticket_type(engine, tenant, "claim", now=T0 + 6 * MIN)
    events = await create(engine, tenant, T0 + 6 * MIN, "new", "g", type="claim")
    assert events[0] == TicketCreated(ticket="new", type="claim", group="g", by="sys",
                                      priority=0)


async def test_fields_and_title_kept_on_the_ticket(engine, tenant, redis_client):
    await claims(engine, tenant)
    fields = {"note": "hi", "count": 2, "amount": 0.5, "urgent": True, "due": "2026-01-31",
              "reason": "broken"}
    events = await create(engine, tenant, T0, "tk1", "g", type="claim", fields=fields,
                          title="Broken parcel", priority=3)
    assert events[0] == TicketCreated(ticket="tk1", type="claim", group="g", by="sys",
                                      priority=3, title="Broken parcel")
    t = await view(redis_client, tenant, "tk1")
    assert (t.fields, t.title, t.priority, t.created_ms, t.created_by) == (
        fields, "Broken parcel", 3, T0, "sys")

