"""``hours.windows`` and ``hours.service_windows`` agree with ``hours.in_service``.

Concrete cases pin the intervals around DST changes (a wall time skipped by a
spring-forward gap, one repeated by a fall-back fold), overnight shifts, "24:00" ends and
closed dates. Property tests then compare the intervals with in_service itself: at random
instants and next to every interval edge, and, over shorter spans, at every UTC minute
(exhaustive there, since in these zones in_service can only change on a minute).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, note
from hypothesis import strategies as st

from dispatchd.hours import (
    DAYS,
    HoursLike,
    ShiftLike,
    in_service,
    next_opening,
    service_windows,
    windows,
    zone,
)

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
EVERY_DAY = DAYS
NY = "America/New_York"
ZONES = (
    NY,
    "Europe/London",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # DST of 30 minutes, at 02:00 local
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30 / -02:30
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Auckland",
    "America/Santiago",  # changes at local midnight (24:00 -> 23:00, 24:00 -> 01:00)
    "Africa/Casablanca",  # leaves DST for Ramadan
    "Antarctica/Troll",  # DST of two hours
    "UTC",
)
SPAN_START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_END = datetime(2028, 1, 1, tzinfo=UTC)


@dataclass
class Shift:
    days: Sequence[str]
    start: str
    end: str


@dataclass
class Hours:
    time_zone: str
    weekly: Sequence[ShiftLike] = ()
    closed_dates: Sequence[str] = field(default_factory=tuple)


def ms(text: str) -> int:
    """An ISO UTC instant ("2026-03-08T07:00Z") as epoch ms."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def inside(intervals: list[tuple[int, int]], t: int) -> bool:
    """Whether ``t`` lies in one of the sorted half-open ``intervals``."""
    i = bisect.bisect_right(intervals, (t, float("inf"))) - 1
    return i >= 0 and intervals[i][0] <= t < intervals[i][1]


def check_shape(intervals: list[tuple[int, int]], start_ms: int, end_ms: int) -> None:
    """Sorted, non-empty, disjoint and non-adjacent intervals within [start_ms, end_ms)."""
    edges = [edge for interval in intervals for edge in interval]
    assert all(a < b for a, b in itertools.pairwise(edges)), intervals
    assert not intervals or (start_ms <= edges[0] and edges[-1] <= end_ms), intervals


def check_edges(hours: HoursLike, intervals: list[tuple[int, int]], start: int, end: int) -> None:
    """in_service agrees with ``intervals`` at each edge and a ms either side of it."""
    for edge in [start, end, *(e for interval in intervals for e in interval)]:
        for t in (edge - 1, edge, edge + 1):
            if start <= t < end:
                assert inside(intervals, t) == in_service(hours, t), (t, intervals)


def agreed(hours: HoursLike, start: str, end: str) -> list[tuple[int, int]]:
    """The windows of ``hours`` between two ISO instants, checked against in_service."""
    start_ms, end_ms = ms(start), ms(end)
    intervals = windows(hours, start_ms, end_ms)
    check_shape(intervals, start_ms, end_ms)
    check_edges(hours, intervals, start_ms, end_ms)
    return intervals


def spans(*pairs: tuple[str, str]) -> list[tuple[int, int]]:
    return [(ms(a), ms(b)) for a, b in pairs]


# ----------------------------------------------------------------------- concrete cases


def test_day_shift_across_spring_forward() -> None:
    hours = Hours(NY, [Shift(EVERY_DAY, "09:00", "17:00")])
    assert agreed(hours, "2026-03-07T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-07T14:00Z", "2026-03-07T22:00Z"),  # EST
        ("2026-03-08T13:00Z", "2026-03-08T21:00Z"),  # EDT from 2026-03-08T07:00Z
        ("2026-03-09T13:00Z", "2026-03-09T21:00Z"),
    )


def test_day_shift_across_fall_back() -> None:
    hours = Hours(NY, [Shift(EVERY_DAY, "09:00", "17:00")])
    assert agreed(hours, "2026-10-31T00:00Z", "2026-11-03T00:00Z") == spans(
        ("2026-10-31T13:00Z", "2026-10-31T21:00Z"),  # EDT
        ("2026-11-01T14:00Z", "2026-11-01T22:00Z"),  # EST from 2026-11-01T06:00Z
        ("2026-11-02T14:00Z", "2026-11-02T22:00Z"),
    )


def test_shift_ending_inside_the_spring_forward_gap() -> None:
    # local 01:59:59.999 EST is followed by 03:00 EDT, which is not before 03:00
    hours = Hours(NY, [Shift(["sun"], "01:30", "03:00")])
    assert agreed(hours, "2026-03-07T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-08T06:30Z", "2026-03-08T07:00Z")
    )


