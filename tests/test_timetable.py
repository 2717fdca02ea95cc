"""Due times: a pure function of the schedule, the record and the time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from rotator.core.schedule import Schedule
from rotator.core.state import StateRecord
from rotator.core.timetable import EPOCH, base_due_at, draw_jitter, due_at

T0 = datetime(2026, 3, 2, 10, 17, tzinfo=UTC)  # a Monday


def rotated_at(moment: datetime, jitter: float = 0.0) -> StateRecord:
    return StateRecord(credential="c", provider="p", last_rotated_at=moment, jitter_seconds=jitter)


def test_never_rotated_is_due_at_once() -> None:
    """No record, or no rotation yet: due immediately."""
    assert due_at(Schedule(every=timedelta(days=1)), None) == EPOCH
    assert due_at(Schedule(every=timedelta(days=1)), StateRecord(credential="c", provider="p")) == EPOCH


def test_interval_counts_from_the_last_rotation() -> None:
    """every: the last rotation plus the interval."""
    assert due_at(Schedule(every=timedelta(days=30)), rotated_at(T0)) == T0 + timedelta(days=30)


def test_cron_is_the_next_fire_time_after_the_last_rotation_in_utc() -> None:
    """cron: the next matching minute, UTC, after the last rotation."""
    weekly = Schedule(cron="0 3 * * MON")
    assert base_due_at(weekly, T0) == datetime(2026, 3, 9, 3, 0, tzinfo=UTC)
    assert base_due_at(Schedule(cron="*/15 * * * *"), T0) == datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
    # A rotation exactly on a fire time is not due again at that same time.
    assert base_due_at(weekly, datetime(2026, 3, 9, 3, 0, tzinfo=UTC)) == datetime(2026, 3, 16, 3, 0, tzinfo=UTC)


def test_jitter_is_drawn_once_and_kept_in_the_record() -> None:
    """The drawn delay is part of the record, so every replica computes the same due time."""
    schedule = Schedule(every=timedelta(days=1), jitter=timedelta(hours=1))
    draws = [draw_jitter(schedule, random.Random(seed)) for seed in range(200)]
    assert all(0 <= d <= 3600 for d in draws) and len(set(draws)) > 100
    assert due_at(schedule, rotated_at(T0, jitter=1234.5)) == T0 + timedelta(days=1, seconds=1234.5)
    assert draw_jitter(Schedule(every=timedelta(days=1))) == 0.0


def test_a_smaller_jitter_in_a_changed_file_bounds_the_stored_one() -> None:
    """Shrinking jitter in the file takes effect for the next due time."""
    record = rotated_at(T0, jitter=3000)
    assert due_at(Schedule(every=timedelta(days=1), jitter=timedelta(minutes=10)), record) == T0 + timedelta(days=1, minutes=10)


def test_cron_with_jitter() -> None:
    """Jitter adds to cron fire times as it does to intervals."""
    schedule = Schedule(cron="0 3 * * *", jitter=timedelta(minutes=30))
    assert due_at(schedule, rotated_at(T0, jitter=600)) == datetime(2026, 3, 3, 3, 10, tzinfo=UTC)


def test_gaps_of_a_cron_schedule() -> None:
    """Validation uses the shortest and longest gap between fire times."""
    shortest, longest = Schedule(cron="0 3 * * MON,THU").gaps()
    assert shortest == timedelta(days=3) and longest == timedelta(days=4)
