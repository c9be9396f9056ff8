"""Baseline routing policies in pure Python: longest-idle agent and round-robin.

They cannot live in the Lua router, so this module is a small routing engine of its own
that accepts the same commands as :class:`~dispatchd.engine.Engine` (the ones a
simulation sends) and answers with the same events, so the simulator runs every policy
on identical input through one event loop. What is shared with the SPEC policy:

* customers of a group wait in one queue ordered by virtual arrival
  ``arrival - priority x U``, ties by arrival then sequence (SPEC 2.2);
* overflow tiers open at the same waits, own-group agents are preferred to tier 1,
  tier 1 to tier 2, ... (SPEC 2.6);
* an agent is a candidate while online with ``load < capacity``.

What differs is the choice, and only the choice:

* **customer side** (a customer arrives or a tier opens, several agents are free):
  ``longest-idle`` takes the candidate whose last session ended longest ago (or that
  came online longest ago, whichever is later; ties by agent id); ``round-robin`` takes
  the first candidate after the agent who got the previous assignment, in one ring of
  all agents in configuration order.
* **agent side** (an agent frees up and customers wait): it takes the customer with the
  lowest virtual arrival among the heads of its own groups' queues, whatever its
  ability in them (SPEC prefers the group where its ability is highest); if none, the
  lowest tier, then lowest virtual arrival, among overflow customers it may take.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from dispatchd.messages import (
    AbandonCustomer,
    Abandoned,
    AgentConfigured,
    AgentStatusChanged,
    Arrive,
    Assigned,
    BatchItem,
    Command,
    CommandFailed,
    ConfigureAgent,
    ConfigureGroup,
    EscalateOverflow,
    Event,
    GroupConfigured,
    Outcome,
    Queued,
    Released,
    ReleaseSession,
    SetAgentStatus,
)

Policy = Literal["longest-idle", "round-robin"]
POLICIES: tuple[Policy, ...] = ("longest-idle", "round-robin")

QUEUED, ASSIGNED, CLOSED = "queued", "assigned", "closed"
Key = tuple[int, int, int, str]  # virtual arrival, arrival, sequence, session


@dataclass(eq=False)
class _Agent:
    id: str
    ring: int  # position in configuration order (round-robin)
    capacity: int
    groups: list[str]
    load: int = 0
    online: bool = False
    idle_since: int = 0


@dataclass(eq=False)
class _Group:
    name: str
    u_ms: int
    tiers: list[tuple[int, list[str]]]  # (after_ms, groups)
    members: list[_Agent] = field(default_factory=list)


@dataclass(eq=False)
class _Session:
    id: str
    group: str
    key: Key
    state: str = QUEUED
    tier: int = 0
    agent: _Agent | None = None


class BaselineRouter:
    """A routing engine for one tenant with a baseline ``policy`` (module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.groups: dict[str, _Group] = {}
        self.agents: dict[str, _Agent] = {}
        self.sessions: dict[str, _Session] = {}
        self.queues: dict[tuple[str, int], list[Key]] = {}  # (group, 0) own; (group, n) tier n
        self.sources: dict[str, dict[str, int]] = {}  # group -> {S: lowest tier listing it}
        self.due: list[tuple[int, str]] = []
        self.seq = 0
        self.last_ring = -1

    # ------------------------------------------------------------------- interface

    async def apply(self, now_ms: int, commands: Iterable[Command]) -> list[BatchItem]:
        """Apply ``commands`` in order at ``now_ms``, like ``Engine.apply_batch``."""
        return [self._one(now_ms, c) for c in commands]

    def _one(self, now: int, c: Command) -> BatchItem:
        ev: list[Event] = []
        match c:
            case Arrive():
                self._arrive(c, now, ev)
            case ReleaseSession(session=sid):
                self._release(sid, now, ev)
            case AbandonCustomer(session=sid):
                s = self.sessions.get(sid)
                if s is None or s.state != QUEUED:
                    return CommandFailed(error=f"E_SESSION_STATE {sid}")
                s.state = CLOSED
                ev.append(Abandoned(session=sid, group=s.group, wait_ms=now - s.key[1]))
            case EscalateOverflow(limit=limit):
                self._escalate(now, limit, ev)
            case SetAgentStatus(agent=aid, status=status):
                self._status(self.agents[aid], status, now, ev)
            case ConfigureGroup():
                self._configure_group(c, ev)
            case ConfigureAgent():
                self._configure_agent(c, ev)
            case _:
                return CommandFailed(error=f"E_UNKNOWN_OP {type(c).__name__}")
        return Outcome(events=ev)

    # --------------------------------------------------------------- configuration

    def _configure_group(self, c: ConfigureGroup, ev: list[Event]) -> None:
        old = self.groups.get(c.group)
        if old is not None and any(self.queues[(c.group, n)] for n in range(len(old.tiers) + 1)):
            raise ValueError(f"group {c.group!r} reconfigured while customers wait")  # a bug
        tiers = [(t.after_ms, list(t.groups)) for t in c.tiers]
        g = _Group(c.group, c.priority_unit_ms, tiers, old.members if old else [])
        self.groups[c.group] = g
        for listed in self.sources.values():
            listed.pop(c.group, None)
        self.queues[(c.group, 0)] = []
        for n, (_, names) in enumerate(tiers, 1):
            self.queues[(c.group, n)] = []
            for h in names:
                self.sources.setdefault(h, {}).setdefault(c.group, n)
        ev.append(GroupConfigured(group=c.group))

    def _configure_agent(self, c: ConfigureAgent, ev: list[Event]) -> None:
        if c.agent in self.agents:
            raise ValueError(f"agent {c.agent!r} configured twice")  # a simulator bug
        ag = _Agent(c.agent, len(self.agents), c.capacity, sorted(c.abilities))
        self.agents[c.agent] = ag
        for g in ag.groups:
            self.groups[g].members.append(ag)
        ev.append(AgentConfigured(agent=c.agent))

    def _status(self, ag: _Agent, status: str, now: int, ev: list[Event]) -> None:
        previous = "online" if ag.online else "offline"
        ev.append(AgentStatusChanged(agent=ag.id, status=status, previous=previous))  # type: ignore[arg-type]
        if status == "online" and not ag.online:
            ag.online, ag.idle_since = True, max(ag.idle_since, now)
            self._serve(ag, now, ev)
        elif status != "online":
            ag.online = False

    # ------------------------------------------------------------- customer side

    def _arrive(self, c: Arrive, now: int, ev: list[Event]) -> None:
        g = self.groups[c.group or ""]
        self.seq += 1
        s = _Session(c.session, g.name, (now - c.priority * g.u_ms, now, self.seq, c.session))
        self.sessions[c.session] = s
        s.tier = self._earned(g, 0, 0)
        if self._to_best_agent(s, now, ev):
            return
        for n in range(s.tier + 1):
            heapq.heappush(self.queues[(g.name, n)], s.key)
        self._schedule(s, g)
        ev.append(Queued(session=s.id, group=g.name, virtual_arrival_ms=s.key[0],
                         priority=c.priority, position=0, reason="arrival"))

    @staticmethod
    def _earned(g: _Group, tier: int, wait: int) -> int:
        while tier < len(g.tiers) and g.tiers[tier][0] <= wait:
            tier += 1
        return tier

    def _schedule(self, s: _Session, g: _Group) -> None:
        if s.tier < len(g.tiers):
            heapq.heappush(self.due, (s.key[1] + g.tiers[s.tier][0], s.id))

    def _escalate(self, now: int, limit: int, ev: list[Event]) -> None:
        done = 0
        while self.due and self.due[0][0] <= now and done < limit:
            _, sid = heapq.heappop(self.due)
            s = self.sessions[sid]
            if s.state != QUEUED:
                continue
            done += 1
            g = self.groups[s.group]
            opened, s.tier = s.tier, self._earned(g, s.tier, now - s.key[1])
            for n in range(opened + 1, s.tier + 1):
                heapq.heappush(self.queues[(g.name, n)], s.key)
            self._schedule(s, g)
            if s.tier > opened:
                self._to_best_agent(s, now, ev)

    def _to_best_agent(self, s: _Session, now: int, ev: list[Event]) -> bool:
        g = self.groups[s.group]
        pools = [[g.name], *(names for _, names in g.tiers[: s.tier])]
        for tier, names in enumerate(pools):
            free = [a for h in names for a in self.groups[h].members
                    if a.online and a.load < a.capacity]
            if free:
                self._assign(s, self._pick(free), tier, now, ev)
                return True
        return False

    def _pick(self, free: list[_Agent]) -> _Agent:
        if self.policy == "longest-idle":
            return min(free, key=lambda a: (a.idle_since, a.id))
        size, last = len(self.agents), self.last_ring
        return min(free, key=lambda a: (a.ring - last - 1) % size)

    # ---------------------------------------------------------------- agent side

    def _release(self, sid: str, now: int, ev: list[Event]) -> None:
        s = self.sessions[sid]
        ag = s.agent
        if s.state != ASSIGNED or ag is None:
            raise ValueError(f"release of {sid} in state {s.state}")  # a simulator bug
        s.state, ag.load, ag.idle_since = CLOSED, ag.load - 1, now
        ev.append(Released(session=sid, agent=ag.id, reason="closed"))
        self._serve(ag, now, ev)

    def _head(self, queue: list[Key]) -> Key | None:
        while queue and self.sessions[queue[0][3]].state != QUEUED:
            heapq.heappop(queue)  # taken or gone since it was queued: drop lazily
        return queue[0] if queue else None

    def _next_for(self, ag: _Agent) -> tuple[Key, int] | None:
        heads = [k for g in ag.groups if (k := self._head(self.queues[(g, 0)]))]
        if heads:
            return min(heads), 0
        best: tuple[int, Key] | None = None
        mine = set(ag.groups)
        lowest: dict[str, int] = {}
        for g in ag.groups:
            for src, n in self.sources.get(g, {}).items():
                if src not in mine and n < lowest.get(src, 1 << 30):
                    lowest[src] = n
        for src, n in lowest.items():
            k = self._head(self.queues[(src, n)])
            if k is not None and (best is None or (n, k) < best):
                best = (n, k)
        return (best[1], best[0]) if best else None

    def _serve(self, ag: _Agent, now: int, ev: list[Event]) -> None:
        while ag.online and ag.load < ag.capacity:
            found = self._next_for(ag)
            if found is None:
                return
            key, tier = found
            self._assign(self.sessions[key[3]], ag, tier, now, ev)

    def _assign(self, s: _Session, ag: _Agent, tier: int, now: int, ev: list[Event]) -> None:
        s.state, s.agent = ASSIGNED, ag
        ag.load += 1
        self.last_ring = ag.ring
        ev.append(Assigned(session=s.id, agent=ag.id, group=s.group, tier=tier,
                           via="group" if tier == 0 else "overflow", wait_ms=now - s.key[1]))
