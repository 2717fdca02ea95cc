"""The simulation's clocks: one true time that only the scheduler advances, and each process's view of
it (skewed, and a sleep is a scheduling point, never a real wait).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

START = datetime(2026, 3, 1, tzinfo=UTC)


class TrueClock:
    def __init__(self, start: datetime = START) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(0.0, seconds))


class ProcessClock:
    """A process's clock: true time plus its skew. Sleeping lets time pass for all."""

    def __init__(self, true: TrueClock, actor: str, offset: Callable[[], float]) -> None:
        self.true = true
        self.actor = actor
        self._offset = offset

    def now(self) -> datetime:
        offset = self._offset()
        return self.true.now() + timedelta(seconds=offset) if offset else self.true.now()

    def sleep(self, seconds: float, *, until: threading.Event | None = None) -> bool:
        if until is not None and until.is_set():
            return True
        self.true.advance(seconds)
        return False
