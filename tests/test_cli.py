"""The ``dispatchd`` command, run as a real process, and the daemon's loop handling."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatchd import daemon, scripts
from dispatchd.embedded import EmbeddedValkey, free_port
from dispatchd.settings import CONFIG_VAR, env_var, field_names

BIN = Path(sys.executable).parent / "dispatchd"
REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 5.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any DISPATCHD_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args],
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=30,
    )


class Daemon:
    """``dispatchd run`` in the background, its stderr read line by line."""

    def __init__(self, env: dict[str, str], cwd: Path, *, group: bool = False) -> None:
        self.proc = subprocess.Popen(
            [str(BIN), "run"],
            env={"DISPATCHD_METRICS_PORT": "0", **env},  # never the default 9464 of a real one
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=group,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, match: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if match(line):
                return line
        self.kill()
        raise AssertionError("expected log line never came:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the exit (at most ``timeout``); the exit status. Collects all lines."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        while (line := self._queue.get(timeout=1.0)) is not None:  # until the reader's end
            self.lines.append(line)
        return code

    def kill(self) -> None:
        """Stop a daemon a failed test left running: SIGTERM first, so that it stops its
        embedded Valkey (a SIGKILL would orphan it)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        """Stop the daemon if still running and close its pipes."""
        self.kill()
        self._reader.join(timeout=1.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def record(self, msg: str) -> dict[str, Any]:
        found = [r for r in self.records() if r["msg"].startswith(msg)]
        assert found, f"no {msg!r} line in:\n" + "\n".join(self.lines)
        return found[0]


def is_json_msg(prefix: str) -> Callable[[str], bool]:
    return lambda line: line.startswith("{") and json.loads(line)["msg"].startswith(prefix)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: Any, **kwargs: Any) -> Daemon:
        started.append(Daemon(*args, **kwargs))
        return started[-1]

    yield start
    for d in started:
        d.close()


def valkey_pids(data_dir: Path) -> list[int]:
    """Pids of the Valkey servers running in ``data_dir`` (their working directory)."""
    target = str(data_dir.resolve())
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and os.readlink(proc / "cwd") == target
                and b"valkey-server" in (proc / "cmdline").read_bytes()
            ):
                pids.append(int(proc.name))
        except OSError:
            continue  # exited meanwhile, or not ours to look at
    return pids


# ------------------------------------------------------------------------------ help


def test_help_describes_commands_and_settings() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for text in ("usage: dispatchd", "run", "version", "DISPATCHD_", "exit status"):
        assert text in top.stdout
    run = cli("run", "--help")
    assert run.returncode == 0
    assert "usage: dispatchd run" in run.stdout
    for name in field_names():
        assert env_var(name) in run.stdout
    for text in (CONFIG_VAR, "SIGTERM", "SIGINT", "Valkey >= 7.2", "Redis >= 7.0"):
        assert text in run.stdout


def test_python_dash_m_is_the_same_command() -> None:
    via_module = subprocess.run(
        [sys.executable, "-m", "dispatchd", "--help"], capture_output=True, text=True, timeout=30
    )
    assert via_module.returncode == 0
    assert via_module.stdout == cli("--help").stdout


def test_version() -> None:
    expected = f"dispatchd {package_version('dispatchd')}\n"
    assert cli("version").stdout == expected
    assert cli("--version").stdout == expected


def test_missing_command_is_a_usage_error() -> None:
    result = cli()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


# ------------------------------------------------------------------------- bad settings


def test_bad_setting_exits_2_naming_the_variable() -> None:
    result = cli("run", env=clean_env(DISPATCHD_ADMIN_PORT="eighty"))
    assert result.returncode == daemon.EXIT_SETTINGS == 2
    assert "DISPATCHD_ADMIN_PORT='eighty'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "d.toml"
    conf.write_text("log_format = 'yaml'\n")
    result = cli("run", env=clean_env(DISPATCHD_CONFIG=str(conf)))
    assert result.returncode == 2
    assert f"{conf}: log_format" in result.stderr


# ------------------------------------------------------------------------------- run


def test_run_on_external_server(
    redis_url: str, tmp_path: Path, spawn: Callable[..., Daemon]
) -> None:
    d = spawn(clean_env(DISPATCHD_REDIS_URL=redis_url), tmp_path)
    d.wait_for(is_json_msg("ready"))
    d.proc.send_signal(signal.SIGTERM)
    assert d.finish() == 0
    # stdout carries nothing but, on a server without admin tokens, the bootstrap token
    assert d.proc.stdout is not None
    out = d.proc.stdout.read().splitlines()
    assert out == [] or (len(out) == 1 and out[0].startswith("bootstrap admin token: dsp_"))

    msgs = [r["msg"] for r in d.records()]
    assert msgs[0] == "starting dispatchd"
    # the loops stop in any order (a SIGTERM right after "ready" can stop the consumer
    # before the admin API has finished starting); the daemon stops after them all
    assert msgs[-2:] == ["stopping", "stopped"]
    assert msgs.index("gateway consumer started") < msgs.index("stop requested") < msgs.index(
        "gateway consumer stopped") < len(msgs) - 2
    assert all({"ts", "level", "msg", "fields"} <= r.keys() for r in d.records())
    loaded = d.record("function library ready")["fields"]
    assert loaded["library"] == "dispatchd"
    assert loaded["version"] == str(scripts.LIBRARY_VERSION)
    assert loaded["build"] == scripts.build()
    assert loaded["action"] in ("loaded", "present")
    assert "consuming gateway streams" in d.record("ready")["msg"]
    assert d.record("server checked")["fields"]["url"] == daemon.redact(redis_url)
    assert "***" in daemon.redact(redis_url)  # the test server has a password
    password = urlsplit(redis_url).password
    assert password and all(password not in line for line in d.lines)
    assert not (tmp_path / ".dispatchd").exists()  # no embedded server, no data dir


