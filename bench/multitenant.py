"""``multitenant``: 30 tenants of Zipf sizes on one server, then on a 3-master cluster.

Tenant ``i`` (``dispatchd-bench-mt-00`` .. ``-29``) has a share ``1/(i+1)`` of the agents
(Zipf: a few large tenants, many small ones; at least :data:`MIN_AGENTS` each) and the same
share of the arrivals, so every tenant is equally loaded for its size. Each tenant has
``agents // 25`` skill groups (2 to 20) of Zipf popularity, agents of capacity 3.

The same centre runs (a) on the bench's main server and (b) on a 3-master Valkey Cluster
the bench starts itself (:class:`dispatchd.devcluster.DevCluster`, no replicas: replicas
would only add replication work to the same 2 cores; jemalloc preloaded into the nodes as
into the main server, ``--server-malloc``), each with one ``dispatchd run`` serving all 30
tenants. On each, one step is run at a fixed rate for its p99 (on the cluster then again
with a second daemon replica, which divides the tenants with the first by rendezvous
hashing, ``dispatchd/membership.py``, and is stopped after), then the command rate is
ramped as in ``throughput`` (the same :func:`bench.scenarios.ramp`) with one daemon.

Per step, the generator reads every master's ``INFO cpu`` and counts the commands it sent
per tenant, so each shard's Redis CPU per command and share of a core, and the commands per
shard, come from the same window.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bench.centre import (
    ArrivalStream,
    apply_in_batches,
    build_centre,
    centre_commands,
    zipf_weights,
)
from bench.loadgen import LoadGen, StepResult, _decode_event, _json, _Marks
from bench.report import cpu_text, latency_text, step_text
from bench.scenarios import ramp
from bench.servers import (
    BenchError,
    Daemon,
    delete_matching,
    find_jemalloc,
    redis_cpu_s,
    server_malloc,
)
from dispatchd import keys
from dispatchd.connect import client_for
from dispatchd.consumer import GROUP
from dispatchd.devcluster import DevCluster
from dispatchd.engine import Engine
from dispatchd.protocol import ArriveCmd, CloseSessionCmd, GatewayCommand

TENANTS = 30
PREFIX = "dispatchd-bench-mt-"
MIN_AGENTS = 5
#: Fixed-rate step (commands/s) for p99, full and --quick.
FIXED_RATE, FIXED_RATE_QUICK = 5000, 2000
#: Agents over all tenants, full and --quick (as many as ``throughput``'s one tenant).
AGENTS, AGENTS_QUICK = 5000, 600
#: How long the lease holders must stay the same before the replicas' split is reported.
SETTLED_S = 2.0


def tenant_names() -> tuple[str, ...]:
    """The scenario's tenants."""
    return tuple(f"{PREFIX}{i:02d}" for i in range(TENANTS))


@dataclass(frozen=True)
class TenantSpec:
    """One tenant's size."""

    name: str
    agents: int
    groups: int


