"""The audit logs of deleted tenants, kept after the deletion.

Deleting a tenant appends the deletion to its audit stream (``{T}:audit``) and, in the
same transaction, RENAMEs the stream to ``{T}:audit:deleted:<ms>`` (same hash slot, so
one MULTI) with a PEXPIRE of :data:`RETENTION_MS`. A tenant created anew with the same id
starts an empty ``{T}:audit`` and never reads the archive; the global admin routes
(admin/routes_access.py) list archives and page one. ``keys.AUDIT_ARCHIVES_KEY`` indexes
them ("<tenant>:<ms>" -> msgpack record); entries whose archive expired are dropped from
it when the list is read.
"""

from __future__ import annotations

import re

import msgspec
from litestar.exceptions import HTTPException

from admin import schemas as s
from admin.auth import Principal
from admin.service import Admin
from dispatchd import keys

#: How long a deleted tenant's audit log is kept: 400 days.
RETENTION_MS = 400 * 86_400_000

#: A page cursor of the archive listing: "<deleted ms>:<tenant>".
CURSOR_RE = re.compile(r"^(\d{1,20}):([A-Za-z0-9_.@-]{1,64})\Z")


class Record(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    deleted_ms: int
    deleted_by: str
    expires_ms: int


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)


def _field(tenant: str, deleted_ms: int) -> str:
    return f"{tenant}:{deleted_ms}"


async def archive(admin: Admin, tenant: str, who: Principal, now_ms: int,
                  before: list[bytes | None]) -> int:
    """Audit the tenant's deletion in its own log and archive that log; returns the
    archive's ``deleted_ms``. ``before``: the tenant's fields as its audit entries
    snapshot them (``TENANT_FIELDS``)."""
    stream = keys.key("audit", tenant)
    version = int(await admin.redis.hget(keys.key("versions", tenant), f"tenant:{tenant}")
                  or 0) + 1
    deleted_ms = now_ms
    while await admin.redis.exists(keys.audit_archive(tenant, deleted_ms)):
        deleted_ms += 1  # deleted twice within one ms: the next free address
    target = keys.audit_archive(tenant, deleted_ms)
    snap = [False if v is None else v.decode() for v in before]
    async with admin.redis.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, {
            "ts": now_ms, "actor": who.actor, "role": who.role, "action": "delete",
            "resource": "tenant", "id": tenant, "version": version,
            "before": _enc.encode(snap), "after": _enc.encode([False] * len(snap)),
            "events": 0})
        # RENAME by name: redis-py refuses rename() in a cluster pipeline, though both
        # keys share the tenant's slot (a transaction on a cluster is one slot's anyway)
        pipe.execute_command("RENAME", stream, target)
        pipe.pexpire(target, RETENTION_MS)
        await pipe.execute()
    rec = Record(tenant=tenant, deleted_ms=deleted_ms, deleted_by=who.actor,
                 expires_ms=deleted_ms + RETENTION_MS)
    await admin.redis.hset(keys.AUDIT_ARCHIVES_KEY, _field(tenant, deleted_ms), _enc.encode(rec))
    return deleted_ms


async def listing(admin: Admin, tenant: str | None, cursor: str | None,
                  limit: int) -> s.AuditArchivePage:
    """Archives newest deletion first (then by tenant), ``tenant``'s only when given."""
    after: tuple[int, str] | None = None
    if cursor is not None:
        m = CURSOR_RE.match(cursor)
        if m is None:
            raise HTTPException(status_code=400, detail="cursor: not a `next` of this listing")
        after = (-int(m.group(1)), m.group(2))
    raw = await admin.redis.hgetall(keys.AUDIT_ARCHIVES_KEY)
    recs = [_dec.decode(v) for v in raw.values()]
    pipe = admin.redis.pipeline(transaction=False)
    for rec in recs:
        pipe.xlen(keys.audit_archive(rec.tenant, rec.deleted_ms))
    sizes = await pipe.execute()
    alive: list[tuple[Record, int]] = []
    gone: list[tuple[Record, int]] = []
    for rec, size in zip(recs, sizes, strict=True):
        # XLEN of a missing key is 0, and an archive holds at least its deletion entry
        (alive if size else gone).append((rec, int(size)))
    if gone:
        await admin.redis.hdel(keys.AUDIT_ARCHIVES_KEY,
                               *[_field(r.tenant, r.deleted_ms) for r, _ in gone])
    order = sorted((((-r.deleted_ms, r.tenant), r, n) for r, n in alive
                    if tenant is None or r.tenant == tenant), key=lambda row: row[0])
    if after is not None:
        order = [row for row in order if row[0] > after]
    chosen = order[:limit]
    items = [s.AuditArchive(tenant=r.tenant, deleted_ms=r.deleted_ms, deleted_by=r.deleted_by,
                            expires_ms=r.expires_ms, entries=n) for _, r, n in chosen]
    nxt = f"{chosen[-1][1].deleted_ms}:{chosen[-1][1].tenant}" if len(order) > limit else None
    return s.AuditArchivePage(items=items, next=nxt)


async def stream_of(admin: Admin, tenant: str, deleted_ms: int) -> str | None:
    """The archive's stream key, None when there is no such archive (or it expired)."""
    if not keys.ID_RE.match(tenant):
        return None
    if not await admin.redis.hexists(keys.AUDIT_ARCHIVES_KEY, _field(tenant, deleted_ms)):
        return None
    stream = keys.audit_archive(tenant, deleted_ms)
    return stream if await admin.redis.exists(stream) else None
