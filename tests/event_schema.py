"""The event tables of docs/protocol.md, parsed, and a check of one event against them.

The rule the page states for every event: a key its table lists without ``?`` is always
present; a key marked ``?`` is absent when it does not apply, and never ``null``. Every
event has ``type``, ``ts`` and ``cmd?``; session events (the rows ``queued`` to
``closed``) also ``session`` and ``gateway?``. Keys inside parentheses are values or
remarks, not keys. :func:`check_event` is applied to every event the gateway tests read
(tests/gateway_helpers.py ``read_events``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

#: Keys of every event: required, optional.
COMMON = ({"type", "ts"}, {"cmd"})
#: The session-event rows: from the first to the last of these in the Events table.
FIRST_SESSION_EVENT, LAST_SESSION_EVENT = "queued", "closed"
#: Where a null is allowed (the table says "null when ...").
NULLABLE = {("queued", "eta_ms"), ("position", "eta_ms")}

Schema = dict[str, tuple[frozenset[str], frozenset[str]]]


def _top_level_keys(cell: str) -> tuple[set[str], set[str]]:
    """Backticked names outside parentheses: (required, optional)."""
    required: set[str] = set()
    optional: set[str] = set()
    depth = 0
    for m in re.finditer(r"\(|\)|`([^`]+)`(\?)?", cell):
        tok = m.group(0)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif depth == 0:
            (optional if m.group(2) else required).add(m.group(1))
    return required, optional


def _table_after(text: str, heading: str) -> list[tuple[list[str], str]]:
    """Rows (types, fields cell) of the first table after ``heading``."""
    start = text.index(heading + "\n")
    rows: list[tuple[list[str], str]] = []
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("| type |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((re.findall(r"`([a-z_]+)`", cells[0]), cells[1]))
    return rows


def load_schema(doc: Path = DOC) -> tuple[Schema, set[str]]:
    """Every event type's (required, optional) keys, and the session event types."""
    text = doc.read_text()
    schema: Schema = {}
    session_types: set[str] = set()
    in_sessions = False
    for types, cell in _table_after(text, "## Events"):
        required, optional = _top_level_keys(cell)
        if FIRST_SESSION_EVENT in types:
            in_sessions = True
        for t in types:
            req, opt = required | COMMON[0], optional | COMMON[1]
            if in_sessions:
                req, opt = req | {"session"}, opt | {"gateway"}
                session_types.add(t)
            schema[t] = (frozenset(req), frozenset(opt))
        if LAST_SESSION_EVENT in types:
            in_sessions = False
    for types, cell in _table_after(text, "### Ticket events"):
        required, optional = _top_level_keys(cell)
        for t in types:
            schema[t] = (frozenset(required | COMMON[0]), frozenset(optional | COMMON[1]))
    return schema, session_types


SCHEMA, SESSION_TYPES = load_schema()


def check_event(event: dict[str, Any]) -> None:
    """``event`` (a ``{T}:out`` entry, ``_entry`` aside) has exactly the keys its table
    row promises: every listed key, ``?`` keys only with a value, nothing else."""
    kind = event.get("type")
    assert kind in SCHEMA, f"event type {kind!r} is not in docs/protocol.md: {event}"
    required, optional = SCHEMA[kind]
    keys = set(event) - {"_entry"}
    missing = required - keys
    assert not missing, f"{kind}: documented keys missing {sorted(missing)}: {event}"
    extra = keys - required - optional
    assert not extra, f"{kind}: undocumented keys {sorted(extra)}: {event}"
    if kind == "closed":  # its agent when it was assigned, else its group and wait
        assert ("agent" in keys) != ({"group", "wait_ms"} <= keys), event
    for k in keys:
        if event[k] is None:
            assert (kind, k) in NULLABLE and k in required, f"{kind}: {k} is null: {event}"
