"""The Litestar application of the admin API (docs/admin.md).

Every route, the OpenAPI document and OPTIONS included, needs ``Authorization: Bearer
<token>`` (:mod:`admin.auth`); each route names the least role it needs. The console
under ``/console`` (:mod:`admin.console`) signs in with a token once and then uses a
session cookie; its pages call these routes in process. The OpenAPI 3.1 document
is at ``/schema/openapi.json``.
"""

from __future__ import annotations

import logging
from importlib.metadata import version as package_version
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from admin import schemas
from admin.auth import BearerAuth, role_guard
from admin.checks import request_guard
from admin.console import pages as console
from admin.routes_access import AuditController, TokenController
from admin.routes_agents import AgentController, RuleController
from admin.routes_config import GroupController, TeamController, TenantController
from admin.routes_live import LiveController
from admin.routes_tickets import TicketController, TicketTypeController
from admin.service import (
    UNAVAILABLE,
    Admin,
    etag_hook,
    rejected_handler,
    unavailable_handler,
)
from dispatchd.errors import CommandRejected

CONTROLLERS = [TenantController, GroupController, TeamController, AgentController,
               RuleController, LiveController, TicketTypeController, TicketController,
               TokenController, AuditController]


def _structs() -> list[type[msgspec.Struct]]:
    """Every request and response body type of :mod:`admin.schemas`."""
    found: list[type[msgspec.Struct]] = []
    todo: list[type[msgspec.Struct]] = [schemas._In, schemas._Out]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


ERRORS = {
    "400": "Malformed request: a field or parameter is invalid (named in `extra`)",
    "401": "Missing, unknown, revoked or expired bearer token; `WWW-Authenticate: Bearer "
           'realm="dispatchd"` (with `error="invalid_token"` when one was sent)',
    "403": "The token's role or tenants do not allow this route",
    "404": "The tenant or a resource in the path does not exist",
    "409": "Conflict: exists already, or still in use / busy, or the last admin token for "
           "all tenants (the detail says why)",
    "412": "If-Match names a version the resource no longer has",
    "422": "Well-formed but refused: e.g. an unknown group, agent, team, tenant or ticket type in "
           "the body, ticket fields that do not fit their template, a text over its limit "
           "in UTF-8 bytes",
    "503": "Redis is unavailable (down, paused or slower than 3 s); `Retry-After` says when "
           "to try again, the detail says why (code E_REDIS_UNAVAILABLE)",
}


def _error_schema() -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["status_code", "detail"],
        properties={
            "status_code": Schema(type=OpenAPIType.INTEGER),
            "detail": Schema(type=OpenAPIType.STRING),
            "code": Schema(type=OpenAPIType.STRING, description="the router's error code"),
            "extra": Schema(),
        },
    )


def finish_openapi(app: Litestar) -> None:
    """Say in the OpenAPI document what the app enforces: request bodies allow no unknown
    fields (``additionalProperties: false``), and every operation may answer with the
    error statuses of :data:`ERRORS`."""
    schema = app.openapi_schema
    # msgspec's own JSON Schema of our Structs is exact (Litestar's drops constraints of
    # nested items, e.g. the id pattern of a list of group ids), and it says
    # additionalProperties: false for request bodies, which forbid unknown fields.
    components = schema.components.schemas or {}
    ours = [cls for cls in _structs() if cls.__name__ in components]
    _, exact = msgspec.json.schema_components(ours, ref_template="#/components/schemas/{name}")
    for name, component in exact.items():
        components[name] = component  # a plain dict serialises as it is
    # what msgspec cannot say (admin.schemas.TransferIn.__post_init__ checks it)
    components["TransferIn"]["oneOf"] = [  # type: ignore[index]  # a plain dict (above)
        {"required": [one], "properties": {one: {"type": "string"}, other: {"type": "null"}}}
        for one, other in (("to_group", "to_agent"), ("to_agent", "to_group"))]
    versioned = {cls.__name__ for cls in ours
                 if issubclass(cls, schemas._Out) and "version" in cls.__struct_fields__}
    versioned.add("RuleOut")  # one rule: its ETag is the version of the rules
    for item in (schema.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            op = getattr(item, method, None)
            if op is None:
                continue
            op.responses = op.responses or {}
            for status, response in op.responses.items():
                if status.startswith("2") and _body_name(response) in versioned:
                    response.headers = {**(response.headers or {}), "ETag": ETAG_HEADER}
            for status, text in ERRORS.items():
                if status not in op.responses:
                    op.responses[status] = OpenAPIResponse(
                        description=text,
                        content={"application/json": OpenAPIMediaType(schema=_error_schema())},
                        headers=_challenge() if status == "401" else None,
                    )


ETAG_HEADER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, examples=['"3"']),
    description='The resource\'s version as a strong entity tag, `"<version>"`: the value '
                '`If-Match` takes (for a rule, the version of the rules).')


