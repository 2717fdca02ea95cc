"""Rotation windows (`schedule.window`): pure functions of a window and a
moment, so the timetable stays a pure function and tests need no clock.

A window is a set of weekdays, a span of local wall-clock hours and an IANA
timezone. A moment is inside it when its local time (in that timezone, with
the offset in force at that moment) falls within the hours on one of the
days. An overnight span (`22:00-04:00`) belongs to the day it starts on.

Invariants:
- `is_open` is the definition; `next_open` returns the earliest moment at or
  after `at` for which `is_open` holds, or None when the window never opens
  (no such moment within two weeks);
- daylight-saving changes follow the local clock: local times are read
  through zoneinfo; a window starting inside a skipped hour opens when the
  clock jumps past it, and a clock set back into the span (the repeated
  autumn hour) opens the window again at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HORIZON_DAYS = 15


@dataclass(frozen=True)
class Span:
    """Local hours: `start` inclusive, `end` exclusive, in minutes after midnight (end may be 1440)."""

    start: int
    end: int

    @property
    def is_overnight(self) -> bool:
        return self.end <= self.start


def parse_hours(text: str) -> Span:
    """`09:00-17:00` -> Span(540, 1020). `24:00` is allowed as an end."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{text!r} is not a span of hours: write HH:MM-HH:MM, e.g. 09:00-17:00")
    start_text, end_text = (p.strip() for p in text.split("-"))
    start, end = _minutes(start_text, allow_24=False), _minutes(end_text, allow_24=True)
    if start == end:
        raise ValueError(f"{text!r}: start and end are the same (use 00:00-24:00 for the whole day)")
    return Span(start, end)


def _minutes(text: str, *, allow_24: bool) -> int:
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and 1 <= len(hours) <= 2):
        raise ValueError(f"{text!r} is not a time of day: write HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 1440 or (value == 1440 and not allow_24):
        raise ValueError(f"{text!r} is not a time of day between 00:00 and {'24:00' if allow_24 else '23:59'}")
    return value


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; ValueError when it is not one."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{name!r} is not an IANA timezone name such as Europe/Berlin or UTC") from exc


def is_open(days: frozenset[int], span: Span, tz: ZoneInfo, at: datetime) -> bool:
    """Whether `at` lies inside the window (days: 0 = Monday)."""
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    if not span.is_overnight:
        return weekday in days and span.start <= minute < span.end
    if minute >= span.start:
        return weekday in days
    return minute < span.end and (weekday - 1) % 7 in days


def next_open(days: frozenset[int], span: Span, tz: ZoneInfo, at: datetime) -> datetime | None:
    """The earliest moment at or after `at` inside the window, or None.

    A closed window opens either when the local clock reaches a start time
    on one of its days, or when the clock is set back (autumn) into the
    span; both kinds of moment are candidates."""
    if is_open(days, span, tz, at):
        return at
    first_day = at.astimezone(tz).date()
    start: datetime | None = None
    for offset in range(-1, _HORIZON_DAYS):
        day = first_day + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        start = next((m for m in _start_moments(day, span.start, tz) if m >= at and is_open(days, span, tz, m)), None)
        if start is not None:
            break
    horizon = start or at + timedelta(days=_HORIZON_DAYS)
    for change in _clock_changes(tz, at, horizon):
        if is_open(days, span, tz, change):
            return change
    return start


def _clock_changes(tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The moments in (start, end] at which the zone's UTC offset changes."""
    out: list[datetime] = []
    step = timedelta(hours=6)
    low = start
    while low < end:
        high = min(low + step, end)
        if low.astimezone(tz).utcoffset() != high.astimezone(tz).utcoffset():
            lo, hi = int(low.timestamp()), int(high.timestamp())
            before = low.astimezone(tz).utcoffset()
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            out.append(datetime.fromtimestamp(hi, UTC))
        low = high
    return out


def _start_moments(day: date, minute: int, tz: ZoneInfo) -> list[datetime]:
    """The real moments at which local `day` reaches wall time `minute`: one,
    or two when the clock is set back over it (autumn)."""
    first = _first_moment_at(day, minute, tz)
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return [first, second] if second > first and _wall(second, tz) == wall else [first]


def _first_moment_at(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The first real moment whose local wall time on `day` is `minute` or
    later: the wall time itself, its first occurrence when it is repeated
    (autumn), or the end of the gap when it is skipped (spring)."""
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    if _wall(low, tz) == wall:
        return low
    # A gap: the local clock jumps from before `wall` to after it between
    # `low` and `high`; find the jump to the second.
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), tz) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)
