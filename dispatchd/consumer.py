"""The gateway stream consumer: reads ``{tenant}:in``, applies batches, fires timers.

One replica holds a tenant at a time through a lease (``{tenant}:lease``) that every
``dispatchd_gateway`` call renews and checks atomically, so a tenant's commands are
applied in stream order even with several replicas on the consumer group, and a replica
that lost its lease (paused, partitioned) cannot apply a stale batch. Each loop iteration
is one pipelined round trip:

1. one ``dispatchd_gateway`` call (``FCALL``) per tenant that has entries in hand (read
   by the previous round trip), a timer tick due, a lease to renew, or a lease to try to
   take; a call fires what is due every ``tick_ms``, and what its commands made due at
   once;
2. then one ``XREADGROUP`` for every tenant this replica holds (up to ``batch_size``
   each, blocking ``block_ms`` at most: under load it returns at once). Redis runs a
   connection's commands in order, so the calls apply what was read before and the read
   takes what came after; the calls' replies wait for the read (their events are out
   already, and the server times the batch: the command latency metric uses that). A
   tick in a call without commands is skipped by the script while ``{T}:in`` holds
   entries: they were sent before it, and go first;
3. a tenant newly taken first gets every pending entry of the group (``XAUTOCLAIM``): the
   entries a dead or stalled replica read but never acknowledged. They are older than
   anything new, so they go first; command ids make a second application impossible.

On a clean stop the entries in hand are applied before the leases are let go, then the
replica's own consumer is removed from each group (when nothing is pending under it). The
consumers of replicas that are gone are pruned once they hold nothing pending and have
been idle ``consumer_idle_ms`` (when a tenant is taken, and every ``PRUNE_EVERY_S``).

State that vanishes from the server (a ``FLUSHALL``, a server restarted without its
data) is found on the error path of the round trip, never by an extra call per loop: a
``NOGROUP`` reply to the read makes the consumer recreate every served tenant's group
that is gone (from ``0``: the entries gateways sent since, the only ones left, are all
read, and an applied entry is deleted with its acknowledgement, so none can come twice;
entries read before the loss are applied but not deleted from the new stream, where
their ids may name newer commands: see ``flush`` in lua/lib/90_entry.lua) and register
the tenant again; a missing library is loaded again. Each loss is logged as
an error and counted (``dispatchd_state_lost_total``), and readiness fails
(:func:`dispatchd.observe.state_missing`) until a round trip after the recreation finds
nothing missing.

Time comes from ``clock`` (ms), so tests can drive the timers without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import msgspec
from redis.exceptions import RedisError, ResponseError

from dispatchd import keys, observe, protocol, scripts
from dispatchd.engine import Engine
from dispatchd.membership import Membership

log = logging.getLogger("dispatchd.consumer")

GROUP = "dispatchd"
#: How often (s) a replica prunes the idle consumers of the tenants it holds.
PRUNE_EVERY_S = 60.0
_pack = msgspec.msgpack.Encoder()


def _packable(cmd: dict[str, Any]) -> dict[str, Any]:
    """``cmd``, or its reject if it cannot be packed for the script (it must not sink the
    batch it is in)."""
    try:
        _pack.encode(cmd)
        return cmd
    except (OverflowError, TypeError, ValueError) as exc:
        why = f"cannot be passed on: {exc}"[:500]
        rejected = protocol.Rejected("E_INVALID", why, cmd.get("_id"))
        return protocol.reject_to_script(rejected, cmd["_e"])


class BatchResult(msgspec.Struct, frozen=True):
    held: bool
    holder: str | None = None
    applied: int = 0
    duplicates: int = 0
    failed: int = 0
    events: int = 0
    types: dict[str, int] = {}
    stats: observe.BatchStats | None = None
    #: the tick asked for was skipped (entries wait in {T}:in; they go first)
    skipped: bool = False
    #: server time (ms) the call was done, when it applied or fired anything
    done: int | None = None


_result = msgspec.msgpack.Decoder(BatchResult)


class _Round:
    """One round trip of the consumer's loop on its own connection: raw commands packed
    once, sent together, replies read in order. It has the two methods of a redis-py
    pipeline the loop uses (``fcall``, ``xreadgroup``) without its per-command machinery
    (pool checkout, retry wrapper, response callbacks), which cost the daemon more CPU
    than the batch at light load. A connection that failed or was cancelled mid-reply is
    dropped, never reused."""

    def __init__(self, wire: _Wire) -> None:
        self.wire = wire
        self.commands: list[tuple[Any, ...]] = []
        self.reads: set[int] = set()

    def fcall(self, function: str, numkeys: int, *args: Any) -> None:
        self.commands.append(("FCALL", function, numkeys, *args))

    def wait(self, durability: str, timeout_ms: int) -> None:
        """The durability wait (``WAIT 1`` or ``WAITAOF 1 0``) of what came before."""
        self.commands.append(("WAIT", 1, timeout_ms) if durability == "replica"
                             else ("WAITAOF", 1, 0, timeout_ms))

    def xreadgroup(self, group: str, consumer: str, streams: dict[Any, Any], *, count: int,
                   block: int) -> None:
        self.reads.add(len(self.commands))
        self.commands.append(("XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                              "BLOCK", block, "STREAMS", *streams.keys(), *streams.values()))

    async def execute(self, raise_on_error: bool = False) -> list[Any]:
        replies = await self.wire.roundtrip(self.commands)
        for i in self.reads:
            if not isinstance(replies[i], Exception):
                replies[i] = _stream_rows(replies[i])
        return replies


def _is_nogroup(reply: Any) -> bool:
    """Whether ``reply`` is the server saying a stream or its consumer group is gone."""
    return isinstance(reply, ResponseError) and str(reply).startswith("NOGROUP")


def _stream_rows(raw: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """A raw ``XREADGROUP`` reply (RESP2 list of pairs or RESP3 map; nil: nothing) as
    [(stream, [(entry id, fields)])]."""
    rows = []
    for stream, entries in (raw.items() if isinstance(raw, dict) else raw or []):
        rows.append((stream, [(eid, dict(zip(f[::2], f[1::2], strict=True)) if f else {})
                              for eid, f in entries]))
    return rows


class _Wire:
    """The consumer's own connection (made from its client's pool settings, not taken
    from the pool)."""

    def __init__(self, redis: Any) -> None:
        # a cluster client has no one pool: its shard loops have wires of their own
        # (dispatchd.cluster_consumer)
        self.pool: Any = getattr(redis, "connection_pool", None)
        self.conn: Any = None

    async def roundtrip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = self.conn
        if conn is None:
            conn = self.pool.make_connection()
            await conn.connect()
            self.conn = conn
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the connection is fine
                    replies.append(exc)
            return replies
        except BaseException:
            self.conn = None
            await self._drop(conn)
            raise

    @staticmethod
    async def _drop(conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await self._drop(conn)


class ConsumerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the consumer batches, holds tenants and fires timers (see dispatchd.settings)."""

    tenants: tuple[str, ...] = ("default",)
    batch_size: int = 500
    block_ms: int = 50
    tick_ms: int = 100
    timer_limit: int = 1000
    lease_ms: int = 5000
    dedupe_ms: int = 86_400_000
    out_maxlen: int = 1_000_000
    dead_maxlen: int = 100_000
    tenants_refresh_ms: int = 5000
    #: A consumer of another replica with nothing pending, idle this long, is removed.
    consumer_idle_ms: int = 60_000
    #: Also serve the tenants listed in dispatchd:tenants (and register ``tenants`` there).
    #: False: serve exactly ``tenants``.
    discover: bool = True
    #: How often this replica heartbeats in ``dispatchd:replicas``; it then asks only for
    #: the tenants it owns there (dispatchd.membership) and hands over the others. 0: no
    #: membership, every replica asks for every tenant and the first to ask holds it.
    heartbeat_ms: int = 0
    #: What a round trip waits for after its script calls, before its read (same
    #: round trip): "none", "replica" (WAIT 1) or "aof" (WAITAOF 1 0); see settings.
    durability: str = "none"
    durability_timeout_ms: int = 500


