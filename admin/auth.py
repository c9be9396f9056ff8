"""Bearer tokens, roles and the guard every route goes through.

A token is ``dsp_<random>``; Redis keeps only its SHA-256 (``keys.TOKENS_KEY``) with its
record: id, name, role, the tenants it may touch (all when ``None``), the agent it acts
as, when it expires, who created it and when. Roles are ordered: viewer (read) < agent
(create tickets, work on them as their handler) < supervisor (live actions, any ticket) <
admin (configure); a route names the least role it needs in its ``opt``, and
:func:`has_role` checks a stronger one inside a route whose need depends on the body.
Token and tenant administration also need a token for all tenants.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import msgspec
import redis.asyncio as aioredis
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from redis.exceptions import WatchError

from dispatchd.keys import GLOBAL_AUDIT_KEY, TOKEN_IDS_KEY, TOKEN_USED_KEY, TOKENS_KEY

ROLES = ("viewer", "agent", "supervisor", "admin")
_RANK = {role: n for n, role in enumerate(ROLES)}
PREFIX = "dsp_"
#: A token's last use is written at most once per this many ms per process.
TOUCH_EVERY_MS = 60_000
#: ASGI scope key of the principal of a console request calling the API in process.
CONSOLE_PRINCIPAL = "dispatchd.console_principal"
#: RFC 6750 challenge of every 401.
REALM = 'Bearer realm="dispatchd"'


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A token's record: who is calling."""

    id: str
    name: str
    role: str
    tenants: list[str] | None = None
    created_ms: int = 0
    created_by: str = ""
    agent: str | None = None
    """The agent a token of role agent acts as (None: any agent, e.g. a system's token);
    such a token names exactly one tenant."""
    expires_ms: int | None = None
    """Unix ms from which the token is refused (401); None: never."""

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"token:{self.id}:{self.name}"

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and now_ms >= self.expires_ms

    def global_admin(self, now_ms: int) -> bool:
        """An admin token for all tenants that has not expired."""
        return self.role == "admin" and self.tenants is None and not self.expired(now_ms)


