"""The admin API served over real HTTP for tests: granian on a free loopback port, in the
test session's event loop, over the session's engine, with a clock the tests set.

Fixtures (imported by the admin test modules): ``api`` (session) — an :class:`Api` with
one token per role; ``atenant`` — a fresh tenant created over HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from granian.constants import Interfaces
from granian.server.embed import Server
from litestar import Litestar

from admin.app import create_app
from admin.auth import ROLES
from admin.server import free_port
from admin.service import Admin
from dispatchd.engine import Engine

T0 = 1_700_000_000_000


class Clock:
    """Now in ms, moved by tests."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Api:
    """An HTTP client on the served app, with a token per role and for one tenant."""

    def __init__(self, base: str, admin: Admin, clock: Clock, app: Litestar) -> None:
        self.base = base
        self.app = app
        self.admin = admin
        self.clock = clock
        self.http = httpx.AsyncClient(base_url=base, timeout=30)
        self.tokens: dict[str, str] = {}

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(self, method: str, path: str, role: str = "admin",
                   **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(role), **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, role: str = "admin", status: int | None = None,
                 **kwargs: Any) -> Any:
        """The JSON body of a call that must succeed (``status`` or any 2xx)."""
        r = await self.call(method, path, role, **kwargs)
        if status is not None:
            assert r.status_code == status, (r.status_code, r.text)
        else:
            assert 200 <= r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.content else None


@pytest.fixture(scope="module")
async def api(engine: Engine) -> AsyncIterator[Api]:
    # per module, not per session: the granian server stops before other modules run
    # (a replica test that cancels consumers mid-pipeline hung now and then while it
    # was still serving in the same event loop)
    clock = Clock()
    admin = Admin(engine, clock)
    port = free_port("127.0.0.1")
    app = create_app(admin)
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                    log_enabled=False)
    serving = asyncio.create_task(server.serve())
    client = Api(f"http://127.0.0.1:{port}", admin, clock, app)
    for role in ROLES:
        made = await admin.tokens.create(name=f"test-{role}", role=role, tenants=None,
                                         by="tests", now_ms=clock())
        assert made is not None
        client.tokens[role] = made[0]
    for _ in range(200):
        try:
            await client.http.get("/schema/openapi.json")
            break
        except httpx.TransportError:
            await asyncio.sleep(0.02)
    try:
        yield client
    finally:
        await client.http.aclose()
        server.stop()
        await serving
        await admin.aclose()


@pytest.fixture
async def atenant(api: Api) -> str:
    """A fresh tenant, created over HTTP."""
    tid = "a" + uuid.uuid4().hex[:12]
    await api.ok("POST", "/v1/tenants", json={"id": tid, "name": "test"}, status=201)
    return tid
