"""``dispatchd demo``: a small contact centre, live, on the real streams and wall-clock time.

The real :class:`~dispatchd.consumer.GatewayConsumer` runs in-process on an embedded
Valkey (or a given server); groups and agents are configured through the Engine; then
synthetic customers and agents act only through :class:`~dispatchd.client.GatewayClient`
commands. A fixed cast of six customers makes an assignment, an overflow, a reply-SLA
alert, a transfer, a pre-close, system closes and a customer leaving the queue happen in
every default run; the others arrive at random, each with its own seeded generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from dispatchd import keys
from dispatchd.client import GatewayClient
from dispatchd.cluster_consumer import consumer_for
from dispatchd.connect import client_for
from dispatchd.consumer import ConsumerOptions, wall_clock_ms
from dispatchd.daemon import redact
from dispatchd.embedded import check_server, throwaway
from dispatchd.engine import Engine
from dispatchd.errors import DispatchError
from dispatchd.messages import Tier

Event = dict[str, Any]

#: Short lifecycle timers (ms) of every group, so that they fire within the demo.
TIMERS = {
    "queue_warning_ms": 5_000, "position_update_ms": 5_000, "reply_sla_ms": 4_000,
    "silence_remind_ms": 4_000, "silence_preclose_ms": 7_000, "silence_close_ms": 10_000,
    "confirm_close_ms": 6_000,
}
#: group -> overflow tiers (a group is configured before the groups that name it).
GROUPS: dict[str, list[Tier]] = {
    "bot": [],
    "presale": [Tier(after_ms=12_000, groups=["bot"])],
    "aftersale": [Tier(after_ms=12_000, groups=["bot"])],
    "vip": [Tier(after_ms=3_000, groups=["aftersale"]), Tier(after_ms=8_000, groups=["bot"])],
}
#: agent -> (capacity, abilities, reply delay range in seconds).
AGENTS: dict[str, tuple[int, dict[str, float], tuple[float, float]]] = {
    "ann": (2, {"presale": 1.0}, (1.0, 3.0)),
    "bob": (3, {"presale": 0.8, "aftersale": 1.0}, (1.5, 3.5)),
    "cat": (2, {"aftersale": 1.0}, (1.0, 2.5)),
    "dan": (1, {"aftersale": 0.7}, (2.0, 3.5)),
    "eve": (1, {"vip": 1.0}, (4.5, 6.0)),  # slow: misses the 4 s reply SLA
    "bot": (3, {"bot": 1.0}, (0.3, 0.6)),
}
HANDOVER_AGENT = "cat"  # goes offline with handover at 45 % of the run, back at 70 %
TRANSFER_TO = {"presale": "aftersale", "aftersale": "presale", "vip": "aftersale"}
#: (seconds after start, group, priority, persona): the fixed cast.
CAST = (
    (0.2, "vip", 5, "normal"),  # eve takes it and misses the reply SLA
    (0.4, "vip", 5, "normal"),  # waits for eve, overflows to aftersale after 3 s
    (0.8, "presale", 0, "transfer"),  # moved to aftersale after one exchange
    (1.2, "aftersale", 0, "silent"),  # reminded, pre-closed, then closed by the system
    (1.6, "presale", 0, "ghost"),  # never confirms the close: closed by the system
    (1.8, "vip", 5, "leaver"),  # leaves the queue after 2 s, before vip overflows
)
PERSONAS = {"normal": 44, "silent": 8, "returning": 6, "ghost": 6, "transfer": 10,
            "impatient": 16, "unresolved": 10}
GROUP_MIX = {"presale": 45, "aftersale": 35, "vip": 20}
OUTCOME_WAIT_S = 3.0  # after a command, how long a customer waits for its effect
_PHASE_OF = {"queued": "queued", "assigned": "waiting_agent", "preclosed": "preclosed",
             "closed": "closed", "transferred": "moving"}
_COLOURS = {"assigned": "32", "queued": "33", "position": "2", "alert": "31", "closed": "34",
            "transferred": "35", "preclosed": "36", "tier_opened": "35", "error": "1;31"}
_FIRST = ("agent", "group", "kind", "tier", "via", "position", "eta_ms", "wait_ms",
          "waited_ms", "first_response_ms", "priority", "reason", "state")
_HIDDEN = {"type", "ts", "cmd", "session", "gateway", "_entry", "virtual_arrival_ms",
           "from", "to", "previous", "status"}


class DemoError(DispatchError):
    """The demo cannot run as asked (exit status 2)."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``dispatchd demo`` was asked for (see ``dispatchd demo --help``)."""

    duration: float = 40.0
    seed: int = 1
    rate: float = 0.6
    redis_url: str | None = None
    tenant: str = "demo"
    quiet: bool = False


