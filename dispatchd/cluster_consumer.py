"""The gateway consumer on a Redis/Valkey Cluster: one loop per shard (master).

A tenant's keys share its ``{tenant}`` hash tag, so they live on the master that owns
that slot. :class:`ClusterConsumer` keeps the served tenants (as the single-server
:class:`~dispatchd.consumer.GatewayConsumer` does: ``dispatchd:tenants``, consumer groups)
and hands each to the :class:`ShardConsumer` of the master owning its slot. Each shard
consumer is a ``GatewayConsumer`` with its own connection to its master and runs its own
loop, so shards work in parallel and a slow or blocked shard holds up no other: one
pipelined round trip per loop with one ``FCALL`` per tenant with work (as on one server),
then one ``XREADGROUP`` per held tenant (a read cannot span slots; they block only when
the previous round read nothing, and then only the last one, ``block_ms`` at most).

When the cluster changes under it:

* a reply ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN``/``READONLY`` (a slot resharded
  or migrating, a master demoted, the cluster failing over): nothing of that call ran;
  the tenant is taken again (the same lease token: no other replica took it meanwhile)
  and its pending entries claimed from the group, oldest first, before anything newer;
* a connection error (the master went away): every tenant of that shard is taken again
  the same way (what the failed round applied is deleted from the stream; what it did
  not is pending and goes first; a command applied twice is impossible: command ids);

and the slot map is refreshed (backing off 0.1 s to 2 s while the cluster fails over),
each tenant moved to the loop of the master that owns its slot now, between that loop's
round trips, with the entries it had in hand, so a tenant's commands keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)

from dispatchd import keys, observe
from dispatchd.connect import is_cluster, node_client
from dispatchd.consumer import (
    GROUP,
    PRUNE_EVERY_S,
    ConsumerOptions,
    GatewayConsumer,
    _is_nogroup,
    _Tenant,
    _Wire,
    wall_clock_ms,
)
from dispatchd.engine import Engine
from dispatchd.membership import Membership

log = logging.getLogger("dispatchd.consumer")

#: Replies that say the cluster changed under a command (nothing of it ran).
REDIRECTS = (AskError, TryAgainError, ClusterDownError, ReadOnlyError)  # MovedError is an AskError


def consumer_for(engine: Engine, options: ConsumerOptions | None = None, *,
                 clock: Callable[[], int] = wall_clock_ms,
                 name: str | None = None) -> GatewayConsumer | ClusterConsumer:
    """The consumer for ``engine``'s client: per shard on a cluster, else one loop."""
    if is_cluster(engine.redis):
        return ClusterConsumer(engine, options, clock=clock, name=name)
    return GatewayConsumer(engine, options, clock=clock, name=name)


#: How long an idle shard loop holding several tenants blocks on its last read: the
#: longest a command for one of its other tenants can wait to be read. An idle shard with
#: n tenants then makes about 1000 / SHARED_BLOCK_MS round trips of n reads a second.
SHARED_BLOCK_MS = 5


