"""The ops listener: ``/metrics``, ``/healthz`` and ``/readyz`` on their own port.

Kept apart from the admin API (which wants a bearer token on every route) so Prometheus,
container health checks and load balancers need no credentials. Served in-process by
granian's embedded server on the daemon's event loop (``metrics_host:metrics_port``).

* ``GET /metrics``: the registry of :mod:`dispatchd.metrics` (Prometheus text format,
  OpenMetrics on request, gzip when accepted).
* ``GET /healthz``: liveness. 200 while the event loop answers; never touches Redis, so
  a Redis outage does not get the daemon restarted.
* ``GET /readyz``: readiness. 200 when Redis answers ``PING``, the ``dispatchd``
  function library of this daemon's version is loaded, the gateway consumer ran a loop
  iteration recently and is not recreating state that vanished from the server
  (:func:`dispatchd.observe.state_missing`); else 503. The JSON body names each check's
  result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import msgspec
from granian.constants import Interfaces
from granian.server.embed import Server
from prometheus_client import make_asgi_app

from dispatchd import metrics, observe, scripts
from dispatchd.engine import Engine
from dispatchd.sampler import Sampler
from dispatchd.settings import Settings

log = logging.getLogger("dispatchd.ops")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: A daemon loop (dispatchd.daemon.Loop).
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

#: How long a readiness check may wait for Redis.
CHECK_TIMEOUT_S = 1.0

_json = msgspec.json.Encoder()


class OpsApp:
    """The ASGI app of the ops listener.

    Args:
        engine: the daemon's engine (its Redis client).
        consumer_stale_s: the consumer counts as running if its latest loop iteration
            started less than this many seconds ago.
    """

    def __init__(self, engine: Engine, consumer_stale_s: float) -> None:
        self.redis = engine.redis
        self.consumer_stale_s = consumer_stale_s
        self._metrics = make_asgi_app(metrics.REGISTRY)
        self._library = engine.library

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/metrics":
            await self._metrics(scope, receive, send)
        elif path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain; charset=utf-8")
        elif path == "/readyz":
            checks = await self.readiness()
            ready = all(v == "ok" for v in checks.values())
            body = _json.encode({"ready": ready, "checks": checks}) + b"\n"
            await _respond(send, 200 if ready else 503, body, b"application/json")
        else:
            await _respond(send, 404, b"not found: try /metrics, /healthz or /readyz\n",
                           b"text/plain; charset=utf-8")

    async def readiness(self) -> dict[str, str]:
        """Check name -> ``ok`` or what is wrong."""
        checks = {"redis": "ok", "scripts": "ok", "consumer": "ok", "state": "ok"}
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self.redis.ping()
                loaded = await self._library.server_version()
            if loaded is None:
                checks["scripts"] = "the dispatchd function library is not loaded"
            elif loaded[0] != scripts.LIBRARY_VERSION:
                checks["scripts"] = (f"the server has library version {loaded[0]},"
                                     f" this daemon needs {scripts.LIBRARY_VERSION}")
        except Exception as exc:  # any failure means "not ready", never a 500
            checks["redis"] = f"unreachable: {type(exc).__name__}: {exc}"[:200]
            checks["scripts"] = "unknown"
        idle = time.time() - observe.last_step()
        if idle > self.consumer_stale_s:
            checks["consumer"] = f"no loop iteration for {idle:.1f} s"
        missing = observe.state_missing()
        checks["state"] = "ok" if missing is None else missing
        return checks


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def until_listening(host: str, port: int, serving: asyncio.Task[Any],
                          timeout_s: float = 10.0) -> bool:
    """Whether ``host:port`` accepts connections before ``serving`` (the server's task,
    which binds the socket somewhere inside) ends or ``timeout_s`` passes: so that a
    "listening" log line is true when a client reads it."""
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not serving.done() and loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(probe, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def serve(app: OpsApp, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``host:port`` (0: a free port) until ``stop`` is set.

    A listener that cannot start (address in use) raises, which stops the daemon.
    """
    port = bindable(host, port)
    server = Server(app, address=host, port=port, interface=Interfaces.ASGI,
                    log_enabled=False)
    serving = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    try:
        if await until_listening(host, port, serving):
            log.info("ops listener started", extra={"fields": {
                "url": f"http://{_netloc(host, port)}", "paths": "/metrics /healthz /readyz"}})
        done, _ = await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving in done:
            serving.result()  # raises if the server could not start
            raise RuntimeError("the ops listener stopped by itself")
    finally:
        stopped.cancel()
        if not serving.done():
            server.stop()  # type: ignore[no-untyped-call]
            await serving


def loops(settings: Settings) -> list[Callable[[Engine], Loop]]:
    """The daemon loop factories of observability: the ops listener and the sampler."""
    stale_s = 5.0 + 2 * settings.block_ms / 1000

    def listener(engine: Engine) -> Loop:
        app = OpsApp(engine, stale_s)
        return lambda stop: serve(app, settings.metrics_host, settings.metrics_port, stop)

    def sampler(engine: Engine) -> Loop:
        tenants = [t.strip() for t in settings.tenants.split(",") if t.strip()]
        return Sampler(engine.redis, tenants, settings.metrics_sample_s).run

    return [listener, sampler]


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bindable(host: str, port: int, listener: str = "ops listener") -> int:
    """``port`` (or a free one for 0) if ``host:port`` can be bound; raises OSError if not.

    granian binds with SO_REUSEPORT, so a second daemon on the same port would start and
    share the requests with the first; a bind without SO_REUSEPORT first refuses a port
    another process listens on. With SO_REUSEADDR, as granian's own bind: the connections
    of a daemon that just died (killed, with scrapers' keep-alive connections open) linger
    on the port in FIN_WAIT2/TIME_WAIT for up to a minute and must not stop its restart.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"{listener} cannot bind {_netloc(host, port)}: "
                                     f"{exc.strerror}") from None
        return int(sock.getsockname()[1])
