"""dispatchd on a real local Redis Cluster (3 Valkey masters + 3 replicas, started by
tests/cluster_helpers.py the way ``dispatchd dev-cluster`` starts one).

Scripts get the tenant's root key as KEYS[1] and derive every other key from it (see
dispatchd/keys.py); all of a tenant's keys share its ``{tenant}`` hash tag, so tenants
land on different shards and each script runs on its tenant's shard. On top of that: the
cluster URL, the library on every master, the per-shard consumer (tenants on every shard,
a tenant whose slot is resharded while commands flow, a master killed under load), and
``dispatchd run`` and ``dispatchd dev-cluster`` end to end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import key_slot
from test_observability import DaemonProcess, get

from dispatchd import keys, ops, scripts
from dispatchd.client import GatewayClient
from dispatchd.cluster_consumer import ClusterConsumer
from dispatchd.connect import BadURL, ClusterURL, client_for
from dispatchd.consumer import ConsumerOptions
from dispatchd.devcluster import DevCluster
from dispatchd.engine import Engine
from dispatchd.messages import Arrive, Assigned, ConfigureAgent, ConfigureGroup, SetAgentStatus
from dispatchd.settings import Settings, SettingsError

BIN = Path(sys.executable).parent / "dispatchd"


def tenants_on_distinct_shards(prefix: str = "tenant") -> list[str]:
    """Three tenant ids whose hash slots fall in the three different slot ranges."""
    step, found = 16384 // 3, {}
    i = 0
    while len(found) < 3:
        t = f"{prefix}{i}"
        found.setdefault(min(key_slot(keys.root(t).encode()) // step, 2), t)
        i += 1
    return [found[k] for k in sorted(found)]


def node_of(client: RedisCluster, tenant: str) -> str:
    return client.nodes_manager.get_node_from_slot(client.keyslot(keys.root(tenant))).name


# ------------------------------------------------------------------------- the URL


def test_cluster_urls_are_settings() -> None:
    ok = Settings.from_env({"DISPATCHD_REDIS_URL": "redis+cluster://u:p%40ss@h1:7000,h2,[::1]:7002"})
    url = ClusterURL(ok.redis_url or "")
    assert url.nodes == [("h1", 7000), ("h2", 6379), ("::1", 7002)]
    assert (url.username, url.password, url.tls) == ("u", "p@ss", False)
    assert ClusterURL("rediss+cluster://h:1/0").tls
    for bad, why in [("redis+cluster://", "at least one host:port"),
                     ("redis+cluster://h:1,,h:2", "at least one host:port"),
                     ("redis+cluster://h:x", "the port must be a number"),
                     ("redis+cluster://h:70000", "1-65535"),
                     ("redis+cluster://h:1/2", "only database 0"),
                     ("redis+cluster://h:1?x=1", "no query"),
                     ("cluster://h:1", "must start with")]:
        with pytest.raises(SettingsError, match=why):
            Settings.from_env({"DISPATCHD_REDIS_URL": bad})
        with pytest.raises(BadURL):
            ClusterURL(bad)


# ----------------------------------------------------------------- scripts, library


async def test_scripts_route_per_tenant_on_a_real_cluster(cluster_engine: Engine) -> None:
    engine = cluster_engine
    for tenant in tenants_on_distinct_shards("route"):
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
    tenant = tenants_on_distinct_shards("batch")[1]
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


async def test_the_library_is_on_every_master_and_readiness_checks_each(
        cluster_engine: Engine, dev_cluster: DevCluster) -> None:
    library = cluster_engine.library
    app = ops.OpsApp(cluster_engine, consumer_stale_s=1e9)
    assert await library.server_version() == (scripts.LIBRARY_VERSION, scripts.build())
    assert (await app.readiness())["scripts"] == "ok"
    one = dev_cluster.client(dev_cluster.masters[1])
    try:
        one.function_delete(scripts.LIBRARY)  # one master lost it (a new, empty master)
        assert await library.server_version() is None
        assert (await app.readiness())["scripts"] == "the dispatchd function library is not loaded"
        assert await library.ensure() == "loaded"
        assert one.fcall_ro(scripts.VERSION, 0).decode() == (
            f"{scripts.LIBRARY_VERSION} {scripts.build()}")
        assert await library.ensure() == "present"
        assert (await app.readiness())["scripts"] == "ok"
    finally:
        one.close()


# ------------------------------------------------------------------ the consumer


async def setup_queue(engine: Engine, tenant: str) -> None:
    await engine.configure_group(tenant, 0, "g")  # no agent: every arrival is queued


async def send_arrivals(client: GatewayClient, n: int, first: int = 0,
                        pause_s: float = 0.0) -> None:
    for i in range(first, first + n):
        for attempt in range(50):
            try:
                await client.arrive(f"s{i}", "g", id=f"c{i}")
                break
            except redis.RedisError:
                # as a gateway does: send again (the same command id is applied once);
                # redis-py can give up on a key whose slot is migrating ("TTL exhausted")
                await asyncio.sleep(0.05 * (attempt + 1))
        if pause_s:
            await asyncio.sleep(pause_s)


async def queued_cmds(client: RedisCluster, tenant: str) -> list[str]:
    rows = await client.xrange(keys.key("outbound", tenant))
    out = []
    for _, fields in rows:
        if fields.get(b"type") == b"queued" or b'"queued"' in fields.get(b"json", b""):
            import json

            out.append(json.loads(fields[b"json"])["cmd"] if b"json" in fields
                       else fields[b"cmd"].decode())
    return out


async def wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(cluster_engine: Engine) -> AsyncIterator[Any]:
    """Starts a ClusterConsumer loop (wall clock) for given tenants; stopped after."""
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(tenants: tuple[str, ...], engine: Engine = cluster_engine, *,
              heartbeat_ms: int = 0, name: str | None = None) -> ClusterConsumer:
        opts = ConsumerOptions(tenants=tenants, discover=False, block_ms=20, tick_ms=100,
                               lease_ms=2000, tenants_refresh_ms=500, heartbeat_ms=heartbeat_ms)
        consumer = ClusterConsumer(engine, opts, name=name)
        stop = asyncio.Event()
        started.append((stop, asyncio.create_task(consumer.run(stop))))
        return consumer

    yield start
    for stop, task in started:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_one_loop_per_shard_serves_tenants_on_every_master(
        cluster_engine: Engine, cluster_client: RedisCluster, running: Any) -> None:
    tenants = tuple(tenants_on_distinct_shards("shard"))
    for t in tenants:
        await setup_queue(cluster_engine, t)
    consumer = running(tenants)
    clients = [GatewayClient(cluster_client, t, gateway="web") for t in tenants]  # type: ignore[arg-type]
    await asyncio.gather(*(send_arrivals(c, 20) for c in clients))
    for t in tenants:
        await wait_for(f"{t} applied", lambda t=t: _all_queued(cluster_client, t, 20))
    assert {s.node: sorted(s.tenants) for s in consumer.shards.values()} == {
        node_of(cluster_client, t): [t] for t in tenants}
    for t in tenants:
        assert await queued_cmds(cluster_client, t) == [f"c{i}" for i in range(20)]


async def test_replicas_on_a_cluster_share_the_tenants_of_every_shard(
        cluster_engine: Engine, cluster_client: RedisCluster, running: Any) -> None:
    """Two replicas with membership: each tenant held by exactly one, both hold some,
    commands of every tenant applied; the shard loops of a replica share one heartbeat."""
    tenants = tuple(f"share{i}" for i in range(12))
    for t in tenants:
        await setup_queue(cluster_engine, t)
    a = running(tenants, heartbeat_ms=100, name="replica-a")
    b = running(tenants, heartbeat_ms=100, name="replica-b")

    async def split() -> bool:
        held = [{n for n, t in c.tenants.items() if t.held} for c in (a, b)]
        return held[0] | held[1] == set(tenants) and not held[0] & held[1] and all(held)

    await wait_for("the tenants split between the replicas", split)
    for t in tenants:
        await GatewayClient(cluster_client, t, gateway="web").arrive(  # type: ignore[arg-type]
            "s0", "g", id="c0")
    for t in tenants:
        await wait_for(t, lambda t=t: _all_queued(cluster_client, t, 1))
    members = await cluster_client.zrange(keys.REPLICAS_KEY, 0, -1)
    assert {b"replica-a", b"replica-b"} <= set(members)


async def _all_queued(client: RedisCluster, tenant: str, n: int) -> bool:
    return len(await queued_cmds(client, tenant)) >= n


def _migrate_slot(dev: DevCluster, slot: int, src_port: int, dst_port: int) -> None:
    """Move ``slot`` from one master to another the classic way (IMPORTING/MIGRATING,
    MIGRATE key by key, SETSLOT NODE), as ``valkey-cli --cluster reshard`` does."""
    src, dst = dev.client(src_port), dev.client(dst_port)
    try:
        src_id = src.execute_command("CLUSTER", "MYID").decode()
        dst_id = dst.execute_command("CLUSTER", "MYID").decode()
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while True:
            names = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10)
            if not names:
                break
            src.execute_command("MIGRATE", "127.0.0.1", dst_port, "", 0, 5000,
                                "AUTH", dev.password, "KEYS", *names)
            time.sleep(0.05)  # commands keep flowing meanwhile (ASK / TRYAGAIN)
        for port in dev.masters:
            c = dev.client(port)
            try:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            except redis.ResponseError:
                pass  # a node that no longer serves masters
            finally:
                c.close()
    finally:
        src.close()
        dst.close()


async def test_a_resharded_tenant_moves_to_its_new_shard_in_order(
        cluster_engine: Engine, cluster_client: RedisCluster, dev_cluster: DevCluster,
        running: Any) -> None:
    tenant = tenants_on_distinct_shards("moving")[0]
    await setup_queue(cluster_engine, tenant)
    consumer = running((tenant,))
    client = GatewayClient(cluster_client, tenant, gateway="web")  # type: ignore[arg-type]
    await send_arrivals(client, 30)
    await wait_for("the first 30", lambda: _all_queued(cluster_client, tenant, 30))
    before = node_of(cluster_client, tenant)
    src_port = int(before.rsplit(":", 1)[1])
    dst_port = next(p for p in dev_cluster.masters if p != src_port)
    slot = key_slot(keys.root(tenant).encode())
    sender = asyncio.create_task(send_arrivals(client, 120, first=30, pause_s=0.005))
    await asyncio.to_thread(_migrate_slot, dev_cluster, slot, src_port, dst_port)
    await sender
    await wait_for("all 150", lambda: _all_queued(cluster_client, tenant, 150), timeout=30)
    assert await queued_cmds(cluster_client, tenant) == [f"c{i}" for i in range(150)]
    assert node_of(cluster_client, tenant) == f"127.0.0.1:{dst_port}"
    await wait_for("the tenant in the new shard's loop",
                   lambda: _in_shard(consumer, tenant, dst_port))
    assert await cluster_client.xlen(keys.key("inbound", tenant)) == 0


async def _in_shard(consumer: ClusterConsumer, tenant: str, port: int) -> bool:
    shard = consumer.shards.get(f"127.0.0.1:{port}")
    return shard is not None and tenant in shard.tenants


async def test_a_master_killed_under_load_its_replica_takes_over(
        tmp_path: Path, running: Any) -> None:
    """A cluster of its own (this kills one of its masters): commands sent while the
    master dies and its replica is promoted are all applied, once, in order."""
    with DevCluster(tmp_path / "c", 0) as dev:
        client = client_for(dev.url)
        await client.initialize()
        try:
            engine = Engine(client)
            await engine.load_scripts()
            tenant = tenants_on_distinct_shards("failover")[0]
            await setup_queue(engine, tenant)
            running((tenant,), engine)
            gw = GatewayClient(client, tenant, gateway="web")
            await send_arrivals(gw, 20)
            await wait_for("the first 20", lambda: _all_queued(client, tenant, 20))
            # WAIT: the replica has everything so far (replication is asynchronous)
            await client.execute_command("WAIT", 1, 2000, target_nodes=client.get_node_from_key(
                keys.root(tenant)))
            port = int(node_of(client, tenant).rsplit(":", 1)[1])
            dev.kill(port)
            started = time.monotonic()
            sent = 20
            while time.monotonic() - started < 30:
                try:
                    await gw.arrive(f"s{sent}", "g", id=f"c{sent}")
                    sent += 1
                    if sent >= 60:
                        break
                except (redis.RedisError, OSError):
                    await asyncio.sleep(0.2)  # a gateway retries until the new master answers
            await wait_for("every command applied", lambda: _all_queued(client, tenant, sent),
                           timeout=30)
            assert await queued_cmds(client, tenant) == [f"c{i}" for i in range(sent)]
            assert node_of(client, tenant) != f"127.0.0.1:{port}"
        finally:
            await client.aclose()


# ------------------------------------------------------------------ end to end


def test_dispatchd_run_on_the_cluster(tmp_path: Path, dev_cluster: DevCluster) -> None:
    """``dispatchd run`` with a redis+cluster:// URL: ready (library on every master),
    applies gateway commands of tenants on every shard, samples their metrics."""
    tenants = tenants_on_distinct_shards("e2e")
    daemon = DaemonProcess(tmp_path, dev_cluster.url, ",".join(tenants))
    try:
        async def drive() -> None:
            client = client_for(dev_cluster.url)
            try:
                engine = Engine(client)
                for t in tenants:
                    await setup_queue(engine, t)
                    await GatewayClient(client, t, gateway="web").arrive("s1", "g", id="c1")
                for t in tenants:
                    await wait_for(t, lambda t=t: _all_queued(client, t, 1))
            finally:
                await client.aclose()

        asyncio.run(drive())
        deadline = time.monotonic() + 10
        while True:
            body = get(daemon.url + "/metrics")[1].decode()
            if all(f'dispatchd_queued_sessions{{group="g",tenant="{t}"}} 1.0' in body
                   for t in tenants):
                break
            assert time.monotonic() < deadline, body[-2000:]
            time.sleep(0.2)
        status, ready = get(daemon.url + "/readyz")
        assert status == 200, ready
    finally:
        assert daemon.stop() == 0
    log = (tmp_path / "dispatchd.log").read_text()
    assert dev_cluster.password not in log
    assert log.count("shard loop started") == 3


def test_dev_cluster_command(tmp_path: Path) -> None:
    """``dispatchd dev-cluster`` prints a URL that works, and Ctrl-C stops every node."""
    # below Linux's ephemeral range (32768-60999) with the bus ports (+10000) too, so that
    # no client socket of another test can hold one of them
    base = 10000 + (os.getpid() % 1200) * 10
    proc = subprocess.Popen([str(BIN), "dev-cluster", "--dir", str(tmp_path), "--base-port",
                             str(base)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("DISPATCHD_REDIS_URL="):
                url = line.split("=", 1)[1].strip().strip("'")
                break
        assert url.startswith("redis+cluster://default:")
        assert url.endswith(",".join(f"127.0.0.1:{base + i}" for i in range(3)))
        password = (tmp_path / "valkey.password").read_text().strip()
        c = redis.RedisCluster(host="127.0.0.1", port=base, password=password)
        assert c.set("{x}k", "v") and c.get("{x}k") == b"v"
        c.close()
        for i in range(6):
            node = redis.Redis(port=base + i, password=password)
            assert node.info("replication")["role"] == ("master" if i < 3 else "slave")
            # the six nodes know each other (a node of another test's cluster that once had
            # one of these addresses can show up in handshake, briefly: not counted)
            lines = node.execute_command("CLUSTER", "NODES")
            text = lines.decode() if isinstance(lines, bytes) else str(lines)
            ports = {int(f[1].split("@")[0].rpartition(":")[2]) for f in
                     (line.split() for line in text.splitlines() if line.strip())
                     if not {"handshake", "noaddr", "fail"} & set(f[2].split(","))}
            assert ports == {base + n for n in range(6)}, text
            node.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "local cluster stopped" in out
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=base, socket_connect_timeout=1).ping()
