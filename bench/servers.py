"""What the benchmark runs against: a Redis/Valkey server and the real daemon.

:class:`Server` is the bench's own embedded Valkey (append-only file on or off) or an
external server given by ``--redis-url``; on an external server the bench never flushes
anything: it deletes only the keys it made (its tenants' and BullMQ's prefix).
:class:`Daemon` is ``python -m dispatchd run`` as a child process, paused with SIGSTOP
while the bench preloads data and measured through ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis

from dispatchd import keys
from dispatchd.connect import client_for
from dispatchd.consumer import GROUP
from dispatchd.embedded import EmbeddedValkey, free_port
from dispatchd.settings import env_var, field_names

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """The bench cannot go on (a server or the daemon did not start)."""


#: Where Debian, Ubuntu and Fedora put jemalloc (Debian: ``apt install libjemalloc2``).
JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2")
MALLOC_CHOICES = ("auto", "jemalloc", "libc")


def find_jemalloc() -> str | None:
    """The path of a jemalloc shared library on this machine, if any."""
    return next((p for p in JEMALLOC_PATHS if os.path.exists(p)), None)


#: The bench's embedded servers still running (for a last-resort stop).
_RUNNING: list[EmbeddedValkey] = []


def stop_all_servers() -> None:
    """Stop every embedded server the bench started and has not stopped."""
    while _RUNNING:
        _RUNNING.pop().stop()


class Server:
    """A server the bench uses. ``owned``: the bench started it (and may flush it)."""

    def __init__(self, url: str, embedded: EmbeddedValkey | None = None) -> None:
        self.url = url
        self.embedded = embedded

    @property
    def owned(self) -> bool:
        """Whether this is the bench's own embedded Valkey."""
        return self.embedded is not None

    @classmethod
    def start_embedded(cls, data_dir: Path, *, append_only: bool, malloc: str = "auto"
                       ) -> Server:
        """A fresh embedded Valkey in ``data_dir`` (AOF ``everysec`` or off).

        The bundled binary is built with the C library's malloc; production builds of
        Valkey and Redis (their release images, Debian's packages) use jemalloc, which
        costs the Lua-heavy calls of dispatchd about a fifth less server CPU. ``malloc``:
        ``jemalloc`` preloads jemalloc into the server (``LD_PRELOAD``; BenchError when
        the library is missing), ``libc`` keeps the build's, ``auto`` preloads it when
        found."""
        preload = None
        if malloc != "libc":
            preload = find_jemalloc()
            if preload is None and malloc == "jemalloc":
                raise BenchError("--server-malloc jemalloc: no libjemalloc.so.2 in "
                                 + ", ".join(JEMALLOC_PATHS)
                                 + " (Debian: apt install libjemalloc2)")
        server = EmbeddedValkey(data_dir, append_only=append_only)
        before = os.environ.get("LD_PRELOAD")
        if preload is not None:  # the server process inherits the environment
            os.environ["LD_PRELOAD"] = preload
        try:
            server.start()
        finally:
            if before is None:
                os.environ.pop("LD_PRELOAD", None)
            else:
                os.environ["LD_PRELOAD"] = before
        _RUNNING.append(server)
        return cls(server.url, server)

    def client(self) -> aioredis.Redis:
        """A new async client (bytes in, bytes out)."""
        client: aioredis.Redis = client_for(self.url, decode_responses=False)
        return client

    def stop(self) -> None:
        """Stop the embedded Valkey (nothing for an external server)."""
        if self.embedded is not None:
            if self.embedded in _RUNNING:
                _RUNNING.remove(self.embedded)
            self.embedded.stop()


async def redis_cpu_s(client: aioredis.Redis) -> float:
    """The server's CPU seconds so far (``used_cpu_sys`` + ``used_cpu_user``)."""
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def used_memory(client: aioredis.Redis, timeout: float = 120.0) -> int:
    """The server's ``used_memory`` in bytes, once objects freed in the background (a
    lazy FLUSHALL or UNLINK, Valkey's default) are gone."""
    deadline = time.monotonic() + timeout
    while True:
        info = await client.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)) or time.monotonic() > deadline:
            return int(info["used_memory"])
        await asyncio.sleep(0.05)


