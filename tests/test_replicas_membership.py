"""Replicas that share the tenants (dispatchd/membership.py), in process, real Valkey.

Each consumer has its own connection pool, as separate processes would, and heartbeats
in ``dispatchd:replicas``: 3 replicas divide the tenants about evenly, each holding the
ones rendezvous hashing gives it; a replica that joins under load takes its share with
every command applied exactly once and in order; a replica stopped cleanly hands its
tenants over at once (well within a lease); a replica that dies (its task cancelled: no
deregistration, no release) loses its tenants once their lease runs out, not before.
The real daemons (``dispatchd run`` subprocesses) are tested at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from gateway_helpers import Workload, check_exactly_once, check_final_state, read_events
from test_gateway_crash import Daemon
from test_gateway_replicas import AGENTS, inbound_state, produce, setup_world, wait_drained

from dispatchd import keys, metrics
from dispatchd.consumer import ConsumerOptions, GatewayConsumer
from dispatchd.engine import Engine
from dispatchd.membership import GONE_AFTER, owner

HEARTBEAT_MS = 50
LEASE_MS = 600
N_ARRIVALS = 150


class Replica:
    def __init__(self, consumer: GatewayConsumer) -> None:
        self.c = consumer
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.c.name

    def start(self) -> Replica:
        self.task = asyncio.create_task(self.c.run(self.stop))
        return self

    async def halt(self) -> None:
        """A clean stop (SIGTERM)."""
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def kill(self) -> None:
        """Dies without deregistering or releasing anything (SIGKILL)."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.wait([self.task], timeout=5)

    def held(self) -> set[str]:
        return {n for n, t in self.c.tenants.items() if t.held}


@pytest.fixture
async def replicas(redis_url, redis_client) -> AsyncIterator[Callable[..., Replica]]:
    clients: list[aioredis.Redis] = []
    made: list[Replica] = []

    def make(name: str, served: tuple[str, ...], lease_ms: int = LEASE_MS) -> Replica:
        client = aioredis.Redis.from_url(redis_url, decode_responses=False)
        clients.append(client)
        opts = ConsumerOptions(tenants=served, batch_size=20, block_ms=5, tick_ms=20,
                               lease_ms=lease_ms, discover=False, heartbeat_ms=HEARTBEAT_MS)
        r = Replica(GatewayConsumer(Engine(client), opts, name=name))
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            if r.task is not None and not r.task.done():
                await r.halt()
        for r in made:
            await redis_client.zrem(keys.REPLICAS_KEY, r.name)
        for client in clients:
            await client.aclose()


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 5 ms); fails after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, what
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def split_as_hashed(reps: list[Replica], tenants: tuple[str, ...]) -> bool:
    """Every tenant held by exactly the replica rendezvous hashing names among ``reps``."""
    names = tuple(r.name for r in reps)
    return all({t for t in tenants if owner(t, names) == r.name} == r.held() for r in reps)


def name_owning_some(tenants: tuple[str, ...], others: tuple[str, ...], base: str) -> str:
    """A replica name that, joining ``others``, owns at least one of ``tenants``."""
    for i in range(1000):
        name = f"{base}{i}"
        if any(owner(t, (*others, name)) == name for t in tenants):
            return name
    raise AssertionError("no name owns anything")


def moves(reason: str) -> float:
    return metrics.LEASE_MOVES.labels(reason)._value.get()


def test_rendezvous_spreads_evenly_and_moves_only_the_leavers_share():
    tenants = [f"tenant-{i}" for i in range(600)]
    three = ("host-a-1", "host-b-2", "host-c-3")
    owners = {t: owner(t, three) for t in tenants}
    counts = sorted(list(owners.values()).count(r) for r in three)
    assert counts[0] >= 160 and counts[-1] <= 240, counts
    two = three[:2]
    for t in tenants:
        # a tenant of a survivor stays put; the leaver's go to the survivors
        if owners[t] in two:
            assert owner(t, two) == owners[t]
    assert owner("x", ()) is None


