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


class Hosts:
    """Each process slot's host: its clock's offset from true time, and its boot. A clock that moves under a
    process is one the promise leaves out (within a boot the skew allowance never applies:
    docs/CONTRACT-NOTES.md), so setting a clock once a process ran there is a reboot: a new boot id (sim F212)."""

    def __init__(self, slots: tuple[str, ...]) -> None:
        self.offsets: dict[str, float] = dict.fromkeys(slots, 0.0)
        self._boots: dict[str, int] = dict.fromkeys(slots, 0)

    def boot_id(self, slot: str) -> str:
        return f"sim-{slot}-{self._boots[slot]}" if self._boots.get(slot) else f"sim-{slot}"

    def set_offset(self, slot: str, seconds: float, *, booted: bool) -> bool:
        """Whether the host rebooted (`booted`: a process ran there)."""
        if seconds == self.offsets[slot]:
            return False
        self.offsets[slot] = seconds
        if booted:
            self._boots[slot] += 1
        return booted