def test_shift_starting_inside_the_spring_forward_gap_starts_at_the_change() -> None:
    # 02:30 never happens on 2026-03-08; 03:00 EDT, right after the jump, is after it
    hours = Hours(NY, [Shift(["sun"], "02:30", "04:00")])
    assert agreed(hours, "2026-03-07T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-08T07:00Z", "2026-03-08T08:00Z")
    )
    within_gap = Hours(NY, [Shift(["sun"], "02:00", "02:30")])
    assert agreed(within_gap, "2026-03-07T00:00Z", "2026-03-10T00:00Z") == []


def test_shift_across_the_fall_back_fold_is_in_service_twice() -> None:
    # 01:30-02:00 EDT, then the clock is back at 01:00 (EST), and 01:30-03:00 EST
    hours = Hours(NY, [Shift(["sun"], "01:30", "03:00")])
    assert agreed(hours, "2026-10-31T00:00Z", "2026-11-03T00:00Z") == spans(
        ("2026-11-01T05:30Z", "2026-11-01T06:00Z"),
        ("2026-11-01T06:30Z", "2026-11-01T08:00Z"),
    )


def test_next_opening_is_the_first_window_start() -> None:
    gap = Hours(NY, [Shift(["sun"], "02:30", "04:00")])  # opens at the jump, 03:00 EDT
    assert next_opening(gap, ms("2026-03-07T00:00Z")) == ms("2026-03-08T07:00Z")
    # closed on Friday: the overnight shift from Friday opens at Saturday's midnight
    friday = Hours(NY, [Shift(["fri"], "22:00", "06:00")], ["2026-03-06"])
    assert next_opening(friday, ms("2026-03-06T12:00Z")) == ms("2026-03-07T05:00Z")
    # between the two 01:30s of the fall-back night: the second one
    fold = Hours(NY, [Shift(["sun"], "01:30", "03:00")])
    assert next_opening(fold, ms("2026-11-01T06:10Z")) == ms("2026-11-01T06:30Z")
    assert next_opening(fold, ms("2026-11-01T07:00Z")) == ms("2026-11-01T07:00Z")  # open now
    assert next_opening(Hours(NY), ms("2026-11-01T07:00Z")) is None
    assert next_opening(None, 5) == 5


def test_overnight_shift_across_spring_forward() -> None:
    hours = Hours(NY, [Shift(EVERY_DAY, "22:00", "06:00")])
    assert agreed(hours, "2026-03-07T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-07T03:00Z", "2026-03-07T11:00Z"),
        ("2026-03-08T03:00Z", "2026-03-08T10:00Z"),  # 22:00 EST to 06:00 EDT: 7 hours
        ("2026-03-09T02:00Z", "2026-03-09T10:00Z"),
    )


def test_overnight_shift_across_fall_back() -> None:
    hours = Hours(NY, [Shift(EVERY_DAY, "22:00", "06:00")])
    assert agreed(hours, "2026-10-31T00:00Z", "2026-11-03T00:00Z") == spans(
        ("2026-10-31T02:00Z", "2026-10-31T10:00Z"),
        ("2026-11-01T02:00Z", "2026-11-01T11:00Z"),  # 22:00 EDT to 06:00 EST: 9 hours
        ("2026-11-02T03:00Z", "2026-11-02T11:00Z"),
    )


def test_london_spring_forward_and_fall_back() -> None:
    london = "Europe/London"  # 2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 -> 01:00
    early = Hours(london, [Shift(["sun"], "00:30", "01:30")])
    assert agreed(early, "2026-03-28T00:00Z", "2026-03-30T00:00Z") == spans(
        ("2026-03-29T00:30Z", "2026-03-29T01:00Z")
    )
    skipped = Hours(london, [Shift(["sun"], "01:00", "02:00")])
    assert agreed(skipped, "2026-03-28T00:00Z", "2026-03-30T00:00Z") == []
    # 01:00-02:00 BST and then 01:00-02:00 GMT: one unbroken interval of two hours
    assert agreed(skipped, "2026-10-24T00:00Z", "2026-10-26T00:00Z") == spans(
        ("2026-10-25T00:00Z", "2026-10-25T02:00Z")
    )


