"""Redis state that vanishes under a running consumer, and the consumers it leaves.

Each test runs its own Valkey (a ``FLUSHALL`` must not wipe the session server the other
tests share). A ``FLUSHALL`` (or a server restarted without its data) takes the consumer
group, the tenant registrations and, with ``FUNCTION FLUSH``, the library: the consumer
must recreate them on the error path and go on applying what gateways send, make the
loss loud (error log, ``dispatchd_state_lost_total``, readiness failing until the
recreated state works), and apply nothing twice. A daemon removes its own consumer on a
clean stop and prunes the idle consumers of daemons that are gone, never one with
pending entries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from gateway_helpers import TIMERS_OFF, open_gateway, read_events

from dispatchd import keys, metrics
from dispatchd.consumer import GROUP
from dispatchd.embedded import EmbeddedValkey, free_port
from dispatchd.engine import Engine
from dispatchd.ops import OpsApp


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "valkey", append_only=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def private(private_server: EmbeddedValkey) -> AsyncIterator[tuple[str, Engine]]:
    client = aioredis.Redis.from_url(private_server.url, decode_responses=False)
    engine = Engine(client)
    await engine.load_scripts()
    try:
        yield private_server.url, engine
    finally:
        await client.aclose()


def lost(what: str) -> float:
    value = metrics.REGISTRY.get_sample_value("dispatchd_state_lost_total", {"what": what})
    assert value is not None
    return value


async def consumers(redis: aioredis.Redis, tenant: str) -> dict[str, int]:
    """Consumer name -> pending entries, in the tenant's group."""
    rows = await redis.xinfo_consumers(keys.key("inbound", tenant), GROUP)
    return {r["name"].decode(): int(r["pending"]) for r in rows}


# ------------------------------------------------------------------ in-process consumer


async def test_flushall_group_and_registration_recreated_and_loud(private, tenant, caplog):
    """After a FLUSHALL the next round trip finds the group gone: it is recreated from 0
    (the commands sent since are applied, once), the tenant this consumer learnt from the
    registry is registered again, an error is logged, the loss counted, and readiness
    fails until a round trip finds nothing missing."""
    _url, engine = private
    redis = engine.redis
    await redis.sadd(keys.TENANTS_KEY, tenant)  # learnt from the registry, not configured
    options = {"tenants": ("cfg-" + tenant,)}
    async with open_gateway(engine, redis, tenant, options=options) as gw:
        ops = OpsApp(engine, consumer_stale_s=60.0)
        await gw.group("g")
        await gw.agent("a1", ["g"])
        assert [e["type"] for e in await gw.run(
            {"type": "arrive", "id": "c1", "session": "s1", "group": "g"})] == ["assigned"]
        assert (await ops.readiness())["state"] == "ok"
        before = lost("consumer_group")

        await redis.flushall()
        # gateways go on sending: the stream comes back, without the group
        await gw.send({"type": "arrive", "id": "c2", "session": "s2", "group": "g"})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dispatchd.consumer"):
            await gw.consumer.step()
        # both tenants it serves (the configured one too) lost their group
        assert lost("consumer_group") == before + 2
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(m.startswith("the routing state vanished") for m in errors), errors
        assert any(m.startswith("tenants registered again") for m in errors), errors
        assert await redis.sismember(keys.TENANTS_KEY, tenant)
        checks = await ops.readiness()
        assert checks["state"].startswith("the consumer group of 2 tenant(s) had vanished")
        assert await consumers(redis, tenant) == {}  # recreated, nothing read yet

        # the command sent after the flush gets its event (the configuration is gone)
        events = await gw.pump()
        assert [(e["type"], e.get("cmd"), e.get("code")) for e in events] == [
            ("error", "c2", "E_GROUP_UNKNOWN")]
        assert (await ops.readiness())["state"] == "ok"
        # restored by an operator: routing works again; nothing was applied twice
        await gw.group("g")
        await gw.agent("a1", ["g"])
        assert [e["type"] for e in await gw.run(
            {"type": "arrive", "id": "c3", "session": "s3", "group": "g"})] == ["assigned"]
        every = await read_events(redis, tenant)
        cmds = [e["cmd"] for e in every if e.get("cmd") in ("c1", "c2", "c3")]
        assert sorted(cmds) == ["c2", "c3"]  # c1's event went with the flush
        assert lost("consumer_group") == before + 2


async def test_entries_read_before_the_flush_do_not_delete_the_ones_sent_after(
    private, tenant
):
    """A new stream numbers its entries from the same millisecond with sequence 0 again:
    an entry read before the flush (applied next, against the new stream) can carry the
    id of one sent after it. Applying the stale one must not delete the new one."""
    _url, engine = private
    redis = engine.redis
    async with open_gateway(engine, redis, tenant) as gw:
        await gw.drain()
        stale = await gw.send({"type": "agent_ready", "id": "c1", "agent": "nobody"})
        await gw.consumer.step()  # c1 read, in hand: applied by the next round trip
        assert [eid.decode() for eid, _ in gw.consumer._reads[tenant]] == [stale]
        await redis.flushall()
        await redis.xadd(gw.inbound, {"json": json.dumps(
            {"type": "agent_ready", "id": "c2", "agent": "nobody"})}, id=stale)
        events = await gw.pump()
        assert [(e["type"], e.get("cmd")) for e in events] == [("error", "c1"),
                                                               ("error", "c2")]


