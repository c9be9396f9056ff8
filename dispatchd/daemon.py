"""The daemon: start-up, the loops' TaskGroup, and a clean stop on SIGTERM/SIGINT.

Start-up, one log line per step: start the embedded Valkey unless a ``redis_url`` is set,
connect, check the server version, load the ``dispatchd`` function library unless this
build is loaded (a broken library, or one newer than this daemon, stops the daemon here),
then log ``ready``. The daemon's loops then run in one
``asyncio.TaskGroup`` until a signal sets the stop event; they get ``shutdown_grace_s``
to drain before they are cancelled. The loop is the gateway stream consumer
(:mod:`dispatchd.consumer`), which also fires the timers, and the admin API server
(:mod:`admin.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import uvloop
from redis.exceptions import RedisError

from dispatchd import observe, ops, tickets
from dispatchd.cluster_consumer import consumer_for
from dispatchd.connect import client_for, is_cluster_url
from dispatchd.connect import redact as redact_any
from dispatchd.consumer import ConsumerOptions, wall_clock_ms
from dispatchd.embedded import EmbeddedValkey, check_server
from dispatchd.engine import Engine
from dispatchd.errors import DispatchError
from dispatchd.settings import Settings

EXIT_OK = 0
#: Start-up failed (or, once there are loops, one of them failed).
EXIT_FAILURE = 1
EXIT_SETTINGS = 2

#: Loading a large append-only file takes a while; Valkey answers PING only after that.
EMBEDDED_START_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0

#: A daemon loop: runs until the stop event is set, then finishes its in-flight work.
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
#: Builds a loop once the engine is up.
LoopFactory = Callable[[Engine], Loop]

log = logging.getLogger("dispatchd")
_json = msgspec.json.Encoder(enc_hook=str)


# ---------------------------------------------------------------------------- logging


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "fields": getattr(record, "fields", {}),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _json.encode(doc).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <msg> key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()} {pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def configure_logging(settings: Settings) -> None:
    """Send every log record (ours and the libraries') to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def _log(level: int, msg: str, **fields: object) -> None:
    log.log(level, msg, extra={"fields": fields})


def redact(url: str) -> str:
    """``url`` without its password, fit for a log line."""
    if is_cluster_url(url):
        return redact_any(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------- the loops


async def run_loops(loops: Sequence[Loop], stop: asyncio.Event, grace_s: float) -> None:
    """Run ``loops`` in one TaskGroup until ``stop`` is set, then let them drain.

    Each loop gets the stop event and should return soon after it is set; the ones still
    running ``grace_s`` seconds later are cancelled. A loop that fails cancels the others
    and its exception propagates (in an ``ExceptionGroup``).
    """

    async def guarded(loop: Loop) -> None:
        # A failing loop also sets the stop event: the TaskGroup cancels the others, but a
        # loop that loses that cancellation (seen with the sampler mid-pass on Python 3.11)
        # would otherwise keep the daemon up, failed, until a signal came.
        try:
            await loop(stop)
        except BaseException:
            stop.set()
            raise

    try:
        async with asyncio.timeout(None) as deadline:
            async with asyncio.TaskGroup() as group:
                for loop in loops:
                    group.create_task(guarded(loop))
                await stop.wait()
                deadline.reschedule(asyncio.get_running_loop().time() + grace_s)
    except TimeoutError:
        _log(logging.WARNING, "grace period over; loops cancelled", grace_s=grace_s)


# ---------------------------------------------------------------------------- start-up


class _Startup:
    """The start-up steps; ``step`` names the one running, for the failure log line."""

    def __init__(self, settings: Settings, stack: contextlib.AsyncExitStack) -> None:
        self.settings = settings
        self.stack = stack
        self.step = "settings"

    async def server_url(self) -> str:
        if self.settings.redis_url is not None:
            _log(logging.INFO, "using external server", url=redact(self.settings.redis_url))
            return self.settings.redis_url
        self.step = "embedded valkey"
        server = EmbeddedValkey(self.settings.data_dir, self.settings.embedded_port)
        _log(logging.INFO, "starting embedded valkey", data_dir=str(server.data_dir))
        await asyncio.to_thread(server.start, EMBEDDED_START_TIMEOUT_S)
        self.stack.push_async_callback(self._stop_embedded, server)
        _log(
            logging.INFO,
            "embedded valkey started",
            url=server.address,
            data_dir=str(server.data_dir),
            password_file=str(server.password_path),
            append_only="everysec",
            log=str(server.log_path),
        )
        return server.url

    @staticmethod
    async def _stop_embedded(server: EmbeddedValkey) -> None:
        await asyncio.to_thread(server.stop)
        _log(logging.INFO, "embedded valkey stopped", data_dir=str(server.data_dir))

    async def engine(self) -> Engine:
        url = await self.server_url()
        self.step = "connect"
        client: Any = client_for(url, decode_responses=False,
                                 socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=None)
        self.stack.push_async_callback(client.aclose)
        await client.ping()
        self.step = "server check"
        server = await check_server(client)
        _log(logging.INFO, "server checked", url=redact(url), server=str(server))
        self.step = "function library"
        engine = Engine(client)
        library = await engine.load_scripts()
        _log(logging.INFO, "function library ready", **library)
        _log(
            logging.INFO,
            "ready: routing core loaded; consuming gateway streams",
            url=redact(url),
        )
        return engine


def _install_signal_handlers(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            _log(logging.INFO, "stop requested", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove


def consumer_options(settings: Settings) -> ConsumerOptions:
    """The gateway consumer's options from the daemon settings."""
    return ConsumerOptions(
        tenants=tuple(t.strip() for t in settings.tenants.split(",") if t.strip()),
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        tick_ms=settings.tick_ms,
        lease_ms=settings.lease_ms,
        heartbeat_ms=settings.heartbeat_ms,
        durability=settings.durability,
        durability_timeout_ms=settings.durability_timeout_ms,
        dedupe_ms=int(settings.dedupe_hours * 3_600_000),
        out_maxlen=settings.events_maxlen,
        # the consumers of replicas that are gone: 12 lease periods, at least a minute
        consumer_idle_ms=max(60_000, 12 * settings.lease_ms),
    )


def default_loops(settings: Settings) -> list[LoopFactory]:
    """The daemon's loops: the gateway stream consumer (with its timer ticks), the service
    windows refresh, the ops listener and sampler, and, unless disabled, the admin API
    server."""
    opts = consumer_options(settings)
    loops: list[LoopFactory] = [
        lambda engine: consumer_for(engine, opts).run,
        # the UTC form of every group's service hours, which the ticket scripts read
        lambda engine: lambda stop: tickets.windows_loop(engine, opts.tenants, stop, wall_clock_ms),
    ]
    loops.extend(ops.loops(settings))  # the ops listener (/metrics, /healthz, /readyz), sampler
    if settings.admin_enabled:
        from admin.server import admin_loop  # Litestar and granian load only when served

        loops.append(admin_loop(settings, on_events=observe.observe_events))  # type: ignore[arg-type]
    return loops


async def serve(settings: Settings, loops: Sequence[LoopFactory] | None = None) -> int:
    """Start up, run the loops until SIGTERM/SIGINT, stop; the process exit status."""
    stop = asyncio.Event()
    remove_handlers = _install_signal_handlers(stop)
    _log(
        logging.INFO,
        "starting dispatchd",
        version=package_version("dispatchd"),
        pid=os.getpid(),
        cwd=str(Path.cwd()),
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            startup = _Startup(settings, stack)
            try:
                engine = await startup.engine()
            except Exception as exc:
                # Our own and the server's errors explain themselves; anything else is a
                # bug, so it gets its traceback.
                expected = isinstance(exc, DispatchError | RedisError | OSError)
                fields = {"step": startup.step, "error": _describe(exc)}
                log.error(
                    "start-up failed", exc_info=None if expected else exc, extra={"fields": fields}
                )
                return EXIT_FAILURE
            try:
                factories = default_loops(settings) if loops is None else loops
                await run_loops([f(engine) for f in factories], stop, settings.shutdown_grace_s)
            except ExceptionGroup as group:
                for failure in group.exceptions:
                    fields = {"error": _describe(failure)}
                    log.error("loop failed", exc_info=failure, extra={"fields": fields})
                return EXIT_FAILURE
            _log(logging.INFO, "stopping")
        _log(logging.INFO, "stopped", exit_code=EXIT_OK)
        return EXIT_OK
    finally:
        remove_handlers()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(settings: Settings, loops: Sequence[LoopFactory] | None = None) -> int:
    """Run the daemon on a uvloop event loop; returns the process exit status."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, loops))
