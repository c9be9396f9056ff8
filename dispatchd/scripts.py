"""Assembles the Lua files into one Valkey/Redis Function library and loads it.

Each ``lua/<op>.lua`` defines one transition as ``OPS.<op> = function(now, a) ... end``.
The library (``#!lua name=dispatchd``) is, in order: the key builders (from
:mod:`dispatchd.keys`), the shared helpers ``lua/lib/*.lua`` and ``lua/tickets/00_lib.lua``,
every transition, ``lua/admin/admin.lua``, and the registration of its entry points:

* ``dispatchd_<op>`` (one per transition): ``KEYS[1]`` the tenant root, ``ARGV[1]``
  now_ms, ``ARGV[2]`` the msgpack-packed command; returns the msgpack-packed event list
  or an error reply ``E_CODE detail``;
* ``dispatchd_batch``: a msgpack list of commands applied in order, each on its own,
  returning one packed list of ``{events}`` / ``{error}``;
* ``dispatchd_gateway``: a batch read from the tenant's inbound stream (``L.gateway``);
* ``dispatchd_admin``: one audited admin change (``lua/admin/admin.lua``);
* ``dispatchd_consumers``: removes the idle consumers of the tenant's inbound consumer
  group that hold no pending entry (``lua/lib/95_consumers.lua``);
* ``dispatchd_version`` (read-only): ``"<LIBRARY_VERSION> <build>"``.

``FUNCTION LOAD REPLACE`` compiles the library once; the server keeps it with the data
(persisted in the RDB/AOF, replicated), and ``FCALL`` runs only the entry point named, so
a call costs its own work and not the definition of 220 functions, as ``EVALSHA`` of the
assembled script did (55-78 us of Redis CPU per call before any work).

:class:`Library` loads and checks the library and calls it; a daemon refuses to run
against a library whose version is newer than its own (a newer daemon loaded it: rolling
back the daemon must not silently downgrade the routing code under its peers).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from dispatchd.connect import is_cluster
from dispatchd.errors import DispatchError
from dispatchd.keys import lua_prelude

log = logging.getLogger("dispatchd.scripts")

#: The library's name on the server.
LIBRARY = "dispatchd"
#: The library's contract version: bump it whenever an entry point's arguments, reply or
#: the data it reads and writes change in a way an older daemon would not understand.
LIBRARY_VERSION = 3
#: Entry points besides the per-transition ones.
BATCH = "dispatchd_batch"
GATEWAY = "dispatchd_gateway"
ADMIN = "dispatchd_admin"
CONSUMERS = "dispatchd_consumers"
VERSION = "dispatchd_version"


class LibraryError(DispatchError):
    """The server's library cannot be used by this daemon (too new, or failed to load)."""


def lua_dir() -> Path:
    """Where the ``.lua`` files are: inside the installed package, or the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "lua", here.parent / "lua"):
        if (candidate / "lib").is_dir():
            return candidate
    raise FileNotFoundError(f"lua scripts not found next to {here}")


def _op_files() -> dict[str, Path]:
    """Transition name -> its file: ``lua/<op>.lua`` (sessions and routing) and
    ``lua/tickets/<op>.lua`` (tickets; ``00_lib.lua`` there is their library)."""
    found = {p.stem: p for p in lua_dir().glob("*.lua")}
    found.update({p.stem: p for p in (lua_dir() / "tickets").glob("[a-z]*.lua")})
    return found


def operations() -> list[str]:
    """The names of all transitions (sorted)."""
    return sorted(_op_files())


def ticket_operations() -> list[str]:
    """The transitions of the ticket system."""
    return sorted(p.stem for p in (lua_dir() / "tickets").glob("[a-z]*.lua"))


def op_path(name: str) -> Path:
    """The file of transition ``name``."""
    return _op_files()[name]


def function_name(op: str) -> str:
    """The library function of transition ``op``."""
    if op not in _op_files():
        raise KeyError(op)
    return "dispatchd_" + op


_REGISTER = """
-- ------------------------------------------------------------------ entry points
local function entry(fn)
  return function(keys, args)
    local ok, err = pcall(L.enter, keys[1])
    if not ok then return redis.error_reply(L.error_text(err)) end
    return fn(args)
  end
end
-- (no globals while the library loads: no ipairs here)
local TRANSITIONS = {{{ops}}}
for i = 1, #TRANSITIONS do
  local op = TRANSITIONS[i]
  redis.register_function("dispatchd_" .. op, entry(function(args)
    return L.run(op, args[1], args[2])
  end))
