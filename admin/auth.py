"""Bearer tokens, roles and the guard every route goes through.

A token is ``dsp_<random>``; Redis keeps only its SHA-256 (``keys.TOKENS_KEY``) with its
record: id, name, role, the tenants it may touch (all when ``None``), who created it and
when. Roles are ordered: viewer (read) < agent (create tickets, work on them as their
handler) < supervisor (live actions, any ticket) < admin (configure); a route names the
least role it needs in its ``opt``, and :func:`has_role` checks a stronger one inside a
route whose need depends on the body. Token and tenant administration also need a token
for all tenants.
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

from dispatchd.keys import GLOBAL_AUDIT_KEY, TOKEN_IDS_KEY, TOKENS_KEY

ROLES = ("viewer", "agent", "supervisor", "admin")
_RANK = {role: n for n, role in enumerate(ROLES)}
PREFIX = "dsp_"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A token's record: who is calling."""

    id: str
    name: str
    role: str
    tenants: list[str] | None = None
    created_ms: int = 0
    created_by: str = ""
    agent: str | None = None
    """The agent a token of role agent acts as (None: any agent, e.g. a system's token)."""

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"token:{self.id}:{self.name}"


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

    async def lookup(self, token: str) -> Principal | None:
        raw = await self.redis.hget(TOKENS_KEY, digest(token))
        return None if raw is None else _dec.decode(raw)

    async def create(
        self, *, name: str, role: str, tenants: list[str] | None, by: str, now_ms: int,
        secret: str | None = None, only_if_none: bool = False, agent: str | None = None,
    ) -> tuple[str, Principal] | None:
        """Store a new token; returns (secret, record), or None when ``only_if_none``
        and a token exists already (the bootstrap token is made once)."""
        secret = secret or new_secret()
        rec = Principal(
            id=secrets.token_hex(6), name=name, role=role, tenants=tenants,
            created_ms=now_ms, created_by=by, agent=agent,
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
        sha = await self.redis.hget(TOKEN_IDS_KEY, token_id)
        if sha is None:
            return None
        raw = await self.redis.hget(TOKENS_KEY, sha)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(TOKENS_KEY, sha)
            pipe.hdel(TOKEN_IDS_KEY, token_id)
            old = None if raw is None else _dec.decode(raw)
            self._audit(pipe, now_ms, by, "revoke", token_id, old, None)
            await pipe.execute()
        return old

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


class BearerAuth(AbstractAuthenticationMiddleware):
    """Every request needs ``Authorization: Bearer <token>`` of a stored token (401)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]
                                   ) -> AuthenticationResult:
        token = bearer(connection.headers.get("authorization"))
        if token is None:
            raise NotAuthorizedException("missing bearer token (Authorization: Bearer <token>)")
        principal = await connection.app.state.tokens.lookup(token)
        if principal is None:
            raise NotAuthorizedException("unknown or revoked token")
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
    principal: Principal = connection.user
    need = handler.opt.get("role", "viewer")
    if not has_role(principal, need):
        raise PermissionDeniedException(f"role {need} required, token has {principal.role}")
    if handler.opt.get("all_tenants") and principal.tenants is not None:
        raise PermissionDeniedException("a token for all tenants is required")
    tenant = connection.path_params.get("tenant")
    if tenant is not None and principal.tenants is not None and tenant not in principal.tenants:
        raise PermissionDeniedException(f"token not valid for tenant {tenant}")
