"""Commands the routing core accepts and events it returns.

Commands are a tagged union on the ``op`` field; they are packed with msgpack and handed
to the Lua scripts as-is, so a field name here is also the field name the script reads.
Events are a tagged union on the ``event`` field, unpacked from what the scripts return.
See ``docs/routing.md`` for the semantics of each.
"""

from __future__ import annotations

from typing import Literal

import msgspec

AgentStatusName = Literal["online", "away", "offline"]


class _Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", omit_defaults=True):
    """Base of every command."""


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    """One overflow tier: after ``after_ms`` of real wait, ``groups`` join the pool."""

    after_ms: int
    groups: list[str]


class ConfigureGroup(_Command, frozen=True, tag="configure_group"):
    """Create or replace a skill group's routing settings."""

    group: str
    k: float = 60.0
    m: float = 0.5
    priority_unit_ms: int = 60_000
    tiers: list[Tier] = msgspec.field(default_factory=list)
    sticky_ms: int = 0
    preference_ms: int = 60_000
    # lifecycle timers (ms; 0 = off), see docs/protocol.md
    queue_warning_ms: int = 60_000
    queue_timeout_ms: int = 0
    position_update_ms: int = 0
    reply_sla_ms: int = 60_000
    reply_reassign_ms: int = 0
    silence_remind_ms: int = 120_000
    silence_preclose_ms: int = 300_000
    silence_close_ms: int = 1_800_000
    confirm_close_ms: int = 300_000
    # service level: the share answered within service_level_ms should be >= the target
    service_level_ms: int = 20_000
    service_level_target: float = 0.8
    # tickets (docs/tickets.md): reassign a ticket untouched this long (0 = never); spread
    # the tickets held outside service hours over the agents coming on shift this long
    ticket_reassign_ms: int = 14_400_000
    ticket_release_spread_ms: int = 900_000
    # record why each session went to its agent (docs/routing.md "Why this agent?")
    record_decisions: bool = False


class ConfigureAgent(_Command, frozen=True, tag="configure_agent"):
    """Create or replace an agent's capacity, abilities (group memberships) and team."""

    agent: str
    capacity: int
    abilities: dict[str, float] = msgspec.field(default_factory=dict)
    team: str = ""
    ticket_limit: int = 20


class SetAgentStatus(_Command, frozen=True, tag="set_agent_status"):
    """Set an agent online, away or offline (with ``handover``: hand its sessions over)."""

    agent: str
    status: AgentStatusName
    handover: bool = False


Scalar = str | int | float | bool


class RoutingRule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """First match wins: every ``match`` condition must hold for the arrival's attributes.

    A condition is a value (equal), a list of values (one of) or ``{"min": .., "max": ..}``.
    """

    group: str
    match: dict[str, Scalar | list[Scalar] | dict[str, float]] = msgspec.field(
        default_factory=dict
    )
    name: str | None = None
    priority: int = 0
    preferred_agent: str | None = None
    blocked_agents: list[str] = msgspec.field(default_factory=list)


class ConfigureRules(_Command, frozen=True, tag="configure_rules"):
    """Replace the tenant's routing rules (ordered; the first match decides)."""

    rules: list[RoutingRule] = msgspec.field(default_factory=list)


class Arrive(_Command, frozen=True, tag="arrive"):
    """A customer arrives in a group (or with attributes the routing rules map to one)."""

    session: str
    group: str | None = None
    attributes: dict[str, Scalar] | None = None
    customer: str | None = None
    priority: int = 0
    directed_agent: str | None = None
    last_agent: str | None = None
    blocked_agents: list[str] = msgspec.field(default_factory=list)
    gateway: str | None = None


class AgentReady(_Command, frozen=True, tag="agent_ready"):
    """An agent may have free capacity: it takes waiting customers if it can."""

    agent: str


class ReleaseSession(_Command, frozen=True, tag="release_session"):
    """An assigned or pre-closed session ends and frees its agent."""

    session: str
    reason: str = "closed"


class PrecloseSession(_Command, frozen=True, tag="preclose_session"):
    """An assigned session is pre-closed: frees capacity but is remembered."""

    session: str


class ReactivateSession(_Command, frozen=True, tag="reactivate_session"):
    """A pre-closed session's customer came back."""

    session: str


