"""Driving ``dispatchd_gateway`` directly, as the daemon does, and what it costs Redis.

On the daemon's path a gateway ``XADD``s a command to ``{T}:in``; the daemon reads it
with ``XREADGROUP`` and hands a batch of them to one ``FCALL dispatchd_gateway``, which
applies them, appends their events to ``{T}:out``, records their ids, acknowledges and
deletes their entries (and, with ``tick``, fires what is due). :class:`Gateway` makes
the first two steps beforehand (:meth:`Gateway.stage`), so that a measured window holds
the ``FCALL`` s and nothing else, then makes the calls pipelined (:meth:`Gateway.run`)
and reads two figures from ``INFO`` before and after:

* **in FCALL**: the growth of ``usec`` of ``cmdstat_fcall`` (``INFO commandstats``), the
  time the server spent inside the calls, the Redis calls they make included: the most
  precise figure, as nothing else the server does is in it;
* **whole server**: the growth of ``used_cpu_sys + used_cpu_user`` (``INFO cpu``), which
  adds reading the requests and writing the replies (and whatever else the server did
  meanwhile); used alone when the server has no ``cmdstat_fcall``.

The clock handed to the calls is fixed (``now_ms``), so no timer falls due while a
workload runs and every run of it does the same work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bench.servers import delete_matching, redis_cpu_s, used_memory
from dispatchd import keys, protocol, scripts
from dispatchd.consumer import GROUP, ConsumerOptions
from dispatchd.protocol import GatewayCommand

#: Commands per ``FCALL`` (the daemon's batches are up to 500; 100 amortises the fixed
#: cost of a call to about 1 % of a command's).
PER_CALL = 100
#: ``FCALL`` s per round trip.
DEPTH = 10
#: The bench's consumer name in the group of ``{T}:in``.
CONSUMER = "bench-direct"
_STAGE_CHUNK = 2000


class _Result(msgspec.Struct):
    """The part of ``dispatchd_gateway``'s reply the bench reads."""

    held: bool
    applied: int = 0
    failed: int = 0
    events: int = 0
    types: dict[str, int] | None = None


_result = msgspec.msgpack.Decoder(_Result)
_event = msgspec.json.Decoder(dict[str, Any])


@dataclass
class Tally:
    """What a run of calls did and what it cost the server (seconds)."""

    calls: int = 0
    commands: int = 0
    applied: int = 0
    failed: int = 0
    not_held: int = 0
    events: int = 0
    types: Counter[str] = field(default_factory=Counter)
    fcall_s: float | None = 0.0
    """Time inside ``FCALL`` (``INFO commandstats``); None when the server has no figure."""
    cpu_s: float = 0.0

    def add(self, other: Tally) -> None:
        """Add ``other``'s calls, outcomes and costs to this one."""
        self.calls += other.calls
        self.commands += other.commands
        self.applied += other.applied
        self.failed += other.failed
        self.not_held += other.not_held
        self.events += other.events
        self.types.update(other.types)
        if self.fcall_s is None or other.fcall_s is None:
            self.fcall_s = None
        else:
            self.fcall_s += other.fcall_s
        self.cpu_s += other.cpu_s

    @property
    def source(self) -> str:
        """Where :meth:`us` comes from: ``commandstats`` or ``cpu``."""
        return "cpu" if self.fcall_s is None else "commandstats"

    def us(self, per: int | None = None) -> float:
        """Redis µs per command (or per ``per`` units): inside FCALL when known, else the
        whole server's CPU."""
        seconds = self.cpu_s if self.fcall_s is None else self.fcall_s
        return seconds / max(1, per if per is not None else self.commands) * 1e6

    def cpu_us(self, per: int | None = None) -> float:
        """The whole server's CPU µs per command (or per ``per`` units)."""
        return self.cpu_s / max(1, per if per is not None else self.commands) * 1e6


async def _fcall_s(client: aioredis.Redis) -> float | None:
    """Seconds spent inside ``FCALL`` so far (``INFO commandstats``), or None."""
    stats = await client.info("commandstats")
    fcall = stats.get("cmdstat_fcall")
    if not isinstance(fcall, dict) or "usec" not in fcall:
        return None
    return float(fcall["usec"]) / 1e6


