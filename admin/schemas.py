"""Request and response bodies of the admin API (msgspec Structs, no DTO layer).

Request bodies forbid unknown fields; the OpenAPI document says so with
``additionalProperties: false`` (see :func:`admin.app.close_request_schemas`). Field
constraints (``Meta``) are checked by Litestar before a handler runs, so a bad value is a
400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Id = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Ms = Annotated[int, Meta(ge=0, le=100_000_000_000, description="milliseconds")]
Label = Annotated[str, Meta(max_length=256)]
Role = Literal["viewer", "agent", "supervisor", "admin"]
Status = Literal["online", "away", "offline"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Clock = Annotated[
    str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$", description="HH:MM")
]
Scalar = (Annotated[str, Meta(max_length=256)] | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
          | float | bool)


class _In(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused."""


class _Out(msgspec.Struct, frozen=True, kw_only=True):
    """Base of response bodies."""


# ------------------------------------------------------------------------------ tenants


class TenantIn(_In, frozen=True, kw_only=True):
    name: Label = ""
    retention_ms: Annotated[int, Meta(ge=60_000, le=31_536_000_000)] = 86_400_000
    """How long a closed session (with its history) is kept."""
    ticket_retention_ms: Annotated[int, Meta(ge=3_600_000, le=315_360_000_000)] = 7_776_000_000
    """How long a closed ticket (with its history and hops) is kept; default 90 days."""


class TenantCreate(TenantIn, frozen=True, kw_only=True):
    id: Id


class TenantOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    retention_ms: int
    ticket_retention_ms: int
    version: int


# ------------------------------------------------------------------------------- groups


class Tier(_In, frozen=True, kw_only=True):
    after_ms: Ms
    groups: Annotated[list[Id], Meta(min_length=1, max_length=64)]


class Shift(_In, frozen=True, kw_only=True):
    days: Annotated[list[Weekday], Meta(min_length=1, max_length=7)]
    start: Clock
    end: Clock
    """End of the shift (exclusive); "24:00" is midnight at the end of the day."""


class ServiceHours(_In, frozen=True, kw_only=True):
    time_zone: Annotated[str, Meta(min_length=1, max_length=64, examples=["Asia/Shanghai"])]
    """IANA time zone; shifts are local wall-clock times, so DST is followed."""
    weekly: Annotated[list[Shift], Meta(min_length=1, max_length=64)]
    """At least one shift: hours with no shift would hold every ticket for good (no
    service hours at all, ``service_hours: null``, means always in service)."""
    closed_dates: Annotated[
        list[Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]], Meta(max_length=366)
    ] = []
    """Local dates (YYYY-MM-DD) with no service, e.g. public holidays."""


class Timers(_In, frozen=True, kw_only=True):
    """Lifecycle timers in ms (0 = off); docs/protocol.md says what each one does."""

    queue_warning_ms: Ms = 60_000
    queue_timeout_ms: Ms = 0
    position_update_ms: Ms = 0
    reply_sla_ms: Ms = 60_000
    reply_reassign_ms: Ms = 0
    silence_remind_ms: Ms = 120_000
    silence_preclose_ms: Ms = 300_000
    silence_close_ms: Ms = 1_800_000
    confirm_close_ms: Ms = 300_000


class TicketSettings(_In, frozen=True, kw_only=True):
    """How the group handles tickets (docs/tickets.md "Assignment")."""

    reassign_untouched_ms: Ms = 14_400_000
    """A ticket its handler has not worked on for this long goes to another member
    (0 = never)."""
    release_spread_ms: Ms = 900_000
    """For this long after a shift starts, the tickets held meanwhile are spread evenly
    over the members coming on shift (0 = to whoever is eligible at once)."""


class GroupIn(_In, frozen=True, kw_only=True):
    name: Label = ""
    business_line: Label = ""
    channel: Label = ""
    """Customer source or channel (app, web, wechat, ...)."""
    language: Label = ""
    scene: Literal["", "pre_sale", "in_sale", "after_sale"] = ""
    service_mode: Literal["", "im", "phone", "email"] = ""
    ability_tier: Label = ""
    service_hours: ServiceHours | None = None
    """When the group serves tickets (held outside); IM sessions are routed at any time."""
    k: Annotated[float, Meta(ge=0, le=1e9)] = 60.0
    m: Annotated[float, Meta(ge=0, le=1e6)] = 0.5
    priority_unit_ms: Ms = 60_000
    tiers: Annotated[list[Tier], Meta(max_length=16)] = []
    sticky_ms: Ms = 0
    preference_ms: Ms = 60_000
    timers: Timers = Timers()
    service_level_ms: Ms = 20_000
    service_level_target: Annotated[float, Meta(ge=0, le=1)] = 0.8
    tickets: TicketSettings = TicketSettings()
    record_decisions: bool = False
    """Record why each of the group's sessions went to its agent ("decision" in the
    session's assigned history entries; docs/routing.md "Why this agent?")."""