async def server_name(client: aioredis.Redis) -> str:
    """``valkey-9.1.2`` or ``redis-7.4.1``."""
    info = await client.info("server")
    if "valkey_version" in info:
        return f"valkey-{info['valkey_version']}"
    return f"redis-{info['redis_version']}"


async def server_malloc(client: aioredis.Redis) -> str:
    """The server's allocator: ``jemalloc-preloaded`` when jemalloc is mapped into a
    server built with another (a local server only), else its build's (``jemalloc-5.3.0``,
    ``libc``)."""
    info = await client.info("server")
    built = str((await client.info("memory")).get("mem_allocator", "unknown"))
    try:
        maps = Path(f"/proc/{int(info['process_id'])}/maps").read_text()
    except (OSError, KeyError, ValueError):
        return built
    if "jemalloc" not in built and "libjemalloc" in maps:
        return "jemalloc-preloaded"
    return built


async def command_calls(client: aioredis.Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``; counts calls made by scripts)."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def delete_matching(client: aioredis.Redis, pattern: str) -> int:
    """UNLINK every key matching ``pattern`` (SCAN, never KEYS); how many."""
    deleted, batch = 0, []
    async for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += await client.unlink(*batch)
            batch = []
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


async def reset_tenant(server: Server, client: aioredis.Redis, tenant: str) -> None:
    """Delete the tenant's keys (FLUSHALL on the bench's own server) and recreate its
    inbound stream's consumer group, so a daemon serving it carries on."""
    if server.owned:
        await client.flushall()
    else:
        await delete_matching(client, keys.prefix(tenant) + "*")
    await client.xgroup_create(keys.key("inbound", tenant), GROUP, id="0", mkstream=True)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL if the bench dies (Linux), so no daemon or
    Node process outlives a killed bench."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Daemon:
    """``python -m dispatchd run`` serving ``tenants`` on ``url``; its log goes to
    ``log_path``. The admin API is off (when this build can turn it off); admin and
    metrics ports, when this build has them, are free ports."""

    def __init__(self, url: str, tenants: Sequence[str], log_path: Path) -> None:
        self.url = url
        self.tenants = list(tenants)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._paused = False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
        env.update({
            env_var("redis_url"): self.url,
            env_var("tenants"): ",".join(self.tenants),
            env_var("log_level"): "WARNING",
            env_var("log_format"): "text",
            env_var("shutdown_grace_s"): "2",
            env_var("data_dir"): str(self.log_path.parent / "daemon-data"),
        })
        # Settings other builds may lack: the admin API is not benchmarked (off when it
        # can be), and its port and the metrics port are free ones, never the defaults.
        names = field_names()
        if "admin_enabled" in names:
            env[env_var("admin_enabled")] = "false"
        for name in ("admin_port", "metrics_port"):
            if name in names:
                env[env_var(name)] = str(free_port())
        return env

    async def start(self, client: aioredis.Redis, timeout: float = 60.0) -> None:
        """Start it and wait until it holds every tenant's lease.

        Raises:
            BenchError: it exited or did not take its tenants in time (with its log).
        """
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchd", "run"], env=self._env(),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        leases = [keys.key("lease", t) for t in self.tenants]
        deadline = time.monotonic() + timeout
        while await client.exists(*leases) < len(leases):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the daemon did not start: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        """The end of its log."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    @property
    def alive(self) -> bool:
        """Whether its process is running (or paused)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """Its process id."""
        if self.proc is None:
            raise RuntimeError("the daemon is not running")
        return self.proc.pid

    def cpu_s(self) -> float:
        """Its CPU seconds so far (0 once it has exited)."""
        try:
            return proc_cpu_s(self.pid)
        except (OSError, RuntimeError):
            return 0.0

    def pause(self) -> None:
        """SIGSTOP: it applies nothing until :meth:`resume`."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 15 s); safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)
            stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 15.0) -> None:
    """SIGTERM a child process that still runs, SIGKILL it after ``timeout_s``; reaped."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def describe(exc: BaseException) -> str:
    """One line for an exception."""
    text: Any = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
