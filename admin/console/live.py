"""The wallboard's live feed: one reader per tenant per process, shared by every open
wallboard of that tenant.

It follows the tenant's outbound stream ``{T}:out`` (what gateways read) with
``XREAD BLOCK``: every event wakes the wallboards, which then read the tenant's gauges
the way the metrics sampler does (:meth:`dispatchd.sampler.Sampler.sample_tenant`: two
pipelined round trips, O(groups), whatever the number of agents or customers) plus one
``ZCARD`` per group (agents with free capacity). From the events themselves it keeps,
for the last 30 minutes: answered sessions (a session's first ``assigned``) with their
wait, abandoned ones (``closed`` while queued, never answered), overflow in progress
(``tier_opened`` of a session not yet assigned or closed) and the latest timer alerts
(``alert``, ``ticket_overdue``). On its first use it reads back the last 30 minutes of
the stream (at most :data:`BACKFILL_MAX` entries), so every replica shows the same
figures whichever one consumes the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import msgspec

from dispatchd import keys, protocol
from dispatchd.sampler import Sampler

log = logging.getLogger("dispatchd.admin")

WINDOW_MS = 30 * 60 * 1000
#: At most this many events of the last 30 minutes are read back on a feed's start.
BACKFILL_MAX = 200_000
#: A wallboard refreshes at least this often (waits grow without events), seconds.
IDLE_REFRESH_S = 2.0
#: ... and at most this often, however many events arrive.
MIN_REFRESH_S = 0.2
#: A feed nobody watches stops after this many seconds.
IDLE_STOP_S = 60.0
ALERT_KINDS = ("alert", "ticket_overdue")


class Feed:
    """One tenant's outbound stream, followed while some wallboard watches it."""

    def __init__(self, redis: Any, tenant: str) -> None:
        self.redis = redis
        self.tenant = tenant
        self.stream = keys.key("outbound", tenant)
        self.sampler = Sampler(redis, [], 1.0)
        #: (group, ts, wait_ms) of answered sessions; (group, ts) of abandoned ones
        self.answered: deque[tuple[str, int, int]] = deque()
        self.abandoned: deque[tuple[str, int]] = deque()
        self.seen: dict[str, int] = {}  # session -> ms answered (within the window)
        self.overflow: dict[str, dict[str, Any]] = {}  # session -> tier_opened event
        self.alerts: deque[dict[str, Any]] = deque(maxlen=20)
        self.version = 0
        self.changed = asyncio.Event()
        self.watchers = 0
        self.last_watch = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # ----------------------------------------------------------------------- events

    def apply(self, event: dict[str, Any]) -> None:
        kind, session = event.get("type"), event.get("session")
        ts = int(event.get("ts") or 0)
        if kind == "assigned" and isinstance(session, str):
            if session not in self.seen:
                self.seen[session] = ts
                self.answered.append((str(event.get("group")), ts, int(event.get("wait_ms")
                                                                       or 0)))
            self.overflow.pop(session, None)
        elif kind == "closed" and isinstance(session, str):
            if "wait_ms" in event and session not in self.seen:
                self.abandoned.append((str(event.get("group")), ts))
            self.overflow.pop(session, None)
        elif kind == "tier_opened" and isinstance(session, str):
            self.overflow[session] = event
        elif kind in ALERT_KINDS:
            self.alerts.appendleft(event)

    def trim(self, now_ms: int) -> None:
        start = now_ms - WINDOW_MS
        while self.answered and self.answered[0][1] < start:
            self.answered.popleft()
        while self.abandoned and self.abandoned[0][1] < start:
            self.abandoned.popleft()
        if len(self.seen) > 2 * (len(self.answered) + 1000):
            self.seen = {s: t for s, t in self.seen.items() if t >= start}
        for session in [s for s, e in self.overflow.items() if int(e.get("ts") or 0) < start]:
            del self.overflow[session]

    def window(self, thresholds: dict[str, float]) -> dict[str, dict[str, float | None]]:
        """Per group, over the last 30 minutes: answered, within the group's threshold
        (``thresholds``: seconds), ASA (s), abandoned, service level and abandonment."""
        out: dict[str, dict[str, Any]] = {}
        for group, _, wait in self.answered:
            g = out.setdefault(group, {"answered": 0, "within": 0, "wait": 0, "abandoned": 0})
            g["answered"] += 1
            g["wait"] += wait
            if wait <= thresholds.get(group, 20.0) * 1000:
                g["within"] += 1
        for group, _ in self.abandoned:
            g = out.setdefault(group, {"answered": 0, "within": 0, "wait": 0, "abandoned": 0})
            g["abandoned"] += 1
        for g in out.values():
            offered = g["answered"] + g["abandoned"]
            g["asa_s"] = g["wait"] / g["answered"] / 1000 if g["answered"] else None
            g["service_level"] = g["within"] / offered if offered else None
            g["abandonment"] = g["abandoned"] / offered if offered else None
        return out

    # ------------------------------------------------------------------------ reading

    async def run(self) -> None:
        try:
            last = await self._backfill()
        finally:
            self.ready.set()
        while True:
            if self.watchers == 0 and time.monotonic() - self.last_watch > IDLE_STOP_S:
                return
            try:
                rows = await self.redis.xread({self.stream: last}, count=1000, block=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the wallboard shows what it has
                log.warning("console feed: reading the outbound stream failed",
                            extra={"fields": {"tenant": self.tenant, "error": str(exc)}})
                await asyncio.sleep(1)
                continue
            for _, entries in rows or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._one(fields)
                self.trim(int(time.time() * 1000))
                self.notify()

    async def _backfill(self) -> bytes | str:
        start = f"{int(time.time() * 1000) - WINDOW_MS}-0"
        last: bytes | str = "$"
        read = 0
        try:
            while read < BACKFILL_MAX:
                rows = await self.redis.xrange(self.stream, min=start, count=2000)
                if not rows:
                    break
                for _, fields in rows:
                    self._one(fields)
                last = rows[-1][0]
                read += len(rows)
                start = "(" + (last.decode() if isinstance(last, bytes) else last)
                if len(rows) < 2000:
                    break
        except Exception as exc:
            log.warning("console feed: reading back the outbound stream failed",
                        extra={"fields": {"tenant": self.tenant, "error": str(exc)}})
        if last == "$":
            # nothing in the window: follow from the newest entry
            newest = await self.redis.xrevrange(self.stream, count=1)
            last = newest[0][0] if newest else "0-0"
        return last

    def _one(self, fields: dict[Any, Any]) -> None:
        try:
            event = protocol.decode_event({k if isinstance(k, bytes) else k.encode(): v
                                           for k, v in fields.items()})
        except (msgspec.DecodeError, ValueError, KeyError, TypeError):
            return
        if isinstance(event, dict):
            self.apply(event)

    def notify(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


class Hub:
    """The feeds of this process, by tenant."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.feeds: dict[str, Feed] = {}

    async def watch(self, tenant: str) -> Feed:
        feed = self.feeds.get(tenant)
        if feed is None or feed.task is None or feed.task.done():
            feed = Feed(self.redis, tenant)
            self.feeds[tenant] = feed
            feed.task = asyncio.get_running_loop().create_task(feed.run())
        feed.watchers += 1
        feed.last_watch = time.monotonic()
        await feed.ready.wait()
        return feed

    def unwatch(self, feed: Feed) -> None:
        feed.watchers -= 1
        feed.last_watch = time.monotonic()

    async def aclose(self) -> None:
        for feed in self.feeds.values():
            if feed.task is not None:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.task


async def snapshot(feed: Feed) -> dict[str, Any]:
    """What a wallboard shows now: per group the gauges and the 30-minute window, the
    tenant's agents, overflow in progress and the latest alerts."""
    samples = await feed.sampler.sample_tenant(feed.tenant)
    by: dict[str, dict[tuple[str, ...], float]] = {
        name: {labels[1:]: value for labels, value in rows} for name, rows in samples.items()}
    groups = sorted({labels[0] for labels in by.get("queued_sessions", {})})
    pipe = feed.redis.pipeline(transaction=False)
    for g in groups:
        pipe.zcard(keys.key("ready", feed.tenant, g))
    free = dict(zip(groups, await pipe.execute(), strict=True)) if groups else {}
    thresholds = {g: by.get("group_service_level_threshold_seconds", {}).get((g,), 20.0)
                  for g in groups}
    feed.trim(int(time.time() * 1000))
    window = feed.window(thresholds)
    rows = []
    for g in groups:
        online = int(by.get("group_agents", {}).get((g, "online"), 0))
        w = window.get(g, {})
        rows.append({
            "group": g,
            "waiting": int(by.get("queued_sessions", {}).get((g,), 0)),
            "oldest_wait_s": by.get("queue_oldest_wait_seconds", {}).get((g,), 0.0),
            "service_level": w.get("service_level"),
            "target": by.get("group_service_level_target_ratio", {}).get((g,), 0.8),
            "threshold_s": thresholds[g],
            "asa_s": w.get("asa_s"),
            "abandonment": w.get("abandonment"),
            "answered": int(w.get("answered") or 0),
            "abandoned": int(w.get("abandoned") or 0),
            "online": online,
            "away": int(by.get("group_agents", {}).get((g, "away"), 0)),
            "busy": max(online - int(free.get(g, 0)), 0),
            "occupancy": by.get("group_occupancy_ratio", {}).get((g,), 0.0),
        })
    agents = {status: int(by.get("agents", {}).get((status,), 0))
              for status in ("online", "away", "offline")}
    return {"groups": rows, "agents": agents,
            "overflow": sorted(feed.overflow.values(), key=lambda e: int(e.get("ts") or 0)),
            "alerts": list(feed.alerts), "now_ms": int(time.time() * 1000)}