class GroupCreate(GroupIn, frozen=True, kw_only=True):
    id: Id


class GroupOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    business_line: str
    channel: str
    language: str
    scene: str
    service_mode: str
    ability_tier: str
    service_hours: ServiceHours | None
    k: float
    m: float
    priority_unit_ms: int
    tiers: list[Tier]
    sticky_ms: int
    preference_ms: int
    timers: Timers
    service_level_ms: int
    service_level_target: float
    tickets: TicketSettings
    record_decisions: bool
    in_service_hours: bool
    """Whether the group is within its service hours now (true without service hours)."""
    version: int


# -------------------------------------------------------------------------------- teams


class TeamIn(_In, frozen=True, kw_only=True):
    name: Label = ""
    site: Label = ""
    manager: Label = ""


class TeamCreate(TeamIn, frozen=True, kw_only=True):
    id: Id


class TeamOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    site: str
    manager: str
    version: int


# ------------------------------------------------------------------------------- agents


class AgentIn(_In, frozen=True, kw_only=True):
    name: Label = ""
    team: Id | None = None
    capacity: Annotated[int, Meta(ge=0, le=1000)]
    """Most sessions served at once (接待上限)."""
    abilities: Annotated[dict[Id, Annotated[float, Meta(gt=0, le=1e6)]], Meta(max_length=256)] = {}
    """Skill group -> ability value (能力值); membership in the group."""
    ticket_limit: Annotated[int, Meta(ge=0, le=100_000)] = 20
    """Most open tickets it is given automatically (a supervisor may assign more)."""


class AgentCreate(AgentIn, frozen=True, kw_only=True):
    id: Id


class GroupReadiness(_Out, frozen=True, kw_only=True):
    group: str
    ability: float
    candidate: bool
    """Online with free capacity: in the group's ranking."""
    readiness: float | None
    """The readiness score now (SPEC 2.3, highest is given work first), when a candidate."""


class AgentOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    team: str | None
    capacity: int
    abilities: dict[str, float]
    status: Status
    load: int
    preclosed: int
    sessions: list[str]
    preclosed_sessions: list[str]
    parked: list[str]
    last_assigned_ms: int | None
    groups: list[GroupReadiness]
    ticket_limit: int
    open_tickets: int
    """Tickets it holds now (assigned or in progress)."""
    version: int


class StatusIn(_In, frozen=True, kw_only=True):
    status: Status
    handover: bool = False
    """Away/offline: hand the agent's assigned sessions to other agents."""


# -------------------------------------------------------------------------------- rules


class Range(_In, frozen=True, kw_only=True):
    min: float | None = None
    max: float | None = None


Condition = Scalar | Annotated[list[Scalar], Meta(min_length=1, max_length=100)] | Range


class RuleIn(_In, frozen=True, kw_only=True):
    group: Id
    match: Annotated[dict[Id, Condition], Meta(max_length=32)] = {}
    """Attribute -> value (equal), list (one of) or {min, max} (a number within, at least
    one of the two). Strings: at most 256 bytes (UTF-8)."""
    priority: Annotated[int, Meta(ge=-1000, le=1000)] = 0
    preferred_agent: Id | None = None
    blocked_agents: Annotated[list[Id], Meta(max_length=100)] = []


class RuleCreate(RuleIn, frozen=True, kw_only=True):
    name: Id
    position: Annotated[int, Meta(ge=0)] | None = None
    """Where to insert (0 = first); the end when absent."""


class RuleOut(_Out, frozen=True, kw_only=True):
    name: str | None
    group: str
    match: dict[str, Any]
    priority: int
    preferred_agent: str | None
    blocked_agents: list[str]


class NamedRule(RuleIn, frozen=True, kw_only=True):
    name: Id


class RulesIn(_In, frozen=True, kw_only=True):
    rules: Annotated[list[NamedRule], Meta(max_length=1000)]


class RulesOut(_Out, frozen=True, kw_only=True):
    rules: list[RuleOut]
    version: int


