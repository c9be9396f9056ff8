"""Service hours: weekly shifts in an IANA time zone, plus closed dates.

Shifts are local wall-clock times, so they follow daylight saving time: a 09:00 start is
09:00 local before and after the clocks change. A shift whose end is not after its start
(22:00-06:00) runs past midnight into the next day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class ShiftLike(Protocol):
    days: Sequence[str]
    start: str
    end: str


class HoursLike(Protocol):
    time_zone: str
    weekly: Sequence[ShiftLike]
    closed_dates: Sequence[str]


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def _clock(text: str) -> time | None:
    """``HH:MM`` as a time; "24:00" is None (the end of the day)."""
    if text == "24:00":
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _in_shift(shift: ShiftLike, day: str, prev_day: str, t: time) -> bool:
    start, end = _clock(shift.start), _clock(shift.end)
    assert start is not None or shift.start == "24:00"
    if start is None:
        return False
    if end is None or end > start:
        return day in shift.days and start <= t and (end is None or t < end)
    # overnight: from start on one of its days until end on the next day
    return (day in shift.days and t >= start) or (prev_day in shift.days and t < end)


def in_service(hours: HoursLike | None, now_ms: int) -> bool:
    """Whether ``now_ms`` falls within ``hours`` (always true without service hours)."""
    if hours is None:
        return True
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone(hours.time_zone))
    if local.date().isoformat() in hours.closed_dates:
        return False
    day = DAYS[local.weekday()]
    prev_day = DAYS[(local.weekday() - 1) % 7]
    t = local.time().replace(tzinfo=None)
    return any(_in_shift(s, day, prev_day, t) for s in hours.weekly)


def next_opening(hours: HoursLike | None, now_ms: int, horizon_days: int = 14) -> int | None:
    """The first ms at or after ``now_ms`` within ``hours`` (None when nothing opens within
    ``horizon_days``): the start of the first of the :func:`windows` from ``now_ms``."""
    if hours is None:
        return now_ms
    spans = windows(hours, now_ms, now_ms + horizon_days * _DAY_MS)
    return spans[0][0] if spans else None


def _utc(ms: int) -> datetime:
    """``ms`` as an aware UTC datetime, exactly (no float on the way)."""
    return _EPOCH + ms * _MS


def _ms(at: datetime) -> int:
    """The aware datetime ``at`` as epoch ms; its ``fold`` picks between repeated wall times."""
    return (at - _EPOCH) // _MS


def _offset_changes(tz: ZoneInfo, start_ms: int, end_ms: int) -> list[int]:
    """Every instant in (start_ms, end_ms] at which ``tz``'s UTC offset changes: the first
    ms with the new offset.

    zoneinfo does not expose its transitions, so the offset is sampled hourly and each
    change bisected to the ms. That finds them all because no zone has changed its offset
    twice within an hour (since 1970 the closest changes in tzdata are a week apart).
    """

    def offset(ms: int) -> timedelta | None:
        return _utc(ms).astimezone(tz).utcoffset()

    changes: list[int] = []
    lo, before = start_ms, offset(start_ms)
    while lo < end_ms:
        hi = min(lo + _HOUR_MS, end_ms)
        after = offset(hi)
        if after != before:
            old, new = lo, hi  # offset(old) == before != offset(new)
            while new - old > 1:
                mid = (old + new) // 2
                if offset(mid) == before:
                    old = mid
                else:
                    new = mid
            changes.append(new)
        lo, before = hi, after
    return changes


def windows(hours: HoursLike, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent half-open UTC ms intervals [a, b) covering exactly the
    instants in [start_ms, end_ms) at which :func:`in_service` is true (clipped to that range).

    in_service depends only on the local wall-clock date and time, and changes value only
    where that wall time crosses a midnight (closed dates, the next day of an overnight
    shift, "24:00" ends) or a shift's start or end. Local time moves with UTC except at
    offset changes, where it jumps. So in_service is constant between consecutive
    candidates: each such wall time on each local date in range, converted with fold=0 and
    fold=1 (a wall time repeated by a fall-back has two instants; one skipped by a
    spring-forward gap has none and converts to somewhere harmless), plus every offset
    change (where a gap jumps over a shift boundary, the change is where service starts or
    stops). Evaluating in_service itself at each candidate keeps the result in step with it
    instead of re-deriving its rules.
    """
    if start_ms >= end_ms:
        return []
    tz = zone(hours.time_zone)
    clocks = {time(0)}  # midnight: the day changes, and "24:00" ends there
    for shift in hours.weekly:
        clocks.update(c for c in (_clock(shift.start), _clock(shift.end)) if c is not None)
    # clocks never go back a whole day, so every local date in range lies within these
    day = timedelta(days=1)
    date = _utc(start_ms).astimezone(tz).date() - day
    last = _utc(end_ms).astimezone(tz).date() + day
    candidates = set(_offset_changes(tz, start_ms, end_ms))
    while date <= last:
        for clock in clocks:
            for fold in (0, 1):
                candidates.add(_ms(datetime.combine(date, clock.replace(fold=fold), tz)))
        date += day
    cuts = [start_ms, *sorted(c for c in candidates if start_ms < c < end_ms)]
    intervals: list[tuple[int, int]] = []
    opened: int | None = None
    for cut in cuts:
        if in_service(hours, cut):
            if opened is None:
                opened = cut
        elif opened is not None:
            intervals.append((opened, cut))
            opened = None
    if opened is not None:
        intervals.append((opened, end_ms))
    return intervals


def service_windows(
    hours: HoursLike | None, now_ms: int, horizon_days: int = 21
) -> dict[str, Any] | None:
    """When ``hours`` are in service from a day before ``now_ms`` until ``now_ms`` +
    ``horizon_days``, as ``{"hz": end of that span, "iv": [a1, b1, a2, b2, ...]}`` (the
    :func:`windows`, flattened); None without service hours (always in service).

    Exact UTC intervals let code without IANA zone data (a Lua script) decide in_service
    for any instant in that span: inside an interval, or not.
    """
    if hours is None:
        return None
    horizon = now_ms + horizon_days * _DAY_MS
    spans = windows(hours, now_ms - _DAY_MS, horizon)
    return {"hz": horizon, "iv": [edge for span in spans for edge in span]}