end
redis.register_function("{batch}", entry(function(args) return L.batch(args[1], args[2]) end))
redis.register_function("{gateway}", entry(function(args) return L.gateway(args[1], args[2]) end))
redis.register_function("{admin}", entry(function(args) return L.admin(args[1], args[2]) end))
redis.register_function("{consumers}", entry(function(args)
  return L.prune_consumers(args[1], args[2], args[3])
end))
redis.register_function{{
  function_name = "{version}", flags = {{"no-writes", "allow-stale"}},
  callback = function() return "{lib_version} {build}" end,
}}
"""


def _body() -> str:
    files = sorted((lua_dir() / "lib").glob("*.lua"))
    files.append(lua_dir() / "tickets" / "00_lib.lua")
    files.extend(op_path(op) for op in operations())
    files.append(lua_dir() / "admin" / "admin.lua")
    return "local OPS = {}\n" + lua_prelude() + "".join(
        p.read_text(encoding="utf-8") for p in files)


@cache
def build() -> str:
    """The build id of this daemon's library: the SHA1 of its Lua text."""
    return hashlib.sha1(_body().encode(), usedforsecurity=False).hexdigest()


@cache
def library_source() -> str:
    """The full text given to ``FUNCTION LOAD``."""
    ops = ", ".join(f'"{op}"' for op in operations())
    footer = _REGISTER.format(
        ops=ops, batch=BATCH, gateway=GATEWAY, admin=ADMIN, consumers=CONSUMERS, version=VERSION,
        lib_version=LIBRARY_VERSION, build=build())
    return f"#!lua name={LIBRARY}\n" + _body() + footer


def error_codes_used() -> set[str]:
    """Every ``E_*`` code that appears in the Lua sources (for the mapping test)."""
    codes: set[str] = set()
    for path in lua_dir().rglob("*.lua"):
        codes.update(re.findall(r"\bE_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return codes


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is the server saying the library (or one of its functions) is not
    loaded: the reply to an ``FCALL`` after ``FUNCTION FLUSH``, or on a server restarted
    without its data."""
    return isinstance(exc, ResponseError) and "function not found" in str(exc).lower()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Library:
    """The ``dispatchd`` function library on one server (or a cluster client's nodes).

    Args:
        client: a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    async def server_version(self) -> tuple[int, str] | None:
        """The loaded library's (version, build), or None when none is loaded (on a
        cluster: the oldest of its masters', None when any master lacks it)."""
        if is_cluster(self.client):
            found = await self._versions()
            if any(v is None for v in found.values()):
                return None
            return min(v for v in found.values() if v is not None) if found else None
        return await self._version_on(self.client)

    async def _version_on(self, client: Any, **target: Any) -> tuple[int, str] | None:
        try:
            raw = await client.execute_command("FCALL_RO", VERSION, 0, **target)
        except ResponseError as exc:
            if is_missing(exc):
                return None
            raise
        number, _, build_id = _text(raw).partition(" ")
        try:
            return int(number), build_id
        except ValueError:
            return 0, build_id

    async def _versions(self) -> dict[Any, tuple[int, str] | None]:
        """Master node -> its library's (version, build) or None (a cluster)."""
        return {node: await self._version_on(self.client, target_nodes=node)
                for node in self.client.get_primaries()}

    async def ensure(self) -> str:
        """Load the library unless this very build is loaded; refuse a newer one. On a
        cluster, on every master that lacks this build (functions replicate to a master's
        replicas, but a new master, or one that was flushed, has none).

        Returns:
            what was done: ``"loaded"`` or ``"present"``.

        Raises:
            LibraryError: the server has a library of a newer version, or refused ours.
        """
        if is_cluster(self.client):
            todo = {node: v for node, v in (await self._versions()).items()
                    if v != (LIBRARY_VERSION, build())}
            for node, loaded in todo.items():
                await self._load(loaded, self.client, target_nodes=node)
            return "loaded" if todo else "present"
        loaded = await self._version_on(self.client)
        if loaded == (LIBRARY_VERSION, build()):
            return "present"
        await self._load(loaded, self.client)
        return "loaded"

    async def _load(self, loaded: tuple[int, str] | None, client: Any, **target: Any) -> None:
        if loaded is not None and loaded[0] > LIBRARY_VERSION:
            raise LibraryError(
                f"the server has dispatchd library version {loaded[0]} (build {loaded[1]}),"
                f" newer than this daemon's {LIBRARY_VERSION}: run the newer daemon, or"
                f" `FUNCTION DELETE {LIBRARY}` if you mean to downgrade every daemon")
        try:
            await client.execute_command("FUNCTION LOAD", "REPLACE", library_source(), **target)
        except ResponseError as exc:
            raise LibraryError(f"FUNCTION LOAD of the dispatchd library failed: {exc}") from exc
        node = target.get("target_nodes")
        log.info("function library loaded", extra={"fields": {
            "library": LIBRARY, "version": LIBRARY_VERSION, "build": build(),
            "replaced": None if loaded is None else f"{loaded[0]} {loaded[1]}",
            **({"node": node.name} if node is not None else {})}})

    async def call(self, function: str, root: str, args: Sequence[Any]) -> Any:
        """``FCALL function 1 root *args``; loads the library again if it went missing
        (nothing ran then, so the retry cannot apply anything twice)."""
        try:
            return await self.client.fcall(function, 1, root, *args)
        except ResponseError as exc:
            if not is_missing(exc):
                raise
        await self.ensure()
        return await self.client.fcall(function, 1, root, *args)
