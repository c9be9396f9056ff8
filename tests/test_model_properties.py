"""The routing scripts and the pure-Python reference model agree, step by step.

A hypothesis :class:`RoutingMachine` drives the real Lua scripts (through
:class:`dispatchd.engine.Engine` on a real Valkey) and :class:`reference_model.Model` side
by side with the same commands at the same ``now``. After every step it compares the
events (exact equality, or the same error code), and then the engine's stored views
(sessions, agents, queues, parked lists, rankings) with the model's.

At the bottom, plain unit tests check the model itself against examples from
docs/routing.md and SPEC §2, independently of Redis.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from dispatchd import keys
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
)
from dispatchd.messages import (
    AbandonCustomer,
    Abandoned,
    AgentConfigured,
    AgentReady,
    AgentStatusChanged,
    Arrive,
    Assigned,
    CommandFailed,
    ConfigureAgent,
    ConfigureGroup,
    EscalateOverflow,
    ExpirePreferences,
    GroupConfigured,
    Outcome,
    Preclosed,
    PrecloseSession,
    PreferenceExpired,
    Queued,
    Reactivated,
    ReactivateSession,
    Released,
    ReleaseSession,
    SetAgentStatus,
    Tier,
    TierOpened,
    Transferred,
    TransferSession,
)
from tests.machines import EngineMachine

try:  # tests/ may or may not be a package
    from tests.reference_model import Model
except ImportError:  # pragma: no cover
    from reference_model import Model  # type: ignore[no-redef]

T0 = 1_700_000_000_000  # the machine's clock starts here (ms)
GROUPS = ["g0", "g1", "g2", "g3"]
AGENTS = ["a0", "a1", "a2", "a3", "a4", "a5"]
CUSTOMERS = ["c0", "c1", "c2", "c3"]
UNKNOWN_GROUP = "g9"
UNKNOWN_AGENT = "a9"
UNKNOWN_SESSION = "s-none"
BAD_IDS = ["", "has space", "x" * 65, "é", "a/b", "{t}"]

SEEN: collections.Counter[str] = collections.Counter()  # event classes seen (coverage)


class NoSuchOp(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="no_such_op"):
    """A command the engine does not know (only sent inside a batch)."""

    agent: str = "a0"


# ------------------------------------------------------------------------ strategies


def _fault(data: st.DataObject, percent: int = 12) -> bool:
    """True for roughly ``percent`` % of draws; shrinks towards False."""
    return data.draw(st.integers(0, 99), label="fault roll") >= 100 - percent


def _k() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([60.0, 0.0, 1.0, 10.0, 250.0, 0.5, 1e9]),
        st.floats(0, 500, allow_nan=False, allow_infinity=False),
    )


def _m() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([0.5, 0.0, 1.0, 2.0, 1e6]),
        st.floats(0, 3, allow_nan=False, allow_infinity=False),
    )


def _ms(choices: list[int], hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(choices), st.integers(0, hi))


def _ability() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from([1, 2, 3, 1.5, 0.5, 1e6]),
        st.floats(0.01, 10, allow_nan=False, allow_infinity=False),
    )


class RoutingMachine(EngineMachine):
    """Engine (Lua on Valkey) and Model side by side. ``redis_url`` is bound by a subclass."""

    def __init__(self) -> None:
        super().__init__("pm")
        self.model = Model()
        self.now = T0
        self.next_session = itertools.count(1)
        # agents allowed over capacity: reactivated over it, forced, or capacity lowered
        self.over_ok: set[str] = set()
        self.closed_checked: set[str] = set()
        self.recording: dict[str, bool] = {}  # group -> record_decisions

    # ================================================================= comparison core

    def execute(self, cmd: Any) -> None:
        """Apply ``cmd`` to the engine and the model and compare the results."""
        note(f"t={self.now - T0} {cmd!r}")
        expected_errors = self.model.validate(self.now, cmd)
        try:
            outcome = self.run(self.engine.apply(self.tenant, self.now, cmd))
        except CommandRejected as exc:
            self._compare(cmd, expected_errors, exc.code, None)
        else:
            self._compare(cmd, expected_errors, None, outcome.events)

    def _compare(
        self,
        cmd: Any,
        expected_errors: list[CommandRejected],
        got_code: str | None,
        got_events: list[Any] | None,
    ) -> None:
        if expected_errors:
            codes = sorted({e.code for e in expected_errors})
            event(f"refused {type(cmd).__name__}: {got_code}")
            SEEN[f"refused {type(cmd).__name__}: {got_code}"] += 1
            assert got_code in codes, (
                f"{cmd!r}\n  model refuses it with {codes} ({expected_errors!r})\n"
                f"  engine: {got_code or got_events!r}"
            )
            return
        assert got_code is None, f"{cmd!r}\n  model accepts it, engine refused: {got_code}"
        assert got_events is not None
        expected = self.model.apply(self.now, cmd)
        for ev in got_events:
            if isinstance(ev, Assigned) and ev.session in self.model.sessions:
                assert ev.agent not in self.model.sessions[ev.session].blocked, (
                    f"{cmd!r}: engine assigned {ev.session} to blocked agent {ev.agent}"
                )
        assert got_events == expected, (
            f"t={self.now - T0} {cmd!r}\n  expected {_fmt(expected)}\n  engine   {_fmt(got_events)}"
        )
        for ev in expected:
            event(_label(ev))
            SEEN[f"{type(cmd).__name__}: {_label(ev)}"] += 1
            if isinstance(ev, Reactivated) and ev.over_capacity:
                self.over_ok.add(ev.agent)
            if isinstance(ev, Assigned) and ev.via == "forced":
                self.over_ok.add(ev.agent)
        if isinstance(cmd, ConfigureAgent):
            a = self.model.agents[cmd.agent]
            if a.load > a.capacity:
                self.over_ok.add(cmd.agent)
        if isinstance(cmd, ConfigureGroup):
            self.recording[cmd.group] = cmd.record_decisions
        self._check_decisions(got_events)

    def _check_decisions(self, events: list[Any]) -> None:
        """Each assignment of a recording group has a decision (docs/routing.md "Why this
        agent?") that names the assigned agent, and on the customer side lists the
        candidates in rank order with the winner first among those not blocked."""
        for ev in events:
            if not isinstance(ev, Assigned):
                continue
            rows = self.run(self.engine.session_history(self.tenant, ev.session))
            entry = next(e for e in reversed([msgspec.json.decode(r) for r in rows])
                         if e["type"] == "assigned" and e["ts"] == self.now)
            if not self.recording.get(ev.group):
                assert "decision" not in entry
                continue
            d = entry["decision"]
            event(f"decision {d['side']}")
            SEEN[f"decision {d['side']} {d['via']}"] += 1
            assert (d["agent"], d["via"], d["tier"], d["group"]) == (
                ev.agent, ev.via, ev.tier, ev.group), d
            cands = d["candidates"]
            if d["side"] == "customer":
                ranks = [c["rank"] for c in cands if c["agent"] != ev.agent or c["blocked"]]
                assert ranks == sorted(ranks), d
                assert next(c for c in cands if not c["blocked"])["agent"] == ev.agent, d
            else:
                assert [c["agent"] for c in cands] == [ev.agent], d
            if d["side"] == "agent":
                assert ev.session in [c["session"] for c in d["customers"]], d

    # ======================================================================= setup

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        """Four groups (then overflow tiers between them), six agents, some online."""
        for g in GROUPS:
            self.execute(self.gen_configure_group(data, group=g, tiers=False, faults=False))
        for g in GROUPS:
            if data.draw(st.booleans(), label=f"tiers for {g}"):
                self.execute(self.gen_configure_group(data, group=g, tiers=True, faults=False))
        for a in AGENTS:
            self.execute(self.gen_configure_agent(data, agent=a, faults=False))
        for a in AGENTS:
            status = data.draw(st.sampled_from(["online", "online", "away", "offline"]))
            self.execute(SetAgentStatus(agent=a, status=status))

    # ================================================================== generators

    def _existing_groups(self) -> list[str]:
        return list(self.model.groups) or [UNKNOWN_GROUP]

    def _existing_agents(self) -> list[str]:
        return list(self.model.agents) or [UNKNOWN_AGENT]

    def _session_in(self, data: st.DataObject, states: tuple[str, ...]) -> str:
        """A session in one of ``states`` (sometimes any session or an unknown one)."""
        fits = [sid for sid, s in self.model.sessions.items() if s.state in states]
        if fits and not _fault(data, 10):
            return data.draw(st.sampled_from(fits), label="session")
        if self.model.sessions and not _fault(data, 25):
            return data.draw(st.sampled_from(list(self.model.sessions)), label="any session")
        return data.draw(st.sampled_from([UNKNOWN_SESSION, *BAD_IDS[:2]]), label="no session")

    def _tiers(self, data: st.DataObject, group: str) -> list[Tier]:
        others = [g for g in self.model.groups if g != group]
        if not others:
            return []
        order = data.draw(st.permutations(others), label="tier groups")
        n_tiers = data.draw(st.integers(0, min(3, len(order))), label="tiers")
        if n_tiers == 0:
            return []
        # n_tiers - 1 distinct cut points split a prefix of `order` into n_tiers tiers
        cuts: list[int] = []
        if n_tiers > 1:
            cuts = sorted(
                data.draw(
                    st.lists(
                        st.integers(1, len(order) - 1),
                        min_size=n_tiers - 1,
                        max_size=n_tiers - 1,
                        unique=True,
                    ),
                    label="cuts",
                )
            )
        used = data.draw(st.integers(cuts[-1] + 1 if cuts else 1, len(order)), label="used")
        bounds = [0, *cuts, used]
        after = data.draw(_ms([0, 1000, 10_000, 30_000], 120_000), label="first after_ms")
        tiers = []
        for i in range(n_tiers):
            tiers.append(Tier(after_ms=after, groups=list(order[bounds[i] : bounds[i + 1]])))
            after += data.draw(_ms([1, 5000, 30_000, 60_000], 200_000).map(lambda x: x or 1))
        return tiers

    def gen_configure_group(
        self,
        data: st.DataObject,
        *,
        group: str | None = None,
        tiers: bool = True,
        faults: bool = True,
    ) -> ConfigureGroup:
        g = group or data.draw(st.sampled_from(GROUPS), label="group")
        fields: dict[str, Any] = {
            "group": g,
            "k": data.draw(_k(), label="k"),
            "m": data.draw(_m(), label="m"),
            "priority_unit_ms": data.draw(_ms([60_000, 0, 1000, 30_000, 600_000, 10**9], 10**6)),
            "tiers": self._tiers(data, g) if tiers else [],
            "sticky_ms": data.draw(_ms([0, 0, 60_000, 300_000, 10**11], 10**6), label="sticky"),
            "preference_ms": data.draw(_ms([60_000, 0, 10_000, 120_000], 300_000), label="pref"),
            # decision records must never change a routing outcome (checked in _compare)
            "record_decisions": data.draw(st.booleans(), label="record"),
        }
        if faults and _fault(data):
            kind = data.draw(
                st.sampled_from(
                    [
                        "bad_id",
                        "k",
                        "m",
                        "u",
                        "u_float",
                        "sticky",
                        "pref",
                        "self",
                        "repeat",
                        "unknown",
                        "not_increasing",
                        "negative_after",
                        "empty",
                        "too_many",
                        "bad_tier_id",
                        "k_big",
                        "m_big",
                        "u_big",
                        "sticky_big",
                        "pref_big",
                        "after_big",
                    ]
                ),
                label="fault",
            )
            t: list[Tier] = list(fields["tiers"])
            other = next((x for x in self.model.groups if x != g), UNKNOWN_GROUP)
            if kind == "bad_id":
                fields["group"] = data.draw(st.sampled_from(BAD_IDS))
                fields["tiers"] = []
            elif kind == "k":
                fields["k"] = -0.5
            elif kind == "m":
                fields["m"] = -1.0
            elif kind == "u":
                fields["priority_unit_ms"] = -1
            elif kind == "u_float":
                fields["priority_unit_ms"] = 1.5
            elif kind == "sticky":
                fields["sticky_ms"] = -1
            elif kind == "pref":
                fields["preference_ms"] = -60_000
            elif kind == "self":
                t = [*t, Tier(after_ms=10**7, groups=[g])]
            elif kind == "repeat":
                t = [Tier(after_ms=0, groups=[other]), Tier(after_ms=5, groups=[other])]
            elif kind == "unknown":
                t = [*t, Tier(after_ms=10**7, groups=[UNKNOWN_GROUP])]
            elif kind == "not_increasing":
                third = next((x for x in self.model.groups if x not in (g, other)), UNKNOWN_GROUP)
                t = [Tier(after_ms=1000, groups=[other]), Tier(after_ms=1000, groups=[third])]
            elif kind == "negative_after":
                t = [Tier(after_ms=-1, groups=[other])]
            elif kind == "empty":
                t = [*t, Tier(after_ms=10**7, groups=[])]
            elif kind == "too_many":
                t = [Tier(after_ms=i, groups=[other]) for i in range(17)]
            elif kind == "k_big":
                fields["k"] = 2e9
            elif kind == "m_big":
                fields["m"] = 1e6 + 1
            elif kind == "u_big":
                fields["priority_unit_ms"] = 10**9 + 1
            elif kind == "sticky_big":
                fields["sticky_ms"] = 10**11 + 1
            elif kind == "pref_big":
                fields["preference_ms"] = 2 * 10**11
            elif kind == "after_big":
                t = [*t, Tier(after_ms=10**11 + 1, groups=[other])]
            elif kind == "bad_tier_id":
                t = [*t, Tier(after_ms=10**7, groups=[data.draw(st.sampled_from(BAD_IDS))])]
            if kind not in ("bad_id",):
                fields["tiers"] = t
        return ConfigureGroup(**fields)

    def gen_configure_agent(
        self, data: st.DataObject, *, agent: str | None = None, faults: bool = True
    ) -> ConfigureAgent:
        a = agent or data.draw(st.sampled_from(AGENTS), label="agent")
        groups = list(self.model.groups)
        # thin memberships (0-2 groups each) so queues build up and overflow matters
        chosen = data.draw(
            st.lists(st.sampled_from(groups), unique=True, max_size=2) if groups else st.just([]),
            label="member of",
        )
        abilities: dict[str, Any] = {g: data.draw(_ability(), label=f"ability {g}") for g in chosen}
        capacity: Any = data.draw(st.integers(0, 3), label="capacity")
        team = data.draw(st.sampled_from(["", "red", "blue", "t" * 256]), label="team")
        if faults and _fault(data):
            kind = data.draw(
                st.sampled_from(
                    [
                        "bad_id",
                        "cap_neg",
                        "cap_big",
                        "cap_float",
                        "ability_zero",
                        "ability_neg",
                        "unknown_group",
                        "bad_group_id",
                        "ability_big",
                        "team_long",
                    ]
                ),
                label="fault",
            )
            if kind == "bad_id":
                a = data.draw(st.sampled_from(BAD_IDS))
            elif kind == "cap_neg":
                capacity = -1
            elif kind == "cap_big":
                capacity = 1001
            elif kind == "cap_float":
                capacity = 1.5
            elif kind == "ability_zero":
                abilities[groups[0] if groups else UNKNOWN_GROUP] = 0
            elif kind == "ability_neg":
                abilities[groups[0] if groups else UNKNOWN_GROUP] = -1.0
            elif kind == "unknown_group":
                abilities[UNKNOWN_GROUP] = 1
            elif kind == "ability_big":
                abilities[groups[0] if groups else UNKNOWN_GROUP] = 1e6 * 1.5
            elif kind == "team_long":
                team = "t" * 257
            elif kind == "bad_group_id":
                abilities[data.draw(st.sampled_from(BAD_IDS[1:]))] = 1
        return ConfigureAgent(agent=a, capacity=capacity, abilities=abilities, team=team)

    def gen_set_agent_status(self, data: st.DataObject) -> SetAgentStatus:
        a = data.draw(st.sampled_from(self._existing_agents()), label="agent")
        status: Any = data.draw(st.sampled_from(["online", "online", "away", "offline"]))
        if _fault(data, 8):
            kind = data.draw(st.sampled_from(["unknown", "bad_id", "bad_status"]))
            if kind == "unknown":
                a = UNKNOWN_AGENT
            elif kind == "bad_id":
                a = data.draw(st.sampled_from(BAD_IDS))
            else:
                status = "busy"
        return SetAgentStatus(agent=a, status=status)

    def gen_arrive(self, data: st.DataObject) -> Arrive:
        sid = f"s{next(self.next_session)}"
        agents = self._existing_agents()
        fields: dict[str, Any] = {
            "session": sid,
            "group": data.draw(st.sampled_from(self._existing_groups()), label="group"),
            "customer": data.draw(st.sampled_from([None, *CUSTOMERS]), label="customer"),
            "priority": data.draw(
                st.one_of(
                    st.sampled_from([0, 0, 0, 10, -5, 1, 1000, -1000]), st.integers(-1000, 1000)
                ),
                label="priority",
            ),
        }
        pref = data.draw(st.sampled_from(["none", "none", "none", "directed", "last"]))
        if pref == "directed":
            fields["directed_agent"] = data.draw(st.sampled_from(agents), label="directed")
        elif pref == "last":
            fields["last_agent"] = data.draw(st.sampled_from([*agents, UNKNOWN_AGENT]))
        if data.draw(st.integers(0, 3), label="blocks?") == 0:
            fields["blocked_agents"] = data.draw(
                st.lists(st.sampled_from([*agents, UNKNOWN_AGENT]), unique=True, max_size=3),
                label="blocked",
            )
        if _fault(data, 10):
            kind = data.draw(
                st.sampled_from(
                    [
                        "exists",
                        "unknown_group",
                        "bad_session",
                        "bad_group",
                        "bad_customer",
                        "prio_big",
                        "prio_small",
                        "prio_float",
                        "directed_unknown",
                        "bad_blocked",
                        "blocked_many",
                    ]
                ),
                label="fault",
            )
            if kind == "exists":
                fields["session"] = data.draw(st.sampled_from(list(self.model.sessions) or [sid]))
            elif kind == "unknown_group":
                fields["group"] = UNKNOWN_GROUP
            elif kind == "bad_session":
                fields["session"] = data.draw(st.sampled_from(BAD_IDS))
            elif kind == "bad_group":
                fields["group"] = data.draw(st.sampled_from(BAD_IDS))
            elif kind == "bad_customer":
                fields["customer"] = data.draw(st.sampled_from(BAD_IDS))
            elif kind == "prio_big":
                fields["priority"] = 1001
            elif kind == "prio_small":
                fields["priority"] = -1001
            elif kind == "prio_float":
                fields["priority"] = 2.5
            elif kind == "directed_unknown":
                fields["directed_agent"] = UNKNOWN_AGENT
            elif kind == "bad_blocked":
                fields["blocked_agents"] = [data.draw(st.sampled_from(BAD_IDS))]
            elif kind == "blocked_many":  # 101 > 100; exactly 100 is fine
                extra = data.draw(st.sampled_from([100, 101]), label="blocked count")
                fields["blocked_agents"] = [f"x{i}" for i in range(extra)]
        return Arrive(**fields)

    def gen_agent_ready(self, data: st.DataObject) -> AgentReady:
        a = data.draw(st.sampled_from(self._existing_agents()), label="agent")
        if _fault(data, 8):
            a = data.draw(st.sampled_from([UNKNOWN_AGENT, *BAD_IDS]))
        return AgentReady(agent=a)

    def gen_release(self, data: st.DataObject) -> ReleaseSession:
        sid = self._session_in(data, ("assigned", "preclosed"))
        reason = data.draw(
            st.sampled_from(["closed", "resolved", "timeout", "", "r" * 64, "r" * 65]),
            label="reason",
        )
        return ReleaseSession(session=sid, reason=reason)

    def gen_preclose(self, data: st.DataObject) -> PrecloseSession:
        return PrecloseSession(session=self._session_in(data, ("assigned",)))

    def gen_reactivate(self, data: st.DataObject) -> ReactivateSession:
        return ReactivateSession(session=self._session_in(data, ("preclosed",)))

    def gen_abandon(self, data: st.DataObject) -> AbandonCustomer:
        return AbandonCustomer(session=self._session_in(data, ("queued",)))

    def gen_transfer(self, data: st.DataObject) -> TransferSession:
        sid = self._session_in(data, ("queued", "assigned"))
        kind = data.draw(st.sampled_from(["group", "agent", "agent", "force"]), label="to")
        if kind == "group":
            cmd = TransferSession(
                session=sid, to_group=data.draw(st.sampled_from(self._existing_groups()))
            )
        else:
            cmd = TransferSession(
                session=sid,
                to_agent=data.draw(st.sampled_from(self._existing_agents()), label="to_agent"),
                force=kind == "force",
            )
        if _fault(data, 8):
            fault = data.draw(
                st.sampled_from(["neither", "unknown_group", "unknown_agent", "bad_group"]),
                label="fault",
            )
            if fault == "neither":
                cmd = TransferSession(session=sid)
            elif fault == "unknown_group":
                cmd = TransferSession(session=sid, to_group=UNKNOWN_GROUP)
            elif fault == "unknown_agent":
                cmd = TransferSession(session=sid, to_agent=UNKNOWN_AGENT)
            else:
                cmd = TransferSession(session=sid, to_group=data.draw(st.sampled_from(BAD_IDS)))
        return cmd

    def _limit(self, data: st.DataObject) -> Any:
        if _fault(data, 8):
            return data.draw(st.sampled_from([0, -1, 1.5, 10_001]), label="bad limit")
        return data.draw(st.sampled_from([100, 1, 2, 3, 10_000]), label="limit")

    def gen_escalate(self, data: st.DataObject) -> EscalateOverflow:
        return EscalateOverflow(limit=self._limit(data))

    def gen_expire(self, data: st.DataObject) -> ExpirePreferences:
        return ExpirePreferences(limit=self._limit(data))

    GENERATORS = (
        "gen_configure_group",
        "gen_configure_agent",
        "gen_set_agent_status",
        "gen_arrive",
        "gen_arrive",
        "gen_agent_ready",
        "gen_release",
        "gen_preclose",
        "gen_reactivate",
        "gen_transfer",
        "gen_abandon",
        "gen_escalate",
        "gen_expire",
    )

    # ======================================================================= rules

    @rule(
        dt=st.one_of(
            st.sampled_from([0, 1, 999, 1000, 5000, 30_000, 60_000, 120_000]),
            st.integers(0, 200_000),
        )
    )
    def advance_time(self, dt: int) -> None:
        self.now += dt

    @rule(dt=st.one_of(st.sampled_from([1000, 10_000, 30_000, 60_000]), st.integers(0, 90_000)))
    def tick(self, dt: int) -> None:
        """Time passes and the timed steps run, as the daemon's timer loop does."""
        self.now += dt
        self.execute(EscalateOverflow())
        self.execute(ExpirePreferences())

    @rule(data=st.data())
    def arrival_burst(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 3), label="arrivals")):
            self.execute(self.gen_arrive(data))

    @rule(data=st.data())
    def configure_group(self, data: st.DataObject) -> None:
        self.execute(self.gen_configure_group(data))

    @rule(data=st.data())
    def configure_agent(self, data: st.DataObject) -> None:
        self.execute(self.gen_configure_agent(data))

    @rule(data=st.data())
    def set_agent_status(self, data: st.DataObject) -> None:
        self.execute(self.gen_set_agent_status(data))

    @rule(data=st.data())
    def arrive(self, data: st.DataObject) -> None:
        self.execute(self.gen_arrive(data))

    @rule(data=st.data())
    def arrive_again(self, data: st.DataObject) -> None:  # arrivals are the main traffic
        self.execute(self.gen_arrive(data))

    @rule(data=st.data())
    def agent_ready(self, data: st.DataObject) -> None:
        self.execute(self.gen_agent_ready(data))

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self.execute(self.gen_release(data))

    @rule(data=st.data())
    def preclose(self, data: st.DataObject) -> None:
        self.execute(self.gen_preclose(data))

    @rule(data=st.data())
    def reactivate(self, data: st.DataObject) -> None:
        self.execute(self.gen_reactivate(data))

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        self.execute(self.gen_transfer(data))

    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        self.execute(self.gen_abandon(data))

    @rule(data=st.data())
    def escalate_overflow(self, data: st.DataObject) -> None:
        self.execute(self.gen_escalate(data))

    @rule(data=st.data())
    def expire_preferences(self, data: st.DataObject) -> None:
        self.execute(self.gen_expire(data))

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """1-8 random commands in one apply_batch call, compared item by item."""
        n = data.draw(st.integers(1, 8), label="batch size")
        cmds: list[Any] = []
        for _ in range(n):
            if _fault(data, 4):
                cmds.append(NoSuchOp())
            else:
                gen = data.draw(st.sampled_from(self.GENERATORS), label="command")
                cmds.append(getattr(self, gen)(data))
        note(f"t={self.now - T0} batch of {len(cmds)}")
        items = self.run(self.engine.apply_batch(self.tenant, self.now, cmds))
        assert len(items) == len(cmds), f"{len(items)} batch items for {len(cmds)} commands"
        for i, (cmd, item) in enumerate(zip(cmds, items, strict=True)):
            note(f"  [{i}] {cmd!r}")
            expected_errors = self.model.validate(self.now, cmd)
            if isinstance(item, CommandFailed):
                self._compare(cmd, expected_errors, item.error.split(" ", 1)[0], None)
            else:
                assert isinstance(item, Outcome)
                self._compare(cmd, expected_errors, None, item.events)

    # ================================================================== invariants

    @invariant()
    def model_is_consistent(self) -> None:
        self.model.check_invariants()
        for name, a in self.model.agents.items():
            if a.load <= a.capacity:
                self.over_ok.discard(name)
            else:
                assert name in self.over_ok, (
                    f"{name} load {a.load} > capacity {a.capacity} without reactivation, "
                    "forced transfer or a capacity cut"
                )

    @invariant()
    def engine_views_match_model(self) -> None:
        self.run(self._check_views())

    async def _check_counters(self) -> None:
        """The agent counters the metrics sampler reads ({t}:ast, {t}:g:<g>:ast) equal
        what the model's agents add up to."""
        short = {"online": "on", "away": "aw", "offline": "off"}

        def expect(agents: list[Any], pre: bool) -> dict[str, int]:
            c: dict[str, int] = {}
            for a in agents:
                c[short[a.status]] = c.get(short[a.status], 0) + 1
                if a.status == "online":
                    c["ld"] = c.get("ld", 0) + a.load
                    c["cp"] = c.get("cp", 0) + a.capacity
                if pre:
                    c["pc"] = c.get("pc", 0) + a.preclosed
            return {k: v for k, v in c.items() if v}

        async def got(key: str) -> dict[str, int]:
            raw = await self.client.hgetall(key)
            return {k.decode(): int(v) for k, v in raw.items() if k != b"v" and int(v)}

        t, m = self.tenant, self.model
        total = await got(keys.key("agent_totals", t))
        assert total == expect(list(m.agents.values()), True), (
            f"tenant counters {total} vs model {expect(list(m.agents.values()), True)}")
        for g in m.groups:
            members = [a for a in m.agents.values() if g in a.abilities]
            counted = await got(keys.key("group_agents", t, g))
            assert counted == expect(members, False), (
                f"group {g} counters {counted} vs model {expect(members, False)}")

    async def _check_views(self) -> None:
        e, t, m = self.engine, self.tenant, self.model
        # agents
        held: dict[str, str] = {}
        for name, a in m.agents.items():
            view = await e.agent(t, name)
            assert view is not None, f"engine lost agent {name}"
            got = (
                view.status,
                view.capacity,
                view.load,
                view.preclosed,
                view.last_assigned_ms,
                view.team,
                view.abilities,
            )
            want = (
                a.status,
                a.capacity,
                a.load,
                a.preclosed,
                a.last_assigned_ms,
                a.team,
                a.abilities,
            )
            assert got == want, (
                f"agent {name} (status, cap, load, pre, last, team, abilities)\n"
                f"  model  {want}\n  engine {got}"
            )
            # a session is held by at most one agent; load = number of assigned sessions
            open_ = sorted(
                x.decode() for x in await self.client.smembers(keys.key("agent_sessions", t, name))
            )
            pre = sorted(
                x.decode() for x in await self.client.smembers(keys.key("agent_preclosed", t, name))
            )
            assert len(open_) == view.load, f"engine {name}: load {view.load}, sessions {open_}"
            assert open_ == sorted(a.sessions), f"{name} sessions {open_} vs {a.sessions}"
            assert pre == sorted(a.preclosed_sessions), f"{name} preclosed {pre}"
            for sid in open_ + pre:
                assert sid not in held, f"engine: {sid} held by {held.get(sid)} and {name}"
                held[sid] = name
            parked = [(q.session, q.virtual_arrival_ms) for q in await e.parked(t, name)]
            assert parked == m.parked_view(name), (
                f"parked with {name}\n  model  {m.parked_view(name)}\n  engine {parked}"
            )
        await self._check_counters()
        # groups: queue order and candidate ranking
        for g in m.groups:
            queue = [(q.session, q.virtual_arrival_ms) for q in await e.queue(t, g)]
            assert queue == m.queue_view(g), (
                f"queue of {g}\n  model  {m.queue_view(g)}\n  engine {queue}"
            )
            ranking = await e.ranking(t, g)
            assert ranking == m.ranking(g), (
                f"ranking of {g}\n  model  {m.ranking(g)}\n  engine {ranking}"
            )
        # sessions (closed ones are checked once)
        for sid, s in m.sessions.items():
            if s.state == "closed" and sid in self.closed_checked:
                continue
            view = await e.session(t, sid)
            if s.state == "closed":
                self.closed_checked.add(sid)
                assert view is None or view.state == "closed", f"{sid}: engine {view!r}"
                continue
            assert view is not None, f"engine lost session {sid} ({s.state})"
            got = (
                view.state,
                view.group,
                view.priority,
                view.arrival_ms,
                view.customer,
                view.blocked_agents,
            )
            want = (s.state, s.group, s.priority, s.arrival_ms, s.customer, s.blocked)
            assert got == want, f"session {sid}\n  model  {want}\n  engine {got}"
            if s.state in ("assigned", "preclosed"):
                assert view.agent == s.agent, f"{sid} agent {view.agent} vs model {s.agent}"
                assert held.get(sid) == s.agent
            if s.state == "queued":
                assert (view.parked_with, view.virtual_arrival_ms) == (s.parked_with, s.va), (
                    f"{sid} (parked_with, va): engine {(view.parked_with, view.virtual_arrival_ms)}"
                    f" model {(s.parked_with, s.va)}"
                )
                if s.where == "queue":
                    assert view.open_tier == s.open_tier, (
                        f"{sid} open tier: engine {view.open_tier} model {s.open_tier}"
                    )


