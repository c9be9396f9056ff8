"""What every handler shares: the engine, the clock, the token store, audited changes,
and the one place domain errors become HTTP errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException

from admin.auth import Principal, Tokens
from admin.schemas import ActionOut
from dispatchd import errors, keys
from dispatchd.engine import AdminResult, Engine
from dispatchd.messages import Event

#: Lua code -> HTTP status. Unknown ids named in a body are 422; the resource in the path
#: is checked first (E_NOT_FOUND, 404).
STATUS = {
    "E_NOT_FOUND": 404,
    "E_EXISTS": 409,
    "E_VERSION": 412,
    "E_GROUP_BUSY": 409,
    "E_GROUP_IN_USE": 409,
    "E_AGENT_BUSY": 409,
    "E_TEAM_IN_USE": 409,
    "E_SESSION_STATE": 409,
    "E_SESSION_EXISTS": 409,
    "E_AGENT_OFFLINE": 409,
    "E_AGENT_BLOCKED": 409,
    "E_NOT_SESSION_AGENT": 409,
    "E_TICKET_UNKNOWN": 404,
    "E_TICKET_EXISTS": 409,
    "E_TICKET_STATE": 409,
    "E_NOT_TICKET_HANDLER": 409,
}

_to_builtins = msgspec.to_builtins


class Conflict(HTTPException):
    status_code = 409


class Unprocessable(HTTPException):
    status_code = 422


class Admin:
    """The admin API's access to the router.

    Args:
        engine: the routing engine (its Redis client is shared).
        clock: now in ms (injected, so tests control time).
        out_maxlen / audit_maxlen: approximate caps of the outbound and audit streams.
        on_events: called with (tenant, events) after every applied change (metrics).
    """

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], int],
        *,
        out_maxlen: int = 1_000_000,
        audit_maxlen: int = 100_000,
        on_events: Callable[[str, Sequence[Event]], None] | None = None,
    ) -> None:
        self.engine = engine
        # redis-py types replies as bytes | str; this client (decode_responses=False)
        # always answers bytes, which the views rely on
        self.redis: Any = engine.redis
        self.clock = clock
        self.tokens = Tokens(engine.redis)
        self.out_maxlen = out_maxlen
        self.audit_maxlen = audit_maxlen
        self.on_events = on_events

    async def require_tenant(self, tenant: str) -> None:
        if not keys.ID_RE.match(tenant) or not await self.redis.sismember(
            keys.TENANTS_KEY, tenant
        ):
            raise NotFoundException(f"tenant {tenant} not found")

    async def change(
        self,
        tenant: str,
        who: Principal,
        action: str,
        resource: str,
        rid: str,
        *,
        snap: list[list[str]],
        cmd: dict[str, Any] | None = None,
        writes: Sequence[list[Any]] = (),
        expect: str | None = None,
        version: int | None = None,
        state: str | None = None,
        team: str | None = None,
        team_unused: str | None = None,
    ) -> AdminResult:
        """One atomic, audited change (lua/admin/admin.lua); domain errors propagate."""
        change: dict[str, Any] = {
            "actor": who.actor, "role": who.role, "action": action, "resource": resource,
            "id": rid, "snap": snap, "writes": list(writes), "out_maxlen": self.out_maxlen,
            "audit_maxlen": self.audit_maxlen,
        }
        if cmd is not None:
            change["cmd"] = cmd
        if expect is not None:
            change["expect"] = expect
        if version is not None:
            change["version"] = version
        for name, value in (("state", state), ("team", team), ("team_unused", team_unused)):
            if value is not None:
                change[name] = value
        result = await self.engine.admin_change(tenant, self.clock(), change)
        if self.on_events is not None and result.events:
            self.on_events(tenant, result.events)
        return result


def if_match(request: Request[Any, Any, Any]) -> int | None:
    """The version an ``If-Match: "<n>"`` header asks for (400 when malformed)."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise HTTPException(status_code=400, detail='If-Match must be a version: "<n>"')
    return int(value)


def within_bytes(text: str, limit: int, where: str) -> None:
    """422 when ``text`` is over ``limit`` UTF-8 bytes: the scripts' text limits are in
    bytes, while a schema's ``maxLength`` counts characters."""
    if len(text.encode()) > limit:
        raise Unprocessable(detail=f"{where}: longer than {limit} bytes (UTF-8)")


def actor_name(who: Principal, limit: int = 256) -> str:
    """The caller's actor where a script keeps at most ``limit`` bytes of a name (a
    ticket's creator or supervisor), cut at a character boundary."""
    return who.actor.encode()[:limit].decode(errors="ignore")


def events_json(result: AdminResult) -> list[dict[str, Any]]:
    return [_to_builtins(e) for e in result.events]


def rejected_handler(_: Request[Any, Any, Any], exc: errors.CommandRejected) -> Response[Any]:
    """Map a refused command to its HTTP status, with the code and the script's detail."""
    status = STATUS.get(exc.code, 422)
    if exc.code.endswith("_UNKNOWN"):
        detail = f"unknown {exc.code[2:-8].lower().replace('_', ' ')}: {exc.detail}"
    elif exc.code == "E_VERSION":
        detail = f"the resource changed: its version is now {exc.detail}"
    else:
        detail = f"{exc.code} {exc.detail}".strip()
    return Response(
        {"status_code": status, "detail": detail, "code": exc.code},
        status_code=status,
    )


class ActionResult:
    """Response bodies of actions."""

    @staticmethod
    def out(result: AdminResult) -> ActionOut:
        return ActionOut(events=events_json(result), audit=result.audit)
