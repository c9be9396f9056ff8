"""The ops listener over real HTTP: /metrics, /healthz, /readyz (granian, in this loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dispatchd import metrics, observe, ops
from dispatchd.embedded import free_port
from dispatchd.engine import Engine
from dispatchd.settings import Settings


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@contextlib.asynccontextmanager
async def serving(engine: Engine, stale_s: float = 60.0) -> AsyncIterator[str]:
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(ops.serve(ops.OpsApp(engine, stale_s), "127.0.0.1", port, stop))
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            await asyncio.to_thread(fetch, url + "/healthz")
            break
        except OSError:
            await asyncio.sleep(0.05)
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(fetch, url, headers)


async def test_health_metrics_and_not_found(engine):
    observe.record_step()
    async with serving(engine) as url:
        assert (await get(url + "/healthz"))[::2] == (200, b"ok\n")
        status, headers, body = await get(url + "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert b"# TYPE dispatchd_commands_total counter" in body
        assert b"dispatchd_build_info{version=" in body
        status, headers, _ = await get(url + "/metrics", Accept="application/openmetrics-text")
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert (await get(url + "/nope"))[0] == 404
        status, _, body = await get(url + "/readyz")
        assert status == 200, body
        assert json.loads(body) == {"ready": True, "checks": {
            "redis": "ok", "scripts": "ok", "consumer": "ok", "state": "ok"}}


async def test_exposition_has_process_metrics_and_no_created_series(engine):
    """No ``*_created`` series (they were 29 % of the exposition, read by nothing), and
    the standard ``process_*`` metrics of the daemon's process."""
    observe.record_call(0.001)
    observe.record_lease("t-created", True)
    metrics.COMMANDS.labels("t-created", "arrive", "applied").inc()
    async with serving(engine) as url:
        for accept in ("text/plain", "application/openmetrics-text"):
            status, _, body = await get(url + "/metrics", Accept=accept)
            assert status == 200
            lines = body.decode().splitlines()
            names = [line.split("{")[0].split(" ")[0] for line in lines
                     if not line.startswith("#")]
            assert [n for n in names if n.endswith("_created")] == [], accept
            assert any(line.startswith("process_cpu_seconds_total") for line in lines)
            assert any(line.startswith("process_resident_memory_bytes") for line in lines)
            assert any(line.startswith("dispatchd_consumer_round_trip_seconds_bucket")
                       for line in lines)


async def test_not_ready_without_a_running_consumer(engine):
    async with serving(engine, stale_s=-1.0) as url:
        status, _, body = await get(url + "/readyz")
    doc = json.loads(body)
    assert status == 503 and doc["ready"] is False
    assert doc["checks"]["consumer"].startswith("no loop iteration for")
    assert doc["checks"]["redis"] == "ok"


async def test_not_ready_while_vanished_state_is_recreated(engine):
    """The consumer found state gone from the server (see test_gateway_state_loss.py):
    503 with its reason until it says the recreated state works."""
    observe.record_step()
    observe.set_state_missing("the consumer group of 1 tenant(s) had vanished")
    try:
        async with serving(engine) as url:
            status, _, body = await get(url + "/readyz")
            assert status == 503
            assert json.loads(body)["checks"] == {
                "redis": "ok", "scripts": "ok", "consumer": "ok",
                "state": "the consumer group of 1 tenant(s) had vanished"}
            observe.set_state_missing(None)
            assert (await get(url + "/readyz"))[0] == 200
    finally:
        observe.set_state_missing(None)


async def test_not_ready_without_redis_but_alive():
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}", decode_responses=False,
                                   socket_connect_timeout=0.5)
    try:
        async with serving(Engine(dead)) as url:
            status, _, body = await get(url + "/readyz")
            assert status == 503
            assert json.loads(body)["checks"]["redis"].startswith("unreachable")
            assert (await get(url + "/healthz"))[0] == 200
    finally:
        await dead.aclose()


async def test_scripts_not_loaded(redis_url):
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    try:
        observe.record_step()
        async with serving(Engine(client)) as url:
            await client.function_flush()
            status, _, body = await get(url + "/readyz")
        assert status == 503
        assert (json.loads(body)["checks"]["scripts"]
                == "the dispatchd function library is not loaded")
    finally:
        await Engine(client).load_scripts()  # the session's engine fixture relies on them
        await client.aclose()


async def test_a_taken_port_stops_the_listener(engine):
    port, stop = free_port(), asyncio.Event()
    first = asyncio.create_task(ops.serve(ops.OpsApp(engine, 60), "127.0.0.1", port, stop))
    await asyncio.sleep(0.2)
    try:
        second = ops.serve(ops.OpsApp(engine, 60), "127.0.0.1", port, asyncio.Event())
        with pytest.raises(OSError, match=r"ops listener cannot bind 127\.0\.0\.1:"):
            await asyncio.wait_for(second, 5)
    finally:
        stop.set()
        await asyncio.wait_for(first, 10)


def test_loops_from_settings():
    factories = ops.loops(Settings(metrics_port=0))
    assert len(factories) == 2
