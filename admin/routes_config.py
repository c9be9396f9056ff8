"""Configuration resources: tenants, skill groups, teams, agents, routing rules.

Every write is one atomic, audited admin change (lua/admin/admin.lua); ``If-Match:
"<version>"`` on PUT/DELETE makes it conditional (412 when the resource moved on).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from admin import archives, views
from admin import schemas as s
from admin.service import Admin, Conflict, Unprocessable, if_match
from dispatchd import keys
from dispatchd.connect import is_cluster
from dispatchd.hours import service_windows, zone
from dispatchd.tickets import HORIZON_DAYS

Limit = Annotated[int, Parameter(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Parameter(description="the previous page's `next`")]
ADMIN = {"role": "admin"}


def _check_hours(hours: s.ServiceHours | None) -> None:
    if hours is None:
        return
    try:
        zone(hours.time_zone)
    except ValueError as exc:
        raise Unprocessable(detail=f"service_hours.time_zone: {exc}") from None


# ------------------------------------------------------------------------------ tenants

#: The tenant hash fields the API sets (lua/tickets/ticket_tick.lua reads the last).
TENANT_FIELDS = ("name", "retention_ms", "ticket_retention_ms")


class TenantController(Controller):
    path = "/v1/tenants"
    tags = ["tenants"]

    @staticmethod
    async def _out(admin: Admin, tenant: str) -> s.TenantOut:
        (name, retention, ticket_retention), ver = await views.with_version(
            admin.redis, tenant, "tenant", tenant,
            lambda p: p.hmget(keys.key("tenant", tenant), *TENANT_FIELDS))
        return s.TenantOut(id=tenant, name=views.text(name),
                           retention_ms=int(retention or 86_400_000),
                           ticket_retention_ms=int(ticket_retention or 7_776_000_000),
                           version=ver)

    @get("/", summary="List tenants")
    async def list_tenants(self, admin: Admin, request: Request[Any, Any, Any],
                           limit: Limit = 100, cursor: Cursor = None) -> s.TenantPage:
        members = [m.decode() for m in await admin.redis.smembers(keys.TENANTS_KEY)]
        allowed = request.user.tenants
        ids = [t for t in members if keys.ID_RE.match(t) and (allowed is None or t in allowed)]
        chosen, nxt = views.page(ids, cursor, limit)
        return s.TenantPage(items=[await self._out(admin, t) for t in chosen], next=nxt)

    @get("/{tenant:str}", summary="Get a tenant")
    async def get_tenant(self, admin: Admin, tenant: str) -> s.TenantOut:
        await admin.require_tenant(tenant)
        return await self._out(admin, tenant)

    async def _write(self, admin: Admin, request: Request[Any, Any, Any], action: str,
                     tenant: str, data: s.TenantIn, version: int | None) -> s.TenantOut:
        writes = [["hset", "tenant", "", "name", data.name],
                  ["hset", "tenant", "", "retention_ms", str(data.retention_ms)],
                  ["hset", "tenant", "", "ticket_retention_ms", str(data.ticket_retention_ms)]]
        if action == "create":
            writes.append(["hset", "tenant", "", "created", str(admin.clock())])
        await admin.change(tenant, request.user, action, "tenant", tenant, writes=writes,
                           snap=[["tenant", "", f] for f in TENANT_FIELDS],
                           # atomic: the SISMEMBER check in create_tenant can race
                           expect="absent" if action == "create" else None, version=version)
        await admin.redis.sadd(keys.TENANTS_KEY, tenant)
        return await self._out(admin, tenant)

    @post("/", summary="Create a tenant", opt={"role": "admin", "all_tenants": True})
    async def create_tenant(self, admin: Admin, request: Request[Any, Any, Any],
                            data: s.TenantCreate) -> s.TenantOut:
        """A token still naming this id (left by a deletion that did not finish, or made
        while it ran) loses it first: a tenant id's old tokens never reach a new tenant."""
        if await admin.redis.sismember(keys.TENANTS_KEY, data.id):
            raise Conflict(detail=f"tenant {data.id} exists")
        await admin.tokens.drop_tenant(data.id, by=request.user.actor, now_ms=admin.clock())
        return await self._write(admin, request, "create", data.id, data, None)

    @put("/{tenant:str}", summary="Update a tenant", opt=ADMIN)
    async def update_tenant(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                            data: s.TenantIn) -> s.TenantOut:
        await admin.require_tenant(tenant)
        return await self._write(admin, request, "update", tenant, data, if_match(request))

    @delete("/{tenant:str}", summary="Delete an empty tenant",
            opt={"role": "admin", "all_tenants": True})
    async def delete_tenant(self, admin: Admin, request: Request[Any, Any, Any],
                            tenant: str) -> None:
        """Refused (409) while the tenant has groups or agents. Every token naming it
        loses it (a token left with no tenant is revoked); its audit log is archived
        (``GET /v1/audit/archives``); its other keys are deleted except its gateway
        streams, which running daemons still read."""
        await admin.require_tenant(tenant)
        pipe = admin.redis.pipeline(transaction=False)
        pipe.scard(keys.key("groups", tenant))
        pipe.scard(keys.key("agents", tenant))
        pipe.hmget(keys.key("tenant", tenant), *TENANT_FIELDS)
        groups, agents, fields = await pipe.execute()
        if groups or agents:
            raise Conflict(detail=f"tenant {tenant} still has {groups} groups and {agents} "
                                  "agents; delete them first")
        now, who = admin.clock(), request.user
        await admin.redis.srem(keys.TENANTS_KEY, tenant)  # from here its routes answer 404
        await admin.tokens.redis.xadd(
            keys.GLOBAL_AUDIT_KEY,
            {"ts": now, "actor": who.actor, "action": "delete",
             "resource": "tenant", "id": tenant, "before": b"\xc0", "after": b"\xc0"},
            maxlen=100_000, approximate=True)
        await admin.tokens.drop_tenant(tenant, by=who.actor, now_ms=now)
        await archives.archive(admin, tenant, who, now, fields)
        keep = {keys.key(n, tenant).encode() for n in ("inbound", "outbound", "dead")}
        archived = (keys.prefix(tenant) + keys.AUDIT_ARCHIVE_INFIX).encode()
        # on a cluster, only the master owning the tenant's slot holds its keys
        node = ({"target_nodes": admin.redis.get_node_from_key(keys.root(tenant))}
                if is_cluster(admin.redis) else {})
        async for key in admin.redis.scan_iter(match=keys.prefix(tenant).replace(
                "{", "\\{").replace("}", "\\}") + "*", count=1000, **node):
            if key not in keep and not key.startswith(archived):
                await admin.redis.unlink(key)


