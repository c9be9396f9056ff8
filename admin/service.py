"""What every handler shares: the engine, the clock, the token store, audited changes,
and the one place domain errors become HTTP errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from admin.auth import Principal, Tokens
from admin.schemas import ActionOut
from dispatchd import errors, keys
from dispatchd.connect import cluster_twin, is_cluster
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

log = logging.getLogger("dispatchd.admin")

#: How long the admin API waits for Redis: to connect, and for each reply. A server that
#: is down answers 503 at once; one that is paused (CLIENT PAUSE) or hung, after this.
REDIS_TIMEOUT_S = 3.0
#: The ``Retry-After`` of a 503 while Redis is unavailable (seconds).
RETRY_AFTER_S = 5
#: Redis failures that make the admin API answer 503: the server is unreachable, paused,
#: loading its data set (BusyLoadingError is a ConnectionError) or too slow to answer.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


def own_client(shared: aioredis.Redis) -> aioredis.Redis:
    """A client to the server of ``shared`` (same address, credentials, TLS) whose waits
    are bounded by :data:`REDIS_TIMEOUT_S`: the daemon's shared client has no read timeout,
    since its consumer blocks on XREADGROUP. A command is retried once on a broken
    connection (a pooled one the server closed), never after a timeout."""
    if is_cluster(shared):  # the same cluster, its own connections; it follows MOVED itself
        twin: Any = cluster_twin(cast(Any, shared), socket_timeout=REDIS_TIMEOUT_S,
                                 socket_connect_timeout=REDIS_TIMEOUT_S)
        return cast(aioredis.Redis, twin)
    pool = shared.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": REDIS_TIMEOUT_S,
              "socket_connect_timeout": REDIS_TIMEOUT_S,
              "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
              "retry_on_error": []}
    kwargs.pop("retry_on_timeout", None)
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))


class RedisWatch:
    """Whether Redis is unavailable to the admin API: the first failure is logged (an
    error), then nothing until a probe (PING every second) gets an answer, which is
    logged too. Requests keep trying Redis meanwhile; each failure answers 503."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        log.error("redis unavailable: the admin API answers 503 until it is back",
                  extra={"fields": {"error": reason(exc)}})
        self._probe = asyncio.get_running_loop().create_task(self._wait_until_back())

    async def _wait_until_back(self) -> None:
        while True:
            try:
                await self.redis.ping()
                break
            except UNAVAILABLE:
                await asyncio.sleep(1)
        assert self.down_since is not None
        log.info("redis available again", extra={"fields": {
            "down_s": round(time.monotonic() - self.down_since, 1)}})
        self.down_since = None

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


def reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class Conflict(HTTPException):
    status_code = 409


class Unprocessable(HTTPException):
    status_code = 422


class Admin:
    """The admin API's access to the router.

    Args:
        engine: the routing engine; the admin API talks to its server over a client of
            its own (:func:`own_client`).
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
        # its own client (bounded waits, see own_client) and an engine over it;
        # redis-py types replies as bytes | str; this client (decode_responses=False)
        # always answers bytes, which the views rely on
        self.redis: Any = own_client(engine.redis)
        self.engine = Engine(self.redis)
        self.clock = clock
        self.tokens = Tokens(self.redis)
        self.watch = RedisWatch(self.redis)
        self.out_maxlen = out_maxlen
        self.audit_maxlen = audit_maxlen
        self.on_events = on_events

    async def aclose(self) -> None:
        await self.watch.aclose()
        await self.redis.aclose()

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
    """The version an ``If-Match: "<n>"`` header asks for (400 when malformed); ``*``
    matches any current version (RFC 9110 13.1.1), so it asks for none: the resource
    must exist, as without the header (404 otherwise)."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise HTTPException(status_code=400, detail='If-Match must be a version: "<n>"')
    return int(value)


def etag(version: int) -> str:
    """A resource version as the strong entity tag ``If-Match`` takes back."""
    return f'"{version}"'


async def etag_hook(response: Response[Any]) -> Response[Any]:
    """``ETag`` on every response whose body is one versioned resource (it has a
    ``version``): the GETs, and the creates and updates that answer the new body."""
    version = getattr(response.content, "version", None)
    if isinstance(version, int) and "etag" not in {k.lower() for k in response.headers}:
        response.headers["ETag"] = etag(version)
    return response


def within_bytes(text: str, limit: int, where: str) -> None:
    """422 when ``text`` is over ``limit`` UTF-8 bytes: the scripts' text limits are in
    bytes, while a schema's ``maxLength`` counts characters."""
    if len(text.encode()) > limit:
        raise Unprocessable(detail=f"{where}: longer than {limit} bytes (UTF-8)")


def actor_name(who: Principal, limit: int = 256) -> str:
    """The caller's actor where a script keeps at most ``limit`` bytes of a name (a
    ticket's creator or supervisor), cut at a character boundary."""
    return who.actor.encode()[:limit].decode(errors="ignore")


_event_json = msgspec.json.Decoder(dict[str, Any])


def events_json(result: AdminResult) -> list[dict[str, Any]]:
    """The change's events exactly as appended to ``{T}:out`` (docs/protocol.md): named
    by ``type`` (a close is ``closed``, as gateways see it), with ``ts``."""
    return [_event_json.decode(e) for e in result.out]


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


def unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """503 while Redis is unreachable, paused or too slow (:data:`UNAVAILABLE`), with
    ``Retry-After`` and the reason; logged once per outage (:class:`RedisWatch`)."""
    request.app.state.admin.watch.failed(exc)
    return Response(
        {"status_code": 503, "detail": f"redis unavailable: {reason(exc)}",
         "code": "E_REDIS_UNAVAILABLE"},
        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class ActionResult:
    """Response bodies of actions."""

    @staticmethod
    def out(result: AdminResult) -> ActionOut:
        return ActionOut(events=events_json(result), audit=result.audit)
