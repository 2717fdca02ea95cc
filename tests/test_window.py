"""Rotation windows, pauses and held revocations in the pure core: the
window's rules across DST changes, cron in a timezone, due times moved into
the window, and the state machine's gates. No I/O, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import write_credential
from rotator.core import machine as m
from rotator.core import transitions
from rotator.core.schedule import Schedule, Window
from rotator.config.loader import load_directory
from rotator.core.provider import IssuedCredential
from rotator.engine.registry import load_providers
from rotator.core.state import Pause, StateRecord
from rotator.core.timetable import base_due_at, due_at

BERLIN = "Europe/Berlin"
SPRING = datetime(2026, 3, 29, tzinfo=UTC)  # Sunday: 02:00 CET -> 03:00 CEST at 01:00 UTC
AUTUMN = datetime(2026, 10, 25, tzinfo=UTC)  # Sunday: 03:00 CEST -> 02:00 CET at 01:00 UTC


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def daily(hours: str, tz: str = BERLIN) -> Window:
    return Window(hours=hours, timezone=tz)


def test_office_hours_in_berlin_open_on_monday_morning_local_time() -> None:
    """A Saturday moment waits for Monday 09:00 Berlin time (08:00 UTC in winter)."""
    window = Window(days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-17:00", timezone=BERLIN)
    saturday = utc(2026, 1, 10, 12)
    assert not window.is_open(saturday)
    assert window.next_open(saturday) == utc(2026, 1, 12, 8)
    assert window.is_open(utc(2026, 1, 12, 8)) and not window.is_open(utc(2026, 1, 12, 7, 59, 59))
    assert not window.is_open(utc(2026, 1, 12, 16))  # 17:00 local: the end is exclusive
    assert window.next_open(utc(2026, 1, 12, 10)) == utc(2026, 1, 12, 10)  # inside: at once


def test_the_same_local_hour_moves_in_utc_across_the_spring_change() -> None:
    """09:00 Berlin is 08:00 UTC on Saturday and 07:00 UTC on the Sunday of the change."""
    window = daily("09:00-17:00")
    assert window.next_open(utc(2026, 3, 27, 18)) == utc(2026, 3, 28, 8)
    assert window.next_open(utc(2026, 3, 28, 18)) == utc(2026, 3, 29, 7)


def test_a_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    """02:30-03:30 on the spring day: 02:30 never happens, so it opens at 03:00 CEST (01:00 UTC)."""
    window = daily("02:30-03:30")
    assert window.next_open(SPRING) == utc(2026, 3, 29, 1)
    assert not window.is_open(utc(2026, 3, 29, 0, 59, 59)) and window.is_open(utc(2026, 3, 29, 1))


def test_a_window_wholly_inside_the_skipped_hour_waits_for_the_next_day() -> None:
    """02:00-02:30 does not exist on the spring day: the next opening is Monday 02:00 CEST."""
    window = daily("02:00-02:30")
    assert window.next_open(SPRING) == utc(2026, 3, 30, 0)


def test_a_window_in_the_repeated_hour_opens_at_its_first_occurrence() -> None:
    """02:30 happens twice on the autumn day; the window opens at the first (00:30 UTC)."""
    window = daily("02:30-03:30")
    assert window.next_open(utc(2026, 10, 24, 23)) == utc(2026, 10, 25, 0, 30)
    # It is open whenever the local clock reads 02:30-03:30, both times round.
    assert window.is_open(utc(2026, 10, 25, 0, 45)) and window.is_open(utc(2026, 10, 25, 1, 45))
    assert not window.is_open(utc(2026, 10, 25, 1, 15))  # 02:15 CET, the second time round


def test_an_overnight_span_belongs_to_the_day_it_starts_on() -> None:
    """22:00-04:00 on Mondays covers Monday night and the small hours of Tuesday."""
    window = Window(days=["mon"], hours="22:00-04:00", timezone="UTC")
    assert window.is_open(utc(2026, 1, 12, 23)) and window.is_open(utc(2026, 1, 13, 3, 59))
    assert not window.is_open(utc(2026, 1, 13, 4)) and not window.is_open(utc(2026, 1, 12, 21))
    assert not window.is_open(utc(2026, 1, 12, 3))  # Monday small hours belong to Sunday
    assert window.next_open(utc(2026, 1, 13, 5)) == utc(2026, 1, 19, 22)


def test_cron_fires_at_the_same_local_time_on_both_sides_of_a_dst_change() -> None:
    """"0 3 * * *" in Berlin: 02:00 UTC before the spring change, 01:00 UTC after."""
    schedule = Schedule(cron="0 3 * * *", window=Window(timezone=BERLIN))
    assert base_due_at(schedule, utc(2026, 3, 27, 12)) == utc(2026, 3, 28, 2)
    assert base_due_at(schedule, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert base_due_at(schedule, utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 2)  # 03:00 CET
    assert base_due_at(Schedule(cron="0 3 * * *"), utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 3)  # no window: UTC


def test_a_due_time_outside_the_window_moves_to_its_next_opening() -> None:
    """Due on Saturday, weekdays only: due on Monday at 09:00 local."""
    schedule = Schedule(every=timedelta(days=1), window=Window(days=["mon", "tue", "wed", "thu", "fri"], hours="09:00-17:00", timezone=BERLIN))
    record = StateRecord(credential="c", provider="p", last_rotated_at=utc(2026, 3, 27, 10))
    assert due_at(schedule, record) == utc(2026, 3, 30, 7)  # Monday 09:00 CEST


@pytest.mark.parametrize(
    ("window", "field", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "schedule.window.timezone", "IANA timezone"),
        ({"hours": "9-17"}, "schedule.window.hours", "HH:MM"),
        ({"hours": "09:00-25:00"}, "schedule.window.hours", "between"),
        ({"hours": "09:00-09:00"}, "schedule.window.hours", "same"),
        ({"days": ["mon", "mon"]}, "schedule.window.days", "twice"),
        ({"days": ["monday"]}, "schedule.window.days.0", "mon"),
        ({"days": []}, "schedule.window.days", "at least 1"),
        ({"hour": "09:00-17:00"}, "schedule.window.hour", "unknown key"),
    ],
)
def test_a_bad_window_is_a_clear_error_naming_file_and_field(tmp_path: Path, window: dict, field: str, message: str) -> None:
    """validate names FILE: schedule.window.FIELD: message."""
    write_credential(tmp_path, "w", params={"user_name": "u"}, schedule={"every": "30d", "window": window})
    problems = load_directory(tmp_path, load_providers()).problems
    assert [p.field for p in problems] == [field], problems
    assert message in problems[0].message


# -- the machine's gates -----------------------------------------------------

NIGHTS = Window(hours="01:00-05:00", timezone="UTC")
POLICY = m.Policy(schedule=Schedule(every=timedelta(days=30), window=NIGHTS), grace=timedelta(hours=1), retire_delay=None, fingerprint="f")
NOON = utc(2026, 3, 2, 12)
NIGHT = utc(2026, 3, 3, 2)


def promoted(now: datetime, n: int = 1, *, record: StateRecord | None = None) -> StateRecord:
    record = record or StateRecord.new("c", "p")
    for phase in (m.Started(f"r{n}", "manual"), m.IssueBegun(),
                  m.Issued(IssuedCredential(key_id=f"K{n}", data={}, handle={})), m.Verified(1), m.Promoted(n, 0.0)):
        record = transitions.apply(record, phase, POLICY, now)
    return record


def test_scheduled_rotations_start_only_inside_the_window_and_manual_ones_at_once() -> None:
    """Outside the window nothing starts on schedule; `rotate NAME` still does."""
    new = StateRecord.new("c", "p")
    assert m.next_action(new, POLICY, NOON) is None
    assert m.next_action(new, POLICY, NOON, m.Request()) == m.StartRotation("manual")
    assert m.next_action(new, POLICY, NIGHT) == m.StartRotation("schedule")
    # Due long ago (never rotated), but the window opens only at 01:00: a
    # daemon must not wake every tick until then.
    assert m.next_wake_at(new, POLICY, NOON) == utc(2026, 3, 3, 1)
    assert m.next_wake_at(None, POLICY, NOON) == utc(2026, 3, 3, 1)
    assert m.next_wake_at(new, POLICY, NIGHT) == NIGHT
    rotated = promoted(NIGHT)
    assert m.next_wake_at(rotated.model_copy(update={"retiring": []}), POLICY) == utc(2026, 4, 2, 2)  # 30 d on, inside


def test_revocations_wait_for_the_window_unless_revoke_now() -> None:
    """A key past grace at noon is revoked at 01:00 the next night; --revoke-now at once."""
    two = promoted(NOON, 2, record=promoted(NOON - timedelta(days=1)))
    assert m.next_action(two, POLICY, NOON + timedelta(hours=2)) is None
    assert m.next_wake_at(two, POLICY) == utc(2026, 3, 3, 1)
    assert m.next_action(two, POLICY, utc(2026, 3, 3, 1)) == m.Revoke("K1")
    urgent = two.model_copy(update={"retiring": [e.model_copy(update={"immediate": True, "revoke_after": NOON}) for e in two.retiring]})
    assert m.next_action(urgent, POLICY, NOON) == m.Revoke("K1")
    assert m.next_wake_at(urgent, POLICY) == NOON


def test_a_pause_stops_scheduled_rotations_but_not_due_revocations() -> None:
    """Paused: no scheduled rotation, revocations still due, `rotate NAME` still works; `until` ends it."""
    two = promoted(NIGHT, 2, record=promoted(NIGHT - timedelta(days=1)))
    pause = Pause(reason="freeze", by="ops", at=NIGHT, until=NIGHT + timedelta(days=40))
    paused = two.model_copy(update={"paused": pause})
    later = NIGHT + timedelta(hours=2)
    assert m.next_action(paused, POLICY, later) == m.Revoke("K1")  # the revocation due still happens
    done = transitions.apply(paused, m.Revoked("K1"), POLICY, later)
    due = NIGHT + timedelta(days=30)
    assert m.next_action(done, POLICY, due) is None
    assert m.next_action(done, POLICY, due, m.Request()) == m.StartRotation("manual")
    assert m.next_wake_at(done, POLICY) == utc(2026, 4, 12, 2)  # the pause's end (inside the window)
    assert m.next_action(done, POLICY, utc(2026, 4, 12, 2)) == m.StartRotation("schedule")
    forever = done.model_copy(update={"paused": pause.model_copy(update={"until": None})})
    assert m.next_wake_at(forever, POLICY) is None
    assert m.next_action(forever, POLICY, due + timedelta(days=365)) is None


def test_a_held_revocation_waits_for_its_next_usage_check() -> None:
    """recheck_at gates the retirement and is the wake time; --revoke-now ignores it."""
    policy = m.Policy(schedule=Schedule(every=timedelta(days=30)), grace=timedelta(hours=1), retire_delay=None, fingerprint="f")
    two = promoted(NOON, 2, record=promoted(NOON - timedelta(days=1)))
    recheck = NOON + timedelta(hours=3)
    held = two.model_copy(update={"retiring": [e.model_copy(update={"held_since": NOON + timedelta(hours=1), "recheck_at": recheck})
                                                for e in two.retiring]})
    assert m.next_action(held, policy, NOON + timedelta(hours=2)) is None
    assert m.next_wake_at(held, policy) == recheck
    assert m.next_action(held, policy, recheck) == m.Revoke("K1")
    urgent = held.model_copy(update={"retiring": [e.model_copy(update={"immediate": True}) for e in held.retiring]})
    assert m.next_action(urgent, policy, NOON + timedelta(hours=2)) == m.Revoke("K1")


@pytest.mark.parametrize(("tz", "change"), [
    ("Europe/Berlin", SPRING), ("Europe/Berlin", AUTUMN),
    ("America/New_York", utc(2026, 3, 8, 7)), ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),  # a 30-minute change
])
@pytest.mark.parametrize("hours", ["02:00-03:00", "02:30-02:45", "01:45-02:15", "23:30-02:30"])
def test_next_open_is_the_first_open_minute_around_dst_changes(tz: str, change: datetime, hours: str) -> None:
    """Around each change: next_open(at) is open, not before at, and no minute between them is open."""
    window = Window(hours=hours, timezone=tz)
    for step in range(0, 48 * 60, 151):
        at = change - timedelta(hours=24) + timedelta(minutes=step)
        found = window.next_open(at)
        assert found is not None and found >= at and window.is_open(found), (at, found)
        probe = at
        while probe < found:
            assert not window.is_open(probe), f"{probe} is open, but next_open({at}) said {found}"
            probe += timedelta(minutes=1)
