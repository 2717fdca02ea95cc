"""The state machine's vocabulary, as plain frozen values: the policy it decides under, an operator's
request, the actions it asks the engine for and the outcomes the engine reports back (rotator.core.machine
decides and applies them; they are importable from there as machine.X).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from rotator.core.provider import IssuedCredential
from rotator.core.schedule import Revocation, Schedule
from rotator.core.state import KeyRecord, Reason, Retiring


@dataclass(frozen=True)
class Policy:
    """What the machine needs to know of a credential's file and provider."""

    schedule: Schedule
    grace: timedelta
    retire_delay: timedelta | None  # time from deactivation to revocation; None: no deactivated stage
    fingerprint: str
    revocation: Revocation = field(default_factory=Revocation)
    has_file: bool = True  # False: the file was removed; retirement only (rotator.engine.fileless)
    # Clock skew (ROTATOR_CLOCK_SKEW_ALLOWANCE_SECONDS): a grace measured on
    # another clock (another host or boot) ends this much later here.
    skew_allowance: timedelta = timedelta(0)
    clock: str | None = None  # the boot whose clock `now` is read from (holder.Identity.boot_id); None: unknown


@dataclass(frozen=True)
class Request:
    """A manual rotation (`rotator rotate NAME`)."""

    revoke_now: bool = False


@dataclass(frozen=True)
class StartRotation:
    reason: Reason
    revoke_now: bool = False


@dataclass(frozen=True)
class SweepOrphans:
    pass


@dataclass(frozen=True)
class Issue:
    pass


@dataclass(frozen=True)
class Verify:
    pass


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class DescribeLive:
    """Write the live path's metadata for a credential already written there."""


@dataclass(frozen=True)
class MarkRevokeNow:
    """`rotate --revoke-now` asked while a rotation was unfinished."""


@dataclass(frozen=True)
class RollBack:
    pass


@dataclass(frozen=True)
class Deactivate:
    key_id: str


@dataclass(frozen=True)
class Revoke:
    key_id: str


Action = StartRotation | SweepOrphans | Issue | Verify | Promote | DescribeLive | MarkRevokeNow | RollBack | Deactivate | Revoke


@dataclass(frozen=True)
class Started:
    rotation_id: str
    reason: Reason
    revoke_now: bool = False
    preexisting_key_ids: tuple[str, ...] = ()
    target: str | None = None  # MOUNT/PATH the rotation writes


@dataclass(frozen=True)
class Baselined:
    """What the live path holds, taken on when the record knew no version of
    it (see rotator.engine.baseline)."""

    current: KeyRecord | None
    live_version: int
    live_path: str
    retiring: tuple[Retiring, ...] = ()


@dataclass(frozen=True)
class Recovered:
    """The pending rotation had completed already: the live path's metadata
    names it (a record restored from a version before its promotion)."""

    current: KeyRecord | None
    live_version: int
    live_path: str
    retiring: tuple[Retiring, ...] = ()  # the rotation's key, when data written over it since holds another


@dataclass(frozen=True)
class Forgotten:
    """Keys marked as this credential's at the provider that the record does
    not know (it was restored from an older version, or lost): retired."""

    retiring: tuple[Retiring, ...]


@dataclass(frozen=True)
class IssueBegun:
    pass


@dataclass(frozen=True)
class Swept:
    revoked_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Issued:
    credential: IssuedCredential


@dataclass(frozen=True)
class Verified:
    attempts: int


@dataclass(frozen=True)
class LiveWritten:
    live_version: int


@dataclass(frozen=True)
class Promoted:
    live_version: int
    jitter_seconds: float
    live_path: str | None = None


@dataclass(frozen=True)
class RevokeNowMarked:
    pass


@dataclass(frozen=True)
class RolledBack:
    # The new credential was live once and has been superseded since (by
    # another record's rotation): it is not revoked now but retired after a
    # full grace from now, like any superseded key.
    superseded: bool = False


@dataclass(frozen=True)
class Deactivated:
    key_id: str


@dataclass(frozen=True)
class Revoked:
    key_id: str


@dataclass(frozen=True)
class Failed:
    step: str  # sweep, issue, verify, promote, metadata, rollback, deactivate, revoke
    error: str
    transient: bool
    retry_after: float | None = None
    key_id: str | None = None  # for deactivate / revoke


Outcome = (
    Started | Baselined | Recovered | Forgotten | IssueBegun | Swept | Issued | Verified | LiveWritten | Promoted | RevokeNowMarked
    | RolledBack | Deactivated | Revoked | Failed
)
