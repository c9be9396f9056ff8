"""Tokens and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from admin import archives, views
from admin import schemas as s
from admin.auth import LastAdminToken, Principal
from admin.service import Admin, Conflict, Unprocessable
from dispatchd import keys

GLOBAL_ADMIN = {"role": "admin", "all_tenants": True}
MAX_SCAN = 10_000


def _token_out(p: Principal, last_used_ms: int | None = None) -> s.TokenOut:
    return s.TokenOut(id=p.id, name=p.name, role=p.role,  # type: ignore[arg-type]
                      tenants=p.tenants, created_ms=p.created_ms, created_by=p.created_by,
                      agent=p.agent, expires_ms=p.expires_ms, last_used_ms=last_used_ms)


async def _check_token_in(admin: Admin, data: s.TokenIn) -> list[str] | None:
    """What a new token names must exist and fit (422, naming what is wrong: like an
    unknown id or a rule across fields in any other body, so a body valid by the schema
    never earns a 400); returns its tenants without repeats."""
    if data.agent is not None and data.role != "agent":
        raise Unprocessable(detail="agent: only a token of role agent acts as an agent")
    tenants = None if data.tenants is None else list(dict.fromkeys(data.tenants))
    if data.agent is not None and (tenants is None or len(tenants) != 1):
        raise Unprocessable(detail=(
            "tenants: a token bound to an agent names exactly one tenant (agent ids are "
            "per tenant)"))
    if data.expires_ms is not None and data.expires_ms <= admin.clock():
        raise Unprocessable(detail="expires_ms: not in the future")
    if tenants is not None:
        pipe = admin.redis.pipeline(transaction=False)
        for t in tenants:
            pipe.sismember(keys.TENANTS_KEY, t)
        missing = [t for t, ok in zip(tenants, await pipe.execute(), strict=True) if not ok]
        if missing:
            raise Unprocessable(detail=f"tenants: unknown tenant {', '.join(missing)}")
    if data.agent is not None and tenants is not None and not await admin.redis.sismember(
            keys.key("agents", tenants[0]), data.agent):
        raise Unprocessable(detail=f"agent: unknown agent {data.agent} in tenant {tenants[0]}")
    return tenants


class TokenController(Controller):
    path = "/v1/tokens"
    tags = ["access"]

    @get("/", summary="List tokens (never their secrets)", opt=GLOBAL_ADMIN)
    async def list_tokens(self, admin: Admin) -> list[s.TokenOut]:
        """``last_used_ms`` is recorded at most once a minute per token and process."""
        found = await admin.tokens.list()
        used = await admin.tokens.last_used([p.id for p in found])
        return [_token_out(p, used.get(p.id)) for p in found]

    @post("/", summary="Create a token", opt=GLOBAL_ADMIN)
    async def create_token(self, admin: Admin, request: Request[Any, Any, Any],
                           data: s.TokenIn) -> s.TokenCreated:
        """The secret is in this response only; the server keeps its SHA-256. ``agent``
        binds a token of role agent to one agent (422 with another role) of its one
        tenant (422 unless ``tenants`` names exactly one). Unknown tenants, an unknown
        agent, an ``expires_ms`` not in the future: 422."""
        tenants = await _check_token_in(admin, data)
        made = await admin.tokens.create(
            name=data.name, role=data.role, tenants=tenants, by=request.user.actor,
            now_ms=admin.clock(), agent=data.agent, expires_ms=data.expires_ms)
        assert made is not None
        secret, rec = made
        out = _token_out(rec)
        return s.TokenCreated(token=secret, **{f: getattr(out, f) for f in out.__struct_fields__})

    @delete("/{token_id:str}", summary="Revoke a token", opt=GLOBAL_ADMIN)
    async def revoke_token(self, admin: Admin, request: Request[Any, Any, Any],
                           token_id: str) -> None:
        """409 for the last unexpired admin token for all tenants, whoever asks."""
        try:
            old = await admin.tokens.revoke(token_id, by=request.user.actor,
                                            now_ms=admin.clock())
        except LastAdminToken:
            raise Conflict(detail=f"token {token_id} is the last admin token for all "
                                  "tenants; create another before revoking it") from None
        if old is None:
            raise NotFoundException(f"token {token_id} not found")


async def _audit_page(admin: Admin, stream: str, before: str | None, limit: int,
                      match: dict[str, str | None]) -> s.AuditPage:
    """Newest first; ``match`` filters on entry fields (None: any). ``next`` is null only
    when no older entry matches. A page a filter has not filled after MAX_SCAN entries
    ends early (maybe empty) with ``next`` where the scan stopped."""
    wanted = {k: v for k, v in match.items() if v is not None}
    items: list[s.AuditEntry] = []
    start = "+"
    if before is not None:
        ms, seq = (int(n) for n in before.split("-"))
        if ms == seq == 0:  # nothing is older (and "(0-0" is refused too)
            return s.AuditPage(items=[], next=None)
        # beyond the largest entry id every entry is older (XREVRANGE refuses such ids)
        start = f"({ms}-{seq}" if ms < 2**64 and seq < 2**64 else "+"
    scanned, cursor = 0, None
    while len(items) <= limit:  # one more than the page: is there an older one?
        if scanned >= MAX_SCAN:
            return s.AuditPage(items=items, next=cursor)
        rows = await admin.redis.xrevrange(stream, max=start, min="-", count=200)
        if not rows:
            break
        scanned += len(rows)
        for entry_id, fields in rows:
            entry = views.audit_entry(entry_id, fields)
            if all(getattr(entry, k) == v for k, v in wanted.items()):
                items.append(entry)
                if len(items) > limit:
                    break
        cursor = rows[-1][0].decode()
        start = "(" + cursor
    if len(items) > limit:
        return s.AuditPage(items=items[:limit], next=items[limit - 1].id)
    return s.AuditPage(items=items, next=None)


Before = Annotated[str | None, Parameter(pattern=r"^\d+-\d+$",
                                         description="the previous page's `next`")]
Limit = Annotated[int, Parameter(ge=1, le=1000)]
DeletedMs = Annotated[str, Parameter(pattern=r"^[0-9]{1,15}$",
                                     description="the archive's `deleted_ms`")]
ArchiveCursor = Annotated[str | None, Parameter(
    pattern=archives.CURSOR_RE.pattern.replace("\\Z", "$"),
    description="the previous page's `next`")]


class AuditController(Controller):
    tags = ["access"]

    @get("/v1/tenants/{tenant:str}/audit", summary="The tenant's audit log, newest first",
         opt={"role": "supervisor"})
    async def tenant_audit(
        self, admin: Admin, tenant: str, limit: Limit = 100, before: Before = None,
        actor: str | None = None, resource: str | None = None,
        resource_id: str | None = None, action: str | None = None,
    ) -> s.AuditPage:
        """Every configuration change and supervisor action: who, when, what, and the
        resource as stored before and after."""
        await admin.require_tenant(tenant)
        return await _audit_page(admin, keys.key("audit", tenant), before, limit, {
            "actor": actor, "resource": resource, "resource_id": resource_id,
            "action": action})

    @get("/v1/audit", summary="Token and tenant-deletion audit log, newest first",
         opt=GLOBAL_ADMIN)
    async def global_audit(self, admin: Admin, limit: Limit = 100,
                           before: Before = None) -> s.AuditPage:
        return await _audit_page(admin, keys.GLOBAL_AUDIT_KEY, before, limit, {})

    @get("/v1/audit/archives", summary="Archived audit logs of deleted tenants",
         opt=GLOBAL_ADMIN)
    async def list_archives(self, admin: Admin, limit: Limit = 100,
                            cursor: ArchiveCursor = None,
                            tenant: str | None = None) -> s.AuditArchivePage:
        """Newest deletion first; ``tenant`` keeps one tenant id's. Each is kept 400 days
        after the deletion."""
        return await archives.listing(admin, tenant, cursor, limit)

    @get("/v1/audit/archives/{tenant_id:str}/{deleted_ms:str}",
         summary="A deleted tenant's audit log, newest first", opt=GLOBAL_ADMIN)
    async def archived_audit(
        self, admin: Admin, tenant_id: str, deleted_ms: DeletedMs, limit: Limit = 100,
        before: Before = None, actor: str | None = None, resource: str | None = None,
        resource_id: str | None = None, action: str | None = None,
    ) -> s.AuditPage:
        """Pages and filters like the tenant's audit log; the newest entry is the
        deletion. 404 when there is no such archive (or it expired)."""
        stream = await archives.stream_of(admin, tenant_id, int(deleted_ms))
        if stream is None:
            raise NotFoundException(f"no audit archive of tenant {tenant_id} deleted at "
                                    f"{deleted_ms}")
        return await _audit_page(admin, stream, before, limit, {
            "actor": actor, "resource": resource, "resource_id": resource_id,
            "action": action})
