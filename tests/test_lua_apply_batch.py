"""The batch script (``Engine.apply_batch``): many commands of one tenant, in order, in one
call; a refused command changes nothing and does not stop the others."""

from __future__ import annotations

import msgspec
import pytest
from helpers import (
    SEC,
    T0,
    assert_refused,
    dump_keyspace,
    strip_tenant,
)
from redis.exceptions import ResponseError

from dispatchd import keys, scripts
from dispatchd.engine import QueueEntry
from dispatchd.errors import (
    AgentBlocked,
    AgentOffline,
    AgentUnknown,
    BadArgument,
    BadId,
    BadTier,
    GroupUnknown,
    SessionExists,
    SessionState,
    SessionUnknown,
    UnknownOperation,
    from_reply,
)
from dispatchd.messages import (
    AgentConfigured,
    AgentStatusChanged,
    Arrive,
    Assigned,
    CommandFailed,
    ConfigureAgent,
    ConfigureGroup,
    GroupConfigured,
    Outcome,
    PrecloseSession,
    Queued,
    Released,
    ReleaseSession,
    SetAgentStatus,
    Tier,
    TransferSession,
)


class Bogus(msgspec.Struct, tag_field="op", tag="no_such_op"):
    session: str = "s1"


SETUP = [
    ConfigureGroup(group="sales"),
    ConfigureAgent(agent="alice", capacity=1, abilities={"sales": 1.0}),
    SetAgentStatus(agent="alice", status="online"),
]


async def test_empty_batch(engine, redis_client, tenant):
    assert await engine.apply_batch(tenant, T0, []) == []
    # the engine skips the round trip; the script itself also answers an empty list
    raw = await redis_client.fcall(scripts.BATCH, 1, keys.root(tenant), T0,
                                   msgspec.msgpack.encode([]))
    assert msgspec.msgpack.decode(raw) == []
    assert await redis_client.keys("{" + tenant + "}:*") == []


async def test_applies_in_order_like_single_calls(engine, redis_client, tenant):
    commands = [
        *SETUP,
        Arrive(session="s1", group="sales"),
        Arrive(session="s2", group="sales", priority=1),
        ReleaseSession(session="s1"),
    ]
    items = await engine.apply_batch(tenant, T0, commands)
    assert items == [
        Outcome(events=[GroupConfigured(group="sales")]),
        Outcome(events=[AgentConfigured(agent="alice")]),
        Outcome(events=[AgentStatusChanged(agent="alice", status="online",
                                           previous="offline")]),
        Outcome(events=[Assigned(session="s1", agent="alice", group="sales", tier=0,
                                 via="group", wait_ms=0)]),
        Outcome(events=[Queued(session="s2", group="sales", virtual_arrival_ms=T0 - 60_000,
                               priority=1, position=1, reason="arrival")]),
        Outcome(events=[Released(session="s1", agent="alice", reason="closed"),
                        Assigned(session="s2", agent="alice", group="sales", tier=0,
                                 via="group", wait_ms=0)]),
    ]
    assert (await engine.session(tenant, "s2")).agent == "alice"
    assert await engine.queue(tenant, "sales") == []
    # the same commands one by one leave the very same keyspace
    other = tenant + "-single"
    singles = [await engine.apply(other, T0, c) for c in commands]
    assert singles == items
    assert strip_tenant(await dump_keyspace(redis_client, other), other) == strip_tenant(
        await dump_keyspace(redis_client, tenant), tenant)


async def test_later_commands_see_earlier_configuration(engine, tenant):
    items = await engine.apply_batch(tenant, T0, [
        ConfigureGroup(group="sales"),
        Arrive(session="s1", group="sales", priority=1),
        ConfigureGroup(group="sales", priority_unit_ms=1000),
        Arrive(session="s2", group="sales", priority=1),
        ConfigureAgent(agent="alice", capacity=1, abilities={"sales": 1.0}),
        SetAgentStatus(agent="alice", status="online"),
        ConfigureAgent(agent="alice", capacity=2, abilities={"sales": 1.0}),
    ])
    assert all(isinstance(i, Outcome) for i in items)
    # s1 keeps the U it was queued with; s2 is queued with the new one
    assert items[3].events == [Queued(session="s2", group="sales", virtual_arrival_ms=T0 - 1000,
                                      priority=1, position=2, reason="arrival")]
    # alice took s1 going online with capacity 1 and s2 when her capacity grew to 2
    assert [e.session for e in items[5].events[1:] + items[6].events[1:]] == ["s1", "s2"]