# ------------------------------------------------------------------------------- groups


def group_command(gid: str, data: s.GroupIn,
                  now_ms: int) -> tuple[dict[str, Any], list[list[Any]]]:
    """The configure_group command, and the admin-only writes: the group's dimensions and
    service hours (``meta``), and those hours as UTC windows (``win``) for the ticket
    scripts, which cannot do time zones (docs/tickets.md "Service hours")."""
    cmd = {
        "op": "configure_group", "group": gid, "k": data.k, "m": data.m,
        "priority_unit_ms": data.priority_unit_ms,
        "tiers": [{"after_ms": t.after_ms, "groups": list(t.groups)} for t in data.tiers],
        "sticky_ms": data.sticky_ms, "preference_ms": data.preference_ms,
        "service_level_ms": data.service_level_ms,
        "service_level_target": data.service_level_target,
        **msgspec.to_builtins(data.timers),
        "ticket_reassign_ms": data.tickets.reassign_untouched_ms,
        "ticket_release_spread_ms": data.tickets.release_spread_ms,
        "record_decisions": data.record_decisions,
    }
    meta = {name: getattr(data, name) for name in views.GROUP_META}
    if data.service_hours is not None:
        meta["service_hours"] = msgspec.to_builtins(data.service_hours)
    # ServiceHours fits hours.HoursLike, but mypy holds a protocol's plain attributes
    # invariant (list[Shift] is not Sequence[ShiftLike]); as in views.group_out
    windows = service_windows(data.service_hours, now_ms, HORIZON_DAYS)  # type: ignore[arg-type]
    return cmd, [["hset", "group", gid, "meta", meta],
                 ["hdel", "group", gid, "win"] if windows is None
                 else ["hset", "group", gid, "win", windows]]


