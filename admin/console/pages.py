"""Sign-in, sign-out, the wallboard and its event stream, static files; the router."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, Router, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.response import Redirect, ServerSentEvent
from litestar.types import ASGIApp, Receive, Scope, Send

from admin.console import live
from admin.console.common import (
    ENV,
    HEADERS,
    HERE,
    check_id,
    get_json,
    page,
    public_page,
    who,
)
from admin.console.session import ENDED, Sessions, cookie_header, cookie_value

PUBLIC = {"console_public": True}
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


def _console(app: Litestar) -> Any:
    return app.state["console"]


class Console:
    """The console's state in the app: sessions and the wallboards' feeds."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.sessions = Sessions(admin.redis, admin.tokens)
        self.hub = live.Hub(admin.redis)


class ConsoleAuth:
    """Every console request but the sign-in page and static files needs a live session:
    otherwise a page redirects to the sign-in page (which says why) and the event stream
    answers 401 (the wallboard's script then reloads the page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if handler is None or handler.opt.get("console_public"):
            await self.app(scope, receive, send)
            return
        app = Litestar.from_scope(scope)
        console = _console(app)
        sid = cookie_value(list(scope["headers"]))
        found = await console.sessions.resolve(sid, console.admin.clock())
        if isinstance(found, str):
            stream = scope["path"].endswith("/live")
            await send({"type": "http.response.start", "status": 401 if stream else 303,
                        "headers": [(b"location", b"/console/login"),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        scope["auth"], scope["user"] = found
        await self.app(scope, receive, send)


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


@get("/login", opt=PUBLIC)
async def login_page(request: Request[Any, Any, Any]) -> Response[str]:
    console = _console(request.app)
    why = await console.sessions.reason(request.cookies.get("dispatchd_console"))
    return public_page("login.html", message=ENDED.get(why or "", None))


@post("/login", opt=PUBLIC)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    data = await request.form()
    token = str(data.get("token") or "")
    console = _console(request.app)
    made = await console.sessions.sign_in(token, console.admin.clock()) if token else (
        "Enter an API token.")
    if isinstance(made, str):
        return public_page("login.html", status=401, error=made)
    sid, _ = made
    return Redirect("/console", status_code=303,
                    headers={"Set-Cookie": cookie_header(sid, secure=_secure(request))})


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    from admin.console.common import form

    await form(request)  # CSRF
    sid = request.cookies.get("dispatchd_console")
    if sid:
        await _console(request.app).sessions.end(sid, "signed_out")
    return Redirect("/console/login", status_code=303)


@get("/")
async def index(request: Request[Any, Any, Any]) -> Response[Any]:
    answer = await get_json(request, "/v1/tenants", limit=1000)
    tenants = [t["id"] for t in (answer.body or {}).get("items", [])] if answer.ok else []
    allowed = who(request).tenants
    if allowed is not None:
        tenants = [t for t in tenants if t in allowed] or list(allowed)
    if len(tenants) == 1:
        return Redirect(f"/console/t/{tenants[0]}", status_code=303)
    return page(request, "tenants.html", tenants=tenants)


@get("/t/{tenant:str}")
async def wallboard(request: Request[Any, Any, Any], tenant: str) -> Response[str]:
    check_id(tenant, "tenant")
    await _console(request.app).admin.require_tenant(tenant)
    feed = await _console(request.app).hub.watch(tenant)
    try:
        board = await live.snapshot(feed)
    finally:
        _console(request.app).hub.unwatch(feed)
    return page(request, "wallboard.html", tenant=tenant, board=board)


@get("/t/{tenant:str}/live")
async def wallboard_live(request: Request[Any, Any, Any], tenant: str) -> ServerSentEvent:
    """Server-sent events: ``board`` (the wallboard's tables, HTML) whenever the tenant's
    outbound stream moves (at most 5 a second) and every 2 s; ``alert`` per new alert."""
    check_id(tenant, "tenant")
    console = _console(request.app)
    await console.admin.require_tenant(tenant)
    sid = request.cookies.get("dispatchd_console")
    return ServerSentEvent(_stream(console, tenant, sid), retry_duration=1000,
                           headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(console: Console, tenant: str,
                  sid: str | None) -> AsyncIterator[dict[str, Any]]:
    """The wallboard's events while the session lives: its token is looked up again every
    :data:`live.IDLE_REFRESH_S` at most, and a revoked or expired one ends the stream (the
    browser reconnects, is refused, and the page goes to the sign-in page)."""
    feed = await console.hub.watch(tenant)
    template = ENV.get_template("board.html")
    checked = time.monotonic()
    try:
        while True:
            if time.monotonic() - checked >= live.IDLE_REFRESH_S:
                checked = time.monotonic()
                if isinstance(await console.sessions.resolve(sid, console.admin.clock()), str):
                    return
            changed = feed.changed
            started = time.monotonic()
            try:
                board = await live.snapshot(feed)
            except Exception:  # Redis away: tell the page, try again
                yield {"event": "status", "data": "Redis unavailable; retrying"}
                await asyncio.sleep(live.IDLE_REFRESH_S)
                continue
            html = template.render(board=board, tenant=tenant)
            yield {"event": "board", "data": json.dumps({"html": html,
                                                         "version": feed.version})}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), live.IDLE_REFRESH_S)
            pause = live.MIN_REFRESH_S - (time.monotonic() - started)
            if pause > 0:
                await asyncio.sleep(pause)
    finally:
        console.hub.unwatch(feed)


@get("/static/{name:str}", opt=PUBLIC)
async def static(name: str) -> Response[bytes]:
    kind = STATIC.get(name)
    if kind is None:
        raise NotFoundException(f"{name} not found")
    return Response((HERE / "static" / name).read_bytes(), media_type=kind,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Console errors as pages (the API answers JSON; the console, people)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    if request.scope.get("user") is None:
        return public_page("error.html", status=status, status_code=status, detail=detail)
    return page(request, "error.html", status=status, status_code=status, detail=detail,
                tenant=request.path_params.get("tenant"))


def router(admin: Any) -> Router:
    """The console's routes (no OpenAPI operations, no bearer token: a session)."""
    from admin.console import pages_config, pages_live

    return Router(
        path="/console",
        route_handlers=[login_page, login, logout, index, wallboard, wallboard_live, static,
                        *pages_live.HANDLERS, *pages_config.HANDLERS],
        middleware=[ConsoleAuth],
        opt={"exclude_from_auth": True},
        include_in_schema=False,
        exception_handlers={HTTPException: error_page},
    )


__all__ = ["HEADERS", "Console", "router"]
