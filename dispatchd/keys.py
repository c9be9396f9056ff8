"""The keyspace: the one place that spells a Redis key.

Every key of a tenant starts with ``{tenant}:`` so that all of a tenant's keys share one
Redis Cluster hash slot. Library functions receive the tenant's root key (``{t}:tenant``) as
``KEYS[1]``; that fixes the slot, and every other key a script touches is derived from it
with the helpers generated here by :func:`lua_prelude` — so Lua never spells a key either.

Why the root key and not every key in KEYS: which keys an operation touches depends on
state inside Redis (the agent's groups, the overflow graph, which customer heads a queue).
Declaring them up front would need a read round trip before every write — and the answer
could change before the write lands. All derived keys carry the root key's hash tag, so
Redis Cluster routes and checks the script by that one slot.
"""

from __future__ import annotations

import re

#: name -> (template, argument names). ``P`` is the tenant prefix ``{tenant}:``.
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    # hash: seq (arrival counter), retention_ms
    "tenant": ("{P}tenant", ()),
    # set of group ids / agent ids
    "groups": ("{P}groups", ()),
    "agents": ("{P}agents", ()),
    # hash: k, m, u, sticky, pref, tiers (msgpack list of {after_ms, groups})
    "group": ("{P}g:{group}", ("group",)),
    # zset: queued customers, score = virtual arrival ms, member: see lua/lib/00_core.lua
    "queue": ("{P}g:{group}:q", ("group",)),
    # zset: candidate agents, score = stored readiness rank (lower is better)
    "ready": ("{P}g:{group}:r", ("group",)),
    # zset: queued customers of the group whose open tier >= tier
    "overflow": ("{P}g:{group}:o:{tier}", ("group", "tier")),
    # hash: agent -> ability, every member of the group
    "members": ("{P}g:{group}:m", ("group",)),
    # hash: source group -> tier n, the groups that list this group in their tier n
    "sources": ("{P}g:{group}:src", ("group",)),
    # hash: st, cap, load, pre, last, team
    "agent": ("{P}a:{agent}", ("agent",)),
    # hash: group -> ability
    "skills": ("{P}a:{agent}:sk", ("agent",)),
    # hashes: agents by status (on, aw, off), load and capacity of the online ones (ld,
    # cp) and, for the tenant, pre-closed sessions (pc); kept by lua/lib/00_core.lua
    "agent_totals": ("{P}ast", ()),
    "group_agents": ("{P}g:{group}:ast", ("group",)),
    # set: the agent's assigned sessions / pre-closed sessions
    "agent_sessions": ("{P}a:{agent}:s", ("agent",)),
    "agent_preclosed": ("{P}a:{agent}:pc", ("agent",)),
    # zset: customers parked with this agent (directed/sticky), same scores as a queue
    "parked": ("{P}a:{agent}:w", ("agent",)),
    # hash: the session (see docs/routing.md)
    "session": ("{P}s:{session}", ("session",)),
    # list: the session's events as JSON, oldest first (capped; expires with the session)
    "history": ("{P}s:{session}:h", ("session",)),
    # set: agents this session's customer blocks
    "blocked": ("{P}s:{session}:b", ("session",)),
    # hash: ag (last agent), at (when released) -- sticky memory
    "customer": ("{P}c:{customer}", ("customer",)),
    # zsets: session -> due ms of its next overflow step / of its preference fallback
    "due_overflow": ("{P}due:ovf", ()),
    "due_preference": ("{P}due:pref", ()),
    # zset: "<kind>:<session>" -> due ms of a lifecycle timer (lua/lib/20_sessions.lua)
    "due_timers": ("{P}due:tm", ()),
    # set: agents invited into the session besides its own
    "experts": ("{P}s:{session}:x", ("session",)),
    # hash: group -> number of its open sessions (queued, parked, assigned, pre-closed)
    "group_open": ("{P}gopen", ()),
    # hash: r (customers served per second, decayed), t (ms of the last update)
    "group_rate": ("{P}g:{group}:rate", ("group",)),
    # streams: gateway commands in, events out, refused commands (docs/protocol.md)
    "inbound": ("{P}in", ()),
    "outbound": ("{P}out", ()),
    "dead": ("{P}dead", ()),
    # zset: command id -> ms applied (idempotency window)
    "applied": ("{P}applied", ()),
    # hash: "<resource>:<id>" -> version, counting the resource's audited admin changes
    "versions": ("{P}ver", ()),
    # stream: the audit log of admin changes (lua/admin/admin.lua)
    "audit": ("{P}audit", ()),
    # hash: team id -> msgpack {name, site, manager}
    "teams": ("{P}teams", ()),
    # string: the token of the daemon replica that holds this tenant (with PX expiry)
    "lease": ("{P}lease", ()),
    # --- tickets (lua/tickets/, docs/tickets.md)
    # hash: ticket type id -> msgpack template {name, fields, frt, res}
    "ticket_types": ("{P}ttypes", ()),
    # hash: the ticket (see lua/tickets/00_lib.lua)
    "ticket": ("{P}tk:{ticket}", ("ticket",)),
    # lists: the ticket's events as JSON, oldest first; its forwarding hops as JSON
    "ticket_history": ("{P}tk:{ticket}:h", ("ticket",)),
    "ticket_hops": ("{P}tk:{ticket}:hops", ("ticket",)),
    # hash: group -> times the ticket entered it (a second entry is a forwarding loop)
    "ticket_visits": ("{P}tk:{ticket}:v", ("ticket",)),
    # zsets, ticket -> creation ms: every ticket; per state; per current group; per order
    "tickets": ("{P}tks", ()),
    "ticket_state": ("{P}tks:{state}", ("state",)),
    "group_tickets": ("{P}g:{group}:tk", ("group",)),
    "order_tickets": ("{P}o:{order}:tk", ("order",)),
    # zset: open overdue tickets -> ms they became overdue
    "tickets_overdue": ("{P}tks:overdue", ()),
    # zset: closed tickets -> ms closed (purged after the tenant's ticket retention)
    "tickets_closed": ("{P}tks:closedat", ()),
    # zset: tickets waiting for a handler in the group (held or queued), score = creation
    # ms - priority * the group's priority unit
    "ticket_queue": ("{P}g:{group}:tq", ("group",)),
    # hash: group -> number of its open tickets; of its held tickets
    "tickets_open": ("{P}tkopen", ()),
    "tickets_held": ("{P}tkheld", ()),
    # hash: agent -> tickets taken in the group's current shift-start release, plus
    # "#until" (ms the release ends) and "#share" (tickets per agent until then)
    "ticket_ramp": ("{P}g:{group}:ramp", ("group",)),
    # zset: the group's ticket-eligible agents (docs/tickets.md "Assignment"): the
    # members on shift (online or away) with fewer open tickets than their ticket limit;
    # score = open tickets, member = 15-digit ms of its last ticket assignment (0: never)
    # .. agent id, so equal scores order by that time, then id, and the first is the one
    # a balanced assignment picks; kept by every change (lua/lib/30_ticket_hook.lua)
    "ticket_agents": ("{P}g:{group}:tka", ("group",)),
    # hash: group -> "1" once its ticket_agents were built from its members (a group
    # older than them gets them built at its first ticket assignment)
    "ticket_agents_built": ("{P}tkab", ()),
    # zset: the agent's open tickets -> creation ms (its ticket load is the ZCARD)
    "agent_tickets": ("{P}a:{agent}:tk", ("agent",)),
    # zset: every ticket the agent was assigned -> ms last assigned (newest 10,000)
    "agent_handled": ("{P}a:{agent}:tkh", ("agent",)),
    # hash: owner (the order's owner, an agent id, as the creating system said)
    "order": ("{P}o:{order}", ("order",)),
    # zset: agents who handled the order's tickets -> ms last assigned one
    "order_handlers": ("{P}o:{order}:h", ("order",)),
    # zset: "<kind>:<id>" -> due ms of a ticket timer (lua/tickets/ticket_tick.lua)
    "ticket_due": ("{P}due:tk", ()),
}

