"""``sweep``: Redis CPU per command on one workload at several numbers of agents.

1. For each number of agents, in a tenant of its own: the centre of that size
   (:func:`bench.centre.build_centre`: 50 Zipf groups, 3 skills per agent, capacity 3)
   is configured and set online through ``Engine.apply_batch``, 1,000 commands per
   call; then ``slots`` customers arrive the same way (Zipf groups, priority -2..5).
   Most agents fill up; an agent whose groups draw fewer customers than its capacity
   keeps free slots, and the popular groups queue the difference. Every centre starts
   equally busy, and its workload mixes arrivals assigned at once, arrivals queued and
   closes whose agent takes a queued customer in about the same shares.
2. A fixed workload runs through ``dispatchd_gateway`` directly (:mod:`bench.direct`),
   the same number of cycles on every centre: per cycle, on an assigned session picked
   at random, ``agent_message`` and ``close_session`` (the freed agent takes a customer
   queued in its groups, if any) and a new ``arrive`` (assigned when an agent of its
   group is free, else queued). 100 commands per ``FCALL``, every 10th call with
   ``tick`` (the daemon ticks every 100 ms). Set-up and workload run at one fixed clock
   and in order, so a run is the same work every time (for a seed).
3. The cycles run in passes of at most ``PASS`` cycles, taking the centres in turn (one
   unmeasured pass each first), so that a slower or faster moment of the machine
   touches every centre alike and all of them are in the server's memory throughout.
   Between passes (not measured) ``{T}:out`` is read for the sessions assigned
   meanwhile, as a gateway would.
4. The tenants are deleted.

The figure is Redis µs per command; its ratio between the largest and the smallest
centre shows whether any path grows with the number of agents (then it is well above 1).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.centre import ArrivalStream, apply_in_batches, build_centre, centre_commands
from bench.direct import Assignments, Gateway, Tally
from bench.scale import queued_now
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Assigned, Command, Outcome
from dispatchd.protocol import AgentMessageCmd, ArriveCmd, CloseSessionCmd, GatewayCommand

#: Cycles per pass (the smallest centre has ~1,500 assigned sessions to pick from).
PASS = 1000
#: Every this many calls, one also ticks.
TICK_EVERY = 10


@dataclass(frozen=True)
class SweepSpec:
    """What every centre shares."""

    groups: int
    capacity: int
    cycles: int
    seed: int


@dataclass(frozen=True)
class SweepPoint:
    """One number of agents: the workload's figures."""

    agents: int
    slots: int
    queued: int
    """Customers queued when the workload started."""
    tally: Tally


class SweepCentre:
    """One centre of the sweep in its own tenant."""

    def __init__(self, engine: Engine, tenant: str, spec: SweepSpec, agents: int) -> None:
        self.engine = engine
        self.spec = spec
        self.agents = agents
        self.gw = Gateway(engine.redis, tenant, 0)
        self.assignments = Assignments(engine.redis, tenant)
        self.rng = random.Random(spec.seed)
        self.stream = ArrivalStream(spec.groups, spec.seed * 7919 + agents)
        self.slots = self.queued = self.cycles = 0
        self.tally = Tally()

    async def setup(self, now_ms: int) -> None:
        """Configure the centre and fill it (step 1) at the clock ``now_ms``, in order."""
        spec, tenant = self.spec, self.gw.tenant
        self.gw.now_ms = now_ms
        await self.gw.reset()
        centre = build_centre(spec.groups, self.agents, spec.capacity, spec.seed)
        self.slots = centre.slots
        await apply_in_batches(self.engine, tenant,
                               centre_commands(centre, spec.seed, online=True), depth=1,
                               now_ms=now_ms)
        stream = ArrivalStream(spec.groups, spec.seed + self.agents)
        arrivals: list[Command] = []
        for i in range(centre.slots):
            group, priority = stream.next()
            arrivals.append(Arrive(session=f"p{i}", group=f"g{group}", priority=priority))
        for item in await apply_in_batches(self.engine, tenant, arrivals, depth=1,
                                           now_ms=now_ms):
            if isinstance(item, Outcome):
                for e in item.events:
                    if isinstance(e, Assigned):
                        self.assignments.add(e.session, e.agent)
        self.queued = await queued_now(self.engine.redis, tenant, spec.groups)

    def _cycles(self, n: int) -> list[GatewayCommand]:
        """``n`` cycles on assigned sessions picked at random (taken out of the pool)."""
        agent_of, gw = self.assignments.agent_of, self.gw
        picked = self.rng.sample(list(agent_of), min(n, len(agent_of)))
        cmds: list[GatewayCommand] = []
        for session in picked:
            group, priority = self.stream.next()
            self.cycles += 1
            cmds += [AgentMessageCmd(id=gw.next_id("c"), session=session,
                                     agent=agent_of.pop(session)),
                     CloseSessionCmd(id=gw.next_id("c"), session=session),
                     ArriveCmd(id=gw.next_id("c"), session=f"n{self.cycles}",
                               group=f"g{group}", priority=priority, gateway="bench")]
        return cmds

    async def run_pass(self, cycles: int, *, measured: bool = True) -> int:
        """One pass of ``cycles`` cycles (step 3); how many ran."""
        cmds = self._cycles(cycles)
        if cmds:
            staged = await self.gw.stage(cmds)
            tally = await self.gw.run(self.gw.batches(staged, tick_every=TICK_EVERY))
            if measured:
                self.tally.add(tally)
            await self.assignments.follow()
        return len(cmds) // 3

    def point(self) -> SweepPoint:
        """The figures so far."""
        return SweepPoint(agents=self.agents, slots=self.slots, queued=self.queued,
                          tally=self.tally)


async def sweep(engine: Engine, tenants: dict[int, str], spec: SweepSpec,
                progress: Callable[[str], None]) -> list[SweepPoint]:
    """Measure every number of agents in ``tenants`` (agents -> tenant) together (see the
    module docstring); the figures in the order of ``tenants``."""
    centres: Sequence[SweepCentre] = [SweepCentre(engine, tenant, spec, agents)
                                      for agents, tenant in tenants.items()]
    now_ms = time.time_ns() // 1_000_000
    try:
        for c in centres:
            await c.setup(now_ms)
            progress(f"sweep: {c.agents:,} agents set up: {len(c.assignments.agent_of):,} "
                     f"assigned, {c.queued:,} queued")
        for c in centres:
            await c.run_pass(PASS // 2, measured=False)
        progress(f"sweep: {spec.cycles:,} cycles on each centre, in turn")
        done = 0
        while done < spec.cycles:
            ran = [await c.run_pass(min(PASS, spec.cycles - done)) for c in centres]
            if not max(ran):
                break
            done += max(ran)
        return [c.point() for c in centres]
    finally:
        for c in centres:
            await c.gw.delete()
