"""The harness the property tests' state machines share: the real engine on its own
event loop and tenant, and the tenant's keys removed when a run ends."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import redis.asyncio as aioredis
import uvloop
from hypothesis.stateful import RuleBasedStateMachine

from dispatchd import keys
from dispatchd.engine import Engine

_tenants = itertools.count()


class EngineMachine(RuleBasedStateMachine):
    """A state machine driving an :class:`Engine` on a fresh tenant (``prefix`` + unique
    suffix). ``redis_url`` is bound by a subclass; hypothesis runs rules synchronously, so
    coroutines go through :meth:`run` on the machine's own loop."""

    redis_url: str = ""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.loop = uvloop.new_event_loop()
        self.tenant = f"{prefix}{os.getpid()}-{next(_tenants)}-{uuid.uuid4().hex[:8]}"
        self.client: aioredis.Redis = self.loop.run_until_complete(self._connect())
        self.engine = Engine(self.client)

    async def _connect(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.redis_url, decode_responses=False)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self._cleanup())
        finally:
            self.loop.close()

    async def _cleanup(self) -> None:
        try:
            found = [k async for k in self.client.scan_iter(
                match=keys.prefix(self.tenant) + "*", count=500)]
            for i in range(0, len(found), 500):
                await self.client.unlink(*found[i:i + 500])
        finally:
            await self.client.aclose()
