"""The gateway protocol over Redis Streams (docs/protocol.md is the contract).

A gateway appends one entry per command to ``{tenant}:in`` with one field: ``json`` (a
UTF-8 JSON object) or ``msgpack`` (a msgpack map). The daemon decodes it here into a
:data:`GatewayCommand` (a tagged union on ``type``), which is then applied by the
``gateway_batch`` script. Anything that does not decode becomes a *reject* that the
script turns into an ``error`` event and a ``{tenant}:dead`` entry.

Unknown fields are ignored (so a newer gateway works with an older daemon); every field
the protocol defines is checked for type and size.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

#: Stream entry field names.
JSON_FIELD = b"json"
MSGPACK_FIELD = b"msgpack"
#: The largest command payload accepted, in bytes.
MAX_PAYLOAD = 16 * 1024

# Protocol error codes found by the daemon before a command reaches Redis (the codes of
# the routing scripts are in dispatchd/errors.py).
E_MALFORMED = "E_MALFORMED"  # not a JSON object / msgpack map, or no payload field
E_TOO_LARGE = "E_TOO_LARGE"  # payload over MAX_PAYLOAD bytes
E_UNKNOWN_TYPE = "E_UNKNOWN_TYPE"  # "type" missing or not a gateway command
E_INVALID = "E_INVALID"  # a field has the wrong type, size or format
E_WRONG_TENANT = "E_WRONG_TENANT"  # "tenant" present and not the stream's tenant

# \Z, not $: "$" also matches before a trailing newline
Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.@-]{1,64}\Z")]
CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Priority = Annotated[int, msgspec.Meta(ge=-1000, le=1000)]


class _GatewayCommand(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: CommandId
    """Idempotency key: a command is applied at most once per id (within the window)."""
    tenant: str | None = None
    """Optional; when present it must be the tenant of the stream."""
    ts: Int64 | None = None
    """Optional gateway clock (ms since the epoch), for latency measurements only."""


Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
AttributeValue = Annotated[str, msgspec.Meta(max_length=256)] | Int64 | float | bool


class ArriveCmd(_GatewayCommand, frozen=True, tag="arrive"):
    session: Id
    group: Id | None = None
    attributes: Annotated[dict[Id, AttributeValue], msgspec.Meta(max_length=32)] | None = None
    customer: Id | None = None
    priority: Priority = 0
    directed_agent: Id | None = None
    last_agent: Id | None = None
    blocked_agents: Annotated[list[Id], msgspec.Meta(max_length=100)] = []
    gateway: Id | None = None


class CustomerMessageCmd(_GatewayCommand, frozen=True, tag="customer_message"):
    session: Id


class AgentMessageCmd(_GatewayCommand, frozen=True, tag="agent_message"):
    session: Id
    agent: Id


class CustomerLeaveCmd(_GatewayCommand, frozen=True, tag="customer_leave"):
    session: Id


class RequestCloseCmd(_GatewayCommand, frozen=True, tag="request_close"):
    session: Id
    agent: Id


class ConfirmCloseCmd(_GatewayCommand, frozen=True, tag="confirm_close"):
    session: Id
    resolved: bool


class CloseSessionCmd(_GatewayCommand, frozen=True, tag="close_session"):
    session: Id
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "closed"
    note: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class TransferSessionCmd(_GatewayCommand, frozen=True, tag="transfer_session"):
    session: Id
    to_group: Id | None = None
    to_agent: Id | None = None


class InviteAgentCmd(_GatewayCommand, frozen=True, tag="invite_agent"):
    session: Id
    agent: Id


class SetAgentStatusCmd(_GatewayCommand, frozen=True, tag="set_agent_status"):
    agent: Id
    status: Literal["online", "away", "offline"]
    handover: bool = False


class AgentReadyCmd(_GatewayCommand, frozen=True, tag="agent_ready"):
    agent: Id


class QueryPositionCmd(_GatewayCommand, frozen=True, tag="query_position"):
    session: Id


# ------------------------------------------------------------------------- tickets
# Mirrors of lua/tickets/*.lua. The scripts measure text in bytes, so the daemon does
# too (in __post_init__, which msgspec runs while decoding: its ValueError becomes a
# DecodeError, hence E_INVALID): a command it accepts is never refused for size later.

TicketFieldValue = Annotated[str, msgspec.Meta(max_length=100_000)] | Int64 | float | bool


def _check_bytes(cmd: msgspec.Struct, limits: tuple[tuple[str, int], ...]) -> None:
    for name, limit in limits:
        if len(getattr(cmd, name).encode()) > limit:
            raise ValueError(f"Expected `str` of at most {limit} UTF-8 bytes - at `$.{name}`")


class CreateTicketCmd(_GatewayCommand, frozen=True, tag="create_ticket"):
    ticket: Id
    ticket_type: Id
    """The ticket's type; ``type`` is the command tag, so the script gets it as ``type``."""
    group: Id
    by: Annotated[str, msgspec.Meta(min_length=1)]
    """Who creates it (a system or an agent id), at most 256 bytes."""
    fields: Annotated[dict[Id, TicketFieldValue], msgspec.Meta(max_length=100)] = {}
    title: str = ""
    priority: Priority = 0
    order_id: Id | None = None
    order_owner: Id | None = None

    def __post_init__(self) -> None:
        _check_bytes(self, (("by", 256), ("title", 500)))


class RespondTicketCmd(_GatewayCommand, frozen=True, tag="respond_ticket"):
    ticket: Id
    agent: Id
    note: str = ""

    def __post_init__(self) -> None:
        _check_bytes(self, (("note", 4000),))


