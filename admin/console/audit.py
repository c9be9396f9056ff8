"""The audit log for people: stored short keys spelled out, only what changed shown."""

from __future__ import annotations

from typing import Any

from admin.views import GROUP_META, TICKET_KEYS, TIMER_KEYS

#: Stored key -> what it is (lua/configure_group.lua, lua/configure_agent.lua, ...).
LABELS: dict[str, str] = {
    "k": "K (weight of spare capacity)", "m": "M (weight of pre-closed sessions)",
    "u": "priority unit (ms)", "tiers": "overflow tiers", "sticky": "sticky routing (ms)",
    "pref": "preferred-agent wait (ms)", "win": "service hours as UTC intervals",
    "cap": "capacity", "st": "status", "load": "load", "pre": "pre-closed sessions",
    "last": "last assigned (Unix ms)", "tlim": "ticket limit", "name": "name", "team": "team",
    "slms": "service-level threshold (ms)", "slt": "service-level target",
    "rd": "record decisions", "frt": "first response target (ms)",
    "res": "resolution target (ms)", "fields": "fields",
    **{stored: api.replace("_", " ") for api, stored in TIMER_KEYS.items()},
    **{stored: f"tickets: {api.replace('_', ' ')}" for api, stored in TICKET_KEYS.items()},
    **{name: name.replace("_", " ") for name in GROUP_META},
    "service_hours": "service hours",
}
HIDDEN = {"v", "counted"}


def label(path: str) -> str:
    """``timers.qwarn`` -> ``timers: queue warning ms``."""
    parts = path.split(".")
    return ": ".join(LABELS.get(p, p) for p in parts if p not in ("timers", "meta")) or path


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and (not prefix or prefix.split(".")[-1] in ("timers", "meta")
                                    or not prefix):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "value": value}


def changes(before: Any, after: Any) -> list[dict[str, Any]]:
    """One row per stored field that changed: ``{field, before, after}`` with the field
    named for people; parts absent on one side (``false``) show as "—"."""
    rows: list[dict[str, Any]] = []
    parts_b = before if isinstance(before, list) else [before]
    parts_a = after if isinstance(after, list) else [after]
    for n in range(max(len(parts_b), len(parts_a))):
        b = parts_b[n] if n < len(parts_b) else None
        a = parts_a[n] if n < len(parts_a) else None
        fb = _flat(b) if isinstance(b, dict) else ({} if b in (None, False) else {"value": b})
        fa = _flat(a) if isinstance(a, dict) else ({} if a in (None, False) else {"value": a})
        for key in sorted({*fb, *fa}):
            if key.split(".")[-1] in HIDDEN or fb.get(key) == fa.get(key):
                continue
            rows.append({"field": label(key), "before": fb.get(key, "—"),
                         "after": fa.get(key, "—")})
    return rows
