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

#: Metric children by (metric, label values): ``labels()`` validates its arguments and
#: takes a lock on every call, a cost paid per batch on the consumer's hot path.
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once (label values come from closed sets)."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child

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
        _child(metrics.EVENTS, tenant, kind).inc(n)
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
        _child(metrics.COMMANDS, tenant, _kind(op), outcome).inc(n)
    elif what == "asg":
        group, tier, via = rest.split(" ")
        _child(metrics.ASSIGNMENTS, tenant, group, tier, via).inc(n)
    elif what == "al":
        kind, group = rest.split(" ")
        _child(metrics.ALERTS, tenant, group, kind).inc(n)
    elif what == "tr":
        kind, group = rest.split(" ")
        _child(metrics.TRANSFERS, tenant, group, kind).inc(n)
    elif what == "cl":
        _child(metrics.CLOSED, tenant, _reason(rest)).inc(n)
    elif what == "err":
        _child(metrics.DEAD_LETTERS, tenant, _code(rest)).inc(n)
    elif what == "pc":
        _child(metrics.PRECLOSED, tenant).inc(n)
    elif what == "rea":
        _child(metrics.REACTIVATED, tenant, rest).inc(n)


def _record_waits(tenant: str, stats: BatchStats) -> None:
    ans, ab, fr = stats.ans, stats.ab, stats.fr
    answered: dict[tuple[str, int], int] = {}
    for i in range(0, len(ans) - 2, 3):
        group, wait_ms, within = ans[i], ans[i + 1], ans[i + 2]
        answered[group, within] = answered.get((group, within), 0) + 1
        metrics.QUEUE_WAIT.observe((tenant, group), wait_ms / 1000)
    for (group, within), n in answered.items():
        _child(metrics.ANSWERED, tenant, group, WITHIN[within]).inc(n)
    for i in range(0, len(ab) - 2, 3):
        _child(metrics.ABANDONED, tenant, ab[i], WITHIN[ab[i + 2]]).inc()
    for i in range(0, len(fr) - 1, 2):
        if fr[i]:
            metrics.FIRST_RESPONSE.observe((tenant, fr[i]), fr[i + 1] / 1000)


def _count_tickets(tenant: str, what: str, labels: list[str], n: int) -> None:
    if what == "tkc":
        _child(metrics.TICKETS_CREATED, tenant, *labels).inc(n)
    elif what == "tka":
        group, via, reason = labels
        _ticket_assigned(tenant, group, via, reason, n)
    elif what == "tkf":
        _child(metrics.TICKETS_FORWARDED, tenant, *labels).inc(n)
    elif what == "tkl":
        _child(metrics.TICKET_LOOPS, tenant, *labels).inc(n)
    elif what == "tko":
        group, kind = labels
        _child(metrics.TICKETS_OVERDUE, tenant, group, _fold(kind, OVERDUE_KINDS)).inc(n)


def _ticket_assigned(tenant: str, group: str, via: str, reason: str, n: int = 1) -> None:
    _child(metrics.TICKETS_ASSIGNED,
        tenant, group, _fold(via, TICKET_VIAS), _fold(reason, TICKET_REASONS)).inc(n)
    if reason == "untouched":
        _child(metrics.TICKETS_REASSIGNED, tenant, group).inc(n)


def _record_ticket_times(tenant: str, stats: BatchStats) -> None:
    for pairs, histogram in ((stats.tkr, metrics.TICKET_RESOLUTION),
                             (stats.tkfr, metrics.TICKET_FIRST_RESPONSE)):
        for i in range(0, len(pairs) - 1, 2):
            histogram.observe((tenant, pairs[i]), pairs[i + 1] / 1000)


def record_call(seconds: float) -> None:
    """One consumer round trip (its ``gateway_batch`` calls and the read) took ``seconds``."""
    metrics.ROUND_TRIP.observe((), seconds)


def record_lease(tenant: str, held: bool) -> None:
    """Whether this replica holds ``tenant`` after its latest call."""
    _child(metrics.TENANT_HELD, tenant).set(1 if held else 0)


def record_tenants_held(n: int) -> None:
    """This replica holds ``n`` tenants' leases."""
    metrics.TENANTS_HELD.set(n)


def record_lease_move(reason: str, n: int = 1) -> None:
    """This replica took or let go ``n`` leases (``reason``: taken, released_rebalance,
    released_stop, lost)."""
    metrics.LEASE_MOVES.labels(reason).inc(n)


def record_replicas(n: int) -> None:
    """This replica's latest heartbeat saw ``n`` live replicas."""
    metrics.REPLICAS_LIVE.set(n)


_last_step = [0.0]


