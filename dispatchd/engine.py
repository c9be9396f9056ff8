"""The typed async facade over the routing scripts.

One thin wrapper per script; nobody else builds ``KEYS``/``ARGV``. Every call takes the
tenant and the caller's clock (``now_ms``) and returns an :class:`Outcome` listing what
happened, or raises the :mod:`dispatchd.errors` exception of the script's error code.

:meth:`Engine.apply_batch` applies many commands of one tenant in one round trip, in
order; a refused command changes nothing and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from dispatchd import keys, scripts
from dispatchd.errors import from_reply
from dispatchd.messages import (
    AbandonCustomer,
    AgentMessage,
    AgentReady,
    AgentStatusName,
    Arrive,
    BatchItem,
    CloseSession,
    Command,
    CommandFailed,
    ConfigureAgent,
    ConfigureGroup,
    ConfigureRules,
    ConfirmClose,
    CustomerLeave,
    CustomerMessage,
    EscalateOverflow,
    Event,
    ExpirePreferences,
    FireTimers,
    InviteAgent,
    Outcome,
    PrecloseSession,
    QueryPosition,
    ReactivateSession,
    ReleaseSession,
    RequestClose,
    RoutingRule,
    SetAgentStatus,
    Tier,
    TransferSession,
)

_encoder = msgspec.msgpack.Encoder()
_events = msgspec.msgpack.Decoder(list[Event])


class _RawItem(msgspec.Struct):
    events: list[Event] | None = None
    error: str | None = None


_batch = msgspec.msgpack.Decoder(list[_RawItem])


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    """A session as stored (see docs/routing.md)."""

    session: str
    state: str
    group: str
    priority: int
    arrival_ms: int
    customer: str | None
    agent: str | None
    open_tier: int
    parked_with: str | None
    virtual_arrival_ms: int | None
    blocked_agents: list[str]
    phase: str | None = None


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    """An agent as stored."""

    agent: str
    status: AgentStatusName
    capacity: int
    load: int
    preclosed: int
    last_assigned_ms: int | None
    team: str
    abilities: dict[str, float]


class QueueEntry(msgspec.Struct, frozen=True):
    session: str
    virtual_arrival_ms: int


class AdminResult(msgspec.Struct, frozen=True):
    """What an admin change did: its events, the resource's new version, the audit id."""

    events: list[Event]
    version: int
    audit: str
    out: list[str] = []
    """The events as appended to the outbound stream (JSON, docs/protocol.md)."""


_admin_result = msgspec.msgpack.Decoder(AdminResult)