@dataclass(eq=False)
class Customer:
    """One synthetic customer, and what the events told about its session."""

    sid: str
    group: str
    priority: int
    persona: str
    rng: random.Random
    rounds: int
    patience: float | None
    arrived: float = field(default_factory=time.monotonic)
    phase: str = "new"
    agent: str | None = None
    replies: int = 0
    transferred: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def track(self, ev: Event) -> None:
        kind = ev["type"]
        if kind == "state_changed":
            self.phase = ev.get("to", self.phase)
        elif kind in _PHASE_OF:
            self.phase = _PHASE_OF[kind]
        else:
            return
        if kind == "assigned":
            self.agent = ev.get("agent")
        elif kind == "transferred":
            self.agent, self.group = None, ev.get("to_group", self.group)
        self.changed.set()

    async def changed_within(self, seconds: float | None) -> bool:
        try:
            await asyncio.wait_for(self.changed.wait(), seconds)
        except TimeoutError:
            return False
        return True


def _pairs(counts: Counter[Any], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{k} {n}" for k, n in sorted(counts.items()))


@dataclass
class Stats:
    """Counts over the outbound events."""

    types: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    overflow: Counter[int] = field(default_factory=Counter)
    waits: dict[str, int] = field(default_factory=dict)  # session -> wait at 1st assignment

    def record(self, ev: Event) -> None:
        kind = ev["type"]
        self.types[kind] += 1
        if kind == "alert":
            self.alerts[ev.get("kind", "?")] += 1
        elif kind == "closed":  # a queued session's close carries no reason in this build
            self.closed[ev.get("reason") or ("abandoned" if "agent" not in ev else "?")] += 1
        elif kind == "assigned":
            self.waits.setdefault(ev.get("session", "?"), ev.get("wait_ms", 0))
            if ev.get("via") == "overflow":
                self.overflow[ev.get("tier", 0)] += 1


def _value(name: str, value: object) -> str:
    if value is None:
        return "-"
    if name.endswith("_ms") and isinstance(value, int):
        return f"{value / 1000:.1f}s"
    return str(value)


def format_event(ev: Event, start_ms: int, colour: bool = False) -> str:
    """One line: seconds since the start, type, session, then the telling fields."""
    kind = ev["type"]
    head = f"{(ev['ts'] - start_ms) / 1000:6.1f}s  {kind:<15} {ev.get('session') or '-':<5}"
    arrow = {"state_changed": ("from", "to"), "agent_status": ("previous", "status")}.get(kind)
    parts = [f"{ev.get(arrow[0])} -> {ev.get(arrow[1])}"] if arrow else []
    names = [n for n in _FIRST if n in ev]
    names += sorted(n for n in ev if n not in _HIDDEN and n not in _FIRST)
    parts += [f"{n.removesuffix('_ms')}={_value(n, ev[n])}" for n in names]
    line = f"{head} {' '.join(parts)}".rstrip()
    code = _COLOURS.get(kind)
    return f"\x1b[{code}m{line}\x1b[0m" if colour and code else line


class Demo:
    """The synthetic contact centre: customers, agents and the event printer."""

    def __init__(self, opts: DemoOptions, engine: Engine) -> None:
        self.opts, self.engine = opts, engine
        self.client = GatewayClient(engine.redis, opts.tenant, gateway="web")
        self.stats = Stats()
        self.customers: dict[str, Customer] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.colour = sys.stdout.isatty()
        self.t0, self.start_ms, self.after = time.monotonic(), wall_clock_ms(), "0-0"

    async def configure(self) -> None:
        """Groups and agents through the Engine; agents online through the gateway."""
        tenant, now = self.opts.tenant, wall_clock_ms()
        for group, tiers in GROUPS.items():
            await self.engine.configure_group(tenant, now, group, tiers=tiers, **TIMERS)
        for agent, (capacity, abilities, _) in AGENTS.items():
            await self.engine.configure_agent(tenant, now, agent, capacity=capacity,
                                              abilities=abilities)
        self.t0, self.start_ms = time.monotonic(), now
        for agent in AGENTS:
            await self.client.agent_status(agent, "online")

    # -------------------------------------------------------------------- the actors

    async def _sleep_until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + at - time.monotonic()))

    async def arrivals(self) -> None:
        """The cast, then Poisson arrivals with random groups, priorities and personas."""
        for index, (at, group, priority, persona) in enumerate(CAST, 1):
            await self._sleep_until(at)
            self._spawn(index, group, priority, persona)
        rng, at = random.Random(self.opts.seed), CAST[-1][0]
        for index in itertools.count(len(CAST) + 1):
            at += rng.expovariate(self.opts.rate)
            group = rng.choices(list(GROUP_MIX), weights=list(GROUP_MIX.values()))[0]
            priority = 5 if group == "vip" else rng.choice((0, 0, 0, 0, 1, 2, 3))
            persona = rng.choices(list(PERSONAS), weights=list(PERSONAS.values()))[0]
            await self._sleep_until(at)
            self._spawn(index, group, priority, persona)

    def _spawn(self, index: int, group: str, priority: int, persona: str) -> None:
        rng = random.Random(f"{self.opts.seed}-{index}")
        patience = {"leaver": 2.0, "impatient": rng.uniform(2.0, 8.0)}.get(persona)
        rounds = 1 if index <= len(CAST) else rng.randint(1, 3)  # the cast keeps it short
        c = Customer(f"s{index:03d}", group, priority, persona, rng, rounds, patience)
        self.customers[c.sid] = c
        task = asyncio.create_task(self.drive(c))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def shift(self) -> None:
        """One agent goes offline mid-run, handing its sessions over, and comes back."""
        await self._sleep_until(0.45 * self.opts.duration)
        await self.client.agent_status(HANDOVER_AGENT, "offline", handover=True)
        await self._sleep_until(0.70 * self.opts.duration)
        await self.client.agent_status(HANDOVER_AGENT, "online")

    async def drive(self, c: Customer) -> None:
        """Play one session, both sides: plan the next step from the phase, take it when
        its delay is over unless an event changed the phase first."""
        await self.client.arrive(c.sid, c.group, customer=f"u{c.sid[1:]}", priority=c.priority)
        while c.phase != "closed":
            c.changed.clear()
            plan = self._plan(c)
            if await c.changed_within(plan[0] if plan else None) or plan is None:
                continue
            await self._act(c, plan[1])
            await c.changed_within(OUTCOME_WAIT_S)

    @staticmethod
    def _plan(c: Customer) -> tuple[float, str] | None:
        """The next step of a session and its delay; None: only an event moves it on."""
        low, high = AGENTS[c.agent][2] if c.agent in AGENTS else (1.0, 3.0)
        agent_delay = c.rng.uniform(low, high) + (3.5 if c.rng.random() < 0.1 else 0.0)
        match c.phase:
            case "queued" if c.patience is not None:
                return max(0.0, c.arrived + c.patience - time.monotonic()), "leave"
            case "waiting_agent":
                moving = c.persona == "transfer" and c.replies > 0 and not c.transferred
                return agent_delay, "transfer" if moving else "reply"
            case "waiting_customer" if c.persona not in ("silent", "returning"):
                if c.rounds > 0:
                    return c.rng.uniform(1.0, 3.0), "write"
                return c.rng.uniform(low, high), "request_close"  # before the pre-close
            case "pending_confirm" if c.persona != "ghost":
                return c.rng.uniform(1.0, 2.5), "confirm"
            case "preclosed" if c.persona == "returning":
                return c.rng.uniform(1.0, 2.0), "return"
        return None  # e.g. a silent customer: the timers take it from here

    async def _act(self, c: Customer, step: str) -> None:
        """Send the gateway command of ``step`` (customer or agent side)."""
        cl, sid, agent = self.client, c.sid, c.agent or ""
        if step in ("reply", "request_close"):
            c.replies += 1
            await (cl.agent_message if step == "reply" else cl.request_close)(sid, agent)
        elif step == "write":
            c.rounds -= 1
            await cl.customer_message(sid)
        elif step == "return":  # a pre-closed customer writes again
            c.persona, c.rounds = "normal", 0
            await cl.customer_message(sid)
        elif step == "confirm":
            resolved = c.persona != "unresolved"
            c.persona, c.rounds = "normal", 1  # an unresolved one gets one more exchange
            await cl.confirm_close(sid, resolved=resolved)
        elif step == "transfer":
            c.transferred = True
            await cl.transfer(sid, to_group=TRANSFER_TO.get(c.group, "presale"))
        else:
            await cl.customer_leave(sid)

    # -------------------------------------------------------------------- the events

    async def watch(self, stop: asyncio.Event) -> None:
        """Print and count the outbound events, and tell the customers, until ``stop``."""
        while not stop.is_set():
            await self.drain(block_ms=100)

    async def drain(self, block_ms: int | None = None) -> None:
        for ev in await self.client.read_events(self.after, block_ms=block_ms):
            self.after = ev["_entry"]
            self.stats.record(ev)
            if not self.opts.quiet:
                print(format_event(ev, self.start_ms, self.colour), flush=True)
            customer = self.customers.get(ev.get("session") or "")
            if customer is not None:
                customer.track(ev)

    def header(self, url: str) -> str:
        groups = "; ".join(
            f"{g}" + "".join(f" +{t.after_ms // 1000}s:{','.join(t.groups)}" for t in tiers)
            for g, tiers in GROUPS.items())
        agents = ", ".join(f"{a} cap {cap} {'/'.join(ab)}" for a, (cap, ab, _) in AGENTS.items())
        timers = ", ".join(f"{k.removesuffix('_ms')} {v // 1000}s" for k, v in TIMERS.items())
        o = self.opts
        return (f"dispatchd demo: tenant {o.tenant} on {redact(url)}, {o.duration:g} s, "
                f"seed {o.seed}, {o.rate:g} arrivals/s (Ctrl-C stops early)\n"
                f"  groups: {groups}\n"
                f"  agents: {agents}\n  timers: {timers}")

    def summary(self, elapsed: float) -> str:
        st, o = self.stats, self.opts
        served = len(st.waits)
        average = sum(st.waits.values()) / served / 1000 if served else 0.0
        rows = [
            ("customers arrived", str(len(self.customers)), ""),
            ("served", str(served), "assigned an agent"),
            ("served by overflow", str(st.overflow.total()), _pairs(st.overflow, "tier ")),
            ("abandoned", str(st.closed["abandoned"]), "left the queue"),
            ("still queued at end",
             str(sum(c.phase == "queued" for c in self.customers.values())), ""),
            ("average wait", f"{average:.1f} s", "arrival to first assignment"),
            ("closed", str(st.closed.total()), _pairs(st.closed)),
            ("alerts", str(st.alerts.total()), _pairs(st.alerts)),
            ("events", str(st.types.total()), _pairs(st.types)),
        ]
        lines = [f"summary after {elapsed:.1f} s (tenant {o.tenant}, seed {o.seed}, "
                 f"rate {o.rate:g}/s)"]
        lines += [f"  {name:<20} {value:>6}  {note}".rstrip() for name, value, note in rows]
        return "\n".join(lines)


