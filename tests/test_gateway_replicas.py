"""Two consumer replicas on one consumer group, in process, each with its own connection.

Under load (two tenants, a few thousand commands, some sent twice) with both replicas
running ``run(stop)`` concurrently: every command is applied exactly once, in stream order
per tenant, and no session is assigned twice. Then the holder is killed (its task
cancelled, no ``release()``) in the middle: the other replica takes over after the lease
and finishes, still exactly once and in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from gateway_helpers import (
    TIMERS_OFF,
    Workload,
    check_exactly_once,
    check_final_state,
    open_gateway,
    read_events,
)

from dispatchd import keys
from dispatchd.cluster_consumer import consumer_for
from dispatchd.connect import client_for
from dispatchd.consumer import GROUP, ConsumerOptions, GatewayConsumer
from dispatchd.engine import Engine

N_ARRIVALS = 700
CHUNK = 50
LEASE_MS = 1000
AGENTS: dict[str, tuple[int, list[str]]] = {
    "a1": (2, ["g1"]), "a2": (3, ["g1", "g2"]), "b1": (2, ["g2"]), "b2": (1, ["g2"]),
}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def replica(redis_url, redis_client) -> AsyncIterator[Callable[..., GatewayConsumer]]:
    """Makes consumers that each own a connection pool, like separate processes."""
    clients: list[aioredis.Redis] = []
    tenants: set[str] = set()

    def make(name: str, served: tuple[str, ...]) -> GatewayConsumer:
        client = client_for(redis_url, decode_responses=False)
        clients.append(client)
        tenants.update(served)
        # discover=False: only this test's tenants, not those other tests left in
        # dispatchd:tenants (dozens after the admin tests), which made the replicas'
        # pipelines long and the killed holder's cancellation land mid-pipeline
        opts = ConsumerOptions(tenants=served, batch_size=20, block_ms=5, tick_ms=50,
                               lease_ms=LEASE_MS, discover=False)
        return consumer_for(Engine(client), opts, name=name)

    try:
        yield make
    finally:
        if tenants:
            await redis_client.srem(keys.TENANTS_KEY, *tenants)
        for client in clients:
            await client.aclose()


async def setup_world(engine: Engine, tenant: str) -> None:
    now = wall_ms()
    for g in ("g1", "g2"):
        await engine.configure_group(tenant, now, g, **TIMERS_OFF)
    for name, (capacity, groups) in AGENTS.items():
        await engine.configure_agent(tenant, now, name, capacity=capacity,
                                     abilities=dict.fromkeys(groups, 1.0))
        await engine.set_agent_status(tenant, now, name, "online")


async def inbound_state(redis: aioredis.Redis, tenant: str) -> tuple[int, int]:
    stream = keys.key("inbound", tenant)
    length = await redis.xlen(stream)
    try:
        pending = int((await redis.xpending(stream, GROUP))["pending"])
    except aioredis.ResponseError:
        pending = 0
    return length, pending


async def produce(redis: aioredis.Redis, workloads: dict[str, Workload],
                  part: slice = slice(None)) -> None:
    """Send every tenant's entries (``part`` of them) in chunks, tenants taking turns,
    yielding in between."""
    chunks = {t: [wl.entries[part][i : i + CHUNK]
                  for i in range(0, len(wl.entries[part]), CHUNK)]
              for t, wl in workloads.items()}
    for k in range(max(len(c) for c in chunks.values())):
        for tenant, tenant_chunks in chunks.items():
            if k >= len(tenant_chunks):
                continue
            pipe = redis.pipeline(transaction=False)
            for cmd in tenant_chunks[k]:
                pipe.xadd(keys.key("inbound", tenant), workloads[tenant].fields(cmd))
            await pipe.execute()
            await asyncio.sleep(0.003)


async def wait_drained(redis: aioredis.Redis, tenants: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = [await inbound_state(redis, t) for t in tenants]
        if all(s == (0, 0) for s in states):
            return
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.02)


async def check(engine: Engine, redis: aioredis.Redis, workloads: dict[str, Workload]) -> None:
    for tenant, wl in workloads.items():
        state = check_exactly_once(await read_events(redis, tenant), wl)
        assert len(state) == N_ARRIVALS
        await check_final_state(engine, tenant, state, AGENTS)


async def world(engine: Engine, tenant: str, seed: int) -> dict[str, Workload]:
    tenants = [tenant, tenant + "-b"]
    workloads = {}
    for n, t in enumerate(tenants):
        await setup_world(engine, t)
        workloads[t] = Workload(random.Random(seed + n), N_ARRIVALS, ["g1", "g2"])
    return workloads


async def test_two_replicas_under_load(replica, engine, redis_client, tenant):
    workloads = await world(engine, tenant, seed=11)
    tenants = tuple(workloads)
    a, b = replica("A", tenants), replica("B", tenants)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in (a, b)]
    try:
        await produce(redis_client, workloads)
        await wait_drained(redis_client, list(tenants), timeout_s=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert a.batches + b.batches > 0
    # both let go when stopped (release() leaves a 1 ms lease)
    deadline = time.monotonic() + 1
    while any([await redis_client.exists(keys.key("lease", t)) for t in tenants]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await check(engine, redis_client, workloads)


async def test_holder_killed_mid_stream_the_other_takes_over(replica, engine, redis_client,
                                                             tenant):
    workloads = await world(engine, tenant, seed=23)
    tenants = tuple(workloads)
    consumers = {"A": replica("A", tenants), "B": replica("B", tenants)}
    stop = asyncio.Event()
    tasks = {name: asyncio.create_task(c.run(stop)) for name, c in consumers.items()}
    killed: list[str] = []

    async def kill_holder() -> None:
        out = keys.key("outbound", tenants[0])
        deadline = time.monotonic() + 20
        while await redis_client.xlen(out) < 200:
            assert time.monotonic() < deadline, "no events: the replicas are not consuming"
            await asyncio.sleep(0.002)
        holder = next(n for n, c in consumers.items()
                      if c.tenants.get(tenants[0]) and c.tenants[tenants[0]].held)
        tasks[holder].cancel()           # dies without release(): its lease must run out
        # a cancellation that lands inside a redis-py pipeline can leave the task waiting
        # forever; a killed process would be gone, so do not wait on it for long
        await asyncio.wait([tasks[holder]], timeout=5)
        killed.append(holder)

    half = slice(0, len(next(iter(workloads.values())).entries) // 2)
    rest = slice(half.stop, None)
    try:
        # half the load, the holder dies mid-stream, then the rest: the survivor must
        # take over and has work left whatever the scheduling
        killer = asyncio.create_task(kill_holder())
        await produce(redis_client, workloads, half)
        await killer
        await produce(redis_client, workloads, rest)
        started = time.monotonic()
        await wait_drained(redis_client, list(tenants), timeout_s=30)
        took = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait(list(tasks.values()), timeout=10)
    (dead,) = killed
    survivor = consumers["B" if dead == "A" else "A"]
    assert survivor.batches > 0
    assert took < 10
    await check(engine, redis_client, workloads)


async def stalled_past_lease(gw) -> tuple[GatewayConsumer, GatewayConsumer]:
    """A (the gateway's consumer) holds the tenant; c0..c2 are sent; A stalls until its
    lease runs out; B takes the tenant. Returns (A, B)."""
    await gw.group("g")
    await gw.agent("a", ["g"], capacity=10)         # A holds the tenant
    first = gw.consumer
    second = consumer_for(gw.engine, gw.options, clock=gw.clock, name="B")
    for i in range(3):
        await gw.client.arrive(f"s{i}", "g", id=f"c{i}")
    deadline = time.monotonic() + 5
    while await gw.redis.exists(keys.key("lease", gw.tenant)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await second.step()                 # B takes the tenant (nothing pending yet)
    assert second.tenants[gw.tenant].held
    return first, second


async def test_a_stalled_replica_renews_before_it_reads(engine, redis_client, tenant):
    """Back from a stall longer than its lease, a replica first learns it lost the tenant
    and reads nothing, so the new holder applies everything in order."""
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 100}) as gw:
        first, second = await stalled_past_lease(gw)
        await first.step()
        assert not first.tenants[tenant].held
        assert await gw.inbound_state() == (3, 0)          # A read nothing
        await gw.client.arrive("s3", "g", id="c3")
        gw.consumer = second
        events = await gw.pump(timeout_s=3.0)
        assert [e["cmd"] for e in events] == ["c0", "c1", "c2", "c3"]


async def test_entries_read_by_a_stalled_replica_are_taken_over(engine, redis_client, tenant):
    """The documented exception: a replica that stalls right between checking its lease
    and reading leaves what it read pending; the holder takes those entries over within a
    lease period and applies them after newer ones, never twice."""
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 100}) as gw:
        first, second = await stalled_past_lease(gw)
        # what A's stalled XREADGROUP does when it finally runs
        rows = await redis_client.xreadgroup(GROUP, first.name, {gw.inbound: ">"})
        assert len(rows[0][1]) == 3
        await gw.client.arrive("s3", "g", id="c3")
        gw.consumer = second
        started = time.monotonic()
        events = await gw.pump(timeout_s=3.0)
        assert time.monotonic() - started < 1.0
        assert [e["cmd"] for e in events] == ["c3", "c0", "c1", "c2"]
        assert await gw.pump() == []
        assert await gw.dead() == []


async def test_replica_that_lost_its_lease_applies_nothing(engine, redis_client, tenant):
    """Fencing: the batch of a replica whose lease ran out is refused as a whole."""
    async with open_gateway(engine, redis_client, tenant, options={"lease_ms": 100}) as gw:
        await gw.group("g")
        await gw.agent("a", ["g"], capacity=10)
        first = gw.consumer
        second = consumer_for(engine, gw.options, clock=gw.clock, name="B")
        await gw.client.arrive("s0", "g", id="c0")
        deadline = time.monotonic() + 5
        while await redis_client.exists(keys.key("lease", tenant)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await second.step()
        await first.step()
        assert not first.tenants[tenant].held
        assert await gw.new_events() == []
        assert await engine.session(tenant, "s0") is None
        assert await redis_client.get(keys.key("lease", tenant)) == b"B"


async def test_first_replica_holds_every_tenant_the_other_stands_by(replica, tenant):
    """Without membership (heartbeat_ms 0, ConsumerOptions' default; the daemon's
    DISPATCHD_HEARTBEAT_MS=0): a free tenant goes to whichever replica asks first, so the
    first replica to start holds every tenant and the others stand by. With membership
    the replicas divide the tenants: tests/test_replicas_membership.py."""
    tenants = tuple(f"{tenant}-{i}" for i in range(4))
    a, b = replica("A", tenants), replica("B", tenants)
    for _ in range(3):
        await a.step()
    assert all(a.tenants[t].held for t in tenants)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in (a, b)]
    await asyncio.sleep(0.8)
    held = [{t for t in tenants if c.tenants.get(t) and c.tenants[t].held} for c in (a, b)]
    stop.set()
    await asyncio.gather(*tasks)
    assert held == [set(tenants), set()]
