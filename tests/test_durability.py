"""The ``durability`` setting: after the script calls of a round trip the gateway consumer
waits (``WAIT 1`` with ``replica``, ``WAITAOF 1 0`` with ``aof``) in the same pipelined
round trip, before its read; with ``none`` it sends no such command at all. A wait that
falls short (no replica, no AOF) is counted and logged, never fatal: the commands are
applied all the same. On the single test server (no replica) and on the real cluster of
tests/cluster_helpers.py (a replica per master)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
from gateway_helpers import open_gateway
from redis.asyncio.cluster import RedisCluster

from dispatchd import keys, metrics
from dispatchd.daemon import consumer_options
from dispatchd.devcluster import DevCluster
from dispatchd.engine import Engine
from dispatchd.settings import Settings, SettingsError


def failures() -> float:
    return metrics.REGISTRY.get_sample_value("dispatchd_durability_wait_failures_total") or 0.0


async def calls(client: Any, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def arrivals(gw: Any, n: int) -> list[dict[str, Any]]:
    await gw.group("g")
    for i in range(n):
        await gw.send({"type": "arrive", "id": f"c{i}", "session": f"s{i}", "group": "g"})
    return await gw.pump()


# --------------------------------------------------------------------------- setting


def test_durability_settings() -> None:
    assert Settings.from_env({}).durability == "none"
    s = Settings.from_env({"DISPATCHD_DURABILITY": "replica",
                           "DISPATCHD_DURABILITY_TIMEOUT_MS": "250"})
    opts = consumer_options(s)
    assert (opts.durability, opts.durability_timeout_ms) == ("replica", 250)
    assert Settings.from_env({"DISPATCHD_DURABILITY": "aof"}).durability == "aof"
    with pytest.raises(SettingsError) as bad:
        Settings.from_env({"DISPATCHD_DURABILITY": "sync"})
    assert "DISPATCHD_DURABILITY='sync'" in str(bad.value)
    assert "none" in str(bad.value) and "replica" in str(bad.value)
    with pytest.raises(SettingsError, match="DISPATCHD_DURABILITY_TIMEOUT_MS"):
        Settings.from_env({"DISPATCHD_DURABILITY_TIMEOUT_MS": "0"})


# ------------------------------------------------------------------- single server


async def test_none_sends_no_wait(engine: Engine, redis_client: aioredis.Redis,
                                  tenant: str) -> None:
    before = (await calls(redis_client, "wait"), await calls(redis_client, "waitaof"))
    async with open_gateway(engine, redis_client, tenant) as gw:
        events = await arrivals(gw, 5)
    assert [e["type"] for e in events] == ["queued"] * 5
    assert (await calls(redis_client, "wait"), await calls(redis_client, "waitaof")) == before


async def test_replica_without_a_replica_is_counted_not_fatal(
        engine: Engine, redis_client: aioredis.Redis, tenant: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The test server has no replica: every WAIT 1 times out with 0; the commands are
    applied all the same, each short wait is counted, a warning is logged."""
    waits, failed = await calls(redis_client, "wait"), failures()
    caplog.set_level(logging.WARNING, logger="dispatchd.consumer")
    async with open_gateway(engine, redis_client, tenant,
                            options={"durability": "replica",
                                     "durability_timeout_ms": 5}) as gw:
        events = await arrivals(gw, 5)
        steps = gw.steps
    assert [e["type"] for e in events] == ["queued"] * 5
    assert await calls(redis_client, "wait") > waits
    assert failures() > failed
    assert failures() - failed <= steps + 1  # at most one per round trip
    assert any("durability wait fell short" in r.getMessage() for r in caplog.records)


async def test_aof_waits_for_the_fsync(engine: Engine, redis_client: aioredis.Redis,
                                       tenant: str) -> None:
    """WAITAOF 1 0 on a server without appendonly is an error reply: counted, not fatal;
    with appendonly on it succeeds and nothing is counted."""
    failed = failures()
    async with open_gateway(engine, redis_client, tenant,
                            options={"durability": "aof", "durability_timeout_ms": 2000}) as gw:
        events = await arrivals(gw, 3)
        assert [e["type"] for e in events] == ["queued"] * 3
        assert failures() > failed
        await redis_client.config_set("appendonly", "yes")
        try:
            for _ in range(100):  # the AOF is rewritten in the background first
                info = await redis_client.info("persistence")
                if not info.get("aof_rewrite_in_progress") and info.get("aof_enabled"):
                    break
                await gw.pump(timeout_s=0.1)
            waitaofs, failed = await calls(redis_client, "waitaof"), failures()
            for i in range(3, 6):
                await gw.send({"type": "arrive", "id": f"c{i}", "session": f"s{i}",
                               "group": "g"})
            assert [e["type"] for e in await gw.pump()] == ["queued"] * 3
            assert await calls(redis_client, "waitaof") > waitaofs
            assert failures() == failed
        finally:
            await redis_client.config_set("appendonly", "no")


# ------------------------------------------------------------------------- cluster


async def test_replica_on_a_cluster_waits_on_the_tenants_master(
        cluster_engine: Engine, cluster_client: RedisCluster, dev_cluster: DevCluster,
        tenant: str) -> None:
    """Each master has a replica in sync: the shard loop's WAIT reaches it (sent on the
    tenant's master, nothing counted as failed)."""
    node = cluster_client.get_node_from_key(keys.root(tenant))
    master = dev_cluster.client(node.port)
    try:
        waits, failed = int(master.info("commandstats").get("cmdstat_wait", {}).get(
            "calls", 0)), failures()
        async with open_gateway(cluster_engine, cluster_client, tenant,  # type: ignore[arg-type]
                                options={"durability": "replica",
                                         "durability_timeout_ms": 2000}) as gw:
            events = await arrivals(gw, 5)
        assert [e["type"] for e in events] == ["queued"] * 5
        after = int(master.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
        assert after > waits
        assert failures() == failed
    finally:
        master.close()