class _ShardWire(_Wire):
    """A shard loop's connection to its master. The reads of a round (one per tenant)
    come back as one reply, as a single read over every tenant would (the first
    ``NOGROUP`` or other error of them, else their rows together); a reply saying the
    cluster changed is remembered in :attr:`redirected`."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.client = client
        self.reads = 0
        self.redirected: Exception | None = None

    async def roundtrip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        n, self.reads = self.reads, 0
        replies = await super().roundtrip(commands)
        for r in replies:
            if isinstance(r, REDIRECTS):
                self.redirected = r
        if n:
            reads, replies = replies[-n:], replies[:-n]
            errors = [r for r in reads if isinstance(r, Exception)]
            if errors:
                replies.append(next((e for e in errors if _is_nogroup(e)), errors[0]))
            else:
                rows: list[Any] = []
                for r in reads:
                    rows.extend((r.items() if isinstance(r, dict) else r) or [])
                replies.append(rows)
        return replies

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class ShardConsumer(GatewayConsumer):
    """The loop of one master's tenants (given by its :class:`ClusterConsumer`)."""

    def __init__(self, parent: ClusterConsumer, node: Any) -> None:
        super().__init__(parent.engine, parent.opts, clock=parent.clock, name=parent.name)
        self.parent = parent
        self.node = node.name
        #: the replica's membership is one, shared by its shard loops (whichever loop
        #: finds the heartbeat due sends it)
        self.members = parent.members
        self._shard_wire = _ShardWire(node_client(node))
        self._wire = self._shard_wire
        self.stop = asyncio.Event()
        self._failures = 0

    async def _refresh_tenants(self) -> None:  # the parent does it for every shard
        return

    def _queue_read(self, pipe: Any, handing: set[str]) -> bool:
        fresh = time.monotonic() - self.opts.lease_ms / 2000
        held = [t for t in self.tenants.values()
                if t.held and not t.backlog and t.renewed_at >= fresh
                and t.name not in handing]
        if not held:
            return False
        # block only when the last round read nothing (then on the last read only):
        # reads of different slots cannot share one XREADGROUP, and blocking on each in
        # turn would add block_ms per tenant. A command for another tenant of the shard
        # waits out that block, so with several tenants it is short (SHARED_BLOCK_MS).
        block = not any(self._reads.values())
        block_ms = self.opts.block_ms if len(held) == 1 else min(self.opts.block_ms,
                                                                 SHARED_BLOCK_MS)
        pipe.reads.add(len(pipe.commands))
        for i, t in enumerate(held):
            wait = ("BLOCK", block_ms) if block and i == len(held) - 1 else ()
            pipe.commands.append(("XREADGROUP", "GROUP", GROUP, self.name,
                                  "COUNT", self.opts.batch_size, *wait,
                                  "STREAMS", t.inbound, ">"))
        self._shard_wire.reads = len(held)
        return True

    def take(self, t: _Tenant, backlog: list[Any]) -> None:
        """Take over tenant ``t`` from another shard loop (between its round trips)."""
        t.backlog = t.backlog + backlog
        self.tenants[t.name] = t

    def hand_over(self) -> None:
        """Give the tenants whose slot another master owns now to that master's loop,
        with the entries in hand (read, not applied)."""
        owner = self.parent.owner
        for name in [n for n in self.tenants if owner.get(n, self.node) != self.node]:
            target = self.parent.shards.get(owner[name])
            if target is None:
                continue
            t = self.tenants.pop(name)
            target.take(t, self._reads.pop(name, []))
            log.info("tenant moved to another shard", extra={"fields": {
                "tenant": name, "from": self.node, "to": target.node}})

    def _retake_all(self) -> None:
        """After a round whose outcome is unknown: take every tenant again (its pending
        entries are claimed, oldest first, before anything newer is read)."""
        for t in self.tenants.values():
            t.held, t.renew_at = False, 0.0
        self._reads = {}

    async def step(self) -> None:
        self.hand_over()
        # not awaited here: dispatchd:replicas lives on one shard, and a shard loop must
        # not wait on another shard (its master failing over would stall every loop)
        self.parent.heartbeat_soon()
        try:
            await self._apply(self._reads)
        except RedisError as exc:
            if not isinstance(exc, REDIRECTS):
                self._retake_all()
            await self._failed(exc)
            raise
        wire = self._shard_wire
        redirected, wire.redirected = wire.redirected, None
        if redirected is not None:
            await self._failed(redirected)
            return
        self._failures = 0
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            await self.prune_consumers([t for t in self.tenants.values() if t.held])

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        log.warning("shard round trip failed: refreshing the cluster's slot map",
                    extra={"fields": {"node": self.node, "error": f"{type(exc).__name__}: {exc}",
                                      "tenants": sorted(self.tenants)}})
        self.parent.remap.set()
        await asyncio.sleep(min(0.05 * 2 ** self._failures, 2.0))

    async def run_until_stopped(self) -> None:
        await self.run(self.stop)


