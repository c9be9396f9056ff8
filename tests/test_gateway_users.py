"""Gateway ACL users: least privilege over real connections, and ``dispatchd gateway-user``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from dispatchd import gateway_users, keys
from dispatchd.client import GatewayClient
from dispatchd.embedded import EmbeddedValkey
from dispatchd.engine import Engine
from tests.gateway_helpers import open_gateway

BIN = Path(sys.executable).parent / "dispatchd"


def user_url(server_url: str, name: str, password: str) -> str:
    return gateway_users.gateway_url(server_url, name, password)


@pytest.fixture
async def gateway_user(
    redis_url: str, redis_client: aioredis.Redis, tenant: str
) -> AsyncIterator[aioredis.Redis]:
    """A connection as a fresh gateway user of ``tenant``."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    password = gateway_users.add(admin, tenant, name)
    conn = aioredis.Redis.from_url(user_url(redis_url, name, password), decode_responses=False)
    try:
        yield conn
    finally:
        await conn.aclose()
        gateway_users.remove(admin, name, tenant)
        admin.close()


async def test_gateway_user_speaks_the_protocol(
    engine: Engine, redis_client: aioredis.Redis, tenant: str, gateway_user: aioredis.Redis
) -> None:
    async with open_gateway(engine, redis_client, tenant) as gw:
        await gw.group("billing")
        client = GatewayClient(gateway_user, tenant, gateway="web")
        await client.arrive("s1", "billing", customer="c1")
        events = await gw.pump()
        assert [e["type"] for e in events] == ["queued"]
        # read back as that user: XREAD, XREVRANGE (GatewayClient.events), XLEN
        seen = await client.read_events()
        assert [e["type"] for e in seen] == ["queued"]
        assert await gateway_user.xrevrange(keys.key("outbound", tenant), count=1)
        assert await gateway_user.xlen(keys.key("outbound", tenant)) == 1
        assert await gateway_user.ping()


Call = Callable[[aioredis.Redis], Awaitable[Any]]
OTHER = "other-tenant"


def _refused_calls(t: str) -> dict[str, Call]:
    inbound, outbound, dead = (keys.key(n, t) for n in ("inbound", "outbound", "dead"))
    return {
        "XADD to its outbound stream": lambda c: c.xadd(outbound, {"json": "{}"}),
        "read its inbound stream": lambda c: c.xrange(inbound),
        "XREAD its inbound stream": lambda c: c.xread({inbound: "0-0"}),
        "trim its inbound stream": lambda c: c.xtrim(inbound, maxlen=0),
        "XDEL from its inbound stream": lambda c: c.xdel(inbound, "1-0"),
        "delete its inbound stream": lambda c: c.delete(inbound),
        "read dead letters": lambda c: c.xrange(dead),
        "read the tokens": lambda c: c.hgetall(keys.TOKENS_KEY),
        "write the tokens": lambda c: c.hset(keys.TOKENS_KEY, "x", "y"),
        "read routing state": lambda c: c.hgetall(keys.root(t)),
        "read a queue": lambda c: c.zrange(keys.key("queue", t, "billing"), 0, -1),
        "read the tenant set": lambda c: c.smembers(keys.TENANTS_KEY),
        "write another tenant's inbound": lambda c: c.xadd(keys.key("inbound", OTHER),
                                                           {"json": "{}"}),
        "read another tenant's outbound": lambda c: c.xread({keys.key("outbound", OTHER): "0"}),
        "FCALL": lambda c: c.fcall("dispatchd_gateway", 1, keys.root(t)),
        "EVAL": lambda c: c.eval("return 1", 0),
        "CONFIG": lambda c: c.config_get("*"),
        "KEYS": lambda c: c.keys("*"),
        "SCAN": lambda c: c.scan(0),
        "FLUSHALL": lambda c: c.flushall(),
        "FLUSHDB": lambda c: c.flushdb(),
        "ACL": lambda c: c.acl_list(),
        "INFO": lambda c: c.info(),
        "PUBLISH": lambda c: c.publish("x", "y"),
        "SHUTDOWN": lambda c: c.execute_command("SHUTDOWN", "NOSAVE"),
        "XGROUP on its outbound": lambda c: c.xgroup_create(outbound, "mine", id="0"),
    }