async def test_server_restarted_empty_library_and_group_recreated(private, tenant):
    """FUNCTION FLUSH + FLUSHALL (a server restarted without its data): the library is
    loaded again and the group recreated; both are counted; nothing is lost after."""
    _url, engine = private
    redis = engine.redis
    async with open_gateway(engine, redis, tenant) as gw:
        ops = OpsApp(engine, consumer_stale_s=60.0)
        await gw.group("g")
        await gw.run({"type": "arrive", "id": "c1", "session": "s1", "group": "g"})
        library, group = lost("library"), lost("consumer_group")
        await redis.function_flush()
        await redis.flushall()
        await gw.send({"type": "arrive", "id": "c2", "session": "s2", "group": "g"})
        gw.clock.advance(1000)  # a tick is due: the step calls the library
        await gw.consumer.step()  # the call finds no library, the read no group
        assert (lost("library"), lost("consumer_group")) == (library + 1, group + 1)
        assert (await ops.readiness())["state"] != "ok"
        events = await gw.pump()
        assert [(e["type"], e.get("cmd")) for e in events] == [("error", "c2")]
        assert (await ops.readiness()) == {
            "redis": "ok", "scripts": "ok", "consumer": "ok", "state": "ok"}


async def test_a_deleted_tenant_is_not_registered_again(private, tenant):
    """A tenant removed from a registry that still names the other tenants the consumer
    learnt from it was deleted on purpose: its group comes back (it is still read), its
    registration does not."""
    _url, engine = private
    redis = engine.redis
    other = tenant + "-b"
    await redis.sadd(keys.TENANTS_KEY, tenant, other)
    async with open_gateway(engine, redis, tenant, options={"tenants": ()}) as gw:
        await gw.consumer.step()
        await gw.drain()
        assert set(gw.consumer.tenants) == {tenant, other}
        await redis.srem(keys.TENANTS_KEY, tenant)
        await redis.delete(keys.key("inbound", tenant))
        await gw.send({"type": "agent_ready", "id": "c1", "agent": "nobody"})
        events = await gw.pump()
        assert [(e["type"], e.get("cmd")) for e in events] == [("error", "c1")]
        assert not await redis.sismember(keys.TENANTS_KEY, tenant)
        assert await redis.sismember(keys.TENANTS_KEY, other)


# ---------------------------------------------------------------------- consumers


async def test_idle_consumers_without_pending_entries_are_pruned(private, tenant):
    """Consumers of daemons that are gone are removed once idle past the threshold with
    nothing pending; one with a pending entry is kept (its entry is not dropped); a
    clean stop removes the consumer's own."""
    _url, engine = private
    redis = engine.redis
    stream = keys.key("inbound", tenant)
    async with open_gateway(engine, redis, tenant,
                            options={"consumer_idle_ms": 200}) as gw:
        await gw.group("g")
        await gw.drain()
        await redis.xgroup_createconsumer(stream, GROUP, "gone-idle")
        await gw.send({"type": "arrive", "id": "c1", "session": "s1", "group": "g"})
        await redis.xreadgroup(GROUP, "gone-pending", {stream: ">"}, count=1)
        await asyncio.sleep(0.3)
        await gw.consumer.step()  # the live consumer reads (nothing): not idle
        await redis.xgroup_createconsumer(stream, GROUP, "gone-fresh")
        await gw.consumer.prune_consumers(list(gw.consumer.tenants.values()))
        assert await consumers(redis, tenant) == {
            gw.consumer.name: 0, "gone-pending": 1, "gone-fresh": 0}

        # a clean stop: the entry in hand is applied, then the own consumer goes
        stop = asyncio.Event()
        stop.set()
        await gw.send({"type": "arrive", "id": "c2", "session": "s2", "group": "g"})
        await gw.consumer.step()  # reads c2 (pending under its name)
        assert (await consumers(redis, tenant))[gw.consumer.name] == 1
        await gw.consumer.run(stop)
        left = await consumers(redis, tenant)
        assert gw.consumer.name not in left and left["gone-pending"] == 1
        types = [(e["type"], e.get("cmd")) for e in await gw.new_events()]
        assert ("queued", "c2") in types


async def test_a_consumer_with_pending_entries_survives_its_clean_stop(private, tenant):
    """Entries pending under the consumer at its stop (claimed, not yet applied) keep it
    in the group, so they are not dropped: the next holder claims them."""
    _url, engine = private
    redis = engine.redis
    stream = keys.key("inbound", tenant)
    async with open_gateway(engine, redis, tenant) as gw:
        await gw.drain()
        await gw.send({"type": "agent_ready", "id": "c1", "agent": "nobody"})
        me = gw.consumer.name
        await redis.xreadgroup(GROUP, me, {stream: ">"}, count=1)  # pending, not in hand
        stop = asyncio.Event()
        stop.set()
        await gw.consumer.run(stop)
        assert await consumers(redis, tenant) == {me: 1}
        gw.new_consumer()
        events = await gw.pump()
        assert [(e["type"], e.get("cmd")) for e in events] == [("error", "c1")]


