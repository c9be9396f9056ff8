"""Live views and supervisor actions: agents, queues, sessions, tickets.

Pages read through the admin API (as the signed-in token); every action posts to the API
route that does it (:mod:`admin.console.api`), so roles, tenant scope, validation and the
audit are the API's. A refused action shows the page again with the API's message next to
the field it names.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.response import Redirect

from admin.console.common import (
    SUPERVISOR,
    act,
    check_id,
    done,
    form,
    get_json,
    page,
)

Failed = dict[str, Any]


def failed(form_id: str, answer: Any) -> Failed:
    """What a refused form shows: the API's detail and its fields' messages."""
    return {"form": form_id, "detail": answer.detail, "fields": answer.field_errors()}


def _bool(values: dict[str, str], name: str) -> bool:
    return values.get(name) in ("on", "true", "1")


# ------------------------------------------------------------------------------ agents


async def _agents_page(request: Request[Any, Any, Any], tenant: str,
                       fail: Failed | None = None, status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/agents", limit=1000)
    if not answer.ok:
        return page(request, "error.html", status=answer.status, tenant=tenant,
                    status_code=answer.status, detail=answer.detail)
    return page(request, "agents.html", tenant=tenant, agents=answer.body["items"],
                failed=fail, status=status)


@get("/t/{tenant:str}/agents")
async def agents(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    return await _agents_page(request, tenant)


@post("/t/{tenant:str}/agents/{agent:str}/status", opt=SUPERVISOR)
async def agent_status(request: Request[Any, Any, Any], tenant: str,
                       agent: str) -> Response[Any]:
    values = await form(request)
    check_id(agent, "agent")
    answer = await act(request, "POST", f"/v1/tenants/{tenant}/agents/{agent}/status",
                       {"status": values.get("status", ""),
                        "handover": _bool(values, "handover")})
    if not answer.ok:
        return await _agents_page(request, tenant, failed(f"status-{agent}", answer),
                                  status=answer.status)
    return done(f"/console/t/{tenant}/agents",
                f"Agent {agent} is now {values.get('status')}.")


# ------------------------------------------------------------------------------ queues


@get("/t/{tenant:str}/queues")
async def queues(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/summary")
    if not answer.ok:
        return page(request, "error.html", status=answer.status, tenant=tenant,
                    status_code=answer.status, detail=answer.detail)
    return page(request, "queues.html", tenant=tenant, summary=answer.body)


async def _queue_page(request: Request[Any, Any, Any], tenant: str, group: str,
                      fail: Failed | None = None, status: int = 200) -> Response[str]:
    check_id(group, "group")
    answer = await get_json(request, f"/v1/tenants/{tenant}/groups/{group}/queue",
                            limit=200)
    if not answer.ok:
        return page(request, "error.html", status=answer.status, tenant=tenant,
                    status_code=answer.status, detail=answer.detail)
    people = await get_json(request, f"/v1/tenants/{tenant}/agents", limit=1000)
    groups = await get_json(request, f"/v1/tenants/{tenant}/groups", limit=1000)
    return page(request, "queue.html", tenant=tenant, group=group, queue=answer.body,
                agents=people.body["items"] if people.ok else [],
                groups=[g["id"] for g in groups.body["items"]] if groups.ok else [],
                failed=fail, status=status)


@get("/t/{tenant:str}/queues/{group:str}")
async def queue(request: Request[Any, Any, Any], tenant: str, group: str) -> Response[str]:
    return await _queue_page(request, tenant, group)


# ---------------------------------------------------------------------------- sessions


@get("/t/{tenant:str}/sessions")
async def sessions(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    wanted = (request.query_params.get("id") or "").strip()
    if wanted:
        return Redirect(f"/console/t/{tenant}/sessions/{quote(wanted, safe='')}",
                        status_code=303)
    return page(request, "sessions.html", tenant=tenant)


async def _session_page(request: Request[Any, Any, Any], tenant: str, session: str,
                        fail: Failed | None = None, status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/sessions/{session}")
    if not answer.ok:
        return page(request, "sessions.html", tenant=tenant, status=answer.status,
                    lookup=session, lookup_error=answer.detail)
    decisions = await get_json(request, f"/v1/tenants/{tenant}/sessions/{session}/decisions")
    people = await get_json(request, f"/v1/tenants/{tenant}/agents", limit=1000)
    groups = await get_json(request, f"/v1/tenants/{tenant}/groups", limit=1000)
    return page(request, "session.html", tenant=tenant, s=answer.body,
                decisions=decisions.body if decisions.ok else None,
                decisions_error=None if decisions.ok else decisions.detail,
                agents=people.body["items"] if people.ok else [],
                groups=[g["id"] for g in groups.body["items"]] if groups.ok else [],
                failed=fail, status=status)


@get("/t/{tenant:str}/sessions/{session:str}")
async def session_view(request: Request[Any, Any, Any], tenant: str,
                       session: str) -> Response[str]:
    check_id(session, "session")
    return await _session_page(request, tenant, session)


async def _session_action(request: Request[Any, Any, Any], tenant: str, session: str,
                          action: str, body: dict[str, Any]) -> Response[Any]:
    back = values_back(request)
    answer = await act(request, "POST", f"/v1/tenants/{tenant}/sessions/{session}/{action}",
                       body)
    if answer.ok:
        return done(back, f"Session {session}: {action} done.")
    fail = failed(f"{action}-{session}", answer)
    group = request.query_params.get("group")
    if back.startswith(f"/console/t/{tenant}/queues/") and group:
        return await _queue_page(request, tenant, check_id(group, "group"), fail,
                                 status=answer.status)
    return await _session_page(request, tenant, session, fail, status=answer.status)


def values_back(request: Request[Any, Any, Any]) -> str:
    """Where an action returns to: a console page named by ``back`` (else the session)."""
    back = request.query_params.get("back") or ""
    tenant = request.path_params["tenant"]
    if back.startswith(f"/console/t/{tenant}/") and "//" not in back:
        return back
    return f"/console/t/{tenant}/sessions/{request.path_params['session']}"


@post("/t/{tenant:str}/sessions/{session:str}/assign", opt=SUPERVISOR)
async def assign(request: Request[Any, Any, Any], tenant: str, session: str) -> Response[Any]:
    values = await form(request)
    check_id(session, "session")
    return await _session_action(request, tenant, session, "assign", {
        "agent": values.get("agent", ""), "force": _bool(values, "force")})


@post("/t/{tenant:str}/sessions/{session:str}/transfer", opt=SUPERVISOR)
async def transfer(request: Request[Any, Any, Any], tenant: str,
                   session: str) -> Response[Any]:
    values = await form(request)
    check_id(session, "session")
    body: dict[str, Any] = {"force": _bool(values, "force")}
    if values.get("to_group"):
        body["to_group"] = values["to_group"]
    if values.get("to_agent"):
        body["to_agent"] = values["to_agent"]
    return await _session_action(request, tenant, session, "transfer", body)


@post("/t/{tenant:str}/sessions/{session:str}/close", opt=SUPERVISOR)
async def close(request: Request[Any, Any, Any], tenant: str, session: str) -> Response[Any]:
    values = await form(request)
    check_id(session, "session")
    return await _session_action(request, tenant, session, "close", {
        "reason": values.get("reason") or "closed", "note": values.get("note", "")})


# ----------------------------------------------------------------------------- tickets

TICKET_STATES = ("held", "queued", "assigned", "in_progress")


@get("/t/{tenant:str}/tickets")
async def tickets(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    wanted = (request.query_params.get("id") or "").strip()
    if wanted:
        return Redirect(f"/console/t/{tenant}/tickets/{quote(wanted, safe='')}",
                        status_code=303)
    groups = await get_json(request, f"/v1/tenants/{tenant}/groups", limit=1000)
    if not groups.ok:
        return page(request, "error.html", status=groups.status, tenant=tenant,
                    status_code=groups.status, detail=groups.detail)
    rows = []
    for g in groups.body["items"]:
        counts: dict[str, Any] = {"group": g["id"]}
        for state in (*TICKET_STATES, "overdue"):
            query: dict[str, Any] = {"group": g["id"], "limit": 1000}
            if state == "overdue":
                query["overdue"] = "true"
            else:
                query["state"] = state
            found = await get_json(request, f"/v1/tenants/{tenant}/tickets", **query)
            counts[state] = len(found.body["items"]) if found.ok else None
        rows.append(counts)
    overdue = await get_json(request, f"/v1/tenants/{tenant}/tickets", overdue="true",
                             limit=50)
    return page(request, "tickets.html", tenant=tenant, rows=rows,
                overdue=overdue.body["items"] if overdue.ok else [])


async def _ticket_page(request: Request[Any, Any, Any], tenant: str, ticket: str,
                       fail: Failed | None = None, status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/tickets/{ticket}")
    if not answer.ok:
        return page(request, "error.html", status=answer.status, tenant=tenant,
                    status_code=answer.status, detail=answer.detail)
    people = await get_json(request, f"/v1/tenants/{tenant}/agents", limit=1000,
                            group=answer.body["group"])
    groups = await get_json(request, f"/v1/tenants/{tenant}/groups", limit=1000)
    return page(request, "ticket.html", tenant=tenant, t=answer.body,
                agents=people.body["items"] if people.ok else [],
                groups=[g["id"] for g in groups.body["items"]] if groups.ok else [],
                failed=fail, status=status)


@get("/t/{tenant:str}/tickets/{ticket:str}")
async def ticket_view(request: Request[Any, Any, Any], tenant: str,
                      ticket: str) -> Response[str]:
    check_id(ticket, "ticket")
    return await _ticket_page(request, tenant, ticket)


@post("/t/{tenant:str}/tickets/{ticket:str}/{action:str}", opt=SUPERVISOR)
async def ticket_action(request: Request[Any, Any, Any], tenant: str, ticket: str,
                        action: str) -> Response[Any]:
    values = await form(request)
    check_id(ticket, "ticket")
    bodies = {
        "assign": lambda: {"agent": values.get("agent", "")},
        "forward": lambda: {"to_group": values.get("to_group", ""),
                            "note": values.get("note", "")},
        "close": lambda: {"resolution": values.get("resolution", "")},
    }
    if action not in bodies:
        return await _ticket_page(request, tenant, ticket, status=404,
                                  fail={"form": "", "detail": f"no action {action}",
                                        "fields": {}})
    answer = await act(request, "POST", f"/v1/tenants/{tenant}/tickets/{ticket}/{action}",
                       bodies[action]())
    if not answer.ok:
        return await _ticket_page(request, tenant, ticket, failed(action, answer),
                                  status=answer.status)
    return done(f"/console/t/{tenant}/tickets/{ticket}", f"Ticket {ticket}: {action} done.")


HANDLERS = [agents, agent_status, queues, queue, sessions, session_view, assign, transfer,
            close, tickets, ticket_view, ticket_action]
