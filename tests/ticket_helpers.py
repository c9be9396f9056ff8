"""Shared setup and inspection helpers for the ticket behaviour tests
(``tests/test_tickets_*.py``), which check the rules of docs/tickets.md.

Time is whatever ``now_ms`` a test passes: ticket timers fire only when a test calls
:func:`tick` at an explicit instant, so every rule about "when" is checked to the ms.
Nothing here mocks Redis: every helper drives the real engine or reads the real keyspace.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import redis.asyncio as aioredis
from helpers import T0

from dispatchd import keys, tickets
from dispatchd.engine import Engine
from dispatchd.messages import (
    AgentStatusName,
    ConfigureTicketType,
    CreateTicket,
    Event,
    TicketAssigned,
    TicketField,
    TicketTick,
)
from dispatchd.tickets import TicketView

HOUR = 3_600_000
DAY = 24 * HOUR
NY = "America/New_York"
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# ---------------------------------------------------------------------------- setup


async def ticket_type(
    engine: Engine,
    tenant: str,
    name: str = "task",
    *,
    fields: Sequence[TicketField] = (),
    first_response_ms: int = 0,
    resolution_ms: int = 0,
    now: int = T0,
) -> None:
    """Create (or replace) ticket type ``name``."""
    await engine.apply(tenant, now, ConfigureTicketType(
        type=name, name=name.title(), fields=list(fields),
        first_response_ms=first_response_ms, resolution_ms=resolution_ms))


async def group(
    engine: Engine,
    tenant: str,
    name: str,
    *,
    reassign_ms: int = 0,
    spread_ms: int = 0,
    priority_unit_ms: int = 60_000,
    now: int = T0,
) -> None:
    """Configure group ``name``; by default untouched tickets are never reassigned and a
    shift start has no spread, so a test only meets the timers it is about."""
    await engine.configure_group(tenant, now, name, priority_unit_ms=priority_unit_ms,
                                 ticket_reassign_ms=reassign_ms,
                                 ticket_release_spread_ms=spread_ms)


async def agent(
    engine: Engine,
    tenant: str,
    name: str,
    groups: Iterable[str],
    *,
    status: AgentStatusName = "online",
    limit: int = 20,
    now: int = T0,
) -> None:
    """Configure agent ``name``, a member of ``groups`` with ticket limit ``limit``, and
    (unless ``status`` is offline) set its status."""
    await engine.configure_agent(tenant, now, name, capacity=1,
                                 abilities={g: 1.0 for g in groups}, ticket_limit=limit)
    if status != "offline":
        await engine.set_agent_status(tenant, now, name, status)


async def world(
    engine: Engine,
    tenant: str,
    members: dict[str, Sequence[str]],
    *,
    offline: Iterable[str] = (),
    limit: int = 20,
    now: int = T0,
    **group_cfg: Any,
) -> None:
    """Ticket type ``task`` (no fields, no SLA), the groups named in ``members`` (agent ->
    its groups) with ``group_cfg``, and the agents, online unless in ``offline``."""
    await ticket_type(engine, tenant, now=now)
    for g in sorted({g for gs in members.values() for g in gs}):
        await group(engine, tenant, g, now=now, **group_cfg)
    offline = set(offline)
    for name, gs in members.items():
        await agent(engine, tenant, name, gs, limit=limit, now=now,
                    status="offline" if name in offline else "online")


async def create(
    engine: Engine, tenant: str, now: int, ticket: str, group: str, **kw: Any
) -> list[Event]:
    """Create ticket ``ticket`` of type ``task`` (unless ``type`` is given) in ``group``,
    created by ``sys``; returns its events."""
    kw.setdefault("type", "task")
    kw.setdefault("by", "sys")
    out = await engine.apply(tenant, now, CreateTicket(ticket=ticket, group=group, **kw))
    return out.events


async def tick(engine: Engine, tenant: str, now: int, limit: int = 100) -> list[Event]:
    """The events of one ticket tick at ``now``."""
    return (await engine.apply(tenant, now, TicketTick(limit=limit))).events


# ------------------------------------------------------------------------- reading


async def view(client: aioredis.Redis, tenant: str, ticket: str) -> TicketView:
    """The stored ticket (it must exist)."""
    t = await tickets.get_ticket(client, tenant, ticket)
    assert t is not None, f"ticket {ticket} does not exist"
    return t


async def state_of(client: aioredis.Redis, tenant: str, ticket: str) -> tuple[str, str | None]:
    """The ticket's state and handler."""
    t = await view(client, tenant, ticket)
    return t.state, t.agent


async def open_tickets(client: aioredis.Redis, tenant: str, agent: str) -> list[str]:
    """The agent's open tickets (its ticket load), oldest first."""
    rows = await client.zrange(keys.key("agent_tickets", tenant, agent), 0, -1)
    return [r.decode() for r in rows]


def handlers(events: Iterable[Event]) -> dict[str, str]:
    """ticket -> agent of every ``ticket_assigned`` in ``events``."""
    return {e.ticket: e.agent for e in events if isinstance(e, TicketAssigned)}


# -------------------------------------------------------------------- service hours


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A UTC wall time as epoch ms."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """A wall time in ``zone`` as epoch ms (the first of two, in a fall-back fold)."""
    at = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))
    return int(at.timestamp() * 1000)


def daily(start: str, end: str, *, zone: str = NY, closed: Sequence[str] = ()) -> dict[str, Any]:
    """Service hours: every day from ``start`` to ``end`` local, except ``closed`` dates."""
    return {"time_zone": zone,
            "weekly": [{"days": list(EVERY_DAY), "start": start, "end": end}],
            "closed_dates": list(closed)}


async def set_hours(
    engine: Engine, tenant: str, group: str, hours: dict[str, Any] | None, now: int
) -> None:
    """Give ``group`` these service hours (None: none), as the admin API does: its
    ``meta`` field, then its service windows recomputed at ``now``."""
    meta = {"service_hours": hours} if hours is not None else {}
    await engine.redis.hset(keys.key("group", tenant, group), "meta",
                            msgspec.msgpack.encode(meta))
    assert await tickets.refresh_windows(engine, tenant, now, [group]) == 1
