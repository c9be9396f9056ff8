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


def operations() -> list[str]:
    """The names of all transitions, one per ``lua/<op>.lua`` (sorted)."""
    return sorted(p.stem for p in lua_dir().glob("*.lua"))


def _read(name: str) -> str:
    return (lua_dir() / f"{name}.lua").read_text(encoding="utf-8")


def _library() -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((lua_dir() / "lib").glob("*.lua")))


@cache
def source(name: str) -> str:
    """The full text sent to Redis for ``name`` (an operation or ``apply_batch``)."""
    head = "local OPS = {}\n" + lua_prelude() + _library()
    if name == BATCH:
        return head + "".join(_read(op) for op in operations()) + _BATCH_FOOTER
    if name == GATEWAY:
        return head + "".join(_read(op) for op in operations()) + _GATEWAY_FOOTER
    if name == ADMIN:
        admin = (lua_dir() / "admin" / "admin.lua").read_text(encoding="utf-8")
        return head + "".join(_read(op) for op in operations()) + admin + _ADMIN_FOOTER
    if name not in operations():
        raise KeyError(name)
    return head + _read(name) + _STANDALONE_FOOTER.format(op=name)


def sha1(name: str) -> str:
    """The SHA1 Redis will know the script by."""
    return hashlib.sha1(source(name).encode()).hexdigest()


def error_codes_used() -> set[str]:
    """Every ``E_*`` code that appears in the Lua sources (for the mapping test)."""
    codes: set[str] = set()
    for path in lua_dir().rglob("*.lua"):
        codes.update(re.findall(r"\bE_[A-Z_]+\b", path.read_text(encoding="utf-8")))
    return codes
