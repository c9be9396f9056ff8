"""Shared setup and inspection helpers for the per-script tests (``tests/test_lua_*.py``).

Time is whatever ``now_ms`` a test passes; :data:`T0` is a convenient epoch. Nothing here
mocks Redis: every helper drives the real engine or reads the real keyspace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from dispatchd.engine import Engine, SessionView
from dispatchd.errors import CommandRejected
from dispatchd.messages import AgentStatusName, Tier

T0 = 1_700_000_000_000
"""A realistic wall-clock epoch in ms; tests add offsets to it."""

SEC = 1_000
MIN = 60_000


# ------------------------------------------------------------------------- keyspace


async def dump_keyspace(client: aioredis.Redis, tenant: str) -> dict[bytes, tuple[Any, ...]]:
    """Every key of ``tenant`` with its type, full value and whether it has a TTL."""
    out: dict[bytes, tuple[Any, ...]] = {}
    for key in sorted(await client.keys("{" + tenant + "}:*")):
        kind = (await client.type(key)).decode()
        value: Any
        if kind == "string":
            value = await client.get(key)
        elif kind == "hash":
            value = sorted((await client.hgetall(key)).items())
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        else:  # pragma: no cover - the engine uses none of the other types
            value = await client.dump(key)
        has_ttl = (await client.pttl(key)) >= 0
        out[key] = (kind, value, has_ttl)
    return out


def strip_tenant(dump: dict[bytes, Any], tenant: str) -> dict[bytes, Any]:
    """``dump`` with the tenant's key prefix removed, to compare two tenants' states."""
    prefix = ("{" + tenant + "}:").encode()
    return {k[len(prefix) :]: v for k, v in dump.items()}


async def assert_refused(
    client: aioredis.Redis,
    tenant: str,
    exc_type: type[CommandRejected],
    call: Awaitable[Any],
    detail: str | None = None,
) -> CommandRejected:
    """Await ``call``, expect ``exc_type`` (with ``detail`` if given) and no keyspace change."""
    before = await dump_keyspace(client, tenant)
    with pytest.raises(exc_type) as info:
        await call
    assert type(info.value) is exc_type
    if detail is not None:
        assert info.value.detail == detail
    assert await dump_keyspace(client, tenant) == before
    return info.value


# ---------------------------------------------------------------------------- setup


async def groups(engine: Engine, tenant: str, *names: str, now: int = T0, **cfg: Any) -> None:
    """Configure each of ``names`` with the same settings."""
    for name in names:
        await engine.configure_group(tenant, now, name, **cfg)


async def add_agent(
    engine: Engine,
    tenant: str,
    name: str,
    abilities: dict[str, float],
    *,
    capacity: int = 1,
    status: AgentStatusName = "online",
    now: int = T0,
    team: str = "",
) -> None:
    """Configure an agent and (unless ``status`` is offline) set its status."""
    await engine.configure_agent(tenant, now, name, capacity=capacity, abilities=abilities,
                                 team=team)
    if status != "offline":
        await engine.set_agent_status(tenant, now, name, status)


async def sales_support(
    engine: Engine, tenant: str, *, now: int = T0, online: Iterable[str] = ("alice", "bob"),
    capacity: int = 1, **group_cfg: Any,
) -> None:
    """Groups ``sales`` and ``support``; agents alice {sales}, bob {support}, carol
    {sales, support}, each of ``capacity``; those in ``online`` go online at ``now``."""
    await groups(engine, tenant, "sales", "support", now=now, **group_cfg)
    members = {"alice": {"sales": 1.0}, "bob": {"support": 1.0},
               "carol": {"sales": 1.0, "support": 1.0}}
    online = set(online)
    for name, abilities in members.items():
        await add_agent(engine, tenant, name, abilities, capacity=capacity, now=now,
                        status="online" if name in online else "offline")


async def overflow_world(engine: Engine, tenant: str, *, now: int = T0) -> None:
    """``main`` overflows to ``t1`` after 30 s and to ``t2a``/``t2b`` after 60 s.

    Agents (capacity 1, all offline): m1 {main}, x1 {t1}, y1 {t2a}, y2 {t2b}.
    """
    await groups(engine, tenant, "t1", "t2a", "t2b", now=now)
    await engine.configure_group(
        tenant, now, "main",
        tiers=[Tier(after_ms=30 * SEC, groups=["t1"]),
               Tier(after_ms=60 * SEC, groups=["t2a", "t2b"])],
    )
    for name, group in (("m1", "main"), ("x1", "t1"), ("y1", "t2a"), ("y2", "t2b")):
        await add_agent(engine, tenant, name, {group: 1.0}, status="offline", now=now)


# ------------------------------------------------------------------------- expected


def rank(last_ms: int, *, k: float = 60.0, m: float = 0.5, cap: int = 1, load: int = 0,
         pre: int = 0, ability: float = 1.0) -> float:
    """The stored readiness rank (docs/routing.md "Agent order"), left to right."""
    return last_ms / 1000 - k * (cap - load - m * pre) / cap * ability


def queued_view(session: str, group: str, at: int, *, priority: int = 0, u: int = MIN,
                open_tier: int = 0, customer: str | None = None,
                parked_with: str | None = None,
                blocked: list[str] | None = None) -> SessionView:
    """The stored view of a session waiting in a queue (or parked)."""
    return SessionView(
        session=session, state="queued", group=group, priority=priority, arrival_ms=at,
        customer=customer, agent=None, open_tier=open_tier, parked_with=parked_with,
        virtual_arrival_ms=at - priority * u, blocked_agents=sorted(blocked or []),
        phase="queued",
    )


def assert_session(view: SessionView | None, **expected: Any) -> None:
    """``view`` exists and has each of the ``expected`` field values."""
    assert view is not None
    actual = {name: getattr(view, name) for name in expected}
    assert actual == expected


def names(events: Iterable[Any]) -> list[str]:
    """The ``event`` tag of each event, e.g. ``["tier_opened", "assigned"]``."""
    return [type(e).__struct_config__.tag for e in events]
