"""The daemon's Prometheus metrics: one explicit registry, every metric defined here.

docs/metrics.md lists each metric with its type, unit, labels, meaning and source; a test
keeps the two in step. Conventions: counters end in ``_total``, durations in ``_seconds``,
ratios in ``_ratio``; labels take values from closed sets only (tenant, group, outcome,
kind, tier, via, reason, status, code, script, and a ticket's type), never session,
ticket or agent ids.

Three kinds of source feed it:

* counters and histograms from the ``gateway_batch`` results and from the events of
  commands applied through the engine (the admin API) (:mod:`dispatchd.observe`),
  updated as they are applied;
* gauges that describe Redis state (queues, agents, tickets, streams) from the sampler
  (:mod:`dispatchd.sampler`): it writes a :class:`Snapshot` every few seconds and
  :class:`SnapshotCollector` serves the latest one, so a scrape never touches Redis;
* process and build information (the standard ``process_*`` metrics of
  prometheus_client's process collector: CPU, memory, open files, start time).

Counters export no ``*_created`` series (``disable_created_metrics``: one more series per
counter and histogram child that no query here uses).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import version as package_version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

PREFIX = "dispatchd_"

#: Seconds: customer waits and first responses (service-level thresholds are often 20 s).
WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800,
                3600)
#: Seconds: from a command's append to ``{t}:in`` to its events on ``{t}:out``.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30)
#: Seconds: one consumer round trip (its gateway_batch calls and the read after them).
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
#: Commands in one gateway_batch call.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Seconds: back-office tickets, from creation to first response or resolution: a minute
#: to four weeks (1, 5, 15, 30 min; 1, 2, 4, 8, 16 h; 1, 2, 3, 5 days; 1, 2, 4 weeks).
TICKET_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800,
                  259200, 432000, 604800, 1209600, 2419200)

# one series less per counter and histogram child: no dashboard or alert reads them
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)


class FastHistogram(Collector):
    """A labelled histogram cheap enough for every command (about 0.5 us an observation).

    prometheus_client's Histogram takes locks and builds a label child per call (2-5 us);
    here a series is a plain list, ``[count per bucket..., count above the last, sum]``,
    updated from the event loop's thread, the thread that serves the scrapes too.
    """

    def __init__(self, name: str, doc: str, labelnames: Iterable[str],
                 buckets: Iterable[float]) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}
        REGISTRY.register(self)

    def labels(self, *values: str) -> list[float]:
        """The series of ``values`` (created empty on first use)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = [0.0] * (len(self.bounds) + 2)
        return series

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        series = self.labels(*values)
        series[bisect_left(self.bounds, amount)] += 1
        series[-1] += amount

    def observe_many(self, values: tuple[str, ...], amounts: Iterable[float]) -> None:
        series, bounds, total = self.labels(*values), self.bounds, 0.0
        for amount in amounts:
            series[bisect_left(bounds, amount)] += 1
            total += amount
        series[-1] += total

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        for values, series in list(self._series.items()):
            counts, cumulative, buckets = list(series), 0.0, []
            for bound, n in zip(self.bounds, counts, strict=False):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            buckets.append(("+Inf", cumulative + counts[len(self.bounds)]))
            family.add_metric(list(values), buckets, counts[-1])
        yield family


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
    return Counter(PREFIX + name, doc, list(labels), registry=REGISTRY)


def _histogram(
    name: str, doc: str, labels: Iterable[str], buckets: tuple[float, ...]
) -> FastHistogram:
    return FastHistogram(PREFIX + name, doc, labels, buckets)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    return Gauge(PREFIX + name, doc, list(labels), registry=REGISTRY)


# ------------------------------------------------------------- from the gateway batches

COMMANDS = _counter(
    "commands", "Gateway commands by type and outcome (applied, duplicate, refused).",
    ("tenant", "kind", "outcome"))
EVENTS = _counter("events", "Events appended to the outbound stream, by type.",
                  ("tenant", "kind"))
COMMAND_LATENCY = _histogram(
    "command_latency_seconds",
    "From a command's append to the inbound stream to the end of the call that applied it"
    " (its events on the outbound stream), on the server's clock.",
    ("tenant",), LATENCY_BUCKETS)
ASSIGNMENTS = _counter(
    "assignments",
    "Sessions given to an agent, by group, tier (0 own group, n overflow tier n) and via.",
    ("tenant", "group", "tier", "via"))
ANSWERED = _counter(
    "answered",
    "Sessions answered (first assignment), by whether the wait was within the group's "
    "service-level threshold (outcome within_threshold or over_threshold).",
    ("tenant", "group", "outcome"))
