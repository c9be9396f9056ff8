"""From applied commands to metrics (:mod:`dispatchd.metrics`).

The gateway consumer hands each ``gateway_batch`` result to :func:`record_batch`: the
script has already aggregated what the metrics need (``stats``, see the statistics part
of ``lua/lib/90_entry.lua``), so the Python work per command is one histogram
observation (the command's latency). Commands applied through
:class:`~dispatchd.engine.Engine` directly (the admin API) return typed events; pass
them to :func:`observe_events`.

Label values from outside the closed sets are folded: an unknown command type becomes
``invalid``, an unknown error code ``E_OTHER``, a free-text close reason ``other``, and so
does a ticket assignment's ``via`` or ``reason`` or an overdue ``kind`` this version does
not know.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterable, Sequence
from typing import Any

import msgspec

from dispatchd import errors, metrics, protocol
from dispatchd.messages import (
    Abandoned,
    Alert,
    Assigned,
    Preclosed,
    Reactivated,
    Released,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketForwarded,
    TicketLoop,
    TicketOverdue,
    TicketResponded,
    Transferred,
)

OUTCOMES = ("applied", "duplicate", "refused")
WITHIN = ("over_threshold", "within_threshold")  # indexed by the script's 0/1
ALERT_KINDS = ("queue_wait", "reply_sla", "customer_silence")
TRANSFER_KINDS = ("request", "handover", "reply_timeout")
CLOSE_REASONS = frozenset({
    "resolved", "customer_left", "abandoned", "queue_timeout", "customer_silence",
    "confirm_timeout", "closed", "callback",
})
TICKET_VIAS = frozenset({"owner", "order_history", "balanced", "manual"})
TICKET_REASONS = frozenset({"created", "forwarded", "queue", "shift_start", "untouched",
                            "manual"})
OVERDUE_KINDS = ("first_response", "resolution")
PROTOCOL_CODES = (protocol.E_MALFORMED, protocol.E_TOO_LARGE, protocol.E_UNKNOWN_TYPE,
                  protocol.E_INVALID, protocol.E_WRONG_TENANT, "E_INTERNAL", "E_UNKNOWN_OP")


def error_codes() -> frozenset[str]:
    """Every code an ``error`` event can carry (a closed set)."""
    return frozenset(errors.CODES) | frozenset(PROTOCOL_CODES)


_CODES = error_codes()


class BatchStats(msgspec.Struct, frozen=True):
    """The ``stats`` of a ``gateway_batch`` result (lua/lib/90_entry.lua)."""

    n: dict[str, int] = {}
    ans: list[Any] = []
    ab: list[Any] = []
    fr: list[Any] = []
    tkr: list[Any] = []
    tkfr: list[Any] = []


def _kind(op: str) -> str:
    return op if op in protocol.COMMAND_TYPES else "invalid"


def _code(code: str) -> str:
    return code if code in _CODES else "E_OTHER"


def _reason(reason: str | None) -> str:
    return reason if reason in CLOSE_REASONS else "other"


def _fold(value: str, known: Container[str]) -> str:
    return value if value in known else "other"


# ------------------------------------------------------------------ gateway batches


def record_batch(
    tenant: str,
    stats: BatchStats | None,
    types: dict[str, int],
    entry_ids: Sequence[bytes],
    done_s: float,
) -> None:
    """Count one applied batch of ``tenant``.

    Args:
        stats: the script's statistics of the batch.
        types: events appended, by type.
        entry_ids: the inbound stream ids of the batch's commands (their time part is when
            each was appended), for the command latency.
        done_s: Unix time (s) the batch's reply arrived.
    """
    if entry_ids:
        metrics.BATCH_SIZE.observe((), len(entry_ids))
        # an entry id starts with the ms its command was appended
        metrics.COMMAND_LATENCY.observe_many((tenant,), (
            max(done_s - int(eid.partition(b"-")[0]) / 1000, 0.0) for eid in entry_ids))
    for kind, n in types.items():
        metrics.EVENTS.labels(tenant, kind).inc(n)
    if stats is None:
        return
    for key, n in stats.n.items():
        _count(tenant, key, n)
    _record_waits(tenant, stats)
    _record_ticket_times(tenant, stats)


def _count(tenant: str, key: str, n: int) -> None:
    what, _, rest = key.partition(" ")
    if what.startswith("tk"):
        _count_tickets(tenant, what, rest.split(" "), n)
    elif what == "cmd":
        outcome, _, op = rest.partition(" ")
        metrics.COMMANDS.labels(tenant, _kind(op), outcome).inc(n)
    elif what == "asg":
        group, tier, via = rest.split(" ")
        metrics.ASSIGNMENTS.labels(tenant, group, tier, via).inc(n)
    elif what == "al":
        kind, group = rest.split(" ")
        metrics.ALERTS.labels(tenant, group, kind).inc(n)
    elif what == "tr":
        kind, group = rest.split(" ")
        metrics.TRANSFERS.labels(tenant, group, kind).inc(n)
    elif what == "cl":
        metrics.CLOSED.labels(tenant, _reason(rest)).inc(n)
    elif what == "err":
        metrics.DEAD_LETTERS.labels(tenant, _code(rest)).inc(n)
    elif what == "pc":
        metrics.PRECLOSED.labels(tenant).inc(n)
    elif what == "rea":
        metrics.REACTIVATED.labels(tenant, rest).inc(n)


def _record_waits(tenant: str, stats: BatchStats) -> None:
    ans, ab, fr = stats.ans, stats.ab, stats.fr
    answered: dict[tuple[str, int], int] = {}
    for i in range(0, len(ans) - 2, 3):
        group, wait_ms, within = ans[i], ans[i + 1], ans[i + 2]
        answered[group, within] = answered.get((group, within), 0) + 1
        metrics.QUEUE_WAIT.observe((tenant, group), wait_ms / 1000)
    for (group, within), n in answered.items():
        metrics.ANSWERED.labels(tenant, group, WITHIN[within]).inc(n)
    for i in range(0, len(ab) - 2, 3):
        metrics.ABANDONED.labels(tenant, ab[i], WITHIN[ab[i + 2]]).inc()
    for i in range(0, len(fr) - 1, 2):
        if fr[i]:
            metrics.FIRST_RESPONSE.observe((tenant, fr[i]), fr[i + 1] / 1000)


def _count_tickets(tenant: str, what: str, labels: list[str], n: int) -> None:
    if what == "tkc":
        metrics.TICKETS_CREATED.labels(tenant, *labels).inc(n)
    elif what == "tka":
        group, via, reason = labels
        _ticket_assigned(tenant, group, via, reason, n)
    elif what == "tkf":
        metrics.TICKETS_FORWARDED.labels(tenant, *labels).inc(n)
    elif what == "tkl":
        metrics.TICKET_LOOPS.labels(tenant, *labels).inc(n)
    elif what == "tko":
        group, kind = labels
        metrics.TICKETS_OVERDUE.labels(tenant, group, _fold(kind, OVERDUE_KINDS)).inc(n)


def _ticket_assigned(tenant: str, group: str, via: str, reason: str, n: int = 1) -> None:
    metrics.TICKETS_ASSIGNED.labels(
        tenant, group, _fold(via, TICKET_VIAS), _fold(reason, TICKET_REASONS)).inc(n)
    if reason == "untouched":
        metrics.TICKETS_REASSIGNED.labels(tenant, group).inc(n)


def _record_ticket_times(tenant: str, stats: BatchStats) -> None:
    for pairs, histogram in ((stats.tkr, metrics.TICKET_RESOLUTION),
                             (stats.tkfr, metrics.TICKET_FIRST_RESPONSE)):
        for i in range(0, len(pairs) - 1, 2):
            histogram.observe((tenant, pairs[i]), pairs[i + 1] / 1000)


def record_call(seconds: float) -> None:
    """One pipelined round trip of ``gateway_batch`` calls took ``seconds``."""
    metrics.LUA_CALL.observe(("gateway_batch",), seconds)


def record_lease(tenant: str, held: bool) -> None:
    """Whether this replica holds ``tenant`` after its latest call."""
    metrics.TENANT_HELD.labels(tenant).set(1 if held else 0)


_last_step = [0.0]


def record_step() -> None:
    """The consumer started a loop iteration (readiness checks it is recent)."""
    now = time.time()
    _last_step[0] = now
    metrics.CONSUMER_STEP.set(now)


def last_step() -> float:
    """Unix time of the consumer's latest loop iteration in this process (0: none yet)."""
    return _last_step[0]