@pytest.mark.parametrize("what", list(_refused_calls("t")))
async def test_gateway_user_can_do_nothing_else(
    what: str, tenant: str, redis_client: aioredis.Redis, gateway_user: aioredis.Redis
) -> None:
    await redis_client.xadd(keys.key("inbound", tenant), {"json": "{}"})
    await redis_client.hset(keys.TOKENS_KEY, "canary", "1")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await _refused_calls(tenant)[what](gateway_user)
        assert await redis_client.hget(keys.TOKENS_KEY, "canary") == b"1"
        assert await redis_client.xlen(keys.key("inbound", tenant)) == 1
    finally:
        await redis_client.hdel(keys.TOKENS_KEY, "canary")
        await redis_client.delete(keys.key("inbound", tenant))


def test_acl_rules_name_only_the_tenants_streams() -> None:
    rules = gateway_users.acl_rules("acme", "pw")
    assert [r for r in rules if "~" in r] == ["%W~{acme}:in", "%R~{acme}:out"]
    assert rules[:5] == ["reset", "on", ">pw", "resetchannels", "-@all"]


# ------------------------------------------------------------------ the CLI command


def run_cli(*args: str, data_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {"DISPATCHD_DATA_DIR": str(data_dir), **extra}
    return subprocess.run([str(BIN), "gateway-user", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def printed(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_cli_users_on_the_embedded_server_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli("add", "--tenant", "acme", "web1", data_dir=data)
    assert made.returncode == 0, made.stderr
    shown = printed(made.stdout)
    assert shown.keys() == {"user", "tenant", "password", "url"}
    assert (shown["user"], shown["tenant"]) == ("web1", "acme")
    assert len(shown["password"]) == 64
    assert shown["password"] not in (data / "users.acl").read_text()  # a hash only
    assert run_cli("list", data_dir=data).stdout == "web1\tacme\n"

    # no daemon ran: the command started the server and stopped it; a new start keeps the user
    with EmbeddedValkey(data) as server:
        url = user_url(server.url, "web1", shown["password"])
        conn = redis.Redis.from_url(url)
        try:
            assert conn.xadd("{acme}:in", {"json": "{}"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                conn.hgetall(keys.TOKENS_KEY)
        finally:
            conn.close()
        # while a server runs on the data dir, the command uses that one
        again = run_cli("add", "--tenant", "acme", "web1", data_dir=data)
        assert again.returncode == 1
        assert "exists already" in again.stderr
        other = run_cli("add", "--tenant", "beta", "web2", data_dir=data)
        assert other.returncode == 0, other.stderr
        assert urlsplit(printed(other.stdout)["url"]).port == server.port
        assert run_cli("list", data_dir=data).stdout == "web1\tacme\nweb2\tbeta\n"
        assert run_cli("list", "--tenant", "beta", data_dir=data).stdout == "web2\tbeta\n"

        wrong = run_cli("remove", "--tenant", "beta", "web1", data_dir=data)
        assert wrong.returncode == 1
        assert "no gateway user 'web1' of tenant 'beta'" in wrong.stderr
        assert run_cli("remove", "web1", data_dir=data).returncode == 0
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url).ping()
    assert run_cli("list", data_dir=data).stdout == "web2\tbeta\n"


@pytest.mark.parametrize("args", [
    ("add", "web1"),                            # no tenant
    ("add", "--tenant", "a:b", "web1"),         # not a tenant id
    ("add", "--tenant", "acme", "default"),     # the server's own user
    ("add", "--tenant", "acme", "no spaces"),
    ("remove",),
])
def test_cli_bad_command_line_exits_2(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli(*args, data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "usage: dispatchd gateway-user" in result.stderr
    assert not (tmp_path / "data").exists()


def test_cli_not_a_gateway_user_is_not_removed(redis_url: str, tmp_path: Path) -> None:
    result = run_cli("remove", "default", data_dir=tmp_path, DISPATCHD_REDIS_URL=redis_url)
    assert result.returncode == 2  # 'default' is refused as a name
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.acl_setuser("ops-person", enabled=True, passwords=["+pw"], commands=["+@all"],
                          keys=["*"])
        result = run_cli("remove", "ops-person", data_dir=tmp_path, DISPATCHD_REDIS_URL=redis_url)
        assert result.returncode == 1
        assert "no gateway user 'ops-person'" in result.stderr
        assert admin.acl_getuser("ops-person") is not None
    finally:
        admin.acl_deluser("ops-person")
        admin.close()


def test_cli_on_an_external_server(redis_url: str, tmp_path: Path) -> None:
    made = run_cli("add", "--tenant", "ext", "ext-gw", data_dir=tmp_path,
                   DISPATCHD_REDIS_URL=redis_url)
    try:
        assert made.returncode == 0, made.stderr
        url = printed(made.stdout)["url"]
        assert urlsplit(url).username == "ext-gw"
        assert urlsplit(url).port == urlsplit(redis_url).port
        conn = redis.Redis.from_url(url)
        assert conn.xadd("{ext}:in", {"json": "{}"})
        conn.close()
        assert not (tmp_path / ".dispatchd").exists()  # no embedded server was started
    finally:
        assert run_cli("remove", "ext-gw", data_dir=tmp_path,
                       DISPATCHD_REDIS_URL=redis_url).returncode == 0
        admin = redis.Redis.from_url(redis_url)
        admin.delete("{ext}:in")
        admin.close()


def test_cli_on_a_cluster_makes_the_user_on_every_node(dev_cluster: Any, tmp_path: Path) -> None:
    """ACL users are per node in Redis Cluster: the user is made on every node (masters
    and replicas), a cluster client can use it, and it can do nothing else there."""
    from redis.cluster import ClusterNode, RedisCluster

    url = dev_cluster.url
    made = run_cli("add", "--tenant", "clu", "clu-gw", data_dir=tmp_path,
                   DISPATCHD_REDIS_URL=url)
    try:
        assert made.returncode == 0, made.stderr
        shown = printed(made.stdout)
        assert shown["url"].startswith("redis+cluster://clu-gw:")
        password = shown["password"]
        for port in dev_cluster.ports:  # masters and replicas alike
            node = redis.Redis(port=port, username="clu-gw", password=password)
            assert node.ping()
            node.close()
        hosts = [ClusterNode("127.0.0.1", p) for p in dev_cluster.masters]
        gw = RedisCluster(startup_nodes=hosts, username="clu-gw", password=password)
        try:
            assert gw.xadd("{clu}:in", {"json": "{}"})
            assert gw.xread({"{clu}:out": "0-0"}, count=1) == []
            with pytest.raises(redis.exceptions.NoPermissionError):
                gw.xadd("{other}:in", {"json": "{}"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                gw.get("{dispatchd}:tokens")
        finally:
            gw.close()
        listed = run_cli("list", data_dir=tmp_path, DISPATCHD_REDIS_URL=url)
        assert "clu-gw\tclu" in listed.stdout.splitlines()
    finally:
        assert run_cli("remove", "clu-gw", data_dir=tmp_path,
                       DISPATCHD_REDIS_URL=url).returncode == 0
    for port in dev_cluster.ports:
        node = redis.Redis(port=port, password=dev_cluster.password)
        assert node.execute_command("ACL", "GETUSER", "clu-gw") is None  # gone everywhere
        node.close()
