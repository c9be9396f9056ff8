"""Assembles the Lua scripts and registers them with a Redis client.

Each ``lua/<op>.lua`` defines one transition as ``OPS.<op> = function(now, a) ... end``.
A script sent to Redis is the key prelude (from :mod:`dispatchd.keys`), the shared
library ``lua/lib/*.lua`` (in file-name order), the transition(s) and a footer:

* the standalone script of ``<op>``: ``ARGV[1]`` now_ms, ``ARGV[2]`` the msgpack-packed
  command; returns the msgpack-packed event list or an error reply ``E_CODE detail``;
* ``apply_batch``: every transition plus a loop that applies a msgpack list of commands in
  order, each under ``pcall``, and returns one packed list of ``{events}`` / ``{error}``;
* ``gateway_batch``: every transition plus the gateway entry point (``L.gateway``);
* ``admin_change``: every transition plus ``lua/admin/admin.lua``, one audited admin
  change.

The SHA of the assembled text is the script's version.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

from dispatchd.keys import lua_prelude

BATCH = "apply_batch"
GATEWAY = "gateway_batch"
ADMIN = "admin_change"

_STANDALONE_FOOTER = """
return L.run({op!r}, ARGV[1], ARGV[2])
"""

_BATCH_FOOTER = """
return L.batch(ARGV[1], ARGV[2])
"""

_GATEWAY_FOOTER = """
return L.gateway(ARGV[1], ARGV[2])
"""

_ADMIN_FOOTER = """
return L.admin(ARGV[1], ARGV[2])
"""


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
    """The transitions of the ticket system (they need the ticket library)."""
    return sorted(p.stem for p in (lua_dir() / "tickets").glob("[a-z]*.lua"))


def op_path(name: str) -> Path:
    """The file of transition ``name``."""
    return _op_files()[name]


def _read(name: str) -> str:
    return op_path(name).read_text(encoding="utf-8")


def _library(tickets: bool) -> str:
    files = sorted((lua_dir() / "lib").glob("*.lua"))
    if tickets:
        files.append(lua_dir() / "tickets" / "00_lib.lua")
    return "".join(p.read_text(encoding="utf-8") for p in files)


@cache
def source(name: str) -> str:
    """The full text sent to Redis for ``name`` (an operation or ``apply_batch``).

    A session or routing transition alone gets the shared library only; the ticket
    library is added where ticket transitions run.
    """
    prelude = "local OPS = {}\n" + lua_prelude()
    if name in (BATCH, GATEWAY, ADMIN):
        body = prelude + _library(True) + "".join(_read(op) for op in operations())
        if name == ADMIN:
            body += (lua_dir() / "admin" / "admin.lua").read_text(encoding="utf-8")
        return body + {BATCH: _BATCH_FOOTER, GATEWAY: _GATEWAY_FOOTER, ADMIN: _ADMIN_FOOTER}[name]
    if name not in operations():
        raise KeyError(name)
    tickets = name in ticket_operations()
    return prelude + _library(tickets) + _read(name) + _STANDALONE_FOOTER.format(op=name)


def sha1(name: str) -> str:
    """The SHA1 Redis will know the script by."""
    return hashlib.sha1(source(name).encode()).hexdigest()


def error_codes_used() -> set[str]:
    """Every ``E_*`` code that appears in the Lua sources (for the mapping test)."""
    codes: set[str] = set()
    for path in lua_dir().rglob("*.lua"):
        codes.update(re.findall(r"\bE_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return codes