# -------------------------------------------------------------- engine (admin) events


def observe_events(tenant: str, events: Iterable[object]) -> None:
    """Count the typed events of commands applied through ``Engine`` (not the gateway).

    Events, assignments, transfers, alerts, closes, pre-closes, reactivations and every
    ticket metric are counted like the gateway's. Answers, abandonments and first
    responses of sessions (the service level) are not: whether an assignment is a
    session's first, and a first response's group, are only known on the gateway path.
    """
    for e in events:
        kind = getattr(e, "__struct_config__", None)
        tag = str(kind.tag) if kind is not None else type(e).__name__
        match e:
            case Assigned():
                metrics.ASSIGNMENTS.labels(tenant, e.group, str(e.tier), e.via).inc()
            case Released():
                metrics.CLOSED.labels(tenant, _reason(e.reason)).inc()
            case Abandoned():
                metrics.CLOSED.labels(tenant, "closed").inc()
            case Transferred():
                metrics.TRANSFERS.labels(tenant, e.from_group, e.reason or "request").inc()
            case Alert():
                metrics.ALERTS.labels(tenant, e.group, e.kind).inc()
            case Preclosed():
                metrics.PRECLOSED.labels(tenant).inc()
            case Reactivated():
                outcome = "over_capacity" if e.over_capacity else "within_capacity"
                metrics.REACTIVATED.labels(tenant, outcome).inc()
            case _:
                _observe_ticket(tenant, e)
        metrics.EVENTS.labels(tenant, "closed" if tag in ("released", "abandoned") else tag).inc()


