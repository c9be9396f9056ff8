"""The admin API while Redis is unavailable, over real HTTP against a Valkey of its own
that the test stops, restarts and pauses: 503 with ``Retry-After`` and the reason,
within a bounded wait (admin/service.py ``REDIS_TIMEOUT_S``), logged once per outage,
and the recovery logged when the server answers again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from granian.constants import Interfaces
from granian.server.embed import Server

from admin.app import create_app
from admin.server import free_port
from admin.service import REDIS_TIMEOUT_S, RETRY_AFTER_S, Admin
from dispatchd.embedded import EmbeddedValkey
from dispatchd.engine import Engine
from tests.admin_helpers import Clock


class Served:
    def __init__(self, valkey: EmbeddedValkey, http: httpx.AsyncClient, token: str) -> None:
        self.valkey, self.http, self.token = valkey, http, token

    async def get(self, path: str = "/v1/tenants") -> httpx.Response:
        return await self.http.get(path, headers={"Authorization": f"Bearer {self.token}"})

    async def stop_valkey(self) -> None:
        await asyncio.to_thread(self.valkey.stop)

    async def start_valkey(self) -> None:
        await asyncio.to_thread(self.valkey.start)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    valkey = EmbeddedValkey(tmp_path / "valkey", append_only=True)
    valkey.start()
    valkey.requested_port = valkey.port  # a restart comes back on the same port
    client = aioredis.Redis.from_url(valkey.url, decode_responses=False)
    engine = Engine(client)
    await engine.load_scripts()
    clock = Clock()
    admin = Admin(engine, clock)
    made = await admin.tokens.create(name="t", role="admin", tenants=None, by="tests",
                                     now_ms=clock())
    assert made is not None
    port = free_port("127.0.0.1")
    server = Server(create_app(admin), address="127.0.0.1", port=port,
                    interface=Interfaces.ASGI, log_enabled=False)
    serving = asyncio.create_task(server.serve())
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    for _ in range(200):
        try:
            await http.get("/schema/openapi.json")
            break
        except httpx.TransportError:
            await asyncio.sleep(0.02)
    try:
        yield Served(valkey, http, made[0])
    finally:
        await http.aclose()
        server.stop()  # type: ignore[no-untyped-call]
        await serving
        await admin.aclose()
        await client.aclose()
        await asyncio.to_thread(valkey.stop)


def _unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["retry-after"] == str(RETRY_AFTER_S)
    body = r.json()
    assert body["status_code"] == 503 and body["code"] == "E_REDIS_UNAVAILABLE", body
    assert body["detail"].startswith("redis unavailable: "), body


def _count(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(1 for rec in caplog.records if rec.getMessage().startswith(message))


async def _until_ok(served: Served, within_s: float) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        r = await served.get()
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.1)


async def test_a_stopped_server_answers_503_logged_once(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dispatchd.admin")
    assert (await served.get()).status_code == 200
    await served.stop_valkey()
    for _ in range(5):
        started = time.monotonic()
        _unavailable(await served.get())
        _unavailable(await served.get("/v1/tenants/acme/groups"))
        assert time.monotonic() - started < 2 * REDIS_TIMEOUT_S
    assert _count(caplog, "redis unavailable") == 1
    assert _count(caplog, "admin request failed") == 0  # no traceback per request
    await served.start_valkey()
    r = await _until_ok(served, 15)
    assert r.status_code == 200, r.text
    for _ in range(50):  # the probe notices within a second or so
        if _count(caplog, "redis available again"):
            break
        await asyncio.sleep(0.1)
    assert _count(caplog, "redis available again") == 1
    # a second outage is logged again
    await served.stop_valkey()
    _unavailable(await served.get())
    assert _count(caplog, "redis unavailable") == 2
    await served.start_valkey()
    assert (await _until_ok(served, 15)).status_code == 200


async def test_a_paused_server_answers_503_within_the_timeout(served: Served) -> None:
    assert (await served.get()).status_code == 200
    other = aioredis.Redis.from_url(served.valkey.url)
    try:
        # (CLIENT UNPAUSE would wait behind the pause too: the pause runs out instead)
        pause_s = REDIS_TIMEOUT_S + 2
        await other.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")  # type: ignore[no-untyped-call]
        started = time.monotonic()
        _unavailable(await served.get())
        took = time.monotonic() - started
        assert REDIS_TIMEOUT_S - 0.5 < took < REDIS_TIMEOUT_S + 1.5, took
        r = await _until_ok(served, pause_s + 5)
        assert r.status_code == 200, r.text
    finally:
        await other.aclose()
