"""Tickets from the Python side: reading them back, supervision queries, and keeping each
group's service windows (the UTC form of its service hours the ticket scripts use).

Every change to a ticket is one Lua transition (``lua/tickets/``, docs/tickets.md); this
module only reads, except :func:`refresh_windows`, which goes through
``set_service_windows``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Literal, cast

import msgspec

from dispatchd import hours, keys
from dispatchd.engine import Engine
from dispatchd.errors import GroupUnknown, Stale
from dispatchd.messages import ServiceWindows, SetServiceWindows

log = logging.getLogger("dispatchd.tickets")

TicketStateName = Literal["held", "queued", "assigned", "in_progress", "closed"]
STATES: tuple[str, ...] = ("held", "queued", "assigned", "in_progress", "closed")
OPEN_STATES = frozenset(STATES[:-1])

_unpack = msgspec.msgpack.Decoder()
_json = msgspec.json.Decoder()


class Hop(msgspec.Struct, frozen=True, kw_only=True):
    """One forward of a ticket: who sent it, when, from where to where, with what note,
    after how long in the group it left, and whether it went back to a group it had been
    in (a loop)."""

    hop: int
    by: str
    at_ms: int
    from_group: str
    to_group: str
    note: str
    spent_ms: int
    loop: bool
    from_agent: str | None = None


class TicketView(msgspec.Struct, frozen=True, kw_only=True):
    """A ticket as stored (docs/tickets.md "The ticket")."""

    ticket: str
    type: str
    state: TicketStateName
    group: str
    agent: str | None
    order_id: str | None
    priority: int
    title: str
    fields: dict[str, Any]
    created_ms: int
    created_by: str
    entered_group_ms: int
    assigned_ms: int | None
    first_response_ms: int | None
    """Time from creation to the first response (any hop), when there was one."""
    first_response_due_ms: int | None
    resolution_due_ms: int | None
    overdue: bool
    breached: list[str]
    hops: int
    path: list[str]
    """The groups the ticket went through, in order (the last is its group now)."""
    closed_ms: int | None = None
    closed_by: str | None = None
    resolution: str | None = None
    resolution_ms: int | None = None


def _s(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


def _i(value: bytes | None) -> int | None:
    return None if value is None or value == b"" else int(value)


def _view(tid: str, f: dict[str, bytes], hop_rows: Sequence[bytes], overdue: bool) -> TicketView:
    created = int(f["at"])
    first = _i(f.get("fr"))
    closed = _i(f.get("ct"))
    frd, rsd = _i(f.get("frd")) or 0, _i(f.get("rsd")) or 0
    hops = [_json.decode(h) for h in hop_rows]
    path = [hops[0]["from_group"]] if hops else [f["g"].decode()]
    path.extend(h["to_group"] for h in hops)
    fields = _unpack.decode(f["f"]) if f.get("f") else {}
    breached = [name for key, name in (("brf", "first_response"), ("brr", "resolution"))
                if f.get(key) == b"1"]
    return TicketView(
        ticket=tid, type=f["ty"].decode(), state=f["st"].decode(),  # type: ignore[arg-type]
        group=f["g"].decode(), agent=_s(f.get("ag")), order_id=_s(f.get("o")),
        priority=int(f["p"]), title=(f.get("ti") or b"").decode(),
        fields=fields if isinstance(fields, dict) else {},
        created_ms=created, created_by=f["by"].decode(), entered_group_ms=int(f["ga"]),
        assigned_ms=_i(f.get("asg")), first_response_ms=None if first is None else first - created,
        first_response_due_ms=frd or None, resolution_due_ms=rsd or None, overdue=overdue,
        breached=breached, hops=int(f.get("hops") or 0), path=path, closed_ms=closed,
        closed_by=_s(f.get("cb")), resolution=_s(f.get("res")),
        resolution_ms=None if closed is None else closed - created,
    )


async def get_ticket(redis: Any, tenant: str, ticket: str) -> TicketView | None:
    """One ticket, or None."""
    return (await get_tickets(redis, tenant, [ticket]))[0]


async def get_tickets(redis: Any, tenant: str, ids: Sequence[str]) -> list[TicketView | None]:
    """Tickets by id, in one round trip (None for an id that does not exist)."""
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for tid in ids:
        pipe.hgetall(keys.key("ticket", tenant, tid))
        pipe.lrange(keys.key("ticket_hops", tenant, tid), 0, -1)
        pipe.zscore(keys.key("tickets_overdue", tenant), tid)
    rows = await pipe.execute()
    out: list[TicketView | None] = []
    for n, tid in enumerate(ids):
        raw, hop_rows, overdue = rows[3 * n: 3 * n + 3]
        if not raw:
            out.append(None)
            continue
        f = {k.decode(): v for k, v in raw.items()}
        out.append(_view(tid, f, hop_rows, overdue is not None))
    return out


async def get_hops(redis: Any, tenant: str, ticket: str) -> list[Hop]:
    """A ticket's forwarding chain, first hop first."""
    rows = await redis.lrange(keys.key("ticket_hops", tenant, ticket), 0, -1)
    return [msgspec.json.decode(r, type=Hop) for r in rows]