def _body_name(response: Any) -> str | None:
    """The component name of a response's JSON body (None: not a component)."""
    media = (getattr(response, "content", None) or {}).get("application/json")
    ref = getattr(getattr(media, "schema", None), "ref", None)
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


log = logging.getLogger("dispatchd.admin")


def _challenge() -> dict[str, OpenAPIHeader | Reference]:
    return {"WWW-Authenticate": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING), required=True,
        description='RFC 6750: `Bearer realm="dispatchd"`, plus `, error="invalid_token"` '
                    "for an unknown, revoked or expired token")}


async def _log_unexpected(exc: Exception, scope: Any) -> None:
    """A 5xx is a bug: log it with its traceback, Litestar's own 500s (an
    ``HTTPException``) too; 4xx are the client's business, and Redis being unavailable
    (503) is logged once per outage (admin.service.RedisWatch)."""
    expected = isinstance(exc, (CommandRejected, *UNAVAILABLE)) or (
        isinstance(exc, HTTPException) and exc.status_code < 500)
    if not expected:
        log.error("admin request failed", exc_info=exc, extra={"fields": {
            "method": scope.get("method"), "path": scope.get("path")}})


def create_app(admin: Admin) -> Litestar:
    """The admin API over ``admin`` (engine, clock, token store)."""
    app = Litestar(
        route_handlers=[*CONTROLLERS, console.router(admin)],  # the console: docs/console.md
        dependencies={"admin": Provide(lambda: admin, use_cache=True, sync_to_thread=False)},
        # OPTIONS too (Litestar exempts it by default, and the guard then failed on a
        # missing user: a 500 on every route)
        middleware=[DefineMiddleware(BearerAuth, exclude_http_methods=[])],
        guards=[role_guard, request_guard],  # in this order: 403 before 404/400
        exception_handlers={CommandRejected: rejected_handler,
                            **{cls: unavailable_handler for cls in UNAVAILABLE}},
        openapi_config=OpenAPIConfig(
            title="dispatchd admin API",
            version=package_version("dispatchd"),
            description="Configuration, live views and supervisor actions. Every route needs "
            "`Authorization: Bearer <token>`; roles: viewer < agent < supervisor < admin.",
            path="/schema",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer",
                                         description="a dispatchd admin token (dsp_...)")}),
            security=[{"bearer": []}],
        ),
        state=_state(admin),
        after_exception=[_log_unexpected],
        before_request=_answer_options,
        after_request=etag_hook,
        debug=False,
        logging_config=None,  # the daemon's logging (JSON lines) stays as it is
    )
    finish_openapi(app)
    return app


def _allow(app: Litestar) -> dict[int, str]:
    """The ``Allow`` of each OPTIONS handler (by id): every method of its path."""
    allow: dict[int, str] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods = ", ".join(sorted(route.methods))
            for handler in route.route_handlers:
                if "OPTIONS" in handler.http_methods:
                    allow[id(handler)] = methods
    return allow


async def _answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """OPTIONS answers 204 with every method of its path in ``Allow`` (Litestar's own
    answer lists the methods of one of the path's handlers only). A ``before_request``
    hook, so it runs after the token check and the guard, like every route."""
    if request.method != "OPTIONS":
        return None
    state = request.app.state
    if "allow" not in state:
        state["allow"] = _allow(request.app)
    methods = state["allow"].get(id(request.route_handler))
    return None if methods is None else Response(
        None, status_code=204, headers={"Allow": methods}, media_type="text/plain")


def _state(admin: Admin) -> Any:
    from litestar.datastructures import State

    return State({"tokens": admin.tokens, "admin": admin, "console": console.Console(admin)})
