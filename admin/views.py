"""Stored state -> API bodies: the one place the admin API reads routing keys.

Reads are plain pipelined reads (a view may straddle a change, but a resource and its
version are read in one MULTI: :func:`with_version`); every write goes
through one atomic admin script call (:mod:`admin.changes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from admin import schemas as s
from admin import ticket_schemas as ts
from dispatchd import keys
from dispatchd.hours import in_service
from dispatchd.tickets import TicketView

_unpack = msgspec.msgpack.Decoder()
_json = msgspec.json.Decoder()

#: API timer field -> key in the group's stored timer map (lua/configure_group.lua)
TIMER_KEYS = {
    "queue_warning_ms": "qwarn", "queue_timeout_ms": "qtimeout",
    "position_update_ms": "posint", "reply_sla_ms": "sla", "reply_reassign_ms": "reassign",
    "silence_remind_ms": "sremind", "silence_preclose_ms": "spreclose",
    "silence_close_ms": "sclose", "confirm_close_ms": "cclose",
}
#: API ticket setting -> key in the group's stored timer map
TICKET_KEYS = {"reassign_untouched_ms": "treassign", "release_spread_ms": "tspread"}
GROUP_META = ("name", "business_line", "channel", "language", "scene", "service_mode",
              "ability_tier")


def text(raw: bytes | None, default: str = "") -> str:
    return default if raw is None else raw.decode()


def plain(value: Any) -> Any:
    """A stored value for the audit log: text as text, msgpack blobs decoded."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            try:
                return plain(_unpack.decode(value))
            except msgspec.DecodeError:
                return value.hex()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def page(ids: list[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """Sorted ``ids`` after ``cursor``, at most ``limit``, and the next cursor."""
    ids = sorted(ids)
    if cursor is not None:
        ids = [i for i in ids if i > cursor]
    chosen = ids[:limit]
    return chosen, (chosen[-1] if len(ids) > limit else None)


def _decoded(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): v for k, v in raw.items()}


def group_out(gid: str, raw: dict[bytes, bytes], version: int, now_ms: int) -> s.GroupOut:
    f = _decoded(raw)
    timers = _unpack.decode(f["timers"]) if "timers" in f else {}
    meta = _unpack.decode(f["meta"]) if "meta" in f else {}
    hours = meta.get("service_hours")
    if hours:  # Lua's msgpack writes an empty list as an empty map
        hours = {k: [] if v == {} else v for k, v in hours.items()}
    service_hours = None
    if hours and not hours.get("weekly"):  # stored before a shift was required
        service_hours = s.ServiceHours(time_zone=hours["time_zone"], weekly=[],
                                       closed_dates=hours.get("closed_dates") or [])
    elif hours:
        service_hours = msgspec.convert(hours, s.ServiceHours)
    return s.GroupOut(
        id=gid,
        **{name: meta.get(name, "") for name in GROUP_META},
        service_hours=service_hours,
        k=float(f["k"]),
        m=float(f["m"]),
        priority_unit_ms=int(f["u"]),
        tiers=[s.Tier(after_ms=t["after_ms"], groups=t["groups"])
               for t in _unpack.decode(f["tiers"])],
        sticky_ms=int(f["sticky"]),
        preference_ms=int(f["pref"]),
        timers=s.Timers(**{api: timers[k] for api, k in TIMER_KEYS.items() if k in timers}),
        service_level_ms=int(timers.get("slms", 20_000)),
        service_level_target=float(timers.get("slt", 0.8)),
        tickets=s.TicketSettings(**{api: timers[k] for api, k in TICKET_KEYS.items()
                                    if k in timers}),
        record_decisions=bool(timers.get("rd", False)),
        in_service_hours=in_service(service_hours, now_ms),  # type: ignore[arg-type]
        version=version,
    )


def rule_out(r: dict[str, Any]) -> s.RuleOut:
    match = r.get("match") or {}
    return s.RuleOut(
        name=r.get("name"),
        group=r["group"],
        match=match if isinstance(match, dict) else {},
        priority=int(r.get("priority") or 0),
        preferred_agent=r.get("preferred_agent"),
        blocked_agents=list(r.get("blocked_agents") or []),
    )


def rules_stored(raw: bytes | None) -> list[dict[str, Any]]:
    rules = _unpack.decode(raw) if raw else []
    return rules if isinstance(rules, list) else []


def team_out(tid: str, raw: bytes, version: int) -> s.TeamOut:
    t = _unpack.decode(raw)
    return s.TeamOut(id=tid, name=t.get("name", ""), site=t.get("site", ""),
                     manager=t.get("manager", ""), version=version)


async def with_version(
    redis: Any, tenant: str, resource: str, rid: str, read: Callable[[Any], object]
) -> tuple[Any, int]:
    """What ``read`` queues on a pipeline, and the resource's version, read in one MULTI:
    a body and the version a client sends back in ``If-Match`` must belong together, or
    an edit of an older body would pass the version check and undo a newer change."""
    pipe = redis.pipeline(transaction=True)
    read(pipe)
    pipe.hget(keys.key("versions", tenant), f"{resource}:{rid}")
    value, ver = await pipe.execute()
    return value, int(ver or 0)


async def agents_out(
    redis: Any, tenant: str, ids: list[str], now_ms: int
) -> list[s.AgentOut]:
    """The agents ``ids`` (those that exist) with their live state, in two round trips."""
    k = keys.key
    pipe = redis.pipeline(transaction=True)  # each agent with its version, as with_version
    for a in ids:
        pipe.hgetall(k("agent", tenant, a))
        pipe.hgetall(k("skills", tenant, a))
        pipe.smembers(k("agent_sessions", tenant, a))
        pipe.smembers(k("agent_preclosed", tenant, a))
        pipe.zrange(k("parked", tenant, a), 0, -1)
        pipe.zcard(k("agent_tickets", tenant, a))
        pipe.hget(k("versions", tenant), f"agent:{a}")
    rows = await pipe.execute()
    found = []
    for n, a in enumerate(ids):
        raw, skills, sess, pre, parked, tickets, ver = rows[n * 7:(n + 1) * 7]
        if raw:
            found.append((a, _decoded(raw), {g.decode(): float(v) for g, v in skills.items()},
                          sess, pre, parked, int(tickets), int(ver or 0)))
    pipe = redis.pipeline(transaction=False)
    for a, _, skills, *_ in found:
        for g in sorted(skills):
            pipe.zscore(k("ready", tenant, g), a)
    scores = iter(await pipe.execute())
    out = []
    for a, f, skills, sess, pre, parked, tickets, ver in found:
        groups = []
        for g in sorted(skills):
            rank = next(scores)
            groups.append(s.GroupReadiness(
                group=g, ability=skills[g], candidate=rank is not None,
                readiness=None if rank is None else now_ms / 1000 - float(rank),
            ))
        last = f.get("last")
        out.append(s.AgentOut(
            id=a, name=text(f.get("name")), team=text(f.get("team")) or None,
            capacity=int(f["cap"]), abilities=skills, status=f["st"].decode(),  # type: ignore[arg-type]
            load=int(f["load"]), preclosed=int(f["pre"]),
            sessions=sorted(x.decode() for x in sess),
            preclosed_sessions=sorted(x.decode() for x in pre),
            parked=[x[26:].decode() for x in parked],
            last_assigned_ms=int(last) if last else None, groups=groups,
            ticket_limit=int(f.get("tlim") or 20), open_tickets=tickets, version=ver,
        ))
    return out


async def queue_out(
    redis: Any, tenant: str, group: str, offset: int, limit: int, now_ms: int
) -> s.QueueOut:
    qkey = keys.key("queue", tenant, group)
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(qkey)
    pipe.zrange(qkey, offset, offset + limit - 1, withscores=True)
    length, rows = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for member, _ in rows:
        pipe.hmget(keys.key("session", tenant, member[26:].decode()), "p", "at", "tr")
    details = await pipe.execute()
    items = []
    for n, ((member, score), (p, at, tr)) in enumerate(zip(rows, details, strict=True)):
        items.append(s.QueueItem(
            position=offset + n + 1, session=member[26:].decode(), priority=int(p or 0),
            wait_ms=now_ms - int(at or now_ms), virtual_wait_ms=now_ms - int(score),
            open_tier=int(tr or 0),
        ))
    return s.QueueOut(group=group, length=int(length), items=items)


def ticket_type_out(tid: str, raw: bytes, version: int) -> ts.TicketTypeOut:
    """A stored ticket type ({name, fields, frt, res}, lua/tickets/configure_ticket_type.lua)."""
    t = _unpack.decode(raw)
    fields = t.get("fields") or []  # Lua's msgpack writes an empty list as an empty map
    return ts.TicketTypeOut(
        id=tid, name=t.get("name", ""),
        fields=[msgspec.convert(f, ts.TicketFieldSpec) for f in fields],
        first_response_ms=int(t.get("frt") or 0), resolution_ms=int(t.get("res") or 0),
        version=version,
    )


def ticket_out(view: TicketView, hop_rows: list[bytes]) -> ts.TicketOut:
    """A ticket as read by :mod:`dispatchd.tickets`, with its hop records (JSON rows)."""
    return ts.TicketOut(
        id=view.ticket, type=view.type, state=view.state, group=view.group, agent=view.agent,
        order_id=view.order_id, priority=view.priority, title=view.title, fields=view.fields,
        created_ms=view.created_ms, created_by=view.created_by,
        entered_group_ms=view.entered_group_ms, assigned_ms=view.assigned_ms,
        first_response_ms=view.first_response_ms,
        first_response_due_ms=view.first_response_due_ms,
        resolution_due_ms=view.resolution_due_ms, overdue=view.overdue,
        breached=view.breached, hops=[_hop(r) for r in hop_rows], path=view.path,
        closed_ms=view.closed_ms, closed_by=view.closed_by, resolution=view.resolution,
        resolution_ms=view.resolution_ms,
    )


_hop = msgspec.json.Decoder(ts.HopOut).decode


async def tickets_out(redis: Any, tenant: str, found: list[TicketView]) -> list[ts.TicketOut]:
    """``found`` with their hop records, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for view in found:
        pipe.lrange(keys.key("ticket_hops", tenant, view.ticket), 0, -1)
    rows = await pipe.execute() if found else []
    return [ticket_out(view, hops) for view, hops in zip(found, rows, strict=True)]


def history(rows: list[bytes]) -> list[dict[str, Any]]:
    return [_json.decode(r) for r in rows]


def decisions(rows: list[bytes]) -> list[s.Decision]:
    """The ``decision`` of each ``assigned`` history entry, with the entry's ts."""
    out = []
    for r in rows:
        e = _json.decode(r)
        d = e.get("decision") if e.get("type") == "assigned" else None
        if isinstance(d, dict):
            # Lua's JSON has no empty list: `customers` is absent off the agent side
            out.append(msgspec.convert({"customers": [], **d, "ts": e["ts"]}, s.Decision))
    return out


def records_decisions(packed_timers: bytes | None) -> bool:
    """A group's record_decisions setting from its stored timer map."""
    return bool(packed_timers and _unpack.decode(packed_timers).get("rd", False))


async def summary_out(redis: Any, tenant: str, now_ms: int) -> s.SummaryOut:
    k = keys.key
    groups = sorted(g.decode() for g in await redis.smembers(k("groups", tenant)))
    agents = sorted(a.decode() for a in await redis.smembers(k("agents", tenant)))
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(k("group_open", tenant))
    for g in groups:
        pipe.zcard(k("queue", tenant, g))
        pipe.zrange(k("queue", tenant, g), 0, 0, withscores=True)
        pipe.zcard(k("ready", tenant, g))
        pipe.hlen(k("members", tenant, g))
    for a in agents:
        pipe.hmget(k("agent", tenant, a), "st", "cap", "load")
    pipe.xlen(k("inbound", tenant))
    pipe.xlen(k("dead", tenant))
    rows = await pipe.execute()
    open_by_group = {g.decode(): int(v) for g, v in rows[0].items()}
    out_groups = []
    for n, g in enumerate(groups):
        queued, head, candidates, members = rows[1 + 4 * n: 5 + 4 * n]
        out_groups.append(s.GroupSummary(
            group=g, queued=int(queued), open_sessions=open_by_group.get(g, 0),
            oldest_virtual_wait_ms=now_ms - int(head[0][1]) if head else None,
            candidates=int(candidates), members=int(members),
        ))
    by_status = {"online": 0, "away": 0, "offline": 0}
    load = capacity = 0
    base = 1 + 4 * len(groups)
    for st, cap, ld in rows[base: base + len(agents)]:
        status = text(st, "offline")
        by_status[status] = by_status.get(status, 0) + 1
        if status == "online":
            load += int(ld or 0)
            capacity += int(cap or 0)
    backlog, dead = rows[-2], rows[-1]
    return s.SummaryOut(
        tenant=tenant, groups=out_groups, agents=by_status, load=load, capacity=capacity,
        stream_backlog=int(backlog), dead_letters=int(dead),
    )


def audit_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> s.AuditEntry:
    f = _decoded(fields)
    cmd = plain(f["cmd"]) if "cmd" in f else None
    return s.AuditEntry(
        id=entry_id.decode(), ts=int(f["ts"]), actor=text(f.get("actor")),
        role=text(f.get("role")), action=text(f.get("action")),
        resource=text(f.get("resource")), resource_id=text(f.get("id")),
        version=int(f.get("version") or 0), command=cmd or None,
        before=plain(_unpack.decode(f["before"])) if "before" in f else None,
        after=plain(_unpack.decode(f["after"])) if "after" in f else None,
        events=int(f.get("events") or 0),
    )
