"""The embedded Valkey's data directory: private files, its password, its ACL file, and
telling a Valkey left running by a killed daemon from any other process.

Everything in the directory is readable by its owner only: the directory is 0700 and
every file 0600 (tightened at each start, for directories made by older versions), and
the server runs with umask 077 so its append-only and RDB files are 0600 too. The server
needs a password: the ``default`` user's, generated once and kept in ``valkey.password``;
the ACL file ``users.acl`` holds that user (as a SHA-256 hash) and the gateway users made
with ``dispatchd gateway-user``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import secrets
import signal
import stat
import time
from pathlib import Path
from typing import Any

#: Written by Valkey into its data dir (its working directory), removed on a clean exit.
PID_FILE = "valkey.pid"
PASSWORD_FILE = "valkey.password"
ACL_FILE = "users.acl"
CONFIG_FILE = "valkey.conf"
LOCK_FILE = "dispatchd.lock"
LOG_FILE = "valkey.log"

_PR_SET_PDEATHSIG = 1
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in the child
except (OSError, AttributeError):  # not Linux
    _prctl = None


def new_password() -> str:
    """A random password: 64 hex digits (256 bits), safe in a URL as it is."""
    return secrets.token_hex(32)


def tighten(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) or make it and everything in it owner-only.

    Raises:
        OSError: the directory cannot be made, or a file in it is not ours to chmod.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in [data_dir, *data_dir.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's own mode means nothing; its target is not ours to change
        if info.st_mode & 0o077:
            path.chmod(0o700 if stat.S_ISDIR(info.st_mode) else stat.S_IMODE(info.st_mode) & 0o700)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically; the file is 0600 from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def open_private(path: Path) -> int:
    """A file descriptor of ``path`` opened for appending, created 0600 if missing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def password(data_dir: Path) -> str:
    """The server's password from ``valkey.password``; made (0600) on the first call."""
    path = data_dir / PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    secret = new_password()
    write_private(path, secret + "\n")
    return secret


def write_acl_file(data_dir: Path, secret: str) -> Path:
    """Write ``users.acl``: the ``default`` user with ``secret`` and every right, then the
    other users already in the file (the gateway users) as they were."""
    path = data_dir / ACL_FILE
    try:
        kept = [
            line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and line.split()[:2] != ["user", "default"]
        ]
    except FileNotFoundError:
        kept = []
    digest = hashlib.sha256(secret.encode()).hexdigest()
    default = f"user default on #{digest} ~* &* +@all"
    write_private(path, "\n".join([default, *kept]) + "\n")
    return path


def write_config(data_dir: Path, settings: dict[str, str]) -> Path:
    """Write ``valkey.conf`` (0600) with one ``name value`` line per setting."""
    lines = ["# written by dispatchd at each start of its embedded Valkey"]
    for name, value in settings.items():
        lines.append(f'{name} ""' if value == "" else f"{name} {value}")
    path = data_dir / CONFIG_FILE
    write_private(path, "\n".join(lines) + "\n")
    return path


def configured_port(data_dir: Path) -> int | None:
    """The port of the last start's ``valkey.conf`` (None without one)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (data_dir / CONFIG_FILE).read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(" ")
            if name == "port":
                return int(value)
    return None


def child_setup(parent_pid: int) -> None:
    """In the server's process before exec: die with the daemon (Linux).

    ``PR_SET_PDEATHSIG`` sends SIGTERM (Valkey then flushes its append-only file and
    exits) when the thread that forked this process ends; the caller forks from a thread
    that lives as long as the server. The parent may already be gone by the time this
    runs: then stop at once.
    """
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _proc_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (one that exited but is not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the kill above is all we know
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def recorded_pid(data_dir: Path) -> int | None:
    """The live pid in ``valkey.pid`` (None: no file, junk, or nobody of that pid)."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _proc_alive(pid) else None


def is_our_server(pid: int, data_dir: Path) -> bool | None:
    """Whether ``pid`` is a valkey-server working in ``data_dir``; None if it cannot be
    told (no /proc, or someone else's process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return False if Path("/proc/self").exists() else None
    except PermissionError:
        return None
    return b"valkey-server" in cmdline and Path(cwd) == data_dir


def stop_orphan(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid`` (Valkey flushes its append-only file and exits) and wait for it to
    go; whether it did within ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _proc_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