def _observe_ticket(tenant: str, e: object) -> None:
    match e:
        case TicketCreated():
            metrics.TICKETS_CREATED.labels(tenant, e.group, e.type).inc()
        case TicketAssigned():
            _ticket_assigned(tenant, e.group, e.via, e.reason)
        case TicketForwarded():
            metrics.TICKETS_FORWARDED.labels(tenant, e.from_group, e.to_group).inc()
        case TicketLoop():
            metrics.TICKET_LOOPS.labels(tenant, e.group).inc()
        case TicketOverdue():
            metrics.TICKETS_OVERDUE.labels(tenant, e.group, _fold(e.kind, OVERDUE_KINDS)).inc()
        case TicketResponded(first_response_ms=int(ms)):
            metrics.TICKET_FIRST_RESPONSE.observe((tenant, e.group), ms / 1000)
        case TicketClosed():
            metrics.TICKET_RESOLUTION.observe((tenant, e.group), e.resolution_ms / 1000)


# --------------------------------------------------------------- series initialisation


def init_tenant(tenant: str) -> None:
    """Create the tenant's alerting counters at 0, so ``increase()`` sees their first
    increment."""
    for code in sorted(_CODES):
        metrics.DEAD_LETTERS.labels(tenant, code)
    for kind in sorted(protocol.COMMAND_TYPES):
        for outcome in OUTCOMES:
            metrics.COMMANDS.labels(tenant, kind, outcome)
    metrics.PRECLOSED.labels(tenant)
    for outcome in ("within_capacity", "over_capacity"):
        metrics.REACTIVATED.labels(tenant, outcome)
    metrics.COMMAND_LATENCY.labels(tenant)


def init_group(tenant: str, group: str) -> None:
    """Create the group's service-level, alert and ticket counters at 0."""
    for outcome in WITHIN:
        metrics.ANSWERED.labels(tenant, group, outcome)
        metrics.ABANDONED.labels(tenant, group, outcome)
    for kind in ALERT_KINDS:
        metrics.ALERTS.labels(tenant, group, kind)
    for kind in TRANSFER_KINDS:
        metrics.TRANSFERS.labels(tenant, group, kind)
    metrics.QUEUE_WAIT.labels(tenant, group)
    metrics.FIRST_RESPONSE.labels(tenant, group)
    metrics.TICKETS_REASSIGNED.labels(tenant, group)
    metrics.TICKET_LOOPS.labels(tenant, group)
    for kind in OVERDUE_KINDS:
        metrics.TICKETS_OVERDUE.labels(tenant, group, kind)
    metrics.TICKET_RESOLUTION.labels(tenant, group)
    metrics.TICKET_FIRST_RESPONSE.labels(tenant, group)
