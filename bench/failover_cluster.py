"""Cluster failover under load: SIGKILL a master, let its replica be promoted, measure.

Each trial starts a fresh local cluster (:class:`dispatchd.devcluster.DevCluster`, 3
masters + 3 replicas, ``cluster-node-timeout`` ``--node-timeout-ms``, 1000 by default
instead of the dev cluster's 2000), a real ``python -m dispatchd run`` on it
(``DISPATCHD_DURABILITY`` as configured), and ``--tenants`` tenants spread evenly over
the three shards, each with one group and ``--agents`` agents of capacity 3. A load
generator acts as gateways: ``--rate`` customers/s arrive per tenant (``arrive``); on
each ``assigned`` event the agent answers (``agent_message``) after 50-150 ms and closes
(``close_session``) 200-600 ms later. A gateway whose ``XADD`` fails sends the same
command (same id) again until one is acknowledged. One reader per tenant follows
``{T}:out``. After ``--warmup-s`` the master of the first tenant's shard is SIGKILLed;
the load goes on ``--after-s`` more, then stops and the daemon drains.

Per trial, for the killed shard's tenants:

* **gap**: from the kill to the first event of a command sent after the kill (the time
  until that shard's commands are applied again); and the time gateways' ``XADD``
  failed (kill to the first acknowledged ``XADD`` after it);
* **lost commands**: acknowledged ``XADD``s that have no event in the final ``{T}:out``
  (their effect is not in the state), and how many of them a gateway had seen an event
  for;
* **lost events**: events a reader saw that the final ``{T}:out`` no longer holds, and
  whether their command was applied again after the failover (same outcome or not);

and for every tenant the consistency of the state read back from Redis: no session in
two agents' session sets, every assigned session in its agent's set and nowhere else,
each agent's load equal to its sessions and at most its capacity, every queued session
in its group's queue and every queue member queued, the counters ``{T}:ast`` (load and
capacity of the online agents) and ``{T}:gopen`` (open sessions per group) equal to
what they count. Also per trial: command->event latency (p50, p99) before the kill, the
durability waits that fell short (the daemon's metric).

Run it alone: it is a measurement (``flock /tmp/dispatchd-bench.lock``)::

    flock /tmp/dispatchd-bench.lock .venv/bin/python -m bench.failover_cluster \\
        --trials 3 --durability none,replica
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from redis.cluster import key_slot  # type: ignore[attr-defined]
from redis.exceptions import RedisError

from bench.servers import die_with_parent, stop_process
from dispatchd import keys, protocol
from dispatchd.client import GatewayClient
from dispatchd.connect import client_for
from dispatchd.devcluster import MASTERS, SLOTS, DevCluster
from dispatchd.embedded import free_port
from dispatchd.engine import Engine

TIMERS_OFF: dict[str, Any] = {name: 0 for name in (
    "queue_warning_ms", "queue_timeout_ms", "position_update_ms", "reply_sla_ms",
    "reply_reassign_ms", "silence_remind_ms", "silence_preclose_ms", "silence_close_ms",
    "confirm_close_ms")}


def say(*parts: object) -> None:
    print(*parts, flush=True)


def spread_tenants(n: int, first: int = 0) -> list[str]:
    """``n`` tenant ids, round-robin over the three masters' slot ranges (the dev cluster
    gives each master an equal range), starting with master ``first``'s."""
    step = SLOTS // MASTERS
    by_shard: list[list[str]] = [[] for _ in range(MASTERS)]
    i = 0
    while min(len(b) for b in by_shard) < (n + MASTERS - 1) // MASTERS:
        t = f"fo{i}"
        shard = min(key_slot(keys.root(t).encode()) // step, MASTERS - 1)
        by_shard[shard].append(t)
        i += 1
    out = [by_shard[(first + k) % MASTERS][k // MASTERS] for k in range(n)]
    return out


class Daemon:
    def __init__(self, url: str, tenants: list[str], durability: str, log: Path) -> None:
        self.metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
        env |= {"DISPATCHD_REDIS_URL": url, "DISPATCHD_TENANTS": ",".join(tenants),
                "DISPATCHD_DURABILITY": durability, "DISPATCHD_ADMIN_ENABLED": "false",
                "DISPATCHD_METRICS_PORT": str(self.metrics_port),
                "DISPATCHD_LOG_LEVEL": "INFO", "DISPATCHD_LOG_FORMAT": "text"}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd", "run"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True,
            preexec_fn=die_with_parent)

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                body = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{name} (\S+)$", body, re.M)
        return float(m.group(1)) if m else None

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


class Tenant:
    """One tenant's gateway: what it sent (acknowledged or not) and the events it saw."""

    def __init__(self, client: Any, name: str) -> None:
        self.name = name
        self.gw = GatewayClient(client, name, gateway="web")
        self.client = client
        #: command id -> (monotonic time first sent, time acknowledged or None)
        self.sent: dict[str, list[float | None]] = {}
        #: (monotonic time received, entry id, event)
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self.first_seen: dict[str, float] = {}
        self.xadd_failed: list[float] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, kind: str, cid: str, **kw: Any) -> None:
        self.sent[cid] = [time.monotonic(), None]
        while True:
            try:
                await getattr(self.gw, kind)(id=cid, **kw)
                self.sent[cid][1] = time.monotonic()
                return
            except (RedisError, OSError):
                self.xadd_failed.append(time.monotonic())
                await asyncio.sleep(0.05)

    def later(self, delay: float, kind: str, cid: str, **kw: Any) -> None:
        async def go() -> None:
            await asyncio.sleep(delay)
            await self.send(kind, cid, **kw)
        task = asyncio.create_task(go())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def arrivals(self, rate: float, stop: asyncio.Event) -> None:
        n, started = 0, time.monotonic()
        while not stop.is_set():
            self.later(0, "arrive", f"a{n}", session=f"s{n}", group="g")
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))

    async def read(self, stop: asyncio.Event, rng: random.Random) -> None:
        out, last = keys.key("outbound", self.name), "0-0"
        while not stop.is_set():
            try:
                rows = await self.client.xread({out: last}, count=1000, block=100)
            except (RedisError, OSError):
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            for _, entries in rows or []:
                for eid, fields in entries:
                    eid_s = eid.decode()
                    last = eid_s
                    ev = protocol.decode_event(fields)
                    self.seen.append((now, eid_s, ev))
                    cmd = ev.get("cmd")
                    if cmd is not None:
                        self.first_seen.setdefault(cmd, now)
                    if ev.get("type") == "assigned" and cmd is not None:
                        sid, agent = ev["session"], ev["agent"]
                        reply = rng.uniform(0.05, 0.15)
                        self.later(reply, "agent_message", f"m-{sid}-{cmd}", session=sid,
                                   agent=agent)
                        self.later(reply + rng.uniform(0.2, 0.6), "close_session",
                                   f"x-{sid}-{cmd}", session=sid)


