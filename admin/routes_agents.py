"""Agents (configuration and live state) and routing rules."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.exceptions import NotFoundException

from admin import schemas as s
from admin import views
from admin.routes_config import ADMIN, Cursor, Limit
from admin.service import (
    ActionResult,
    Admin,
    Conflict,
    Unprocessable,
    etag,
    if_match,
    within_bytes,
)
from dispatchd import keys
from dispatchd.errors import VersionMismatch


def _agent_snap(aid: str) -> list[list[str]]:
    return [["agent", aid, ""], ["skills", aid, ""]]


class AgentController(Controller):
    path = "/v1/tenants/{tenant:str}/agents"
    tags = ["agents"]

    @get("/", summary="List agents with their live state")
    async def list_agents(self, admin: Admin, tenant: str, limit: Limit = 100,
                          cursor: Cursor = None, status: s.Status | None = None,
                          group: str | None = None) -> s.AgentPage:
        """Filters: ``status``; ``group`` (members of that group)."""
        await admin.require_tenant(tenant)
        if group is not None:
            ids = [a.decode() for a in await admin.redis.hkeys(keys.key("members", tenant, group))]
        else:
            ids = [a.decode() for a in await admin.redis.smembers(keys.key("agents", tenant))]
        now = admin.clock()
        if status is None:
            chosen, nxt = views.page(ids, cursor, limit)
            return s.AgentPage(items=await views.agents_out(admin.redis, tenant, chosen, now),
                               next=nxt)
        every = await views.agents_out(admin.redis, tenant, sorted(ids), now)
        matching = [a for a in every if a.status == status]
        chosen, nxt = views.page([a.id for a in matching], cursor, limit)
        keep = set(chosen)
        return s.AgentPage(items=[a for a in matching if a.id in keep], next=nxt)

    @get("/{agent:str}", summary="Get an agent with its live state")
    async def get_agent(self, admin: Admin, tenant: str, agent: str) -> s.AgentOut:
        """Status, load, pre-closed sessions, parked customers, and per group its ability
        and readiness score now."""
        await admin.require_tenant(tenant)
        found = await views.agents_out(admin.redis, tenant, [agent], admin.clock())
        if not found:
            raise NotFoundException(f"agent {agent} not found")
        return found[0]

    async def _write(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                     aid: str, data: s.AgentIn, create: bool) -> s.AgentOut:
        await admin.require_tenant(tenant)
        cmd = {"op": "configure_agent", "agent": aid, "capacity": data.capacity,
               "abilities": dict(data.abilities), "team": data.team or "",
               "ticket_limit": data.ticket_limit}
        await admin.change(
            tenant, request.user, "create" if create else "update", "agent", aid, cmd=cmd,
            writes=[["hset", "agent", aid, "name", data.name]], snap=_agent_snap(aid),
            expect="absent" if create else "present", team=data.team,
            version=None if create else if_match(request))
        return await self.get_agent.fn(self, admin, tenant, aid)  # type: ignore[no-any-return]

    @post("/", summary="Create an agent (offline)", opt=ADMIN)
    async def create_agent(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           data: s.AgentCreate) -> s.AgentOut:
        return await self._write(admin, request, tenant, data.id, data, True)

    @put("/{agent:str}", summary="Replace an agent's capacity, abilities, team, name",
         opt=ADMIN)
    async def update_agent(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           agent: str, data: s.AgentIn) -> s.AgentOut:
        """Applies at once; an agent with new free capacity takes waiting customers."""
        return await self._write(admin, request, tenant, agent, data, False)

    @delete("/{agent:str}", summary="Delete an agent", opt=ADMIN)
    async def delete_agent(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                           agent: str) -> None:
        """409 while it holds sessions or parked customers. Tokens bound to the agent
        are revoked with it."""
        await admin.require_tenant(tenant)
        await admin.change(tenant, request.user, "delete", "agent", agent,
                           cmd={"op": "delete_agent", "agent": agent},
                           snap=_agent_snap(agent), expect="present",
                           version=if_match(request))
        await admin.tokens.drop_agent(tenant, agent, by=request.user.actor,
                                      now_ms=admin.clock())

    @post("/{agent:str}/status", summary="Set an agent's status (supervisor)",
          opt={"role": "supervisor"}, status_code=200)
    async def set_status(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                         agent: str, data: s.StatusIn) -> s.ActionOut:
        """Force an agent online, away or offline; with ``handover`` its assigned sessions
        go to other agents (or back to the queue)."""
        await admin.require_tenant(tenant)
        result = await admin.change(
            tenant, request.user, "status", "agent", agent,
            cmd={"op": "set_agent_status", "agent": agent, "status": data.status,
                 "handover": data.handover},
            snap=_agent_snap(agent), expect="present")
        return ActionResult.out(result)


# -------------------------------------------------------------------------------- rules

RULES_SNAP = [["tenant", "", "rules"]]


class RuleController(Controller):
    path = "/v1/tenants/{tenant:str}/rules"
    tags = ["rules"]

    @staticmethod
    async def _current(admin: Admin, tenant: str) -> tuple[list[dict[str, Any]], int]:
        # read together, or _edit could apply an edit of older rules with a newer version
        # and drop a concurrent edit
        raw, ver = await views.with_version(admin.redis, tenant, "rules", "all",
                                            lambda p: p.hget(keys.key("tenant", tenant), "rules"))
        return views.rules_stored(raw), ver

    @get("/", summary="The routing rules, in order (the first match decides)")
    async def list_rules(self, admin: Admin, tenant: str) -> s.RulesOut:
        await admin.require_tenant(tenant)
        rules, ver = await self._current(admin, tenant)
        return s.RulesOut(rules=[views.rule_out(r) for r in rules], version=ver)

    async def _save(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                    action: str, rules: list[dict[str, Any]], version: int | None) -> s.RulesOut:
        names = [r.get("name") for r in rules if r.get("name")]
        if len(names) != len(set(names)):
            raise Unprocessable(detail="rules: names must be unique")
        await admin.change(tenant, request.user, action, "rules", "all",
                           cmd={"op": "configure_rules", "rules": rules}, snap=RULES_SNAP,
                           version=version)
        return await self.list_rules.fn(self, admin, tenant)  # type: ignore[no-any-return]

    @put("/", summary="Replace all routing rules", opt=ADMIN)
    async def replace_rules(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                            data: s.RulesIn) -> s.RulesOut:
        """Customers already queued keep their group and priority; new arrivals use the new
        rules at once."""
        await admin.require_tenant(tenant)
        rules = [_stored(r.name, r) for r in data.rules]
        return await self._save(admin, request, tenant, "replace", rules, if_match(request))

    async def _edit(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                    action: str, edit: Any) -> s.RulesOut:
        # optimistic: retried when another change lands between the read and the write
        await admin.require_tenant(tenant)
        wanted = if_match(request)
        for _ in range(5):
            rules, ver = await self._current(admin, tenant)
            if wanted is not None and wanted != ver:
                raise VersionMismatch(str(ver))
            try:
                return await self._save(admin, request, tenant, action, edit(rules), ver)
            except VersionMismatch:
                if wanted is not None:
                    raise
        raise Conflict(detail="rules keep changing; try again")

    @get("/{name:str}", summary="Get one routing rule")
    async def get_rule(self, admin: Admin, tenant: str, name: str) -> Response[s.RuleOut]:
        """Its ``ETag`` is the version of the rules, which If-Match on the rule takes."""
        await admin.require_tenant(tenant)
        rules, ver = await self._current(admin, tenant)
        return Response(views.rule_out(rules[_index(rules, name)]),
                        headers={"ETag": etag(ver)})

    @post("/", summary="Add a routing rule", opt=ADMIN)
    async def create_rule(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          data: s.RuleCreate) -> s.RulesOut:
        def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if any(r.get("name") == data.name for r in rules):
                raise Conflict(detail=f"rule {data.name} exists")
            at = len(rules) if data.position is None else min(data.position, len(rules))
            return [*rules[:at], _stored(data.name, data), *rules[at:]]

        return await self._edit(admin, request, tenant, "create_rule", edit)

    @put("/{name:str}", summary="Replace one routing rule (keeps its place)", opt=ADMIN)
    async def update_rule(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          name: str, data: s.RuleIn) -> s.RulesOut:
        def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            at = _index(rules, name)
            return [*rules[:at], _stored(name, data), *rules[at + 1:]]

        return await self._edit(admin, request, tenant, "update_rule", edit)

    @delete("/{name:str}", summary="Delete one routing rule", opt=ADMIN)
    async def delete_rule(self, admin: Admin, request: Request[Any, Any, Any], tenant: str,
                          name: str) -> None:
        """204, like every DELETE (GET the rules for their new version)."""
        def edit(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
            at = _index(rules, name)
            return [*rules[:at], *rules[at + 1:]]

        await self._edit(admin, request, tenant, "delete_rule", edit)


def _index(rules: list[dict[str, Any]], name: str) -> int:
    for n, r in enumerate(rules):
        if r.get("name") == name:
            return n
    raise NotFoundException(f"rule {name} not found")


def _stored(name: str, rule: s.RuleIn) -> dict[str, Any]:
    """A rule as configure_rules takes it; 422 for what the schema cannot say (a range
    needs a bound, strings are limited in bytes)."""
    match: dict[str, Any] = {}
    for attr, cond in rule.match.items():
        if isinstance(cond, s.Range):
            match[attr] = {k: v for k, v in (("min", cond.min), ("max", cond.max)) if v is not None}
            if not match[attr]:
                raise Unprocessable(detail=f"match.{attr}: a range needs min or max")
        else:
            for value in cond if isinstance(cond, list) else [cond]:
                if isinstance(value, str):
                    within_bytes(value, 256, f"match.{attr}")
            match[attr] = cond
    out: dict[str, Any] = {"name": name, "group": rule.group, "match": match,
                           "priority": rule.priority, "blocked_agents": list(rule.blocked_agents)}
    if rule.preferred_agent is not None:
        out["preferred_agent"] = rule.preferred_agent
    return out