def record_step() -> None:
    """The consumer started a loop iteration (readiness checks it is recent)."""
    now = time.time()
    _last_step[0] = now
    metrics.CONSUMER_STEP.set(now)


def last_step() -> float:
    """Unix time of the consumer's latest loop iteration in this process (0: none yet)."""
    return _last_step[0]


_state_missing: list[str | None] = [None]


def record_state_lost(what: str, n: int = 1) -> None:
    """The consumer found ``what`` (``consumer_group``, counted per tenant, or
    ``library``) gone from the server and recreated it."""
    _child(metrics.STATE_LOST, what).inc(n)


def record_durability_wait_failure() -> None:
    """A durability wait of the consumer timed out short of what it waits for, or failed."""
    metrics.DURABILITY_WAIT_FAILURES.inc()


def set_state_missing(reason: str | None) -> None:
    """Why readiness fails while the consumer recreates vanished state (None: it does
    not)."""
    _state_missing[0] = reason


def state_missing() -> str | None:
    """Why vanished state is not recreated and working yet, or None."""
    return _state_missing[0]


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
                _child(metrics.ASSIGNMENTS, tenant, e.group, str(e.tier), e.via).inc()
            case Released():
                _child(metrics.CLOSED, tenant, _reason(e.reason)).inc()
            case Abandoned():
                _child(metrics.CLOSED, tenant, "closed").inc()
            case Transferred():
                _child(metrics.TRANSFERS, tenant, e.from_group, e.reason or "request").inc()
            case Alert():
                _child(metrics.ALERTS, tenant, e.group, e.kind).inc()
            case Preclosed():
                _child(metrics.PRECLOSED, tenant).inc()
            case Reactivated():
                outcome = "over_capacity" if e.over_capacity else "within_capacity"
                _child(metrics.REACTIVATED, tenant, outcome).inc()
            case _:
                _observe_ticket(tenant, e)
        _child(metrics.EVENTS, tenant, "closed" if tag in ("released", "abandoned") else tag).inc()


def _observe_ticket(tenant: str, e: object) -> None:
    match e:
        case TicketCreated():
            _child(metrics.TICKETS_CREATED, tenant, e.group, e.type).inc()
        case TicketAssigned():
            _ticket_assigned(tenant, e.group, e.via, e.reason)
        case TicketForwarded():
            _child(metrics.TICKETS_FORWARDED, tenant, e.from_group, e.to_group).inc()
        case TicketLoop():
            _child(metrics.TICKET_LOOPS, tenant, e.group).inc()
        case TicketOverdue():
            _child(metrics.TICKETS_OVERDUE, tenant, e.group, _fold(e.kind, OVERDUE_KINDS)).inc()
        case TicketResponded(first_response_ms=int(ms)):
            metrics.TICKET_FIRST_RESPONSE.observe((tenant, e.group), ms / 1000)
        case TicketClosed():
            metrics.TICKET_RESOLUTION.observe((tenant, e.group), e.resolution_ms / 1000)


# --------------------------------------------------------------- series initialisation


def init_tenant(tenant: str) -> None:
    """Create the tenant's alerting counters at 0, so ``increase()`` sees their first
    increment."""
    for code in sorted(_CODES):
        _child(metrics.DEAD_LETTERS, tenant, code)
    for kind in sorted(protocol.COMMAND_TYPES):
        for outcome in OUTCOMES:
            _child(metrics.COMMANDS, tenant, kind, outcome)
    _child(metrics.PRECLOSED, tenant)
    for outcome in ("within_capacity", "over_capacity"):
        _child(metrics.REACTIVATED, tenant, outcome)
    _child(metrics.COMMAND_LATENCY, tenant)


def init_group(tenant: str, group: str) -> None:
    """Create the group's service-level, alert and ticket counters at 0."""
    for outcome in WITHIN:
        _child(metrics.ANSWERED, tenant, group, outcome)
        _child(metrics.ABANDONED, tenant, group, outcome)
    for kind in ALERT_KINDS:
        _child(metrics.ALERTS, tenant, group, kind)
    for kind in TRANSFER_KINDS:
        _child(metrics.TRANSFERS, tenant, group, kind)
    _child(metrics.QUEUE_WAIT, tenant, group)
    _child(metrics.FIRST_RESPONSE, tenant, group)
    _child(metrics.TICKETS_REASSIGNED, tenant, group)
    _child(metrics.TICKET_LOOPS, tenant, group)
    for kind in OVERDUE_KINDS:
        _child(metrics.TICKETS_OVERDUE, tenant, group, kind)
    _child(metrics.TICKET_RESOLUTION, tenant, group)
    _child(metrics.TICKET_FIRST_RESPONSE, tenant, group)