async def final_events(client: Any, tenant: str) -> list[tuple[str, dict[str, Any]]]:
    out, start, rows_all = keys.key("outbound", tenant), "-", []
    while True:
        rows = await client.xrange(out, min=start, count=5000)
        rows_all += [(e.decode(), protocol.decode_event(f)) for e, f in rows]
        if len(rows) < 5000:
            return rows_all
        start = "(" + rows[-1][0].decode()


async def check_state(engine: Engine, client: Any, tenant: str, sessions: list[str],
                      agents: list[str]) -> list[str]:
    """Consistency of ``tenant``'s stored state; the problems found (empty: none)."""
    problems: list[str] = []
    views = {s: await engine.session(tenant, s) for s in sessions}
    owner: dict[str, str] = {}
    loads: dict[str, tuple[int, int, str]] = {}
    for a in agents:
        view = await engine.agent(tenant, a)
        assert view is not None
        members = {m.decode() for m in await client.smembers(keys.key("agent_sessions",
                                                                      tenant, a))}
        for s in members:
            if s in owner:
                problems.append(f"{s} in the sessions of {owner[s]} and {a}")
            owner[s] = a
        if view.load != len(members):
            problems.append(f"{a}: load {view.load} != {len(members)} sessions")
        if view.load > view.capacity:
            problems.append(f"{a}: load {view.load} > capacity {view.capacity}")
        loads[a] = (view.load, view.capacity, view.status)
    queue = {m.decode()[26:] for m in await client.zrange(keys.key("queue", tenant, "g"),
                                                          0, -1)}
    open_n = 0
    for s, v in views.items():
        if v is None or v.state == "closed":
            if s in owner:
                problems.append(f"{s} ({v and v.state}) in the sessions of {owner[s]}")
            continue
        open_n += 1
        if v.state == "queued":
            if s not in queue:
                problems.append(f"{s} queued but not in the queue")
        elif v.agent is not None and owner.get(s) != v.agent:
            problems.append(f"{s} ({v.state}) with {v.agent} but in the sessions of "
                            f"{owner.get(s)}")
    for s in queue:
        if views.get(s) is None or views[s].state != "queued":  # type: ignore[union-attr]
            problems.append(f"{s} in the queue but {views.get(s) and views[s].state}")  # type: ignore[union-attr]
    ast = {k.decode(): int(v) for k, v in (await client.hgetall(
        keys.key("agent_totals", tenant))).items()}
    online = [x for x in loads.values() if x[2] == "online"]
    if ast.get("ld", 0) != sum(x[0] for x in online):
        problems.append(f"ast ld {ast.get('ld')} != {sum(x[0] for x in online)}")
    if ast.get("cp", 0) != sum(x[1] for x in online):
        problems.append(f"ast cp {ast.get('cp')} != {sum(x[1] for x in online)}")
    gopen = await client.hget(keys.key("group_open", tenant), "g")
    if int(gopen or 0) != open_n:
        problems.append(f"gopen {int(gopen or 0)} != {open_n} open sessions")
    return problems


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def trial(args: argparse.Namespace, durability: str, n: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(n)
    dev = DevCluster(workdir / f"cluster-{durability}-{n}", 0,
                     node_timeout_ms=args.node_timeout_ms)
    await asyncio.to_thread(dev.start)
    client = client_for(dev.url)
    daemon: Daemon | None = None
    try:
        await client.initialize()
        engine = Engine(client)
        await engine.load_scripts()
        names = spread_tenants(args.tenants, args.shard)
        agents = [f"a{i}" for i in range(args.agents)]
        for name in names:
            await engine.configure_group(name, 0, "g", **TIMERS_OFF)
            for a in agents:
                await engine.configure_agent(name, 0, a, capacity=3, abilities={"g": 1.0})
                await engine.set_agent_status(name, 0, a, "online")
        daemon = Daemon(dev.url, names, durability, workdir / f"daemon-{durability}-{n}.log")
        deadline = time.monotonic() + 30
        while True:
            held = [await client.get(keys.key("lease", name)) for name in names]
            if all(held):
                break
            if time.monotonic() > deadline or daemon.proc.poll() is not None:
                raise RuntimeError("the daemon did not take every tenant")
            await asyncio.sleep(0.1)
        tenants = [Tenant(client, name) for name in names]
        stop_load, stop_read = asyncio.Event(), asyncio.Event()
        readers = [asyncio.create_task(t.read(stop_read, rng)) for t in tenants]
        loads = [asyncio.create_task(t.arrivals(args.rate, stop_load)) for t in tenants]
        await asyncio.sleep(args.warmup_s)
        victim = client.get_node_from_key(keys.root(names[0]))
        shard = [t for t in tenants
                 if client.get_node_from_key(keys.root(t.name)).name == victim.name]
        membership_on_victim = (client.get_node_from_key(keys.REPLICAS_KEY).name
                                == victim.name)
        kill_t = time.monotonic()
        dev.kill(victim.port)
        await asyncio.sleep(args.after_s)
        stop_load.set()
        await asyncio.gather(*loads)
        # the agents' pending replies and closes, then the daemon drains
        settle = time.monotonic() + 30
        while any(t.tasks for t in tenants) and time.monotonic() < settle:
            await asyncio.sleep(0.1)
        last_progress, seen_n = time.monotonic(), -1
        while time.monotonic() - last_progress < 3 and time.monotonic() < settle + 30:
            now_n = sum(len(t.seen) for t in tenants)
            if now_n != seen_n:
                seen_n, last_progress = now_n, time.monotonic()
            await asyncio.sleep(0.2)
        stop_read.set()
        await asyncio.gather(*readers)
        failures = daemon.metric("dispatchd_durability_wait_failures_total")

        res: dict[str, Any] = {"durability": durability, "trial": n + 1,
                               "wait_failures": failures}
        lat = [t.first_seen[c] - s0 for t in tenants for c, (s0, _) in t.sent.items()
               if s0 is not None and kill_t - args.warmup_s + 1 < s0 < kill_t - 0.5
               and c in t.first_seen]
        res["p50_ms"], res["p99_ms"] = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
        gaps, xadd_gaps = [], []
        for t in shard:
            after = [t.first_seen[c] for c, (s0, _) in t.sent.items()
                     if s0 is not None and s0 > kill_t and c in t.first_seen]
            gaps.append(min(after) - kill_t if after else float("inf"))
            acked = [s1 for s0, s1 in t.sent.values()
                     if s1 is not None and s0 is not None and s0 > kill_t]
            xadd_gaps.append(min(acked) - kill_t if acked else float("inf"))
        res["gap_s"] = max(gaps)
        # the other shards: their longest pause in events around the kill
        others = []
        for t in tenants:
            if t in shard:
                continue
            times = [r for r, _, _ in t.seen if kill_t - 1 <= r <= kill_t + args.after_s]
            others.append(max((b - a for a, b in itertools.pairwise(times)), default=0.0))
        res["others_gap_s"] = max(others, default=0.0)
        res["membership_shard"] = membership_on_victim
        res["xadd_gap_s"] = max(xadd_gaps)
        lost_cmds = lost_seen = lost_events = same = differ = not_again = 0
        sent_total = 0
        problems: list[str] = []
        for t in tenants:
            final = await final_events(client, t.name)
            final_ids = {e for e, _ in final}
            final_by_cmd: dict[str, list[dict[str, Any]]] = {}
            for _, ev in final:
                if ev.get("cmd") is not None and ev.get("type") != "duplicate":
                    final_by_cmd.setdefault(ev["cmd"], []).append(ev)
            final_cmds = {ev.get("cmd") for _, ev in final}
            acked_ids = [c for c, (_, s1) in t.sent.items() if s1 is not None]
            sent_total += len(acked_ids)
            for c in acked_ids:
                if c not in final_cmds:
                    lost_cmds += 1
                    lost_seen += c in t.first_seen
            for _, eid, ev in t.seen:
                if eid in final_ids:
                    continue
                lost_events += 1
                again = final_by_cmd.get(ev.get("cmd", ""), [])
                if not again:
                    not_again += 1
                elif any((a.get("type"), a.get("session"), a.get("agent"))
                         == (ev.get("type"), ev.get("session"), ev.get("agent"))
                         for a in again):
                    same += 1
                else:
                    differ += 1
            sessions = sorted({c[1:] if c.startswith("a") else "" for c in t.sent} - {""})
            sessions = [f"s{s}" for s in sorted(int(x) for x in sessions)]
            problems += [f"{t.name}: {p}" for p in
                         await check_state(engine, client, t.name, sessions, agents)]
        res |= {"acked": sent_total, "lost_cmds": lost_cmds, "lost_cmds_seen": lost_seen,
                "lost_events": lost_events, "reapplied_same": same,
                "reapplied_differently": differ, "not_reapplied": not_again,
                "problems": problems, "shard_tenants": len(shard)}
        return res
    finally:
        if daemon is not None:
            daemon.stop()
        with contextlib.suppress(Exception):
            await client.aclose()
        await asyncio.to_thread(dev.stop)


def show(r: dict[str, Any]) -> None:
    say(f"  trial {r['trial']} durability={r['durability']}: gap {r['gap_s']:.2f} s "
        f"(XADD failing {r['xadd_gap_s']:.2f} s) for the {r['shard_tenants']} tenants of "
        f"the killed shard{' (it held dispatchd:replicas)' if r['membership_shard'] else ''}"
        f", other shards' longest pause {r['others_gap_s']:.2f} s; {r['acked']} commands "
        f"acknowledged, lost {r['lost_cmds']} "
        f"({r['lost_cmds_seen']} of them with an event seen); events seen then gone "
        f"{r['lost_events']} (applied again: {r['reapplied_same']} same outcome, "
        f"{r['reapplied_differently']} different; {r['not_reapplied']} not); "
        f"latency before the kill p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms; "
        f"durability waits short {r['wait_failures']}; consistency: "
        + ("ok" if not r["problems"] else f"{len(r['problems'])} problems: "
           + "; ".join(r["problems"][:5])))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dispatchd-fo-cluster-") as tmp:
        for durability in args.durability.split(","):
            say(f"durability={durability}: {args.tenants} tenants over 3 shards, "
                f"{args.rate} customers/s each (3 commands per customer), {args.agents} "
                f"agents x 3 each; cluster-node-timeout {args.node_timeout_ms} ms; kill "
                f"after {args.warmup_s} s (master {args.shard}), load {args.after_s} s more")
            results = []
            for n in range(args.trials):
                r = await trial(args, durability, n, Path(tmp))
                show(r)
                results.append(r)
            gaps = [r["gap_s"] for r in results]
            say(f"  summary durability={durability}: gap min {min(gaps):.2f} s median "
                f"{statistics.median(gaps):.2f} s max {max(gaps):.2f} s; lost commands "
                f"{[r['lost_cmds'] for r in results]}; events seen then gone "
                f"{[r['lost_events'] for r in results]}; p99 before the kill "
                f"{[round(r['p99_ms'], 1) for r in results]} ms; consistency problems "
                f"{[len(r['problems']) for r in results]}")
        if args.keep_logs:
            for f in Path(tmp).glob("daemon-*.log"):
                (Path(args.keep_logs) / f.name).write_bytes(f.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--durability", default="none,replica",
                        help="comma-separated DISPATCHD_DURABILITY values to compare")
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="customers/s per tenant")
    parser.add_argument("--node-timeout-ms", type=int, default=1000)
    parser.add_argument("--warmup-s", type=float, default=4.0)
    parser.add_argument("--after-s", type=float, default=8.0)
    parser.add_argument("--shard", type=int, default=1, choices=range(MASTERS),
                        help="which master to kill (0 holds dispatchd:replicas)")
    parser.add_argument("--keep-logs", default="", help="copy the daemon logs to this dir")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
