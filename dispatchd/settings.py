"""The daemon's settings: one frozen struct, read once at start-up.

Every field ``name`` is set by the environment variable ``DISPATCHD_<NAME>`` or by the
key ``name`` of the TOML file that ``DISPATCHD_CONFIG`` names; the environment wins over
the file, the file over the default. An empty environment variable counts as unset.
Values are converted with ``msgspec.convert(..., strict=False)``, so ``"8080"`` is a
valid port. This module is the only place in the package that reads the environment.
"""

import ast
import inspect
import itertools
import os
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from dispatchd.connect import URL_SCHEMES, BadURL, check_url
from dispatchd.errors import DispatchError

ENV_PREFIX = "DISPATCHD_"
CONFIG_VAR = "DISPATCHD_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class SettingsError(DispatchError):
    """A setting has a value the daemon cannot use.

    Attributes:
        source: where the value came from: the environment variable
            (``DISPATCHD_ADMIN_PORT``) or the file and key (``/etc/d.toml: admin_port``).
        value: the offending value as given, or None when the file itself is the problem.
        reason: what is wrong with it.
    """

    def __init__(self, source: str, value: object, reason: str) -> None:
        shown = "" if value is None else f"={value!r}"
        super().__init__(f"bad setting {source}{shown}: {reason}")
        self.source = source
        self.value = value
        self.reason = reason


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the daemon can be told at start-up (see the module docstring)."""

    redis_url: str | None = None
    """URL of an external Redis (>= 7.0) or Valkey (>= 7.2): redis://host:6379/0,
    rediss://... (TLS) or unix:///path.sock; a Redis/Valkey Cluster:
    redis+cluster://[user:password@]host:port[,host:port...] (rediss+cluster:// with TLS;
    any of its nodes will do). Unset: the daemon runs its own embedded Valkey on
    loopback."""

    data_dir: str = ".dispatchd"
    """Directory of the embedded Valkey's data (append-only file), password, ACL file and
    log; created if missing, readable by its owner only (0700, files 0600). Unused with
    redis_url."""

    embedded_port: Port = 0
    """Loopback TCP port of the embedded Valkey; 0 picks a free one."""

    admin_host: str = "127.0.0.1"
    """Address the admin HTTP API listens on (0.0.0.0: every interface)."""

    admin_port: Port = 8080
    """TCP port the admin HTTP API listens on; 0 picks a free one (logged)."""

    admin_enabled: bool = True
    """Serve the admin HTTP API from ``dispatchd run``."""

    admin_bootstrap_token: Annotated[str, msgspec.Meta(min_length=16)] | None = None
    """The first admin token (at least 16 characters), used only when the server holds
    no token yet (e.g. set by a deployment). Unset: a random one is made and printed
    once on stdout."""

    log_level: str = "INFO"
    """Lowest level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."""

    log_format: Literal["json", "text"] = "json"
    """json: one JSON object per line (ts, level, logger, msg, fields); text: for humans."""

    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    """Seconds the daemon's loops get to finish after SIGTERM/SIGINT before they are
    cancelled."""

    tenants: str = "default"
    """Comma-separated tenant ids this daemon serves from the start; tenants added to the
    Redis set dispatchd:tenants later are picked up within 5 s."""

    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 500
    """Most gateway commands of one tenant applied in one script call."""

    block_ms: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 50
    """How long one read of the inbound streams waits for new commands."""

    tick_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 100
    """How late a due timer (overflow step, preference fallback, lifecycle or ticket
    timer) fires, at most: every tenant is ticked this often, and what a command makes
    due at once fires in the same call."""

    lease_ms: Annotated[int, msgspec.Meta(ge=100, le=600000)] = 1500
    """How long a replica's hold on a tenant lasts without renewal (renewed every tick_ms
    while held); when a replica dies, another takes its tenants over (and their
    unacknowledged commands) once their lease runs out."""

    heartbeat_ms: Annotated[int, msgspec.Meta(ge=0, le=60000)] = 250
    """How often a replica renews its registration in the Redis sorted set
    dispatchd:replicas; one not heard from for 4 heartbeats is gone. Each tenant is owned
    by one live replica (rendezvous hashing), so N replicas hold about 1/N of the tenants
    each; keep 4 x heartbeat_ms below lease_ms. 0: no membership (every replica asks for
    every tenant; the first to ask holds them all)."""

    durability: Literal["none", "replica", "aof"] = "none"
    """What the gateway consumer waits for after the script calls of each round trip,
    before it reads more (in the same pipelined round trip): none (nothing: Redis
    replication is asynchronous, a failover can lose the latest writes); replica (WAIT 1
    durability_timeout_ms: at least one replica received the round's state changes,
    events and acknowledgements); aof (WAITAOF 1 0 durability_timeout_ms: the master's
    append-only file has them on disk; needs appendonly yes). A wait that times out is
    counted in dispatchd_durability_wait_failures_total and logged, and the daemon goes
    on. It does not cover a gateway's XADD (docs/deploy.md, Failover)."""

    durability_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 500
    """Longest wait of one round trip for durability (replica or aof); a wait that times
    out counts as a failure and the round trip goes on."""

    dedupe_hours: Annotated[float, msgspec.Meta(gt=0, le=720)] = 24.0
    """A command id is applied at most once within this many hours."""

    events_maxlen: Annotated[int, msgspec.Meta(ge=1000)] = 1_000_000
    """Approximate length the outbound event stream of a tenant is trimmed to."""

    metrics_host: str = "127.0.0.1"
    """Address of the ops listener: /metrics (Prometheus), /healthz (liveness) and /readyz
    (readiness), served without authentication; 0.0.0.0 to let Prometheus reach it from
    another host or container."""

    metrics_port: Port = 9464
    """TCP port of the ops listener (/metrics, /healthz, /readyz)."""

    metrics_sample_s: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 5.0
    """How often the metrics sampler reads queue depths and waits, agents and stream lag
    from Redis (a scrape never reads Redis)."""

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            if self.redis_url.partition("://")[0] not in URL_SCHEMES:
                raise ValueError(
                    f"the URL must start with {', '.join(s + '://' for s in URL_SCHEMES)}")
            try:
                check_url(self.redis_url)
            except BadURL as exc:
                raise ValueError(str(exc)) from None
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        for tenant in self.tenants.split(","):
            if tenant.strip() and not re.match(r"^[A-Za-z0-9_.@-]{1,64}\Z", tenant.strip()):
                raise ValueError(f"tenant id {tenant.strip()!r}: 1-64 of A-Z a-z 0-9 _ . @ -")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read the settings from ``environ`` and the file named by ``DISPATCHD_CONFIG``.

        Raises:
            SettingsError: naming the variable (or file and key) of the first bad value.
        """
        values: dict[str, Any] = {}
        config_path = environ.get(CONFIG_VAR, "")
        if config_path:
            for name, value in _read_file(config_path).items():
                _check(name, value, f"{config_path}: {name}")  # even if the env overrides it
                values[name] = value
        for name in field_names():
            raw = environ.get(env_var(name), "")
            if raw != "":
                _check(name, raw, env_var(name))
                values[name] = raw
        return _convert(values, "settings", None)


def env_var(name: str) -> str:
    """The environment variable of field ``name``."""
    return ENV_PREFIX + name.upper()


def field_names() -> tuple[str, ...]:
    """The names of the settings, in declaration order."""
    return Settings.__struct_fields__


@cache
def field_docs() -> dict[str, str]:
    """Field name -> its docstring, one line (what ``--help`` and the README show)."""
    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for stmt, after in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def defaults() -> dict[str, object]:
    """Field name -> default value."""
    return {f.name: f.default for f in msgspec.structs.fields(Settings)}


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(CONFIG_VAR, path, f"cannot read the file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(CONFIG_VAR, path, f"not valid TOML: {exc}") from None
    known = set(field_names())
    for name in data:
        if name not in known:
            raise SettingsError(
                f"{path}: {name}", None, f"unknown setting (known: {', '.join(sorted(known))})"
            )
    return data


def _check(name: str, value: object, source: str) -> None:
    # Every field has a default, so a one-field dict is a complete Settings: converting it
    # checks this value alone and the error can name where it came from.
    _convert({name: value}, source, value)


def _convert(values: dict[str, Any], source: str, value: object) -> Settings:
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec appends " - at `$.field`"; the source already says where.
        reason = str(exc).split(" - at `$", 1)[0]
        if reason.startswith("Invalid enum value") and len(values) == 1:
            choices = _choices(next(iter(values)))
            if choices:
                reason += f" (one of: {', '.join(choices)})"
        raise SettingsError(source, value, reason) from None


def _choices(name: str) -> tuple[str, ...]:
    """The values a ``Literal`` setting takes (empty for any other)."""
    for f in msgspec.structs.fields(Settings):
        if f.name == name and get_origin(f.type) is Literal:
            return tuple(str(v) for v in get_args(f.type))
    return ()
