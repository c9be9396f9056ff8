"""The metrics sampler: reads queue, agent and stream state from Redis every few seconds.

A scrape of ``/metrics`` never touches Redis (``collect()`` is synchronous): this loop
builds a :data:`~dispatchd.metrics.Snapshot` and hands it to
:data:`~dispatchd.metrics.SNAPSHOT`. Per tenant it costs two pipelined round trips, and
O(groups) Redis work, whatever the number of agents or queued customers:

1. the tenant's groups, its agent counters (``{t}:ast``: agents by status, load and
   capacity of the online ones, pre-closed sessions; kept exact by the scripts, see
   ``lua/lib/00_core.lua``), its consumer group (``XINFO GROUPS``), the length and oldest
   entry of ``{t}:in``, the length of ``{t}:dead``, its open tickets per group (one hash)
   and how many are overdue;
2. per group: the queue's size and its first :data:`HEAD_SCAN` members (oldest real and
   virtual wait), the group's service-level settings, its members' counters
   (``{t}:g:<group>:ast``) and how many of its tickets wait for a handler.

A tenant whose counters were never built (data written by an older version) gets them
built once (``recount_agents``, O(agents)) on its first sample.

Every replica samples every tenant it serves, so the gauges exist even while the holder
of a tenant is down; dashboards aggregate them with ``max by (tenant, group)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatchd import keys, metrics, observe
from dispatchd.consumer import GROUP, wall_clock_ms
from dispatchd.engine import Engine
from dispatchd.messages import RecountAgents

log = logging.getLogger("dispatchd.sampler")

#: Queue members read per group to find the longest real wait (exact below this size).
HEAD_SCAN = 256
#: Agent status -> its field in the counter hashes (lua/lib/00_core.lua).
STATUS_FIELDS = {"online": "on", "away": "aw", "offline": "off"}
#: Defaults of a group configured before these settings existed (lua/configure_group.lua).
DEFAULT_SL_MS, DEFAULT_SL_TARGET = 20_000, 0.8

_msgpack = msgspec.msgpack.Decoder()


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


class Sampler:
    """Samples every served tenant each ``interval_s`` seconds (a daemon loop: ``run``).

    Args:
        redis: the daemon's client (``decode_responses=False``).
        tenants: the tenants served from the start; members of ``dispatchd:tenants``
            are added.
        interval_s: seconds between passes.
        clock: the time waits are measured against (ms; the daemon's clock).
    """

    def __init__(self, redis: aioredis.Redis, tenants: Iterable[str], interval_s: float,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.redis = redis
        self.engine = Engine(redis)
        self.clock = clock
        self.tenants = tuple(t for t in tenants if keys.ID_RE.match(t))
        self.interval_s = interval_s
        self._known: set[tuple[str, str]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set."""
        while not stop.is_set():
            await self.sample_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def sample_once(self) -> bool:
        """One pass over every tenant; the snapshot is replaced only if it succeeds."""
        started = time.perf_counter()
        try:
            snapshot = await self.sample()
        except RedisError as exc:
            metrics.SAMPLER_RUNS.labels("error").inc()
            log.warning("sampler pass failed", extra={"fields": {"error": str(exc)}})
            return False
        metrics.SNAPSHOT.update(snapshot)
        metrics.SAMPLER_RUNS.labels("ok").inc()
        metrics.SAMPLER_DURATION.set(time.perf_counter() - started)
        metrics.SAMPLER_LAST.set(time.time())
        return True

    async def sample(self) -> dict[str, list[metrics.Sample]]:
        """Read every served tenant; the snapshot (sampled gauge name -> samples)."""
        snap: dict[str, list[metrics.Sample]] = defaultdict(list)
        members = cast(set[bytes], await self.redis.smembers(keys.TENANTS_KEY))
        names = sorted({*self.tenants, *(_s(m) for m in members)})
        for tenant in names:
            if keys.ID_RE.match(tenant):
                await self._tenant(tenant, snap)
        return dict(snap)

    async def sample_tenant(self, tenant: str) -> dict[str, list[metrics.Sample]]:
        """One tenant's samples (what a pass adds for it; the console's wallboard)."""
        snap: dict[str, list[metrics.Sample]] = defaultdict(list)
        await self._tenant(tenant, snap)
        return dict(snap)

    # -------------------------------------------------------------------------- tenant

    async def _tenant(self, tenant: str, snap: dict[str, list[metrics.Sample]]) -> None:
        if (tenant, "") not in self._known:
            self._known.add((tenant, ""))
            observe.init_tenant(tenant)
        inbound = keys.key("inbound", tenant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(keys.key("groups", tenant))
        pipe.hgetall(keys.key("agent_totals", tenant))
        pipe.xinfo_groups(inbound)  # fails until the consumer made the group: no lag yet
        pipe.xlen(inbound)
        pipe.xrange(inbound, count=1)
        pipe.xlen(keys.key("dead", tenant))
        pipe.hgetall(keys.key("tickets_open", tenant))
        pipe.zcard(keys.key("tickets_overdue", tenant))
        groups_raw, totals, info, length, oldest, dead, open_raw, overdue = (
            await pipe.execute(raise_on_error=False))
        for reply in (groups_raw, totals, length, oldest, dead, open_raw, overdue):
            if isinstance(reply, Exception):
                raise reply
        if not isinstance(totals, dict) or b"v" not in totals:
            # counters never built for this tenant (its data predates them): once, O(agents)
            await self.engine.apply(tenant, self.clock(), RecountAgents())
            totals = await self.redis.hgetall(keys.key("agent_totals", tenant))
        now_ms = float(self.clock())
        t = (tenant,)
        # stream ids carry the server's wall clock, whatever the daemon's clock is
        self._streams(t, info, length, oldest, time.time() * 1000, snap)
        snap["dead_letter_stream_length"].append((t, float(_int(dead))))
        snap["tickets_overdue_now"].append((t, float(_int(overdue))))
        self._agent_totals(t, _counts(totals), snap)
        open_tickets = {_s(g): _int(n) for g, n in (open_raw or {}).items()}
        await self._groups(tenant, sorted(_s(g) for g in _set(groups_raw)), open_tickets,
                           now_ms, snap)

    @staticmethod
    def _streams(t: tuple[str], info: Any, length: Any, oldest: Any, now_ms: float,
                 snap: dict[str, list[metrics.Sample]]) -> None:
        pending, lag = 0, _int(length)
        if isinstance(info, list):
            for group in info:
                if _s(group.get("name", b"")) == GROUP:
                    pending = _int(group.get("pending"))
                    # acknowledged entries are deleted, so the stream holds only what is
                    # pending or not yet read: the fallback when the server has no lag
                    lag = _int(group.get("lag"), max(_int(length) - pending, 0))
        age = 0.0
        if isinstance(oldest, list) and oldest:
            entry_id = _s(oldest[0][0])
            age = max(now_ms - int(entry_id.partition("-")[0]), 0.0) / 1000
        snap["stream_lag_entries"].append((t, float(lag)))
        snap["stream_pending_entries"].append((t, float(pending)))
        snap["stream_oldest_entry_age_seconds"].append((t, age))

    # -------------------------------------------------------------------------- agents

    @staticmethod
    def _agent_totals(t: tuple[str], c: dict[str, int],
                      snap: dict[str, list[metrics.Sample]]) -> None:
        for status, field in STATUS_FIELDS.items():
            snap["agents"].append(((*t, status), float(c.get(field, 0))))
        snap["agent_load_sessions"].append((t, float(c.get("ld", 0))))
        snap["agent_capacity_sessions"].append((t, float(c.get("cp", 0))))
        snap["agent_preclosed_sessions"].append((t, float(c.get("pc", 0))))

    # -------------------------------------------------------------------------- groups

    async def _groups(self, tenant: str, groups: list[str], open_tickets: dict[str, int],
                      now_ms: float,
                      snap: dict[str, list[metrics.Sample]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            pipe.zcard(keys.key("queue", tenant, g))
            pipe.zrange(keys.key("queue", tenant, g), 0, HEAD_SCAN - 1, withscores=True)
            pipe.hget(keys.key("group", tenant, g), "timers")
            pipe.hgetall(keys.key("group_agents", tenant, g))
            pipe.zcard(keys.key("ticket_queue", tenant, g))
        rows = await pipe.execute()
        for i, g in enumerate(groups):
            if (tenant, g) not in self._known:
                self._known.add((tenant, g))
                observe.init_group(tenant, g)
            depth, head, timers, counts, waiting = rows[5 * i : 5 * i + 5]
            tg = (tenant, g)
            self._queue(tg, _int(depth), head, now_ms, snap)
            self._settings(tg, timers, snap)
            self._members(tg, _counts(counts), snap)
            snap["open_tickets"].append((tg, float(open_tickets.get(g, 0))))
            snap["waiting_tickets"].append((tg, float(_int(waiting))))

    @staticmethod
    def _queue(tg: tuple[str, str], depth: int, head: list[tuple[bytes, float]],
               now_ms: float, snap: dict[str, list[metrics.Sample]]) -> None:
        oldest = virtual = 0.0
        if head:
            virtual = max(now_ms - head[0][1], 0.0) / 1000
            # a member starts with the customer's 15-digit arrival ms (lua/lib/00_core.lua)
            arrival = min(_int(m[:15], int(now_ms)) for m, _ in head)
            oldest = max(now_ms - arrival, 0.0) / 1000
        snap["queued_sessions"].append((tg, float(depth)))
        snap["queue_oldest_wait_seconds"].append((tg, oldest))
        snap["queue_oldest_virtual_wait_seconds"].append((tg, virtual))

    @staticmethod
    def _settings(tg: tuple[str, str], timers: bytes | None,
                  snap: dict[str, list[metrics.Sample]]) -> None:
        conf: dict[str, Any] = {}
        if timers:
            with contextlib.suppress(msgspec.DecodeError):
                decoded = _msgpack.decode(timers)
                conf = decoded if isinstance(decoded, dict) else {}
        snap["group_service_level_threshold_seconds"].append(
            (tg, float(conf.get("slms", DEFAULT_SL_MS)) / 1000))
        snap["group_service_level_target_ratio"].append(
            (tg, float(conf.get("slt", DEFAULT_SL_TARGET))))
        snap["group_queue_warning_seconds"].append((tg, float(conf.get("qwarn") or 0) / 1000))

    @staticmethod
    def _members(tg: tuple[str, str], c: dict[str, int],
                 snap: dict[str, list[metrics.Sample]]) -> None:
        for status, field in STATUS_FIELDS.items():
            snap["group_agents"].append(((*tg, status), float(c.get(field, 0))))
        cap = c.get("cp", 0)
        snap["group_occupancy_ratio"].append((tg, c.get("ld", 0) / cap if cap > 0 else 0.0))


def _counts(raw: Any) -> dict[str, int]:
    """An agent counter hash ({t}:ast or {t}:g:<group>:ast) as field -> count."""
    if not isinstance(raw, dict):
        return {}
    return {_s(k): _int(v) for k, v in raw.items()}


def _set(raw: Any) -> set[bytes]:
    return raw if isinstance(raw, set) else set()
