"""Configuration (admin role) and the audit log (supervisor role).

Edits go through the API's PUT with ``If-Match: "<version>"`` of the version the form
was rendered from, so an admin who saves over a change made meanwhile gets the API's 412
and the current values, never a silent overwrite. Forms name their inputs by the API's
field paths (``timers.queue_warning_ms``), so the API's error lands next to its field.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException

from admin.console import audit as readable
from admin.console.api import Answer
from admin.console.common import ADMIN, SUPERVISOR, act, check_id, done, form, get_json, page
from admin.schemas import Timers

TIMER_FIELDS = list(Timers.__struct_fields__)
GROUP_NUMBERS = ("k", "m", "priority_unit_ms", "sticky_ms", "preference_ms",
                 "service_level_ms", "service_level_target")
GROUP_TEXT = ("name", "business_line", "channel", "language", "scene", "service_mode",
              "ability_tier")


def _number(text: str) -> Any:
    """A form value as the JSON number it spells (else the text: the API says why)."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _version(values: dict[str, str]) -> int:
    """The version a form was rendered from (400 when the form does not carry one)."""
    raw = values.get("version", "").strip()
    if not raw.isdigit():
        raise HTTPException(status_code=400, detail="the form carries no version; reload "
                                                    "the page and try again")
    return int(raw)


def _conflict(answer: Answer, what: str) -> dict[str, Any]:
    detail = answer.detail
    if answer.status == 412:
        detail = (f"Someone else changed this {what} since you opened it ({detail}). "
                  "The form now shows the current values; make your change again.")
    return {"form": what, "detail": detail, "fields": answer.field_errors()}


def _error_page(request: Request[Any, Any, Any], tenant: str, answer: Answer) -> Response[str]:
    return page(request, "error.html", status=answer.status, tenant=tenant,
                status_code=answer.status, detail=answer.detail)