def test_run_with_embedded_valkey(tmp_path: Path, spawn: Callable[..., Daemon]) -> None:
    d = spawn(clean_env(), tmp_path)  # default data dir: ./.dispatchd
    d.wait_for(is_json_msg("ready"))
    data_dir = tmp_path / ".dispatchd"
    [pid] = valkey_pids(data_dir)
    started = d.record("embedded valkey started")["fields"]
    assert started["url"].startswith("redis://127.0.0.1:")
    assert started["data_dir"] == str(data_dir)

    d.proc.send_signal(signal.SIGTERM)
    assert d.finish() == 0
    assert [r["msg"] for r in d.records()][-2:] == ["embedded valkey stopped", "stopped"]
    assert valkey_pids(data_dir) == []
    assert not Path(f"/proc/{pid}").exists()
    assert (data_dir / "appendonlydir").is_dir()


def test_ctrl_c_stops_daemon_then_server(tmp_path: Path, spawn: Callable[..., Daemon]) -> None:
    # Ctrl-C signals the whole process group; Valkey must wait for the daemon to stop it.
    data_dir = tmp_path / "data"
    env = clean_env(DISPATCHD_DATA_DIR=str(data_dir), DISPATCHD_LOG_FORMAT="text")
    d = spawn(env, tmp_path, group=True)
    d.wait_for(lambda line: " ready: " in line)
    os.killpg(d.proc.pid, signal.SIGINT)
    assert d.finish() == 0
    assert "stop requested signal=SIGINT" in "\n".join(d.lines)
    assert "embedded valkey stopped" in d.lines[-2]
    assert valkey_pids(data_dir) == []
    log = (data_dir / "valkey.log").read_text()
    assert "Received SIGINT" not in log
    assert "Received SIGTERM" in log


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = cli("run", env=clean_env(DISPATCHD_REDIS_URL=url))
    assert result.returncode == daemon.EXIT_FAILURE == 1
    [failed] = [json.loads(line) for line in result.stderr.splitlines() if "start-up" in line]
    assert failed["level"] == "ERROR"
    assert failed["fields"]["step"] == "connect"
    assert "ConnectionError" in failed["fields"]["error"]


def test_embedded_port_in_use_exits_1(tmp_path: Path, valkey_server: EmbeddedValkey) -> None:
    env = clean_env(
        DISPATCHD_DATA_DIR=str(tmp_path), DISPATCHD_EMBEDDED_PORT=str(valkey_server.port)
    )
    result = cli("run", env=env)
    assert result.returncode == 1
    [failed] = [json.loads(line) for line in result.stderr.splitlines() if "start-up" in line]
    assert failed["fields"]["step"] == "embedded valkey"
    assert "already in use" in failed["fields"]["error"]


def test_broken_script_stops_the_daemon(tmp_path: Path) -> None:
    # A copy of the package whose Lua has a syntax error, imported ahead of the real one;
    # on the embedded Valkey, which must be stopped again on the way out.
    shutil.copytree(
        REPO / "dispatchd", tmp_path / "dispatchd", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO / "lua", tmp_path / "lua")
    op = scripts.operations()[0]
    with (tmp_path / "lua" / f"{op}.lua").open("a") as f:
        f.write("\nthis is not lua (\n")
    data_dir = tmp_path / "data"
    env = clean_env(DISPATCHD_DATA_DIR=str(data_dir), PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "dispatchd", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    [failed] = [json.loads(line) for line in result.stderr.splitlines() if "start-up" in line]
    assert failed["fields"]["step"] == "function library"
    assert "FUNCTION LOAD of the dispatchd library failed" in failed["fields"]["error"]
    assert "Traceback" not in result.stderr
    assert "embedded valkey stopped" in result.stderr
    assert valkey_pids(data_dir) == []


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.05)


