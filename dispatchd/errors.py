"""The exception tree, and the map from Lua error codes to exception classes.

Every Lua script fails in one way: ``redis.error_reply("E_CODE detail")`` (or the same
text in a batch item). :func:`from_reply` turns that text into the matching exception; a
test scans ``lua/*.lua`` and fails if a code used there is missing from :data:`CODES`.
"""

from __future__ import annotations


class DispatchError(Exception):
    """Base of every error dispatchd raises on purpose."""


class CommandRejected(DispatchError):
    """A routing command was refused; nothing was changed.

    Attributes:
        code: the Lua error code, e.g. ``E_GROUP_UNKNOWN``.
        detail: what the script said about it (the offending id or field).
    """

    code = "E_UNKNOWN"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.code} {detail}".strip())
        self.detail = detail


class BadArgument(CommandRejected):
    code = "E_BAD_ARG"


class BadId(CommandRejected):
    code = "E_BAD_ID"


class GroupUnknown(CommandRejected):
    code = "E_GROUP_UNKNOWN"


class AgentUnknown(CommandRejected):
    code = "E_AGENT_UNKNOWN"


class SessionUnknown(CommandRejected):
    code = "E_SESSION_UNKNOWN"


class SessionExists(CommandRejected):
    code = "E_SESSION_EXISTS"


class SessionState(CommandRejected):
    code = "E_SESSION_STATE"


class AgentOffline(CommandRejected):
    code = "E_AGENT_OFFLINE"


class AgentBlocked(CommandRejected):
    code = "E_AGENT_BLOCKED"


class BadTier(CommandRejected):
    code = "E_BAD_TIER"


class NotSessionAgent(CommandRejected):
    code = "E_NOT_SESSION_AGENT"


class UnknownOperation(CommandRejected):
    code = "E_UNKNOWN_OP"


class NoRoute(CommandRejected):
    """An arrival without a group whose attributes match no routing rule."""

    code = "E_NO_ROUTE"


class TicketUnknown(CommandRejected):
    code = "E_TICKET_UNKNOWN"


class TicketExists(CommandRejected):
    code = "E_TICKET_EXISTS"


class TicketState(CommandRejected):
    """The ticket is not in a state that allows this (closed, or already with that agent)."""

    code = "E_TICKET_STATE"


class TicketTypeUnknown(CommandRejected):
    code = "E_TICKET_TYPE_UNKNOWN"


class TicketField(CommandRejected):
    """A ticket's fields do not fit its type's template; the detail names the field."""

    code = "E_TICKET_FIELD"


class NotTicketHandler(CommandRejected):
    """Only the ticket's handler may do this (the detail names the handler, or none)."""

    code = "E_NOT_TICKET_HANDLER"


class AgentNotInGroup(CommandRejected):
    code = "E_AGENT_NOT_IN_GROUP"


class SameGroup(CommandRejected):
    """A ticket forwarded to the group it is in."""

    code = "E_SAME_GROUP"


class Stale(CommandRejected):
    """Derived data computed from state that changed meanwhile (read it again)."""

    code = "E_STALE"


class GroupBusy(CommandRejected):
    """A group still has open sessions, so it cannot be deleted."""

    code = "E_GROUP_BUSY"


class GroupInUse(CommandRejected):
    """Another group's overflow tier or a routing rule still names the group."""

    code = "E_GROUP_IN_USE"


class AgentBusy(CommandRejected):
    """An agent still holds sessions or parked customers, so it cannot be deleted."""

    code = "E_AGENT_BUSY"


class TeamUnknown(CommandRejected):
    """An agent names a team that does not exist."""

    code = "E_TEAM_UNKNOWN"


class TeamInUse(CommandRejected):
    """A team still has agents, so it cannot be deleted."""

    code = "E_TEAM_IN_USE"


class NotFound(CommandRejected):
    """An admin change names a resource that does not exist."""

    code = "E_NOT_FOUND"


class AlreadyExists(CommandRejected):
    """An admin create names a resource that already exists."""

    code = "E_EXISTS"


class VersionMismatch(CommandRejected):
    """An admin change expected another version of the resource (``detail``: current)."""

    code = "E_VERSION"


class InternalError(CommandRejected):
    """A script failed for a reason that is not a documented code: a bug. Reported in the
    gateway's error event and dead-letter entry instead of stopping the daemon."""

    code = "E_INTERNAL"


class ScriptFailure(DispatchError):
    """A script failed in a way that is not one of its documented codes (a bug)."""


CODES: dict[str, type[CommandRejected]] = {
    cls.code: cls
    for cls in (
        BadArgument,
        BadId,
        GroupUnknown,
        AgentUnknown,
        SessionUnknown,
        SessionExists,
        SessionState,
        AgentOffline,
        AgentBlocked,
        BadTier,
        NotSessionAgent,
        UnknownOperation,
        NoRoute,
        GroupBusy,
        GroupInUse,
        AgentBusy,
        TeamUnknown,
        TeamInUse,
        NotFound,
        AlreadyExists,
        VersionMismatch,
        InternalError,
        TicketUnknown,
        TicketExists,
        TicketState,
        TicketTypeUnknown,
        TicketField,
        NotTicketHandler,
        AgentNotInGroup,
        SameGroup,
        Stale,
    )
}


def from_reply(text: str) -> DispatchError:
    """The exception for an error text returned by a script."""
    code, _, detail = text.strip().partition(" ")
    cls = CODES.get(code)
    if cls is None:
        return ScriptFailure(text)
    return cls(detail)
