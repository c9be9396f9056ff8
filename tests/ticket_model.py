"""A pure-Python reference model of the tickets, written from docs/tickets.md.

One :class:`TicketModel` holds one tenant's ticket state (groups, agents, tickets, orders,
timers) in plain dicts and sets and applies the same commands as
:class:`dispatchd.engine.Engine`, returning the same events. Queues are recomputed by
sorting every time they are needed; nothing is cached.

Where the doc leaves the *when* open, the model follows the contract in the headers of
``lua/tickets/ticket_tick.lua`` and ``lua/lib/30_ticket_hook.lua`` (one timer per group
"gq:<group>", looked at no later than the earliest wake-up asked for; a tick fires the
timers due when it starts, in due order, and what they schedule for ``now`` waits for the
next tick). Other readings the doc leaves open are marked ``# AMBIGUITY:``.

Contract: :meth:`TicketModel.validate` returns the code of every rule a command breaks;
:meth:`TicketModel.apply` applies a command that breaks none (it checks nothing itself) and
returns the exact list of events the doc prescribes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dispatchd.messages import (
    AgentConfigured,
    AgentStatusChanged,
    AgentStatusName,
    AssignTicket,
    CloseTicket,
    ConfigureAgent,
    ConfigureGroup,
    ConfigureTicketType,
    CreateTicket,
    DeleteAgent,
    DeleteGroup,
    ForwardTicket,
    GroupConfigured,
    RespondTicket,
    SetAgentStatus,
    SetServiceWindows,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketForwarded,
    TicketHeld,
    TicketLoop,
    TicketOverdue,
    TicketQueued,
    TicketResponded,
    TicketTick,
    TicketTypeConfigured,
)

WAITING = ("held", "queued")
WITH_HANDLER = ("assigned", "in_progress")
POLL_MS = 60_000  # "Every group with waiting tickets is also looked at at least once a minute"
RETENTION_MS = 90 * 86_400_000  # the tenant's default ticket retention


@dataclass
class Group:
    u: int = 60_000  # priority_unit_ms
    reassign_ms: int = 14_400_000
    spread_ms: int = 900_000
    windows: tuple[int, list[int]] | None = None  # (horizon, flat [start, end, ...]) UTC


@dataclass
class Agent:
    status: AgentStatusName = "offline"
    groups: set[str] = field(default_factory=set)
    limit: int = 20
    last_ms: int = 0  # its last ticket assignment (0: never)
    open: set[str] = field(default_factory=set)
    handled: set[str] = field(default_factory=set)


@dataclass
class Ticket:
    id: str
    type: str
    by: str
    priority: int
    order: str | None
    created_ms: int
    first_due_ms: int
    resolution_due_ms: int
    group: str = ""
    state: str = ""
    agent: str | None = None  # a closed ticket keeps its last handler
    entered_ms: int = 0
    score: int = 0  # queue score in its group: creation - priority * unit
    assigned_ms: int | None = None
    first_ms: int | None = None  # when first responded to
    breached: list[str] = field(default_factory=list)
    hops: int = 0
    path: list[str] = field(default_factory=list)
    hop_log: list[dict[str, Any]] = field(default_factory=list)  # docs "Each hop is recorded"
    visits: Counter[str] = field(default_factory=Counter)
    closed_ms: int | None = None
    closed_by: str | None = None
    resolution: str | None = None


@dataclass
class Ramp:
    """A group's shift-start release: until when, and each member's share and take."""

    until: int
    share: int
    taken: Counter[str] = field(default_factory=Counter)


@dataclass
class Candidate:
    id: str
    load: int
    last: int


class TicketModel:
    """One tenant's tickets (see the module docstring)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.agents: dict[str, Agent] = {}
        self.types: dict[str, tuple[int, int]] = {}  # type -> (first_response_ms, resolution_ms)
        self.tickets: dict[str, Ticket] = {}
        self.owners: dict[str, str] = {}  # order -> owner
        self.order_handlers: dict[str, dict[str, int]] = {}  # order -> agent -> ms last assigned
        self.ramps: dict[str, Ramp] = {}
        self.due: dict[str, int] = {}  # "gq:<group>" | "ra:"/"fr:"/"rs:<ticket>" -> due ms
        self.overdue: set[str] = set()
        self.purged: set[str] = set()

    # ---------------------------------------------------------------- reading

    def members(self, g: str) -> list[str]:
        return sorted(a for a, ag in self.agents.items() if g in ag.groups)

    def queue(self, g: str) -> list[str]:
        """Group g's waiting tickets (held and queued) in queue order: score, then id."""
        waiting = [t for t in self.tickets.values() if t.group == g and t.state in WAITING]
        return [t.id for t in sorted(waiting, key=lambda t: (t.score, t.id))]

    def open_in(self, g: str) -> int:
        return sum(1 for t in self.tickets.values() if t.group == g and t.state != "closed")

    def in_hours(self, g: str, now: int) -> bool:
        """docs: without service hours, or past the stored horizon, always in service."""
        w = self.groups[g].windows
        if w is None or now >= w[0]:
            return True
        iv = w[1]
        return any(iv[i] <= now < iv[i + 1] for i in range(0, len(iv) - 1, 2))

    def next_open(self, g: str, now: int) -> int:
        """When g is next in service (its horizon when nothing opens before it)."""
        w = self.groups[g].windows
        if w is None or now >= w[0]:
            return now
        iv = w[1]
        for i in range(0, len(iv) - 1, 2):
            if now < iv[i + 1]:
                return max(iv[i], now)
        return w[0]

    def ramp(self, g: str, now: int) -> Ramp | None:
        r = self.ramps.get(g)
        return r if r is not None and now < r.until else None

    def candidates(self, g: str, ramp: Ramp | None) -> list[Candidate]:
        """docs "eligible": member, not offline, under its limit, under its release share."""
        out = []
        for a in self.members(g):
            ag = self.agents[a]
            if ag.status == "offline" or len(ag.open) >= ag.limit:
                continue
            if ramp is not None and ramp.taken[a] >= ramp.share:
                continue
            out.append(Candidate(a, len(ag.open), ag.last_ms))
        return out

    def pick(
        self, t: Ticket, cands: list[Candidate], exclude: str | None
    ) -> tuple[str, str] | None:
        """docs "Who gets the ticket": owner, else latest earlier handler, else least loaded."""
        ok = {c.id: c for c in cands if c.id != exclude}
        if not ok:
            return None
        if t.order is not None:
            if self.owners.get(t.order) in ok:
                return self.owners[t.order], "owner"
            # AMBIGUITY: "latest first" with equal times: the greater agent id first
            handlers = self.order_handlers.get(t.order, {})
            for a, _ in sorted(handlers.items(), key=lambda kv: (kv[1], kv[0]), reverse=True):
                if a in ok:
                    return a, "order_history"
        best = min(ok.values(), key=lambda c: (c.load, c.last, c.id))
        return best.id, "balanced"

    # ---------------------------------------------------------------- timers

    def wake(self, g: str, at: int) -> None:
        key = "gq:" + g
        self.due[key] = min(self.due.get(key, at), at)

    def wake_agent(self, a: str, now: int) -> None:
        """The agent may take waiting tickets: its groups are looked at next tick."""
        for g in sorted(self.agents[a].groups):
            if self.queue(g):
                self.wake(g, now)

    # ---------------------------------------------------------------- transitions

    def _assign(self, t: Ticket, a: str, via: str, reason: str, now: int, ev: list[Any],
                previous: str | None = None, by: str | None = None) -> None:
        if previous is not None:
            self.agents[previous].open.discard(t.id)
        t.state, t.agent, t.assigned_ms = "assigned", a, now
        ag = self.agents[a]
        ag.open.add(t.id)
        ag.handled.add(t.id)
        ag.last_ms = now
        if t.order is not None:
            self.order_handlers.setdefault(t.order, {})[a] = now
        ra = self.groups[t.group].reassign_ms
        if ra > 0:
            self.due["ra:" + t.id] = now + ra
        else:
            self.due.pop("ra:" + t.id, None)
        ev.append(TicketAssigned(ticket=t.id, group=t.group, agent=a, via=via, reason=reason,
                                 wait_ms=now - t.entered_ms, previous_agent=previous, by=by))

    def _dispatch(self, g: str, now: int, ev: list[Any], reason: str,
                  own: str | None = None) -> None:
        """Assign g's waiting tickets in queue order while a member is eligible. With
        ``own`` (the ticket entering g), ``reason`` is that one's; the others are "queue"."""
        if not self.queue(g) or not self.in_hours(g, now):
            return
        ramp = self.ramp(g, now)
        while self.queue(g):
            cands = self.candidates(g, ramp)
            if not cands:
                break
            t = self.tickets[self.queue(g)[0]]
            chosen = self.pick(t, cands, None)
            assert chosen is not None
            why = reason if own is None or t.id == own else "queue"
            self._assign(t, chosen[0], chosen[1], why, now, ev)
            if ramp is not None:
                ramp.taken[chosen[0]] += 1
        if self.queue(g):
            # the release's cap ends then: the members it held back become eligible
            self.wake(g, now + POLL_MS if ramp is None else min(now + POLL_MS, ramp.until))

    def _enter(self, t: Ticket, g: str, now: int, reason: str, ev: list[Any]) -> None:
        """docs "Assignment": held outside hours, else assigned at once, else queued.

        A look at g that is due (a shift started, a member became eligible) and that the
        tick has not taken yet goes first: the tickets already waiting keep their place,
        and a shift start its spread.
        """
        t.state = "entering"  # in no queue and with nobody until the end
        t.group, t.entered_ms, t.agent, t.assigned_ms = g, now, None, None
        t.score = t.created_ms - t.priority * self.groups[g].u
        t.visits[g] += 1
        t.path.append(g)
        if not self.in_hours(g, now):
            t.state = "held"
            opens = self.next_open(g, now)
            self.wake(g, opens)
            ev.append(TicketHeld(ticket=t.id, group=g, reason=reason, until_ms=opens))
            return
        if self.due.get("gq:" + g, now + 1) <= now:
            del self.due["gq:" + g]
            self._check_group(g, now, ev)
        t.state = "queued"
        self._dispatch(g, now, ev, reason, t.id)
        if t.state == "queued":
            ev.append(TicketQueued(ticket=t.id, group=g, reason=reason,
                                   position=self.queue(g).index(t.id) + 1))

    def _leave(self, t: Ticket, now: int) -> None:
        """The ticket leaves its handler (forwarded or closed); its slot is freed."""
        self.due.pop("ra:" + t.id, None)
        if t.state in WITH_HANDLER and t.agent is not None:
            self.agents[t.agent].open.discard(t.id)
            self.wake_agent(t.agent, now)

    # ---------------------------------------------------------------- commands

    def validate(self, now: int, cmd: Any) -> list[str]:
        """Every error code ``cmd`` deserves (empty: it is valid)."""
        errors: list[str] = []
        t = self.tickets.get(getattr(cmd, "ticket", ""))
        match cmd:
            case ConfigureAgent():
                errors += ["E_GROUP_UNKNOWN" for g in cmd.abilities if g not in self.groups]
                if not 0 <= cmd.ticket_limit <= 100_000:
                    errors.append("E_BAD_ARG")
            case SetAgentStatus() if cmd.agent not in self.agents:
                errors.append("E_AGENT_UNKNOWN")
            # "A group with open tickets cannot be deleted, and neither can an agent"
            case DeleteGroup() if self.open_in(cmd.group):
                errors.append("E_GROUP_BUSY")
            case DeleteAgent() if self.agents[cmd.agent].open:
                errors.append("E_AGENT_BUSY")
            case CreateTicket():
                if cmd.type not in self.types:
                    errors.append("E_TICKET_TYPE_UNKNOWN")
                if cmd.group not in self.groups:
                    errors.append("E_GROUP_UNKNOWN")
                if cmd.ticket in self.tickets:  # a purged ticket's id is free again
                    errors.append("E_TICKET_EXISTS")
            case RespondTicket() | ForwardTicket() | AssignTicket() | CloseTicket():
                if t is None:
                    return ["E_TICKET_UNKNOWN"]
                if t.state == "closed":
                    return ["E_TICKET_STATE"]
                errors += self._validate_open(t, cmd)
        return errors

    def _validate_open(self, t: Ticket, cmd: Any) -> list[str]:
        errors = []
        by_handler = getattr(cmd, "supervisor", None) is None
        handled = isinstance(cmd, RespondTicket | ForwardTicket | CloseTicket)
        if handled and by_handler and cmd.agent != t.agent:
            errors.append("E_NOT_TICKET_HANDLER")
        if isinstance(cmd, ForwardTicket):
            if cmd.to_group not in self.groups:
                errors.append("E_GROUP_UNKNOWN")
            elif cmd.to_group == t.group:
                errors.append("E_SAME_GROUP")
        if isinstance(cmd, CloseTicket) and not cmd.resolution:
            errors.append("E_BAD_ARG")
        if isinstance(cmd, AssignTicket):
            if cmd.agent not in self.agents:
                errors.append("E_AGENT_UNKNOWN")
            elif t.group not in self.agents[cmd.agent].groups:
                errors.append("E_AGENT_NOT_IN_GROUP")
            elif t.agent == cmd.agent:
                errors.append("E_TICKET_STATE")
        return errors

    def apply(self, now: int, cmd: Any) -> list[Any]:
        """Apply a valid ``cmd`` at ``now``; the events it causes."""
        match cmd:
            case ConfigureGroup():
                gr = self.groups.setdefault(cmd.group, Group())
                gr.u, gr.reassign_ms = cmd.priority_unit_ms, cmd.ticket_reassign_ms
                gr.spread_ms = cmd.ticket_release_spread_ms
                if self.queue(cmd.group):
                    self.wake(cmd.group, now)
                return [GroupConfigured(group=cmd.group)]
            case ConfigureAgent():
                ag = self.agents.setdefault(cmd.agent, Agent())
                ag.groups, ag.limit = set(cmd.abilities), cmd.ticket_limit
                self.wake_agent(cmd.agent, now)
                return [AgentConfigured(agent=cmd.agent)]
            case SetAgentStatus():
                ag = self.agents[cmd.agent]
                previous, ag.status = ag.status, cmd.status
                if cmd.status != "offline" and previous == "offline":
                    self.wake_agent(cmd.agent, now)
                return [AgentStatusChanged(agent=cmd.agent, status=cmd.status, previous=previous)]
            case SetServiceWindows():
                w = cmd.windows
                self.groups[cmd.group].windows = None if w is None else (w.hz, list(w.iv))
                if self.queue(cmd.group):
                    self.wake(cmd.group, now)
                return []
            case ConfigureTicketType():
                self.types[cmd.type] = (cmd.first_response_ms, cmd.resolution_ms)
                return [TicketTypeConfigured(type=cmd.type)]
            case CreateTicket():
                return self._create(now, cmd)
            case RespondTicket():
                return self._respond(now, cmd)
            case ForwardTicket():
                return self._forward(now, cmd)
            case AssignTicket():
                t = self.tickets[cmd.ticket]
                ev: list[Any] = []
                before = t.agent if t.state in WITH_HANDLER else None
                self._assign(t, cmd.agent, "manual", "manual", now, ev, before, cmd.supervisor)
                if before is not None:
                    self.wake_agent(before, now)
                return ev
            case CloseTicket():
                return self._close(now, cmd)
            case TicketTick():
                return self._tick(now, cmd.limit)
        raise AssertionError(f"the model does not know {cmd!r}")

    def _create(self, now: int, cmd: CreateTicket) -> list[Any]:
        frt, res = self.types[cmd.type]
        t = Ticket(id=cmd.ticket, type=cmd.type, by=cmd.by, priority=cmd.priority,
                   order=cmd.order_id, created_ms=now, first_due_ms=now + frt if frt else 0,
                   resolution_due_ms=now + res if res else 0)
        self.tickets[t.id] = t
        if frt:
            self.due["fr:" + t.id] = t.first_due_ms
        if res:
            self.due["rs:" + t.id] = t.resolution_due_ms
        if cmd.order_id is not None and cmd.order_owner is not None:
            self.owners[cmd.order_id] = cmd.order_owner
        ev: list[Any] = [TicketCreated(ticket=t.id, type=t.type, group=cmd.group, by=cmd.by,
                                       priority=cmd.priority, order_id=cmd.order_id,
                                       title=cmd.title or None)]
        self._enter(t, cmd.group, now, "created", ev)
        return ev

    def _respond(self, now: int, cmd: RespondTicket) -> list[Any]:
        t = self.tickets[cmd.ticket]
        if t.state == "assigned":
            t.state = "in_progress"
            self.due.pop("ra:" + t.id, None)
        first = None
        if t.first_ms is None:
            t.first_ms, first = now, now - t.created_ms
            self.due.pop("fr:" + t.id, None)
            # "A late first response ends the first-response part" of being overdue
            if "resolution" not in t.breached:
                self.overdue.discard(t.id)
        return [TicketResponded(ticket=t.id, group=t.group, agent=cmd.agent,
                                note=cmd.note or None, first_response_ms=first)]

    def _forward(self, now: int, cmd: ForwardTicket) -> list[Any]:
        t = self.tickets[cmd.ticket]
        by = cmd.supervisor if cmd.supervisor is not None else cmd.agent
        assert by is not None
        from_group, from_agent = t.group, t.agent if t.state in WITH_HANDLER else None
        visits = t.visits[cmd.to_group]
        t.hops += 1
        self._leave(t, now)
        hop: dict[str, Any] = {
            "hop": t.hops, "by": by, "at_ms": now, "from_group": from_group,
            "to_group": cmd.to_group, "note": cmd.note, "spent_ms": now - t.entered_ms,
            "loop": visits > 0, "from_agent": from_agent}
        t.hop_log.append(hop)
        ev: list[Any] = [TicketForwarded(ticket=t.id, **{k: v for k, v in hop.items()
                                                         if k != "at_ms"})]
        if visits > 0:
            ev.append(TicketLoop(ticket=t.id, group=cmd.to_group, hop=t.hops, visits=visits + 1))
        self._enter(t, cmd.to_group, now, "forwarded", ev)
        return ev

    def _close(self, now: int, cmd: CloseTicket) -> list[Any]:
        t = self.tickets[cmd.ticket]
        by = cmd.supervisor if cmd.supervisor is not None else cmd.agent
        assert by is not None
        agent = t.agent if t.state in WITH_HANDLER else None
        self._leave(t, now)
        t.state, t.closed_ms, t.closed_by, t.resolution = "closed", now, by, cmd.resolution
        self.due.pop("fr:" + t.id, None)
        self.due.pop("rs:" + t.id, None)
        self.overdue.discard(t.id)
        return [TicketClosed(ticket=t.id, group=t.group, type=t.type, by=by,
                             resolution=cmd.resolution, resolution_ms=now - t.created_ms,
                             hops=t.hops, agent=agent, breached=list(t.breached) or None)]

    # ---------------------------------------------------------------- the tick

    def _tick(self, now: int, limit: int) -> list[Any]:
        ev: list[Any] = []
        fire = sorted((at, key) for key, at in self.due.items() if at <= now)[:limit]
        for _, key in fire:
            self.due.pop(key, None)
            kind, _, ident = key.partition(":")
            if kind == "gq":
                self._check_group(ident, now, ev)
            elif (t := self.tickets.get(ident)) is not None:
                if kind == "ra":
                    self._reassign(t, now, ev)
                else:
                    self._overdue(t, "first_response" if kind == "fr" else "resolution", ev)
        self._purge(now, limit)
        return ev

    def _check_group(self, g: str, now: int, ev: list[Any]) -> None:
        """docs "the start of a shift": release the held tickets, spread over the members
        (and outside the group's hours, hold the tickets still queued)."""
        if not self.queue(g):
            return
        if not self.in_hours(g, now):
            # "Tickets still queued when a shift ends are held too"
            opens = self.next_open(g, now)
            for tid in self.queue(g):
                if self.tickets[tid].state == "queued":
                    self.tickets[tid].state = "held"
                    ev.append(TicketHeld(ticket=tid, group=g, reason="shift_end", until_ms=opens))
            self.wake(g, opens)
            return
        held = [tid for tid in self.queue(g) if self.tickets[tid].state == "held"]
        for tid in held:
            self.tickets[tid].state = "queued"
        spread = self.groups[g].spread_ms
        if held:
            self.ramps.pop(g, None)
            if spread > 0:
                share = math.ceil(len(held) / max(len(self.members(g)), 1))
                self.ramps[g] = Ramp(until=now + spread, share=share)
                self.wake(g, now + spread)
        self._dispatch(g, now, ev, "shift_start" if held else "queue")
        queue = self.queue(g)
        for tid in held:
            if tid in queue:
                ev.append(TicketQueued(ticket=tid, group=g, reason="shift_start",
                                       position=queue.index(tid) + 1))

    def _reassign(self, t: Ticket, now: int, ev: list[Any]) -> None:
        """docs "Reassignment of untouched tickets"."""
        ra = self.groups[t.group].reassign_ms
        if t.state != "assigned" or ra <= 0:
            return
        assert t.assigned_ms is not None and t.agent is not None
        if now < t.assigned_ms + ra:
            self.due["ra:" + t.id] = t.assigned_ms + ra
            return
        if not self.in_hours(t.group, now):
            self.due["ra:" + t.id] = self.next_open(t.group, now) + ra
            return
        # AMBIGUITY: the shift-start share does not limit a reassignment
        chosen = self.pick(t, self.candidates(t.group, None), t.agent)
        if chosen is None:
            self.due["ra:" + t.id] = now + ra
            return
        previous = t.agent
        self._assign(t, chosen[0], chosen[1], "untouched", now, ev, previous)
        self.wake_agent(previous, now)

    def _overdue(self, t: Ticket, kind: str, ev: list[Any]) -> None:
        if t.state == "closed" or (kind == "first_response" and t.first_ms is not None):
            return
        if kind not in t.breached:
            t.breached.append(kind)
            t.breached.sort(key=("first_response", "resolution").index)
        self.overdue.add(t.id)
        ev.append(TicketOverdue(
            ticket=t.id, kind=kind, group=t.group, type=t.type,
            agent=t.agent if t.state in WITH_HANDLER else None,
            due_ms=t.first_due_ms if kind == "first_response" else t.resolution_due_ms))

    def _purge(self, now: int, limit: int) -> None:
        """Closed tickets past the retention are gone (with their history); an order
        whose last ticket is gone is forgotten (its owner and handlers)."""
        old = sorted((t.closed_ms, t.id) for t in self.tickets.values()
                     if t.closed_ms is not None and t.closed_ms <= now - RETENTION_MS)
        for _, tid in old[:limit]:
            order = self.tickets.pop(tid).order
            self.purged.add(tid)
            if order is not None and all(t.order != order for t in self.tickets.values()):
                self.owners.pop(order, None)
                self.order_handlers.pop(order, None)

    # ---------------------------------------------------------------- self-check

    def check_invariants(self) -> None:
        """The model's own bookkeeping is consistent (tickets never in two places)."""
        holders: dict[str, str] = {}
        for a, ag in self.agents.items():
            for tid in ag.open:
                assert tid not in holders, f"model: {tid} with {holders[tid]} and {a}"
                holders[tid] = a
        for t in self.tickets.values():
            if t.state in WITH_HANDLER:
                assert holders.get(t.id) == t.agent, f"model: {t.id} {t.state} {t.agent}"
            else:
                assert t.id not in holders, f"model: {t.id} {t.state} held by {holders[t.id]}"