async def test_three_replicas_divide_the_tenants(replicas, redis_client, tenant):
    tenants = tuple(f"{tenant}-{i}" for i in range(12))
    reps = [replicas(name, tenants).start() for name in ("A", "B", "C")]
    await until(lambda: split_as_hashed(reps, tenants), 5, "tenants not split by hash")
    held = [len(r.held()) for r in reps]
    assert sum(held) == 12 and all(h >= 1 for h in held), held
    live = await redis_client.zrange(keys.REPLICAS_KEY, 0, -1)
    assert {b"A", b"B", b"C"} <= set(live)
    assert metrics.REPLICAS_LIVE._value.get() >= 3
    # the lease names the holder the hash chose
    for r in reps:
        for t in r.held():
            assert await redis_client.get(keys.key("lease", t)) == r.name.encode()


async def test_a_joining_replica_takes_its_share_under_load(replicas, engine, redis_client,
                                                           tenant):
    tenants = tuple(f"{tenant}-{i}" for i in range(4))
    workloads = {}
    for n, t in enumerate(tenants):
        await setup_world(engine, t)
        workloads[t] = Workload(random.Random(50 + n), N_ARRIVALS, ["g1", "g2"])
    # a long lease: on a loaded machine a 500 ms lease can lapse under load, and then the
    # joiner takes a tenant by expiry instead of by hand-over
    lease = 5000
    a = replicas("A", tenants, lease_ms=lease).start()
    b = replicas("B", tenants, lease_ms=lease).start()
    await until(lambda: split_as_hashed([a, b], tenants), 5, "A and B did not split")
    joiner = name_owning_some(tenants, ("A", "B"), "C")
    theirs = {t for t in tenants if owner(t, ("A", "B", joiner)) == joiner}
    rebalanced, taken = moves("released_rebalance"), moves("taken")
    first = slice(0, len(workloads[tenants[0]].entries) // 2)
    await produce(redis_client, workloads, first)
    c = replicas(joiner, tenants, lease_ms=lease).start()
    took = await until(lambda: c.held() == theirs, lease / 1000,
                       "the joiner did not take its share")
    # handed over by the holder, not taken after a lease ran out
    assert took < lease / 2000
    assert moves("released_rebalance") - rebalanced == len(theirs)
    assert moves("taken") - taken >= len(theirs)
    await produce(redis_client, workloads, slice(first.stop, None))
    await wait_drained(redis_client, list(tenants), timeout_s=30)
    assert split_as_hashed([a, b, c], tenants)
    for t, wl in workloads.items():
        state = check_exactly_once(await read_events(redis_client, t), wl)
        await check_final_state(engine, t, state, AGENTS)
        assert await redis_client.xlen(keys.key("dead", t)) == 0


async def test_a_stopped_replica_hands_its_tenants_over_at_once(replicas, redis_client,
                                                                 tenant):
    tenants = tuple(f"{tenant}-{i}" for i in range(8))
    # a long lease: a handover in well under it is not the lease running out
    a = replicas("A", tenants, lease_ms=5000).start()
    b = replicas("B", tenants, lease_ms=5000).start()
    await until(lambda: split_as_hashed([a, b], tenants), 5, "A and B did not split")
    assert b.held(), "B holds nothing: nothing to hand over"
    stopped = moves("released_stop")
    started = time.monotonic()
    await b.halt()
    assert moves("released_stop") - stopped == len(set(tenants) - a.held())
    assert await redis_client.zscore(keys.REPLICAS_KEY, "B") is None  # deregistered
    await until(lambda: a.held() == set(tenants), 2.5, "A did not take B's tenants")
    assert time.monotonic() - started < 2.5  # well under the 5 s lease: handed over


async def test_a_killed_replicas_tenants_move_once_the_lease_runs_out(replicas, tenant):
    tenants = tuple(f"{tenant}-{i}" for i in range(8))
    a, b = replicas("A", tenants).start(), replicas("B", tenants).start()
    await until(lambda: split_as_hashed([a, b], tenants), 5, "A and B did not split")
    orphans = b.held()
    assert orphans, "B holds nothing"
    await b.kill()
    killed = time.monotonic()
    # the survivor waits for the dead one's lease (the safety net)...
    await asyncio.sleep(LEASE_MS / 1000 * 0.6)
    assert not (a.held() & orphans)
    # ...and takes its tenants soon after it runs out
    await until(lambda: a.held() == set(tenants), 3, "A did not take B's tenants")
    gap = time.monotonic() - killed
    assert gap < (LEASE_MS + GONE_AFTER * HEARTBEAT_MS) / 1000 + 0.5, gap


async def test_membership_off_the_first_replica_holds_every_tenant(redis_url, tenant):
    """heartbeat_ms 0: the lease alone decides; whoever asks first holds every tenant."""
    tenants = tuple(f"{tenant}-{i}" for i in range(4))
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    opts = ConsumerOptions(tenants=tenants, block_ms=5, tick_ms=20, lease_ms=LEASE_MS,
                           discover=False, heartbeat_ms=0)
    a, b = (GatewayConsumer(Engine(c), opts, name=n) for c, n in zip(clients, "AB", strict=True))
    try:
        await a.step()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in (a, b)]
        await asyncio.sleep(0.3)
        held = [{n for n, t in c.tenants.items() if t.held} for c in (a, b)]
        stop.set()
        await asyncio.gather(*tasks)
        assert held == [set(tenants), set()]
        assert a.members is None
    finally:
        for c in clients:
            await c.aclose()


