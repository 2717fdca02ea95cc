"""A credential's schedule (every, cron, window, jitter) and revocation policy: plain validated values the
state machine and the timetable read. Files are read in rotator.config.loader.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from rotator.core import window as windows
from rotator.core.validators import Duration, format_duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Window(_Strict):
    """When rotations and revocations may start (rotator.core.window has the rules)."""

    days: list[Day] = Field(default_factory=lambda: list(windows.DAYS), min_length=1, description="weekdays, e.g. [mon, tue, wed]")
    hours: str = Field(default="00:00-24:00", description='local hours, e.g. "09:00-17:00" (an overnight span such as "22:00-04:00" belongs to its first day)')
    timezone: str = Field(default="UTC", description="IANA timezone of days and hours (and of cron), e.g. Europe/Berlin")

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        windows.parse_hours(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        windows.zone(value)
        return value

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a day twice")
        return value

    def is_open(self, at: datetime) -> bool:
        return windows.is_open(self._days(), windows.parse_hours(self.hours), windows.zone(self.timezone), at)

    def next_open(self, at: datetime) -> datetime | None:
        """The earliest moment at or after `at` inside the window (None: never)."""
        return windows.next_open(self._days(), windows.parse_hours(self.hours), windows.zone(self.timezone), at)

    def _days(self) -> frozenset[int]:
        return frozenset(windows.DAYS.index(d) for d in self.days)

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.hours} {self.timezone}"


class Schedule(_Strict):
    """When to rotate: exactly one of `every` or `cron` (5 fields, in the
    window's timezone, UTC without one), optionally within a window."""

    every: Duration | None = Field(default=None, description="rotation interval, e.g. 30d")
    cron: str | None = Field(default=None, description='5-field cron expression in UTC, e.g. "0 3 * * MON"')
    jitter: Duration = Field(default=timedelta(0), description="random delay added to each due time")
    window: Window | None = Field(default=None, description="rotations and revocations start only inside this window")

    @property
    def timezone(self) -> str:
        return self.window.timezone if self.window is not None else "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from croniter import croniter  # loaded only for files that name a cron schedule

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError("is not a 5-field cron expression (minute hour day-of-month month day-of-week)")
        return value

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every or cron")
        return self

    def gaps(self) -> tuple[timedelta, timedelta]:
        """(shortest, longest) time between two rotations."""
        if self.every is not None:
            return self.every, self.every
        from croniter import croniter

        itr = croniter(self.cron, datetime(2026, 1, 1, tzinfo=UTC).astimezone(windows.zone(self.timezone)))
        times = [itr.get_next(datetime) for _ in range(400)]
        deltas = [b - a for a, b in zip(times, times[1:], strict=False)]
        return min(deltas), max(deltas)

    def describe(self) -> str:
        text = f"every {format_duration(self.every)}" if self.every is not None else f"cron {self.cron}"
        if self.cron is not None and self.timezone != "UTC":
            text += f" {self.timezone}"
        text += f" (+ up to {format_duration(self.jitter)} jitter)" if self.jitter else ""
        return text + (f" within {self.window.describe()}" if self.window is not None else "")


class Revocation(_Strict):
    """What to do when a superseded credential is still in use (contract §6.10)."""

    when_in_use: Literal["wait", "revoke"] = Field(default="wait", description="wait: hold the revocation while the key is in use; revoke: revoke at the end of grace anyway")
    quiet: Duration = Field(default=timedelta(hours=1), description="a key used within this long (after its successor went live) is in use")
    max_wait: Duration = Field(default=timedelta(days=7), description="after this long past the end of grace, revoke anyway (logged at error level, alerted)")

    @field_validator("quiet", "max_wait")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value
