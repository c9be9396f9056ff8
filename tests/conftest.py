"""Shared fixtures: one real server per session, uvloop, a fresh tenant per test.

Fixture names are a contract the test modules rely on:

* ``valkey_server`` (session): an embedded Valkey on a free loopback port (``.url``).
* ``redis_url`` (session): that server's URL, or ``DISPATCHD_TEST_REDIS_URL`` when set (then
  no server is started).
* ``redis_client`` (session, async): ``redis.asyncio.Redis`` with ``decode_responses=False``.
* ``engine`` (session, async): an :class:`~dispatchd.engine.Engine` with its scripts loaded.
* ``tenant`` (per test): a fresh tenant id, so tests never see each other's keys.
* ``api`` (session), ``atenant``: the admin API served over real HTTP, and a fresh tenant
  made through it (``tests/admin_helpers.py``).

Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``: ``default`` (when unset; ``ci`` is the
same profile under its old name), which keeps the whole suite within about 8 minutes on 2
cores, and ``long`` (``dev`` is its old name), the explicit opt-in for long property runs
(400 examples of up to 200 steps, about half an hour): under ``long`` no test has a
per-test timeout, so pytest-timeout cannot cut a long run short.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import redis.asyncio as aioredis
import uvloop
from hypothesis import HealthCheck, settings

from dispatchd.embedded import EmbeddedValkey
from dispatchd.engine import Engine
from tests.admin_helpers import api, atenant  # noqa: F401  (fixtures of the admin tests)
from tests.cluster_helpers import (  # noqa: F401  (fixtures of the cluster tests)
    cluster_client,
    cluster_engine,
    dev_cluster,
)

_DEFAULT = {"max_examples": 60, "stateful_step_count": 50, "deadline": None,
            "suppress_health_check": [HealthCheck.too_slow]}
_LONG = {"max_examples": 400, "stateful_step_count": 200, "deadline": None}
for _name, _profile in (("default", _DEFAULT), ("ci", _DEFAULT), ("long", _LONG),
                        ("dev", _LONG)):
    settings.register_profile(_name, **_profile)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "default"
LONG_PROFILES = ("long", "dev")
settings.load_profile(PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    long = " (long: no per-test timeout)" if PROFILE in LONG_PROFILES else ""
    return f"hypothesis profile: {PROFILE}{long} (HYPOTHESIS_PROFILE=long for long runs)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under a long profile, no test is cut by pytest-timeout (a marker beats the ini)."""
    if PROFILE in LONG_PROFILES:
        for item in items:
            item.add_marker(pytest.mark.timeout(0))


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test and fixture runs on uvloop, like the daemon.

    pytest-asyncio >= 1.4 hook; it replaces overriding the ``event_loop_policy`` fixture,
    which that version deprecates (and which asyncio deprecates from Python 3.14).
    """
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """An embedded Valkey for the whole session; no append-only file (nothing to keep)."""
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), append_only=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The test server's URL: ``DISPATCHD_TEST_REDIS_URL`` or the embedded Valkey."""
    external = os.environ.get("DISPATCHD_TEST_REDIS_URL")
    if external:
        return external
    server: EmbeddedValkey = request.getfixturevalue("valkey_server")
    return server.url


@pytest.fixture(scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """One async client for the session (bytes in, bytes out)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
async def engine(redis_client: aioredis.Redis) -> Engine:
    """The routing engine on the test server, every script loaded once."""
    engine = Engine(redis_client)
    await engine.load_scripts()
    return engine


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses."""
    return "t" + uuid.uuid4().hex[:12]