class TransferSession(_Command, frozen=True, tag="transfer_session"):
    """Move a queued or assigned session to another group or to a named agent."""

    session: str
    to_group: str | None = None
    to_agent: str | None = None
    force: bool = False


class AbandonCustomer(_Command, frozen=True, tag="abandon_customer"):
    """A queued customer leaves before being served."""

    session: str


class EscalateOverflow(_Command, frozen=True, tag="escalate_overflow"):
    """Open the overflow tiers that are due, for up to ``limit`` customers."""

    limit: int = 100


class ExpirePreferences(_Command, frozen=True, tag="expire_preferences"):
    """Send parked customers whose preference wait is over to normal routing."""

    limit: int = 100


class CustomerMessage(_Command, frozen=True, tag="customer_message"):
    """The customer wrote."""

    session: str


class AgentMessage(_Command, frozen=True, tag="agent_message"):
    """The session's agent (or an invited agent) replied."""

    session: str
    agent: str


class CustomerLeave(_Command, frozen=True, tag="customer_leave"):
    """The customer left (queued: abandoned; assigned: closed)."""

    session: str


class RequestClose(_Command, frozen=True, tag="request_close"):
    """The agent asks the customer to confirm the issue is resolved."""

    session: str
    agent: str


class ConfirmClose(_Command, frozen=True, tag="confirm_close"):
    """The customer's answer to a close request."""

    session: str
    resolved: bool


class CloseSession(_Command, frozen=True, tag="close_session"):
    """Close at once; reason "callback" also emits callback_requested with the note."""

    session: str
    reason: str = "closed"
    note: str = ""


class InviteAgent(_Command, frozen=True, tag="invite_agent"):
    """Invite a second agent (an expert) into an assigned session."""

    session: str
    agent: str


class QueryPosition(_Command, frozen=True, tag="query_position"):
    """Ask where a queued customer stands."""

    session: str


class DeleteGroup(_Command, frozen=True, tag="delete_group"):
    """Delete a skill group nothing depends on any more (see lua/delete_group.lua)."""

    group: str


class DeleteAgent(_Command, frozen=True, tag="delete_agent"):
    """Delete an agent that holds no work (see lua/delete_agent.lua)."""

    agent: str


class FireTimers(_Command, frozen=True, tag="fire_timers"):
    """Fire up to ``limit`` due lifecycle timers."""

    limit: int = 100


class RecountAgents(_Command, frozen=True, tag="recount_agents"):
    """Rebuild the agent counters the metrics sampler reads and every group's set of
    ticket-eligible agents (once per tenant whose data predates them; O(agents))."""


# ---------------------------------------------------------------------------- tickets

TicketFieldType = Literal["string", "integer", "number", "boolean", "date", "enum"]
FieldValue = str | int | float | bool