# ------------------------------------------------------------------------ real daemon


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Daemon:
    """``python -m dispatchd run`` on the private server, its ops listener on a free
    port, its JSON log in a file."""

    def __init__(self, url: str, tenant: str, log: Path) -> None:
        self.port = free_port()
        self.ops = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
        env |= {"DISPATCHD_REDIS_URL": url, "DISPATCHD_TENANTS": tenant,
                "DISPATCHD_METRICS_PORT": str(self.port), "DISPATCHD_ADMIN_ENABLED": "false",
                "DISPATCHD_BLOCK_MS": "5", "DISPATCHD_LEASE_MS": "500",
                "DISPATCHD_LOG_LEVEL": "INFO"}
        self.log_path = log
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "dispatchd", "run"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     start_new_session=True)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if (await asyncio.to_thread(_get, self.ops + "/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("not ready:\n" + self.log_path.read_text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


async def wait_for(what: str, check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_daemon_goes_on_after_flushall_under_load(private, tenant, daemons, tmp_path):
    """The real daemon, commands flowing, FLUSHALL: every command sent after the flush
    gets its one event, none twice; /metrics counts the loss; /readyz is ready again;
    the error is in the log."""
    url, engine = private
    redis = engine.redis
    await engine.configure_group(tenant, int(time.time() * 1000), "g", **TIMERS_OFF)
    d = Daemon(url, tenant, tmp_path / "daemon.log")
    daemons.append(d)
    await d.wait_ready()
    stream = keys.key("inbound", tenant)
    before_flush: list[str] = []
    after_flush: list[str] = []

    async def send(n: int, into: list[str]) -> None:
        for i in range(n):
            cid = f"c{len(before_flush) + len(after_flush)}"
            await redis.xadd(stream, {"json": json.dumps(
                {"type": "arrive", "id": cid, "session": "s" + cid, "group": "g"})})
            into.append(cid)
            if i % 10 == 0:
                await asyncio.sleep(0.002)

    await send(300, before_flush)
    await redis.flushall()
    await send(300, after_flush)

    async def all_answered() -> bool:
        seen = {e.get("cmd") for e in await read_events(redis, tenant)}
        return set(after_flush) <= seen

    try:
        await wait_for("events for every command sent after the flush", all_answered)
    except AssertionError:
        seen = {e.get("cmd") for e in await read_events(redis, tenant)}
        unanswered = [c for c in after_flush if c not in seen]
        info = await redis.xinfo_groups(stream) if await redis.exists(stream) else None
        raise AssertionError(f"unanswered: {unanswered[:5]}... ({len(unanswered)}); "
                             f"groups: {info}; stream length {await redis.xlen(stream)};"
                             f" log:\n{d.log_path.read_text()[-6000:]}") from None
    events = await read_events(redis, tenant)
    per_cmd: dict[str, int] = {}
    for e in events:
        per_cmd[e["cmd"]] = per_cmd.get(e["cmd"], 0) + 1
    assert all(per_cmd[c] == 1 for c in after_flush), "a command answered twice"
    assert all(n == 1 for n in per_cmd.values())
    # the group config went with the flush: arrivals are refused, not lost
    assert {e["code"] for e in events if e["cmd"] in after_flush} == {"E_GROUP_UNKNOWN"}

    status, body = await asyncio.to_thread(_get, d.ops + "/metrics")
    assert status == 200
    found = re.search(rb'^dispatchd_state_lost_total\{what="consumer_group"\} (\S+)$', body,
                      re.MULTILINE)
    assert found and float(found.group(1)) >= 1.0, body
    status, body = await asyncio.to_thread(_get, d.ops + "/readyz")
    assert (status, json.loads(body)["checks"]["state"]) == (200, "ok")
    messages = [(line["level"], line["msg"]) for line in d.lines()]
    assert any(level == "ERROR" and msg.startswith("the routing state vanished")
               for level, msg in messages), messages
    assert await redis.sismember(keys.TENANTS_KEY, tenant)
    assert d.stop() == 0


async def test_restarts_do_not_grow_the_consumer_group(private, tenant, daemons, tmp_path):
    """Start and stop the daemon several times: each clean stop removes its consumer."""
    url, engine = private
    redis = engine.redis
    stream = keys.key("inbound", tenant)
    for n in range(3):
        d = Daemon(url, tenant, tmp_path / f"daemon{n}.log")
        daemons.append(d)
        await d.wait_ready()
        cid = f"c{n}"
        await redis.xadd(stream, {"json": json.dumps(
            {"type": "agent_ready", "id": cid, "agent": "nobody"})})

        async def answered(cid: str = cid) -> bool:
            return any(e.get("cmd") == cid for e in await read_events(redis, tenant))

        await wait_for(f"the event of {cid}", answered)
        assert len(await consumers(redis, tenant)) == 1  # the running daemon's
        assert d.stop() == 0
        assert await consumers(redis, tenant) == {}
