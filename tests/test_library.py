"""The Function library: loaded once, versioned, reloaded when it goes missing, and its
functions keep nothing from one call to the next."""

from __future__ import annotations

import msgspec
import pytest
import redis.asyncio as aioredis

from dispatchd import keys, scripts
from dispatchd.engine import Engine
from dispatchd.messages import (
    Arrive,
    Assigned,
    ConfigureAgent,
    ConfigureGroup,
    Queued,
    SetAgentStatus,
)

T0 = 1_700_000_000_000


def _pairs(reply: object) -> dict[bytes, object]:
    """A RESP2 map (a flat list of keys and values) or a RESP3 one as a dict."""
    if isinstance(reply, dict):
        return reply
    assert isinstance(reply, list)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _fake_library(version: int) -> str:
    return (f"#!lua name={scripts.LIBRARY}\n"
            f"redis.register_function{{function_name='{scripts.VERSION}',"
            f" flags={{'no-writes'}}, callback=function() return '{version} other' end}}\n")


async def test_loaded_once_and_listed(engine: Engine, redis_client: aioredis.Redis) -> None:
    assert await engine.load_scripts() == {
        "library": "dispatchd", "version": str(scripts.LIBRARY_VERSION),
        "build": scripts.build(), "action": "present"}
    [lib] = await redis_client.function_list(library=scripts.LIBRARY)
    names = {_pairs(f)[b"name"].decode() for f in _pairs(lib)[b"functions"]}
    assert {scripts.GATEWAY, scripts.BATCH, scripts.ADMIN, scripts.VERSION} <= names
    assert {scripts.function_name(op) for op in scripts.operations()} <= names
    assert await scripts.Library(redis_client).server_version() == (
        scripts.LIBRARY_VERSION, scripts.build())


async def test_a_newer_library_is_refused(redis_client: aioredis.Redis, tenant: str) -> None:
    library = scripts.Library(redis_client)
    try:
        await redis_client.function_load(_fake_library(scripts.LIBRARY_VERSION + 1),
                                         replace=True)
        with pytest.raises(scripts.LibraryError, match="newer than this daemon"):
            await library.ensure()
        # an older one is replaced
        await redis_client.function_load(_fake_library(scripts.LIBRARY_VERSION - 1),
                                         replace=True)
        assert await library.ensure() == "loaded"
    finally:
        await redis_client.function_load(scripts.library_source(), replace=True)
    assert await library.server_version() == (scripts.LIBRARY_VERSION, scripts.build())


async def test_a_missing_library_is_loaded_again(engine: Engine,
                                                 redis_client: aioredis.Redis,
                                                 tenant: str) -> None:
    try:
        await redis_client.function_flush()
        outcome = await engine.apply(tenant, T0, ConfigureGroup(group="g"))
        assert outcome.events[0].group == "g"  # type: ignore[union-attr]
    finally:
        await engine.load_scripts()


async def test_no_state_carries_over_between_calls(engine: Engine, tenant: str) -> None:
    # The group config and agent caches are upvalues of the library: a stale cache from
    # the call before (another tenant, or this one before a change) would route wrongly.
    other = tenant + "x"
    await engine.apply_batch(other, T0, [
        ConfigureGroup(group="g"),
        ConfigureAgent(agent="a", capacity=1, abilities={"g": 1.0}),
        SetAgentStatus(agent="a", status="online"),
    ])
    await engine.apply(tenant, T0, ConfigureGroup(group="g"))
    # same group and agent ids in another tenant: this tenant has no agent online
    out = await engine.apply(tenant, T0, Arrive(session="s1", group="g"))
    assert isinstance(out.events[0], Queued)
    out = await engine.apply(other, T0, Arrive(session="s1", group="g"))
    assert isinstance(out.events[0], Assigned)


async def test_a_bad_root_key_is_refused(redis_client: aioredis.Redis) -> None:
    with pytest.raises(Exception, match="E_BAD_ARG root key"):
        await redis_client.fcall(scripts.BATCH, 1, "x", T0, msgspec.msgpack.encode([]))
    # a proper root key works
    assert msgspec.msgpack.decode(await redis_client.fcall(
        scripts.BATCH, 1, keys.root("tlib"), T0, msgspec.msgpack.encode([]))) == []
