"""Random sequences of ticket operations never lose a ticket, never give it to two people,
never assign it outside its group; the ticket scripts and a reference model agree.

A hypothesis :class:`TicketMachine` drives the real ticket scripts (through
:class:`dispatchd.engine.Engine` on a real Valkey) and :class:`ticket_model.TicketModel`
side by side on a small world: four groups, 4-6 agents in random groups with ticket limits
of 1-3, service hours on one group (so tickets are held, held at shift end and released
at shift start), an injected clock. Operations: create, agent status, respond, forward
(by the handler or a supervisor), manual assignment (also to non-members: refused), close,
ticket ticks, ticket limits and memberships, group settings, service hours, and deleting
a busy group or agent (refused). After every step it checks:

* the events: exactly the model's (or the same error code), and, read on their own
  against the state before the step (docs/tickets.md "Assignment"): every assignment goes
  to a member of the ticket's group; an automatic one to an agent on shift, under its
  limit, in service hours, never to the same handler again, with a ``reason`` that fits
  the step; a ticket is held only outside its group's service hours, whose stored windows
  agree with :func:`dispatchd.hours.in_service`;
* the keyspace (``dispatchd.keys``), independently of the model: every ticket is in
  exactly one state index; an open one waits in its group's queue (held, queued) *xor*
  sits in its handler's open set (assigned, in progress); a closed one in neither; no
  ticket in two open sets; the open counters count; waiting tickets are never forgotten
  (a group in hours with queued tickets and an eligible member, or with held tickets, is
  due to be looked at; every group with waiting tickets is looked at within a minute or
  when it opens); each group's ticket-eligible set (``{t}:g:<g>:tka``) holds exactly its
  members on shift and under their limit, scored and ordered as the balanced pick is;
* the views (``dispatchd.tickets.get_tickets``, ``find``, ``get_hops``) against the model.

Examples and steps come from the hypothesis profile (tests/conftest.py): the default
profile runs in well under a minute, the opt-in long profile (``HYPOTHESIS_PROFILE=long``:
400 examples of up to 200 steps) in about ten.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dispatchd import hours, keys, tickets
from dispatchd.errors import CommandRejected
from dispatchd.messages import (
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
    RespondTicket,
    ServiceWindows,
    SetAgentStatus,
    SetServiceWindows,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketForwarded,
    TicketHeld,
    TicketLoop,
    TicketQueued,
    TicketTick,
)
from tests.machines import EngineMachine

try:  # tests/ may or may not be a package
    from tests.ticket_model import POLL_MS, WAITING, WITH_HANDLER, TicketModel
except ImportError:  # pragma: no cover
    from ticket_model import (  # type: ignore[no-redef,import-not-found]
        POLL_MS,
        WAITING,
        WITH_HANDLER,
        TicketModel,
    )

T0 = 1_700_000_000_000  # Tue 2023-11-14 22:13:20 UTC
MIN = 60_000
HOUR = 60 * MIN
GROUPS = ["g0", "g1", "g2", "g3"]
HOURS_GROUP = "g0"  # the group with service hours
ALL_AGENTS = ["a0", "a1", "a2", "a3", "a4", "a5"]
ORDERS = ["o1", "o2", "o3"]
TYPES = {"plain": (0, 0), "sla": (20 * MIN, 2 * HOUR)}
SUPERVISOR = "sup"
STATUSES: list[AgentStatusName] = ["online", "away", "offline"]
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# service hours that flip often against the clock steps below
HOURS_PRESETS: list[dict[str, Any] | None] = [
    None,
    {"time_zone": "UTC", "weekly": [
        {"days": EVERY_DAY, "start": f"{h:02d}:00", "end": f"{h:02d}:30"} for h in range(24)]},
    {"time_zone": "Europe/Berlin", "weekly": [
        {"days": EVERY_DAY, "start": "08:00", "end": "12:00"},
        {"days": EVERY_DAY, "start": "13:00", "end": "18:30"}]},
    {"time_zone": "Asia/Kolkata", "weekly": [
        {"days": ["tue", "wed", "thu"], "start": "22:00", "end": "04:00"}],
     "closed_dates": ["2023-11-16"]},
    {"time_zone": "America/New_York", "weekly": [
        {"days": EVERY_DAY, "start": "17:30", "end": "18:00"},
        {"days": ["tue", "wed"], "start": "19:00", "end": "24:00"}]},
]



def _hours(spec: dict[str, Any]) -> Any:
    """A service-hours spec as :mod:`dispatchd.hours` reads it."""
    return SimpleNamespace(
        time_zone=spec["time_zone"], closed_dates=spec.get("closed_dates", []),
        weekly=[SimpleNamespace(**s) for s in spec["weekly"]])


def _some(data: st.DataObject, percent: int) -> bool:
    """True for about ``percent`` % of draws; shrinks towards False."""
    return data.draw(st.integers(0, 99), label="roll") >= 100 - percent


class TicketMachine(EngineMachine):
    """Engine (Lua on Valkey) and model side by side. ``redis_url`` is bound by a subclass."""

    def __init__(self) -> None:
        super().__init__("tp")
        self.model = TicketModel()
        self.now = T0
        self.agents: list[str] = []
        self.hours: dict[str, dict[str, Any] | None] = {}
        self.horizon: dict[str, int] = {}  # group -> end of its stored windows
        self.created: list[str] = []
        self.next_ticket = itertools.count(1)
        self.checks = 0  # views checked so far (picks the query family checked next)

    # ================================================================ the clock's truth

    def in_service(self, g: str, now: int) -> bool:
        """Whether g is in service at ``now``, from its hours (not from stored windows)."""
        spec = self.hours.get(g)
        if spec is None or now >= self.horizon[g]:
            return True
        return hours.in_service(_hours(spec), now)

    # ====================================================================== comparison

    def execute(self, cmd: Any) -> list[Any]:
        """Apply ``cmd`` to the engine and the model, compare, audit the events."""
        note(f"t={self.now - T0} {cmd!r}")
        codes = self.model.validate(self.now, cmd)
        try:
            outcome = self.run(self.engine.apply(self.tenant, self.now, cmd))
        except CommandRejected as exc:
            assert codes, f"{cmd!r}: the model accepts it, the engine refused: {exc}"
            assert exc.code in codes, f"{cmd!r}: model refuses with {codes}, engine: {exc}"
            event(f"refused {type(cmd).__name__} {exc.code}")
            return []
        assert not codes, f"{cmd!r}: model refuses with {codes}, engine: {outcome.events!r}"
        got: list[Any] = outcome.events
        self.audit(cmd, got)
        expected = self.model.apply(self.now, cmd)
        assert got == expected, (
            f"t={self.now - T0} {cmd!r}\n  model  {_fmt(expected)}\n  engine {_fmt(got)}")
        for ev in got:
            label = type(ev).__name__ + "".join(
                f" {getattr(ev, f)}" for f in ("via", "reason", "kind") if hasattr(ev, f))
            event(label)
        self.model.check_invariants()
        return got

    def audit(self, cmd: Any, events: list[Any]) -> None:
        """The docs' assignment rules, read from the events alone against the state before
        the step (the model's, which the invariants found equal to the keyspace)."""
        m = self.model
        load = {a: len(ag.open) for a, ag in m.agents.items()}
        group = {tid: t.group for tid, t in m.tickets.items()}
        handler = {tid: t.agent for tid, t in m.tickets.items() if t.state in WITH_HANDLER}
        was = {tid: t.state for tid, t in m.tickets.items()}
        if isinstance(cmd, TicketTick):  # the windows the scripts use match the hours
            for g in GROUPS:
                assert m.in_hours(g, self.now) == self.in_service(g, self.now), (
                    f"{g} at t={self.now - T0}: stored windows say in service "
                    f"{m.in_hours(g, self.now)}, its hours {self.in_service(g, self.now)}")
        for ev in events:
            match ev:
                case TicketCreated():
                    group[ev.ticket], handler[ev.ticket] = ev.group, None
                case TicketForwarded():
                    assert (group[ev.ticket], handler.get(ev.ticket)) == (
                        ev.from_group, ev.from_agent), f"{ev!r}: it was elsewhere"
                    if ev.from_agent is not None:
                        load[ev.from_agent] -= 1
                    group[ev.ticket], handler[ev.ticket] = ev.to_group, None
                case TicketClosed():
                    assert ev.agent == handler.get(ev.ticket), f"{ev!r}: it was elsewhere"
                    if ev.agent is not None:
                        load[ev.agent] -= 1
                    handler[ev.ticket] = None
                case TicketHeld():
                    assert not self.in_service(ev.group, self.now), (
                        f"{ev!r}: held while {ev.group} is in service")
                case TicketAssigned():
                    self._audit_assigned(ev, group, handler, load)
                    why = _reasons(cmd, ev.ticket, was.get(ev.ticket))
                    assert (ev.via == "manual") == (ev.reason == "manual")
                    assert ev.reason in why, f"{ev!r}: the reason should be one of {why}"

    def _audit_assigned(self, ev: TicketAssigned, group: dict[str, str],
                        handler: dict[str, str | None], load: dict[str, int]) -> None:
        m, a = self.model, ev.agent
        assert ev.group == group[ev.ticket], f"{ev!r}: the ticket is in {group[ev.ticket]}"
        assert ev.group in m.agents[a].groups, f"{ev!r}: {a} is not a member of {ev.group}"
        assert handler.get(ev.ticket) == ev.previous_agent, (
            f"{ev!r}: its handler was {handler.get(ev.ticket)}")
        assert a != ev.previous_agent, f"{ev!r}: to the handler it already has"
        if ev.via != "manual":
            ag = m.agents[a]
            assert ag.status != "offline", f"{ev!r}: {a} is offline"
            assert load[a] < ag.limit, f"{ev!r}: {a} holds {load[a]} of {ag.limit}"
            assert self.in_service(ev.group, self.now), f"{ev!r}: {ev.group} is out of hours"
            assert ev.reason != "untouched" or ev.previous_agent is not None, f"{ev!r}"
        load[a] += 1
        if ev.previous_agent is not None:
            load[ev.previous_agent] -= 1
        handler[ev.ticket] = a

    # =========================================================================== setup

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        """Four groups, 4-6 agents in 0-3 of them, two ticket types, hours on one group."""
        for g in GROUPS:
            self.execute(self.gen_configure_group(data, g))
        n = data.draw(st.integers(4, 6), label="agents")
        self.agents = ALL_AGENTS[:n]
        for a in self.agents:
            self.execute(self.gen_configure_agent(data, a))
            status = data.draw(st.sampled_from(STATUSES[:1] + STATUSES), label="status")
            self.execute(SetAgentStatus(agent=a, status=status))
        for name, (frt, res) in TYPES.items():
            self.execute(ConfigureTicketType(type=name, first_response_ms=frt, resolution_ms=res))
        preset = data.draw(st.integers(0, len(HOURS_PRESETS) - 1).map(
            lambda i: (i + 1) % len(HOURS_PRESETS)), label="hours preset")  # shrinks to some
        self.set_hours(HOURS_PRESETS[preset])

    def set_hours(self, spec: dict[str, Any] | None) -> None:
        """Give the hours group ``spec`` (None: none) and refresh every group's windows,
        as the admin API and the daemon do."""
        group_key = keys.key("group", self.tenant, HOURS_GROUP)
        if spec is None:
            self.run(self.client.hdel(group_key, "meta"))
        else:
            meta = msgspec.msgpack.encode({"service_hours": spec})
            self.run(self.client.hset(group_key, "meta", meta))
        self.hours[HOURS_GROUP] = spec
        note(f"t={self.now - T0} hours of {HOURS_GROUP}: {spec}")
        stored = self.run(tickets.refresh_windows(self.engine, self.tenant, self.now))
        assert stored == len(GROUPS)
        for g in GROUPS:  # what refresh_windows stored, in its order
            raw = self.run(self.client.hget(keys.key("group", self.tenant, g), "win"))
            windows = None if raw is None else msgspec.msgpack.decode(raw, type=ServiceWindows)
            self.horizon[g] = windows.hz if windows is not None else 0
            assert self.model.apply(self.now, SetServiceWindows(
                group=g, meta_sha1="", windows=windows)) == []

    # ===================================================================== generators

    def gen_configure_group(self, data: st.DataObject, g: str) -> ConfigureGroup:
        return ConfigureGroup(
            group=g,
            priority_unit_ms=data.draw(st.sampled_from([MIN, 0, 1000]), label="unit"),
            ticket_reassign_ms=data.draw(
                st.sampled_from([HOUR, 0, 10 * MIN, 4 * HOUR]), label="reassign"),
            ticket_release_spread_ms=data.draw(
                st.sampled_from([15 * MIN, 0, MIN, 30_000]), label="spread"))

    def gen_configure_agent(self, data: st.DataObject, a: str) -> ConfigureAgent:
        chosen = data.draw(st.lists(st.sampled_from(GROUPS), unique=True, min_size=0,
                                    max_size=3), label=f"groups of {a}")
        limit = data.draw(st.integers(1, 3), label="ticket limit")
        return ConfigureAgent(agent=a, capacity=0, abilities={g: 1.0 for g in chosen},
                              ticket_limit=limit)

    def _ticket(self, data: st.DataObject, states: tuple[str, ...]) -> str:
        """A ticket in one of ``states`` (now and then any ticket, or an unknown one)."""
        fits = [tid for tid, t in self.model.tickets.items() if t.state in states]
        if fits and not _some(data, 8):
            return data.draw(st.sampled_from(sorted(fits)), label="ticket")
        if self.created and not _some(data, 30):
            return data.draw(st.sampled_from(self.created), label="any ticket")
        return "k-none"

    def _handler_or(self, data: st.DataObject, tid: str) -> str:
        """The ticket's handler, now and then another agent."""
        t = self.model.tickets.get(tid)
        if t is not None and t.agent is not None and not _some(data, 10):
            return t.agent
        return data.draw(st.sampled_from(self.agents), label="agent")

    # ========================================================================== rules

    @rule(data=st.data())
    def create(self, data: st.DataObject) -> None:
        """1-3 new tickets (now and then a refused one)."""
        for _ in range(data.draw(st.integers(1, 3), label="tickets")):
            self.create_one(data)

    def create_one(self, data: st.DataObject) -> None:
        tid = f"k{next(self.next_ticket)}"
        order = data.draw(st.sampled_from([None, *ORDERS]), label="order")
        owner = None
        if order is not None and data.draw(st.booleans(), label="owner?"):
            owner = data.draw(st.sampled_from([*self.agents, "nobody"]), label="owner")
        cmd = CreateTicket(
            ticket=tid,
            type=data.draw(st.sampled_from(sorted(TYPES)), label="type"),
            group=data.draw(st.sampled_from([HOURS_GROUP, *GROUPS]), label="group"),
            by=data.draw(st.sampled_from(["crm", *self.agents]), label="by"),
            priority=data.draw(st.sampled_from([0, 0, 5, -5, 1000]), label="priority"),
            order_id=order, order_owner=owner)
        if _some(data, 6):
            fault = data.draw(st.sampled_from(["exists", "group", "type"]), label="fault")
            if fault == "exists" and self.created:
                cmd = msgspec.structs.replace(cmd, ticket=data.draw(st.sampled_from(self.created)))
            elif fault == "group":
                cmd = msgspec.structs.replace(cmd, group="g9")
            else:
                cmd = msgspec.structs.replace(cmd, type="no-type")
        if self.execute(cmd):
            self.created.append(cmd.ticket)

    @rule(data=st.data())
    def set_status(self, data: st.DataObject) -> None:
        a = data.draw(st.sampled_from(self.agents), label="agent")
        status = data.draw(st.sampled_from(STATUSES), label="status")
        self.execute(SetAgentStatus(agent=a, status=status))

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def respond(self, data: st.DataObject) -> None:
        tid = self._ticket(data, WITH_HANDLER)
        self.execute(RespondTicket(ticket=tid, agent=self._handler_or(data, tid), note="on it"))

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def forward(self, data: st.DataObject) -> None:
        tid = self._ticket(data, (*WAITING, *WITH_HANDLER))
        t = self.model.tickets.get(tid)
        others = [g for g in GROUPS if t is None or g != t.group]
        to = data.draw(st.sampled_from(others), label="to group")
        if t is not None and _some(data, 6):
            to = t.group  # refused: E_SAME_GROUP
        if data.draw(st.booleans(), label="by the supervisor?"):
            cmd = ForwardTicket(ticket=tid, to_group=to, note="yours", supervisor=SUPERVISOR)
        else:
            cmd = ForwardTicket(ticket=tid, to_group=to, note="yours",
                                agent=self._handler_or(data, tid))
        self.execute(cmd)

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        """A supervisor's assignment; to a non-member it must be refused."""
        tid = self._ticket(data, (*WAITING, *WITH_HANDLER))
        t = self.model.tickets.get(tid)
        members = [a for a in self.agents
                   if t is not None and t.group in self.model.agents[a].groups]
        if members and not _some(data, 20):
            agent = data.draw(st.sampled_from(members), label="member")
        else:
            agent = data.draw(st.sampled_from(self.agents), label="anyone")
        self.execute(AssignTicket(ticket=tid, agent=agent, supervisor=SUPERVISOR))

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        tid = self._ticket(data, (*WAITING, *WITH_HANDLER))
        if data.draw(st.booleans(), label="by the supervisor?"):
            cmd = CloseTicket(ticket=tid, resolution="done", supervisor=SUPERVISOR)
        else:
            cmd = CloseTicket(ticket=tid, resolution="done", agent=self._handler_or(data, tid))
        self.execute(cmd)

    @rule(
        dt=st.one_of(
            st.sampled_from([0, 100, MIN, 61_000, 10 * MIN, 30 * MIN, HOUR, 2 * HOUR, 4 * HOUR]),
            st.integers(0, 3 * HOUR)),
        limit=st.sampled_from([100, 100, 1, 2]))
    def tick(self, dt: int, limit: int) -> None:
        """Time passes and the daemon's ticket tick runs."""
        self.now += dt
        self.execute(TicketTick(limit=limit))

    @rule(dt=st.one_of(st.sampled_from([0, 1, MIN, 5 * MIN]), st.integers(0, 20 * MIN)))
    def tick_soon(self, dt: int) -> None:
        """The ticks are frequent: most see a few minutes pass."""
        self.now += dt
        self.execute(TicketTick())

    @rule(data=st.data())
    def configure_agent(self, data: st.DataObject) -> None:
        """A new ticket limit (1-3), now and then new groups as well."""
        a = data.draw(st.sampled_from(self.agents), label="agent")
        if data.draw(st.booleans(), label="new groups?"):
            cmd = self.gen_configure_agent(data, a)
        else:
            cmd = ConfigureAgent(agent=a, capacity=0,
                                 abilities={g: 1.0 for g in sorted(self.model.agents[a].groups)},
                                 ticket_limit=data.draw(st.integers(1, 3), label="limit"))
        self.execute(cmd)

    @precondition(lambda self: any(t.state != "closed" for t in self.model.tickets.values()))
    @rule(data=st.data())
    def delete_busy(self, data: st.DataObject) -> None:
        """A group with open tickets, or an agent holding some, cannot be deleted."""
        m = self.model
        busy: list[DeleteGroup | DeleteAgent] = [
            DeleteGroup(group=g) for g in GROUPS if m.open_in(g)]
        busy += [DeleteAgent(agent=a) for a in self.agents if m.agents[a].open]
        self.execute(data.draw(st.sampled_from(busy), label="delete"))

    @rule(data=st.data())
    def configure_group(self, data: st.DataObject) -> None:
        self.execute(self.gen_configure_group(data, data.draw(st.sampled_from(GROUPS))))

    @rule(data=st.data())
    def change_hours(self, data: st.DataObject) -> None:
        self.set_hours(data.draw(st.sampled_from(HOURS_PRESETS), label="hours"))

    # ===================================================================== invariants

    @invariant()
    def keyspace_sound_and_views_match_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        r = await self._read()
        ids = [tid for tid in self.created if tid not in self.model.purged]
        assert set(ids) == set(self.model.tickets)
        views = dict(zip(ids, await tickets.get_tickets(self.client, self.tenant, ids),
                         strict=True))
        self._check_keyspace(r, views)
        self._check_views(views)
        await self._check_queries()

    async def _read(self) -> dict[str, Any]:
        """Every ticket key of the tenant the checks need, in one round trip."""
        k, t = keys.key, self.tenant
        reads: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
            ("all", "zrange", (k("tickets", t), 0, -1), {}),
            ("counts", "hgetall", (k("tickets_open", t),), {}),
            ("held", "hgetall", (k("tickets_held", t),), {}),
            ("overdue", "zrange", (k("tickets_overdue", t), 0, -1), {}),
            ("due", "zrange", (k("ticket_due", t), 0, -1), {"withscores": True}),
        ]
        reads += [(f"state:{s}", "zrange", (k("ticket_state", t, s), 0, -1), {})
                  for s in tickets.STATES]
        for g in GROUPS:
            reads += [(f"queue:{g}", "zrange", (k("ticket_queue", t, g), 0, -1), {}),
                      (f"group:{g}", "zrange", (k("group_tickets", t, g), 0, -1), {}),
                      (f"members:{g}", "hkeys", (k("members", t, g),), {}),
                      (f"ramp:{g}", "hgetall", (k("ticket_ramp", t, g),), {}),
                      (f"eligible:{g}", "zrange", (k("ticket_agents", t, g), 0, -1),
                       {"withscores": True})]
        for a in self.agents:
            reads += [(f"open:{a}", "zrange", (k("agent_tickets", t, a), 0, -1), {}),
                      (f"agent:{a}", "hmget", (k("agent", t, a), "st", "tlim", "tka"), {})]
        pipe = self.client.pipeline(transaction=False)
        for _, method, args, kwargs in reads:
            getattr(pipe, method)(*args, **kwargs)
        rows = await pipe.execute()
        return {name: row for (name, *_), row in zip(reads, rows, strict=True)}

    def _check_keyspace(self, r: dict[str, Any], views: dict[str, Any]) -> None:
        """Never lose a ticket, never two holders (from the keyspace, not the model)."""
        ids = list(views)

        def ids_of(row: list[bytes]) -> set[str]:
            return {x.decode() for x in row}

        # never lose a ticket: each one in exactly one state index, its own
        assert ids_of(r["all"]) == set(ids), f"tickets index {r['all']} vs created {ids}"
        in_state: dict[str, list[str]] = {}
        for s in tickets.STATES:
            for tid in ids_of(r[f"state:{s}"]):
                in_state.setdefault(tid, []).append(s)
        queued_in = {g: ids_of(r[f"queue:{g}"]) for g in GROUPS}
        open_of = {a: ids_of(r[f"open:{a}"]) for a in self.agents}
        for tid, v in views.items():
            assert v is not None, f"ticket {tid} lost"
            assert in_state.get(tid) == [v.state], (
                f"{tid} ({v.state}) in the state indexes {in_state.get(tid)}")
            waits = [g for g in GROUPS if tid in queued_in[g]]
            holders = [a for a in self.agents if tid in open_of[a]]
            if v.state in WAITING:
                assert (waits, holders, v.agent) == ([v.group], [], None), (
                    f"{tid} {v.state} in {v.group}: queues {waits}, open sets {holders}, "
                    f"agent {v.agent}")
            elif v.state in WITH_HANDLER:
                assert (waits, holders) == ([], [v.agent]), (
                    f"{tid} {v.state} with {v.agent}: queues {waits}, open sets {holders}")
            else:
                assert (waits, holders) == ([], []), f"closed {tid}: {waits} {holders}"
        # nothing else sits in a queue or an open set (no stale or foreign entries)
        for g in GROUPS:
            expect = {tid for tid, v in views.items() if v and v.group == g and v.state in WAITING}
            assert queued_in[g] == expect, f"queue of {g}: {queued_in[g]} vs {expect}"
            in_group = {tid for tid, v in views.items() if v and v.group == g}
            assert ids_of(r[f"group:{g}"]) == in_group, f"group index {g}"
            n_open = sum(1 for v in views.values() if v and v.group == g and v.state != "closed")
            assert int(r["counts"].get(g.encode(), 0)) == n_open, (
                f"tickets_open[{g}] = {r['counts'].get(g.encode())}, open tickets {n_open}")
            n_held = sum(1 for v in views.values() if v and v.group == g and v.state == "held")
            assert int(r["held"].get(g.encode(), 0)) == n_held, (
                f"tickets_held[{g}] = {r['held'].get(g.encode())}, held tickets {n_held}")
        for a in self.agents:
            expect = {tid for tid, v in views.items()
                      if v and v.agent == a and v.state in WITH_HANDLER}
            assert open_of[a] == expect, f"open set of {a}: {open_of[a]} vs {expect}"
        for tid in ids_of(r["overdue"]):
            v = views[tid]
            assert v is not None and v.state != "closed", f"{tid} overdue but {v}"
        self._check_ticket_agents(r)
        self._check_timers(r, views)

    def _check_ticket_agents(self, r: dict[str, Any]) -> None:
        """Each group's ticket-eligible set ({t}:g:<g>:tka) is what its definition gives
        from the keyspace: the members on shift with fewer open tickets than their limit,
        scored by open tickets, member = 15-digit last ticket assignment ms + id; and its
        order is the model's balanced order (fewest open, longest since the last, id)."""
        for g in GROUPS:
            expect: dict[str, float] = {}
            for raw in r[f"members:{g}"]:
                a = raw.decode()
                status, limit, tka = r[f"agent:{a}"]
                load = len(r[f"open:{a}"])
                if status in (None, b"offline") or load >= int(limit or 20):
                    continue
                expect[f"{int(tka or 0):015d}{a}"] = float(load)
            have = [(m.decode(), s) for m, s in r[f"eligible:{g}"]]
            assert dict(have) == expect, f"ticket-eligible agents of {g}: {have} vs {expect}"
            order = sorted(self.model.candidates(g, None),
                           key=lambda c: (c.load, c.last, c.id))
            assert [x[15:] for x, _ in have] == [c.id for c in order], (
                f"ticket-eligible order of {g}: {have} vs the model's {order}")

    def _check_timers(self, r: dict[str, Any], views: dict[str, Any]) -> None:
        """Waiting tickets are never forgotten (docs: "A queued ticket is assigned when a
        member becomes eligible ... at the next ticket tick"; every group with waiting
        tickets is looked at at least once a minute; held ones at the shift start)."""
        due = {m.decode(): int(s) for m, s in r["due"]}
        for g in GROUPS:
            waiting = [v for v in views.values() if v and v.group == g and v.state in WAITING]
            if not waiting:
                continue
            look = due.get("gq:" + g)
            assert look is not None, f"{g} has waiting tickets and no look-up due"
            pending = look <= self.now
            in_hours = self.in_service(g, self.now)
            opens = self.model.next_open(g, self.now)
            assert look <= opens + POLL_MS, (
                f"{g}: next look at t={look - T0}, it opens at t={opens - T0}")
            if any(v.state == "held" for v in waiting):
                assert not in_hours or pending, f"{g} in service, tickets held, no look-up due"
            if not in_hours and any(v.state == "queued" for v in waiting):
                # "held too (... within a minute of the end)"
                assert look <= self.now + POLL_MS, f"{g} closed, tickets queued, look at {look}"
            if in_hours and any(v.state == "queued" for v in waiting) and not pending:
                eligible = self._eligible(r, g)
                assert not eligible, (
                    f"{g}: tickets queued, {eligible} eligible, next look at t={look - T0}")

    def _eligible(self, r: dict[str, Any], g: str) -> list[str]:
        """Group g's eligible members from the keyspace (docs "eligible")."""
        ramp = {k.decode(): int(v) for k, v in r[f"ramp:{g}"].items()}
        spreading = ramp.get("#until", 0) > self.now
        out = []
        for raw in r[f"members:{g}"]:
            a = raw.decode()
            status, limit, _ = r[f"agent:{a}"]
            load = len(r[f"open:{a}"])
            if status == b"offline" or load >= int(limit):
                continue
            if spreading and ramp.get(a, 0) >= ramp["#share"]:
                continue
            out.append(a)
        return out

    def _check_views(self, views: dict[str, Any]) -> None:
        """Every ticket as stored is the model's."""
        for tid, v in views.items():
            t = self.model.tickets[tid]
            assert v is not None
            first = None if t.first_ms is None else t.first_ms - t.created_ms
            want = (t.state, t.group, t.agent, t.priority, t.order, t.created_ms, t.entered_ms,
                    t.assigned_ms, first, t.first_due_ms or None, t.resolution_due_ms or None,
                    tid in self.model.overdue, t.breached, t.hops, t.path, t.closed_ms, t.closed_by,
                    t.resolution)
            have = (v.state, v.group, v.agent, v.priority, v.order_id, v.created_ms,
                    v.entered_group_ms, v.assigned_ms, v.first_response_ms,
                    v.first_response_due_ms, v.resolution_due_ms, v.overdue, v.breached, v.hops,
                    v.path, v.closed_ms, v.closed_by, v.resolution)
            assert have == want, f"ticket {tid}\n  model  {want}\n  engine {have}"

    async def _check_queries(self) -> None:
        """The supervision queries (one family per step, in turn: each costs round trips),
        and now and then the forwarding chains."""
        m, ids = self.model, sorted(self.model.tickets)
        self.checks += 1
        family = self.checks % 6
        if family == 5:  # the forwarding chains
            for tid in ids:
                if m.tickets[tid].hops:
                    hops = await tickets.get_hops(self.client, self.tenant, tid)
                    assert [msgspec.structs.asdict(h) for h in hops] == m.tickets[tid].hop_log
            return
        queries: list[tuple[tickets.Query, set[str]]]
        if family == 0:
            queries = [(tickets.Query(group=g), {x for x in ids if m.tickets[x].group == g})
                       for g in GROUPS]
        elif family == 1:
            queries = [(tickets.Query(state=s), {x for x in ids if m.tickets[x].state == s})
                       for s in ("held", "queued", "assigned", "in_progress", "closed")]
        elif family == 2:
            queries = [(tickets.Query(handler=a), set(m.agents[a].open)) for a in self.agents]
        elif family == 3:
            queries = [(tickets.Query(handled_by=a), m.agents[a].handled - m.purged)
                       for a in self.agents]
        else:
            queries = [(tickets.Query(overdue=True), set(m.overdue))]
        for q, want_ids in queries:
            found, cursor = await tickets.find(self.client, self.tenant, q, limit=500)
            assert cursor is None
            assert {v.ticket for v in found} == want_ids, f"find({q!r})"


