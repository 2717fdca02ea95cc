"""Plain facts the simulated world keeps for its invariants: what it remembers
of each live path, the `rotate --revoke-now` requests, violations, and a run's result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


MOUNT = "secret"
STATE_PREFIX = "rotator/state"


@dataclass
class FileSpec:
    """A credential file: its stem (the name), live path and params."""

    stem: str
    path: str
    params: dict[str, Any]


@dataclass
class Tracking:
    """What the invariants remember of one live path."""

    promoted: bool = False  # the rotator wrote it at least once
    foreign: bool = False  # someone else wrote it since the rotator last did
    retired: bool = False  # no file names it any more (vault.path changed): consumers moved
    last_key: str | None = None  # the key the rotator's last write here held


@dataclass
class RevokeNow:
    started_at: datetime
    completed_at: datetime | None = None
    targets: frozenset[str] = frozenset()  # rotator-made keys that existed when it was asked
    # The state record was restored to an older version after it completed: the request is undone in the record,
    # and is honoured when the record next acts (compared with the live path then), not within the window.
    undone: bool = False


@dataclass
class Violation:
    invariant: str
    detail: str
    step: int

    def __str__(self) -> str:
        return f"step {self.step}: {self.invariant}: {self.detail}"


@dataclass
class RunResult:
    steps: int = 0
    violations: list[Violation] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
