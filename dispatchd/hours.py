"""Service hours: weekly shifts in an IANA time zone, plus closed dates.

Shifts are local wall-clock times, so they follow daylight saving time: a 09:00 start is
09:00 local before and after the clocks change. A shift whose end is not after its start
(22:00-06:00) runs past midnight into the next day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    """The first ms at or after ``now_ms`` within ``hours``, found minute by minute over
    shift starts (None when nothing opens within ``horizon_days``)."""
    if in_service(hours, now_ms):
        return now_ms
    assert hours is not None
    tz = zone(hours.time_zone)
    local = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz)
    candidates: list[int] = []
    for offset in range(horizon_days + 1):
        date = (local + timedelta(days=offset)).date()
        for shift in hours.weekly:
            start = _clock(shift.start)
            if start is None:
                continue
            at = datetime.combine(date, start, tz)
            # a start inside a DST gap does not exist locally: fold it forward
            ms = int(at.astimezone(UTC).timestamp() * 1000)
            if ms >= now_ms and in_service(hours, ms):
                candidates.append(ms)
        if candidates:
            return min(candidates)
    return None