def _reasons(cmd: Any, ticket: str, was: str | None) -> set[str]:
    """docs "reason": why a ticket may be assigned during ``cmd``, given its state before."""
    if isinstance(cmd, AssignTicket):
        return {"manual"}
    if isinstance(cmd, CreateTicket | ForwardTicket) and cmd.ticket == ticket:
        return {"created" if isinstance(cmd, CreateTicket) else "forwarded"}
    # AMBIGUITY: a ticket queued before its group closed waits for the next shift like a
    # held one, and the scripts assign it with the released ones ("shift_start")
    return {"held": {"shift_start"}, "queued": {"queue", "shift_start"},
            "assigned": {"untouched"}}.get(was or "", set())


def _fmt(events: list[Any]) -> str:
    return "\n    " + "\n    ".join(repr(e) for e in events) if events else "[]"


# the long profile (400 runs of 200 steps) takes about 10 minutes; default stays near 20 s
def test_tickets_match_model(redis_url: str) -> None:
    machine = type("BoundTicketMachine", (TicketMachine,), {"redis_url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            settings.default,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# ============================================================ unit tests of the model


def _world(**group: int) -> TicketModel:
    """A model with groups g and h (``group`` overrides g's settings), ticket types "task"
    (no SLA) and "sla" (first response in a minute, resolution in an hour)."""
    m = TicketModel()
    for g in ("g", "h"):
        settings_ = group if g == "g" else {}
        m.apply(T0, ConfigureGroup(group=g, **settings_))  # type: ignore[arg-type]
    m.apply(T0, ConfigureTicketType(type="task"))
    m.apply(T0, ConfigureTicketType(type="sla", first_response_ms=MIN, resolution_ms=HOUR))
    return m


def _agent(m: TicketModel, a: str, groups: list[str], limit: int = 20,
           status: AgentStatusName = "online") -> None:
    m.apply(T0, ConfigureAgent(agent=a, capacity=0, abilities=dict.fromkeys(groups, 1.0),
                               ticket_limit=limit))
    m.apply(T0, SetAgentStatus(agent=a, status=status))


def _create(m: TicketModel, now: int, tid: str, group: str = "g", type_: str = "task",
            **kw: Any) -> list[Any]:
    return m.apply(now, CreateTicket(ticket=tid, type=type_, group=group, by="crm", **kw))


def test_model_prefers_owner_then_order_history_then_least_loaded() -> None:
    m = _world()
    for a in ("x", "y", "z"):
        _agent(m, a, ["g"])
    # least loaded, then longest since its last ticket, then id
    assert _create(m, T0, "k1")[1].agent == "x"
    assert _create(m, T0 + 1, "k2")[1].agent == "y"
    assert _create(m, T0 + 2, "k3")[1] == TicketAssigned(
        ticket="k3", group="g", agent="z", via="balanced", reason="created", wait_ms=0)
    # the order's earlier handler, latest first; then its owner over everything
    _create(m, T0 + 3, "k4", order_id="o")  # x: load 1, longest idle
    assert _create(m, T0 + 4, "k5", order_id="o")[1].via == "order_history"
    assert m.tickets["k5"].agent == "x"
    ev = _create(m, T0 + 5, "k6", order_id="o", order_owner="z")
    assert (ev[1].agent, ev[1].via) == ("z", "owner")
    m.check_invariants()


def test_model_holds_outside_hours_and_spreads_the_release() -> None:
    m = _world(ticket_release_spread_ms=10 * MIN)
    m.apply(T0, SetServiceWindows(group="g", meta_sha1="",
                                  windows=ServiceWindows(hz=T0 + 100 * HOUR,
                                                         iv=[T0 + HOUR, T0 + 2 * HOUR])))
    _agent(m, "x", ["g"])
    _agent(m, "y", ["g"], status="offline")
    for i in range(3):
        assert _create(m, T0 + i, f"k{i}")[1] == TicketHeld(
            ticket=f"k{i}", group="g", reason="created", until_ms=T0 + HOUR)
    # the shift starts: x takes ceil(3 held / 2 members) = 2, the third waits for the cap
    ev = m.apply(T0 + HOUR, TicketTick())
    assert [(e.ticket, e.agent, e.reason) for e in ev[:2]] == [
        ("k0", "x", "shift_start"), ("k1", "x", "shift_start")]
    assert ev[2] == TicketQueued(ticket="k2", group="g", reason="shift_start", position=1)
    assert m.due["gq:g"] == T0 + HOUR + MIN  # the poll comes before the end of the cap
    assert m.apply(T0 + HOUR + 10 * MIN - 1, TicketTick()) == []
    assert m.apply(T0 + HOUR + 10 * MIN, TicketTick())[0].ticket == "k2"
    m.check_invariants()


def test_model_reassigns_untouched_never_to_the_same_handler() -> None:
    m = _world(ticket_reassign_ms=HOUR)
    _agent(m, "x", ["g"])
    _create(m, T0, "k")
    # nobody else: checked again an hour later
    assert m.apply(T0 + HOUR, TicketTick()) == []
    assert m.due["ra:k"] == T0 + 2 * HOUR
    _agent(m, "y", ["g"], limit=1)
    ev = m.apply(T0 + 2 * HOUR, TicketTick())
    assert ev == [TicketAssigned(ticket="k", group="g", agent="y", via="balanced",
                                 reason="untouched", wait_ms=2 * HOUR, previous_agent="x")]
    # once worked on, it stays
    m.apply(T0 + 2 * HOUR, RespondTicket(ticket="k", agent="y"))
    assert "ra:k" not in m.due
    m.check_invariants()


def test_model_forwards_with_loops_and_closes_with_breaches() -> None:
    m = _world()
    _agent(m, "x", ["g"], limit=1)
    _create(m, T0, "k", type_="sla")
    assert m.apply(T0 + MIN, TicketTick())[0].kind == "first_response"
    assert m.validate(T0, ForwardTicket(ticket="k", to_group="g", agent="x")) == [
        "E_SAME_GROUP"]
    assert m.validate(T0, ForwardTicket(ticket="k", to_group="h", agent="y")) == [
        "E_NOT_TICKET_HANDLER"]
    ev = m.apply(T0 + 2 * MIN, ForwardTicket(ticket="k", to_group="h", agent="x"))
    assert [type(e).__name__ for e in ev] == ["TicketForwarded", "TicketQueued"]
    ev = m.apply(T0 + 3 * MIN, ForwardTicket(ticket="k", to_group="g", supervisor="sup"))
    assert ev[1] == TicketLoop(ticket="k", group="g", hop=2, visits=2)
    assert ev[2].agent == "x"  # its slot was freed by the first forward
    closed = m.apply(T0 + 2 * HOUR, CloseTicket(ticket="k", resolution="ok", agent="x"))
    assert closed[0].breached == ["first_response"] and closed[0].hops == 2
    assert m.validate(T0, RespondTicket(ticket="k", agent="x")) == ["E_TICKET_STATE"]
    assert m.tickets["k"].path == ["g", "h", "g"]
    m.check_invariants()