# ---------------------------------------------------------------------- live and actions


class QueueItem(_Out, frozen=True, kw_only=True):
    position: int
    session: str
    priority: int
    wait_ms: int
    virtual_wait_ms: int
    """Wait plus priority * the group's priority unit: what orders the queue."""
    open_tier: int
    parked_with: str | None = None


class QueueOut(_Out, frozen=True, kw_only=True):
    group: str
    length: int
    items: list[QueueItem]


class SessionOut(_Out, frozen=True, kw_only=True):
    id: str
    state: str
    phase: str | None
    group: str
    priority: int
    arrival_ms: int
    customer: str | None
    agent: str | None
    open_tier: int
    parked_with: str | None
    blocked_agents: list[str]
    history: list[dict[str, Any]]
    """The session's events, oldest first, as on the outbound stream (docs/protocol.md)."""


class DecisionCandidate(_Out, frozen=True, kw_only=True):
    """One agent the router compared, with the terms of its SPEC 2.3 score, all taken
    just before the assignment (docs/routing.md "Why this agent?")."""

    agent: str
    group: str
    """The group whose candidates it was found in (its ability and K, M are this group's)."""
    rank: float | None
    """The stored rank (lower is offered first): last_assigned_ms/1000 - spare_term -
    preclosed_term; null when the agent is not a member of ``group``."""
    readiness: float | None
    """now/1000 - rank = idle_ms/1000 + spare_term + preclosed_term (higher is better)."""
    idle_ms: int | None
    """now - last_assigned_ms (null: never assigned nor online)."""
    capacity: int
    load: int
    preclosed: int
    ability: float | None
    """Its ability in ``group``; null when it is not a member."""
    spare_term: float | None
    """K * (capacity - load) / capacity * ability."""
    preclosed_term: float | None
    """-K * M * preclosed / capacity * ability (0 or negative)."""
    blocked: bool
    """The customer blocks this agent: the router skipped it."""


class DecisionCustomer(_Out, frozen=True, kw_only=True):
    """One waiting customer an agent compared (agent side), in the router's order."""

    session: str
    group: str
    """The queue it waits in (the customer's group; the agent's group it was found
    through is ``via_group``)."""
    via_group: str | None
    """The agent's own group this queue was reached through (null for a parked customer)."""
    kind: Literal["parked", "group", "overflow"]
    tier: int
    """0, or the overflow tier of ``group`` the agent serves it in."""
    ability: float | None
    """The agent's ability in ``via_group`` (own-group queues are taken highest first)."""
    virtual_arrival_ms: int
    """Arrival - priority * U: lower first within the same ability or tier."""


class DecisionPreferred(_Out, frozen=True, kw_only=True):
    agent: str
    kind: Literal["directed", "sticky", "transfer", "forced"]
    """directed: the arrival's directed_agent or a routing rule's preferred_agent;
    sticky: the customer's last agent; transfer: a transfer or non-forced assign to this
    agent; forced: a supervisor's forced assign or transfer."""
    used: bool
    reason: str
    """Why it was (not) used; the phrases are listed in docs/routing.md."""


class DecisionRule(_Out, frozen=True, kw_only=True):
    name: str
    position: int
    """1-based position in the tenant's rule list when the customer arrived."""


class Decision(_Out, frozen=True, kw_only=True):
    """Why the session went to ``agent`` (docs/routing.md "Why this agent?")."""

    ts: int
    """When the assignment was made (the ``assigned`` event's ts)."""
    side: Literal["customer", "agent", "preferred"]
    """customer: the best candidate agent of the customer's pool; agent: an agent that
    had capacity took this customer among the waiting ones; preferred: straight to a
    named agent (directed, sticky, transfer or a supervisor's assign)."""
    agent: str
    group: str
    via: str
    tier: int
    open_tier: int
    """The customer's open overflow tier when it was assigned."""
    rule: DecisionRule | None
    """The routing rule that chose its group at arrival; null when it named its group."""
    preferred: DecisionPreferred | None
    """The directed or sticky agent and why it was (not) used; null when there was none."""
    candidates: list[DecisionCandidate]
    """Agents in the router's order: the top 5 of the pool looked at, then the winner if
    it was not among them; on the agent and preferred sides only the winner."""
    customers: list[DecisionCustomer]
    """Agent side: the customers the agent compared (the head of each queue it looked
    at), best first, at most 5 plus the one taken; empty on the other sides."""