async def get_history(redis: Any, tenant: str, ticket: str) -> list[dict[str, Any]]:
    """Every event of a ticket, oldest first, as published on the outbound stream."""
    rows = await redis.lrange(keys.key("ticket_history", tenant, ticket), 0, -1)
    return [_json.decode(r) for r in rows]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What a supervision query asks for; every given condition must hold.

    ``handler`` is who holds the ticket now; ``handled_by`` anyone it was ever assigned
    to (that agent's newest 10,000 tickets); ``group`` its group now (a closed ticket
    stays in the group that closed it).
    """

    group: str | None = None
    handler: str | None = None
    handled_by: str | None = None
    order_id: str | None = None
    state: TicketStateName | None = None
    overdue: bool | None = None


def _index(tenant: str, q: Query) -> str:
    """The most selective index for ``q``: the zset its scan walks."""
    if q.order_id is not None:
        return keys.key("order_tickets", tenant, q.order_id)
    if q.handler is not None:
        return keys.key("agent_tickets", tenant, q.handler)
    if q.overdue:
        return keys.key("tickets_overdue", tenant)
    if q.handled_by is not None:
        return keys.key("agent_handled", tenant, q.handled_by)
    if q.group is not None:
        return keys.key("group_tickets", tenant, q.group)
    if q.state is not None:
        return keys.key("ticket_state", tenant, q.state)
    return keys.key("tickets", tenant)


def _matches(t: TicketView, q: Query) -> bool:
    return ((q.group is None or t.group == q.group)
            and (q.handler is None or t.agent == q.handler)
            and (q.order_id is None or t.order_id == q.order_id)
            and (q.state is None or t.state == q.state)
            and (q.overdue is None or t.overdue == q.overdue))


async def find(
    redis: Any, tenant: str, q: Query, *, limit: int = 100, cursor: str | None = None
) -> tuple[list[TicketView], str | None]:
    """Tickets matching ``q``, in the order of the index scanned (creation time; for
    ``overdue`` the time they became overdue; for ``handled_by`` the time last assigned).

    Returns:
        up to ``limit`` tickets and the cursor of the next page (None at the end). A page
        may hold fewer than ``limit`` when the other conditions filter a lot: at most
        ``10 * limit`` index entries are looked at per page.

    Raises:
        ValueError: ``cursor`` is not one this listing returned.
    """
    index = _index(tenant, q)
    handled_key = (keys.key("agent_handled", tenant, q.handled_by)
                   if q.handled_by is not None else None)
    last = _parse_cursor(cursor)
    found: list[TicketView] = []
    budget, offset = 10 * limit, 0
    while len(found) < limit and budget > 0:
        lo = "-inf" if last is None else last[0]
        rows = await redis.zrange(index, lo, "+inf", byscore=True, offset=offset,
                                  num=min(budget, 500), withscores=True)
        if not rows:
            return found, None
        page = [(int(sc), m.decode()) for m, sc in rows]
        fresh = [r for r in page if last is None or r > last]
        if not fresh:  # a run of equal scores up to the cursor: read further into it
            offset += len(page)
            continue
        offset = 0
        ids = [tid for _, tid in fresh]
        views = await get_tickets(redis, tenant, ids)
        handled = (await _members(redis, handled_key, ids)
                   if handled_key is not None and handled_key != index else None)
        for row, view in zip(fresh, views, strict=True):
            budget -= 1
            last = row
            if view is not None and _matches(view, q) and (handled is None or row[1] in handled):
                found.append(view)
            if len(found) == limit or budget == 0:
                break
    return found, None if last is None else f"{last[0]}:{last[1]}"


async def _members(redis: Any, key: str, ids: Sequence[str]) -> set[str]:
    scores = await redis.zmscore(key, list(ids))
    return {tid for tid, sc in zip(ids, scores, strict=True) if sc is not None}


def _parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    score, sep, tid = cursor.partition(":")
    if not sep or not score.lstrip("-").isdigit() or not keys.ID_RE.match(tid):
        raise ValueError(f"not a cursor of this listing: {cursor!r}")
    return int(score), tid


# ------------------------------------------------------------------ service windows


class _Shift(msgspec.Struct):
    days: Sequence[str]
    start: str
    end: str


class _Hours(msgspec.Struct):
    time_zone: str
    weekly: Sequence[_Shift] = ()
    closed_dates: Sequence[str] = ()


#: How far ahead windows are computed, and how often the daemon recomputes them.
HORIZON_DAYS = 21
REFRESH_S = 3600.0


def windows_of(meta: bytes | None, now_ms: int) -> ServiceWindows | None:
    """The service windows for a group's stored ``meta`` (None: no service hours)."""
    if not meta:
        return None
    doc = _unpack.decode(meta)
    raw = doc.get("service_hours") if isinstance(doc, dict) else None
    if not raw:
        return None
    # a Protocol's attributes are invariant: a Struct of Sequences is read-only HoursLike
    sw = hours.service_windows(cast(hours.HoursLike, msgspec.convert(raw, _Hours)), now_ms,
                               HORIZON_DAYS)
    return None if sw is None else ServiceWindows(hz=sw["hz"], iv=sw["iv"])


