"""``ops``: Redis CPU per operation type on the daemon's path (``dispatchd_gateway``).

In its own tenant, at a fixed clock, with the state each operation needs set up first
(outside the measurement), ``n`` operations of each type are staged on ``{T}:in`` and
applied ``PER_CALL`` per ``FCALL dispatchd_gateway`` (see :mod:`bench.direct`), in this
order, each phase leaving the state the next needs:

1. ``arrive_assigned``: ``n`` arrivals, each finding a free agent (``n/4`` agents of
   capacity 4, every one in the 3 groups, all online and free: exactly ``n`` slots);
2. ``agent_message``: the agent of each of those sessions replies (its first reply);
3. ``arrive_queued``: ``n`` more arrivals; every agent is busy, so all queue;
4. ``empty_call``: calls with no command and no tick (per call);
5. ``tick_idle``: calls with only ``tick``, nothing due (per call);
6. ``close_take``: ``close_session`` of the first ``n`` sessions; each freed agent takes
   the head of the queue;
7. ``close``: ``close_session`` of the ``n`` sessions just taken, nobody waiting;
8. ``agent_ready``: an agent becomes ready and takes a queued customer. ``agent_ready``
   itself never finds one (every command that frees capacity fills it at once), so this
   is ``set_agent_status online`` of ``n`` offline agents of capacity 1, with ``n``
   customers queued (the first agents set offline, the new ones and the customers set
   up through ``Engine.apply_batch``).

Each phase's outcome is checked against what it should do (``Op.expect``); a mismatch
is reported with the figures, never hidden.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.centre import GROUP_SETTINGS, apply_in_batches
from bench.direct import PER_CALL, Assignments, Gateway, Tally
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Command, ConfigureAgent, ConfigureGroup, SetAgentStatus
from dispatchd.protocol import (
    AgentMessageCmd,
    ArriveCmd,
    CloseSessionCmd,
    GatewayCommand,
    SetAgentStatusCmd,
)

GROUPS = ("g0", "g1", "g2")
ABILITIES = {"g0": 3.0, "g1": 2.0, "g2": 1.0}
#: Capacity of the agents of phases 1-7 (``n / CAPACITY`` of them: exactly ``n`` slots).
CAPACITY = 4


@dataclass(frozen=True)
class Op:
    """One operation type's figures."""

    name: str
    text: str
    per_call: int
    """Operations per ``FCALL`` (1 for the calls without commands)."""
    tally: Tally
    expect: dict[str, int]
    """Event types (or ``applied``) the phase must have produced, and how many."""

    @property
    def ops(self) -> int:
        """Operations measured: commands, or calls when the calls carry none."""
        return self.tally.commands or self.tally.calls

    @property
    def us(self) -> float:
        """Redis µs per operation (inside FCALL when known)."""
        return self.tally.us(self.ops)

    @property
    def cpu_us(self) -> float:
        """The whole server's CPU µs per operation."""
        return self.tally.cpu_us(self.ops)

    def mismatch(self) -> str:
        """What differs from the expected outcome ("" when nothing)."""
        t = self.tally
        got = {k: t.applied if k == "applied" else t.types.get(k, 0) for k in self.expect}
        wrong = [f"{k} {got[k]:,} (expected {v:,})" for k, v in self.expect.items()
                 if got[k] != v]
        if t.failed:
            wrong.append(f"{t.failed:,} refused")
        if t.not_held:
            wrong.append(f"{t.not_held:,} calls without the lease")
        return ", ".join(wrong)