@pytest.mark.parametrize(
    ("bad", "exc_type"),
    [
        (Arrive(session="s9", group="ghost"), GroupUnknown),
        (Arrive(session="s9", group="sales", directed_agent="ghost"), AgentUnknown),
        (Arrive(session="s1", group="sales"), SessionExists),
        (Arrive(session="s 9", group="sales"), BadId),
        (Arrive(session="s9", group="sales", priority=5000), BadArgument),
        (ConfigureGroup(group="sales", tiers=[Tier(after_ms=0, groups=["sales"])]), BadTier),
        (ReleaseSession(session="nope"), SessionUnknown),
        (PrecloseSession(session="q"), SessionState),
        (TransferSession(session="q", to_agent="off"), AgentOffline),
        (TransferSession(session="q", to_agent="alice"), AgentBlocked),
        (Bogus(), UnknownOperation),
    ],
)
async def test_refused_command_in_the_middle_changes_nothing(engine, redis_client, tenant,
                                                            bad, exc_type):
    before = [
        *SETUP,
        ConfigureAgent(agent="off", capacity=1, abilities={"sales": 1.0}),
        Arrive(session="s1", group="sales"),
        Arrive(session="q", group="sales", blocked_agents=["alice"]),
    ]
    after = [Arrive(session="s2", group="sales"), ReleaseSession(session="s1")]
    items = await engine.apply_batch(tenant, T0, [*before, bad, *after])
    failed = items[len(before)]
    assert isinstance(failed, CommandFailed)
    assert type(from_reply(failed.error)) is exc_type
    other = tenant + "-ref"
    reference = await engine.apply_batch(other, T0, [*before, *after])
    assert items[: len(before)] + items[len(before) + 1 :] == reference
    assert strip_tenant(await dump_keyspace(redis_client, tenant), tenant) == strip_tenant(
        await dump_keyspace(redis_client, other), other)


async def test_unknown_op(engine, redis_client, tenant):
    await engine.apply_batch(tenant, T0, SETUP)
    before = await dump_keyspace(redis_client, tenant)
    items = await engine.apply_batch(tenant, T0, [Bogus(), 5, {"no": "op"}])
    assert items == [CommandFailed(error="E_UNKNOWN_OP no_such_op"),
                     CommandFailed(error="E_BAD_ARG command is not a map"),
                     CommandFailed(error="E_UNKNOWN_OP nil")]
    assert [type(from_reply(i.error)) for i in items] == [
        UnknownOperation, BadArgument, UnknownOperation]
    assert await dump_keyspace(redis_client, tenant) == before


async def test_two_hundred_arrivals_in_one_call(engine, tenant):
    setup = [ConfigureGroup(group="sales")]
    for name in ("alice", "bob"):
        setup += [ConfigureAgent(agent=name, capacity=50, abilities={"sales": 1.0}),
                  SetAgentStatus(agent=name, status="online")]
    await engine.apply_batch(tenant, T0, setup)
    arrivals = [Arrive(session=f"s{i:03d}", group="sales") for i in range(200)]
    items = await engine.apply_batch(tenant, T0 + SEC, arrivals)
    assert len(items) == 200 and all(isinstance(i, Outcome) for i in items)
    events = [i.events[0] for i in items]
    assert all(isinstance(e, Assigned) for e in events[:100])
    assert [e.agent for e in events[:4]] == ["alice", "bob", "alice", "bob"]
    assert events[100:] == [
        Queued(session=f"s{i:03d}", group="sales", virtual_arrival_ms=T0 + SEC, priority=0,
               position=i - 99, reason="arrival") for i in range(100, 200)]
    assert await engine.queue(tenant, "sales") == [
        QueueEntry(f"s{i:03d}", T0 + SEC) for i in range(100, 200)]
    assert [(await engine.agent(tenant, a)).load for a in ("alice", "bob")] == [50, 50]


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize("now", [-1, 10**15])
async def test_bad_now_refuses_the_whole_batch(engine, redis_client, tenant, now):
    await engine.apply_batch(tenant, T0, SETUP)
    await assert_refused(redis_client, tenant, BadArgument,
                         engine.apply_batch(tenant, now, [Arrive(session="s1", group="sales")]),
                         "now_ms")


@pytest.mark.parametrize("payload", [msgspec.msgpack.encode(5), b"\xc1"])
async def test_batch_that_is_not_a_msgpack_list(engine, redis_client, tenant, payload):
    await engine.apply_batch(tenant, T0, SETUP)
    before = await dump_keyspace(redis_client, tenant)
    with pytest.raises(ResponseError) as info:
        await redis_client.fcall(scripts.BATCH, 1, keys.root(tenant), T0, payload)
    assert type(from_reply(str(info.value))) is BadArgument
    assert await dump_keyspace(redis_client, tenant) == before
