"""Request and response bodies of the ticket routes (admin/routes_tickets.py), with the
bases and shared types of :mod:`admin.schemas`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from admin.schemas import Id, _In, _Out

# docs/tickets.md is the contract; the limits mirror lua/tickets/*.lua, whose text limits
# are UTF-8 bytes (JSON Schema's maxLength counts characters: the routes check bytes).

Note = Annotated[str, Meta(max_length=4000, description="at most 4000 bytes (UTF-8)")]
TicketState = Literal["held", "queued", "assigned", "in_progress", "closed"]


class _Field(_In, frozen=True, kw_only=True, tag_field="type"):
    """One field of a ticket type's template; ``type`` says which kind."""

    name: Id
    required: bool = False
    """A ticket without it is refused (for a string, "" counts as missing)."""


class StringField(_Field, frozen=True, kw_only=True, tag="string"):
    max_length: Annotated[int, Meta(ge=1, le=100_000)] = 2000
    """In bytes (UTF-8)."""


class IntegerField(_Field, frozen=True, kw_only=True, tag="integer"):
    pass


class NumberField(_Field, frozen=True, kw_only=True, tag="number"):
    pass


class BooleanField(_Field, frozen=True, kw_only=True, tag="boolean"):
    pass


class DateField(_Field, frozen=True, kw_only=True, tag="date"):
    """A date ``YYYY-MM-DD``."""


class EnumField(_Field, frozen=True, kw_only=True, tag="enum"):
    values: Annotated[
        list[Annotated[str, Meta(max_length=200, description="at most 200 bytes (UTF-8)")]],
        Meta(min_length=1, max_length=200),
    ]
    """The allowed values."""


TicketFieldSpec = StringField | IntegerField | NumberField | BooleanField | DateField | EnumField
SlaMs = Annotated[int, Meta(ge=0, le=1_000_000_000_000, description="milliseconds, 0 = none")]


class TicketTypeIn(_In, frozen=True, kw_only=True):
    name: Annotated[str, Meta(max_length=200, description="at most 200 bytes (UTF-8)")] = ""
    fields: Annotated[list[TicketFieldSpec], Meta(max_length=100)] = []
    """The template; field names are unique."""
    first_response_ms: SlaMs = 0
    """The first response is due this long after creation."""
    resolution_ms: SlaMs = 0
    """The ticket should be closed this long after creation."""


class TicketTypeCreate(TicketTypeIn, frozen=True, kw_only=True):
    id: Id


class TicketTypeOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    fields: list[TicketFieldSpec]
    first_response_ms: int
    resolution_ms: int
    version: int


FieldValue = str | Annotated[int, Meta(ge=-(2**53), le=2**53)] | float | bool


class TicketCreate(_In, frozen=True, kw_only=True):
    id: Id | None = None
    """Generated ("tk-" and 12 hex digits) when absent."""
    type: Id
    group: Id
    """The group it is addressed to (never a person)."""
    fields: Annotated[dict[Id, FieldValue], Meta(max_length=100)] = {}
    """Must fit the type's template."""
    title: Annotated[str, Meta(max_length=500, description="at most 500 bytes (UTF-8)")] = ""
    priority: Annotated[int, Meta(ge=-1000, le=1000)] = 0
    order_id: Id | None = None
    order_owner: Id | None = None
    """The order's owner (an agent id), preferred as handler of the order's tickets; needs
    ``order_id``."""
    created_by: Annotated[
        str, Meta(min_length=1, max_length=256, description="at most 256 bytes (UTF-8)")
    ] | None = None
    """Who creates it (an agent or a system id); default the token's actor."""


class HopOut(_Out, frozen=True, kw_only=True):
    """One forward of the ticket (docs/tickets.md "Working, forwarding, closing")."""

    hop: int
    by: str
    at_ms: int
    from_group: str
    to_group: str
    note: str
    spent_ms: int
    """Time spent in the group it left."""
    loop: bool
    """It went back to a group it had been in before."""
    from_agent: str | None = None
    """Its handler when it was forwarded."""


class TicketOut(_Out, frozen=True, kw_only=True):
    """A ticket (docs/tickets.md "The ticket"; ``id`` is its ``ticket``)."""

    id: str
    type: str
    state: TicketState
    group: str
    agent: str | None
    """Its handler now."""
    order_id: str | None
    priority: int
    title: str
    fields: dict[str, Any]
    created_ms: int
    created_by: str
    entered_group_ms: int
    """When it entered its current group."""
    assigned_ms: int | None
    """When its handler got it."""
    first_response_ms: int | None
    """Time from creation to the first response (at any hop), if there was one."""
    first_response_due_ms: int | None
    resolution_due_ms: int | None
    overdue: bool
    breached: list[str]
    """The SLA targets it missed: first_response, resolution."""
    hops: list[HopOut]
    """Its forwards, first first (their count is docs/tickets.md's ``hops``)."""
    path: list[str]
    """The groups it went through, in order; the last is its group now."""
    closed_ms: int | None
    closed_by: str | None
    resolution: str | None
    resolution_ms: int | None
    """Time from creation to closing."""


class TicketActionOut(_Out, frozen=True, kw_only=True):
    """What a ticket write did: the ticket after it, the router's events, the audit id."""

    ticket: TicketOut
    events: list[dict[str, Any]]
    audit: str


class TicketHistoryOut(_Out, frozen=True, kw_only=True):
    events: list[dict[str, Any]]
    """Every event of the ticket, oldest first, as on the outbound stream."""


class TicketRespondIn(_In, frozen=True, kw_only=True):
    agent: Id
    """The handler."""
    note: Note = ""


class TicketForwardIn(_In, frozen=True, kw_only=True):
    to_group: Id
    note: Note = ""
    agent: Id | None = None
    """The handler forwarding it; absent: a supervisor's forward (role supervisor)."""


class TicketCloseIn(_In, frozen=True, kw_only=True):
    resolution: Annotated[str, Meta(min_length=1, max_length=4000,
                                    description="at most 4000 bytes (UTF-8)")]
    agent: Id | None = None
    """The handler closing it; absent: a supervisor closes it (role supervisor)."""


class TicketAssignIn(_In, frozen=True, kw_only=True):
    agent: Id
    """A member of the ticket's group."""



class TicketTypePage(_Out, frozen=True, kw_only=True):
    items: list[TicketTypeOut]
    next: str | None


class TicketPage(_Out, frozen=True, kw_only=True):
    items: list[TicketOut]
    next: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""