class LastAdminToken(Exception):
    """Revoking this token would leave no admin token for all tenants."""


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Principal)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class Tokens:
    """The token store on the server."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis: Any = redis  # replies are bytes (decode_responses=False)
        self._touched: dict[str, int] = {}  # token id -> ms this process last wrote its use

    async def lookup(self, token: str) -> Principal | None:
        raw = await self.redis.hget(TOKENS_KEY, digest(token))
        return None if raw is None else _dec.decode(raw)

    async def lookup_digest(self, sha: str) -> Principal | None:
        """The record of the token whose SHA-256 is ``sha`` (a console session keeps only
        that); None once it is revoked."""
        raw = await self.redis.hget(TOKENS_KEY, sha)
        return None if raw is None else _dec.decode(raw)

    async def touch(self, token_id: str, now_ms: int) -> None:
        """Record a use of the token, at most once per :data:`TOUCH_EVERY_MS` per process
        (not a Redis write per request)."""
        last = self._touched.get(token_id)
        if last is not None and 0 <= now_ms - last < TOUCH_EVERY_MS:
            return
        self._touched[token_id] = now_ms
        await self.redis.hset(TOKEN_USED_KEY, token_id, now_ms)

    async def last_used(self, ids: list[str]) -> dict[str, int]:
        """Token id -> ms of its last recorded use (absent: never used)."""
        if not ids:
            return {}
        found = await self.redis.hmget(TOKEN_USED_KEY, ids)
        return {i: int(v) for i, v in zip(ids, found, strict=True) if v is not None}

    async def create(
        self, *, name: str, role: str, tenants: list[str] | None, by: str, now_ms: int,
        secret: str | None = None, only_if_none: bool = False, agent: str | None = None,
        expires_ms: int | None = None,
    ) -> tuple[str, Principal] | None:
        """Store a new token; returns (secret, record), or None when ``only_if_none``
        and a token exists already (the bootstrap token is made once)."""
        secret = secret or new_secret()
        rec = Principal(
            id=secrets.token_hex(6), name=name, role=role, tenants=tenants,
            created_ms=now_ms, created_by=by, agent=agent, expires_ms=expires_ms,
        )
        sha = digest(secret)
        async with self.redis.pipeline(transaction=True) as pipe:
            if only_if_none:
                await pipe.watch(TOKENS_KEY)
                if await pipe.hlen(TOKENS_KEY):
                    return None
                pipe.multi()
            pipe.hset(TOKENS_KEY, sha, _enc.encode(rec))
            pipe.hset(TOKEN_IDS_KEY, rec.id, sha)
            self._audit(pipe, now_ms, by, "create", rec.id, None, rec)
            await pipe.execute()
        return secret, rec

    async def list(self) -> list[Principal]:
        rows = await self.redis.hvals(TOKENS_KEY)
        return sorted((_dec.decode(r) for r in rows), key=lambda p: (p.created_ms, p.id))

    async def revoke(self, token_id: str, *, by: str, now_ms: int) -> Principal | None:
        """Delete the token (None: there is none). Raises :class:`LastAdminToken` when it
        is the last unexpired admin token for all tenants: nobody could manage tokens or
        tenants any more. Checked and written in one transaction (WATCH), so two
        concurrent revocations cannot remove the last two."""
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(TOKENS_KEY, TOKEN_IDS_KEY)
                    sha = await pipe.hget(TOKEN_IDS_KEY, token_id)
                    if sha is None:
                        return None
                    raw = await pipe.hget(TOKENS_KEY, sha)
                    old = None if raw is None else _dec.decode(raw)
                    if old is not None and old.global_admin(now_ms):
                        others = [p for p in map(_dec.decode, await pipe.hvals(TOKENS_KEY))
                                  if p.id != token_id and p.global_admin(now_ms)]
                        if not others:
                            raise LastAdminToken(token_id)
                    pipe.multi()
                    pipe.hdel(TOKENS_KEY, sha)
                    pipe.hdel(TOKEN_IDS_KEY, token_id)
                    pipe.hdel(TOKEN_USED_KEY, token_id)
                    self._audit(pipe, now_ms, by, "revoke", token_id, old, None)
                    await pipe.execute()
                    self._touched.pop(token_id, None)
                    return old
                except WatchError:
                    continue

    async def drop_tenant(self, tenant: str, *, by: str, now_ms: int) -> tuple[str, ...]:
        """Remove ``tenant`` from every token that names it (its tenant was deleted, or is
        being created anew): a token left with no tenant is revoked. Each change is in the
        global audit (``update`` / ``revoke`` by ``by``). Returns the ids changed."""
        changed = []
        for rec in await self.list():
            if rec.tenants is not None and tenant in rec.tenants and await self._drop_one(
                    rec.id, tenant, by=by, now_ms=now_ms):
                changed.append(rec.id)
        return tuple(changed)

    async def drop_agent(self, tenant: str, agent: str, *, by: str,
                         now_ms: int) -> tuple[str, ...]:
        """Revoke every token bound to ``agent`` of ``tenant`` (the agent was deleted: a
        new agent with the same id is someone else). Returns the ids revoked."""
        revoked = []
        for rec in await self.list():
            if rec.agent == agent and rec.tenants == [tenant] and await self.revoke(
                    rec.id, by=by, now_ms=now_ms) is not None:
                revoked.append(rec.id)
        return tuple(revoked)

    async def _drop_one(self, token_id: str, tenant: str, *, by: str, now_ms: int) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(TOKENS_KEY, TOKEN_IDS_KEY)
                    sha = await pipe.hget(TOKEN_IDS_KEY, token_id)
                    raw = None if sha is None else await pipe.hget(TOKENS_KEY, sha)
                    if raw is None:
                        return False  # revoked meanwhile
                    old = _dec.decode(raw)
                    if old.tenants is None or tenant not in old.tenants:
                        return False
                    left = [t for t in old.tenants if t != tenant]
                    pipe.multi()
                    if left:
                        new = msgspec.structs.replace(old, tenants=left)
                        pipe.hset(TOKENS_KEY, sha, _enc.encode(new))
                        self._audit(pipe, now_ms, by, "update", token_id, old, new)
                    else:
                        pipe.hdel(TOKENS_KEY, sha)
                        pipe.hdel(TOKEN_IDS_KEY, token_id)
                        pipe.hdel(TOKEN_USED_KEY, token_id)
                        self._audit(pipe, now_ms, by, "revoke", token_id, old, None)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    @staticmethod
    def _audit(pipe: Any, now_ms: int, by: str, action: str, token_id: str,
               before: Principal | None, after: Principal | None) -> None:
        pipe.xadd(
            GLOBAL_AUDIT_KEY,
            {
                "ts": now_ms, "actor": by, "action": action, "resource": "token",
                "id": token_id, "before": _enc.encode(before), "after": _enc.encode(after),
            },
            maxlen=100_000, approximate=True,
        )


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def unauthorized(detail: str, *, invalid: bool) -> NotAuthorizedException:
    """A 401 with its RFC 6750 challenge: ``error="invalid_token"`` when a token was sent
    but is unknown, revoked or expired; the bare challenge when none was sent."""
    challenge = f'{REALM}, error="invalid_token"' if invalid else REALM
    return NotAuthorizedException(detail, headers={"WWW-Authenticate": challenge})


class BearerAuth(AbstractAuthenticationMiddleware):
    """Every request, OPTIONS included, needs ``Authorization: Bearer <token>`` of a
    stored, unexpired token (401)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]
                                   ) -> AuthenticationResult:
        console = connection.scope.get(CONSOLE_PRINCIPAL)
        if isinstance(console, Principal):
            # a console action calling the API in process (admin/console/api.py): its
            # session was checked for this request; no HTTP client can set a scope key
            return AuthenticationResult(user=console, auth=None)
        token = bearer(connection.headers.get("authorization"))
        if token is None:
            raise unauthorized("missing bearer token (Authorization: Bearer <token>)",
                               invalid=False)
        tokens: Tokens = connection.app.state.tokens
        principal = await tokens.lookup(token)
        if principal is None:
            raise unauthorized("unknown or revoked token", invalid=True)
        now_ms = connection.app.state.admin.clock()
        if principal.expired(now_ms):
            raise unauthorized(f"token expired at {principal.expires_ms}", invalid=True)
        await tokens.touch(principal.id, now_ms)
        return AuthenticationResult(user=principal, auth=token)


