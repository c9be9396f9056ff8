"""Console actions call the admin API in process, as the signed-in token.

A console form does not reimplement an action: it calls the API's own route through the
Litestar app (same validation, role and tenant checks, ``If-Match`` versions, atomic
audited change, same error bodies), with the session's principal in the ASGI scope
(:data:`admin.auth.CONSOLE_PRINCIPAL`) instead of a bearer token, which the console never
keeps. The path is built by the console from ids it checked; no HTTP client can set a
scope key, so only the console can call the API this way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec

from admin.auth import CONSOLE_PRINCIPAL, Principal

_json = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()


class Answer(msgspec.Struct, frozen=True):
    """The API's answer: its status, its JSON body, and its ETag."""

    status: int
    body: Any
    etag: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        """The error body's ``detail`` (its code too when it has one)."""
        if not isinstance(self.body, dict):
            return f"HTTP {self.status}"
        detail = str(self.body.get("detail", f"HTTP {self.status}"))
        return detail

    def field_errors(self) -> dict[str, str]:
        """The fields ``extra`` names (``tiers[0].after_ms``) -> their message; a 422's
        detail that starts with a field name (``service_hours.time_zone: ...``) too."""
        out: dict[str, str] = {}
        if not isinstance(self.body, dict):
            return out
        for item in self.body.get("extra") or []:
            if isinstance(item, dict) and item.get("key"):
                out[str(item["key"])] = str(item.get("message", "invalid"))
        detail = str(self.body.get("detail", ""))
        head, sep, rest = detail.partition(": ")
        if sep and head and " " not in head and self.status == 422:
            out.setdefault(head, rest)
        return out


async def call(app: Any, who: Principal, method: str, path: str, *, body: Any = None,
               if_match: int | None = None, query: dict[str, Any] | None = None) -> Answer:
    """``method path`` on the admin API as ``who``; ``if_match``: the version the change
    expects (``If-Match: "<n>"``)."""
    payload = b"" if body is None else _enc.encode(body)
    headers = [(b"host", b"console"), (b"accept", b"application/json")]
    if body is not None:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())]
    if if_match is not None:
        headers.append((b"if-match", f'"{if_match}"'.encode()))
    qs = urlencode({k: v for k, v in (query or {}).items() if v is not None}, doseq=True)
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": qs.encode(), "root_path": "",
        "headers": headers, "client": ("127.0.0.1", 0), "server": ("console", 0),
        "state": {}, CONSOLE_PRINCIPAL: who,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    status = 500
    out_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                out_headers[k.decode().lower()] = v.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    raw = b"".join(chunks)
    try:
        parsed = _json.decode(raw) if raw else None
    except msgspec.DecodeError:
        parsed = {"detail": raw.decode(errors="replace")[:300]}
    return Answer(status=status, body=parsed, etag=out_headers.get("etag"))


def version_of(answer: Answer) -> int | None:
    """The version an answer's ETag names."""
    if answer.etag is None:
        return None
    value = answer.etag.removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else None