class Gateway:
    """Calls ``dispatchd_gateway`` for ``tenant`` at the fixed clock ``now_ms``, with the
    daemon's default settings (``dispatchd.consumer.ConsumerOptions``)."""

    def __init__(self, client: aioredis.Redis, tenant: str, now_ms: int) -> None:
        self.client = client
        self.tenant = tenant
        self.now_ms = now_ms
        self.opts = ConsumerOptions()
        self._ids = 0

    async def reset(self) -> None:
        """Delete the tenant's keys and create the consumer group of ``{T}:in``."""
        await self.delete()
        await self.client.xgroup_create(keys.key("inbound", self.tenant), GROUP, id="0",
                                        mkstream=True)

    async def delete(self) -> None:
        """Delete the tenant's keys, and wait until the server has freed them (``UNLINK``
        frees in the background), so what runs next does not share the CPU with that."""
        await delete_matching(self.client, keys.prefix(self.tenant) + "*")
        await used_memory(self.client)

    def next_id(self, kind: str) -> str:
        """A fresh command id."""
        self._ids += 1
        return f"{kind}{self._ids}"

    async def stage(self, cmds: Sequence[GatewayCommand]) -> list[dict[str, Any]]:
        """Append ``cmds`` to ``{T}:in`` and read them in the daemon's consumer group, as
        the daemon does before a call; the commands as the call takes them."""
        inbound = keys.key("inbound", self.tenant)
        ids: list[str] = []
        for start in range(0, len(cmds), _STAGE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for cmd in cmds[start : start + _STAGE_CHUNK]:
                pipe.xadd(inbound, protocol.encode_command(cmd))  # type: ignore[arg-type]
            await pipe.execute()
        while len(ids) < len(cmds):
            reply: Any = await self.client.xreadgroup(GROUP, CONSUMER, {inbound: ">"},
                                                      count=min(10_000, len(cmds) - len(ids)))
            if not reply:
                raise RuntimeError(f"{inbound}: {len(cmds) - len(ids)} staged entries missing")
            ids.extend(eid.decode() for eid, _ in reply[0][1])
        return [protocol.to_script(cmd, eid) for cmd, eid in zip(cmds, ids, strict=True)]

    def payload(self, cmds: list[dict[str, Any]], *, tick: bool = False) -> bytes:
        """One call's argument, as the daemon packs it."""
        o = self.opts
        args: dict[str, Any] = {
            "lease": "bench", "lease_ms": o.lease_ms, "group": GROUP,
            "dedupe_ms": o.dedupe_ms, "out_maxlen": o.out_maxlen,
            "dead_maxlen": o.dead_maxlen, "cmds": cmds,
        }
        if tick:
            args["tick"] = o.timer_limit
        return msgspec.msgpack.encode(args)

    def batches(self, staged: list[dict[str, Any]], *, per_call: int = PER_CALL,
                tick_every: int = 0) -> list[tuple[int, bytes]]:
        """``staged`` cut into calls of ``per_call``; every ``tick_every``-th call also
        ticks (0: none). Pairs of (commands, payload)."""
        out: list[tuple[int, bytes]] = []
        for n, start in enumerate(range(0, len(staged), per_call)):
            chunk = staged[start : start + per_call]
            tick = tick_every > 0 and n % tick_every == tick_every - 1
            out.append((len(chunk), self.payload(chunk, tick=tick)))
        return out

    def empty_calls(self, n: int, *, tick: bool) -> list[tuple[int, bytes]]:
        """``n`` calls without commands (with or without ``tick``)."""
        payload = self.payload([], tick=tick)
        return [(0, payload)] * n

    async def run(self, calls: list[tuple[int, bytes]], depth: int = DEPTH) -> Tally:
        """Make ``calls``, ``depth`` per round trip; what they did and cost."""
        client, root = self.client, keys.root(self.tenant)
        tally = Tally()
        replies: list[Any] = []
        fcall0, cpu0 = await _fcall_s(client), await redis_cpu_s(client)
        for start in range(0, len(calls), depth):
            pipe = client.pipeline(transaction=False)
            for _, payload in calls[start : start + depth]:
                pipe.fcall(scripts.GATEWAY, 1, root, self.now_ms, payload)
            replies.extend(await pipe.execute())
        cpu1, fcall1 = await redis_cpu_s(client), await _fcall_s(client)
        tally.cpu_s = cpu1 - cpu0
        tally.fcall_s = None if fcall0 is None or fcall1 is None else fcall1 - fcall0
        tally.calls = len(calls)
        tally.commands = sum(n for n, _ in calls)
        for raw in replies:
            r = _result.decode(raw)
            tally.not_held += not r.held
            tally.applied += r.applied
            tally.failed += r.failed
            tally.events += r.events
            tally.types.update(r.types or {})
        return tally


class Assignments:
    """Which session is assigned to which agent, as ``{T}:out`` tells a gateway:
    ``assigned`` adds one, ``closed`` removes it. Sessions assigned outside the gateway
    path (``Engine.apply_batch`` writes no ``{T}:out``) are added with :meth:`add`."""

    def __init__(self, client: aioredis.Redis, tenant: str) -> None:
        self.client = client
        self.out = keys.key("outbound", tenant)
        self.last = "0-0"
        self.agent_of: dict[str, str] = {}

    def add(self, session: str, agent: str) -> None:
        """``session`` is assigned to ``agent``."""
        self.agent_of[session] = agent

    async def follow(self) -> None:
        """Read ``{T}:out`` from where the last call stopped."""
        while True:
            entries: Any = await self.client.xrange(self.out, min="(" + self.last,
                                                    count=10_000)
            if not entries:
                return
            for _, fields in entries:
                e = _event.decode(fields[b"json"])
                if e.get("type") == "assigned":
                    self.agent_of[e["session"]] = e["agent"]
                elif e.get("type") == "closed":
                    self.agent_of.pop(e.get("session", ""), None)
            self.last = entries[-1][0].decode()