@get("/t/{tenant:str}/config", opt=ADMIN)
async def config(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    return await _config_page(request, tenant)


async def _config_page(request: Request[Any, Any, Any], tenant: str,
                       fail: dict[str, Any] | None = None,
                       values: dict[str, str] | None = None,
                       status: int = 200) -> Response[str]:
    """The lists and their create forms; ``fail``/``values``: a refused create's error
    and what was typed (``fail["form"]``: ``new group``, ``new agent``, ...)."""
    groups = await get_json(request, f"/v1/tenants/{tenant}/groups", limit=1000)
    agents = await get_json(request, f"/v1/tenants/{tenant}/agents", limit=1000)
    types = await get_json(request, f"/v1/tenants/{tenant}/ticket-types", limit=1000)
    for answer in (groups, agents, types):
        if not answer.ok:
            return _error_page(request, tenant, answer)
    typed = {fail["form"]: values or {}} if fail else {}
    return page(request, "config.html", tenant=tenant, groups=groups.body["items"],
                agents=agents.body["items"], types=types.body["items"], failed=fail,
                typed=typed, status=status)


# ----------------------------------------------------------------- create and delete


class _Kind:
    """A configuration resource the console creates and deletes: its console and API
    path segment, its name for people, and the fields its create form asks for (the
    API's required ones: everything else is set on the edit page that follows)."""

    def __init__(self, segment: str, what: str, numbers: tuple[str, ...] = (),
                 refusals: str = "") -> None:
        self.segment, self.what, self.numbers, self.refusals = (segment, what, numbers,
                                                                refusals)


GROUP = _Kind("groups", "group", refusals=(
    "The API refuses while the group has open sessions or open tickets, is another "
    "group's overflow tier, or a routing rule sends customers to it; its members lose "
    "that one ability."))
AGENT = _Kind("agents", "agent", ("capacity",), refusals=(
    "The API refuses while the agent has assigned or pre-closed sessions, customers "
    "parked with it, or open tickets. Tokens bound to the agent are revoked with it."))
TICKET_TYPE = _Kind("ticket-types", "ticket type", refusals=(
    "Its tickets stay as they are; no new ticket of the type can be created."))


async def _create(request: Request[Any, Any, Any], tenant: str, kind: _Kind) -> Response[Any]:
    """POST the create form's fields to the API; then its edit page, or the
    configuration page again with the API's error by its field (a taken id: by the id)."""
    values = await form(request)
    body: dict[str, Any] = {"id": values.get("id", "").strip()}
    body.update({name: _number(values.get(name, "")) for name in kind.numbers})
    answer = await act(request, "POST", f"/v1/tenants/{tenant}/{kind.segment}", body)
    if not answer.ok:
        fail = _conflict(answer, f"new {kind.what}")
        fail["fields"] = {k.split(".")[0].split("[")[0]: m for k, m in fail["fields"].items()}
        if isinstance(answer.body, dict) and answer.body.get("code") == "E_EXISTS":
            fail["fields"].setdefault("id", f"this id is taken ({answer.detail})")
        return await _config_page(request, tenant, fail, values, status=answer.status)
    made = answer.body
    return done(f"/console/t/{tenant}/config/{kind.segment}/{made['id']}",
                f"{kind.what.capitalize()} {made['id']} created (version {made['version']}).")


async def _delete_page(request: Request[Any, Any, Any], tenant: str, kind: _Kind, rid: str,
                       fail: dict[str, Any] | None = None,
                       status: int = 200) -> Response[str]:
    """The confirmation step: what is deleted, at which version, and what the API
    refuses; its form sends ``If-Match`` of the version shown."""
    answer = await get_json(request, f"/v1/tenants/{tenant}/{kind.segment}/{rid}")
    if not answer.ok:
        return _error_page(request, tenant, answer)
    r = answer.body
    facts: list[tuple[str, str]] = []
    if kind is AGENT:
        facts = [("Status", r["status"]), ("Load / capacity", f"{r['load']} / {r['capacity']}"),
                 ("Sessions", ", ".join(r["sessions"]) or "none")]
    elif r.get("name"):
        facts = [("Name", r["name"])]
    return page(request, "delete.html", tenant=tenant, kind=kind, rid=rid,
                version=r["version"], facts=facts, failed=fail, status=status)


async def _delete(request: Request[Any, Any, Any], tenant: str, kind: _Kind,
                  rid: str) -> Response[Any]:
    values = await form(request)
    version = _version(values)
    answer = await act(request, "DELETE", f"/v1/tenants/{tenant}/{kind.segment}/{rid}",
                       if_match=version)
    if not answer.ok:
        fail = _conflict(answer, "delete")
        if answer.status == 412:
            fail["detail"] = (f"Someone else changed this {kind.what} since you opened it "
                              f"({answer.detail}). Check it again; the page now shows the "
                              "current version.")
        return await _delete_page(request, tenant, kind, rid, fail, status=answer.status)
    return done(f"/console/t/{tenant}/config",
                f"{kind.what.capitalize()} {rid} deleted (it was version {version}).")


@post("/t/{tenant:str}/config/groups", opt=ADMIN)
async def group_create(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    return await _create(request, tenant, GROUP)


@get("/t/{tenant:str}/config/groups/{group:str}/delete", opt=ADMIN)
async def group_delete_page(request: Request[Any, Any, Any], tenant: str,
                            group: str) -> Response[str]:
    return await _delete_page(request, tenant, GROUP, check_id(group, "group"))


@post("/t/{tenant:str}/config/groups/{group:str}/delete", opt=ADMIN)
async def group_delete(request: Request[Any, Any, Any], tenant: str,
                       group: str) -> Response[Any]:
    return await _delete(request, tenant, GROUP, check_id(group, "group"))


@post("/t/{tenant:str}/config/agents", opt=ADMIN)
async def agent_create(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    return await _create(request, tenant, AGENT)


@get("/t/{tenant:str}/config/agents/{agent:str}/delete", opt=ADMIN)
async def agent_delete_page(request: Request[Any, Any, Any], tenant: str,
                            agent: str) -> Response[str]:
    return await _delete_page(request, tenant, AGENT, check_id(agent, "agent"))


@post("/t/{tenant:str}/config/agents/{agent:str}/delete", opt=ADMIN)
async def agent_delete(request: Request[Any, Any, Any], tenant: str,
                       agent: str) -> Response[Any]:
    return await _delete(request, tenant, AGENT, check_id(agent, "agent"))


@post("/t/{tenant:str}/config/ticket-types", opt=ADMIN)
async def ticket_type_create(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    return await _create(request, tenant, TICKET_TYPE)


@get("/t/{tenant:str}/config/ticket-types/{ticket_type:str}/delete", opt=ADMIN)
async def ticket_type_delete_page(request: Request[Any, Any, Any], tenant: str,
                                  ticket_type: str) -> Response[str]:
    return await _delete_page(request, tenant, TICKET_TYPE,
                              check_id(ticket_type, "ticket type"))


@post("/t/{tenant:str}/config/ticket-types/{ticket_type:str}/delete", opt=ADMIN)
async def ticket_type_delete(request: Request[Any, Any, Any], tenant: str,
                             ticket_type: str) -> Response[Any]:
    return await _delete(request, tenant, TICKET_TYPE, check_id(ticket_type, "ticket type"))


# ------------------------------------------------------------------------------ groups


async def _group_page(request: Request[Any, Any, Any], tenant: str, group: str,
                      fail: dict[str, Any] | None = None, values: dict[str, Any] | None = None,
                      status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/groups/{group}")
    if not answer.ok:
        return _error_page(request, tenant, answer)
    g = answer.body
    shown = values or _group_form(g)
    version = g["version"] if values is None else values.get("_version", g["version"])
    return page(request, "group.html", tenant=tenant, g=g, v=shown, version=version,
                timer_fields=TIMER_FIELDS, failed=fail, status=status)


def _group_form(g: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = {name: g.get(name, "") for name in (*GROUP_TEXT, *GROUP_NUMBERS)}
    v.update({f"timers.{t}": g["timers"].get(t, 0) for t in TIMER_FIELDS})
    v.update({f"tickets.{t}": x for t, x in g["tickets"].items()})
    v["tiers"] = "\n".join(f"{t['after_ms']} {' '.join(t['groups'])}" for t in g["tiers"])
    v["service_hours"] = json.dumps(g["service_hours"], indent=1) if g["service_hours"] else ""
    if "record_decisions" in g:
        v["record_decisions"] = g["record_decisions"]
    return v


def _group_body(values: dict[str, str], has_decisions: bool) -> tuple[dict[str, Any],
                                                                       dict[str, str]]:
    """The API body of a group form, and the fields the form itself could not read."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {name: values.get(name, "") for name in GROUP_TEXT}
    body.update({name: _number(values.get(name, "")) for name in GROUP_NUMBERS})
    body["timers"] = {t: _number(values.get(f"timers.{t}", "0")) for t in TIMER_FIELDS}
    body["tickets"] = {t: _number(values.get(f"tickets.{t}", "0"))
                       for t in ("reassign_untouched_ms", "release_spread_ms")}
    tiers = []
    for n, line in enumerate(x for x in values.get("tiers", "").splitlines() if x.strip()):
        after, *groups = line.split()
        tiers.append({"after_ms": _number(after), "groups": groups})
        if not groups:
            errors[f"tiers[{n}].groups"] = "name the groups after the wait: 30000 g2 g3"
    body["tiers"] = tiers
    hours = values.get("service_hours", "").strip()
    try:
        body["service_hours"] = json.loads(hours) if hours else None
    except json.JSONDecodeError as exc:
        errors["service_hours"] = f"not JSON: {exc}"
    if has_decisions:
        body["record_decisions"] = values.get("record_decisions") == "on"
    return body, errors


@get("/t/{tenant:str}/config/groups/{group:str}", opt=ADMIN)
async def group_edit(request: Request[Any, Any, Any], tenant: str, group: str) -> Response[str]:
    return await _group_page(request, tenant, check_id(group, "group"))


@post("/t/{tenant:str}/config/groups/{group:str}", opt=ADMIN)
async def group_save(request: Request[Any, Any, Any], tenant: str, group: str) -> Response[Any]:
    values = await form(request)
    check_id(group, "group")
    current = await get_json(request, f"/v1/tenants/{tenant}/groups/{group}")
    if not current.ok:
        return _error_page(request, tenant, current)
    body, errors = _group_body(values, "record_decisions" in current.body)
    version = _version(values)
    shown: dict[str, Any] = {**values, "_version": version,
                             "record_decisions": values.get("record_decisions") == "on"}
    if errors:
        return await _group_page(request, tenant, group, {
            "form": "group", "detail": "Some fields could not be read.", "fields": errors},
            shown, status=400)
    answer = await act(request, "PUT", f"/v1/tenants/{tenant}/groups/{group}", body,
                       if_match=version)
    if answer.status == 412:
        return await _group_page(request, tenant, group, _conflict(answer, "group"),
                                 status=412)
    if not answer.ok:
        return await _group_page(request, tenant, group, _conflict(answer, "group"), shown,
                                 status=answer.status)
    return done(f"/console/t/{tenant}/config/groups/{group}",
                f"Group {group} saved (version {answer.body['version']}).")


# ------------------------------------------------------------------------------ agents


async def _agent_page(request: Request[Any, Any, Any], tenant: str, agent: str,
                      fail: dict[str, Any] | None = None, values: dict[str, Any] | None = None,
                      status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/agents/{agent}")
    if not answer.ok:
        return _error_page(request, tenant, answer)
    a = answer.body
    shown = values or {
        "name": a["name"], "team": a["team"] or "", "capacity": a["capacity"],
        "ticket_limit": a["ticket_limit"],
        "abilities": "\n".join(f"{g} {x:g}" for g, x in sorted(a["abilities"].items()))}
    version = a["version"] if values is None else values.get("_version", a["version"])
    return page(request, "agent.html", tenant=tenant, a=a, v=shown, version=version,
                failed=fail, status=status)


@get("/t/{tenant:str}/config/agents/{agent:str}", opt=ADMIN)
async def agent_edit(request: Request[Any, Any, Any], tenant: str, agent: str) -> Response[str]:
    return await _agent_page(request, tenant, check_id(agent, "agent"))


@post("/t/{tenant:str}/config/agents/{agent:str}", opt=ADMIN)
async def agent_save(request: Request[Any, Any, Any], tenant: str, agent: str) -> Response[Any]:
    values = await form(request)
    check_id(agent, "agent")
    abilities: dict[str, Any] = {}
    for line in values.get("abilities", "").splitlines():
        if line.strip():
            group, _, ability = line.strip().partition(" ")
            abilities[group] = _number(ability or "1")
    body = {"name": values.get("name", ""), "team": values.get("team") or None,
            "capacity": _number(values.get("capacity", "")),
            "ticket_limit": _number(values.get("ticket_limit", "")), "abilities": abilities}
    version = _version(values)
    answer = await act(request, "PUT", f"/v1/tenants/{tenant}/agents/{agent}", body,
                       if_match=version)
    if answer.status == 412:
        return await _agent_page(request, tenant, agent, _conflict(answer, "agent"),
                                 status=412)
    if not answer.ok:
        fail = _conflict(answer, "agent")
        fail["fields"] = {k.split(".")[0]: m for k, m in fail["fields"].items()}
        return await _agent_page(request, tenant, agent, fail,
                                 {**values, "_version": version}, status=answer.status)
    return done(f"/console/t/{tenant}/config/agents/{agent}",
                f"Agent {agent} saved (version {answer.body['version']}).")


# ------------------------------------------------------------------------------- rules


async def _rules_page(request: Request[Any, Any, Any], tenant: str,
                      fail: dict[str, Any] | None = None, status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/rules")
    if not answer.ok:
        return _error_page(request, tenant, answer)
    return page(request, "rules.html", tenant=tenant, rules=answer.body["rules"],
                version=answer.body["version"], failed=fail, status=status)


@get("/t/{tenant:str}/config/rules", opt=ADMIN)
async def rules(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    return await _rules_page(request, tenant)


def _rule_in(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("name", "group", "match", "priority", "preferred_agent",
                              "blocked_agents")}


@post("/t/{tenant:str}/config/rules", opt=ADMIN)
async def rules_save(request: Request[Any, Any, Any], tenant: str) -> Response[Any]:
    """The list as edited: move a rule up or down, delete it, or add one at a place; the
    whole list is PUT with the version the page showed."""
    values = await form(request)
    version = _version(values)
    current = await get_json(request, f"/v1/tenants/{tenant}/rules")
    if not current.ok:
        return _error_page(request, tenant, current)
    items = [_rule_in(r) for r in current.body["rules"]]
    op, index = values.get("op", ""), int(values.get("index") or 0)
    fields: dict[str, str] = {}
    if op in ("up", "down") and 0 <= index < len(items):
        other = index - 1 if op == "up" else index + 1
        if 0 <= other < len(items):
            items[index], items[other] = items[other], items[index]
    elif op == "delete" and 0 <= index < len(items):
        del items[index]
    elif op == "add":
        try:
            match = json.loads(values.get("match") or "{}")
        except json.JSONDecodeError as exc:
            match, fields["match"] = {}, f"not JSON: {exc}"
        rule = {"name": values.get("name", ""), "group": values.get("group", ""),
                "match": match, "priority": _number(values.get("priority") or "0"),
                "preferred_agent": values.get("preferred_agent") or None,
                "blocked_agents": values.get("blocked_agents", "").split()}
        position = _number(values.get("position") or str(len(items) + 1))
        at = position - 1 if isinstance(position, int) else len(items)
        items.insert(max(0, min(at, len(items))), rule)
    if fields:
        return await _rules_page(request, tenant, {
            "form": "add", "detail": "The rule could not be read.", "fields": fields}, 400)
    answer = await act(request, "PUT", f"/v1/tenants/{tenant}/rules", {"rules": items},
                       if_match=version)
    if not answer.ok:
        fail = _conflict(answer, "rules")
        fail["form"] = "add" if op == "add" else "rules"
        fail["fields"] = {k.split(".", 1)[-1] if k.startswith("rules[") else k: m
                          for k, m in fail["fields"].items()}
        return await _rules_page(request, tenant, fail, status=answer.status)
    return done(f"/console/t/{tenant}/config/rules", f"Rules saved (version "
                f"{answer.body['version']}).")


# ------------------------------------------------------------------------ ticket types


@get("/t/{tenant:str}/config/ticket-types/{ticket_type:str}", opt=ADMIN)
async def ticket_type_edit(request: Request[Any, Any, Any], tenant: str,
                           ticket_type: str) -> Response[str]:
    return await _type_page(request, tenant, check_id(ticket_type, "ticket type"))


async def _type_page(request: Request[Any, Any, Any], tenant: str, tid: str,
                     fail: dict[str, Any] | None = None, values: dict[str, Any] | None = None,
                     status: int = 200) -> Response[str]:
    answer = await get_json(request, f"/v1/tenants/{tenant}/ticket-types/{tid}")
    if not answer.ok:
        return _error_page(request, tenant, answer)
    t = answer.body
    shown = values or {"name": t["name"], "first_response_ms": t["first_response_ms"],
                       "resolution_ms": t["resolution_ms"],
                       "fields": json.dumps(t["fields"], indent=1)}
    version = t["version"] if values is None else values.get("_version", t["version"])
    return page(request, "ticket_type.html", tenant=tenant, t=t, v=shown, version=version,
                failed=fail, status=status)


@post("/t/{tenant:str}/config/ticket-types/{ticket_type:str}", opt=ADMIN)
async def ticket_type_save(request: Request[Any, Any, Any], tenant: str,
                           ticket_type: str) -> Response[Any]:
    values = await form(request)
    check_id(ticket_type, "ticket type")
    version = _version(values)
    try:
        fields = json.loads(values.get("fields") or "[]")
    except json.JSONDecodeError as exc:
        return await _type_page(request, tenant, ticket_type, {
            "form": "ticket type", "detail": "The fields could not be read.",
            "fields": {"fields": f"not JSON: {exc}"}}, {**values, "_version": version}, 400)
    body = {"name": values.get("name", ""), "fields": fields,
            "first_response_ms": _number(values.get("first_response_ms", "0")),
            "resolution_ms": _number(values.get("resolution_ms", "0"))}
    answer = await act(request, "PUT", f"/v1/tenants/{tenant}/ticket-types/{ticket_type}",
                       body, if_match=version)
    if answer.status == 412:
        return await _type_page(request, tenant, ticket_type,
                                _conflict(answer, "ticket type"), status=412)
    if not answer.ok:
        fail = _conflict(answer, "ticket type")
        fail["fields"] = {("fields" if k.startswith("fields") else k): m
                          for k, m in fail["fields"].items()}
        return await _type_page(request, tenant, ticket_type, fail,
                                {**values, "_version": version}, status=answer.status)
    return done(f"/console/t/{tenant}/config/ticket-types/{ticket_type}",
                f"Ticket type {ticket_type} saved (version {answer.body['version']}).")


# ------------------------------------------------------------------------------- audit


@get("/t/{tenant:str}/audit", opt=SUPERVISOR)
async def audit_log(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    query = {k: request.query_params.get(k) or None
             for k in ("actor", "action", "resource", "resource_id", "before")}
    answer = await get_json(request, f"/v1/tenants/{tenant}/audit", limit=50, **query)
    if not answer.ok:
        return _error_page(request, tenant, answer)
    entries = [{**e, "changes": readable.changes(e.get("before"), e.get("after"))}
               for e in answer.body["items"]]
    return page(request, "audit.html", tenant=tenant, entries=entries,
                next=answer.body.get("next"), query=query)


HANDLERS = [config, group_edit, group_save, agent_edit, agent_save, rules, rules_save,
            ticket_type_edit, ticket_type_save, audit_log,
            group_create, group_delete_page, group_delete, agent_create, agent_delete_page,
            agent_delete, ticket_type_create, ticket_type_delete_page, ticket_type_delete]
