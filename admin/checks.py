"""What every request is checked for before a handler runs (an app-level guard, after
:func:`admin.auth.role_guard`): the ids in its path, and its body, strictly.

- **Path ids.** Every path parameter of a ``/v1`` route (tenant, group, agent, team,
  session, ticket, ticket type, rule name, token id) names a resource by its id, and ids
  match ``keys.ID_RE`` (docs/admin.md "Conventions"). A value that does not cannot name
  anything, so it is **404** (a ticket's: code ``E_TICKET_UNKNOWN``) before any key is
  spelled with it: ``g1:m`` would otherwise read the members hash of group ``g1``.
- **Bodies.** Litestar converts a body to its type leniently (``"required": 0`` became
  ``false``, ``"5"`` an int); the body is decoded here once more, strictly, as the JSON
  Schema of the OpenAPI document says, and a value of the wrong JSON type is **400**
  with the field in ``extra``, like Litestar's own validation errors.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.handlers.base import BaseRouteHandler

from dispatchd import errors, keys

#: path parameter -> what it names, for the 404's detail
WHAT = {"name": "rule", "ticket_type": "ticket type", "token_id": "token"}
ID_PATTERN = keys.ID_RE.pattern.removesuffix("\\Z") + "$"
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$", re.S)


def check_path_ids(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """404 for a path parameter that is not an id."""
    if not connection.scope["path"].startswith("/v1/"):
        return
    for param, value in connection.path_params.items():
        if isinstance(value, str) and keys.ID_RE.match(value):
            continue
        shown = str(value) if len(str(value)) <= 80 else str(value)[:80] + "..."
        if param == "ticket":
            raise errors.TicketUnknown(shown)
        what = WHAT.get(param, param.replace("_", " "))
        raise NotFoundException(f"{what} {shown} not found (ids match {ID_PATTERN})")


async def check_body(connection: ASGIConnection[Any, Any, Any, Any],
                     handler: BaseRouteHandler) -> None:
    """400 when the JSON body has a value of the wrong JSON type for its field, which
    Litestar's lenient conversion would accept. A number with no fractional part is an
    integer (as in JSON Schema); everything Litestar refuses anyway it reports itself."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None or connection.scope["type"] != ScopeType.HTTP:
        return
    body = await connection.body()  # type: ignore[attr-defined]  # an HTTP Request
    try:
        value = _whole_numbers(msgspec.json.decode(body))
        msgspec.convert(value, data.annotation, strict=False)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # Litestar's own parsing refuses it, with its own message
    try:
        msgspec.convert(value, data.annotation, strict=True)
    except msgspec.ValidationError as exc:
        found = _AT.match(str(exc))
        assert found is not None  # the pattern matches every string
        raise ValidationException(
            detail=f"Validation failed for {connection.scope['method']} "
                   f"{connection.scope['path']}",
            extra=[{"message": found["message"], "key": found["key"] or "data",
                    "source": "body"}]) from None


def _whole_numbers(value: Any) -> Any:
    """``value`` with every float that has no fractional part as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    return value


async def request_guard(connection: ASGIConnection[Any, Any, Any, Any],
                        handler: BaseRouteHandler) -> None:
    check_path_ids(connection)
    await check_body(connection, handler)
