"""Every Lua error code has an exception class, and error replies map to them."""

from __future__ import annotations

import re

import pytest

from dispatchd import errors, scripts
from dispatchd.errors import CODES, CommandRejected, ScriptFailure, from_reply

# What a helper of lua/lib/*.lua raises when a transition calls it.
_HELPER_CODES = {
    r"\bL\.(opt_)?id\(": {"E_BAD_ID"},
    r"\bL\.(num|int|str|list)\(": {"E_BAD_ARG"},
    r"\bL\.live_session\(": {"E_BAD_ID", "E_SESSION_UNKNOWN", "E_SESSION_STATE"},
    r"\bL\.check_session_agent\(": {"E_NOT_SESSION_AGENT"},
    r"\bL\.open_ticket\(": {"E_BAD_ID", "E_TICKET_UNKNOWN", "E_TICKET_STATE"},
}


def _header_and_body(op: str) -> tuple[str, str]:
    text = scripts.op_path(op).read_text(encoding="utf-8")
    match = re.match(r"\s*--\[\[(.*?)\]\](.*)", text, re.S)
    assert match, f"lua/{op}.lua has no --[[ contract header ]]"
    return match.group(1), match.group(2)


def _codes(text: str) -> set[str]:
    return set(re.findall(r"\bE_[A-Z_]+\b", text))


def test_every_code_used_in_lua_has_an_exception_class():
    used = scripts.error_codes_used()
    assert used, "no E_* codes found in lua/*.lua"
    missing = sorted(used - CODES.keys())
    assert not missing, f"codes used in lua/*.lua without a class in dispatchd.errors: {missing}"


def test_every_code_documented_in_routing_md_has_an_exception_class():
    doc = (scripts.lua_dir().parent / "docs" / "routing.md")
    if not doc.is_file():
        pytest.skip("docs/routing.md not next to the lua directory (installed package)")
    missing = sorted(_codes(doc.read_text(encoding="utf-8")) - CODES.keys())
    assert not missing, f"codes in docs/routing.md without a class: {missing}"


@pytest.mark.parametrize("op", scripts.operations())
def test_header_lists_exactly_the_codes_the_script_raises(op):
    header, body = _header_and_body(op)
    listed = _codes(header.split("Errors:", 1)[1]) if "Errors:" in header else set()
    raised = _codes(body)
    for pattern, codes in _HELPER_CODES.items():
        if re.search(pattern, body):
            raised |= codes
    assert raised - listed == set(), f"lua/{op}.lua raises codes its header does not list"
    assert listed - raised == set(), f"lua/{op}.lua header lists codes it never raises"


@pytest.mark.parametrize(("code", "cls"), sorted(CODES.items()))
def test_from_reply_maps_each_code_to_its_class(code, cls):
    assert cls.code == code
    assert issubclass(cls, CommandRejected)
    exc = from_reply(f"{code} some detail here")
    assert type(exc) is cls
    assert exc.detail == "some detail here"
    assert str(exc) == f"{code} some detail here"
    bare = from_reply(code)
    assert type(bare) is cls and bare.detail == ""


def test_every_command_rejected_subclass_is_in_codes():
    classes = {
        obj for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, CommandRejected) and obj is not CommandRejected
    }
    assert classes == set(CODES.values())


@pytest.mark.parametrize(
    "text",
    [
        "E_NOT_A_CODE detail",
        "E_UNKNOWN x",  # the base class's placeholder code is not a real code
        "ERR user_script:12: attempt to index a nil value",
        "",
        "e_bad_arg lower case",
    ],
)
def test_from_reply_maps_unknown_text_to_script_failure(text):
    exc = from_reply(text)
    assert type(exc) is ScriptFailure
    assert not isinstance(exc, CommandRejected)
    assert str(exc) == text
