"""Console sign-in: an API token becomes a server-side session behind a cookie.

The browser never keeps the token. Signing in with a token stores, under the SHA-256 of
a random session id (``keys.CONSOLE_SESSION_PREFIX``), the token's SHA-256 and a CSRF
token, for :data:`SESSION_TTL_MS` or until the token expires, whichever is first. The
cookie holding the session id is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it), ``Path=/console`` and ``Secure`` over HTTPS.

Every console request looks the token up again (:meth:`Sessions.resolve`): a token
revoked or expired since sign-in ends the session, and the next page says why. Every
form that changes something carries the session's CSRF token (checked by
:func:`check_csrf`), on top of SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import msgspec

from admin.auth import Principal, Tokens, bearer, digest
from dispatchd.keys import CONSOLE_SESSION_PREFIX

COOKIE = "dispatchd_console"
#: A console session lasts at most this long (ms), and never past its token's expiry.
SESSION_TTL_MS = 12 * 3600 * 1000
#: How long the reason a session ended is kept for the next page to show (ms).
ENDED_TTL_MS = 10 * 60 * 1000

#: Why a session ended -> what the sign-in page says.
ENDED = {
    "signed_out": "You signed out.",
    "revoked": "Your token was revoked. Sign in with a valid token.",
    "expired": "Your token has expired. Sign in with a valid token.",
    "session": "Your console session ended. Sign in again.",
    "none": "Sign in with an API token.",
}


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A console session's record; ``ended``: why it ended (then nothing else is used)."""

    tok: str = ""
    csrf: str = ""
    created_ms: int = 0
    ended: str | None = None


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Session)


def _key(sid: str) -> str:
    return CONSOLE_SESSION_PREFIX + hashlib.sha256(sid.encode()).hexdigest()


class Sessions:
    """Console sessions in Redis (every replica of the daemon sees the same ones)."""

    def __init__(self, redis: Any, tokens: Tokens) -> None:
        self.redis = redis
        self.tokens = tokens

    async def sign_in(self, token: str, now_ms: int) -> tuple[str, Principal] | str:
        """A new session for ``token``: (session id, who), or why not (a message)."""
        token = token.strip()
        principal = await self.tokens.lookup(bearer(f"Bearer {token}") or "")
        if principal is None:
            return "Unknown or revoked token."
        if principal.expired(now_ms):
            return "This token has expired."
        sid = secrets.token_urlsafe(32)
        ttl = SESSION_TTL_MS
        if principal.expires_ms is not None:
            ttl = max(min(ttl, principal.expires_ms - now_ms), 1)
        record = Session(tok=digest(token), csrf=secrets.token_urlsafe(24), created_ms=now_ms)
        await self.redis.set(_key(sid), _enc.encode(record), px=ttl)
        await self.tokens.touch(principal.id, now_ms)
        return sid, principal

    async def resolve(self, sid: str | None, now_ms: int) -> tuple[Session, Principal] | str:
        """The session and its token's record, or ``"none"``/``"session"`` when there is
        none (a key of :data:`ENDED`); a session whose token was revoked or expired ends
        here, and :meth:`reason` then says why."""
        if not sid:
            return "none"
        raw = await self.redis.get(_key(sid))
        if raw is None:
            return "session"
        record = _dec.decode(raw)
        if record.ended is not None:
            return "none"  # the sign-in page says why, once (:meth:`reason`)
        principal = await self.tokens.lookup_digest(record.tok)
        why = ("revoked" if principal is None
               else "expired" if principal.expired(now_ms) else None)
        if why is not None or principal is None:
            await self.end(sid, why or "revoked")
            return "none"  # a page redirects to the sign-in page, which reads the reason
        await self.tokens.touch(principal.id, now_ms)
        return record, principal

    async def end(self, sid: str, why: str) -> None:
        """End the session; the sign-in page shows ``why`` (a key of :data:`ENDED`) once."""
        await self.redis.set(_key(sid), _enc.encode(Session(ended=why)), px=ENDED_TTL_MS)

    async def reason(self, sid: str | None) -> str | None:
        """Why the session ``sid`` ended, once (None: it did not, or it was said)."""
        if not sid:
            return None
        raw = await self.redis.get(_key(sid))
        if raw is None:
            return None
        record = _dec.decode(raw)
        if record.ended is None:
            return None
        await self.redis.delete(_key(sid))
        return record.ended


def check_csrf(session: Session, sent: str | None) -> bool:
    """Whether a form's CSRF token is the session's (constant-time)."""
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")


def cookie_header(sid: str, *, secure: bool, clear: bool = False) -> str:
    """The ``Set-Cookie`` value of the session cookie (``clear``: delete it)."""
    value = "" if clear else sid
    parts = [f"{COOKIE}={value}", "Path=/console", "HttpOnly", "SameSite=Strict"]
    if clear:
        parts.append("Max-Age=0")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def cookie_value(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session id in a request's ``Cookie`` headers."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE and val:
                return val
    return None