class ClusterConsumer(GatewayConsumer):
    """Consumes the gateway streams of the served tenants on a cluster: keeps the tenant
    list and the slot map, runs one :class:`ShardConsumer` loop per master."""

    def __init__(self, engine: Engine, options: ConsumerOptions | None = None, *,
                 clock: Callable[[], int] = wall_clock_ms, name: str | None = None) -> None:
        super().__init__(engine, options, clock=clock, name=name)
        self.cluster = cast(RedisCluster, engine.redis)
        self.shards: dict[str, ShardConsumer] = {}
        #: tenant -> the node name of the master owning its slot
        self.owner: dict[str, str] = {}
        self.remap = asyncio.Event()
        self._beat: asyncio.Task[None] | None = None
        self._beat_warned = 0.0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._remap_failures = 0

    @property
    def batches(self) -> int:
        return sum(s.batches for s in self.shards.values())

    @batches.setter
    def batches(self, value: int) -> None:
        pass

    # ------------------------------------------------------------------ the shard map

    async def _assign(self) -> None:
        """Put every tenant in the loop of the master owning its slot (new loops for new
        masters; loops of nodes that are no master any more, with no tenants, stop)."""
        if not self.cluster.nodes_manager.slots_cache:
            await self.cluster.initialize()
        if self.remap.is_set():
            self.remap.clear()
            try:
                await self.cluster.nodes_manager.initialize()
                self._remap_failures = 0
            except RedisError as exc:
                self._remap_failures += 1
                log.warning("cannot read the cluster's slot map; retrying", extra={"fields": {
                    "error": f"{type(exc).__name__}: {exc}"}})
                self.remap.set()
                await asyncio.sleep(min(0.1 * 2 ** self._remap_failures, 2.0))
                return
        manager = self.cluster.nodes_manager
        for name, t in self.tenants.items():
            node = manager.get_node_from_slot(self.cluster.keyslot(t.root))
            if node.name not in self.shards:
                self._start_shard(node)
            if name not in self.owner:  # a new tenant: straight into its shard
                self.shards[node.name].tenants[name] = t
            self.owner[name] = node.name
        masters = {n.name for n in self.cluster.get_primaries()}
        for name in [n for n, s in self.shards.items() if n not in masters and not s.tenants]:
            shard = self.shards.pop(name)
            shard.members = None  # the replica stays: only this loop stops
            shard.stop.set()
            log.info("shard loop stopped: the node is no master any more",
                     extra={"fields": {"node": name}})

    def _start_shard(self, node: Any) -> None:
        shard = ShardConsumer(self, node)
        self.shards[node.name] = shard
        log.info("shard loop started", extra={"fields": {"node": node.name}})

    # ------------------------------------------------------------------- membership

    def heartbeat_soon(self) -> None:
        """Start the replica's heartbeat in the background when it is due and none is in
        flight (the shard loops call this; none of them waits for it)."""
        m = self.members
        if m is None or not m.due() or (self._beat is not None and not self._beat.done()):
            return
        self._beat = asyncio.create_task(self._beat_once(m))

    async def _beat_once(self, m: Membership) -> None:
        try:
            changed = await m.beat()
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now >= self._beat_warned + 10:
                self._beat_warned = now
                log.warning("replica heartbeat failed; retrying at the next one",
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return
        if changed:
            # the live set changed: ask at once for the tenants this replica owns now
            for t in self.tenants.values():
                if not t.held:
                    t.renew_at = 0.0
        observe.record_replicas(len(m.live))

    # ------------------------------------------------------------------------ the loop

    async def step(self) -> None:
        """One round: refresh the tenants and the slot map, then one round trip of every
        shard (together). For tests; :meth:`run` runs the shards' loops on their own."""
        await self._refresh_tenants()
        await self._assign()
        shards = list(self.shards.values())
        results = await asyncio.gather(*(s.step() for s in shards), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def run(self, stop: asyncio.Event) -> None:
        log.info("gateway consumer started", extra={"fields": {
            "consumer": self.name, "mode": "cluster"}})
        try:
            while not stop.is_set():
                try:
                    await self._refresh_tenants()
                    await self._assign()
                except RedisError as exc:
                    log.warning("consumer step failed; retrying",
                                extra={"fields": {"error": str(exc)}})
                    await asyncio.sleep(0.2)
                    continue
                for name, shard in self.shards.items():
                    task = self._tasks.get(name)
                    if task is not None and task.done() and not task.cancelled():
                        failure = task.exception()
                        if failure is not None:  # a bug in a shard loop stops the daemon
                            raise failure
                    if task is None or (task.done() and not shard.stop.is_set()):
                        self._tasks[name] = asyncio.get_running_loop().create_task(
                            shard.run_until_stopped(), name=f"dispatchd-shard-{name}")
                waits = [asyncio.ensure_future(stop.wait()),
                         asyncio.ensure_future(self.remap.wait())]
                await asyncio.wait(waits, timeout=self.opts.tenants_refresh_ms / 1000,
                                   return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            for shard in self.shards.values():
                shard.stop.set()
            tasks = list(self._tasks.values())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            log.info("gateway consumer stopped", extra={"fields": {"batches": self.batches}})

    async def release(self) -> None:
        for shard in list(self.shards.values()):
            await shard.release()

    async def close(self) -> None:
        if self._beat is not None and not self._beat.done():
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        for shard in self.shards.values():
            await shard._wire.close()
        await self._wire.close()

    def held_tenants(self) -> dict[str, bool]:
        return {n: t.held for n, t in self.tenants.items()}


__all__ = ["ClusterConsumer", "ShardConsumer", "consumer_for", "keys"]
