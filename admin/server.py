"""Serving the admin API from the daemon: granian, embedded in the daemon's event loop.

At start the bootstrap admin token is made when the server holds no token at all: the
``admin_bootstrap_token`` setting, or a random one printed once on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable, Sequence

from granian.constants import Interfaces
from granian.server.embed import Server

from admin.app import create_app
from admin.service import Admin
from dispatchd.consumer import wall_clock_ms
from dispatchd.engine import Engine
from dispatchd.messages import Event
from dispatchd.ops import bindable, until_listening
from dispatchd.settings import Settings

log = logging.getLogger("dispatchd.admin")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def bootstrap_token(admin: Admin, settings: Settings) -> None:
    """Make the first admin token if there is none; print a generated one once."""
    made = await admin.tokens.create(
        name="bootstrap", role="admin", tenants=None, by="dispatchd", now_ms=admin.clock(),
        secret=settings.admin_bootstrap_token, only_if_none=True)
    if made is None:
        return
    secret, rec = made
    fields = {"token_id": rec.id}
    if settings.admin_bootstrap_token is None:
        print(f"bootstrap admin token: {secret}", file=sys.stdout, flush=True)
        log.warning("bootstrap admin token created and printed on stdout; it is not shown "
                    "again", extra={"fields": fields})
    else:
        log.info("bootstrap admin token taken from settings", extra={"fields": fields})


def admin_loop(
    settings: Settings,
    on_events: Callable[[str, Sequence[Event]], None] | None = None,
) -> Callable[[Engine], Callable[[asyncio.Event], object]]:
    """A daemon loop factory: serve the admin API until the stop event is set."""

    def factory(engine: Engine) -> Callable[[asyncio.Event], object]:
        async def run(stop: asyncio.Event) -> None:
            admin = Admin(engine, wall_clock_ms, out_maxlen=settings.events_maxlen,
                          on_events=on_events)
            await bootstrap_token(admin, settings)
            # refuses a port in use (granian's SO_REUSEPORT would share it), not one
            # that a killed daemon's connections linger on
            port = bindable(settings.admin_host, settings.admin_port, "admin API")
            app = create_app(admin)
            server = Server(app, address=settings.admin_host, port=port,
                            interface=Interfaces.ASGI, log_enabled=False)
            serving = asyncio.create_task(server.serve())
            await until_listening(settings.admin_host, port, serving)
            log.info("admin API listening", extra={"fields": {
                "url": f"http://{settings.admin_host}:{port}", "openapi": "/schema/openapi.json",
                "console": f"http://{settings.admin_host}:{port}/console"}})
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if serving in done:
                stopped.cancel()
                serving.result()  # granian failed (e.g. the port is taken): the daemon stops
                raise RuntimeError("admin API server stopped unexpectedly")
            server.stop()  # type: ignore[no-untyped-call]
            await serving
            await app.state["console"].hub.aclose()
            await admin.aclose()

        return run

    return factory