ABANDONED = _counter(
    "abandoned",
    "Sessions that left the queue never answered, by whether they had waited within the "
    "group's service-level threshold (outcome within_threshold or over_threshold).",
    ("tenant", "group", "outcome"))
QUEUE_WAIT = _histogram(
    "queue_wait_seconds", "Time to answer: arrival to first assignment (ASA is its mean).",
    ("tenant", "group"), WAIT_BUCKETS)
FIRST_RESPONSE = _histogram(
    "first_response_seconds", "From the assignment to the agent's first reply.",
    ("tenant", "group"), WAIT_BUCKETS)
CLOSED = _counter("sessions_closed", "Sessions closed, by reason (outcome).",
                  ("tenant", "outcome"))
ALERTS = _counter(
    "alerts", "Timer alerts (queue_wait, reply_sla, customer_silence) by group.",
    ("tenant", "group", "kind"))
TRANSFERS = _counter(
    "transfers",
    "Session transfers by the group they left and kind (request, handover, reply_timeout).",
    ("tenant", "group", "kind"))
PRECLOSED = _counter("preclosed", "Sessions pre-closed (customer silent).", ("tenant",))
REACTIVATED = _counter(
    "reactivated",
    "Pre-closed sessions reactivated with their agent (outcome within_capacity or "
    "over_capacity).", ("tenant", "outcome"))
DEAD_LETTERS = _counter("dead_letters",
                        "Commands refused and copied to the dead-letter stream, by error code.",
                        ("tenant", "code"))
ROUND_TRIP = _histogram(
    "consumer_round_trip_seconds",
    "One consumer round trip: the pipeline of its dispatchd_gateway calls (one per tenant "
    "with work) and the XREADGROUP after them, which may block up to block_ms; sent to "
    "reply read, on the daemon's clock.",
    (), CALL_BUCKETS)
BATCH_SIZE = _histogram("batch_commands", "Gateway commands applied in one gateway_batch call.",
                        (), BATCH_BUCKETS)
TENANT_HELD = _gauge("tenant_held", "1 while this replica holds the tenant's lease, else 0.",
                     ("tenant",))
TENANTS_HELD = _gauge("tenants_held", "Tenants whose lease this replica holds.")
LEASE_MOVES = _counter(
    "lease_moves",
    "Tenant leases this replica took or let go, by reason: taken, released_rebalance (a "
    "joining replica owns it now), released_stop (clean stop), lost (another replica holds "
    "it: this one stalled past its lease).",
    ("reason",))
for _reason in ("taken", "released_rebalance", "released_stop", "lost"):
    LEASE_MOVES.labels(_reason)
REPLICAS_LIVE = _gauge(
    "replicas_live",
    "Daemon replicas this replica saw alive (itself included) at its latest heartbeat; 0 "
    "with heartbeat_ms 0 (no membership).")
CONSUMER_STEP = _gauge(
    "consumer_last_step_timestamp_seconds",
    "Unix time of the gateway consumer's latest loop iteration (readiness uses it).")
STATE_LOST = _counter(
    "state_lost",
    "Server state the gateway consumer found gone and recreated (a FLUSHALL, a server "
    "restarted without its data), by what: consumer_group (per tenant), library.",
    ("what",))
for _what in ("consumer_group", "library"):
    STATE_LOST.labels(_what)
DURABILITY_WAIT_FAILURES = _counter(
    "durability_wait_failures",
    "Durability waits (WAIT / WAITAOF after a round trip's script calls, setting "
    "durability) that timed out short of a replica (or of the AOF fsync) or failed.")
BUILD_INFO = _gauge("build_info", "Always 1; the version of the running daemon.", ("version",))
BUILD_INFO.labels(package_version("dispatchd")).set(1)

# ------------------------------------------------- tickets (gateway batches and admin API)

TICKETS_CREATED = _counter("tickets_created", "Tickets created, by group and ticket type.",
                           ("tenant", "group", "type"))
TICKETS_ASSIGNED = _counter(
    "tickets_assigned",
    "Tickets given to a handler, by group, via (owner, order_history, balanced, manual) and "
    "reason (created, forwarded, queue, shift_start, untouched, manual).",
    ("tenant", "group", "via", "reason"))
TICKETS_REASSIGNED = _counter(
    "tickets_reassigned",
    "Tickets taken from a handler who had not touched them (also in tickets_assigned with "
    "reason untouched).", ("tenant", "group"))
TICKETS_FORWARDED = _counter("tickets_forwarded", "Tickets forwarded from a group to another.",
                             ("tenant", "from_group", "to_group"))
