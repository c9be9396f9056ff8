"""A typed async client for IM gateways (docs/protocol.md).

    client = GatewayClient.from_url("redis://127.0.0.1:6379", tenant="acme", gateway="web")
    await client.arrive("s1", "billing", customer="c42", priority=5)
    async for event in client.events():
        print(event["type"], event.get("session"))

Every command method returns the command id it sent (a fresh UUID unless you pass
``id=``); resending the same id is how a gateway retries safely — the daemon applies a
command id at most once, and answers a repeat of an applied one with a ``duplicate``
event. Events are plain dicts (the JSON objects of the outbound
stream) with the stream entry id added as ``"_entry"``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from dispatchd import keys, protocol
from dispatchd.connect import client_for
from dispatchd.protocol import (
    AgentMessageCmd,
    AgentReadyCmd,
    ArriveCmd,
    CloseSessionCmd,
    CloseTicketCmd,
    ConfirmCloseCmd,
    CreateTicketCmd,
    CustomerLeaveCmd,
    CustomerMessageCmd,
    ForwardTicketCmd,
    GatewayCommand,
    InviteAgentCmd,
    QueryPositionCmd,
    QueryTicketCmd,
    RequestCloseCmd,
    RespondTicketCmd,
    SetAgentStatusCmd,
    TicketFieldValue,
    TransferSessionCmd,
)


def new_id() -> str:
    return uuid.uuid4().hex


class GatewayClient:
    """Sends commands to a tenant's inbound stream and reads its outbound events.

    Args:
        client: a ``redis.asyncio.Redis`` (any ``decode_responses``).
        tenant: the tenant id.
        gateway: this gateway's id; sessions it opens carry it on their events.
        msgpack: send commands as msgpack instead of JSON.
    """

    def __init__(
        self, client: aioredis.Redis, tenant: str, *, gateway: str | None = None,
        msgpack: bool = False,
    ) -> None:
        self.redis = client
        self.tenant = tenant
        self.gateway = gateway
        self.msgpack = msgpack
        self.inbound = keys.key("inbound", tenant)
        self.outbound = keys.key("outbound", tenant)
        self.dead = keys.key("dead", tenant)

    @classmethod
    def from_url(cls, url: str, tenant: str, **kwargs: Any) -> GatewayClient:
        """A client on ``url`` (``redis://``, ``rediss://``, ``unix://``, or a cluster's
        ``redis+cluster://``: see :func:`dispatchd.connect.client_for`)."""
        return cls(client_for(url), tenant, **kwargs)

    async def aclose(self) -> None:
        await self.redis.aclose()

    # ------------------------------------------------------------------------- sending

    async def send(self, cmd: GatewayCommand) -> str:
        """Append one command to the inbound stream; returns its command id."""
        await self.redis.xadd(self.inbound, protocol.encode_command(cmd, msgpack=self.msgpack))  # type: ignore[arg-type]
        return cmd.id

    async def send_many(self, cmds: Sequence[GatewayCommand]) -> list[str]:
        """Append several commands in one round trip, in order."""
        pipe = self.redis.pipeline(transaction=False)
        for cmd in cmds:
            pipe.xadd(self.inbound, protocol.encode_command(cmd, msgpack=self.msgpack))  # type: ignore[arg-type]
        await pipe.execute()
        return [c.id for c in cmds]

    async def arrive(
        self, session: str, group: str, *, customer: str | None = None, priority: int = 0,
        directed_agent: str | None = None, last_agent: str | None = None,
        blocked_agents: Sequence[str] = (), id: str | None = None,
    ) -> str:
        """A customer asks for an agent in ``group``."""
        return await self.send(ArriveCmd(
            id=id or new_id(), session=session, group=group, customer=customer,
            priority=priority, directed_agent=directed_agent, last_agent=last_agent,
            blocked_agents=list(blocked_agents), gateway=self.gateway))

    async def customer_message(self, session: str, *, id: str | None = None) -> str:
        return await self.send(CustomerMessageCmd(id=id or new_id(), session=session))

    async def agent_message(self, session: str, agent: str, *, id: str | None = None) -> str:
        return await self.send(AgentMessageCmd(id=id or new_id(), session=session, agent=agent))

    async def customer_leave(self, session: str, *, id: str | None = None) -> str:
        return await self.send(CustomerLeaveCmd(id=id or new_id(), session=session))

    async def request_close(self, session: str, agent: str, *, id: str | None = None) -> str:
        return await self.send(RequestCloseCmd(id=id or new_id(), session=session, agent=agent))

    async def confirm_close(self, session: str, *, resolved: bool, id: str | None = None) -> str:
        return await self.send(
            ConfirmCloseCmd(id=id or new_id(), session=session, resolved=resolved))

    async def close_session(
        self, session: str, *, reason: str = "closed", note: str = "", id: str | None = None
    ) -> str:
        return await self.send(
            CloseSessionCmd(id=id or new_id(), session=session, reason=reason, note=note))

    async def transfer(
        self, session: str, *, to_group: str | None = None, to_agent: str | None = None,
        id: str | None = None,
    ) -> str:
        return await self.send(TransferSessionCmd(
            id=id or new_id(), session=session, to_group=to_group, to_agent=to_agent))

    async def invite_agent(self, session: str, agent: str, *, id: str | None = None) -> str:
        return await self.send(InviteAgentCmd(id=id or new_id(), session=session, agent=agent))

    async def agent_status(
        self, agent: str, status: Literal["online", "away", "offline"], *,
        handover: bool = False, id: str | None = None,
    ) -> str:
        return await self.send(SetAgentStatusCmd(
            id=id or new_id(), agent=agent, status=status, handover=handover))

    async def agent_ready(self, agent: str, *, id: str | None = None) -> str:
        return await self.send(AgentReadyCmd(id=id or new_id(), agent=agent))

    async def query_position(self, session: str, *, id: str | None = None) -> str:
        return await self.send(QueryPositionCmd(id=id or new_id(), session=session))

    # ------------------------------------------------------------------------- tickets

    async def create_ticket(
        self, ticket: str, ticket_type: str, group: str, *, by: str | None = None,
        fields: Mapping[str, TicketFieldValue] | None = None, title: str = "",
        priority: int = 0, order_id: str | None = None, order_owner: str | None = None,
        id: str | None = None,
    ) -> str:
        """A ticket of ``ticket_type`` for ``group``, created ``by`` a system or an agent
        (default: this gateway's id); ``order_owner`` needs ``order_id``."""
        creator = by or self.gateway
        if not creator:
            raise ValueError("create_ticket needs `by` when the client has no gateway id")
        return await self.send(CreateTicketCmd(
            id=id or new_id(), ticket=ticket, ticket_type=ticket_type, group=group,
            by=creator, fields=dict(fields or {}), title=title, priority=priority,
            order_id=order_id, order_owner=order_owner))

    async def respond_ticket(
        self, ticket: str, agent: str, *, note: str = "", id: str | None = None
    ) -> str:
        """The handler ``agent`` works on its ticket (the first time: its first response)."""
        return await self.send(
            RespondTicketCmd(id=id or new_id(), ticket=ticket, agent=agent, note=note))

    async def forward_ticket(
        self, ticket: str, agent: str, to_group: str, *, note: str = "",
        id: str | None = None,
    ) -> str:
        """The handler ``agent`` sends its ticket on to ``to_group``."""
        return await self.send(ForwardTicketCmd(
            id=id or new_id(), ticket=ticket, agent=agent, to_group=to_group, note=note))

    async def close_ticket(
        self, ticket: str, agent: str, resolution: str, *, id: str | None = None
    ) -> str:
        """The handler ``agent`` closes its ticket with a ``resolution``."""
        return await self.send(CloseTicketCmd(
            id=id or new_id(), ticket=ticket, agent=agent, resolution=resolution))

    async def query_ticket(self, ticket: str, *, id: str | None = None) -> str:
        """Ask for a ``ticket_status`` event."""
        return await self.send(QueryTicketCmd(id=id or new_id(), ticket=ticket))

    # ------------------------------------------------------------------------- reading

    async def read_events(
        self, after: str = "0-0", *, count: int = 1000, block_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Events after stream id ``after`` (``"$"``: only new ones), oldest first."""
        rows = cast(
            list[tuple[Any, list[tuple[Any, dict[Any, Any]]]]] | None,
            await self.redis.xread({self.outbound: after}, count=count, block=block_ms),
        )
        out: list[dict[str, Any]] = []
        for _stream, entries in rows or []:
            for entry_id, fields in entries:
                event = protocol.decode_event(_bytes_keys(fields))
                event["_entry"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append(event)
        return out

    async def events(
        self, after: str = "$", *, block_ms: int = 1000, mine_only: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Iterate events as they arrive (forever); ``mine_only`` keeps this gateway's."""
        if after == "$":
            last = cast(list[tuple[bytes, Any]], await self.redis.xrevrange(self.outbound, count=1))
            after = _s(last[0][0]) if last else "0-0"
        while True:
            for event in await self.read_events(after, block_ms=block_ms):
                after = event["_entry"]
                if mine_only and event.get("gateway") not in (None, self.gateway):
                    continue
                yield event

    async def dead_letters(self) -> list[dict[str, str]]:
        """The refused commands kept in the dead-letter stream (with ``error``, ``entry``)."""
        rows = cast(list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrange(self.dead))
        return [{_s(k): _s(v) for k, v in fields.items()} for _id, fields in rows]


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _bytes_keys(fields: dict[Any, Any]) -> dict[bytes, bytes]:
    return {k if isinstance(k, bytes) else k.encode(): v if isinstance(v, bytes) else v.encode()
            for k, v in fields.items()}