#: Not a tenant key: the set of tenant ids the daemon serves (no hash tag, own slot).
TENANTS_KEY = "dispatchd:tenants"
#: Not a tenant key: zset of the live daemon replicas, member = consumer name, score =
#: server ms its registration runs out (dispatchd/membership.py); own slot.
REPLICAS_KEY = "dispatchd:replicas"
#: Not tenant keys: admin API tokens (sha256 of the token -> msgpack record), token id ->
#: sha256, and the audit stream of token and tenant changes; one hash tag, one slot.
TOKENS_KEY = "{dispatchd}:tokens"
TOKEN_IDS_KEY = "{dispatchd}:token-ids"
GLOBAL_AUDIT_KEY = "{dispatchd}:audit"
#: hash: token id -> Unix ms of its last recorded use (admin/auth.py ``Tokens.touch``)
TOKEN_USED_KEY = "{dispatchd}:token-used"
#: hash: "<tenant>:<deleted ms>" -> msgpack record of a deleted tenant's archived audit log
AUDIT_ARCHIVES_KEY = "{dispatchd}:audit-archives"
#: Prefix of a supervisor console session (admin/console/session.py): + sha256 of the
#: session cookie -> msgpack record (the token's sha256, the CSRF token), with a TTL
CONSOLE_SESSION_PREFIX = "{dispatchd}:console:"
#: The infix of a deleted tenant's archived audit log (:func:`audit_archive`).
AUDIT_ARCHIVE_INFIX = "audit:deleted:"