TICKET_LOOPS = _counter(
    "ticket_loops", "Forwards into a group the ticket had already been in, by that group.",
    ("tenant", "group"))
TICKETS_OVERDUE = _counter(
    "tickets_overdue",
    "Tickets that went past an SLA target, by their group then and kind (first_response, "
    "resolution).", ("tenant", "group", "kind"))
TICKET_RESOLUTION = _histogram(
    "ticket_resolution_seconds",
    "From a ticket's creation to its close, across every hop, by the group that closed it.",
    ("tenant", "group"), TICKET_BUCKETS)
TICKET_FIRST_RESPONSE = _histogram(
    "ticket_first_response_seconds",
    "From a ticket's creation to its first response, across every hop, by the group it was "
    "in then.", ("tenant", "group"), TICKET_BUCKETS)

# ------------------------------------------------------------------------ the sampler

SAMPLER_RUNS = _counter("sampler_runs", "Sampler passes, by outcome (ok, error).",
                        ("outcome",))
SAMPLER_DURATION = _gauge("sampler_duration_seconds", "How long the latest sampler pass took.")
SAMPLER_LAST = _gauge("sampler_last_success_timestamp_seconds",
                      "Unix time of the latest successful sampler pass.")

#: Sampled gauges: name -> (help, label names). Served by :class:`SnapshotCollector`.
SAMPLED: dict[str, tuple[str, tuple[str, ...]]] = {
    "queued_sessions": ("Customers waiting in the group's queue.", ("tenant", "group")),
    "queue_oldest_wait_seconds": (
        "Longest real wait of the customers in the group's queue (among the first 256 in "
        "service order).", ("tenant", "group")),
    "queue_oldest_virtual_wait_seconds": (
        "Virtual wait (real wait + priority x unit) of the customer served next.",
        ("tenant", "group")),
    "agents": ("Agents by status (online, away, offline).", ("tenant", "status")),
    "group_agents": ("Members of the group by status.", ("tenant", "group", "status")),
    "agent_load_sessions": ("Sessions assigned to online agents.", ("tenant",)),
    "agent_capacity_sessions": ("Capacity of online agents.", ("tenant",)),
    "agent_preclosed_sessions": ("Pre-closed sessions held by agents.", ("tenant",)),
    "group_occupancy_ratio": (
        "Load / capacity of the group's online members (0 when none is online).",
        ("tenant", "group")),
    "group_service_level_threshold_seconds": (
        "The group's service-level threshold: answered within it counts as in service level.",
        ("tenant", "group")),
    "group_service_level_target_ratio": (
        "The group's service-level target (share answered within the threshold).",
        ("tenant", "group")),
    "group_queue_warning_seconds": (
        "The group's queue-wait warning (0: off).", ("tenant", "group")),
    "stream_lag_entries": (
        "Inbound commands not yet read by the consumer group.", ("tenant",)),
    "stream_pending_entries": (
        "Inbound commands read but not yet applied (pending in the consumer group).",
        ("tenant",)),
    "stream_oldest_entry_age_seconds": (
        "Age of the oldest inbound command not yet applied (0 when none).", ("tenant",)),
    "dead_letter_stream_length": (
        "Entries in the tenant's dead-letter stream now (XLEN of {t}:dead, trimmed to "
        "about 100,000).", ("tenant",)),
    "open_tickets": ("Open tickets in the group (held, queued, assigned or in progress).",
                     ("tenant", "group")),
    "waiting_tickets": ("Tickets of the group waiting for a handler (held or queued).",
                        ("tenant", "group")),
    "tickets_overdue_now": ("Open tickets past an SLA target they have not met, now.",
                            ("tenant",)),
}

#: One sampled value: its label values (in the order of SAMPLED) and the value.
Sample = tuple[tuple[str, ...], float]
#: The sampler's output: sampled gauge name -> its samples.
Snapshot = Mapping[str, list[Sample]]


class SnapshotCollector(Collector):
    """Serves the latest :data:`Snapshot`; ``collect`` never does I/O.

    A label set missing from the new snapshot (a deleted group, a tenant no longer served)
    disappears from the next scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot = {}

    def update(self, snapshot: Snapshot) -> None:
        """Replace the snapshot served (the sampler calls it after each pass)."""
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._snapshot
        for name, (doc, labels) in SAMPLED.items():
            family = GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))
            for values, value in snapshot.get(name, ()):
                family.add_metric(list(values), value)
            yield family


SNAPSHOT = SnapshotCollector()
REGISTRY.register(SNAPSHOT)