#: How often (s) at most a failing durability wait is logged (each one is counted).
DURABILITY_LOG_EVERY_S = 10.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Tenant:
    __slots__ = ("backlog", "held", "inbound", "last_call", "last_claim", "last_tick", "name",
                 "renew_at", "renewed_at", "root", "skipped")

    def __init__(self, name: str) -> None:
        self.name = name
        self.root, self.inbound = keys.root(name), keys.key("inbound", name)
        self.held = False
        self.renew_at = 0.0  # monotonic seconds
        self.renewed_at = 0.0
        self.last_claim = 0.0
        self.last_tick = 0
        self.last_call = 0.0
        self.backlog: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.skipped = False


class GatewayConsumer:
    """Consumes the gateway streams of the served tenants; run it as a daemon loop."""

    def __init__(
        self,
        engine: Engine,
        options: ConsumerOptions | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.opts = options or ConsumerOptions()
        self.clock = clock
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.token = self.name
        self.tenants: dict[str, _Tenant] = {}
        #: the loop's own connection
        self._wire = _Wire(engine.redis)
        #: durability waits that failed since the last warning, and when that was
        self._wait_failures = 0
        self._wait_logged = 0.0
        #: entries read by the latest round trip, applied by the next one
        self._reads: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        self._next_refresh = 0.0
        self._invalid: set[str] = set()
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        #: why readiness fails while vanished state is being recreated (None: nothing)
        self._missing: str | None = None
        self.batches = 0
        #: this replica's registration and view of the live replicas (None: off)
        self.members = (Membership(self.redis, self.name, self.opts.heartbeat_ms)
                        if self.opts.heartbeat_ms > 0 else None)

    # ------------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in hand and let go."""
        log.info("gateway consumer started", extra={"fields": {
            "consumer": self.name, "heartbeat_ms": self.opts.heartbeat_ms}})
        while not stop.is_set():
            try:
                await self.step()
                # redis-py can swallow a cancellation inside a pipeline and carry on: a
                # cancelled consumer must stop all the same
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
            except RedisError as exc:
                # redis-py may turn a cancellation that lands mid-command into a
                # connection error: being cancelled must still stop the loop
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                log.warning("consumer step failed; retrying", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(0.2)
        if self.members is not None:
            # the others own this replica's tenants from their next heartbeat
            await self.members.leave()
            observe.record_replicas(0)
        if any(self._reads.values()):
            # entries read by the last round trip: apply them before letting go
            with contextlib.suppress(RedisError):
                await self._apply(self._reads, read=False)
        await self.release()
        with contextlib.suppress(RedisError):
            await self.prune_consumers(list(self.tenants.values()), own=True)
        await self._wire.close()
        log.info("gateway consumer stopped", extra={"fields": {"batches": self.batches}})

    async def step(self) -> None:
        """One iteration, one round trip: apply what was read last time (and tick, renew
        leases), then read what the held tenants have next."""
        await self._refresh_tenants()
        if self.members is not None and self.members.due():
            if await self.members.beat():
                # the live set changed: ask at once for the tenants this replica owns now
                for t in self.tenants.values():
                    if not t.held:
                        t.renew_at = 0.0
            observe.record_replicas(len(self.members.live))
        await self._apply(self._reads)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            await self.prune_consumers([t for t in self.tenants.values() if t.held])

    async def release(self) -> None:
        """Give up every held lease at once so another replica can take over."""
        held = [t for t in self.tenants.values() if t.held]
        if not held:
            return
        pipe = self.redis.pipeline(transaction=False)
        for t in held:
            await self._call(pipe, t, [], lease_ms=1, tick=False)
        await pipe.execute(raise_on_error=False)
        for t in held:
            t.held = False
            observe.record_lease(t.name, False)
        observe.record_lease_move("released_stop", len(held))
        observe.record_tenants_held(0)
        log.info("tenants released", extra={"fields": {"tenants": len(held)}})

    async def prune_consumers(self, tenants: list[_Tenant], *, own: bool = False) -> None:
        """Remove the consumers of ``tenants``' groups that hold nothing pending: those
        idle ``consumer_idle_ms`` or more (replicas that are gone) and, with ``own``, this
        replica's (at its clean stop). One atomic call per tenant (``dispatchd_consumers``):
        a consumer with pending entries is never removed, so none is dropped."""
        if not tenants:
            return
        pipe = self.redis.pipeline(transaction=False)
        for t in tenants:
            pipe.fcall(scripts.CONSUMERS, 1, t.root, GROUP, self.name if own else "",
                       self.opts.consumer_idle_ms)
        replies = await pipe.execute(raise_on_error=False)
        for t, reply in zip(tenants, replies, strict=True):
            if isinstance(reply, Exception):
                log.warning("could not prune the consumers", extra={"fields": {
                    "tenant": t.name, "error": str(reply)}})
            elif reply:
                log.info("consumers removed", extra={"fields": {
                    "tenant": t.name, "consumers": [c.decode(errors="replace") for c in reply]}})

    # ------------------------------------------------------------------------- tenants

    async def _refresh_tenants(self) -> None:
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.opts.tenants_refresh_ms / 1000
        names = list(self.opts.tenants)
        if self.opts.discover:
            valid = [t for t in self.opts.tenants if keys.ID_RE.match(t)]
            if valid:
                await self.redis.sadd(keys.TENANTS_KEY, *valid)
            members = cast(set[bytes], await self.redis.smembers(keys.TENANTS_KEY))
            names = sorted(m.decode(errors="replace") for m in members)
        for name in names:
            if name in self.tenants:
                continue
            if not keys.ID_RE.match(name):
                if name not in self._invalid:
                    self._invalid.add(name)
                    log.warning(f"ignoring invalid tenant id in {keys.TENANTS_KEY}",
                                extra={"fields": {"tenant": name}})
                continue
            if name not in self.tenants:
                await self._create_group(name)
                self.tenants[name] = _Tenant(name)

    async def _create_group(self, tenant: str) -> None:
        try:
            stream = keys.key("inbound", tenant)
            await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ---------------------------------------------------------------------------- read

    def _queue_read(self, pipe: Any, handing: set[str]) -> bool:
        """Queue one ``XREADGROUP`` for the held tenants on ``pipe``, after the calls
        (blocking ``block_ms`` at most); True if one was queued.

        Only tenants whose lease was renewed within half its length are read, so a
        replica that stalled past its lease renews (and learns it lost it) before it
        reads anything that would then sit pending under its name; nor a tenant with
        claimed entries still to apply (they are older than anything new), nor one being
        handed over (``handing``)."""
        fresh = time.monotonic() - self.opts.lease_ms / 2000
        held = [t for t in self.tenants.values()
                if t.held and not t.backlog and t.renewed_at >= fresh
                and t.name not in handing]
        if not held:
            return False
        streams: dict[Any, Any] = {t.inbound: ">" for t in held}
        pipe.xreadgroup(GROUP, self.name, streams, count=self.opts.batch_size,
                        block=self.opts.block_ms)
        return True

    @staticmethod
    def _entries(rows: Any) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
        """An ``XREADGROUP`` reply as tenant -> entries."""
        out: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        if isinstance(rows, Exception):
            raise rows
        for stream, entries in rows or []:
            name = stream.decode()
            out.setdefault(name[1 : name.index("}")], []).extend(entries)
        return out

    async def _claim(self, tenant: _Tenant, min_idle_ms: int = 0) -> bool:
        """Take the pending entries of the group (read by anyone, never acknowledged) that
        have been idle ``min_idle_ms``; they are applied before anything newer. False if
        the group is gone (``NOGROUP``)."""
        tenant.last_claim = time.monotonic()
        stream, start = tenant.inbound, "0-0"
        claimed: list[tuple[bytes, dict[bytes, bytes]]] = []
        while True:
            try:
                reply = await self.redis.xautoclaim(
                    stream, GROUP, self.name, min_idle_ms, start, count=1000
                )
            except ResponseError as exc:
                if not _is_nogroup(exc):
                    raise
                return False
            start_id, entries = reply[0], reply[1]
            claimed.extend((eid, fields) for eid, fields in entries if fields is not None)
            if start_id in (b"0-0", "0-0"):
                break
            start = start_id
        claimed.sort(key=lambda e: tuple(int(p) for p in e[0].split(b"-")))
        if claimed:
            log.info("claimed pending entries",
                     extra={"fields": {"tenant": tenant.name, "entries": len(claimed)}})
        tenant.backlog = claimed
        return True

    # --------------------------------------------------------------------------- apply

    async def _call(self, pipe: Any, t: _Tenant, cmds: list[dict[str, Any]], *, lease_ms: int,
                    tick: bool) -> None:
        """Queue one ``dispatchd_gateway`` call for ``t`` on the pipeline ``pipe``."""
        o = self.opts
        args = {
            "lease": self.token, "lease_ms": lease_ms, "group": GROUP, "dedupe_ms": o.dedupe_ms,
            "out_maxlen": o.out_maxlen, "dead_maxlen": o.dead_maxlen, "cmds": cmds,
        }
        if tick:
            args["tick"] = o.timer_limit
            if t.skipped:
                args["due"] = True  # skipped once already: fire now
        try:
            packed = _pack.encode(args)
        except (OverflowError, TypeError, ValueError):
            args["cmds"] = [_packable(c) for c in cmds]  # rare: find the culprit(s)
            packed = _pack.encode(args)
        pipe.fcall(scripts.GATEWAY, 1, t.root, self.clock(), packed)

    async def _apply(self, reads: dict[str, list[tuple[bytes, dict[bytes, bytes]]]], *,
                     read: bool = True) -> None:
        observe.record_step()
        now_mono, now = time.monotonic(), self.clock()
        calls: list[tuple[_Tenant, list[tuple[bytes, dict[bytes, bytes]]], bool]] = []
        #: held tenants another replica owns now: what is in hand is applied, then let go
        handing: set[str] = set()
        pipe = _Round(self._wire)
        for t in self.tenants.values():
            # claimed entries (older than anything read) go first; nothing is read for a
            # tenant while it has some
            entries = t.backlog + reads.get(t.name, [])
            t.backlog = []
            # every tick_ms (what the commands of a call make due at once fires in that
            # call: the function sees it, see lua/lib/90_entry.lua)
            tick = now - t.last_tick >= self.opts.tick_ms or now < t.last_tick
            # a tenant another replica holds is asked for again only when its renewal is
            # due (every lease_ms/3), not at every tick: a standby replica would otherwise
            # call the script for every tenant it does not hold at every loop
            mine = self._mine(t)
            if t.held and not mine:
                handing.add(t.name)
            elif not (entries or (tick and t.held) or (mine and now_mono >= t.renew_at)):
                continue
            cmds = [self._translate(t.name, eid, fields) for eid, fields in entries]
            # handing over: the same call applies the entries in hand and lets the lease
            # run out 1 ms later, so the owner takes the tenant at its next try
            lease_ms = 1 if t.name in handing else self.opts.lease_ms
            await self._call(pipe, t, cmds, lease_ms=lease_ms, tick=tick)
            calls.append((t, entries, tick))
        # durability: the calls' writes reach a replica (or the AOF) before anything more
        # is read; only when something was written (durability "none": no command at all)
        waited = bool(calls) and self.opts.durability != "none"
        if waited:
            pipe.wait(self.opts.durability, self.opts.durability_timeout_ms)
        # the next entries are read in the same round trip, after the calls (blocking
        # block_ms at most: under load it returns at once; the calls' replies wait for it,
        # but their events are out already and their latency is timed by the server)
        read = read and self._queue_read(pipe, handing)
        self._reads = {}
        if not calls and not read:
            await asyncio.sleep(self.opts.block_ms / 1000)
            return
        started = time.perf_counter()
        results = await pipe.execute(raise_on_error=False)
        observe.record_call(time.perf_counter() - started)
        lost = False  # a consumer group is gone (NOGROUP)
        failed_read: Exception | None = None  # raised once the calls' replies are handled
        if read:
            reply = results.pop()
            lost = _is_nogroup(reply)
            if isinstance(reply, Exception):
                failed_read = None if lost else reply
            else:
                self._reads = self._entries(reply)
        if waited:
            self._waited(results.pop())
        done_s = time.time()
        missing = False
        for (t, entries, ticked), raw in zip(calls, results, strict=True):
            entry_ids = [eid for eid, _ in entries]
            n = len(entry_ids)
            if scripts.is_missing(raw):
                # the library is gone (FUNCTION FLUSH, a server restarted empty): nothing
                # ran; load it again and apply the same entries next
                missing, t.backlog = True, entries
                continue
            if isinstance(raw, Exception):
                log.error("batch failed", extra={"fields": {"tenant": t.name, "error": str(raw)}})
                t.held = False  # re-take the lease and reclaim the entries
                continue
            result = _result.decode(raw)
            was_held = t.held
            handed = result.held and t.name in handing
            t.held = result.held and not handed
            observe.record_lease(t.name, t.held)
            if result.held:
                done = result.done / 1000 if result.done is not None else done_s
                observe.record_batch(t.name, result.stats, result.types, entry_ids, done)
                t.renewed_at = now_mono
                t.renew_at = now_mono + self.opts.lease_ms / 3000
                t.skipped = result.skipped
                if ticked and not result.skipped:
                    t.last_tick = now
                self.batches += 1 if n else 0
                if handed:
                    t.renew_at = now_mono + self._retry_s(t)
                    observe.record_lease_move("released_rebalance")
                    log.info("tenant handed over", extra={"fields": {
                        "tenant": t.name, "replicas": len(self._live())}})
                elif not was_held:
                    observe.record_lease_move("taken")
                    log.info("tenant taken", extra={"fields": {"tenant": t.name}})
                    if await self._claim(t):
                        # the consumers of replicas that are gone hold nothing now
                        await self.prune_consumers([t])
                    else:
                        lost = True
                elif now_mono - t.last_claim >= self.opts.lease_ms / 1000:
                    # entries a stalled replica read after losing its lease: take them over
                    lost = not await self._claim(t, min_idle_ms=self.opts.lease_ms) or lost
            else:
                t.renew_at = now_mono + self._retry_s(t)
                if was_held:
                    observe.record_lease_move("lost")
                    log.warning("lease lost", extra={"fields": {"tenant": t.name,
                                                                "holder": result.holder}})
        if calls:
            observe.record_tenants_held(sum(t.held for t in self.tenants.values()))
        if failed_read is not None:
            raise failed_read
        if missing or lost:
            await self._recover(library=missing, groups=lost)
        elif self._missing is not None and (
                read or not any(t.held for t in self.tenants.values())):
            self._recovered()

    def _waited(self, reply: Any) -> None:
        """Count (and at most every ``DURABILITY_LOG_EVERY_S`` log) a durability wait
        that fell short: fewer replicas (or AOF fsyncs) than asked before the timeout, or
        an error reply (e.g. WAITAOF on a server without appendonly). Never raised: the
        round trip's calls are applied; only their durability is in doubt."""
        if isinstance(reply, list):  # WAITAOF: [local fsyncs, replica fsyncs]
            ok = bool(reply) and not isinstance(reply[0], Exception) and int(reply[0]) >= 1
        else:
            ok = not isinstance(reply, Exception) and int(reply) >= 1
        if ok:
            return
        observe.record_durability_wait_failure()
        self._wait_failures += 1
        now = time.monotonic()
        if now - self._wait_logged >= DURABILITY_LOG_EVERY_S:
            log.warning("durability wait fell short: the latest writes may not survive a"
                        " failover", extra={"fields": {
                            "durability": self.opts.durability,
                            "timeout_ms": self.opts.durability_timeout_ms,
                            "reply": str(reply)[:200], "failures": self._wait_failures}})
            self._wait_logged, self._wait_failures = now, 0

    def _mine(self, t: _Tenant) -> bool:
        """Whether this replica asks for ``t``: it owns it among the live replicas (or
        there is no membership; or it is stopping, and lets go of everything itself)."""
        m = self.members
        return m is None or m.left or m.owns(t.name)

    def _live(self) -> tuple[str, ...]:
        return self.members.live if self.members is not None else ()

    def _retry_s(self, t: _Tenant) -> float:
        """When to ask again for a tenant this replica does not hold. With membership, a
        tenant it owns is asked for every tick (at most every lease_ms/3): its holder is
        gone or handing it over, and is waited for no longer than its lease runs."""
        every_s = self.opts.lease_ms / 3000
        if self.members is not None and self._mine(t):
            every_s = min(every_s, self.opts.tick_ms / 1000)
        return every_s

    # ---------------------------------------------------------------- vanished state

    async def _recover(self, *, library: bool, groups: bool) -> None:
        """Recreate what vanished from the server (the error path of a round trip): the
        function library, and every served tenant's consumer group that is gone, with its
        registration. Readiness fails until a later round trip finds nothing missing."""
        if library:
            self._set_missing("the dispatchd function library was missing; loaded again,"
                              " waiting for a round trip that finds nothing missing")
            observe.record_state_lost("library")
            log.error("the function library is missing on the server (FUNCTION FLUSH, or a"
                      " server restarted without its data?); loading it again")
            await self.engine.library.ensure()
        if groups:
            await self._recreate_groups()

    async def _recreate_groups(self) -> None:
        tenants = list(self.tenants.values())
        pipe = self.redis.pipeline(transaction=False)
        for t in tenants:
            # from 0: what is left in the stream was never applied (an applied entry is
            # deleted with its acknowledgement), and gateways may have sent it since
            pipe.xgroup_create(t.inbound, GROUP, id="0", mkstream=True)
        replies = await pipe.execute(raise_on_error=False)
        lost = []
        for t, reply in zip(tenants, replies, strict=True):
            if not isinstance(reply, Exception):
                lost.append(t.name)
            elif "BUSYGROUP" not in str(reply):
                raise reply
        self._set_missing(f"the consumer group of {len(lost)} tenant(s) had vanished from the"
                          " server; recreated, waiting for a round trip that finds nothing"
                          " missing")
        if not lost:  # recreated by someone else meanwhile
            log.warning("a consumer group was missing, and is back",
                        extra={"fields": {"group": GROUP}})
            return
        observe.record_state_lost("consumer_group", len(lost))
        log.error("the routing state vanished from the server (FLUSHALL, or a server"
                  " restarted without its data?): consumer groups recreated; the tenants'"
                  " configuration, sessions and tickets are gone unless restored",
                  extra={"fields": {"tenants": lost, "group": GROUP}})
        await self._register_again(lost)

    async def _register_again(self, lost: list[str]) -> None:
        """Add the tenants in ``lost`` (their group vanished) back to ``dispatchd:tenants``
        if the registry lost them too. A tenant missing from a registry that still names
        the other tenants this replica learnt from it was deleted on purpose: it is not
        registered again (a tenant this replica was configured with always is)."""
        if not self.opts.discover:
            return
        members = {m.decode(errors="replace") for m in cast(
            set[bytes], await self.redis.smembers(keys.TENANTS_KEY))}
        configured = set(self.opts.tenants)
        learnt = [n for n in self.tenants if n not in configured]
        registry_lost = not any(n in members for n in learnt)
        again = [n for n in lost if n not in members and (n in configured or registry_lost)]
        if again:
            await self.redis.sadd(keys.TENANTS_KEY, *again)
            log.error(f"tenants registered again in {keys.TENANTS_KEY}",
                      extra={"fields": {"tenants": again}})

    def _set_missing(self, reason: str) -> None:
        self._missing = reason
        observe.set_state_missing(reason)

    def _recovered(self) -> None:
        log.info("the recreated state works: applying gateway commands again",
                    extra={"fields": {"was": self._missing}})
        self._missing = None
        observe.set_state_missing(None)

    @staticmethod
    def _translate(tenant: str, entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
        eid = entry_id.decode()
        try:
            decoded = protocol.decode_entry(fields, tenant)
            if isinstance(decoded, protocol.Rejected):
                return protocol.reject_to_script(decoded, eid)
            return protocol.to_script(decoded, eid)
        except Exception as exc:  # a bug must cost one dead letter, not the daemon
            log.exception("could not translate entry", extra={"fields": {"entry": eid}})
            rejected = protocol.Rejected("E_INTERNAL", f"{type(exc).__name__}: {exc}"[:500])
            return protocol.reject_to_script(rejected, eid)