class OpsRun:
    """The phases of one ``ops`` run in ``tenant`` (see the module docstring)."""

    def __init__(self, engine: Engine, tenant: str, n: int,
                 progress: Callable[[str], None]) -> None:
        self.engine = engine
        self.agents = max(1, n // CAPACITY)
        self.n = self.agents * CAPACITY
        self.progress = progress
        self.gw = Gateway(engine.redis, tenant, time.time_ns() // 1_000_000)
        self.assignments = Assignments(engine.redis, tenant)
        self.results: list[Op] = []

    async def _setup(self, cmds: Sequence[Command]) -> None:
        """Apply setup commands (not measured) at the run's clock, in order."""
        await apply_in_batches(self.engine, self.gw.tenant, cmds, depth=1,
                               now_ms=self.gw.now_ms)

    async def _measure(self, name: str, text: str, cmds: Sequence[GatewayCommand],
                       expect: dict[str, int]) -> None:
        staged = await self.gw.stage(cmds)
        tally = await self.gw.run(self.gw.batches(staged))
        self._record(Op(name=name, text=text, per_call=PER_CALL, tally=tally, expect=expect))

    async def _measure_empty(self, name: str, text: str, *, tick: bool) -> None:
        tally = await self.gw.run(self.gw.empty_calls(self.n, tick=tick), depth=PER_CALL)
        self._record(Op(name=name, text=text, per_call=1, tally=tally,
                        expect={"applied": 0}))

    def _record(self, op: Op) -> None:
        self.results.append(op)
        self.progress(f"ops: {op.name}: {op.us:,.1f} µs/op")

    def _arrivals(self, prefix: str) -> list[GatewayCommand]:
        return [ArriveCmd(id=self.gw.next_id("c"), session=f"{prefix}{i}",
                          group=GROUPS[i % len(GROUPS)], gateway="bench")
                for i in range(self.n)]

    def _closes(self, prefix: str) -> list[GatewayCommand]:
        return [CloseSessionCmd(id=self.gw.next_id("c"), session=f"{prefix}{i}")
                for i in range(self.n)]

    async def run(self) -> list[Op]:
        """Every phase in order; the figures of each."""
        n, gw = self.n, self.gw
        await gw.reset()
        await self._setup([
            *(ConfigureGroup(group=g, queue_warning_ms=0, **GROUP_SETTINGS) for g in GROUPS),
            *(ConfigureAgent(agent=f"a{i}", capacity=CAPACITY, abilities=ABILITIES)
              for i in range(self.agents)),
            *(SetAgentStatus(agent=f"a{i}", status="online") for i in range(self.agents)),
        ])
        await self._measure("arrive_assigned", "arrive, assigned at once (a free agent)",
                            self._arrivals("s"), {"assigned": n})
        await self.assignments.follow()
        replies: list[GatewayCommand] = [
            AgentMessageCmd(id=gw.next_id("c"), session=f"s{i}",
                            agent=self.assignments.agent_of.get(f"s{i}", "a0"))
            for i in range(n)]
        await self._measure("agent_message", "agent_message (the agent's first reply)",
                            replies, {"applied": n})
        await self._measure("arrive_queued", "arrive, queued (every agent busy)",
                            self._arrivals("q"), {"queued": n})
        await self._measure_empty("empty_call", "an empty call: no command, no tick "
                                  "(per call)", tick=False)
        await self._measure_empty("tick_idle", "a call with only tick, nothing due "
                                  "(per call)", tick=True)
        await self._measure("close_take", "close_session, the freed agent takes the head "
                            "of the queue", self._closes("s"), {"closed": n, "assigned": n})
        await self._measure("close", "close_session, nobody waiting (frees the agent)",
                            self._closes("q"), {"closed": n, "assigned": 0})
        await self._agent_ready()
        return self.results

    async def _agent_ready(self) -> None:
        """Offline agents of capacity 1 go online and each takes one queued customer."""
        n = self.n
        await self._setup([
            *(SetAgentStatus(agent=f"a{i}", status="offline") for i in range(self.agents)),
            *(ConfigureAgent(agent=f"b{i}", capacity=1, abilities=ABILITIES)
              for i in range(n)),
            *(Arrive(session=f"r{i}", group=GROUPS[i % len(GROUPS)]) for i in range(n)),
        ])
        online: list[GatewayCommand] = [
            SetAgentStatusCmd(id=self.gw.next_id("c"), agent=f"b{i}", status="online")
            for i in range(n)]
        await self._measure("agent_ready", "agent ready takes a queued customer "
                            "(set_agent_status online, capacity 1)", online,
                            {"assigned": n, "agent_status": n})
