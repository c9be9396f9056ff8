"""Shared harness of the gateway protocol end-to-end tests (``tests/test_gateway_*.py``).

Everything goes through the real streams ``{T}:in`` / ``{T}:out`` / ``{T}:dead`` on the
real test server: a :class:`Gateway` bundles an in-process
:class:`~dispatchd.consumer.GatewayConsumer` driven by a :class:`FakeClock` with a
:class:`~dispatchd.client.GatewayClient` (gateway ``"web"``). :meth:`Gateway.pump` steps
the consumer until the inbound stream is drained and returns the events it produced.

Use it from a test module as::

    @pytest.fixture
    async def gw(engine, redis_client, tenant):
        async with open_gateway(engine, redis_client, tenant) as g:
            yield g

Nothing sleeps for seconds: time is the fake clock, advanced with ``gw.clock.advance``.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
from event_schema import check_event

from dispatchd import keys, protocol
from dispatchd.client import GatewayClient
from dispatchd.cluster_consumer import consumer_for
from dispatchd.consumer import GROUP, ConsumerOptions, GatewayConsumer
from dispatchd.engine import Engine

T0 = 1_700_000_000_000
"""Epoch of the fake clock (ms)."""

SEC = 1_000
MIN = 60_000

#: Every lifecycle timer switched off: tests switch on the ones they look at.
TIMERS_OFF: dict[str, int] = {
    "queue_warning_ms": 0,
    "queue_timeout_ms": 0,
    "position_update_ms": 0,
    "reply_sla_ms": 0,
    "reply_reassign_ms": 0,
    "silence_remind_ms": 0,
    "silence_preclose_ms": 0,
    "silence_close_ms": 0,
    "confirm_close_ms": 0,
}

#: Fields every event carries that tests usually do not pin down exactly.
VOLATILE = ("ts", "_entry")


class FakeClock:
    """A clock in ms that only moves when told to (``GatewayConsumer(clock=...)``)."""

    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def consumer_options(tenant: str, **overrides: Any) -> ConsumerOptions:
    """Options of a test consumer: tiny block and tick so a step is fast and always ticks
    when the fake clock moved."""
    opts: dict[str, Any] = {"tenants": (tenant,), "block_ms": 1, "tick_ms": 1}
    opts.update(overrides)
    return ConsumerOptions(**opts)


class Gateway:
    """One tenant's streams, an in-process consumer on a fake clock and a gateway client."""

    def __init__(
        self,
        engine: Engine,
        redis: aioredis.Redis,
        tenant: str,
        *,
        clock: FakeClock | None = None,
        options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.tenant = tenant
        self.clock = clock or FakeClock()
        self.options = consumer_options(tenant, **dict(options or {}))
        self.consumer: GatewayConsumer = consumer_for(engine, self.options, clock=self.clock,
                                                      name=name)
        self.client = GatewayClient(redis, tenant, gateway="web")
        self.mp_client = GatewayClient(redis, tenant, gateway="web", msgpack=True)
        self.inbound = keys.key("inbound", tenant)
        self.outbound = keys.key("outbound", tenant)
        self.dead_key = keys.key("dead", tenant)
        self.last = "0-0"
        self.steps = 0
        self._n = 0

    # ------------------------------------------------------------------------ consumer

    def new_consumer(self, name: str | None = None) -> GatewayConsumer:
        """Replace the consumer by a fresh instance (a restart) on the same clock."""
        self.consumer = consumer_for(self.engine, self.options, clock=self.clock, name=name)
        return self.consumer

    async def inbound_state(self) -> tuple[int, int]:
        """(entries left in ``{T}:in``, entries pending in the consumer group)."""
        length = await self.redis.xlen(self.inbound)
        try:
            pending = await self.redis.xpending(self.inbound, GROUP)
        except aioredis.ResponseError:  # no group yet
            return length, 0
        return length, int(pending["pending"])

    def held(self) -> bool:
        t = self.consumer.tenants.get(self.tenant)
        return bool(t and t.held)

    async def drain(self, max_steps: int = 10_000, timeout_s: float = 10.0) -> None:
        """Step the consumer until it holds the tenant and ``{T}:in`` is empty with
        nothing pending (at least one step, so due timers fire)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(max_steps):
            await self.consumer.step()
            self.steps += 1
            if self.held() and await self.inbound_state() == (0, 0):
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"inbound not drained: (length, pending) = "
                             f"{await self.inbound_state()}")

    async def pump(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Drain the inbound stream; the events appended to ``{T}:out`` since last call."""
        await self.drain(timeout_s=timeout_s)
        return await self.new_events()

    async def new_events(self) -> list[dict[str, Any]]:
        events = await read_events(self.redis, self.tenant, after=self.last)
        if events:
            self.last = events[-1]["_entry"]
        return events

    async def close(self) -> None:
        await self.consumer.release()
        await self.redis.srem(keys.TENANTS_KEY, self.tenant)

    # ------------------------------------------------------------------------- sending

    async def send(self, cmd: Mapping[str, Any], *, msgpack: bool = False) -> str:
        """Append one command given as a dict (``type`` and ``id`` included)."""
        data = (msgspec.msgpack.encode(dict(cmd)) if msgpack
                else json.dumps(dict(cmd)).encode())
        return await self.send_raw({b"msgpack" if msgpack else b"json": data})

    async def send_raw(self, fields: Mapping[bytes | str, bytes | str]) -> str:
        """Append one raw inbound entry; its stream entry id."""
        eid = await self.redis.xadd(self.inbound, dict(fields))  # type: ignore[arg-type]
        return _s(eid)

    async def run(self, cmd: Mapping[str, Any], **kw: Any) -> list[dict[str, Any]]:
        """Send one command and pump: its events (and those of any timer due)."""
        await self.send(cmd, **kw)
        return await self.pump()

    # ------------------------------------------------------------------------ settings

    async def group(self, name: str, **cfg: Any) -> None:
        """Configure a group; every lifecycle timer is off unless given in ``cfg``."""
        settings = {**TIMERS_OFF, **cfg}
        await self.engine.configure_group(self.tenant, self.clock.now, name, **settings)

    async def agent(
        self, name: str, groups: Iterable[str] | Mapping[str, float], *, capacity: int = 1,
        online: bool = True,
    ) -> list[dict[str, Any]]:
        """Configure an agent; with ``online`` set it online through the gateway command
        ``set_agent_status`` (and pump); the events of that command."""
        abilities = dict(groups) if isinstance(groups, Mapping) else dict.fromkeys(groups, 1.0)
        await self.engine.configure_agent(self.tenant, self.clock.now, name,
                                          capacity=capacity, abilities=abilities)
        if not online:
            return []
        self._n += 1
        return await self.run({"type": "set_agent_status", "id": f"online-{name}-{self._n}",
                               "agent": name, "status": "online"})

    # ---------------------------------------------------------------------- inspection

    async def all_events(self) -> list[dict[str, Any]]:
        return await read_events(self.redis, self.tenant)

    async def dead(self) -> list[dict[str, str | bytes]]:
        return await read_dead(self.redis, self.tenant)


async def read_events(
    redis: aioredis.Redis, tenant: str, *, after: str = "0-0", count: int | None = None
) -> list[dict[str, Any]]:
    """The events of ``{T}:out`` after stream id ``after`` (parsed JSON, ``_entry`` added)."""
    out: list[dict[str, Any]] = []
    start = "(" + after if after != "0-0" else "-"
    key = keys.key("outbound", tenant)
    while True:
        rows = await redis.xrange(key, min=start, count=count or 10_000)
        for eid, fields in rows:
            event = protocol.decode_event({_s(k).encode(): v for k, v in fields.items()})
            check_event(event)  # every event any gateway test reads fits docs/protocol.md
            event["_entry"] = _s(eid)
            out.append(event)
        if not rows or count is not None:
            return out
        start = "(" + _s(rows[-1][0])


async def read_dead(redis: aioredis.Redis, tenant: str) -> list[dict[str, str | bytes]]:
    """The ``{T}:dead`` entries; ``entry``/``error``/``ts`` as str, payload fields as bytes."""
    rows = await redis.xrange(keys.key("dead", tenant))
    out: list[dict[str, str | bytes]] = []
    for _eid, fields in rows:
        doc: dict[str, str | bytes] = {}
        for k, v in fields.items():
            name = _s(k)
            doc[name] = _s(v) if name in ("entry", "error", "ts") else v
        out.append(doc)
    return out


class _AnyInt:
    """Equal to any int (not bool): for values such as ``eta_ms`` that tests do not pin."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ANY_INT"


ANY_INT: Any = _AnyInt()


def assert_events(
    events: list[dict[str, Any]], expected: list[dict[str, Any]], *, ts: int | None = None
) -> None:
    """``events`` are exactly ``expected`` in order (``ts``/``_entry`` aside); with ``ts``,
    every event carries that daemon time."""
    assert [strip(e) for e in events] == expected
    if ts is not None:
        assert [e["ts"] for e in events] == [ts] * len(events)


def strip(event: Mapping[str, Any], *drop: str) -> dict[str, Any]:
    """``event`` without ``ts``/``_entry`` (and ``drop``), to compare whole events."""
    return {k: v for k, v in event.items() if k not in VOLATILE and k not in drop}


def types(events: Iterable[Mapping[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@contextlib.asynccontextmanager
async def open_gateway(
    engine: Engine, redis: aioredis.Redis, tenant: str, **kw: Any
) -> AsyncIterator[Gateway]:
    """A :class:`Gateway` for ``tenant``; released (and the tenant unregistered) at exit."""
    await redis.sadd(keys.TENANTS_KEY, tenant)
    gw = Gateway(engine, redis, tenant, **kw)
    try:
        yield gw
    finally:
        await gw.close()


# --------------------------------------------------------------- exactly-once checks


class Workload:
    """Arrivals and releases (``close_session`` / ``customer_leave``) with unique command
    ids, some entries sent twice (right away or much later).

    ``entries`` is the send order (duplicates included); ``order`` the distinct command ids
    in first-send order; ``session_of`` the session each command is about.
    """

    def __init__(
        self, rng: random.Random, n_arrivals: int, groups: list[str], *, prefix: str = "",
        release_rate: float = 0.85, dup_rate: float = 0.04,
    ) -> None:
        self.dup_rate = dup_rate
        self.entries: list[dict[str, Any]] = []
        self.order: list[str] = []
        self.kind: dict[str, str] = {}
        self.session_of: dict[str, str] = {}
        open_sessions: list[str] = []
        for i in range(n_arrivals):
            sid = f"{prefix}s{i}"
            self._add({"type": "arrive", "id": f"{prefix}a{i}", "session": sid,
                       "group": rng.choice(groups), "gateway": "web"}, rng)
            open_sessions.append(sid)
            if rng.random() < release_rate:
                sid = open_sessions.pop(rng.randrange(len(open_sessions)))
                kind = rng.choice(["close_session", "customer_leave"])
                self._add({"type": kind, "id": f"{prefix}r{i}", "session": sid}, rng)

    def _add(self, cmd: dict[str, Any], rng: random.Random) -> None:
        self.entries.append(cmd)
        self.order.append(cmd["id"])
        self.kind[cmd["id"]] = cmd["type"]
        self.session_of[cmd["id"]] = cmd["session"]
        if rng.random() < self.dup_rate:
            self.entries.append(cmd)                            # retried at once
        if rng.random() < self.dup_rate:
            self.entries.append(rng.choice(self.entries))       # a late retry

    @property
    def duplicates(self) -> int:
        return len(self.entries) - len(self.order)

    def fields(self, cmd: dict[str, Any]) -> dict[bytes, bytes]:
        return {b"json": json.dumps(cmd).encode()}


def check_exactly_once(
    events: list[dict[str, Any]], wl: Workload
) -> dict[str, tuple[str, str | None]]:
    """The outbound log of ``wl`` shows each command applied exactly once, in send order.

    Each command's events are one contiguous block, blocks in first-send order; an
    arrival is exactly one ``assigned`` or ``queued`` of its session; a release is the
    ``closed`` of its session then ``assigned`` events of the customers the freed agent
    took. A session is assigned at most once, nothing follows its ``closed``. Every entry
    sent again gets one ``duplicate`` event, after its command was applied.

    Returns:
        session -> (final state, agent): ("queued", None), ("assigned", agent) or
        ("closed", None).
    """
    errors = [e for e in events if e["type"] == "error"]
    assert errors == [], errors[:5]
    blocks: list[tuple[str, list[dict[str, Any]]]] = []
    applied: set[str] = set()
    duplicates = 0
    for e in events:
        cmd = e.get("cmd")
        assert cmd is not None, f"event without a command: {e}"
        if e["type"] == "duplicate":  # a resent entry: its command was applied before
            assert cmd in applied, f"duplicate of a command not applied yet: {e}"
            duplicates += 1
            continue
        applied.add(cmd)
        if blocks and blocks[-1][0] == cmd:
            blocks[-1][1].append(e)
        else:
            blocks.append((cmd, [e]))
    seen = [cmd for cmd, _ in blocks]
    dupes = sorted({c for c in seen if seen.count(c) > 1}) if len(seen) != len(set(seen)) else []
    assert dupes == [], f"commands applied twice or out of order: {dupes[:10]}"
    missing = [c for c in wl.order if c not in set(seen)]
    assert missing == [], f"commands never applied: {missing[:10]}"
    assert seen == wl.order, "commands applied out of order"
    assert duplicates == wl.duplicates, (duplicates, wl.duplicates)

    state: dict[str, tuple[str, str | None]] = {}
    for cmd, evs in blocks:
        sid = wl.session_of[cmd]
        if wl.kind[cmd] == "arrive":
            assert len(evs) == 1 and evs[0]["session"] == sid, evs
            assert evs[0]["type"] in ("assigned", "queued"), evs
            assert evs[0]["gateway"] == "web"
            assert sid not in state, f"{sid} arrived twice"
            state[sid] = (evs[0]["type"], evs[0].get("agent"))
            continue
        head, rest = evs[0], evs[1:]
        assert head["type"] == "closed" and head["session"] == sid, evs
        assert state.get(sid, ("closed",))[0] != "closed", f"{sid} closed twice"
        assert head.get("agent") == state[sid][1]
        state[sid] = ("closed", None)
        for e in rest:
            assert e["type"] == "assigned", evs
            other = e["session"]
            assert state.get(other, ("?",))[0] == "queued", \
                f"{other} assigned while {state.get(other)}"
            state[other] = ("assigned", e["agent"])
    return state


async def check_final_state(
    engine: Engine, tenant: str, state: dict[str, tuple[str, str | None]],
    agents: Mapping[str, tuple[int, list[str]]],
) -> None:
    """The stored sessions and agents agree with the event log's final ``state``.

    ``agents``: agent -> (capacity, groups). Loads equal the open sessions per agent and
    never exceed capacity; no group has a waiting customer while one of its online
    agents has room (work conservation).
    """
    load: dict[str, int] = dict.fromkeys(agents, 0)
    waiting: set[str] = set()
    for sid, (st, agent) in state.items():
        view = await engine.session(tenant, sid)
        assert view is not None, sid
        assert (view.state, view.agent if st == "assigned" else None) == (st, agent), (sid, view)
        if st == "assigned":
            assert agent is not None
            load[agent] += 1
        elif st == "queued":
            waiting.add(view.group)
    for name, (capacity, groups) in agents.items():
        view = await engine.agent(tenant, name)
        assert view is not None
        assert view.load == load[name] <= capacity, (name, view.load, load[name])
        if view.status == "online" and view.load < capacity:
            assert not waiting & set(groups), (name, waiting)