def tenant_specs(total_agents: int) -> list[TenantSpec]:
    """30 tenants, tenant i with a Zipf share 1/(i+1) of ``total_agents``."""
    weights = zipf_weights(TENANTS)
    whole = sum(weights)
    out = []
    for name, w in zip(tenant_names(), weights, strict=True):
        agents = max(MIN_AGENTS, round(total_agents * w / whole))
        out.append(TenantSpec(name, agents, max(2, min(20, agents // 25))))
    return out


@dataclass(frozen=True)
class ShardStep:
    """One step's figures per shard (node), in the order of ``names``."""

    names: tuple[str, ...]
    cpu_share: tuple[float, ...]
    """Redis CPU seconds per second of the window (1.0 = a whole core)."""
    commands: tuple[int, ...]
    """Commands sent to the shard's tenants in the window."""
    cpu_us: tuple[float, ...]
    """Redis CPU µs per command sent to the shard."""

    @property
    def evenness(self) -> float:
        """max/mean commands per shard (1.0: perfectly even)."""
        mean = sum(self.commands) / len(self.commands)
        return max(self.commands) / mean if mean else 0.0


class MultiLoadGen(LoadGen):
    """:class:`LoadGen` over many tenants: arrivals spread over the tenants by their
    number of agents, one reader per tenant's ``{T}:out`` (an XREAD cannot span a
    cluster's slots), the backlog summed over every ``{T}:in``, the Redis CPU summed over
    ``nodes`` (the server, or every master) and kept per node.

    Args:
        nodes: (name, client) of each server whose CPU counts (plain clients).
        shard_of: tenant -> the name of its node.
    """

    def __init__(self, send: Any, read: Any, specs: Sequence[TenantSpec],
                 nodes: Sequence[tuple[str, aioredis.Redis]], shard_of: dict[str, str], *,
                 handle_s: float, seed: int, daemon_cpu: Callable[[], float]) -> None:
        super().__init__(send, read, specs[0].name, ArrivalStream(1, seed), handle_s=handle_s,
                         seed=seed, daemon_cpu=daemon_cpu)
        self.specs = list(specs)
        self.nodes = list(nodes)
        self.node_of = [shard_of[s.name] for s in specs]
        self.streams = [ArrivalStream(s.groups, seed + i) for i, s in enumerate(specs)]
        self.inbounds = [keys.key("inbound", s.name) for s in specs]
        self.outbounds = [keys.key("outbound", s.name) for s in specs]
        self._cum = list(itertools.accumulate(s.agents for s in specs))
        self._pick = random.Random(seed + 7919)
        self.tenant_of: dict[str, int] = {}
        self.sent_per_tenant = [0] * len(specs)
        self._log: list[tuple[_Marks, list[float], list[int]]] = []
        #: per step (by ``id`` of its result), its per-shard figures
        self.shards: dict[int, ShardStep] = {}

    async def __aenter__(self) -> MultiLoadGen:
        self._tasks = []
        for out in self.outbounds:
            last = await self.read.xrevrange(out, count=1)
            after: Any = last[0][0] if last else b"0-0"
            self._tasks.append(asyncio.create_task(self._read_tenant(out, after)))
        self._tasks.append(asyncio.create_task(self._send_loop()))
        return self

    def _arrival(self) -> tuple[GatewayCommand, str]:
        n = self.sessions = self.sessions + 1
        i = min(bisect.bisect_left(self._cum, self._pick.random() * self._cum[-1]),
                len(self._cum) - 1)
        group, priority = self.streams[i].next()
        session = f"s{n}"
        self.tenant_of[session] = i
        cmd = ArriveCmd(id=f"a{n}", session=session, group=f"g{group}", priority=priority,
                        gateway="bench", ts=time.time_ns() // 1_000_000)
        return cmd, session

    async def _xadd(self, cmds: list[GatewayCommand], arrived: list[str]) -> None:
        pipe = self.send.pipeline(transaction=False)
        for cmd in cmds:
            session = cast(str, cmd.session)  # type: ignore[union-attr]
            i = (self.tenant_of.pop(session) if isinstance(cmd, CloseSessionCmd)
                 else self.tenant_of[session])
            self.sent_per_tenant[i] += 1
            pipe.execute_command("XADD", self.inbounds[i], "*", "json",
                                 _json.encode(cmd))
        t = time.perf_counter()
        for cmd in cmds:
            self.sent_at[cmd.id] = t
        for session in arrived:
            self.arrive_at[session] = t
        self.sent += len(cmds)
        self.arrivals += len(arrived)
        await pipe.execute()

    async def _read_tenant(self, outbound: str, after: Any) -> None:
        while not self._stopping:
            rows = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
                await self.read.xread({outbound: after}, count=10_000, block=100),
            )
            now = time.perf_counter()
            for _stream, entries in rows or []:
                for _eid, fields in entries:
                    self._on_event(_decode_event(fields[b"json"]), now)
                after = entries[-1][0]

    async def _marks(self) -> _Marks:
        pipe = self.send.pipeline(transaction=False)
        for key in self.inbounds:
            pipe.xlen(key)
        lens = await pipe.execute()
        cpus = list(await asyncio.gather(*(redis_cpu_s(c) for _, c in self.nodes)))
        m = _Marks(time.perf_counter(), self.sent, self.arrivals, sum(int(n) for n in lens),
                   sum(cpus), self.daemon_cpu(), time.process_time())
        self._log.append((m, cpus, list(self.sent_per_tenant)))
        return m

    async def step(self, target: float, warm_s: float, measure_s: float) -> StepResult:
        r = await super().step(target, warm_s, measure_s)
        self.shards[id(r)] = self._shard_step()
        return r

    def _shard_step(self) -> ShardStep:
        (a, cpu_a, sent_a), (b, cpu_b, sent_b) = self._log[-2:]
        names = tuple(name for name, _ in self.nodes)
        secs = b.t - a.t
        cmds = dict.fromkeys(names, 0)
        for i, node in enumerate(self.node_of):
            cmds[node] += sent_b[i] - sent_a[i]
        cpu = [y - x for x, y in zip(cpu_a, cpu_b, strict=True)]
        return ShardStep(
            names=names, cpu_share=tuple(c / secs for c in cpu),
            commands=tuple(cmds[n] for n in names),
            cpu_us=tuple(c / max(1, cmds[n]) * 1e6 for c, n in zip(cpu, names, strict=True)))


# ------------------------------------------------------------------------ set-up


@contextlib.contextmanager
def preload(malloc: str) -> Iterator[str | None]:
    """``LD_PRELOAD`` jemalloc for the servers started inside (as ``--server-malloc``
    does for the main server); yields the library's path or None."""
    path = None if malloc == "libc" else find_jemalloc()
    if path is None and malloc == "jemalloc":
        raise BenchError("--server-malloc jemalloc: no libjemalloc.so.2 installed "
                         "(Debian: apt install libjemalloc2)")
    before = os.environ.get("LD_PRELOAD")
    if path is not None:
        os.environ["LD_PRELOAD"] = path
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = before


async def configure(engine: Engine, client: Any, specs: Sequence[TenantSpec], seed: int) -> None:
    """Each tenant's groups and online agents, and its inbound stream's consumer group."""
    for i, spec in enumerate(specs):
        centre = build_centre(spec.groups, spec.agents, 3, seed + i)
        await apply_in_batches(engine, spec.name, centre_commands(centre, seed + i, online=True),
                               size=500)
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await client.xgroup_create(keys.key("inbound", spec.name), GROUP, id="0",
                                       mkstream=True)


async def delete_tenants(client: Any) -> None:
    """Delete every key of the scenario's tenants (SCAN + UNLINK) and unregister them."""
    for tenant in tenant_names():
        if hasattr(client, "get_primaries"):  # a cluster: scan each master
            for node in client.get_primaries():
                async for key in client.scan_iter(match=keys.prefix(tenant) + "*",
                                                  count=10_000, target_nodes=node):
                    await client.unlink(key)
        else:
            await delete_matching(client, keys.prefix(tenant) + "*")
        await client.srem(keys.TENANTS_KEY, tenant)


async def lease_holders(client: Any, specs: Sequence[TenantSpec]) -> list[str | None]:
    """Each tenant's lease holder (the daemon's consumer name), None when free."""
    out = []
    for spec in specs:
        raw = await client.get(keys.key("lease", spec.name))
        out.append(raw.decode() if isinstance(raw, bytes) else raw)
    return out


def holder_pid(name: str | None, daemons: Sequence[Daemon]) -> int | None:
    """Which of ``daemons`` a lease holder's name (host-pid-suffix) is."""
    if name is None:
        return None
    for d in daemons:
        if f"-{d.pid}-" in f"-{name}-":
            return d.pid
    return None


async def settled_split(client: Any, specs: Sequence[TenantSpec], daemons: Sequence[Daemon],
                        timeout: float = 60.0) -> list[int]:
    """Wait until every tenant is held and the holders have not changed for
    :data:`SETTLED_S`; the number of tenants each daemon holds."""
    deadline = time.monotonic() + timeout
    last: list[int | None] | None = None
    since = time.monotonic()
    while True:
        now = [holder_pid(h, daemons) for h in await lease_holders(client, specs)]
        if now != last:
            last, since = now, time.monotonic()
        elif None not in now and time.monotonic() - since >= SETTLED_S:
            return [now.count(d.pid) for d in daemons]
        if time.monotonic() > deadline:
            got = [now.count(d.pid) for d in daemons]
            raise BenchError(f"multitenant: the daemon replicas did not settle their tenants "
                             f"in {timeout:.0f} s (held: {got}, free: {now.count(None)})")
        await asyncio.sleep(0.2)


# ----------------------------------------------------------------------- the scenario


@dataclass
class Setup:
    """One side of the comparison: a server or a cluster, and its clients."""

    name: str
    """``single`` or ``cluster``."""
    url: str
    send: Any
    read: Any
    engine: Engine
    nodes: list[tuple[str, aioredis.Redis]]
    shard_of: dict[str, str]


def _slashed(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    return "/".join(fmt.format(v) for v in values)


async def run_setup(ctx: Any, setup: Setup, specs: Sequence[TenantSpec], fixed_rate: int,
                    *, second_replica: bool) -> None:
    """Configure, start the daemon; the fixed-rate step (then with a second replica, on
    the cluster), then the ramp."""
    report, name = ctx.report, setup.name
    key = f"mt_{name}"
    report.progress(f"multitenant/{name}: configuring {sum(s.agents for s in specs):,} agents "
                    f"in {len(specs)} tenants")
    await configure(setup.engine, setup.send, specs, ctx.seed)
    daemons = [Daemon(setup.url, [s.name for s in specs], ctx.workdir / f"mt-{name}-1.log")]
    report.progress(f"multitenant/{name}: starting the daemon")
    await daemons[0].start(setup.send)
    try:
        gen = MultiLoadGen(setup.send, setup.read, specs, setup.nodes, setup.shard_of,
                           handle_s=ctx.profile.handle_s, seed=ctx.seed,
                           daemon_cpu=lambda: sum(d.cpu_s() for d in daemons))
        async with gen:
            # the fixed-rate steps first, on a centre that has not been overloaded yet,
            # after an unmeasured warm-up step (connections, caches) as the ramp starts with
            await gen.step(ctx.profile.ramp_start, ctx.profile.warm_s, ctx.profile.warm_s)
            fixed = await gen.step(fixed_rate, ctx.profile.warm_s, ctx.profile.measure_s)
            report.progress(f"multitenant/{name} fixed {step_text(fixed)}")
            _report_fixed(ctx, key, name, gen, fixed, "1 daemon")
            if second_replica:
                await _two_replicas(ctx, setup, specs, gen, daemons, fixed_rate)
            await gen.quiesce(ctx.profile.quiesce_s)
            best, failed = await ramp(gen, ctx, f"multitenant/{name}")
            _report_ramp(ctx, key, name, gen, best, failed, len(setup.nodes))
            report.put(f"{key}_errors", gen.errors)
    finally:
        for d in daemons:
            d.stop()


async def _two_replicas(ctx: Any, setup: Setup, specs: Sequence[TenantSpec], gen: MultiLoadGen,
                        daemons: list[Daemon], fixed_rate: int) -> None:
    """A second replica joins: the split once it settles, the fixed step with both; then
    it stops (SIGTERM: it hands its tenants back at once) before the ramp."""
    report, name, key = ctx.report, setup.name, f"mt_{setup.name}"
    second = Daemon(setup.url, [s.name for s in specs], ctx.workdir / f"mt-{name}-2.log")
    report.progress(f"multitenant/{name}: starting a second daemon replica")
    await gen.quiesce(ctx.profile.quiesce_s)
    daemons.append(second)
    await second.start(setup.send)
    split = await settled_split(setup.send, specs, daemons)
    report.line("multitenant", f"{name}: 2 daemon replicas hold {_slashed(split)} tenants")
    report.put(f"{key}_replica_tenants", _slashed(split))
    fixed2 = await gen.step(fixed_rate, ctx.profile.warm_s, ctx.profile.measure_s)
    report.progress(f"multitenant/{name} 2 replicas fixed {step_text(fixed2)}")
    _report_fixed(ctx, f"{key}2", name, gen, fixed2, "2 daemon replicas")
    await gen.quiesce(ctx.profile.quiesce_s)
    second.stop()
    daemons.remove(second)
    await settled_split(setup.send, specs, daemons)


def _report_ramp(ctx: Any, key: str, name: str, gen: MultiLoadGen, best: StepResult | None,
                 failed: StepResult | None, n_nodes: int) -> None:
    report, put = ctx.report, ctx.report.put
    if best is None:
        report.line("multitenant", f"{name}: no rate sustained, not even the lowest tried")
        put(f"{key}_max_cmd_per_s", 0)
        return
    sh = gen.shards[id(best)]
    text = (f"{name} ({n_nodes} {'masters' if n_nodes > 1 else 'server'}, 1 daemon): max "
            f"sustained {best.rate:,.0f} commands/s ({best.arrivals_rate:,.0f} customers/s): "
            f"command->event {latency_text(best, 'first')}; {cpu_text(best)}")
    if n_nodes > 1:
        text += (f"; per shard: Redis CPU {_slashed(sh.cpu_us, '{:.1f}')} µs/command, "
                 f"{_slashed([c * 100 for c in sh.cpu_share])} % of a core, "
                 f"{_slashed(sh.commands)} commands (max/mean {sh.evenness:.2f})")
    report.line("multitenant", text)
    if failed is not None:
        report.line("multitenant", f"{name}: first rate not sustained: {failed.target:,.0f}/s "
                    f"({failed.why_not})")
    put(f"{key}_max_cmd_per_s", best.rate)
    put(f"{key}_max_customers_per_s", best.arrivals_rate)
    put(f"{key}_max_p99_ms", best.latency[1], 2)
    put(f"{key}_redis_cpu_us_per_cmd", best.redis_cpu_us, 2)
    put(f"{key}_daemon_cpu_us_per_cmd", best.daemon_cpu_us, 2)
    put(f"{key}_generator_cpu_us_per_cmd", best.gen_cpu_us, 2)
    put(f"{key}_shard_cpu_share", _slashed(sh.cpu_share, "{:.3f}"))
    put(f"{key}_shard_redis_cpu_us", _slashed(sh.cpu_us, "{:.2f}"))
    put(f"{key}_shard_cmd", _slashed(sh.commands))
    put(f"{key}_shard_cmd_evenness", sh.evenness, 3)


def _report_fixed(ctx: Any, key: str, name: str, gen: MultiLoadGen, r: StepResult,
                  who: str) -> None:
    sh = gen.shards[id(r)]
    head = (f"{r.target:,.0f}/s sustained" if r.sustained else
            f"{r.target:,.0f}/s NOT sustained ({r.why_not}): {r.rate:,.0f} sent, "
            f"{r.applied_rate:,.0f} applied")
    ctx.report.line("multitenant", f"{name} ({who}) at {head}: command->event "
                    f"{latency_text(r, 'first')}; arrival->assignment {latency_text(r)}; "
                    f"{cpu_text(r)}; shards at {_slashed([c * 100 for c in sh.cpu_share])} % "
                    "of a core")
    put = ctx.report.put
    put(f"{key}_fixed_sustained", "yes" if r.sustained else "no")
    put(f"{key}_fixed_p99_ms", r.latency[1], 2)
    put(f"{key}_fixed_assign_p99_ms", r.assign[1], 2)
    put(f"{key}_fixed_redis_cpu_us", r.redis_cpu_us, 2)


async def multitenant_scenario(ctx: Any) -> None:
    """(a) the main server, (b) a 3-master cluster the bench starts."""
    quick = ctx.profile.name == "quick"
    specs = tenant_specs(AGENTS_QUICK if quick else AGENTS)
    fixed_rate = FIXED_RATE_QUICK if quick else FIXED_RATE
    put = ctx.report.put
    put("mt_tenants", len(specs))
    put("mt_agents", sum(s.agents for s in specs))
    put("mt_tenant_agents", f"{specs[0].agents}-{specs[-1].agents}")
    put("mt_fixed_rate", fixed_rate)
    ctx.report.line("multitenant", f"{len(specs)} tenants, {sum(s.agents for s in specs):,} "
                    f"agents (Zipf sizes {specs[0].agents:,} .. {specs[-1].agents:,}), arrivals "
                    "in proportion; 1 daemon on each setup")
    await _single(ctx, specs, fixed_rate)
    await _cluster(ctx, specs, fixed_rate)
    single = ctx.report.values.get("mt_single_redis_cpu_us_per_cmd")
    cluster = ctx.report.values.get("mt_cluster_redis_cpu_us_per_cmd")
    if single and cluster:
        ctx.report.ratio("mt_cluster_vs_single_redis_cpu", float(cluster), float(single))
        ctx.report.line("multitenant", "Redis CPU per command, cluster/single: "
                        f"{ctx.report.values['mt_cluster_vs_single_redis_cpu']}")
    s_max = ctx.report.values.get("mt_single_max_cmd_per_s")
    c_max = ctx.report.values.get("mt_cluster_max_cmd_per_s")
    if s_max and c_max and float(s_max):
        ctx.report.ratio("mt_cluster_vs_single_max", float(c_max), float(s_max))


async def _single(ctx: Any, specs: Sequence[TenantSpec], fixed_rate: int) -> None:
    if ctx.server.owned:
        await ctx.client.flushall()
    else:
        await delete_tenants(ctx.client)
    read = ctx.server.client()
    setup = Setup("single", ctx.server.url, ctx.client, read, ctx.engine,
                  [("server", ctx.client)], {s.name: "server" for s in specs})
    try:
        await run_setup(ctx, setup, specs, fixed_rate, second_replica=False)
    finally:
        await read.aclose()
        if ctx.server.owned:
            await ctx.client.flushall()
        else:
            await delete_tenants(ctx.client)
    ctx.report.put("mt_single_tenants_per_shard", len(specs))


async def _cluster(ctx: Any, specs: Sequence[TenantSpec], fixed_rate: int) -> None:
    ctx.report.progress("multitenant/cluster: starting a 3-master Valkey Cluster (no replicas)")
    cluster = DevCluster(ctx.workdir / "mt-cluster", 0, replicas=0)
    with preload(ctx.malloc):
        await asyncio.to_thread(cluster.start)
    send = read = None
    nodes: list[tuple[str, aioredis.Redis]] = []
    try:
        send = client_for(cluster.url, decode_responses=False)
        read = client_for(cluster.url, decode_responses=False)
        await send.initialize()
        await read.initialize()
        engine = Engine(send)
        await engine.load_scripts()
        # the masters in slot order (the first holds slots 0..5460), whatever their ports
        nodes = [(str(p), aioredis.Redis(host="127.0.0.1", port=p, password=cluster.password))
                 for p in cluster.masters]
        shard_of = {}
        for spec in specs:
            node = send.get_node_from_key(keys.key("inbound", spec.name))
            shard_of[spec.name] = str(node.port)
        per_shard = [sum(1 for v in shard_of.values() if v == n) for n, _ in nodes]
        ctx.report.put("mt_cluster_server_malloc", await server_malloc(nodes[0][1]))
        ctx.report.put("mt_cluster_shard_tenants", _slashed(per_shard))
        agents = [sum(s.agents for s in specs if shard_of[s.name] == n) for n, _ in nodes]
        ctx.report.put("mt_cluster_shard_agents", _slashed(agents))
        ctx.report.line("multitenant", f"cluster: 3 masters (no replicas), tenants per shard "
                        f"{_slashed(per_shard)}, agents per shard {_slashed(agents)}")
        setup = Setup("cluster", cluster.url, send, read, engine, nodes, shard_of)
        await run_setup(ctx, setup, specs, fixed_rate, second_replica=True)
    finally:
        for _, c in nodes:
            await c.aclose()
        for cluster_client in (send, read):
            if cluster_client is not None:
                await cluster_client.aclose()
        await asyncio.to_thread(cluster.stop)
