"""The gateway load generator and the simulated agents, on the real streams.

An open loop: customers ``arrive`` at a set rate whatever the daemon does (so a daemon
that falls behind shows up as backlog and latency, not as a politely slower client).
Every command is timestamped when it is handed to Redis (``XADD`` on ``{T}:in``); one
reader follows ``{T}:out`` and matches each event to its command by ``cmd``. On each
``assigned`` event the simulated agent replies (``agent_message``) after 0.1-0.3 x
``handle_s`` and closes (``close_session``) after 0.5-1.5 x ``handle_s``, so the centre
reaches a steady state: 3 commands per customer (the mix is steady ``1.5 x handle_s``
after a rate change; steps warm up at least that long).

Latencies, for commands sent inside a measurement window:

* command -> event: from the XADD to the reader seeing the first event with that ``cmd``;
* arrival -> assignment: from the ``arrive`` XADD to the reader seeing the session's
  ``assigned`` event (includes any time spent queued).

A command with no event when the window is closed (``TAIL_S`` after its end) counts with
its age then, a lower bound (flagged).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from bench.centre import ArrivalStream
from dispatchd import keys
from dispatchd.protocol import AgentMessageCmd, ArriveCmd, CloseSessionCmd, GatewayCommand

TICK_S = 0.005
TAIL_S = 0.5
#: A rate is sustained when p99 command -> event stays within this.
MAX_P99_MS = 250.0
#: ... the generator sent at least this share of the asked arrivals (the agents' commands
#: follow the daemon's events, so they are not the generator's to keep up with) ...
MIN_ACHIEVED = 0.95
#: ... and the inbound backlog grew by at most this share of what was sent in the window,
#: plus one batch (the daemon reads 500 at a time).
BACKLOG_SHARE, BACKLOG_SLACK = 0.05, 500
_MAX_PER_TICK = 5000
_json = msgspec.json.Encoder()


class _Event(msgspec.Struct):
    type: str
    cmd: str | None = None
    session: str | None = None
    agent: str | None = None


_decode_event = msgspec.json.Decoder(_Event).decode


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


@dataclass
class _Window:
    start: float
    end: float = math.inf
    first: list[float] = field(default_factory=list)
    assign: list[float] = field(default_factory=list)
    queued_first: int = 0

    def holds(self, sent: float) -> bool:
        return self.start <= sent < self.end


@dataclass(frozen=True)
class _Marks:
    t: float
    sent: int
    arrivals: int
    backlog: int
    redis_cpu: float
    daemon_cpu: float
    own_cpu: float


@dataclass(frozen=True)
class StepResult:
    """One fixed-rate step. Rates are commands/s unless named otherwise; CPU figures are
    µs per command applied in the window; latencies are ms."""

    target: float
    rate: float
    arrivals_rate: float
    applied_rate: float
    backlog_start: int
    backlog_end: int
    latency: tuple[float, float, float]
    """command -> first event: p50, p99, p99.9."""
    assign: tuple[float, float, float]
    """arrival -> assignment: p50, p99, p99.9."""
    lower_bound: bool
    queued_first: int
    errors: int
    redis_cpu_us: float
    daemon_cpu_us: float
    gen_cpu_us: float
    seconds: float
    slack: float = BACKLOG_SLACK
    """Backlog growth allowed besides ``BACKLOG_SHARE`` of what was sent."""
    per_customer: int = 3
    """Units of ``target`` per arrival (3 commands; 1 for BullMQ's jobs)."""

    @property
    def backlog_growth(self) -> int:
        """Commands added to the inbound backlog during the window."""
        return self.backlog_end - self.backlog_start

    @property
    def why_not(self) -> str:
        """Why the rate was not sustained ("" when it was)."""
        reasons = []
        if self.arrivals_rate < MIN_ACHIEVED * self.target / self.per_customer:
            reasons.append(f"generator sent {self.arrivals_rate:,.0f} arrivals/s")
        if self.backlog_growth > BACKLOG_SHARE * self.rate * self.seconds + self.slack:
            reasons.append(f"backlog +{self.backlog_growth:,}")
        if self.latency[1] > MAX_P99_MS:
            reasons.append(f"p99 {self.latency[1]:,.0f} ms")
        return ", ".join(reasons)

    @property
    def sustained(self) -> bool:
        """Sent at the asked rate, backlog flat, p99 within ``MAX_P99_MS``."""
        return not self.why_not


class LoadGen:
    """Drives one tenant through the daemon. Use ``async with``; then :meth:`step`.

    Args:
        send, read: two clients (the reader blocks on ``XREAD``).
        tenant: the tenant the daemon serves, its groups ``g0..`` configured.
        stream: where arrivals come from.
        handle_s: mean handle time of a session.
        daemon_cpu: the daemon's CPU seconds so far.
    """

    def __init__(self, send: aioredis.Redis, read: aioredis.Redis, tenant: str,
                 stream: ArrivalStream, *, handle_s: float, seed: int,
                 daemon_cpu: Callable[[], float]) -> None:
        self.send, self.read, self.stream = send, read, stream
        self.inbound, self.outbound = keys.key("inbound", tenant), keys.key("outbound", tenant)
        self.handle_s, self.daemon_cpu = handle_s, daemon_cpu
        self.rng = random.Random(seed)
        self.sent_at: dict[str, float] = {}
        self.arrive_at: dict[str, float] = {}
        self.timers: list[tuple[float, int, str, str, str]] = []
        self._seq = 0
        self.window: _Window | None = None
        self.sessions = self.sent = self.arrivals = self.closed = self.errors = 0
        self._arrival_rate, self._rate_t0, self._rate_sent = 0.0, 0.0, 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def __aenter__(self) -> LoadGen:
        last = await self.read.xrevrange(self.outbound, count=1)
        after: Any = last[0][0] if last else b"0-0"
        self._tasks = [asyncio.create_task(self._send_loop()),
                       asyncio.create_task(self._read_loop(after))]
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The loops stop by themselves within a tick or one XREAD block: redis-py (8.1)
        # can hang for good when a task is cancelled in the middle of a pipeline.
        self._stopping = True
        _done, pending = await asyncio.wait(self._tasks, timeout=10)
        for task in pending:
            task.cancel()

    # ------------------------------------------------------------------------ sending

    def set_rate(self, commands_per_s: float) -> None:
        """Arrivals from now on at ``commands_per_s / 3`` customers per second."""
        self._arrival_rate = commands_per_s / 3
        self._rate_t0, self._rate_sent = time.perf_counter(), 0

    def _due_arrivals(self, now: float) -> int:
        due = int((now - self._rate_t0) * self._arrival_rate) - self._rate_sent
        return max(0, min(due, _MAX_PER_TICK))

    def _arrival(self) -> tuple[GatewayCommand, str]:
        n = self.sessions = self.sessions + 1
        group, priority = self.stream.next()
        cmd = ArriveCmd(id=f"a{n}", session=f"s{n}", group=f"g{group}", priority=priority,
                        gateway="bench", ts=time.time_ns() // 1_000_000)
        return cmd, f"s{n}"

    def _agent_command(self, kind: str, session: str, agent: str) -> GatewayCommand:
        if kind == "m":
            return AgentMessageCmd(id="m" + session[1:], session=session, agent=agent)
        return CloseSessionCmd(id="c" + session[1:], session=session)

    async def _send_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            cmds: list[GatewayCommand] = []
            arrived: list[str] = []
            for _ in range(self._due_arrivals(now)):
                cmd, session = self._arrival()
                cmds.append(cmd)
                arrived.append(session)
            self._rate_sent += len(arrived)
            while self.timers and self.timers[0][0] <= now and len(cmds) < 2 * _MAX_PER_TICK:
                _due, _seq, kind, session, agent = heapq.heappop(self.timers)
                cmds.append(self._agent_command(kind, session, agent))
            if cmds:
                await self._xadd(cmds, arrived)

    async def _xadd(self, cmds: list[GatewayCommand], arrived: list[str]) -> None:
        pipe = self.send.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command("XADD", self.inbound, "*", "json", _json.encode(cmd))
        t = time.perf_counter()
        for cmd in cmds:
            self.sent_at[cmd.id] = t
        for session in arrived:
            self.arrive_at[session] = t
        self.sent += len(cmds)
        self.arrivals += len(arrived)
        await pipe.execute()

    # ------------------------------------------------------------------------ reading

    async def _read_loop(self, after: Any) -> None:
        while not self._stopping:
            rows = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
                await self.read.xread({self.outbound: after}, count=10_000, block=100),
            )
            now = time.perf_counter()
            for _stream, entries in rows or []:
                for _eid, fields in entries:
                    self._on_event(_decode_event(fields[b"json"]), now)
                after = entries[-1][0]

    def _on_event(self, ev: _Event, now: float) -> None:
        w = self.window
        if ev.cmd is not None:
            sent = self.sent_at.pop(ev.cmd, None)
            if sent is not None and w is not None and w.holds(sent):
                w.first.append(now - sent)
                w.queued_first += ev.type == "queued"
        if ev.type == "assigned" and ev.session is not None:
            sent = self.arrive_at.pop(ev.session, None)
            if sent is not None and w is not None and w.holds(sent):
                w.assign.append(now - sent)
            self._schedule(now, ev.session, ev.agent or "")
        elif ev.type == "closed":
            self.closed += 1
        elif ev.type == "error":
            self.errors += 1

    def _schedule(self, now: float, session: str, agent: str) -> None:
        """The agent replies after 0.1-0.3 and closes after 0.5-1.5 handle times."""
        rng, self._seq = self.rng, self._seq + 2
        reply = now + self.handle_s * rng.uniform(0.1, 0.3)
        close = max(reply + 0.01, now + self.handle_s * rng.uniform(0.5, 1.5))
        heapq.heappush(self.timers, (reply, self._seq, "m", session, agent))
        heapq.heappush(self.timers, (close, self._seq + 1, "c", session, agent))

    # ---------------------------------------------------------------------- measuring

    async def _marks(self) -> _Marks:
        """The counters, the backlog and the CPU clocks, read together."""
        pipe = self.send.pipeline(transaction=False)
        pipe.xlen(self.inbound)
        pipe.info("cpu")
        backlog, cpu = await pipe.execute()
        return _Marks(time.perf_counter(), self.sent, self.arrivals, int(backlog),
                      float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
                      self.daemon_cpu(), time.process_time())

    async def step(self, target: float, warm_s: float, measure_s: float) -> StepResult:
        """Run at ``target`` commands/s: ``warm_s`` unmeasured, then ``measure_s``
        measured, then ``TAIL_S`` more for the window's last events (the rate stays)."""
        errors0 = self.errors
        self.set_rate(target)
        await asyncio.sleep(warm_s)
        a = await self._marks()
        self.window = w = _Window(start=time.perf_counter())
        await asyncio.sleep(measure_s)
        w.end = time.perf_counter()
        b = await self._marks()
        await asyncio.sleep(TAIL_S)
        return self._result(target, a, b, w, self.errors - errors0)

    def _unresolved(self, pending: dict[str, float], w: _Window, now: float) -> list[float]:
        return [now - sent for sent in pending.values() if w.holds(sent)]

    def _result(self, target: float, a: _Marks, b: _Marks, w: _Window, errors: int) -> StepResult:
        now = time.perf_counter()
        late = self._unresolved(self.sent_at, w, now)
        late_assign = self._unresolved(self.arrive_at, w, now)
        first, assign = sorted(w.first + late), sorted(w.assign + late_assign)
        self.window = None
        secs = b.t - a.t
        sent = b.sent - a.sent
        applied = max(1, sent - (b.backlog - a.backlog))
        return StepResult(
            target=target, rate=sent / secs, arrivals_rate=(b.arrivals - a.arrivals) / secs,
            applied_rate=applied / secs, backlog_start=a.backlog, backlog_end=b.backlog,
            latency=_pcts(first), assign=_pcts(assign), lower_bound=bool(late or late_assign),
            queued_first=w.queued_first, errors=errors,
            redis_cpu_us=(b.redis_cpu - a.redis_cpu) / applied * 1e6,
            daemon_cpu_us=(b.daemon_cpu - a.daemon_cpu) / applied * 1e6,
            gen_cpu_us=(b.own_cpu - a.own_cpu) / applied * 1e6, seconds=secs,
        )

    async def quiesce(self, timeout: float) -> bool:
        """Stop arrivals and wait until every session is closed and every command has
        its event; False if that took longer than ``timeout`` seconds."""
        self.set_rate(0)
        deadline = time.monotonic() + timeout
        while self.timers or self.sent_at or self.closed < self.arrivals:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def _pcts(sorted_s: list[float]) -> tuple[float, float, float]:
    return tuple(percentile(sorted_s, q) * 1e3 for q in (0.5, 0.99, 0.999))  # type: ignore[return-value]