# -------------------------------------------------------------------------- running it


async def _clear_tenant(redis: aioredis.Redis, tenant: str) -> None:
    """Start from an empty tenant: an earlier demo's data is deleted, anything else refused."""
    if await redis.exists(keys.key("lease", tenant)):
        raise DemoError(f"tenant {tenant!r} is being served right now; pick another --tenant")
    names = ("tenant", "groups", "agents", "inbound", "outbound")
    if not await redis.exists(*(keys.key(n, tenant) for n in names)):
        return
    groups = cast(set[bytes], await redis.smembers(keys.key("groups", tenant)))
    agents = cast(set[bytes], await redis.smembers(keys.key("agents", tenant)))
    if groups != {g.encode() for g in GROUPS} or agents != {a.encode() for a in AGENTS}:
        raise DemoError(f"tenant {tenant!r} holds data that is not an earlier demo's; "
                        "pick another --tenant")
    async for key in redis.scan_iter(match=keys.prefix(tenant) + "*", count=1000):
        await redis.delete(key)


async def _play(opts: DemoOptions, engine: Engine, url: str, stop: asyncio.Event) -> int:
    demo = Demo(opts, engine)
    if not opts.quiet:
        print(demo.header(url), flush=True)
    consumer_stop = asyncio.Event()
    # discover=False: serve the demo's tenant only, neither registering it in
    # dispatchd:tenants nor taking the tenants listed there (matters on a shared server)
    consumer = consumer_for(engine, ConsumerOptions(tenants=(opts.tenant,), discover=False))
    consuming = asyncio.create_task(consumer.run(consumer_stop))
    await demo.configure()
    actors = [asyncio.create_task(demo.arrivals()), asyncio.create_task(demo.shift())]
    watching = asyncio.create_task(demo.watch(stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, consuming, watching], timeout=opts.duration,
                       return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for task in [*actors, *demo.tasks]:
        task.cancel()
    await asyncio.gather(*actors, *demo.tasks, stopping, return_exceptions=True)
    consumer_stop.set()
    await consuming
    await watching
    await demo.drain()
    print(demo.summary(time.monotonic() - demo.t0), flush=True)
    return 0


async def _main(opts: DemoOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            url = opts.redis_url
            if url is None:
                url = await stack.enter_async_context(throwaway("dispatchd-demo-"))
            redis: Any = client_for(url, decode_responses=False)
            stack.push_async_callback(redis.aclose)
            await check_server(redis)
            await _clear_tenant(redis, opts.tenant)
            engine = Engine(redis)
            await engine.load_scripts()
            return await _play(opts, engine, url, stop)
    except DemoError as exc:
        print(f"dispatchd demo: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`dispatchd demo | head`): stop quietly, and point stdout
        # at /dev/null so the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DispatchError, RedisError, OSError) as exc:
        print(f"dispatchd demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(opts: DemoOptions) -> int:
    """Run the demo on a uvloop event loop; returns the process exit status."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(opts))
