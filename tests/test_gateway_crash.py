"""Exactly-once across a crash: the real daemon is SIGKILLed while it consumes.

``dispatchd run`` (a subprocess, on the test server through DISPATCHD_REDIS_URL) consumes
a few thousand arrivals and releases, some sent twice; it is killed with SIGKILL once
some but not all events are out; a second daemon takes over after the lease
(DISPATCHD_LEASE_MS=500) and finishes. The outbound stream must then show every command
applied exactly once, in order, and the stored state must agree with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from gateway_helpers import (
    TIMERS_OFF,
    Workload,
    check_exactly_once,
    check_final_state,
    read_events,
)

from dispatchd import keys
from dispatchd.consumer import GROUP

SEED = 7_130
N_ARRIVALS = 2000
CHUNK = 200
AGENTS: dict[str, tuple[int, list[str]]] = {
    "a1": (3, ["g1"]), "a2": (3, ["g1"]), "a3": (2, ["g1", "g2"]),
    "b1": (3, ["g2"]), "b2": (1, ["g2"]), "b3": (4, ["g1", "g2"]),
}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Daemon:
    """``python -m dispatchd run`` with its stderr (JSON log lines) collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd", "run"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _drain(self) -> None:
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def messages(self) -> list[str]:
        self._drain()
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line)["msg"])
            except (ValueError, KeyError):
                out.append(line)
        return out

    async def wait_for(self, prefix: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(m.startswith(prefix) for m in self.messages()):
                return
            assert self.proc.poll() is None, "daemon exited:\n" + "\n".join(self.lines)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {prefix!r} log line:\n" + "\n".join(self.lines))

    def sigkill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not stop in time; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
async def spawn(redis_url, redis_client, tenant) -> AsyncIterator[Callable[[], Daemon]]:
    """Start daemons serving ``tenant``; every one is killed at the end, whatever happens."""
    started: list[Daemon] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {"DISPATCHD_REDIS_URL": redis_url, "DISPATCHD_TENANTS": tenant,
            "DISPATCHD_LEASE_MS": "500", "DISPATCHD_BATCH_SIZE": "50",
            "DISPATCHD_BLOCK_MS": "5", "DISPATCHD_LOG_LEVEL": "INFO",
            "DISPATCHD_METRICS_PORT": "0"}  # two daemons at once: each its own ops port

    def start() -> Daemon:
        d = Daemon(env)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()
        await redis_client.srem(keys.TENANTS_KEY, tenant)


async def inbound_state(redis, tenant: str) -> tuple[int, int]:
    stream = keys.key("inbound", tenant)
    length = await redis.xlen(stream)
    try:
        pending = int((await redis.xpending(stream, GROUP))["pending"])
    except Exception:   # no group yet
        pending = 0
    return length, pending


async def send(redis, tenant: str, wl: Workload, entries: list[dict[str, Any]]) -> None:
    pipe = redis.pipeline(transaction=False)
    for cmd in entries:
        pipe.xadd(keys.key("inbound", tenant), wl.fields(cmd))
    await pipe.execute()


async def setup_world(engine, tenant: str) -> None:
    now = wall_ms()
    for g in ("g1", "g2"):
        await engine.configure_group(tenant, now, g, **TIMERS_OFF)
    for name, (capacity, groups) in AGENTS.items():
        await engine.configure_agent(tenant, now, name, capacity=capacity,
                                     abilities=dict.fromkeys(groups, 1.0))
        await engine.set_agent_status(tenant, now, name, "online")


async def test_sigkill_mid_stream_then_second_daemon_applies_everything_once(
    spawn, engine, redis_client, tenant
):
    await setup_world(engine, tenant)
    wl = Workload(random.Random(SEED), N_ARRIVALS, ["g1", "g2"])
    assert len(wl.entries) > 3000 and wl.duplicates > 100
    chunks = [wl.entries[i : i + CHUNK] for i in range(0, len(wl.entries), CHUNK)]
    out_key = keys.key("outbound", tenant)

    first = spawn()
    await first.wait_for("ready")
    # push while it consumes; kill it once some (not all) events are out
    sent = 0
    for chunk in chunks[: len(chunks) // 2]:
        await send(redis_client, tenant, wl, chunk)
        sent += 1
    deadline = time.monotonic() + 20
    while await redis_client.xlen(out_key) < 150:
        assert time.monotonic() < deadline, "\n".join(first.lines)
        await asyncio.sleep(0.002)
    first.sigkill()
    out_at_kill = await redis_client.xlen(out_key)
    in_at_kill = await inbound_state(redis_client, tenant)
    assert 0 < out_at_kill < len(wl.order)
    assert in_at_kill[0] > 0, "the first daemon drained everything before the kill"
    assert "tenant taken" in first.messages()

    # gateways keep sending while no daemon runs
    for chunk in chunks[sent:]:
        await send(redis_client, tenant, wl, chunk)

    second = spawn()
    await second.wait_for("ready")
    deadline = time.monotonic() + 40
    while await inbound_state(redis_client, tenant) != (0, 0):
        assert second.proc.poll() is None, "\n".join(second.lines)
        assert time.monotonic() < deadline, await inbound_state(redis_client, tenant)
        await asyncio.sleep(0.02)
    assert "tenant taken" in second.messages()

    events = await read_events(redis_client, tenant)
    state = check_exactly_once(events, wl)
    assert len(state) == N_ARRIVALS
    await check_final_state(engine, tenant, state, AGENTS)
    assert await redis_client.xlen(keys.key("dead", tenant)) == 0
    problems = [m for m in second.messages() if "failed" in m or "lost" in m]
    assert problems == [], second.lines
    assert second.stop() == 0


async def test_a_poison_entry_does_not_kill_the_daemon(spawn, engine, redis_client, tenant):
    await setup_world(engine, tenant)
    daemon = spawn()
    await daemon.wait_for("ready")
    inbound = keys.key("inbound", tenant)
    await redis_client.xadd(inbound, {"json": b'{"type":[],"id":"p1"}'})
    await redis_client.xadd(inbound, {"json": json.dumps(
        {"type": "arrive", "id": "g1", "session": "s1", "group": "g1"})})
    deadline = time.monotonic() + 10
    try:
        while await inbound_state(redis_client, tenant) != (0, 0):
            assert daemon.proc.poll() is None, "daemon died:\n" + "\n".join(daemon.lines)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await redis_client.delete(inbound)
    events = await read_events(redis_client, tenant)
    assert [(e["type"], e.get("cmd")) for e in events] == [("error", "p1"), ("assigned", "g1")]