def test_lord_howe_half_hour_dst_and_kathmandu() -> None:
    # 2026-10-04 02:00 +10:30 -> 02:30 +11:00 (at 2026-10-03T15:30Z)
    hours = Hours("Australia/Lord_Howe", [Shift(["sun"], "02:15", "03:00")])
    assert agreed(hours, "2026-10-02T00:00Z", "2026-10-05T00:00Z") == spans(
        ("2026-10-03T15:30Z", "2026-10-03T16:00Z")
    )
    # 2026-04-05 02:00 +11:00 -> 01:30 +10:30 (at 2026-04-04T15:00Z): 01:30-02:00 twice
    assert agreed(hours, "2026-04-03T00:00Z", "2026-04-06T00:00Z") == spans(
        ("2026-04-04T15:45Z", "2026-04-04T16:30Z")
    )
    kathmandu = Hours("Asia/Kathmandu", [Shift(["mon"], "09:00", "17:00")])
    assert agreed(kathmandu, "2026-05-31T00:00Z", "2026-06-03T00:00Z") == spans(
        ("2026-06-01T03:15Z", "2026-06-01T11:15Z")
    )


def test_closed_date_cuts_an_overnight_shift_at_its_midnight() -> None:
    shift = Shift(["fri"], "22:00", "06:00")  # Friday 2026-06-05 22:00 EDT = 06-06T02:00Z
    closed_saturday = Hours(NY, [shift], ["2026-06-06"])
    assert agreed(closed_saturday, "2026-06-05T00:00Z", "2026-06-08T00:00Z") == spans(
        ("2026-06-06T02:00Z", "2026-06-06T04:00Z")
    )
    closed_friday = Hours(NY, [shift], ["2026-06-05"])
    assert agreed(closed_friday, "2026-06-05T00:00Z", "2026-06-08T00:00Z") == spans(
        ("2026-06-06T04:00Z", "2026-06-06T10:00Z")
    )


def test_24_00_end() -> None:
    evening = Shift(["sun"], "20:00", "24:00")  # Sunday 2026-03-08, EDT
    assert agreed(Hours(NY, [evening]), "2026-03-08T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-09T00:00Z", "2026-03-09T04:00Z")
    )
    hours = Hours(NY, [evening, Shift(["mon"], "00:00", "01:00")])
    assert agreed(hours, "2026-03-08T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-09T00:00Z", "2026-03-09T05:00Z")  # merged across midnight
    )
    closed_monday = Hours(NY, hours.weekly, ["2026-03-09"])
    assert agreed(closed_monday, "2026-03-08T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-09T00:00Z", "2026-03-09T04:00Z")
    )
    whole_days = Hours(NY, [Shift(["sat", "sun"], "00:00", "24:00")])
    assert agreed(whole_days, "2026-03-06T00:00Z", "2026-03-10T00:00Z") == spans(
        ("2026-03-07T05:00Z", "2026-03-09T04:00Z")  # 47 hours: one was skipped
    )


def test_nothing_in_service() -> None:
    assert agreed(Hours(NY), "2026-03-01T00:00Z", "2026-03-23T00:00Z") == []
    starts_at_24 = Hours(NY, [Shift(EVERY_DAY, "24:00", "06:00")])
    assert agreed(starts_at_24, "2026-03-01T00:00Z", "2026-03-23T00:00Z") == []
    all_closed = Hours("UTC", [Shift(EVERY_DAY, "00:00", "24:00")], ["2026-03-01"])
    assert agreed(all_closed, "2026-03-01T00:00Z", "2026-03-02T00:00Z") == []
    assert windows(Hours("UTC", [Shift(EVERY_DAY, "00:00", "24:00")]), 5, 5) == []


def test_always_in_service_is_the_whole_range() -> None:
    hours = Hours(NY, [Shift(EVERY_DAY, "00:00", "24:00")])
    assert windows(hours, 1, 22 * DAY + 7) == [(1, 22 * DAY + 7)]


def test_service_windows() -> None:
    assert service_windows(None, ms("2026-03-01T00:00Z")) is None
    hours = Hours(NY, [Shift(["mon", "fri"], "09:00", "17:00"), Shift(["fri"], "22:00", "06:00")])
    now = ms("2026-03-01T10:00Z") + 123  # Sunday 05:00 EST; a day before, Saturday 05:00
    answer = service_windows(hours, now)
    assert answer is not None and set(answer) == {"hz", "iv"}
    assert answer["hz"] == now + 21 * DAY
    iv = answer["iv"]
    assert all(type(edge) is int for edge in iv)
    assert iv == [e for pair in windows(hours, now - DAY, now + 21 * DAY) for e in pair]
    saturday_morning = [now - DAY, ms("2026-02-28T11:00Z")]  # Friday night's end
    assert iv[:4] == [*saturday_morning, ms("2026-03-02T14:00Z"), ms("2026-03-02T22:00Z")]
    assert len(iv) == 2 * (1 + 3 * 3)  # then 3 weeks of Monday, Friday and Friday night
    short = service_windows(hours, now, horizon_days=1)
    assert short == {"hz": now + DAY, "iv": saturday_morning}


# ----------------------------------------------------------------------- properties