def _label(ev: Any) -> str:
    """A coarse class of an event, for hypothesis' statistics (coverage of paths)."""
    name = type(ev).__name__
    if isinstance(ev, Assigned):
        return f"{name} via={ev.via} tier={min(ev.tier, 2)}"
    if isinstance(ev, Queued):
        return f"{name} reason={ev.reason} parked={ev.parked_with is not None}"
    if isinstance(ev, Reactivated):
        return f"{name} over={ev.over_capacity}"
    if isinstance(ev, TierOpened):
        return f"{name} tier={min(ev.tier, 3)}"
    return name


def _fmt(events: list[Any]) -> str:
    return "[\n    " + ",\n    ".join(repr(e) for e in events) + "]"


def test_routing_matches_model(redis_url: str) -> None:
    machine = type("BoundRoutingMachine", (RoutingMachine,), {"redis_url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            settings.default,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# ============================================================ unit tests of the model


def _model(*, groups: dict[str, dict[str, Any]] | None = None) -> Model:
    m = Model()
    for g, cfg in (groups or {"g": {}}).items():
        m.apply(T0, ConfigureGroup(group=g, **cfg))
    return m


def _agent(
    m: Model, now: int, agent: str, cap: int, abilities: dict[str, float], status: str = "online"
) -> list[Any]:
    m.apply(now, ConfigureAgent(agent=agent, capacity=cap, abilities=abilities))
    return m.apply(now, SetAgentStatus(agent=agent, status=status))  # type: ignore[arg-type]


def test_priority_10_is_served_as_if_600s_earlier() -> None:
    m = _model()
    assert m.apply(T0, Arrive(session="plain", group="g")) == [
        Queued(
            session="plain",
            group="g",
            virtual_arrival_ms=T0,
            priority=0,
            position=1,
            reason="arrival",
        )
    ]
    # 599 s later a priority-10 customer is ahead (va = arrival - 600 s)
    assert m.apply(T0 + 599_000, Arrive(session="vip", group="g", priority=10)) == [
        Queued(
            session="vip",
            group="g",
            virtual_arrival_ms=T0 - 1000,
            priority=10,
            position=1,
            reason="arrival",
        )
    ]
    # 601 s later it is behind
    assert m.apply(T0 + 601_000, Arrive(session="late", group="g", priority=10))[0].position == 3
    # exactly 600 s later: same va as "plain", the earlier arrival wins
    tie = m.apply(T0 + 600_000, Arrive(session="tie", group="g", priority=10))[0]
    assert (tie.virtual_arrival_ms, tie.position) == (T0, 3)
    # a negative priority waits longer but is not starved
    neg = m.apply(T0 + 1_000, Arrive(session="neg", group="g", priority=-5))[0]
    assert neg.virtual_arrival_ms == T0 + 1_000 + 300_000
    assert m.queue_view("g") == [
        ("vip", T0 - 1000),
        ("plain", T0),
        ("tie", T0),
        ("late", T0 + 1000),
        ("neg", T0 + 301_000),
    ]
    now = T0 + 700_000
    events = _agent(m, now, "x", 2, {"g": 1})
    assert events == [
        AgentStatusChanged(agent="x", status="online", previous="offline"),
        Assigned(session="vip", agent="x", group="g", tier=0, via="group", wait_ms=101_000),
        Assigned(session="plain", agent="x", group="g", tier=0, via="group", wait_ms=700_000),
    ]
    m.check_invariants()


def test_readiness_ranking_example() -> None:
    m = _model(groups={"g": {"k": 60.0, "m": 0.5}})
    # x: online at T0, capacity 2, ability 1 -> T0/1000 - 60*(2-0-0)/2*1 = T0/1000 - 60
    _agent(m, T0, "x", 2, {"g": 1})
    # y: online 30 s later, capacity 1, ability 2 -> T0/1000 + 30 - 60*1/1*2 = T0/1000 - 90
    _agent(m, T0 + 30_000, "y", 1, {"g": 2})
    # z: same as x but a larger id: ties go to the smaller id
    _agent(m, T0, "z", 2, {"g": 1})
    base = T0 / 1000
    assert m.ranking("g") == [("y", base - 90.0), ("x", base - 60.0), ("z", base - 60.0)]
    # the best-ranked agent gets the customer; y is then full and leaves the ranking
    now = T0 + 40_000
    assert m.apply(now, Arrive(session="s1", group="g")) == [
        Assigned(session="s1", agent="y", group="g", tier=0, via="group", wait_ms=0)
    ]
    assert [a for a, _ in m.ranking("g")] == ["x", "z"]
    # x takes the next one; its rank becomes now/1000 - 60*(2-1)/2 = now/1000 - 30
    m.apply(now, Arrive(session="s2", group="g"))
    assert m.sessions["s2"].agent == "x"
    assert m.ranking("g") == [("z", base - 60.0), ("x", now / 1000 - 30.0)]
    # a pre-closed session lowers the score by M per session: x with load 0, preclosed 1
    m.apply(now, PrecloseSession(session="s2"))
    assert dict(m.ranking("g"))["x"] == now / 1000 - 60.0 * (2 - 0 - 0.5 * 1) / 2 * 1.0
    # and the readiness formula of SPEC 2.3 orders agents the same way (highest first)
    later = now + 5_000
    readiness = {
        a: (later - m.agents[a].last_assigned_ms) / 1000  # type: ignore[operator]
        + 60.0
        * (m.agents[a].capacity - m.agents[a].load - 0.5 * m.agents[a].preclosed)
        / m.agents[a].capacity
        * m.agents[a].abilities["g"]
        for a, _ in m.ranking("g")
    }
    assert [a for a, _ in m.ranking("g")] == sorted(readiness, key=lambda a: -readiness[a])
    m.check_invariants()


def test_multi_skill_agent_takes_from_highest_ability_group() -> None:
    m = _model(groups={"g1": {}, "g2": {}, "g3": {}})
    # the g3 customer has waited longest, g1's the shortest
    m.apply(T0, Arrive(session="c3", group="g3"))
    m.apply(T0 + 1000, Arrive(session="c2", group="g2"))
    m.apply(T0 + 2000, Arrive(session="c1", group="g1"))
    m.apply(T0 + 3000, ConfigureAgent(agent="x", capacity=1, abilities={"g1": 3, "g2": 2, "g3": 1}))
    events = m.apply(T0 + 3000, SetAgentStatus(agent="x", status="online"))
    assert events[1:] == [
        Assigned(session="c1", agent="x", group="g1", tier=0, via="group", wait_ms=1000)
    ]
    # with more capacity it goes on by ability: g2 then g3
    events = m.apply(
        T0 + 4000, ConfigureAgent(agent="x", capacity=3, abilities={"g1": 3, "g2": 2, "g3": 1})
    )
    assert events == [
        AgentConfigured(agent="x"),
        Assigned(session="c2", agent="x", group="g2", tier=0, via="group", wait_ms=3000),
        Assigned(session="c3", agent="x", group="g3", tier=0, via="group", wait_ms=4000),
    ]
    # equal abilities: the longest virtual wait wins
    m2 = _model(groups={"g1": {}, "g2": {}})
    m2.apply(T0, Arrive(session="late", group="g1"))
    m2.apply(T0, Arrive(session="vip", group="g2", priority=1))
    _agent(m2, T0, "y", 1, {"g1": 2, "g2": 2}, status="away")
    assert m2.apply(T0, AgentReady(agent="y")) == []  # away: not a candidate
    assert m2.apply(T0, SetAgentStatus(agent="y", status="online"))[1].session == "vip"
    m.check_invariants()


def test_overflow_tiers_open_in_order() -> None:
    m = _model(groups={"own": {}, "t1": {}, "t2": {}})
    m.apply(
        T0,
        ConfigureGroup(
            group="own",
            tiers=[Tier(after_ms=30_000, groups=["t1"]), Tier(after_ms=60_000, groups=["t2"])],
        ),
    )
    _agent(m, T0, "b", 1, {"t2": 1})
    assert m.apply(T0, Arrive(session="s", group="own"))[0].reason == "arrival"
    assert m.sessions["s"].due_overflow == T0 + 30_000
    assert m.apply(T0 + 29_999, EscalateOverflow()) == []
    # tier 1 opens (nobody there), the step for tier 2 is scheduled
    assert m.apply(T0 + 30_000, EscalateOverflow()) == [
        TierOpened(session="s", group="own", tier=1)
    ]
    # the tier-2 agent can't take it yet from its side either
    assert m.apply(T0 + 45_000, AgentReady(agent="b")) == []
    assert m.apply(T0 + 70_000, EscalateOverflow()) == [
        TierOpened(session="s", group="own", tier=2),
        Assigned(session="s", agent="b", group="own", tier=2, via="overflow", wait_ms=70_000),
    ]
    # both tiers due at once, and an agent side overflow pick
    m.apply(T0 + 100_000, ReleaseSession(session="s"))
    m.apply(T0 + 100_000, SetAgentStatus(agent="b", status="away"))
    m.apply(T0 + 100_000, Arrive(session="u", group="own"))
    assert m.apply(T0 + 200_000, EscalateOverflow()) == [
        TierOpened(session="u", group="own", tier=1),
        TierOpened(session="u", group="own", tier=2),
    ]
    assert m.apply(T0 + 200_000, SetAgentStatus(agent="b", status="online"))[1] == Assigned(
        session="u", agent="b", group="own", tier=2, via="overflow", wait_ms=100_000
    )
    m.check_invariants()


def test_configure_group_reevaluates_queued_customers_when_tiers_change() -> None:
    m = _model(groups={"own": {}, "t1": {}, "t2": {}})
    _agent(m, T0, "b", 1, {"t1": 1})
    m.apply(T0, Arrive(session="s1", group="own"))
    m.apply(T0 + 10, Arrive(session="s2", group="own"))
    # same settings but k: nothing is re-evaluated
    assert m.apply(T0 + 20, ConfigureGroup(group="own", k=5.0)) == [GroupConfigured(group="own")]
    # new tiers: s1 (first in service order) is assigned through its new tier 1 at once,
    # s2 keeps waiting with tier 1 open (no tier_opened events)
    tiers = [Tier(after_ms=0, groups=["t1"]), Tier(after_ms=60_000, groups=["t2"])]
    assert m.apply(T0 + 20, ConfigureGroup(group="own", tiers=tiers)) == [
        GroupConfigured(group="own"),
        Assigned(session="s1", agent="b", group="own", tier=1, via="overflow", wait_ms=20),
    ]
    s2 = m.sessions["s2"]
    assert (s2.open_tier, s2.due_overflow) == (1, T0 + 10 + 60_000)
    # never fewer than before, capped at the new number of tiers
    m.apply(T0 + 30, ConfigureGroup(group="own", tiers=[Tier(after_ms=5000, groups=["t2"])]))
    assert (s2.open_tier, s2.due_overflow) == (1, None)
    m.apply(T0 + 40, ConfigureGroup(group="own"))
    assert (s2.open_tier, s2.due_overflow) == (0, None)
    m.check_invariants()


def test_directed_parking_fallback_and_sticky() -> None:
    m = _model(groups={"g": {"sticky_ms": 600_000, "preference_ms": 60_000}})
    _agent(m, T0, "x", 1, {"g": 1})
    _agent(m, T0, "y", 1, {"g": 1})
    assert m.apply(T0, Arrive(session="s1", group="g", customer="c", directed_agent="x")) == [
        Assigned(session="s1", agent="x", group="g", tier=0, via="directed", wait_ms=0)
    ]
    m.apply(T0 + 1000, ReleaseSession(session="s1"))
    # fill x, then the same customer comes back: parked with x (sticky)
    m.apply(T0 + 2000, Arrive(session="s2", group="g", directed_agent="x"))
    assert m.apply(T0 + 3000, Arrive(session="s3", group="g", customer="c")) == [
        Queued(
            session="s3",
            group="g",
            virtual_arrival_ms=T0 + 3000,
            priority=0,
            position=1,
            reason="arrival",
            parked_with="x",
        )
    ]
    assert m.apply(T0 + 62_999, ExpirePreferences()) == []
    assert m.apply(T0 + 63_000, ExpirePreferences()) == [
        PreferenceExpired(session="s3", agent="x"),
        Assigned(session="s3", agent="y", group="g", tier=0, via="group", wait_ms=60_000),
    ]
    # a blocked agent is never assigned, even when preferred
    out = m.apply(
        T0 + 64_000, Arrive(session="s4", group="g", directed_agent="y", blocked_agents=["y"])
    )
    assert out[0].reason == "arrival" and out[0].parked_with is None
    m.check_invariants()


def test_preclose_reactivate_and_transfer() -> None:
    m = _model(groups={"g": {}, "h": {}})
    _agent(m, T0, "x", 1, {"g": 1})
    m.apply(T0, Arrive(session="s1", group="g"))
    m.apply(T0, Arrive(session="s2", group="g"))
    assert m.apply(T0 + 10, PrecloseSession(session="s1")) == [
        Preclosed(session="s1", agent="x"),
        Assigned(session="s2", agent="x", group="g", tier=0, via="group", wait_ms=10),
    ]
    assert m.apply(T0 + 20, ReactivateSession(session="s1")) == [
        Reactivated(session="s1", agent="x", over_capacity=True)
    ]
    assert m.agents["x"].load == 2
    assert m.apply(T0 + 30, TransferSession(session="s2", to_group="h")) == [
        Transferred(session="s2", from_group="g", to_group="h", from_agent="x"),
        Queued(
            session="s2",
            group="h",
            virtual_arrival_ms=T0,
            priority=0,
            position=1,
            reason="transfer",
        ),
    ]
    assert m.apply(T0 + 40, AbandonCustomer(session="s2")) == [
        Abandoned(session="s2", group="h", wait_ms=40)
    ]
    assert m.apply(T0 + 50, ReleaseSession(session="s1", reason="resolved")) == [
        Released(session="s1", agent="x", reason="resolved")
    ]
    m.check_invariants()


def test_model_errors_change_nothing() -> None:
    m = _model(groups={"g": {}, "h": {}})
    _agent(m, T0, "x", 0, {"g": 1})  # capacity 0: s1 stays queued
    m.apply(T0, Arrive(session="s1", group="g", blocked_agents=["y"]))
    _agent(m, T0, "y", 1, {"h": 1}, status="offline")
    before = repr((m.seq, m.groups, m.agents, m.sessions, m.customers))
    cases: list[tuple[Any, type[CommandRejected]]] = [
        (ConfigureGroup(group="bad id"), BadId),
        (ConfigureGroup(group="g", k=-1.0), BadArgument),
        (ConfigureGroup(group="g", tiers=[Tier(after_ms=0, groups=["g"])]), BadTier),
        (
            ConfigureGroup(
                group="g", tiers=[Tier(after_ms=0, groups=["h"]), Tier(after_ms=0, groups=["x1"])]
            ),
            BadTier,
        ),
        (ConfigureGroup(group="g", tiers=[Tier(after_ms=0, groups=["zz"])]), GroupUnknown),
        (ConfigureAgent(agent="x", capacity=1001), BadArgument),
        (ConfigureAgent(agent="x", capacity=1, abilities={"g": 0}), BadArgument),
        (Arrive(session="s1", group="g"), SessionExists),
        (Arrive(session="s2", group="g", priority=1001), BadArgument),
        (Arrive(session="s2", group="g", directed_agent="nobody"), AgentUnknown),
        (ReleaseSession(session="s1"), SessionState),
        (PrecloseSession(session="nope"), SessionUnknown),
        (TransferSession(session="s1", to_agent="y"), AgentOffline),
        (EscalateOverflow(limit=0), BadArgument),
    ]
    for cmd, exc in cases:
        with pytest.raises(exc):
            m.apply(T0 + 5, cmd)
    m.apply(T0 + 5, SetAgentStatus(agent="y", status="away"))
    with pytest.raises(AgentBlocked):
        m.apply(T0 + 5, TransferSession(session="s1", to_agent="y", force=True))
    m.apply(T0 + 5, SetAgentStatus(agent="y", status="offline"))
    assert repr((m.seq, m.groups, m.agents, m.sessions, m.customers)) == before
    assert m.validate(T0, NoSuchOp())[0].code == "E_UNKNOWN_OP"


def test_group_configured_event() -> None:
    assert Model().apply(T0, ConfigureGroup(group="g")) == [GroupConfigured(group="g")]