class DecisionsOut(_Out, frozen=True, kw_only=True):
    session: str
    record_decisions: bool
    """The session's group's setting now (decisions are recorded while it is true)."""
    decisions: list[Decision]
    """Oldest first, one per assignment recorded in the session's history."""


class AssignIn(_In, frozen=True, kw_only=True):
    agent: Id
    force: bool = True
    """Assign even over the agent's capacity (or while it is away)."""


class TransferIn(_In, frozen=True, kw_only=True):
    """Exactly one of ``to_group`` and ``to_agent`` (400 otherwise; the OpenAPI
    document says so with a ``oneOf``)."""

    to_group: Id | None = None
    to_agent: Id | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if (self.to_group is None) == (self.to_agent is None):
            raise ValueError("exactly one of to_group and to_agent")


class CloseIn(_In, frozen=True, kw_only=True):
    reason: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z_]+$")] = "closed"
    note: Annotated[str, Meta(max_length=1000)] = ""


class ActionOut(_Out, frozen=True, kw_only=True):
    events: list[dict[str, Any]]
    audit: str


class GroupSummary(_Out, frozen=True, kw_only=True):
    group: str
    queued: int
    open_sessions: int
    oldest_virtual_wait_ms: int | None
    """Virtual wait of the customer served next (None when nobody queues)."""
    candidates: int
    members: int


class SummaryOut(_Out, frozen=True, kw_only=True):
    tenant: str
    groups: list[GroupSummary]
    agents: dict[str, int]
    """Agents by status."""
    load: int
    capacity: int
    """Of online agents."""
    stream_backlog: int
    dead_letters: int


# ------------------------------------------------------------------------ tokens, audit


class TokenIn(_In, frozen=True, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    role: Role
    tenants: Annotated[list[Id], Meta(min_length=1, max_length=1000)] | None = None
    """Tenants the token may touch, each an existing one (422); all when absent."""
    agent: Id | None = None
    """Role agent only: the agent the token acts as (its ticket actions name no other
    agent, 403); absent: any agent (a system's token). Agent ids are per tenant, so such
    a token names exactly one tenant in ``tenants``, where the agent exists (422)."""
    expires_ms: Annotated[int, Meta(ge=1, le=253_402_300_799_999,
                                    description="Unix ms")] | None = None
    """When the token stops working (401 from then on); must be in the future (422);
    absent: never."""


class TokenOut(_Out, frozen=True, kw_only=True):
    id: str
    name: str
    role: Role
    tenants: list[str] | None
    created_ms: int
    created_by: str
    agent: str | None = None
    expires_ms: int | None = None
    """When it stops working (Unix ms); null: never."""
    last_used_ms: int | None = None
    """Its last use (Unix ms), recorded at most once a minute per daemon process, so up
    to about a minute old; null: not used yet."""


class TokenCreated(TokenOut, frozen=True, kw_only=True):
    token: str
    """The secret; shown only in this response, stored hashed."""


class AuditEntry(_Out, frozen=True, kw_only=True):
    id: str
    ts: int
    actor: str
    role: str
    action: str
    resource: str
    resource_id: str
    version: int
    command: dict[str, Any] | None
    before: Any
    after: Any
    events: int


# -------------------------------------------------------------------------------- pages


class TenantPage(_Out, frozen=True, kw_only=True):
    items: list[TenantOut]
    next: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""


class GroupPage(_Out, frozen=True, kw_only=True):
    items: list[GroupOut]
    next: str | None


class TeamPage(_Out, frozen=True, kw_only=True):
    items: list[TeamOut]
    next: str | None


class AgentPage(_Out, frozen=True, kw_only=True):
    items: list[AgentOut]
    next: str | None


class AuditPage(_Out, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next: str | None
    """Pass as ``before`` for older entries; null when there are none."""


class AuditArchive(_Out, frozen=True, kw_only=True):
    """The audit log of a deleted tenant, kept after its deletion."""

    tenant: str
    deleted_ms: int
    """When the tenant was deleted (Unix ms); with ``tenant``, the archive's address."""
    deleted_by: str
    """The actor who deleted it (``token:<id>:<name>``)."""
    expires_ms: int
    """When the archive is dropped (Unix ms): ``deleted_ms`` + 400 days."""
    entries: int
    """How many entries it holds, the deletion's own entry last."""


class AuditArchivePage(_Out, frozen=True, kw_only=True):
    items: list[AuditArchive]
    """Newest deletion first."""
    next: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""