def has_role(principal: Principal, role: str) -> bool:
    """Whether ``principal``'s role is ``role`` or stronger."""
    return _RANK.get(principal.role, -1) >= _RANK[role]


def check_acting_as(principal: Principal, agent: str | None) -> None:
    """403 when a token bound to an agent acts as another one (``agent`` None: nobody)."""
    if principal.agent is not None and agent is not None and agent != principal.agent:
        raise PermissionDeniedException(
            f"this token acts only as agent {principal.agent}, not {agent}")


def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """403 unless the caller's role and tenants allow the route (its ``opt``: ``role``, the
    least role, default viewer; ``all_tenants``: needs a token for every tenant)."""
    if handler.opt.get("console_public"):
        return  # the console's sign-in page and static files (admin/console)
    principal: Principal = connection.user
    need = handler.opt.get("role", "viewer")
    if not has_role(principal, need):
        raise PermissionDeniedException(f"role {need} required, token has {principal.role}")
    if handler.opt.get("all_tenants") and principal.tenants is not None:
        raise PermissionDeniedException("a token for all tenants is required")
    tenant = connection.path_params.get("tenant")
    if tenant is None:
        return
    if principal.tenants is not None and tenant not in principal.tenants:
        raise PermissionDeniedException(f"token not valid for tenant {tenant}")
    if principal.agent is not None and (principal.tenants is None
                                        or len(principal.tenants) != 1):
        # agent ids are per tenant; a bound token made before that rule names none
        raise PermissionDeniedException(
            f"this token is bound to agent {principal.agent} without naming its one "
            "tenant; make a new one with tenants: [<tenant>]")