def test_sigkilled_daemon_takes_its_valkey_along(
    tmp_path: Path, spawn: Callable[..., Daemon]
) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(DISPATCHD_DATA_DIR=str(data_dir), DISPATCHD_ADMIN_PORT=str(free_port()))
    d = spawn(env, tmp_path)
    d.wait_for(is_json_msg("ready"))
    [pid] = valkey_pids(data_dir)
    d.proc.kill()  # SIGKILL: no clean-up of its own
    d.proc.wait()
    wait_until(lambda: valkey_pids(data_dir) == [])
    # the server was told to stop (SIGTERM: append-only file flushed), not killed
    assert "Received SIGTERM" in (data_dir / "valkey.log").read_text()

    again = spawn(env, tmp_path)
    again.wait_for(is_json_msg("ready"))
    again.proc.send_signal(signal.SIGTERM)
    assert again.finish() == 0
    assert not alive(pid)
    assert valkey_pids(data_dir) == []


def _keep_alive_get(port: int, path: str) -> http.client.HTTPConnection:
    """An HTTP/1.1 connection that made one request and stays open, as a scraper's."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status in (200, 401)
    assert not response.will_close
    return conn


def _both_listening(d: Daemon) -> None:
    """Wait until the admin and the ops listener both listen (they start concurrently)."""
    wanted = {"admin API listening", "ops listener started"}
    while wanted:
        checks = [is_json_msg(m) for m in wanted]
        line = d.wait_for(lambda line, checks=checks: any(c(line) for c in checks))
        wanted = {m for m in wanted if not is_json_msg(m)(line)}


def test_restart_after_sigkill_while_scrapers_hold_connections(
    tmp_path: Path, spawn: Callable[..., Daemon]
) -> None:
    # The killed daemon's ends of these connections linger (FIN_WAIT2, then TIME_WAIT);
    # the listeners must bind over them, at once.
    metrics_port, admin_port = free_port(), free_port()
    env = clean_env(
        DISPATCHD_DATA_DIR=str(tmp_path / "data"),
        DISPATCHD_METRICS_PORT=str(metrics_port),
        DISPATCHD_ADMIN_PORT=str(admin_port),
    )
    first = spawn(env, tmp_path)
    _both_listening(first)
    held = [_keep_alive_get(metrics_port, "/metrics"), _keep_alive_get(admin_port, "/v1/tenants")]
    try:
        first.proc.kill()
        first.proc.wait()
        second = spawn(env, tmp_path)
        _both_listening(second)
        assert _keep_alive_get(metrics_port, "/healthz") is not None
        second.proc.send_signal(signal.SIGTERM)
        assert second.finish() == 0
    finally:
        for conn in held:
            conn.close()


@pytest.mark.parametrize("listener", ["metrics", "admin"])
def test_a_port_another_daemon_listens_on_is_still_refused(
    listener: str, tmp_path: Path, spawn: Callable[..., Daemon]
) -> None:
    ports = {"metrics": str(free_port()), "admin": str(free_port())}
    env = clean_env(DISPATCHD_DATA_DIR=str(tmp_path / "one"),
                    DISPATCHD_METRICS_PORT=ports["metrics"], DISPATCHD_ADMIN_PORT=ports["admin"])
    first = spawn(env, tmp_path)
    first.wait_for(is_json_msg("admin API listening"))
    # a second daemon (its own data dir) on the same port of one listener
    other = {"metrics": str(free_port()), "admin": str(free_port())} | {listener: ports[listener]}
    second = spawn(env | {"DISPATCHD_DATA_DIR": str(tmp_path / "two"),
                          "DISPATCHD_METRICS_PORT": other["metrics"],
                          "DISPATCHD_ADMIN_PORT": other["admin"]}, tmp_path)
    assert second.finish(timeout=30) == daemon.EXIT_FAILURE
    [failed] = [r for r in second.records() if r["msg"] == "loop failed"]
    assert f"127.0.0.1:{ports[listener]}: Address already in use" in failed["fields"]["error"]
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 0


# -------------------------------------------------------------------- daemon internals


async def test_loops_drain_after_stop() -> None:
    stop = asyncio.Event()
    drained: list[str] = []

    async def polite(stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.sleep(0.01)  # in-flight work
        drained.append("polite")

    task = asyncio.create_task(daemon.run_loops([polite, polite], stop, grace_s=5.0))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert drained == ["polite", "polite"]


async def test_stubborn_loop_is_cancelled_after_grace(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn(stop: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stop.set()
    with caplog.at_level(logging.WARNING, logger="dispatchd"):
        await asyncio.wait_for(daemon.run_loops([stubborn], stop, grace_s=0.05), 1.0)
    assert cancelled.is_set()
    assert "grace period over" in caplog.text


async def test_failing_loop_stops_the_others() -> None:
    stop = asyncio.Event()

    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(daemon.run_loops([broken], stop, grace_s=1.0), 1.0)
    assert isinstance(caught.value.exceptions[0], RuntimeError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@db:6379/1", "redis://:***@db:6379/1"),
        ("rediss://app:secret@db/0", "rediss://app:***@db/0"),
    ],
)
def test_urls_are_logged_without_password(url: str, shown: str) -> None:
    assert daemon.redact(url) == shown
