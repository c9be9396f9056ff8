"""A real local Redis Cluster for the tests: 3 Valkey masters + 3 replicas on loopback,
started once per session the way ``dispatchd dev-cluster`` starts one
(:class:`dispatchd.devcluster.DevCluster`).

Fixtures (imported by tests/conftest.py): ``dev_cluster`` (session) — the running
cluster (``.url`` is its ``redis+cluster://`` URL); ``cluster_client`` (session) — a
``RedisCluster`` on it; ``cluster_engine`` (session) — an Engine on that client with the
library loaded on every master. A module runs its tests against the cluster by
overriding ``redis_client`` and ``engine`` with these (tests/test_cluster_*.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from dispatchd.connect import client_for
from dispatchd.devcluster import DevCluster
from dispatchd.engine import Engine


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    cluster = DevCluster(tmp_path_factory.mktemp("cluster"), 0)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
async def cluster_client(dev_cluster: DevCluster) -> AsyncIterator[RedisCluster]:
    client = client_for(dev_cluster.url, decode_responses=False)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def cluster_engine(cluster_client: RedisCluster) -> Engine:
    engine = Engine(cluster_client)  # type: ignore[arg-type]
    await engine.load_scripts()
    return engine


# --- fixture overrides: a test module that imports these three runs its tests (and the
# tests it imports from other modules) on the session's dev cluster instead of the
# single server (``from cluster_helpers import engine, redis_client, redis_url``).


@pytest.fixture(scope="session", name="redis_url")
def cluster_redis_url(dev_cluster: DevCluster) -> str:
    return dev_cluster.url


@pytest.fixture(scope="session", name="redis_client")
def cluster_redis_client(cluster_client: RedisCluster) -> RedisCluster:
    return cluster_client


@pytest.fixture(scope="session", name="engine")
def cluster_engine_override(cluster_engine: Engine) -> Engine:
    return cluster_engine
