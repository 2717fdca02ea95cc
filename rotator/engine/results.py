"""What a reconcile is given and gives back (EngineOptions, ReconcileResult), shared by the engine's modules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from rotator.core.errors import RotatorError, TransientError
from rotator.core.state import StateRecord

T = TypeVar("T")


MAX_STEPS_PER_RECONCILE = 32


class _MayHaveActed(RotatorError):
    """A transient failure of a create that must not be repeated in-step."""

    def __init__(self, error: TransientError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class EngineOptions:
    state_mount: str = "secret"
    state_prefix: str = "rotator/state"
    lease_seconds: float = 300.0
    stash_prefix: str | None = None  # default: state_prefix + "-stash"
    # How far two hosts' clocks may differ (ROTATOR_CLOCK_SKEW_ALLOWANCE_SECONDS):
    # a grace or a lease measured on another host's clock ends this much later here.
    clock_skew_allowance: float = 0.0


@dataclass
class ReconcileResult:
    """What one reconcile did: `status` is idle, locked, completed, failed or progressed."""

    status: str
    record: StateRecord | None = None
    version: int = 0
    events: list[str] = field(default_factory=list)
    duration_seconds: float | None = None  # of a completed rotation
    # Vault failed while the record was written: `record` is this run's, not Vault's (which is still a
    # consistent earlier state, the next reconcile resumes from it); a caller reads it again.
    unsaved: bool = False

    @property
    def is_failure(self) -> bool:
        return self.status == "failed"


def new_rotation_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class _StaleRecordError(Exception):
    """The first write of a reconcile started from a remembered record lost
    its check-and-set: the record changed since; read it and start again."""