class ForwardTicketCmd(_GatewayCommand, frozen=True, tag="forward_ticket"):
    """Forwarded by its handler ``agent`` (a supervisor's forward is the admin API's)."""

    ticket: Id
    agent: Id
    to_group: Id
    note: str = ""

    def __post_init__(self) -> None:
        _check_bytes(self, (("note", 4000),))


class CloseTicketCmd(_GatewayCommand, frozen=True, tag="close_ticket"):
    ticket: Id
    agent: Id
    resolution: Annotated[str, msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        _check_bytes(self, (("resolution", 4000),))


class QueryTicketCmd(_GatewayCommand, frozen=True, tag="query_ticket"):
    ticket: Id


GatewayCommand = (
    ArriveCmd
    | CustomerMessageCmd
    | AgentMessageCmd
    | CustomerLeaveCmd
    | RequestCloseCmd
    | ConfirmCloseCmd
    | CloseSessionCmd
    | TransferSessionCmd
    | InviteAgentCmd
    | SetAgentStatusCmd
    | AgentReadyCmd
    | QueryPositionCmd
    | CreateTicketCmd
    | RespondTicketCmd
    | ForwardTicketCmd
    | CloseTicketCmd
    | QueryTicketCmd
)

COMMAND_TYPES: frozenset[str] = frozenset(
    str(cls.__struct_config__.tag) for cls in GatewayCommand.__args__
)

_json_decoder = msgspec.json.Decoder(GatewayCommand)
_msgpack_decoder = msgspec.msgpack.Decoder(GatewayCommand)
_json_any = msgspec.json.Decoder()
_msgpack_any = msgspec.msgpack.Decoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()

# Fields the daemon never passes on to the scripts.
_ENVELOPE = ("type", "tenant", "ts")
# Protocol field name -> the scripts' name, where the envelope's "type" is in the way.
_SCRIPT_NAMES = {"ticket_type": "type"}


class Rejected(msgspec.Struct, frozen=True):
    """A stream entry that is not a valid command: why, and its id if it had one."""

    code: str
    message: str
    command_id: str | None = None


def _salvage_id(raw: Any) -> str | None:
    if isinstance(raw, dict):
        cid = raw.get("id")
        if isinstance(cid, str) and 0 < len(cid) <= 128:
            return cid
    return None


def decode_entry(fields: dict[bytes, bytes], tenant: str) -> GatewayCommand | Rejected:
    """Decode one inbound stream entry; never raises (hostile input is a Rejected)."""
    try:
        return _decode_entry(fields, tenant)
    except RecursionError:
        return Rejected(E_MALFORMED, "nested too deeply")
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        return Rejected(E_MALFORMED, f"undecodable payload: {type(exc).__name__}")


def _decode_entry(fields: dict[bytes, bytes], tenant: str) -> GatewayCommand | Rejected:
    typed: Any
    loose: Any
    if JSON_FIELD in fields:
        payload, typed, loose = fields[JSON_FIELD], _json_decoder, _json_any
    elif MSGPACK_FIELD in fields:
        payload, typed, loose = fields[MSGPACK_FIELD], _msgpack_decoder, _msgpack_any
    else:
        return Rejected(E_MALFORMED, "entry has no 'json' or 'msgpack' field")
    if len(payload) > MAX_PAYLOAD:
        return Rejected(E_TOO_LARGE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD}")
    try:
        cmd: GatewayCommand = typed.decode(payload)
    except msgspec.DecodeError as exc:
        return _classify(payload, loose, str(exc))
    if cmd.tenant is not None and cmd.tenant != tenant:
        return Rejected(E_WRONG_TENANT, f"command for tenant {cmd.tenant!r} on the stream of "
                        f"{tenant!r}", cmd.id)
    return cmd


def _classify(payload: bytes, loose: Any, error: str) -> Rejected:
    try:
        raw = loose.decode(payload)
    except msgspec.DecodeError:
        return Rejected(E_MALFORMED, f"not valid {('JSON', 'msgpack')[loose is _msgpack_any]}")
    cid = _salvage_id(raw)
    if not isinstance(raw, dict):
        return Rejected(E_MALFORMED, "payload is not an object", cid)
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        return Rejected(E_UNKNOWN_TYPE, f"unknown command type {kind!r}"[:200], cid)
    return Rejected(E_INVALID, error[:500], cid)


def to_script(cmd: GatewayCommand, entry_id: str) -> dict[str, Any]:
    """The command as the ``gateway_batch`` script takes it."""
    doc: dict[str, Any] = msgspec.to_builtins(cmd)
    op = doc["type"]
    for key in _ENVELOPE:
        doc.pop(key, None)
    for name, script_name in _SCRIPT_NAMES.items():
        if name in doc:
            doc[script_name] = doc.pop(name)
    doc["op"], doc["_id"], doc["_e"] = op, doc.pop("id"), entry_id
    return doc


def reject_to_script(rejected: Rejected, entry_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"op": "reject", "_e": entry_id,
                           "error": f"{rejected.code} {rejected.message}"}
    if rejected.command_id is not None:
        doc["_id"] = rejected.command_id
    return doc


def encode_command(cmd: GatewayCommand, *, msgpack: bool = False) -> dict[bytes, bytes]:
    """The stream entry fields for ``cmd`` (what a gateway sends)."""
    if msgpack:
        return {MSGPACK_FIELD: _msgpack_encoder.encode(cmd)}
    return {JSON_FIELD: _json_encoder.encode(cmd)}


# ---------------------------------------------------------------------------- events


def decode_event(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One ``{tenant}:out`` entry as a dict (JSON object)."""
    doc: dict[str, Any] = _json_any.decode(fields[JSON_FIELD])
    return doc
