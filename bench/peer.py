"""BullMQ as the peer: the same arrival stream, on the same server, in the same run.

BullMQ (npm ``bullmq``, with ``ioredis``) is installed on first use into
``~/.cache/dispatchd-bench`` (``$XDG_CACHE_HOME`` honoured) with the ``npm`` next to
``node``; nothing is installed anywhere else. ``bench/bullmq_peer.cjs`` runs it: skill
groups are queues, arrivals jobs with priorities, and agents workers with
concurrency = capacity (each agent on its primary skill's queue: a BullMQ worker serves
one queue). ``pooled`` instead runs one worker per queue whose concurrency is the sum of
those agents' capacities, BullMQ's cheapest way to serve the same slots.

The Node process is driven step by step over stdin/stdout, so BullMQ's ramp uses the
same code and criteria as ours (:func:`bench.scenarios.ramp`). When node or npm are
missing or the install fails, :func:`install` says why and the bench reports
``bullmq=unavailable``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.centre import Centre
from bench.loadgen import BACKLOG_SLACK, TAIL_S, StepResult
from bench.servers import die_with_parent

BULLMQ_VERSION = "6.7.0"
IOREDIS_VERSION = "5.11.1"
PREFIX = "dispatchd-bench"
SCRIPT = Path(__file__).with_name("bullmq_peer.cjs")


class PeerUnavailable(Exception):
    """BullMQ cannot be run here (the message says why)."""


def cache_dir() -> Path:
    """Where BullMQ is installed: ``~/.cache/dispatchd-bench``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dispatchd-bench"


def _installed(modules: Path) -> bool:
    try:
        meta = json.loads((modules / "bullmq" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("version") == BULLMQ_VERSION and (modules / "ioredis").is_dir())


def find_node(node: str) -> tuple[str, str]:
    """``node`` and the ``npm`` next to it (or on PATH), as absolute paths.

    Raises:
        PeerUnavailable: either is missing, or node does not run.
    """
    node_path = shutil.which(node)
    if node_path is None:
        raise PeerUnavailable(f"node not found ({node!r})")
    npm = shutil.which("npm", path=str(Path(node_path).parent)) or shutil.which("npm")
    if npm is None:
        raise PeerUnavailable("npm not found")
    try:
        subprocess.run([node_path, "--version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"{node_path} does not run: {exc}") from None
    return node_path, npm


def install(npm: str, progress: Callable[[str], None]) -> Path:
    """BullMQ's ``node_modules``, installed into :func:`cache_dir` if not there yet.

    Raises:
        PeerUnavailable: the install failed (with npm's last words).
    """
    root = cache_dir()
    modules = root / "node_modules"
    if _installed(modules):
        return modules
    progress(f"installing bullmq {BULLMQ_VERSION} into {root} (first use)")
    root.mkdir(parents=True, exist_ok=True)
    package = {"name": "dispatchd-bench-peer", "private": True,
               "dependencies": {"bullmq": BULLMQ_VERSION, "ioredis": IOREDIS_VERSION}}
    (root / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    cmd = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"npm install failed: {exc}") from None
    if done.returncode != 0 or not _installed(modules):
        # npm's first lines name the error (code, errno, the failed request)
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        why = " | ".join(line for line in lines if line)[:400]
        raise PeerUnavailable(f"npm install failed (exit {done.returncode}): {why}")
    return modules


def workers(centre: Centre, *, pooled: bool) -> list[list[int]]:
    """[queue, concurrency] per worker: one per agent (its primary skill), or pooled."""
    per_agent = [[skills[0], centre.capacity] for skills in centre.skills]
    if not pooled:
        return per_agent
    slots: Counter[int] = Counter()
    for queue, concurrency in per_agent:
        slots[queue] += concurrency
    return [[queue, n] for queue, n in sorted(slots.items())]


class BullmqPeer:
    """The Node process; :meth:`step` and :meth:`quiesce` as for our generator.

    Rates are customers (jobs) per second; a :class:`StepResult` from it has the same
    latency in ``latency`` and ``assign`` (add -> processing starts).
    """

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def start(cls, node: str, config: dict[str, Any], config_path: Path) -> BullmqPeer:
        """Start Node on ``config`` and wait until every worker is connected."""
        config_path.write_text(json.dumps(config))
        proc = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), str(config_path), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
            start_new_session=True, limit=1 << 20,
        )
        peer = cls(proc, {})
        peer.ready = await peer._reply()
        return peer

    async def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise PeerUnavailable(f"the BullMQ process exited (status {code}); see stderr")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._reply()

    async def step(self, target: float, warm_s: float, measure_s: float) -> StepResult:
        """Run at ``target`` customers/s (see :meth:`bench.loadgen.LoadGen.step`)."""
        r = await self._ask({"op": "step", "target": target, "warm_s": warm_s,
                             "measure_s": measure_s, "tail_s": TAIL_S})
        p50, p99, p999 = (float(x) for x in r["latency"])
        lat = (p50, p99, p999)
        return StepResult(
            target=target, rate=r["rate"], arrivals_rate=r["rate"],
            applied_rate=r["applied_rate"], backlog_start=r["backlog_start"],
            backlog_end=r["backlog_end"], latency=lat, assign=lat,
            lower_bound=r["lower_bound"], queued_first=0, errors=0,
            redis_cpu_us=r["redis_cpu_us"], daemon_cpu_us=r["node_cpu_us"], gen_cpu_us=0.0,
            seconds=r["seconds"], slack=BACKLOG_SLACK / 3, per_customer=1,
        )

    async def quiesce(self, timeout: float) -> bool:
        """Stop adding jobs and wait until every job has started."""
        return bool((await self._ask({"op": "quiesce", "timeout_s": timeout}))["ok"])

    async def close(self) -> None:
        """Ask Node to close its workers and exit; kill it if it does not in 30 s."""
        if self.proc.returncode is None:
            try:
                await self._ask({"op": "quit"})
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), 30)
            except (OSError, ValueError, PeerUnavailable, TimeoutError):
                pass
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
