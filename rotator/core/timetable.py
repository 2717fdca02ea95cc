"""When is a credential due? A pure function of its schedule, its state
record and the current time, so tests fast-forward an injected clock.

Due times come from the record in Vault (`last_rotated_at` and the jitter
drawn at that rotation), never from process memory: a restart neither skips
nor repeats a rotation, and a daemon that was down for a week rotates once,
not once per missed period.

`cron` is read in the window's timezone (UTC without a window), so
"0 3 * * *" in Europe/Berlin fires at 03:00 local on both sides of a DST
change. With a window, a due time outside it moves to the window's next
opening (`rotator.core.window`).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from rotator.core import window as windows
from rotator.core.schedule import Schedule
from rotator.core.state import StateRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def base_due_at(schedule: Schedule, last_rotated_at: datetime) -> datetime:
    """The next scheduled time after a rotation, before jitter."""
    if schedule.every is not None:
        return last_rotated_at + schedule.every
    from croniter import croniter  # loaded only when a credential has a cron schedule

    local = last_rotated_at.astimezone(windows.zone(schedule.timezone))
    return croniter(schedule.cron, local).get_next(datetime).astimezone(UTC)


def due_at(schedule: Schedule, record: StateRecord | None) -> datetime:
    """When the next rotation is due (inside the window). A credential never
    rotated is due at once."""
    return in_window(schedule, scheduled_at(schedule, record))


def scheduled_at(schedule: Schedule, record: StateRecord | None) -> datetime:
    """When the schedule alone makes the next rotation due, before the window."""
    if record is None or record.last_rotated_at is None:
        return EPOCH
    # The jitter was drawn when the last rotation completed; a shorter
    # jitter in a changed file still bounds it.
    jitter = min(record.jitter_seconds, schedule.jitter.total_seconds())
    return base_due_at(schedule, record.last_rotated_at) + timedelta(seconds=jitter)


def in_window(schedule: Schedule, moment: datetime) -> datetime:
    """`moment`, or the window's next opening after it (no window: `moment`)."""
    if schedule.window is None or moment <= EPOCH:
        return moment
    return schedule.window.next_open(moment) or moment


def draw_jitter(schedule: Schedule, rng: random.Random | None = None) -> float:
    """A random delay in [0, jitter], drawn once per completed rotation."""
    limit = schedule.jitter.total_seconds()
    if limit <= 0:
        return 0.0
    return (rng or random).uniform(0.0, limit)
