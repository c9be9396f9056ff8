"""The discrete-event loop: one virtual clock, one heap of future events, one router.

A router is anything with ``apply(now_ms, commands) -> [Outcome | CommandFailed]``: the
real Lua engine (:class:`LuaRouter`, through ``Engine.apply_batch``) or a pure-Python
baseline (:mod:`dispatchd.simulate.baseline`). The loop sends both the same commands and
reads the same events back:

* an arrival -> ``arrive``; ``queued`` schedules the customer's abandonment (its
  patience) and its overflow steps (``escalate_overflow`` when a tier is due);
* ``assigned`` schedules ``release_session`` after the customer's handle time (times
  the serving agent's ``handle_factor`` for the customer's group);
* shift starts and ends -> ``set_agent_status`` online / offline.

Everything due at the same virtual millisecond goes to the router in one call (one
``apply_batch``), in the order it was scheduled; what a call causes is always due later
(handle times, patience and tier waits are >= 1 ms), so this is exact. An abandonment
that finds its customer just assigned by an earlier command of the same batch is refused
by the router and ignored.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from dispatchd.engine import Engine
from dispatchd.errors import DispatchError
from dispatchd.messages import (
    AbandonCustomer,
    Abandoned,
    Arrive,
    Assigned,
    BatchItem,
    Command,
    CommandFailed,
    ConfigureAgent,
    ConfigureGroup,
    EscalateOverflow,
    Queued,
    ReleaseSession,
    SetAgentStatus,
    Tier,
)
from dispatchd.simulate.workload import DRAIN_MS, Workload

#: Virtual time 0 as the routing core sees it: 2024-01-01T00:00:00Z.
BASE_MS = 1_704_067_200_000
#: Most commands sent in one router call.
CHUNK = 500
#: ConfigureGroup's lifecycle timers: all switched off in a simulation (it models no
#: conversation, so they would only add noise; patience models abandonment).
TIMER_FIELDS = (
    "queue_warning_ms", "queue_timeout_ms", "position_update_ms", "reply_sla_ms",
    "reply_reassign_ms", "silence_remind_ms", "silence_preclose_ms", "silence_close_ms",
    "confirm_close_ms",
)
#: ConfigureGroup's other fields, set from the scenario or left at their defaults; a
#: test fails when ConfigureGroup has a field in neither set.
SETTING_FIELDS = (
    "group", "k", "m", "priority_unit_ms", "tiers", "sticky_ms", "preference_ms",
    "service_level_ms", "service_level_target", "ticket_reassign_ms",
    "ticket_release_spread_ms", "record_decisions",
)

ARRIVE, RELEASE, ABANDON, ESCALATE, ONLINE, OFFLINE = range(6)


class SimulationError(DispatchError):
    """The router refused a command the simulation needed (a bug, or a bad server)."""


class Router(Protocol):
    """What the loop drives: the Lua engine or a baseline."""

    async def apply(self, now_ms: int, commands: Sequence[Command]) -> list[BatchItem]:
        """Apply ``commands`` in order at ``now_ms``; one item per command."""
        ...


class LuaRouter:
    """The SPEC policy: the real Lua scripts, through ``Engine.apply_batch``."""

    def __init__(self, engine: Engine, tenant: str) -> None:
        self.engine = engine
        self.tenant = tenant

    async def apply(self, now_ms: int, commands: Sequence[Command]) -> list[BatchItem]:
        """One ``apply_batch`` call."""
        return await self.engine.apply_batch(self.tenant, now_ms, commands)


class Records(msgspec.Struct):
    """What happened to each customer (lists indexed by customer number)."""

    wait_ms: list[int]  # arrival to assignment; -1 when never assigned
    tier: list[int]  # tier of the serving agent (0 own group); -1
    agent: list[int]  # index into Workload.agents; -1
    end_ms: list[int]  # session end or abandonment, ms from the start; -1 still open
    abandoned: list[bool]
    calls: int = 0  # router calls
    commands: int = 0  # commands in them
    elapsed_s: float = 0.0  # wall-clock time of the run (set-up included)


def setup_commands(work: Workload) -> list[Command]:
    """Groups, agents, and the agents online at time 0.

    Tiers may name each other in a cycle (presale -> aftersale -> presale), so every group
    is created first without tiers, then configured again with them.
    """
    fields = ConfigureGroup.__struct_fields__
    extra: dict[str, Any] = {name: 0 for name in TIMER_FIELDS if name in fields}
    if "service_level_ms" in fields:  # a build whose groups know their SL threshold
        extra["service_level_ms"] = round(work.scenario.service_level_s * 1000)
    bare: list[Command] = []
    tiered: list[Command] = []
    for g in work.scenario.groups:
        cmd = ConfigureGroup(group=g.name, k=g.k, m=g.m, tiers=[],
                             priority_unit_ms=round(g.priority_unit_s * 1000), **extra)
        bare.append(cmd)
        if g.tiers:
            tiers = [Tier(after_ms=round(t.after_s * 1000), groups=list(t.groups))
                     for t in g.tiers]
            tiered.append(msgspec.structs.replace(cmd, tiers=tiers))
    agents: list[Command] = [
        ConfigureAgent(agent=a.id, capacity=a.capacity, abilities=a.abilities)
        for a in work.agents
    ]
    online: list[Command] = [
        SetAgentStatus(agent=a.id, status="online")
        for a in work.agents if a.online and a.online[0][0] == 0
    ]
    return bare + tiered + agents + online


class Simulation:
    """One run of ``work`` through ``router``; :meth:`run` returns the records.

    ``progress(t_ms, calls)`` is called about every 2 s of wall-clock time.
    """

    def __init__(
        self,
        work: Workload,
        router: Router,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.work, self.router, self.progress = work, router, progress
        n = len(work.customers)
        self.records = Records([-1] * n, [-1] * n, [-1] * n, [-1] * n, [False] * n)
        self.queued = [False] * n
        self.agent_index = {a.id: i for i, a in enumerate(work.agents)}
        self.tier_waits = {g.name: [round(t.after_s * 1000) for t in g.tiers]
                           for g in work.scenario.groups}
        self.heap: list[tuple[int, int, int, int]] = []  # (t, seq, kind, arg)
        self.seq = 0
        self.in_system = 0
        self.escalated_to = -1

    def _push(self, t: int, kind: int, arg: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, arg))

    async def _call(self, t: int, cmds: list[Command]) -> list[BatchItem]:
        out: list[BatchItem] = []
        for i in range(0, len(cmds), CHUNK):
            chunk = cmds[i : i + CHUNK]
            out += await self.router.apply(BASE_MS + t, chunk)
            self.records.calls += 1
            self.records.commands += len(chunk)
        return out

    async def run(self) -> Records:
        """Set up the tenant, then play every event until the last customer is done."""
        started = time.perf_counter()
        setup = setup_commands(self.work)
        for cmd, item in zip(setup, await self._call(0, setup), strict=True):
            if isinstance(item, CommandFailed):
                raise SimulationError(f"set-up command {cmd!r} refused: {item.error}")
        self._schedule_inputs()
        last_report = time.perf_counter()
        while self.heap:
            t = self.heap[0][0]
            if t >= self.work.horizon_ms and self.in_system == 0:
                break
            await self._step(t)
            if self.progress and time.perf_counter() - last_report > 2.0:
                last_report = time.perf_counter()
                self.progress(t, self.records.calls)
        self.records.elapsed_s = time.perf_counter() - started
        return self.records

    def _schedule_inputs(self) -> None:
        for c in self.work.customers:
            self._push(c.at_ms, ARRIVE, c.idx)
        end = self.work.horizon_ms + DRAIN_MS
        for i, a in enumerate(self.work.agents):
            for start, stop in a.online:
                if start > 0:
                    self._push(start, ONLINE, i)
                if stop < end:
                    self._push(stop, OFFLINE, i)

    def _command(self, t: int, kind: int, arg: int) -> Command | None:
        """The command an event turns into, or None when it has become moot."""
        if kind == ARRIVE:
            c = self.work.customers[arg]
            self.in_system += 1
            return Arrive(session=f"c{arg}", group=c.group, priority=c.priority)
        if kind == RELEASE:
            self.in_system -= 1
            return ReleaseSession(session=f"c{arg}")
        if kind == ABANDON:
            return AbandonCustomer(session=f"c{arg}") if self.queued[arg] else None
        if kind == ESCALATE:
            if not self.queued[arg] or t <= self.escalated_to:
                return None  # served already, or opened by the call made at t
            self.escalated_to = t
            return EscalateOverflow(limit=10_000)
        agent = self.work.agents[arg].id
        return SetAgentStatus(agent=agent, status="online" if kind == ONLINE else "offline")

    async def _step(self, t: int) -> None:
        cmds: list[Command] = []
        kinds: list[int] = []
        while self.heap and self.heap[0][0] == t:
            _, _, kind, arg = heapq.heappop(self.heap)
            cmd = self._command(t, kind, arg)
            if cmd is not None:
                cmds.append(cmd)
                kinds.append(kind)
        for kind, cmd, item in zip(kinds, cmds, await self._call(t, cmds), strict=True):
            if isinstance(item, CommandFailed):
                if kind == ABANDON and item.error.startswith("E_SESSION_STATE"):
                    continue  # assigned by an earlier command of this very batch
                raise SimulationError(f"{cmd!r} refused at t={t} ms: {item.error}")
            for ev in item.events:
                self._event(t, ev)

    def _event(self, t: int, ev: object) -> None:
        match ev:
            case Assigned(session=sid, agent=aid, tier=tier, wait_ms=wait):
                idx = int(sid[1:])
                c, ai = self.work.customers[idx], self.agent_index[aid]
                if wait != t - c.at_ms:
                    raise SimulationError(f"{sid}: wait {wait} ms, expected {t - c.at_ms}")
                factor = self.work.agents[ai].handle_factor.get(c.group, 1.0)
                end = t + max(1, round(c.handle_ms * factor))
                r = self.records
                r.wait_ms[idx], r.tier[idx], r.agent[idx], r.end_ms[idx] = wait, tier, ai, end
                self.queued[idx] = False
                self._push(end, RELEASE, idx)
            case Queued(session=sid):
                idx = int(sid[1:])
                c = self.work.customers[idx]
                self.queued[idx] = True
                if c.patience_ms is not None:
                    self._push(c.at_ms + c.patience_ms, ABANDON, idx)
                for after in self.tier_waits[c.group]:
                    if after > t - c.at_ms:
                        self._push(c.at_ms + after, ESCALATE, idx)
            case Abandoned(session=sid):
                idx = int(sid[1:])
                self.queued[idx] = False
                self.records.abandoned[idx] = True
                self.records.end_ms[idx] = t
                self.in_system -= 1
            case _:
                pass  # released, agent_status, tier_opened, ...: nothing to schedule
