"""Replica membership: which daemon replicas are alive, and which tenants each one owns.

Every replica adds itself to the sorted set ``dispatchd:replicas`` (member: its consumer
name, score: the server time in ms at which its registration runs out) every
``heartbeat_ms``, with an expiry ``GONE_AFTER`` heartbeats later, and reads back the
members whose registration has not run out: the live replicas. Each tenant's owner is
chosen among them by rendezvous (highest random weight) hashing: the replica with the
highest ``hash(tenant, replica)``. Every replica computes the same owner from the same
live set, each holds about 1/N of the tenants, and a replica that joins or leaves moves
only the tenants it gains or loses (about 1/N of them), never shuffles the rest.

Ownership only says which replica *asks* for a tenant; the per-tenant lease
(``{T}:lease``, checked atomically by every ``dispatchd_gateway`` call) still guarantees
one holder. Two replicas that briefly disagree on the live set (one has seen a joiner,
the other not yet) at worst both ask, and the lease decides; or neither asks for a
heartbeat or two.

Scores are on the server's clock (``TIME``, read in the same round trip as each
heartbeat), so replicas on hosts whose clocks disagree still agree on who is alive.
A heartbeat is one round trip of four commands (``TIME``, ``ZADD``, ``ZREMRANGEBYSCORE``
of the registrations that ran out, ``ZRANGE ... BYSCORE`` of the live ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from dispatchd import keys

log = logging.getLogger("dispatchd.membership")

#: A replica not heard from for this many heartbeats is gone.
GONE_AFTER = 4


def weight(tenant: str, replica: str) -> int:
    """The rendezvous weight of ``replica`` for ``tenant`` (64 bits, same everywhere)."""
    digest = hashlib.blake2b(f"{tenant}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(tenant: str, replicas: tuple[str, ...]) -> str | None:
    """The replica of ``replicas`` that owns ``tenant`` (None: no replica)."""
    if not replicas:
        return None
    return max(replicas, key=lambda r: (weight(tenant, r), r))


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Membership:
    """One replica's registration in ``dispatchd:replicas`` and its view of the others.

    Call :meth:`beat` when :meth:`due` (the consumer does it in its loop, so a replica
    whose loop is stuck stops heartbeating and its tenants go to the others), :meth:`owns`
    to ask whether a tenant is this replica's, :meth:`leave` at a clean stop.
    """

    def __init__(self, redis: Any, name: str, heartbeat_ms: int) -> None:
        self.redis = redis
        self.name = name
        self.heartbeat_ms = heartbeat_ms
        self.ttl_ms = GONE_AFTER * heartbeat_ms
        #: the live replicas seen by the latest heartbeat (sorted); this one until then
        self.live: tuple[str, ...] = (name,)
        self.left = False
        self._owners: dict[str, bool] = {}
        self._next = 0.0  # monotonic seconds
        self._offset_ms = 0  # server clock - local clock

    def due(self) -> bool:
        """Whether a heartbeat is due."""
        return not self.left and time.monotonic() >= self._next

    def owns(self, tenant: str) -> bool:
        """Whether this replica owns ``tenant`` in the current live set."""
        mine = self._owners.get(tenant)
        if mine is None:
            mine = self._owners[tenant] = owner(tenant, self.live) == self.name
        return mine

    async def beat(self) -> bool:
        """Renew this replica's registration and read the live set; True if it changed
        (the caller then hands over the tenants it no longer owns)."""
        self._next = time.monotonic() + self.heartbeat_ms / 1000
        sent = _wall_ms()
        now = sent + self._offset_ms
        pipe = self.redis.pipeline(transaction=False)
        # by name: redis-py refuses pipe.time() in a cluster pipeline (the same command)
        pipe.execute_command("TIME")
        pipe.zadd(keys.REPLICAS_KEY, {self.name: now + self.ttl_ms})
        pipe.zremrangebyscore(keys.REPLICAS_KEY, "-inf", f"({now}")
        pipe.zrange(keys.REPLICAS_KEY, now, "+inf", byscore=True)
        server_time, _, _, members = await pipe.execute()
        received = _wall_ms()
        server_ms = int(server_time[0]) * 1000 + int(server_time[1]) // 1000
        self._offset_ms = server_ms - (sent + received) // 2
        live = {m.decode(errors="replace") if isinstance(m, bytes) else str(m)
                for m in members}
        live.add(self.name)
        return self._set_live(tuple(sorted(live)))

    async def leave(self) -> None:
        """Deregister at once (a clean stop): the others own this replica's tenants from
        their next heartbeat. Best effort: a failure leaves the registration to run out."""
        self.left = True
        self._set_live(())
        with contextlib.suppress(RedisError):
            await self.redis.zrem(keys.REPLICAS_KEY, self.name)

    def _set_live(self, live: tuple[str, ...]) -> bool:
        if live == self.live:
            return False
        joined = sorted(set(live) - set(self.live))
        gone = sorted(set(self.live) - set(live))
        self.live = live
        self._owners = {}
        log.info("replicas changed", extra={"fields": {
            "replicas": len(live), "joined": joined, "gone": gone}})
        return True
