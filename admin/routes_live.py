"""Live views (queues, sessions, tenant summary) and supervisor actions on sessions."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from admin import schemas as s
from admin import views
from admin.service import ActionResult, Admin
from dispatchd import keys

SUPERVISOR = {"role": "supervisor"}


class LiveController(Controller):
    path = "/v1/tenants/{tenant:str}"
    tags = ["live"]

    @get("/groups/{group:str}/queue", summary="A group's queue in service order")
    async def queue(
        self, admin: Admin, tenant: str, group: str,
        offset: Annotated[int, Parameter(ge=0)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> s.QueueOut:
        """Each waiting customer with its position, priority, real and virtual wait, and
        open overflow tier; the first is served next."""
        await admin.require_tenant(tenant)
        if not await admin.redis.exists(keys.key("group", tenant, group)):
            raise NotFoundException(f"group {group} not found")
        return await views.queue_out(admin.redis, tenant, group, offset, limit, admin.clock())

    @get("/summary", summary="The tenant at a glance")
    async def summary(self, admin: Admin, tenant: str) -> s.SummaryOut:
        """Per group: queued, open sessions, the next customer's virtual wait, candidates,
        members; agents by status; load and capacity of online agents; stream backlog and
        dead letters."""
        await admin.require_tenant(tenant)
        return await views.summary_out(admin.redis, tenant, admin.clock())

    @get("/sessions/{session:str}", summary="A session with its history")
    async def get_session(self, admin: Admin, tenant: str, session: str) -> s.SessionOut:
        """Closed sessions stay visible for the tenant's retention_ms."""
        await admin.require_tenant(tenant)
        view = await admin.engine.session(tenant, session)
        if view is None:
            raise NotFoundException(f"session {session} not found")
        rows = await admin.engine.session_history(tenant, session)
        return s.SessionOut(
            id=session, state=view.state, phase=view.phase, group=view.group,
            priority=view.priority, arrival_ms=view.arrival_ms, customer=view.customer,
            agent=view.agent, open_tier=view.open_tier, parked_with=view.parked_with,
            blocked_agents=view.blocked_agents, history=views.history(rows),
        )

    @get("/sessions/{session:str}/decisions", summary="Why the session went to its agents")
    async def decisions(self, admin: Admin, tenant: str, session: str) -> s.DecisionsOut:
        """One decision per assignment, oldest first, read from the session's history
        (``decision`` of its ``assigned`` entries): the candidates the router compared
        with their score terms, the overflow tier, the routing rule and the preferred
        agent (docs/routing.md "Why this agent?"). Recorded while the session's group
        has ``record_decisions``; kept as long as the history."""
        await admin.require_tenant(tenant)
        view = await admin.engine.session(tenant, session)
        if view is None:
            raise NotFoundException(f"session {session} not found")
        rows = await admin.engine.session_history(tenant, session)
        conf = await admin.redis.hget(keys.key("group", tenant, view.group), "timers")
        return s.DecisionsOut(session=session, record_decisions=views.records_decisions(conf),
                              decisions=views.decisions(rows))

    async def _act(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                   session: str, action: str, cmd: dict[str, Any],
                   state: str | None = None) -> s.ActionOut:
        await admin.require_tenant(tenant)
        result = await admin.change(tenant, request.user, action, "session", session, cmd=cmd,
                                    snap=[["session", session, ""]], expect="present",
                                    state=state)
        return ActionResult.out(result)

    @post("/sessions/{session:str}/assign", summary="Assign a queued customer to an agent",
          opt=SUPERVISOR, status_code=200)
    async def assign(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     session: str, data: s.AssignIn) -> s.ActionOut:
        """By default even over the agent's capacity (``force``); audited. 409 unless the
        session is queued (or parked)."""
        return await self._act(admin, request, tenant, session, "assign", {
            "op": "transfer_session", "session": session, "to_agent": data.agent,
            "force": data.force}, state="queued")

    @post("/sessions/{session:str}/transfer", summary="Transfer a session",
          opt=SUPERVISOR, status_code=200)
    async def transfer(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                       session: str, data: s.TransferIn) -> s.ActionOut:
        """To a group (re-routed there, keeping its wait) or to an agent (``force``: even
        over capacity). Exactly one of ``to_group`` and ``to_agent``."""
        cmd: dict[str, Any] = {"op": "transfer_session", "session": session, "force": data.force}
        if data.to_group is not None:
            cmd["to_group"] = data.to_group
        if data.to_agent is not None:
            cmd["to_agent"] = data.to_agent
        return await self._act(admin, request, tenant, session, "transfer", cmd)

    @post("/sessions/{session:str}/close", summary="Close a session",
          opt=SUPERVISOR, status_code=200)
    async def close(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                    session: str, data: s.CloseIn) -> s.ActionOut:
        """Queued: abandoned; assigned or pre-closed: released. Reason ``callback`` also
        emits callback_requested with the note."""
        return await self._act(admin, request, tenant, session, "close", {
            "op": "close_session", "session": session, "reason": data.reason,
            "note": data.note})