class TicketField(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One field of a ticket type's template."""

    name: str
    type: TicketFieldType
    required: bool = False
    values: list[str] | None = None  # enum: the allowed values
    max_length: int | None = None  # string: at most this many bytes (default 2000)


class ConfigureTicketType(_Command, frozen=True, tag="configure_ticket_type"):
    """Create or replace a ticket type (its template and SLA targets, ms, 0 = none)."""

    type: str
    name: str = ""
    fields: list[TicketField] = msgspec.field(default_factory=list)
    first_response_ms: int = 0
    resolution_ms: int = 0


class DeleteTicketType(_Command, frozen=True, tag="delete_ticket_type"):
    type: str


class CreateTicket(_Command, frozen=True, tag="create_ticket"):
    """A ticket addressed to a group, checked against its type's template."""

    ticket: str
    type: str
    group: str
    by: str
    fields: dict[str, FieldValue] = msgspec.field(default_factory=dict)
    title: str = ""
    priority: int = 0
    order_id: str | None = None
    order_owner: str | None = None


class RespondTicket(_Command, frozen=True, tag="respond_ticket"):
    """The handler works on its ticket (touches it; the first is the first response)."""

    ticket: str
    agent: str
    note: str = ""


class ForwardTicket(_Command, frozen=True, tag="forward_ticket"):
    """Forward to another group: by its handler (``agent``) or a ``supervisor``."""

    ticket: str
    to_group: str
    note: str = ""
    agent: str | None = None
    supervisor: str | None = None


class AssignTicket(_Command, frozen=True, tag="assign_ticket"):
    """A supervisor assigns the ticket to a member of its group by hand."""

    ticket: str
    agent: str
    supervisor: str


class CloseTicket(_Command, frozen=True, tag="close_ticket"):
    """Close with a resolution: by its handler (``agent``) or a ``supervisor``."""

    ticket: str
    resolution: str
    agent: str | None = None
    supervisor: str | None = None


class QueryTicket(_Command, frozen=True, tag="query_ticket"):
    ticket: str


class TicketTick(_Command, frozen=True, tag="ticket_tick"):
    """Fire up to ``limit`` due ticket timers and purge closed tickets past retention."""

    limit: int = 100


class ServiceWindows(msgspec.Struct, frozen=True):
    """Service hours as UTC ms intervals, flat [start, end, ...], valid until ``hz``."""

    hz: int
    iv: list[int]


class SetServiceWindows(_Command, frozen=True, tag="set_service_windows"):
    """Store a group's service windows unless its service hours changed meanwhile."""

    group: str
    meta_sha1: str
    windows: ServiceWindows | None = None


Command = (
    ConfigureGroup
    | ConfigureAgent
    | SetAgentStatus
    | Arrive
    | AgentReady
    | ReleaseSession
    | PrecloseSession
    | ReactivateSession
    | TransferSession
    | AbandonCustomer
    | EscalateOverflow
    | ExpirePreferences
    | ConfigureRules
    | CustomerMessage
    | AgentMessage
    | CustomerLeave
    | RequestClose
    | ConfirmClose
    | CloseSession
    | InviteAgent
    | QueryPosition
    | FireTimers
    | RecountAgents
    | DeleteGroup
    | DeleteAgent
    | ConfigureTicketType
    | DeleteTicketType
    | CreateTicket
    | RespondTicket
    | ForwardTicket
    | AssignTicket
    | CloseTicket
    | QueryTicket
    | TicketTick
    | SetServiceWindows
)

# ---------------------------------------------------------------------------- events


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    """Base of every event."""


class Queued(_Event, frozen=True, tag="queued"):
    session: str
    group: str
    virtual_arrival_ms: int
    priority: int
    position: int
    reason: str
    parked_with: str | None = None


class Assigned(_Event, frozen=True, tag="assigned"):
    session: str
    agent: str
    group: str
    tier: int
    via: str
    wait_ms: int


class TierOpened(_Event, frozen=True, tag="tier_opened"):
    session: str
    group: str
    tier: int


class PreferenceExpired(_Event, frozen=True, tag="preference_expired"):
    session: str
    agent: str


class Released(_Event, frozen=True, tag="released"):
    session: str
    agent: str
    reason: str


class Preclosed(_Event, frozen=True, tag="preclosed"):
    session: str
    agent: str


class Reactivated(_Event, frozen=True, tag="reactivated"):
    session: str
    agent: str
    over_capacity: bool


class Transferred(_Event, frozen=True, tag="transferred"):
    session: str
    from_group: str
    to_group: str
    from_agent: str | None = None
    to_agent: str | None = None
    reason: str | None = None


class Abandoned(_Event, frozen=True, tag="abandoned"):
    session: str
    group: str
    wait_ms: int


class AgentStatusChanged(_Event, frozen=True, tag="agent_status"):
    agent: str
    status: AgentStatusName
    previous: AgentStatusName


class GroupConfigured(_Event, frozen=True, tag="group_configured"):
    group: str


class AgentConfigured(_Event, frozen=True, tag="agent_configured"):
    agent: str


class GroupDeleted(_Event, frozen=True, tag="group_deleted"):
    group: str


class AgentDeleted(_Event, frozen=True, tag="agent_deleted"):
    agent: str


class AgentsRecounted(_Event, frozen=True, tag="agents_recounted"):
    agents: int


class RulesConfigured(_Event, frozen=True, tag="rules_configured"):
    count: int


class StateChanged(_Event, frozen=True, tag="state_changed"):
    session: str
    to: str
    from_: str | None = msgspec.field(default=None, name="from")
    first_response_ms: int | None = None


class Alert(_Event, frozen=True, tag="alert"):
    kind: str
    session: str
    group: str
    waited_ms: int
    agent: str | None = None


class Position(_Event, frozen=True, tag="position"):
    session: str
    group: str
    position: int
    wait_ms: int
    parked_with: str | None = None


class AgentInvited(_Event, frozen=True, tag="agent_invited"):
    session: str
    agent: str
    by: str


class CallbackRequested(_Event, frozen=True, tag="callback_requested"):
    session: str
    group: str
    note: str
    agent: str | None = None


class TicketTypeConfigured(_Event, frozen=True, tag="ticket_type_configured"):
    type: str


class TicketTypeDeleted(_Event, frozen=True, tag="ticket_type_deleted"):
    type: str


class TicketCreated(_Event, frozen=True, tag="ticket_created"):
    ticket: str
    type: str
    group: str
    by: str
    priority: int
    order_id: str | None = None
    title: str | None = None


class TicketHeld(_Event, frozen=True, tag="ticket_held"):
    """Outside the group's service hours: assigned when it opens (``until_ms``)."""

    ticket: str
    group: str
    reason: str
    until_ms: int


class TicketQueued(_Event, frozen=True, tag="ticket_queued"):
    ticket: str
    group: str
    reason: str
    position: int


class TicketAssigned(_Event, frozen=True, tag="ticket_assigned"):
    ticket: str
    group: str
    agent: str
    via: str  # owner | order_history | balanced | manual
    reason: str  # created | forwarded | queue | shift_start | untouched | manual
    wait_ms: int
    previous_agent: str | None = None
    by: str | None = None


class TicketResponded(_Event, frozen=True, tag="ticket_responded"):
    ticket: str
    group: str
    agent: str
    note: str | None = None
    first_response_ms: int | None = None


class TicketForwarded(_Event, frozen=True, tag="ticket_forwarded"):
    ticket: str
    from_group: str
    to_group: str
    by: str
    note: str
    hop: int
    spent_ms: int
    loop: bool
    from_agent: str | None = None


class TicketLoop(_Event, frozen=True, tag="ticket_loop"):
    """A forward into a group the ticket was in before (``visits`` times now)."""

    ticket: str
    group: str
    hop: int
    visits: int


class TicketOverdue(_Event, frozen=True, tag="ticket_overdue"):
    ticket: str
    kind: str  # first_response | resolution
    group: str
    type: str
    due_ms: int
    agent: str | None = None


class TicketClosed(_Event, frozen=True, tag="ticket_closed"):
    ticket: str
    group: str
    type: str
    by: str
    resolution: str
    resolution_ms: int
    hops: int
    agent: str | None = None
    breached: list[str] | None = None


class TicketStatus(_Event, frozen=True, tag="ticket_status"):
    ticket: str
    type: str
    state: str
    group: str
    priority: int
    created_ms: int
    created_by: str
    title: str
    hops: int
    overdue: bool
    agent: str | None = None
    order_id: str | None = None
    first_response_ms: int | None = None
    first_response_due_ms: int | None = None
    resolution_due_ms: int | None = None
    fields: dict[str, FieldValue] | None = None


Event = (
    Queued
    | Assigned
    | TierOpened
    | PreferenceExpired
    | Released
    | Preclosed
    | Reactivated
    | Transferred
    | Abandoned
    | AgentStatusChanged
    | GroupConfigured
    | AgentConfigured
    | GroupDeleted
    | AgentDeleted
    | AgentsRecounted
    | RulesConfigured
    | StateChanged
    | Alert
    | Position
    | AgentInvited
    | CallbackRequested
    | TicketTypeConfigured
    | TicketTypeDeleted
    | TicketCreated
    | TicketHeld
    | TicketQueued
    | TicketAssigned
    | TicketResponded
    | TicketForwarded
    | TicketLoop
    | TicketOverdue
    | TicketClosed
    | TicketStatus
)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one command did: its events in order (empty when nothing changed)."""

    events: list[Event]


class CommandFailed(msgspec.Struct, frozen=True, kw_only=True):
    """A command of a batch that was refused; it changed nothing."""

    error: str


BatchItem = Outcome | CommandFailed
