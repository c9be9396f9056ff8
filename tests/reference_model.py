"""A pure-Python reference model of the routing core, written from docs/routing.md.

One :class:`Model` holds one tenant's state in plain dicts and lists and applies the same
commands as :class:`dispatchd.engine.Engine`, returning the same events. It is written for
clarity, not speed: queues and rankings are recomputed by sorting Python lists every time
they are needed; nothing is cached or indexed.

It is deliberately independent of ``lua/*.lua``: every rule below quotes or paraphrases
docs/routing.md. Where the doc leaves a choice open, the reading taken is marked
``# AMBIGUITY:``.

Contract of :meth:`Model.apply`: either returns the exact list of events the doc
prescribes, or raises the :mod:`dispatchd.errors` exception of the first violated rule
having changed nothing. :meth:`Model.validate` returns *every* violated rule (so a test
can accept whichever of several simultaneous faults the engine reports first).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from dispatchd.errors import (
    AgentBlocked,
    AgentOffline,
    AgentUnknown,
    BadArgument,
    BadId,
    BadTier,
    CommandRejected,
    GroupUnknown,
    SessionExists,
    SessionState,
    SessionUnknown,
    UnknownOperation,
)
from dispatchd.messages import (
    AbandonCustomer,
    Abandoned,
    AgentConfigured,
    AgentReady,
    AgentStatusChanged,
    Arrive,
    Assigned,
    ConfigureAgent,
    ConfigureGroup,
    EscalateOverflow,
    Event,
    ExpirePreferences,
    GroupConfigured,
    Preclosed,
    PrecloseSession,
    PreferenceExpired,
    Queued,
    Reactivated,
    ReactivateSession,
    Released,
    ReleaseSession,
    SetAgentStatus,
    TierOpened,
    Transferred,
    TransferSession,
)

# "Ids (tenant, group, agent, session, customer) are 1..64 characters of A-Z a-z 0-9 _ . @ -"
_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

STATUSES = ("online", "away", "offline")
MAX_TIERS = 16
MAX_TIER_GROUPS = 64
# "Bounds: k 0..1e9, m 0..1e6, priority_unit_ms 0..1e9, sticky_ms, preference_ms and after_ms
# 0..1e11 (integers where the unit is ms)"; abilities in (0, 1e6], at most 256 groups;
# "Other limits": blocked_agents ≤ 100 ids, reason ≤ 64 characters, team ≤ 256,
# limit 1..10000.
MAX_K = 1e9
MAX_M = 1e6
MAX_U = 10**9
MAX_MS = 10**11
MAX_ABILITY = 1e6
MAX_ABILITIES = 256
MAX_BLOCKED = 100
MAX_REASON = 256  # bytes of UTF-8
MAX_TEAM = 256
MAX_LIMIT = 10_000


# ------------------------------------------------------------------------- value checks


def is_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_int(value: Any) -> bool:
    # AMBIGUITY: the scripts receive msgpack numbers in Lua 5.1, where 2.0 and 2 are the same
    # number, so an integral float can't be told from an int. The model accepts both and the
    # state machine only ever sends ints or non-integral floats for integer fields.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def is_num(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def is_int_in(value: Any, lo: int | None, hi: int | None) -> bool:
    if not is_int(value):
        return False
    if lo is not None and value < lo:
        return False
    return not (hi is not None and value > hi)


# ------------------------------------------------------------------------------ state


@dataclass
class GroupCfg:
    k: float
    m: float
    u: int  # priority_unit_ms
    tiers: list[tuple[int, list[str]]]  # (after_ms, groups), tier n = tiers[n - 1]
    sticky_ms: int
    preference_ms: int


@dataclass
class AgentRec:
    capacity: int
    abilities: dict[str, float]
    team: str
    status: str = "offline"
    load: int = 0
    preclosed: int = 0
    last_assigned_ms: int | None = None
    sessions: list[str] = field(default_factory=list)  # assigned (open) sessions
    preclosed_sessions: list[str] = field(default_factory=list)


@dataclass
class SessionRec:
    session: str
    group: str
    priority: int
    arrival_ms: int
    seq: int
    customer: str | None
    blocked: list[str]
    state: str = "queued"  # queued | assigned | preclosed | closed
    agent: str | None = None  # while assigned / preclosed
    # while queued: where = "queue" (its group's queue) or "parked" (with parked_with)
    where: str | None = None
    parked_with: str | None = None
    parked_via: str | None = None  # directed | sticky | transfer (why it is parked)
    va: int | None = None  # virtual arrival while queued
    open_tier: int = 0
    due_overflow: int | None = None  # while in a group queue and a next tier exists
    due_preference: int | None = None  # while parked


class Model:
    """One tenant's routing state and the rules of docs/routing.md."""

    def __init__(self) -> None:
        self.seq = 0  # per-tenant arrival counter
        self.groups: dict[str, GroupCfg] = {}
        self.agents: dict[str, AgentRec] = {}
        self.sessions: dict[str, SessionRec] = {}
        # customer -> (agent that last released one of its sessions, when)
        self.customers: dict[str, tuple[str, int]] = {}

    # ===================================================================== read views

    @staticmethod
    def order_key(s: SessionRec) -> tuple[int, int, int]:
        """Customer order: lower va first, then earlier arrival, then lower sequence."""
        assert s.va is not None
        return (s.va, s.arrival_ms, s.seq)

    def queue(self, group: str) -> list[SessionRec]:
        """The group's queue in service order (parked customers are not in it)."""
        rows = [
            s
            for s in self.sessions.values()
            if s.state == "queued" and s.where == "queue" and s.group == group
        ]
        return sorted(rows, key=self.order_key)

    def parked(self, agent: str) -> list[SessionRec]:
        """Customers parked with the agent, in service order."""
        rows = [
            s
            for s in self.sessions.values()
            if s.state == "queued" and s.where == "parked" and s.parked_with == agent
        ]
        return sorted(rows, key=self.order_key)

    def queue_view(self, group: str) -> list[tuple[str, int]]:
        return [(s.session, s.va) for s in self.queue(group)]  # type: ignore[misc]

    def parked_view(self, agent: str) -> list[tuple[str, int]]:
        return [(s.session, s.va) for s in self.parked(agent)]  # type: ignore[misc]

    def is_candidate(self, agent: str, group: str) -> bool:
        """Member of the group, online, and load < capacity."""
        a = self.agents[agent]
        return group in a.abilities and a.status == "online" and a.load < a.capacity

    def rank(self, agent: str, group: str) -> float:
        """Stored readiness rank, lower is better, evaluated left to right in doubles:
        ``last_assigned_ms/1000 - K * (capacity - load - M * preclosed) / capacity * ability``.
        """
        a = self.agents[agent]
        g = self.groups[group]
        assert a.last_assigned_ms is not None, "an online agent always has last_assigned_ms"
        k = float(g.k)
        m = float(g.m)
        ability = float(a.abilities[group])
        free = a.capacity - a.load - m * a.preclosed
        return a.last_assigned_ms / 1000 - k * free / a.capacity * ability

    def ranking(self, group: str) -> list[tuple[str, float]]:
        """The group's candidate agents best first, with their rank (ties by agent id)."""
        rows = [
            (self.rank(agent, group), agent)
            for agent in self.agents
            if self.is_candidate(agent, group)
        ]
        return [(agent, r) for r, agent in sorted(rows)]

    # ======================================================================= validate

    def validate(self, now_ms: int, cmd: Any) -> list[CommandRejected]:
        """Every rule ``cmd`` violates in the current state (empty: it will succeed)."""
        checker = _VALIDATORS.get(type(cmd))
        if checker is None:
            return [UnknownOperation(repr(getattr(cmd, "op", cmd)))]
        errors: list[CommandRejected] = []
        checker(self, now_ms, cmd, errors)
        return errors

    def _v_id(self, value: Any, what: str, errors: list[CommandRejected]) -> bool:
        if not is_id(value):
            errors.append(BadId(f"{what} {value!r}"))
            return False
        return True

    def _v_configure_group(self, now: int, c: ConfigureGroup, e: list[CommandRejected]) -> None:
        gid_ok = self._v_id(c.group, "group", e)
        if not (is_num(c.k) and 0 <= c.k <= MAX_K):
            e.append(BadArgument("k"))
        if not (is_num(c.m) and 0 <= c.m <= MAX_M):
            e.append(BadArgument("m"))
        if not is_int_in(c.priority_unit_ms, 0, MAX_U):
            e.append(BadArgument("priority_unit_ms"))
        if not is_int_in(c.sticky_ms, 0, MAX_MS):
            e.append(BadArgument("sticky_ms"))
        if not is_int_in(c.preference_ms, 0, MAX_MS):
            e.append(BadArgument("preference_ms"))
        tiers = c.tiers
        if not isinstance(tiers, list):
            e.append(BadArgument("tiers"))
            return
        if len(tiers) > MAX_TIERS:
            e.append(BadArgument("too many tiers"))
        seen: set[str] = set()
        prev_after: int | None = None
        for t in tiers:
            after = getattr(t, "after_ms", None)
            groups = getattr(t, "groups", None)
            if not is_int_in(after, 0, MAX_MS):
                e.append(BadArgument("after_ms"))
            elif prev_after is not None and is_int(prev_after) and after <= prev_after:
                e.append(BadTier("after_ms not increasing"))
            prev_after = after if is_int(after) else prev_after
            if not isinstance(groups, list) or not 1 <= len(groups) <= MAX_TIER_GROUPS:
                e.append(BadArgument("tier groups"))
                continue
            for g in groups:
                if not self._v_id(g, "tier group", e):
                    continue
                if gid_ok and g == c.group:
                    e.append(BadTier("self"))
                if g not in self.groups:  # (a new group naming itself is both)
                    e.append(GroupUnknown(g))
                if g in seen:
                    e.append(BadTier(f"repeat {g}"))
                seen.add(g)

    def _v_configure_agent(self, now: int, c: ConfigureAgent, e: list[CommandRejected]) -> None:
        self._v_id(c.agent, "agent", e)
        if not is_int_in(c.capacity, 0, 1000):
            e.append(BadArgument("capacity"))
        if not isinstance(c.team, str) or len(c.team) > MAX_TEAM:
            e.append(BadArgument("team"))
        if not isinstance(c.abilities, dict):
            e.append(BadArgument("abilities"))
            return
        if len(c.abilities) > MAX_ABILITIES:
            e.append(BadArgument("too many abilities"))
        for g, ability in c.abilities.items():
            if self._v_id(g, "group", e) and g not in self.groups:
                e.append(GroupUnknown(g))
            if not (is_num(ability) and 0 < ability <= MAX_ABILITY):
                e.append(BadArgument(f"ability {g}"))

    def _v_set_agent_status(self, now: int, c: SetAgentStatus, e: list[CommandRejected]) -> None:
        if self._v_id(c.agent, "agent", e) and c.agent not in self.agents:
            e.append(AgentUnknown(c.agent))
        if c.status not in STATUSES:
            e.append(BadArgument("status"))

    def _v_arrive(self, now: int, c: Arrive, e: list[CommandRejected]) -> None:
        if self._v_id(c.session, "session", e) and c.session in self.sessions:
            e.append(SessionExists(c.session))
        if self._v_id(c.group, "group", e) and c.group not in self.groups:
            e.append(GroupUnknown(c.group))
        if c.customer is not None:
            self._v_id(c.customer, "customer", e)
        if not is_int_in(c.priority, -1000, 1000):
            e.append(BadArgument("priority"))
        if (
            c.directed_agent is not None
            and self._v_id(c.directed_agent, "directed_agent", e)
            and c.directed_agent not in self.agents
        ):
            e.append(AgentUnknown(c.directed_agent))
        if c.last_agent is not None:
            # "an unknown sticky agent is ignored" -- but a malformed id is still malformed
            self._v_id(c.last_agent, "last_agent", e)
        if not isinstance(c.blocked_agents, list) or len(c.blocked_agents) > MAX_BLOCKED:
            e.append(BadArgument("blocked_agents"))
        if isinstance(c.blocked_agents, list):
            # AMBIGUITY: the doc does not say whether blocked agents must exist. A customer's
            # block list may name agents the tenant does not (yet) have; the model accepts
            # unknown (well-formed) ids and stores them.
            for b in c.blocked_agents:
                self._v_id(b, "blocked agent", e)

    def _v_agent_ready(self, now: int, c: AgentReady, e: list[CommandRejected]) -> None:
        if self._v_id(c.agent, "agent", e) and c.agent not in self.agents:
            e.append(AgentUnknown(c.agent))

    def _v_session(
        self, sid: Any, states: tuple[str, ...], e: list[CommandRejected]
    ) -> SessionRec | None:
        if not self._v_id(sid, "session", e):
            return None
        s = self.sessions.get(sid)
        if s is None:
            e.append(SessionUnknown(sid))
            return None
        if s.state not in states:
            e.append(SessionState(f"{sid} is {s.state}"))
        return s

    def _v_release(self, now: int, c: ReleaseSession, e: list[CommandRejected]) -> None:
        self._v_session(c.session, ("assigned", "preclosed"), e)
        if not isinstance(c.reason, str) or len(c.reason.encode()) > MAX_REASON:
            e.append(BadArgument("reason"))

    def _v_preclose(self, now: int, c: PrecloseSession, e: list[CommandRejected]) -> None:
        self._v_session(c.session, ("assigned",), e)

    def _v_reactivate(self, now: int, c: ReactivateSession, e: list[CommandRejected]) -> None:
        self._v_session(c.session, ("preclosed",), e)

    def _v_abandon(self, now: int, c: AbandonCustomer, e: list[CommandRejected]) -> None:
        self._v_session(c.session, ("queued",), e)

    def _v_transfer(self, now: int, c: TransferSession, e: list[CommandRejected]) -> None:
        s = self._v_session(c.session, ("queued", "assigned"), e)
        if not isinstance(c.force, bool):
            e.append(BadArgument("force"))
        # AMBIGUITY: the doc says a session moves "to to_group ... or to to_agent"; the model
        # requires exactly one of them (neither or both is E_BAD_ARG; the engine agrees).
        if (c.to_group is None) == (c.to_agent is None):
            e.append(BadArgument("exactly one of to_group / to_agent"))
        if (
            c.to_group is not None
            and self._v_id(c.to_group, "to_group", e)
            and c.to_group not in self.groups
        ):
            e.append(GroupUnknown(c.to_group))
        if c.to_agent is not None and self._v_id(c.to_agent, "to_agent", e):
            a = self.agents.get(c.to_agent)
            if a is None:
                e.append(AgentUnknown(c.to_agent))
            else:
                if a.status == "offline":
                    e.append(AgentOffline(c.to_agent))
                if s is not None and c.to_agent in s.blocked:
                    e.append(AgentBlocked(c.to_agent))
                # AMBIGUITY: the doc is silent on a transfer to the agent that already has
                # the session; the engine refuses it ("E_BAD_ARG to_agent: already there")
                # and the model follows (a move to where it already is is not a move).
                if s is not None and s.state == "assigned" and s.agent == c.to_agent:
                    e.append(BadArgument("to_agent: already there"))

    def _v_limit(self, now: int, c: EscalateOverflow | ExpirePreferences, e: list) -> None:
        if not is_int_in(c.limit, 1, MAX_LIMIT):
            e.append(BadArgument("limit"))

    # ========================================================================== apply

    def apply(self, now_ms: int, cmd: Any) -> list[Event]:
        """Apply one command: its events in order, or raise having changed nothing."""
        errors = self.validate(now_ms, cmd)
        if errors:
            raise errors[0]
        handler = _HANDLERS[type(cmd)]
        events: list[Event] = handler(self, now_ms, cmd)
        return events

    # ---------------------------------------------------------------- configuration

    def _configure_group(self, now: int, c: ConfigureGroup) -> list[Event]:
        # "create/replace a group's settings. Agent ranks in the group are recomputed."
        # (ranks are computed on demand here) "Queued customers keep their virtual arrival
        # (a new U applies to customers queued from then on)."
        old = self.groups.get(c.group)
        self.groups[c.group] = GroupCfg(
            k=float(c.k),
            m=float(c.m),
            u=int(c.priority_unit_ms),
            tiers=[(int(t.after_ms), list(t.groups)) for t in c.tiers],
            sticky_ms=int(c.sticky_ms),
            preference_ms=int(c.preference_ms),
        )
        events: list[Event] = [GroupConfigured(group=c.group)]
        new = self.groups[c.group]
        # AMBIGUITY: "when the tiers change" compares the tier lists as given (thresholds and
        # group lists, in order); a mere reordering of a tier's groups counts as a change.
        if old is None or old.tiers == new.tiers:
            return events
        # "When the tiers change, every customer queued in the group is re-evaluated in
        # service order: its open tier becomes the number of new tiers its real wait has
        # earned (never fewer than before, capped at the new number of tiers), its next
        # overflow step is rescheduled, and it is assigned at once if its new pool has a
        # candidate." Events: "group_configured, then assigned for re-evaluated customers
        # in service order" -- no tier_opened here.
        # AMBIGUITY: "queued in the group" = in the group's queue; customers parked with an
        # agent have no tiers yet ("a parked customer's tiers are computed when it falls
        # back") and are left alone.
        for s in self.queue(c.group):
            s.open_tier = min(max(s.open_tier, self.open_tier_at(s, now)), len(new.tiers))
            s.due_overflow = self._next_overflow_due(s)
            pick = self._pick_agent_for(s)
            if pick is not None:
                agent, tier = pick
                events.append(
                    self._assign(now, s, agent, tier, "group" if tier == 0 else "overflow")
                )
        return events

    def _configure_agent(self, now: int, c: ConfigureAgent) -> list[Event]:
        a = self.agents.get(c.agent)
        if a is None:  # "A new agent starts offline."
            a = AgentRec(capacity=int(c.capacity), abilities={}, team=c.team)
            self.agents[c.agent] = a
        a.capacity = int(c.capacity)
        a.abilities = {g: float(v) for g, v in c.abilities.items()}
        a.team = c.team
        # "If online with free capacity it then takes work."
        return [AgentConfigured(agent=c.agent), *self._agent_takes(now, c.agent)]

    def _set_agent_status(self, now: int, c: SetAgentStatus) -> list[Event]:
        a = self.agents[c.agent]
        previous = a.status
        a.status = c.status
        events: list[Event] = [
            AgentStatusChanged(agent=c.agent, status=c.status, previous=previous)  # type: ignore[arg-type]
        ]
        if c.status == "online":
            # "last_assigned_ms ... set to the time it first goes online if it was never
            # assigned"
            if a.last_assigned_ms is None:
                a.last_assigned_ms = now
            events += self._agent_takes(now, c.agent)
        elif c.status == "offline":
            # "customers parked with it fall back to normal routing at once", one
            # queued/assigned per customer "in their parked order".
            for s in self.parked(c.agent):
                self._detach_queued(s)
                # AMBIGUITY: "Queued customers keep their virtual arrival" (configure_group)
                # vs "falls back to normal routing in its group ... with its original
                # arrival and priority" (preferences). The model recomputes va from the
                # arrival, the priority and the group's *current* U when a parked customer
                # falls back (as the engine does); the va it was parked with is dropped.
                events.append(self._route_customer(now, s, "agent_offline"))
        return events

    # ---------------------------------------------------------------------- arrival

    def _arrive(self, now: int, c: Arrive) -> list[Event]:
        g = self.groups[c.group]
        self.seq += 1
        s = SessionRec(
            session=c.session,
            group=c.group,
            priority=int(c.priority),
            arrival_ms=now,
            seq=self.seq,
            customer=c.customer,
            blocked=sorted(set(c.blocked_agents)),
        )
        self.sessions[c.session] = s

        # preferred agent: directed if given, otherwise sticky
        preferred: str | None = None
        via = ""
        if c.directed_agent is not None:
            preferred, via = c.directed_agent, "directed"
        elif g.sticky_ms > 0:
            if c.last_agent is not None:
                # AMBIGUITY: a last_agent given in the command is "the" sticky agent; when it
                # is unknown it is ignored and the customer's remembered last agent is NOT
                # consulted instead ("last_agent from the command if given, else ...").
                if c.last_agent in self.agents:
                    preferred, via = c.last_agent, "sticky"
            elif c.customer is not None and c.customer in self.customers:
                agent, released_at = self.customers[c.customer]
                # "at most sticky_ms ago (now - released ≤ sticky_ms)"
                if now - released_at <= g.sticky_ms:
                    preferred, via = agent, "sticky"
        # AMBIGUITY: "A preferred agent that the customer blocks is ignored" -- a blocked
        # directed agent does not make the sticky agent the preferred one instead.
        if preferred is not None and preferred in s.blocked:
            preferred = None

        if preferred is not None:
            a = self.agents[preferred]
            if a.status == "online" and a.load < a.capacity:
                # "assigned at once (via = directed or sticky), even if it is not a member"
                return [self._assign(now, s, preferred, 0, via)]
            if a.status != "offline" and g.preference_ms > 0:
                return [
                    self._park(
                        s,
                        preferred,
                        via,
                        va=s.arrival_ms - s.priority * g.u,
                        due=s.arrival_ms + g.preference_ms,
                        reason="arrival",
                    )
                ]
        return [self._route_customer(now, s, "arrival")]

    # ------------------------------------------------------------------- agent side

    def _agent_takes(self, now: int, agent: str) -> list[Event]:
        """While the agent is online and load < capacity, it takes customers."""
        a = self.agents[agent]
        events: list[Event] = []
        while a.status == "online" and a.load < a.capacity:
            pick = self._pick_customer_for(agent)
            if pick is None:
                break
            s, tier, via = pick
            self._detach_queued(s)
            events.append(self._assign(now, s, agent, tier, via))
        return events

    def _pick_customer_for(self, agent: str) -> tuple[SessionRec, int, str] | None:
        a = self.agents[agent]
        # 1. the customer parked with this agent, lowest va first
        parked = self.parked(agent)
        if parked:
            s = parked[0]
            # AMBIGUITY: a parked customer taken by its agent later is assigned with the
            # `via` it was parked for (directed / sticky / transfer), tier 0.
            return s, 0, s.parked_via or "directed"
        # 2. own groups: head of each queue skipping customers who block this agent;
        #    highest ability wins, ties by lowest va (then arrival, then sequence)
        heads: list[tuple[float, tuple[int, int, int], SessionRec]] = []
        for g in sorted(a.abilities):
            for s in self.queue(g):
                if agent not in s.blocked:
                    heads.append((-a.abilities[g], self.order_key(s), s))
                    break
        if heads:
            best = min(heads, key=lambda h: (h[0], h[1]))
            return best[2], 0, "group"
        # 3. overflow: groups S (not the agent's own) listing one of its groups in tier n
        offers: list[tuple[int, tuple[int, int, int], SessionRec]] = []
        for sg in sorted(self.groups):
            if sg in a.abilities:
                continue
            n = self._lowest_tier_listing(sg, set(a.abilities))
            if n is None:
                continue
            for s in self.queue(sg):
                if s.open_tier >= n and agent not in s.blocked:
                    offers.append((n, self.order_key(s), s))
                    break
        if offers:
            # "Lowest n wins; ties by lowest va." AMBIGUITY: further ties by earlier arrival
            # then sequence, as in step 2 (the doc only says "ties by lowest va" here).
            best_o = min(offers, key=lambda o: (o[0], o[1]))
            return best_o[2], best_o[0], "overflow"
        return None

    def _lowest_tier_listing(self, source: str, groups: set[str]) -> int | None:
        for n, (_after, tier_groups) in enumerate(self.groups[source].tiers, start=1):
            if groups.intersection(tier_groups):
                return n
        return None

    # ---------------------------------------------------------------- customer side

    def open_tier_at(self, s: SessionRec, now: int) -> int:
        """Number of tiers of its group whose after_ms ≤ the real wait."""
        wait = now - s.arrival_ms
        return sum(1 for after, _ in self.groups[s.group].tiers if after <= wait)

    def _pick_agent_for(self, s: SessionRec) -> tuple[str, int] | None:
        """Own group's best candidate, else the first open tier with any candidate."""
        own = [(r, a) for a, r in self.ranking(s.group) if a not in s.blocked]
        if own:
            return min(own)[1], 0
        tiers = self.groups[s.group].tiers
        for n in range(1, min(s.open_tier, len(tiers)) + 1):
            pool = [
                (r, a) for g in tiers[n - 1][1] for a, r in self.ranking(g) if a not in s.blocked
            ]
            if pool:
                return min(pool)[1], n
        return None

    def _route_customer(self, now: int, s: SessionRec, reason: str) -> Event:
        """Customer-side routing of a detached session: assigned, or queued in its group
        with va = arrival - priority * U (U of the group it is queued in)."""
        g = self.groups[s.group]
        s.open_tier = self.open_tier_at(s, now)  # recomputed whenever (re-)queued
        pick = self._pick_agent_for(s)
        if pick is not None:
            agent, tier = pick
            return self._assign(now, s, agent, tier, "group" if tier == 0 else "overflow")
        s.state = "queued"
        s.where = "queue"
        s.parked_with = None
        s.parked_via = None
        s.va = s.arrival_ms - s.priority * g.u
        s.due_preference = None
        s.due_overflow = self._next_overflow_due(s)
        position = [q.session for q in self.queue(s.group)].index(s.session) + 1
        return Queued(
            session=s.session,
            group=s.group,
            virtual_arrival_ms=s.va,
            priority=s.priority,
            position=position,
            reason=reason,
        )

    def _next_overflow_due(self, s: SessionRec) -> int | None:
        """arrival_ms + after_ms of the next tier (tier open_tier + 1), if there is one."""
        tiers = self.groups[s.group].tiers
        if s.open_tier < len(tiers):
            return s.arrival_ms + tiers[s.open_tier][0]
        return None

    def _park(
        self, s: SessionRec, agent: str, via: str, *, va: int, due: int, reason: str
    ) -> Event:
        s.state = "queued"
        s.where = "parked"
        s.parked_with = agent
        s.parked_via = via
        s.va = va
        # "a parked customer's tiers are computed when it falls back"
        s.open_tier = 0
        s.due_overflow = None
        s.due_preference = due
        position = [p.session for p in self.parked(agent)].index(s.session) + 1
        return Queued(
            session=s.session,
            group=s.group,
            virtual_arrival_ms=va,
            priority=s.priority,
            position=position,
            reason=reason,
            parked_with=agent,
        )

    # -------------------------------------------------------------------- helpers

    def _detach_queued(self, s: SessionRec) -> None:
        """Take a queued session out of its group queue or parked list."""
        s.where = None
        s.parked_with = None
        s.parked_via = None
        s.va = None
        s.due_overflow = None
        s.due_preference = None

    def _assign(self, now: int, s: SessionRec, agent: str, tier: int, via: str) -> Event:
        a = self.agents[agent]
        self._detach_queued(s)
        s.state = "assigned"
        s.agent = agent
        a.load += 1
        a.sessions.append(s.session)
        # AMBIGUITY: last_assigned_ms ("time of the last assignment") is set by every
        # `assigned` event, including forced transfers, and not by a reactivation.
        a.last_assigned_ms = now
        return Assigned(
            session=s.session,
            agent=agent,
            group=s.group,
            tier=tier,
            via=via,
            wait_ms=now - s.arrival_ms,
        )

    def _unassign(self, s: SessionRec) -> str:
        """Remove an assigned session from its agent (load - 1); returns the agent."""
        agent = s.agent
        assert agent is not None and s.state == "assigned"
        a = self.agents[agent]
        a.load -= 1
        a.sessions.remove(s.session)
        s.agent = None
        return agent

    # ------------------------------------------------------------ session operations

    def _agent_ready(self, now: int, c: AgentReady) -> list[Event]:
        return self._agent_takes(now, c.agent)

    def _release(self, now: int, c: ReleaseSession) -> list[Event]:
        s = self.sessions[c.session]
        agent = s.agent
        assert agent is not None
        a = self.agents[agent]
        if s.state == "assigned":
            a.load -= 1
            a.sessions.remove(s.session)
        else:
            a.preclosed -= 1
            a.preclosed_sessions.remove(s.session)
        s.state = "closed"
        s.agent = None
        # "remembers the customer's last agent for stickiness"
        if s.customer is not None:
            self.customers[s.customer] = (agent, now)
        events: list[Event] = [Released(session=s.session, agent=agent, reason=c.reason)]
        return events + self._agent_takes(now, agent)

    def _preclose(self, now: int, c: PrecloseSession) -> list[Event]:
        s = self.sessions[c.session]
        agent = s.agent
        assert agent is not None
        a = self.agents[agent]
        a.load -= 1
        a.sessions.remove(s.session)
        a.preclosed += 1
        a.preclosed_sessions.append(s.session)
        s.state = "preclosed"
        events: list[Event] = [Preclosed(session=s.session, agent=agent)]
        return events + self._agent_takes(now, agent)

    def _reactivate(self, now: int, c: ReactivateSession) -> list[Event]:
        s = self.sessions[c.session]
        agent = s.agent
        assert agent is not None
        a = self.agents[agent]
        a.preclosed -= 1
        a.preclosed_sessions.remove(s.session)
        # AMBIGUITY: agents are never deleted, so "gone" never happens; "offline or gone"
        # is read as status == offline.
        if a.status in ("online", "away"):
            a.load += 1
            a.sessions.append(s.session)
            s.state = "assigned"
            # AMBIGUITY: over_capacity means the agent's load is now above its capacity.
            return [Reactivated(session=s.session, agent=agent, over_capacity=a.load > a.capacity)]
        s.agent = None
        s.state = "queued"
        return [self._route_customer(now, s, "reactivation")]

    def _abandon(self, now: int, c: AbandonCustomer) -> list[Event]:
        s = self.sessions[c.session]
        self._detach_queued(s)
        s.state = "closed"
        return [Abandoned(session=s.session, group=s.group, wait_ms=now - s.arrival_ms)]

    def _transfer(self, now: int, c: TransferSession) -> list[Event]:
        s = self.sessions[c.session]
        from_group = s.group
        old_agent: str | None = None
        # AMBIGUITY: the session first leaves its old agent (load - 1) and only then is
        # routed, so with a to_group transfer it may come straight back to the same agent if
        # that agent is the best candidate; the old agent then takes work afterwards.
        if s.state == "assigned":
            old_agent = self._unassign(s)
        else:
            self._detach_queued(s)  # its preference (if parked) is dropped
        s.state = "queued"
        events: list[Event] = []
        if c.to_group is not None:
            s.group = c.to_group
            events.append(
                Transferred(
                    session=s.session,
                    from_group=from_group,
                    to_group=c.to_group,
                    from_agent=old_agent,
                )
            )
            # "keeps its arrival and priority; re-ranked with the new group's U"
            # AMBIGUITY: an immediate assignment after a group transfer is ordinary
            # customer-side routing, so via = group / overflow (not "transfer").
            events.append(self._route_customer(now, s, "transfer"))
        else:
            target = c.to_agent
            assert target is not None
            a = self.agents[target]
            g = self.groups[s.group]
            events.append(
                Transferred(
                    session=s.session,
                    from_group=from_group,
                    to_group=s.group,
                    from_agent=old_agent,
                    to_agent=target,
                )
            )
            if c.force:
                # "force=True assigns at once, even over capacity or while the agent is away
                # (never offline), with via = forced"
                events.append(self._assign(now, s, target, 0, "forced"))
            elif a.status == "online" and a.load < a.capacity:
                # "assigned if that agent is online with load < capacity -- membership of
                # the group is not required"
                events.append(self._assign(now, s, target, 0, "transfer"))
            elif g.preference_ms > 0:
                events.append(
                    self._park(
                        s,
                        target,
                        "transfer",
                        va=s.arrival_ms - s.priority * g.u,
                        due=now + g.preference_ms,
                        reason="transfer",
                    )
                )
            else:
                # "else parked with it for the group's preference_ms -- routed in its group
                # at once when that is 0" (reason `transfer`)
                events.append(self._route_customer(now, s, "transfer"))
        if old_agent is not None:
            events += self._agent_takes(now, old_agent)
        return events

    # ----------------------------------------------------------------- timed steps

    def _escalate(self, now: int, c: EscalateOverflow) -> list[Event]:
        due = sorted(
            (s.due_overflow, s.session)
            for s in self.sessions.values()
            if s.state == "queued"
            and s.where == "queue"
            and s.due_overflow is not None
            and s.due_overflow <= now
        )[: int(c.limit)]
        events: list[Event] = []
        for _due, sid in due:
            s = self.sessions[sid]
            old = s.open_tier
            # The step is due, so tier old + 1 is earned; "and any later tier also due".
            # (configure_group reschedules the step whenever the tiers change, so the
            # schedule always matches the current thresholds.)
            new = max(old, self.open_tier_at(s, now))
            assert new > old, f"{sid}: overflow step due but no tier earned"
            for n in range(old + 1, new + 1):
                events.append(TierOpened(session=sid, group=s.group, tier=n))
            s.open_tier = new
            pick = self._pick_agent_for(s)
            if pick is not None:
                agent, tier = pick
                events.append(
                    self._assign(now, s, agent, tier, "group" if tier == 0 else "overflow")
                )
                continue
            s.due_overflow = self._next_overflow_due(s)
        return events

    def _expire(self, now: int, c: ExpirePreferences) -> list[Event]:
        due = sorted(
            (s.due_preference, s.session)
            for s in self.sessions.values()
            if s.state == "queued"
            and s.where == "parked"
            and s.due_preference is not None
            and s.due_preference <= now
        )[: int(c.limit)]
        events: list[Event] = []
        for _due, sid in due:
            s = self.sessions[sid]
            agent = s.parked_with
            assert agent is not None
            self._detach_queued(s)
            events.append(PreferenceExpired(session=sid, agent=agent))
            # "falls back to normal routing in its group (customer side, above) with its
            # original arrival and priority" -- va recomputed (see _set_agent_status).
            events.append(self._route_customer(now, s, "fallback"))
        return events

    # ============================================================ model self-checks

    def check_invariants(self) -> None:
        """Internal consistency of the model's own state (raises AssertionError)."""
        owner: dict[str, str] = {}
        for name, a in self.agents.items():
            assert a.load == len(a.sessions), name
            assert a.preclosed == len(a.preclosed_sessions), name
            assert a.load >= 0 and a.preclosed >= 0, name
            for sid in a.sessions + a.preclosed_sessions:
                assert sid not in owner, f"{sid} held by {owner.get(sid)} and {name}"
                owner[sid] = name
            if a.status == "offline":
                assert not self.parked(name), f"customers parked with offline {name}"
        for sid, s in self.sessions.items():
            if s.state in ("assigned", "preclosed"):
                assert owner.get(sid) == s.agent, sid
                a = self.agents[s.agent]  # type: ignore[index]
                assert sid in (a.sessions if s.state == "assigned" else a.preclosed_sessions)
            else:
                assert sid not in owner, sid
            if s.state == "queued":
                assert s.where in ("queue", "parked"), sid
                assert s.va is not None, sid
                if s.where == "parked":
                    assert s.parked_with is not None and s.parked_with not in s.blocked
                    assert s.due_preference is not None
                else:
                    assert s.due_preference is None and s.parked_with is None
            else:
                assert s.where is None and s.va is None, sid
        # "the invariant holds after every operation: no queued customer in a group queue
        # has a candidate agent in its pool (work conservation)"
        for g in self.groups:
            for s in self.queue(g):
                pick = self._pick_agent_for(s)
                assert pick is None, f"work conservation: queued {s.session} has {pick}"


_VALIDATORS: dict[type, Any] = {
    ConfigureGroup: Model._v_configure_group,
    ConfigureAgent: Model._v_configure_agent,
    SetAgentStatus: Model._v_set_agent_status,
    Arrive: Model._v_arrive,
    AgentReady: Model._v_agent_ready,
    ReleaseSession: Model._v_release,
    PrecloseSession: Model._v_preclose,
    ReactivateSession: Model._v_reactivate,
    TransferSession: Model._v_transfer,
    AbandonCustomer: Model._v_abandon,
    EscalateOverflow: Model._v_limit,
    ExpirePreferences: Model._v_limit,
}

_HANDLERS: dict[type, Any] = {
    ConfigureGroup: Model._configure_group,
    ConfigureAgent: Model._configure_agent,
    SetAgentStatus: Model._set_agent_status,
    Arrive: Model._arrive,
    AgentReady: Model._agent_ready,
    ReleaseSession: Model._release,
    PrecloseSession: Model._preclose,
    ReactivateSession: Model._reactivate,
    TransferSession: Model._transfer,
    AbandonCustomer: Model._abandon,
    EscalateOverflow: Model._escalate,
    ExpirePreferences: Model._expire,
}
