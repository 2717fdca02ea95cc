"""When is a credential due? A pure function of its schedule, its state
record and the current time, so tests fast-forward an injected clock.

Due times come from the record in Vault (`last_rotated_at` and the jitter
drawn at that rotation), never from process memory: a restart neither skips
nor repeats a rotation, and a daemon that was down for a week rotates once,
not once per missed period.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from croniter import croniter

from rotator.config import Schedule
from rotator.state import StateRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def base_due_at(schedule: Schedule, last_rotated_at: datetime) -> datetime:
    """The next scheduled time after a rotation, before jitter."""
    if schedule.every is not None:
        return last_rotated_at + schedule.every
    return croniter(schedule.cron, last_rotated_at.astimezone(UTC)).get_next(datetime)


def due_at(schedule: Schedule, record: StateRecord | None) -> datetime:
    """When the next rotation is due. A credential never rotated is due at once."""
    if record is None or record.last_rotated_at is None:
        return EPOCH
    # The jitter was drawn when the last rotation completed; a shorter
    # jitter in a changed file still bounds it.
    jitter = min(record.jitter_seconds, schedule.jitter.total_seconds())
    return base_due_at(schedule, record.last_rotated_at) + timedelta(seconds=jitter)


def draw_jitter(schedule: Schedule, rng: random.Random | None = None) -> float:
    """A random delay in [0, jitter], drawn once per completed rotation."""
    limit = schedule.jitter.total_seconds()
    if limit <= 0:
        return 0.0
    return (rng or random).uniform(0.0, limit)