def clock(minutes: int) -> str:
    """Minutes after midnight as "HH:MM" (1440 is "24:00")."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def clocks(around: int | None) -> st.SearchStrategy[str]:
    """Shift times on the 15-minute or the 1-minute grid; given the local minute ``around``
    of a clock change, often within three hours of it, so in its gap or fold."""
    anywhere = st.one_of(
        st.integers(0, 96).map(lambda quarter: clock(15 * quarter)),  # 96 quarters: "24:00"
        st.integers(0, 24 * 60).map(clock),
    )
    if around is None:
        return anywhere
    quarter = around - around % 15
    return st.one_of(
        anywhere,
        st.integers(-12, 4).map(lambda q: clock((quarter + 15 * q) % 1440)),
        st.integers(-180, 60).map(lambda m: clock((around + m) % 1440)),
    )


def to_ms(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@functools.cache
def offset_changes(name: str) -> tuple[int, ...]:
    """For each change of the UTC offset of ``name`` in 2025-2027, the first whole UTC hour
    after it: plain hourly sampling, independent of dispatchd.hours."""
    tz = zone(name)
    hour = timedelta(hours=1)
    at, before, found = SPAN_START, SPAN_START.astimezone(tz).utcoffset(), []
    while at < SPAN_END:
        at += hour
        after = at.astimezone(tz).utcoffset()
        if after != before:
            found.append(to_ms(at))
        before = after
    return tuple(found)


@st.composite
def scenarios(draw: st.DrawFn, max_days: int) -> tuple[Hours, int, int]:
    """Service hours and a range [start, end) of up to ``max_days``.

    Mostly the range starts within a day before a clock change and goes on past it, and
    the shifts tend to start or end near the local time of the change and to include its
    weekday: a gap or a fold handled wrongly shows only there. Closed dates are local
    dates in or next to the range.
    """
    name = draw(st.sampled_from(ZONES))
    tz = zone(name)
    around: int | None = None
    weekday: set[str] = set()
    longest = max_days * DAY
    if offset_changes(name) and draw(st.integers(0, 3)):
        change = draw(st.sampled_from(offset_changes(name)))
        before = draw(st.integers(HOUR, DAY + HOUR))  # the change is in the hour before
        start = change - before
        length = draw(st.one_of(st.just(longest), st.integers(before + 1, longest)))
        local = datetime.fromtimestamp(change / 1000, UTC).astimezone(tz)
        around = local.hour * 60 + local.minute
        weekday = {DAYS[local.weekday()]}
    else:
        start = draw(st.integers(to_ms(SPAN_START), to_ms(SPAN_END)))
        length = draw(st.one_of(st.just(longest), st.integers(1, longest)))
    weekly = []
    for _ in range(draw(st.integers(1, 3))):
        days = set(draw(st.lists(st.sampled_from(DAYS), max_size=7)))
        if draw(st.booleans()):
            days |= weekday
        start_clock, end_clock = draw(clocks(around)), draw(clocks(around))
        weekly.append(Shift(sorted(days, key=DAYS.index), start_clock, end_clock))
    first = datetime.fromtimestamp(start / 1000, UTC).astimezone(tz).date()
    closed = [
        (first + timedelta(days=d)).isoformat()
        for d in draw(st.lists(st.integers(-1, max_days + 1), max_size=2))
    ]
    return Hours(name, weekly, closed), start, start + length


@given(scenarios(max_days=22), st.data())
def test_windows_agree_with_in_service(
    scenario: tuple[Hours, int, int], data: st.DataObject
) -> None:
    hours, start, end = scenario
    intervals = windows(hours, start, end)
    note(f"windows: {intervals}")
    check_shape(intervals, start, end)
    check_edges(hours, intervals, start, end)
    for t in data.draw(st.lists(st.integers(start, end - 1), min_size=1, max_size=100)):
        assert inside(intervals, t) == in_service(hours, t), t


@given(scenarios(max_days=3))
def test_windows_agree_with_in_service_at_every_minute(scenario: tuple[Hours, int, int]) -> None:
    """In these zones offsets are whole quarter hours and change on a whole minute, and
    shifts start and end on a minute, so in_service is constant within each UTC minute:
    comparing one instant of every minute (and requiring the edges on minutes) compares
    every ms of the range."""
    hours, start, end = scenario
    intervals = windows(hours, start, end)
    note(f"windows: {intervals}")
    check_shape(intervals, start, end)
    assert all(edge % MINUTE == 0 for iv in intervals for edge in iv if edge not in (start, end))
    minute = start - start % MINUTE
    while minute < end:
        t = max(minute, start)
        assert inside(intervals, t) == in_service(hours, t), t
        minute += MINUTE