class GroupController(Controller):
    path = "/v1/tenants/{tenant:str}/groups"
    tags = ["groups"]

    @staticmethod
    async def _out(admin: Admin, tenant: str, gid: str) -> s.GroupOut:
        raw, ver = await views.with_version(admin.redis, tenant, "group", gid,
                                            lambda p: p.hgetall(keys.key("group", tenant, gid)))
        if not raw:
            raise NotFoundException(f"group {gid} not found")
        return views.group_out(gid, raw, ver, admin.clock())

    @get("/", summary="List skill groups")
    async def list_groups(self, admin: Admin, tenant: str, limit: Limit = 100,
                          cursor: Cursor = None) -> s.GroupPage:
        await admin.require_tenant(tenant)
        ids = [g.decode() for g in await admin.redis.smembers(keys.key("groups", tenant))]
        chosen, nxt = views.page(ids, cursor, limit)
        return s.GroupPage(items=[await self._out(admin, tenant, g) for g in chosen], next=nxt)

    @get("/{group:str}", summary="Get a skill group")
    async def get_group(self, admin: Admin, tenant: str, group: str) -> s.GroupOut:
        await admin.require_tenant(tenant)
        return await self._out(admin, tenant, group)

    async def _write(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     gid: str, data: s.GroupIn, create: bool) -> s.GroupOut:
        await admin.require_tenant(tenant)
        _check_hours(data.service_hours)
        cmd, writes = group_command(gid, data, admin.clock())
        await admin.change(
            tenant, request.user, "create" if create else "update", "group", gid, cmd=cmd,
            writes=writes, snap=[["group", gid, ""]], expect="absent" if create else "present",
            version=None if create else if_match(request))
        return await self._out(admin, tenant, gid)

    @post("/", summary="Create a skill group", opt=ADMIN)
    async def create_group(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           data: s.GroupCreate) -> s.GroupOut:
        return await self._write(admin, request, tenant, data.id, data, True)

    @put("/{group:str}", summary="Replace a skill group's settings", opt=ADMIN)
    async def update_group(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           group: str, data: s.GroupIn) -> s.GroupOut:
        """Applies at once. Queued customers keep their place (virtual arrival); when the
        overflow tiers change, each is re-evaluated against the new tiers."""
        return await self._write(admin, request, tenant, group, data, False)

    @delete("/{group:str}", summary="Delete a skill group", opt=ADMIN)
    async def delete_group(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           group: str) -> None:
        """409 while the group has open sessions, is another group's overflow tier, or a
        routing rule sends customers to it."""
        await admin.require_tenant(tenant)
        await admin.change(tenant, request.user, "delete", "group", group,
                           cmd={"op": "delete_group", "group": group},
                           snap=[["group", group, ""]], expect="present",
                           version=if_match(request))


# -------------------------------------------------------------------------------- teams


class TeamController(Controller):
    path = "/v1/tenants/{tenant:str}/teams"
    tags = ["teams"]

    @get("/", summary="List teams")
    async def list_teams(self, admin: Admin, tenant: str, limit: Limit = 100,
                         cursor: Cursor = None) -> s.TeamPage:
        await admin.require_tenant(tenant)
        ids = [t.decode() for t in await admin.redis.hkeys(keys.key("teams", tenant))]
        chosen, nxt = views.page(ids, cursor, limit)
        found = [await self._team(admin, tenant, t) for t in chosen]
        return s.TeamPage(items=[t for t in found if t is not None], next=nxt)  # None: deleted

    @staticmethod
    async def _team(admin: Admin, tenant: str, team: str) -> s.TeamOut | None:
        raw, ver = await views.with_version(admin.redis, tenant, "team", team,
                                            lambda p: p.hget(keys.key("teams", tenant), team))
        return None if raw is None else views.team_out(team, raw, ver)

    @get("/{team:str}", summary="Get a team")
    async def get_team(self, admin: Admin, tenant: str, team: str) -> s.TeamOut:
        await admin.require_tenant(tenant)
        out = await self._team(admin, tenant, team)
        if out is None:
            raise NotFoundException(f"team {team} not found")
        return out

    async def _write(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     tid: str, data: s.TeamIn, create: bool) -> s.TeamOut:
        await admin.require_tenant(tenant)
        value = {"name": data.name, "site": data.site, "manager": data.manager}
        await admin.change(
            tenant, request.user, "create" if create else "update", "team", tid,
            writes=[["hset", "teams", "", tid, value]], snap=[["teams", "", tid]],
            expect="absent" if create else "present",
            version=None if create else if_match(request))
        return await self.get_team.fn(self, admin, tenant, tid)  # type: ignore[no-any-return]

    @post("/", summary="Create a team", opt=ADMIN)
    async def create_team(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          data: s.TeamCreate) -> s.TeamOut:
        return await self._write(admin, request, tenant, data.id, data, True)

    @put("/{team:str}", summary="Update a team", opt=ADMIN)
    async def update_team(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          team: str, data: s.TeamIn) -> s.TeamOut:
        return await self._write(admin, request, tenant, team, data, False)

    @delete("/{team:str}", summary="Delete a team", opt=ADMIN)
    async def delete_team(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          team: str) -> None:
        """409 while an agent is in the team."""
        await admin.require_tenant(tenant)
        await admin.change(tenant, request.user, "delete", "team", team,
                           writes=[["hdel", "teams", "", team]], snap=[["teams", "", team]],
                           expect="present", team_unused=team, version=if_match(request))