ID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")  # \Z: "$" would allow a trailing newline


def prefix(tenant: str) -> str:
    """The key prefix of a tenant; its ``{...}`` is the Redis Cluster hash tag."""
    return "{" + tenant + "}:"


def key(name: str, tenant: str, *args: object) -> str:
    """Spell key ``name`` of ``tenant`` with the template's arguments in order."""
    template, params = TEMPLATES[name]
    if len(args) != len(params):
        raise TypeError(f"key {name!r} takes {params}, got {args!r}")
    return template.format(P=prefix(tenant), **dict(zip(params, map(str, args), strict=True)))


def audit_archive(tenant: str, deleted_ms: int) -> str:
    """Where a deleted tenant's audit log is kept (RENAMEd from its ``audit`` stream, so in
    the tenant's hash slot); a tenant created anew with the same id never reads it."""
    return prefix(tenant) + AUDIT_ARCHIVE_INFIX + str(deleted_ms)


def root(tenant: str) -> str:
    """``KEYS[1]`` of every script: the tenant's root key."""
    return key("tenant", tenant)


def _lua_body(template: str, params: tuple[str, ...]) -> str:
    parts = re.split(r"(\{[A-Za-z]+\})", template)
    pieces: list[str] = []
    for part in parts:
        if not part:
            continue
        if part == "{P}":
            pieces.append("P")
        elif part.startswith("{") and part[1:-1] in params:
            pieces.append(part[1:-1])
        else:
            pieces.append('"' + part + '"')
    return " .. ".join(pieces)


def lua_prelude() -> str:
    """Lua source declaring ``P`` (the tenant prefix, set by each entry point from the
    root key) and defining one ``K.<name>(...)`` per key."""
    root_template = TEMPLATES["tenant"][0].replace("{P}", "")
    lines = [
        "-- generated from dispatchd/keys.py: the only place keys are spelled",
        "-- P is set from the root key by every entry point (L.enter); ROOT_SUFFIX is the",
        "-- length of the root key after the prefix",
        f"local P, ROOT_SUFFIX = nil, {len(root_template)}",
        "local K = {}",
    ]
    for name, (template, params) in TEMPLATES.items():
        args = ", ".join(params)
        lines.append(f"function K.{name}({args}) return {_lua_body(template, params)} end")
    return "\n".join(lines) + "\n"