async def refresh_windows(engine: Engine, tenant: str, now_ms: int,
                          groups: Sequence[str] | None = None) -> int:
    """Recompute and store the service windows of ``groups`` (default: all the tenant's
    groups); returns how many were stored. A group whose hours change meanwhile is read
    again; a group deleted meanwhile is skipped."""
    redis: Any = engine.redis
    if groups is None:
        groups = sorted(g.decode() for g in await redis.smembers(keys.key("groups", tenant)))
    stored = 0
    for group in groups:
        for _ in range(5):
            meta = await redis.hget(keys.key("group", tenant, group), "meta")
            cmd = SetServiceWindows(group=group, windows=windows_of(meta, now_ms),
                                    meta_sha1=hashlib.sha1(meta or b"").hexdigest())
            try:
                await engine.apply(tenant, now_ms, cmd)
            except Stale:
                continue
            except GroupUnknown:
                break
            stored += 1
            break
    return stored


async def windows_loop(engine: Engine, tenants: Sequence[str], stop: asyncio.Event,
                       clock: Any, every_s: float = REFRESH_S) -> None:
    """Keep every served tenant's service windows ahead of the clock (the daemon loop).

    ``tenants`` empty: every tenant in the tenant registry.
    """
    redis: Any = engine.redis
    while not stop.is_set():
        served = list(tenants) or sorted(t.decode() for t in await redis.smembers(keys.TENANTS_KEY))
        for tenant in served:
            try:
                await refresh_windows(engine, tenant, clock())
            except Exception:  # one tenant's bad data must not stop the others
                log.exception("service windows refresh failed", extra={"tenant": tenant})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
