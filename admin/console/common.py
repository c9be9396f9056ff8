"""What every console page shares: templates, the signed-in user, forms and CSRF."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.response import Redirect

from admin.auth import Principal, has_role
from admin.console import api
from admin.console.session import Session, check_csrf
from dispatchd import keys

HERE = Path(__file__).parent
ENV = Environment(loader=FileSystemLoader(HERE / "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True,
                  lstrip_blocks=True)
#: Pages load nothing from elsewhere and run only the console's own script.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
VIEWER, SUPERVISOR, ADMIN = ({"role": r} for r in ("viewer", "supervisor", "admin"))


def _ms(value: Any) -> str:
    """A duration in ms for people: 850 ms, 12 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return "—"
    ms = int(value)
    if ms < 1000:
        return f"{ms} ms"
    s = ms // 1000
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _when(value: Any) -> str:
    import datetime as dt

    if not value:
        return "—"
    return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


ENV.filters["ms"] = _ms
ENV.filters["when"] = _when
ENV.filters["pct"] = lambda v: "—" if v is None else f"{100 * float(v):.0f} %"
#: ``key is under("tiers")``: the API's field path names that field or a part of it
ENV.tests["under"] = lambda key, name: key == name or key.startswith((f"{name}.", f"{name}["))
ENV.filters["q"] = lambda v: quote(str(v), safe="")


def who(request: Request[Any, Any, Any]) -> Principal:
    user: Principal = request.user
    return user


def session_of(request: Request[Any, Any, Any]) -> Session:
    sess: Session = request.auth
    return sess


def can(request: Request[Any, Any, Any], role: str) -> bool:
    return has_role(who(request), role)


def page(request: Request[Any, Any, Any], template: str, *, status: int = 200,
         tenant: str | None = None, **context: Any) -> Response[str]:
    """A page of the console for the signed-in user."""
    principal = who(request)
    html = ENV.get_template(template).render(
        user=principal, csrf=session_of(request).csrf, tenant=tenant,
        can_act=has_role(principal, "supervisor"), can_configure=has_role(principal, "admin"),
        path=request.url.path, notice=request.query_params.get("done"), **context)
    return Response(html, status_code=status, media_type="text/html", headers=HEADERS)


def public_page(template: str, *, status: int = 200, **context: Any) -> Response[str]:
    html = ENV.get_template(template).render(user=None, tenant=None, **context)
    return Response(html, status_code=status, media_type="text/html", headers=HEADERS)


async def form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted form, after its CSRF token was checked (403 otherwise)."""
    data = await request.form()
    values = {k: str(v) for k, v in data.items()}
    if not check_csrf(session_of(request), values.pop("csrf", None)):
        raise PermissionDeniedException("the form's CSRF token is not this session's; "
                                        "reload the page and try again")
    return values


def done(where: str, message: str) -> Redirect:
    """After a change: back to ``where`` (303), which says ``message``."""
    sep = "&" if "?" in where else "?"
    return Redirect(f"{where}{sep}done={quote(message)}", status_code=303)


def check_id(value: str, what: str) -> str:
    if not keys.ID_RE.match(value):
        raise NotFoundException(f"{what} {value[:80]} not found")
    return value


def v1(tenant: str, *parts: str) -> str:
    """The admin API path of a tenant's resource (ids checked by the caller)."""
    return "/".join([f"/v1/tenants/{tenant}", *parts]).rstrip("/")


async def get_json(request: Request[Any, Any, Any], path: str, **query: Any) -> api.Answer:
    return await api.call(request.app, who(request), "GET", path, query=query)


async def act(request: Request[Any, Any, Any], method: str, path: str, body: Any = None,
              if_match: int | None = None) -> api.Answer:
    return await api.call(request.app, who(request), method, path, body=body,
                          if_match=if_match)
