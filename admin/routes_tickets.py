"""Tickets (docs/tickets.md): ticket types, tickets and their supervision query, and the
actions of handlers (role agent) and supervisors.

Every write is one atomic, audited admin change (lua/admin/admin.lua) whose routing
command is a ticket transition (lua/tickets/). The ticket in the path is checked first
(404); the transition's own refusals then map to 409/422 (admin/service.py ``STATUS``).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from litestar.params import Parameter, QueryParameter

from admin import ticket_schemas as ts
from admin import views
from admin.auth import check_acting_as, has_role
from admin.routes_config import ADMIN, Cursor, Limit
from admin.service import Admin, Unprocessable, actor_name, events_json, if_match, within_bytes
from dispatchd import errors, keys, tickets

AGENT = {"role": "agent"}
SUPERVISOR = {"role": "supervisor"}
IdFilter = Annotated[str | None, Parameter(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
TicketCursor = Annotated[str | None, Parameter(
    pattern=r"^-?[0-9]{1,20}:[A-Za-z0-9_.@-]{1,64}$", description="the previous page's `next`")]


# --------------------------------------------------------------------------- ticket types


def _type_command(tid: str, data: ts.TicketTypeIn) -> dict[str, Any]:
    """The configure_ticket_type command; 422 for what the schema cannot say (unique
    field names, text limits in bytes)."""
    within_bytes(data.name, 200, "name")
    seen: set[str] = set()
    for f in data.fields:
        if f.name in seen:
            raise Unprocessable(detail=f"fields: duplicate name {f.name}")
        seen.add(f.name)
        if isinstance(f, ts.EnumField):
            for value in f.values:
                within_bytes(value, 200, f"fields.{f.name}.values")
    return {"op": "configure_ticket_type", "type": tid, "name": data.name,
            "fields": [msgspec.to_builtins(f) for f in data.fields],
            "first_response_ms": data.first_response_ms, "resolution_ms": data.resolution_ms}


class TicketTypeController(Controller):
    path = "/v1/tenants/{tenant:str}/ticket-types"
    tags = ["tickets"]

    @staticmethod
    async def _type(admin: Admin, tenant: str, tid: str) -> ts.TicketTypeOut | None:
        raw, ver = await views.with_version(
            admin.redis, tenant, "ticket_type", tid,
            lambda p: p.hget(keys.key("ticket_types", tenant), tid))
        return None if raw is None else views.ticket_type_out(tid, raw, ver)

    @get("/", summary="List ticket types")
    async def list_types(self, admin: Admin, tenant: str, limit: Limit = 100,
                         cursor: Cursor = None) -> ts.TicketTypePage:
        await admin.require_tenant(tenant)
        ids = [t.decode() for t in await admin.redis.hkeys(keys.key("ticket_types", tenant))]
        chosen, nxt = views.page(ids, cursor, limit)
        found = [await self._type(admin, tenant, t) for t in chosen]
        return ts.TicketTypePage(items=[t for t in found if t is not None], next=nxt)

    @get("/{ticket_type:str}", summary="Get a ticket type")
    async def get_type(self, admin: Admin, tenant: str, ticket_type: str) -> ts.TicketTypeOut:
        await admin.require_tenant(tenant)
        out = await self._type(admin, tenant, ticket_type)
        if out is None:
            raise NotFoundException(f"ticket type {ticket_type} not found")
        return out

    async def _write(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     tid: str, data: ts.TicketTypeIn, create: bool) -> ts.TicketTypeOut:
        await admin.require_tenant(tenant)
        await admin.change(
            tenant, request.user, "create" if create else "update", "ticket_type", tid,
            cmd=_type_command(tid, data), snap=[["ticket_types", "", tid]],
            expect="absent" if create else "present",
            version=None if create else if_match(request))
        return await self.get_type.fn(self, admin, tenant, tid)  # type: ignore[no-any-return]

    @post("/", summary="Create a ticket type", opt=ADMIN)
    async def create_type(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          data: ts.TicketTypeCreate) -> ts.TicketTypeOut:
        return await self._write(admin, request, tenant, data.id, data, True)

    @put("/{ticket_type:str}", summary="Replace a ticket type", opt=ADMIN)
    async def update_type(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          ticket_type: str, data: ts.TicketTypeIn) -> ts.TicketTypeOut:
        """Tickets already created keep the fields they were created with."""
        return await self._write(admin, request, tenant, ticket_type, data, False)

    @delete("/{ticket_type:str}", summary="Delete a ticket type", opt=ADMIN)
    async def delete_type(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          ticket_type: str) -> None:
        """Its tickets stay as they are; no new ticket of the type can be created."""
        await admin.require_tenant(tenant)
        await admin.change(tenant, request.user, "delete", "ticket_type", ticket_type,
                           cmd={"op": "delete_ticket_type", "type": ticket_type},
                           snap=[["ticket_types", "", ticket_type]], expect="present",
                           version=if_match(request))


# -------------------------------------------------------------------------------- tickets


def _create_command(tid: str, data: ts.TicketCreate, by: str) -> dict[str, Any]:
    """The create_ticket command; 422 for what the schema cannot say."""
    within_bytes(data.title, 500, "title")
    within_bytes(by, 256, "created_by")
    if data.order_owner is not None and data.order_id is None:
        raise Unprocessable(detail="order_owner needs order_id")
    cmd: dict[str, Any] = {"op": "create_ticket", "ticket": tid, "type": data.type,
                           "group": data.group, "by": by, "fields": dict(data.fields),
                           "title": data.title, "priority": data.priority}
    for name in ("order_id", "order_owner"):
        if getattr(data, name) is not None:
            cmd[name] = getattr(data, name)
    return cmd


def _acting(request: Request[Any, Any, Any], agent: str | None) -> dict[str, str]:
    """Who a forward or close acts as: the handler ``agent``, or without one the caller
    as a supervisor (403 for a weaker role)."""
    check_acting_as(request.user, agent)
    if agent is not None:
        return {"agent": agent}
    if not has_role(request.user, "supervisor"):
        raise PermissionDeniedException(
            f"role supervisor required without `agent`, token has {request.user.role}")
    return {"supervisor": actor_name(request.user)}


class TicketController(Controller):
    path = "/v1/tenants/{tenant:str}/tickets"
    tags = ["tickets"]

    @staticmethod
    async def _ticket(admin: Admin, tenant: str, tid: str) -> ts.TicketOut:
        view = await tickets.get_ticket(admin.redis, tenant, tid)
        if view is None:
            raise errors.TicketUnknown(tid)
        return (await views.tickets_out(admin.redis, tenant, [view]))[0]

    async def _act(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                   tid: str, action: str, cmd: dict[str, Any],
                   expect: str = "present") -> ts.TicketActionOut:
        """One audited change of ticket ``tid``; the ticket itself is checked first
        (``expect``: present, 404 otherwise; absent, 409 otherwise)."""
        await admin.require_tenant(tenant)
        try:
            result = await admin.change(tenant, request.user, action, "ticket", tid, cmd=cmd,
                                        snap=[["ticket", tid, ""]], expect=expect)
        except errors.NotFound:  # the ticket in the path, as docs/tickets.md names it
            raise errors.TicketUnknown(tid) from None
        return ts.TicketActionOut(ticket=await self._ticket(admin, tenant, tid),
                                 events=events_json(result), audit=result.audit)

    @post("/", summary="Create a ticket", opt=AGENT)
    async def create_ticket(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                            data: ts.TicketCreate) -> ts.TicketActionOut:
        """Checked against its type's template (422 naming the field); it then enters its
        group: held outside the group's service hours, else assigned to an eligible
        member, else queued."""
        tid = data.id or "tk-" + secrets.token_hex(6)
        check_acting_as(request.user, data.created_by)
        by = data.created_by or request.user.agent or actor_name(request.user)
        cmd = _create_command(tid, data, by)
        if data.order_owner is not None and not await admin.redis.sismember(
                keys.key("agents", tenant), data.order_owner):
            await admin.require_tenant(tenant)  # an unknown tenant is 404 first
            raise errors.AgentUnknown(data.order_owner)  # 422, as any unknown id in a body
        return await self._act(admin, request, tenant, tid, "create", cmd, expect="absent")

    @get("/", summary="Query tickets (supervision)")
    async def list_tickets(
        self, admin: Admin, tenant: str, group: IdFilter = None, handler: IdFilter = None,
        handled_by: IdFilter = None, order_id: IdFilter = None,
        ticket_state: Annotated[ts.TicketState | None, QueryParameter(name="state")] = None,
        overdue: bool | None = None,
        limit: Limit = 100, cursor: TicketCursor = None,
    ) -> ts.TicketPage:
        """Every given condition must hold: ``group`` (its group now), ``handler`` (who
        holds it now), ``handled_by`` (anyone it was ever assigned to), ``order_id``,
        ``state``, ``overdue``. Oldest first (``overdue``: by when it became overdue;
        ``handled_by``: by when that agent last got it). A page may hold fewer than
        ``limit`` tickets while ``next`` is not null."""
        await admin.require_tenant(tenant)
        query = tickets.Query(group=group, handler=handler, handled_by=handled_by,
                              order_id=order_id, state=ticket_state, overdue=overdue)
        try:
            found, nxt = await tickets.find(admin.redis, tenant, query, limit=limit,
                                            cursor=cursor)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return ts.TicketPage(items=await views.tickets_out(admin.redis, tenant, found),
                            next=nxt)

    @get("/{ticket:str}", summary="Get a ticket with its hops")
    async def get_ticket(self, admin: Admin, tenant: str, ticket: str) -> ts.TicketOut:
        await admin.require_tenant(tenant)
        return await self._ticket(admin, tenant, ticket)

    @get("/{ticket:str}/history", summary="A ticket's events, oldest first")
    async def history(self, admin: Admin, tenant: str, ticket: str) -> ts.TicketHistoryOut:
        """Every event of the ticket as published on the outbound stream, until the ticket
        is purged (the tenant's ticket_retention_ms after it closed)."""
        await admin.require_tenant(tenant)
        if not await admin.redis.exists(keys.key("ticket", tenant, ticket)):
            raise errors.TicketUnknown(ticket)
        return ts.TicketHistoryOut(
            events=await tickets.get_history(admin.redis, tenant, ticket))

    @post("/{ticket:str}/respond", summary="Work on a ticket (its handler)", opt=AGENT,
          status_code=200)
    async def respond(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                      ticket: str, data: ts.TicketRespondIn) -> ts.TicketActionOut:
        """The first response moves it to in_progress and stops its first-response clock.
        409 unless ``agent`` is its handler."""
        within_bytes(data.note, 4000, "note")
        check_acting_as(request.user, data.agent)
        return await self._act(admin, request, tenant, ticket, "respond", {
            "op": "respond_ticket", "ticket": ticket, "agent": data.agent, "note": data.note})

    @post("/{ticket:str}/forward", summary="Forward a ticket to another group", opt=AGENT,
          status_code=200)
    async def forward(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                      ticket: str, data: ts.TicketForwardIn) -> ts.TicketActionOut:
        """With ``agent``: by its handler (409 for anyone else). Without: by the caller as a
        supervisor (role supervisor). The hop is recorded; its SLA clock runs on."""
        within_bytes(data.note, 4000, "note")
        cmd = {"op": "forward_ticket", "ticket": ticket, "to_group": data.to_group,
               "note": data.note, **_acting(request, data.agent)}
        return await self._act(admin, request, tenant, ticket, "forward", cmd)

    @post("/{ticket:str}/close", summary="Close a ticket with its resolution", opt=AGENT,
          status_code=200)
    async def close(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                    ticket: str, data: ts.TicketCloseIn) -> ts.TicketActionOut:
        """With ``agent``: by its handler (409 for anyone else). Without: by the caller as a
        supervisor (role supervisor), any open ticket, also one still waiting."""
        within_bytes(data.resolution, 4000, "resolution")
        cmd = {"op": "close_ticket", "ticket": ticket, "resolution": data.resolution,
               **_acting(request, data.agent)}
        return await self._act(admin, request, tenant, ticket, "close", cmd)

    @post("/{ticket:str}/assign", summary="Assign a ticket by hand (supervisor)",
          opt=SUPERVISOR, status_code=200)
    async def assign(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     ticket: str, data: ts.TicketAssignIn) -> ts.TicketActionOut:
        """To a member of its group, whatever the member's status and ticket limit and the
        group's service hours (422 for an agent outside the group)."""
        return await self._act(admin, request, tenant, ticket, "assign", {
            "op": "assign_ticket", "ticket": ticket, "agent": data.agent,
            "supervisor": actor_name(request.user)})