def _s(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


def _member_session(member: bytes) -> str:
    # queue member = 15-digit arrival, 10-digit sequence, block flag, session id
    return member[26:].decode()


class Engine:
    """Routing operations on one Redis (or Valkey) server.

    Args:
        client: a ``redis.asyncio.Redis`` created with ``decode_responses=False``.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.library = scripts.Library(client)

    async def load_scripts(self) -> dict[str, str]:
        """Load the function library now unless this build is loaded already, so a broken
        or too new library fails at start-up (:class:`dispatchd.scripts.LibraryError`).

        Returns:
            what the daemon logs: the library's name, version, build and what was done.
        """
        done = await self.library.ensure()
        return {"library": scripts.LIBRARY, "version": str(scripts.LIBRARY_VERSION),
                "build": scripts.build(), "action": done}

    async def _fcall(self, function: str, tenant: str, now_ms: int, payload: bytes) -> Any:
        try:
            return await self.library.call(function, keys.root(tenant), [now_ms, payload])
        except ResponseError as exc:
            raise from_reply(str(exc)) from None

    # ------------------------------------------------------------------ generic calls

    async def apply(self, tenant: str, now_ms: int, command: Command) -> Outcome:
        """Apply one command through its own library function."""
        op = str(type(command).__struct_config__.tag)
        raw = await self._fcall(scripts.function_name(op), tenant, now_ms,
                                _encoder.encode(command))
        return Outcome(events=_events.decode(raw))

    async def apply_batch(
        self, tenant: str, now_ms: int, commands: Sequence[Command]
    ) -> list[BatchItem]:
        """Apply ``commands`` of one tenant in order, in one atomic script call.

        Returns:
            one :class:`Outcome` or :class:`CommandFailed` per command, in order.
        """
        if not commands:
            return []
        raw = await self._fcall(scripts.BATCH, tenant, now_ms, _encoder.encode(list(commands)))
        return [
            CommandFailed(error=item.error)
            if item.error is not None
            else Outcome(events=item.events or [])
            for item in _batch.decode(raw)
        ]

    async def admin_change(self, tenant: str, now_ms: int, change: dict[str, Any]) -> AdminResult:
        """Apply one audited admin change (``lua/admin/admin.lua`` documents ``change``)."""
        raw = await self._fcall(scripts.ADMIN, tenant, now_ms, _encoder.encode(change))
        return _admin_result.decode(raw)

    # ------------------------------------------------------------ one wrapper per script

    async def configure_group(
        self,
        tenant: str,
        now_ms: int,
        group: str,
        *,
        k: float = 60.0,
        m: float = 0.5,
        priority_unit_ms: int = 60_000,
        tiers: Sequence[Tier] = (),
        sticky_ms: int = 0,
        preference_ms: int = 60_000,
        **timers: Any,
    ) -> Outcome:
        """Create or replace a skill group's settings.

        ``timers`` are the other fields of :class:`ConfigureGroup`: the lifecycle timers
        (``queue_warning_ms``, ``reply_sla_ms``, ...) and the service-level threshold and
        target.
        """
        return await self.apply(
            tenant,
            now_ms,
            ConfigureGroup(
                group=group,
                k=k,
                m=m,
                priority_unit_ms=priority_unit_ms,
                tiers=list(tiers),
                sticky_ms=sticky_ms,
                preference_ms=preference_ms,
                **timers,
            ),
        )

    async def configure_agent(
        self,
        tenant: str,
        now_ms: int,
        agent: str,
        *,
        capacity: int,
        abilities: dict[str, float],
        team: str = "",
        ticket_limit: int = 20,
    ) -> Outcome:
        """Create or replace an agent's capacity, abilities, team and ticket limit."""
        return await self.apply(
            tenant,
            now_ms,
            ConfigureAgent(agent=agent, capacity=capacity, abilities=dict(abilities), team=team,
                           ticket_limit=ticket_limit),
        )

    async def set_agent_status(
        self,
        tenant: str,
        now_ms: int,
        agent: str,
        status: AgentStatusName,
        *,
        handover: bool = False,
    ) -> Outcome:
        """Set an agent online, away or offline; ``handover`` hands its sessions over."""
        return await self.apply(
            tenant, now_ms, SetAgentStatus(agent=agent, status=status, handover=handover)
        )

    async def configure_rules(
        self, tenant: str, now_ms: int, rules: Sequence[RoutingRule]
    ) -> Outcome:
        """Replace the tenant's routing rules (SPEC 2.1; the first match decides)."""
        return await self.apply(tenant, now_ms, ConfigureRules(rules=list(rules)))

    async def arrive(
        self,
        tenant: str,
        now_ms: int,
        session: str,
        group: str | None,
        *,
        attributes: dict[str, str | int | float | bool] | None = None,
        customer: str | None = None,
        priority: int = 0,
        directed_agent: str | None = None,
        last_agent: str | None = None,
        blocked_agents: Sequence[str] = (),
    ) -> Outcome:
        """A customer arrives: assigned at once, parked with a preferred agent, or queued."""
        return await self.apply(
            tenant,
            now_ms,
            Arrive(
                session=session,
                group=group,
                attributes=attributes,
                customer=customer,
                priority=priority,
                directed_agent=directed_agent,
                last_agent=last_agent,
                blocked_agents=list(blocked_agents),
            ),
        )

    async def agent_ready(self, tenant: str, now_ms: int, agent: str) -> Outcome:
        """The agent takes waiting customers while it has free capacity."""
        return await self.apply(tenant, now_ms, AgentReady(agent=agent))

    async def release_session(
        self, tenant: str, now_ms: int, session: str, reason: str = "closed"
    ) -> Outcome:
        """An assigned or pre-closed session ends; its agent takes more work."""
        return await self.apply(tenant, now_ms, ReleaseSession(session=session, reason=reason))

    async def preclose_session(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """Pre-close an assigned session."""
        return await self.apply(tenant, now_ms, PrecloseSession(session=session))

    async def reactivate_session(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """A pre-closed session's customer is back."""
        return await self.apply(tenant, now_ms, ReactivateSession(session=session))

    async def transfer_session(
        self,
        tenant: str,
        now_ms: int,
        session: str,
        *,
        to_group: str | None = None,
        to_agent: str | None = None,
        force: bool = False,
    ) -> Outcome:
        """Move a session to another group (keeps its wait) or to a named agent."""
        return await self.apply(
            tenant,
            now_ms,
            TransferSession(session=session, to_group=to_group, to_agent=to_agent, force=force),
        )

    async def abandon_customer(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """A queued customer leaves."""
        return await self.apply(tenant, now_ms, AbandonCustomer(session=session))

    async def escalate_overflow(self, tenant: str, now_ms: int, limit: int = 100) -> Outcome:
        """Open due overflow tiers for up to ``limit`` customers."""
        return await self.apply(tenant, now_ms, EscalateOverflow(limit=limit))

    async def expire_preferences(self, tenant: str, now_ms: int, limit: int = 100) -> Outcome:
        """Send up to ``limit`` parked customers whose wait is over to normal routing."""
        return await self.apply(tenant, now_ms, ExpirePreferences(limit=limit))

    # ------------------------------------------------------- session lifecycle (SPEC §3)

    async def customer_message(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """The customer wrote: the agent owes a reply (or a pre-closed session returns)."""
        return await self.apply(tenant, now_ms, CustomerMessage(session=session))

    async def agent_message(self, tenant: str, now_ms: int, session: str, agent: str) -> Outcome:
        """The agent replied: now waiting for the customer."""
        return await self.apply(tenant, now_ms, AgentMessage(session=session, agent=agent))

    async def customer_leave(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """The customer left."""
        return await self.apply(tenant, now_ms, CustomerLeave(session=session))

    async def request_close(self, tenant: str, now_ms: int, session: str, agent: str) -> Outcome:
        """The agent asks the customer to confirm the issue is resolved."""
        return await self.apply(tenant, now_ms, RequestClose(session=session, agent=agent))

    async def confirm_close(
        self, tenant: str, now_ms: int, session: str, *, resolved: bool
    ) -> Outcome:
        """The customer says resolved (closed) or unresolved (back to the agent)."""
        return await self.apply(tenant, now_ms, ConfirmClose(session=session, resolved=resolved))

    async def close_session(
        self, tenant: str, now_ms: int, session: str, *, reason: str = "closed", note: str = ""
    ) -> Outcome:
        """Close a session at once (reason ``callback`` asks for a call-back)."""
        return await self.apply(
            tenant, now_ms, CloseSession(session=session, reason=reason, note=note)
        )

    async def invite_agent(self, tenant: str, now_ms: int, session: str, agent: str) -> Outcome:
        """Invite a second agent into an assigned session."""
        return await self.apply(tenant, now_ms, InviteAgent(session=session, agent=agent))

    async def query_position(self, tenant: str, now_ms: int, session: str) -> Outcome:
        """A queued customer's position."""
        return await self.apply(tenant, now_ms, QueryPosition(session=session))

    async def fire_timers(self, tenant: str, now_ms: int, limit: int = 100) -> Outcome:
        """Fire up to ``limit`` due lifecycle timers."""
        return await self.apply(tenant, now_ms, FireTimers(limit=limit))

    # --------------------------------------------------------------------- read views

    async def session_history(self, tenant: str, session: str) -> list[bytes]:
        """The session's events as published (JSON), oldest first (the list
        ``{t}:s:<id>:h`` that lua/lib/90_entry.lua keeps)."""
        rows = await self.redis.lrange(keys.key("history", tenant, session), 0, -1)
        return cast(list[bytes], rows)

    async def session(self, tenant: str, session: str) -> SessionView | None:
        """A session's stored state, or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.key("session", tenant, session))
        pipe.smembers(keys.key("blocked", tenant, session))
        raw, blocked = await pipe.execute()
        if not raw:
            return None
        f: dict[str, bytes] = {k.decode(): v for k, v in raw.items()}
        va = _s(f.get("va"))
        return SessionView(
            session=session,
            state=f["st"].decode(),
            group=f["g"].decode(),
            priority=int(f["p"]),
            arrival_ms=int(f["at"]),
            customer=_s(f.get("c")),
            agent=_s(f.get("ag")),
            open_tier=int(f.get("tr") or 0),
            parked_with=_s(f.get("pf")) if _s(f.get("q")) == "a" else None,
            virtual_arrival_ms=int(va) if va is not None and _s(f.get("q")) else None,
            blocked_agents=sorted(b.decode() for b in blocked),
            phase=_s(f.get("ph")),
        )

    async def agent(self, tenant: str, agent: str) -> AgentView | None:
        """An agent's stored state, or None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.key("agent", tenant, agent))
        pipe.hgetall(keys.key("skills", tenant, agent))
        raw, skills = await pipe.execute()
        if not raw:
            return None
        f: dict[str, bytes] = {k.decode(): v for k, v in raw.items()}
        last = _s(f.get("last"))
        status: Any = f["st"].decode()
        return AgentView(
            agent=agent,
            status=status,
            capacity=int(f["cap"]),
            load=int(f["load"]),
            preclosed=int(f["pre"]),
            last_assigned_ms=int(last) if last is not None else None,
            team=(_s(f.get("team")) or ""),
            abilities={g.decode(): float(v) for g, v in skills.items()},
        )

    async def _zset(self, key: str) -> list[tuple[bytes, float]]:
        rows = await self.redis.zrange(key, 0, -1, withscores=True)
        return cast(list[tuple[bytes, float]], rows)

    async def queue(self, tenant: str, group: str) -> list[QueueEntry]:
        """A group's queue in service order (first is served next)."""
        rows = await self._zset(keys.key("queue", tenant, group))
        return [QueueEntry(_member_session(m), int(s)) for m, s in rows]

    async def parked(self, tenant: str, agent: str) -> list[QueueEntry]:
        """Customers parked with an agent, in service order."""
        rows = await self._zset(keys.key("parked", tenant, agent))
        return [QueueEntry(_member_session(m), int(s)) for m, s in rows]

    async def ranking(self, tenant: str, group: str) -> list[tuple[str, float]]:
        """A group's candidate agents, best first, with their stored rank (lower is better)."""
        rows = await self._zset(keys.key("ready", tenant, group))
        return [(m.decode(), float(s)) for m, s in rows]