# ------------------------------------------------------------------- real daemons


@pytest.fixture
async def daemons(redis_url, redis_client, tenant) -> AsyncIterator[Callable[[], Daemon]]:
    import os
    tenants = ",".join(f"{tenant}-{i}" for i in range(6))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {"DISPATCHD_REDIS_URL": redis_url, "DISPATCHD_TENANTS": tenants,
            "DISPATCHD_BLOCK_MS": "5", "DISPATCHD_LOG_LEVEL": "INFO",
            # a long lease: a handover well under it is not the lease running out
            "DISPATCHD_LEASE_MS": "10000",
            "DISPATCHD_ADMIN_ENABLED": "false", "DISPATCHD_METRICS_PORT": "0"}
    started: list[Daemon] = []

    def start() -> Daemon:
        d = Daemon(env)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()
        await redis_client.srem(keys.TENANTS_KEY, *tenants.split(","))


async def holders(redis: aioredis.Redis, tenants: list[str]) -> list[bytes | None]:
    return [await redis.get(keys.key("lease", t)) for t in tenants]


async def test_two_daemons_share_the_tenants_and_a_sigterm_hands_over(daemons, redis_client,
                                                                      tenant):
    tenants = [f"{tenant}-{i}" for i in range(6)]
    first, second = daemons(), daemons()
    await first.wait_for("ready")
    await second.wait_for("ready")
    deadline = time.monotonic() + 10
    while True:
        held = await holders(redis_client, tenants)
        names = {h for h in held if h is not None}
        if None not in held and len(names) == 2:
            break
        assert time.monotonic() < deadline, held
        await asyncio.sleep(0.05)
    pid = str(second.proc.pid).encode()
    mine = [t for t, h in zip(tenants, held, strict=True) if h is not None and
            h.split(b"-")[-2] == pid]
    assert mine and len(mine) < len(tenants)
    second.proc.terminate()
    started = time.monotonic()
    while any(h is None or h.split(b"-")[-2] == pid
              for h in await holders(redis_client, mine)):
        # a handover, not the 10 s lease running out (a bound far from both, for loaded
        # CI machines: the hand-over itself takes one heartbeat)
        assert time.monotonic() - started < 4.0, await holders(redis_client, mine)
        await asyncio.sleep(0.01)
    # the first SIGTERM stops it (a second one, from stop(), could land after the
    # daemon removed its handlers on the way out)
    assert await asyncio.to_thread(second.proc.wait, 10) == 0
    second.stop()
    assert await inbound_state(redis_client, tenants[0]) == (0, 0)
