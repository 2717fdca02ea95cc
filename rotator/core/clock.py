"""Time, injected: the core never calls `datetime.now()` or `time.sleep()`
itself, so tests fast-forward instead of sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float, *, until: threading.Event | None = None) -> bool:
        """Wait; return True if `until` was set (shutdown) before the time ran out."""
        ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, *, until: threading.Event | None = None) -> bool:
        if until is None:
            threading.Event().wait(max(0.0, seconds))
            return False
        return until.wait(max(0.0, seconds))


class FakeClock:
    """A clock tests move by hand; `sleep` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._now += delta

    def sleep(self, seconds: float, *, until: threading.Event | None = None) -> bool:
        if until is not None and until.is_set():
            return True
        self.advance(max(0.0, seconds))
        return False


def to_rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the second (as the contract writes it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
