"""The rotation state machine: pure functions over plain values.

`next_action(record, policy, now)` says what to do next; `apply(record,
outcome, policy, now)` returns the record after an action's outcome. No I/O,
no clock, no randomness: the engine supplies all three.

A rotation moves through these phases (docs/STATE.md has the diagram):

    idle -> intent -> issuing -> issued -> verified -> promoted -> idle
                         |          |           |     (live written; idle
                   (sweep orphans)  |           |      once its metadata is)
                                    +--> rolling_back --> idle (failed)

and each superseded credential through its own:

    active --(grace ends)--> [deactivated --(delay ends)-->] revoked

Invariants kept here:
- the credential the live path holds (`current`) is never the subject of a
  Deactivate or Revoke action;
- a new credential becomes `current` only through `Promoted`, which only
  follows `Verified`;
- a superseded credential is revoked no earlier than `grace` after its
  successor became live, unless the rotation asked for `revoke_now`;
- retirement is due on its own clock, whatever state a pending rotation is
  in (blocked, backing off);
- a promotion counts (`current` changes) only once the live path's metadata
  names the new key, so the old one is never left named as live;
- `issuing` is entered before the provider is asked to mint, so a crash
  there is always followed by an orphan sweep before anything else;
- scheduled rotations, and retirements that are not `--revoke-now`, start
  only inside the schedule's window; a pause stops scheduled rotations only
  (revocations due still happen); a revocation held because its key is in
  use waits for its next usage check (`_gates_*` below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rotator.config import Revocation, Schedule
from rotator.provider import IssuedCredential
from rotator.state import KeyRecord, Pending, Reason, Retiring, StateRecord
from rotator.timetable import EPOCH, due_at

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=1)


@dataclass(frozen=True)
class Policy:
    """What the machine needs to know of a credential's file and provider."""

    schedule: Schedule
    grace: timedelta
    retire_delay: timedelta | None  # time from deactivation to revocation; None: no deactivated stage
    fingerprint: str
    revocation: Revocation = field(default_factory=Revocation)
    has_file: bool = True  # False: the file was removed; retirement only (rotator.fileless)
    # Clock skew (ROTATOR_CLOCK_SKEW_ALLOWANCE_SECONDS): a grace measured on
    # another clock (another host or boot) ends this much later here.
    skew_allowance: timedelta = timedelta(0)
    clock: str | None = None  # the boot whose clock `now` is read from (holder.Identity.boot_id); None: unknown


def grace_ends(entry: Retiring, policy: Policy) -> datetime:
    """When `entry`'s grace is over by this process's clock. A grace read on
    the clock that measured it ends at `revoke_after`; on any other clock
    (or an unknown one) `skew_allowance` later, so clocks that differ by up
    to the allowance never shorten it. `--revoke-now` has no grace."""
    if entry.immediate or (entry.clock is not None and entry.clock == policy.clock):
        return entry.revoke_after
    return entry.revoke_after + policy.skew_allowance


@dataclass(frozen=True)
class Request:
    """A manual rotation (`rotator rotate NAME`)."""

    revoke_now: bool = False


# -- actions -----------------------------------------------------------------


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


# -- outcomes ----------------------------------------------------------------


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
    it (see rotator.baseline)."""

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


# -- deciding ------------------------------------------------------------------


def is_blocked(record: StateRecord, policy: Policy) -> bool:
    """A permanent failure holds until the credential file changes."""
    return record.blocked_fingerprint is not None and record.blocked_fingerprint == policy.fingerprint


def _retry_gate_open(record: StateRecord, now: datetime) -> bool:
    return record.next_attempt_at is None or now >= record.next_attempt_at


def _retirement_due(entry: Retiring, policy: Policy, now: datetime) -> bool:
    if entry.next_attempt_at is not None and now < entry.next_attempt_at:
        return False
    if not _gates_usage_check_due(entry, now):
        return False
    if entry.stage == "active":
        return now >= grace_ends(entry, policy)
    return entry.delete_after is None or now >= entry.delete_after


def _retirement_action(record: StateRecord, policy: Policy, now: datetime) -> Action | None:
    live = record.current.key_id if record.current else None
    for entry in record.retiring:
        if entry.key.key_id == live or not _retirement_due(entry, policy, now):
            continue
        if not entry.immediate and not is_in_window(policy, now):
            continue
        if entry.stage == "active" and policy.retire_delay is not None:
            return Deactivate(entry.key.key_id)
        return Revoke(entry.key.key_id)
    return None


def next_action(record: StateRecord, policy: Policy, now: datetime, request: Request | None = None) -> Action | None:
    """The next thing to do for this credential, or None when nothing is due."""
    pending = record.pending
    if not policy.has_file:
        return _fileless_action(record, policy, now)
    if pending is not None:
        if request is not None and request.revoke_now and not pending.revoke_now:
            return MarkRevokeNow()
        # A stuck rotation (blocked, backing off) never holds up retirement.
        return _pending_action(record, pending, policy, now, request) or _retirement_action(record, policy, now)
    retirement = _retirement_action(record, policy, now)
    if retirement is not None:
        return retirement
    if request is not None:
        return StartRotation("manual", revoke_now=request.revoke_now)
    if is_due(record, policy, now):
        return StartRotation("schedule")
    return None


def _fileless_action(record: StateRecord, policy: Policy, now: datetime) -> Action | None:
    """A removed file: superseded keys are retired on schedule, the live key
    is left alone, and an unfinished rotation is undone (finished if live)."""
    pending = record.pending
    if pending is not None and _retry_gate_open(record, now):
        if pending.phase == "promoted":
            return DescribeLive()
        if pending.phase == "issuing":
            return SweepOrphans()
        return RollBack()
    return _retirement_action(record, policy, now)


def _pending_action(record: StateRecord, pending: Pending, policy: Policy, now: datetime, request: Request | None) -> Action | None:
    may_retry = request is not None or (_retry_gate_open(record, now) and not is_blocked(record, policy))
    if pending.phase == "rolling_back":
        return RollBack() if _retry_gate_open(record, now) or request is not None else None
    if pending.phase == "promoted":
        # Live already: finishing it is never blocked, only backed off.
        return DescribeLive() if _retry_gate_open(record, now) or request is not None else None
    if not may_retry:
        return None
    if pending.phase == "issuing":
        return SweepOrphans()
    if pending.phase == "intent":
        # Retire what is due first: it may free the slot the new key needs.
        return _retirement_action(record, policy, now) or Issue()
    if pending.phase == "issued":
        return Verify()
    return Promote()


def is_due(record: StateRecord, policy: Policy, now: datetime) -> bool:
    if record.pending is not None or is_blocked(record, policy):
        return False
    if not _retry_gate_open(record, now):
        return False
    if is_paused(record, now) or not is_in_window(policy, now):
        return False
    return now >= due_at(policy.schedule, record)


# -- gates: windows, pauses, held revocations (pure; small on purpose) --------


def is_in_window(policy: Policy, now: datetime) -> bool:
    """Scheduled work starts only inside the schedule's window (if any)."""
    window = policy.schedule.window
    return window is None or window.is_open(now)


def is_paused(record: StateRecord, now: datetime) -> bool:
    """A pause holds scheduled rotations until resumed or until `until`."""
    return record.paused is not None and record.paused.is_active(now)


def _gates_usage_check_due(entry: Retiring, now: datetime) -> bool:
    """A revocation held for use waits for its next check (not `--revoke-now`)."""
    return entry.immediate or entry.recheck_at is None or now >= entry.recheck_at


def _gates_wake(moment: datetime, policy: Policy, *, now: datetime | None = None, immediate: bool = False) -> datetime:
    """The first moment at or after `moment` (and `now`) when the window lets work start."""
    window = policy.schedule.window
    if window is None or immediate:
        return moment
    start = max(moment, now) if now is not None else moment
    return window.next_open(start) or start


def next_wake_at(record: StateRecord | None, policy: Policy, now: datetime | None = None) -> datetime | None:
    """The earliest time `next_action` may return an action (None: never,
    until the file changes or someone asks). Mirrors the gates above. With
    `now`, a time already past is read as `now` before the window applies
    (a past opening of the window is no help)."""
    if record is None:
        if policy.schedule.window is None:
            return EPOCH
        record = StateRecord(credential="", provider="")
    times: list[datetime] = []
    if record.pending is not None:
        if record.pending.phase in {"rolling_back", "promoted"} or not is_blocked(record, policy) or not policy.has_file:
            times.append(record.next_attempt_at or EPOCH)
    elif policy.has_file and not is_blocked(record, policy) and not (record.paused is not None and record.paused.until is None):
        due = due_at(policy.schedule, record)
        due = max(due, record.next_attempt_at) if record.next_attempt_at else due
        if record.paused is not None and record.paused.until is not None:
            due = max(due, record.paused.until)
        times.append(_gates_wake(due, policy, now=now))
    for entry in record.retiring:
        moment = grace_ends(entry, policy) if entry.stage == "active" else (entry.delete_after or EPOCH)
        later = [t for t in (entry.next_attempt_at, None if entry.immediate else entry.recheck_at) if t is not None]
        times.append(_gates_wake(max([moment, *later]), policy, now=now, immediate=entry.immediate))
    return min(times) if times else None


# -- applying outcomes -----------------------------------------------------------


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """Delay before attempt `attempts + 1` across ticks: 30 s doubling, capped at 1 h."""
    delay = min(BACKOFF_BASE * (2 ** max(0, attempts - 1)), BACKOFF_CAP)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def apply(record: StateRecord, outcome: Outcome, policy: Policy, now: datetime) -> StateRecord:
    """The record after `outcome`."""
    match outcome:
        case Started():
            return _started(record, outcome, now)
        case Baselined():
            known = {e.key.key_id for e in record.retiring}
            extra = [e for e in outcome.retiring if e.key.key_id not in known]
            return record.model_copy(update={
                "current": outcome.current, "live_version": outcome.live_version, "live_path": outcome.live_path,
                "retiring": [*record.retiring, *extra],
            })
        case Recovered():
            retiring = list(record.retiring)
            old = record.current
            if old is not None and old.key_id != (outcome.current.key_id if outcome.current else None) \
                    and old.key_id not in {e.key.key_id for e in retiring}:
                # Superseded at a time the restored record does not know: a full grace from now
                # (none under `--revoke-now`).
                revoke_now = _pending(record).revoke_now
                retiring.append(Retiring(key=old, superseded_by=_pending(record).rotation_id,
                                         revoke_after=now if revoke_now else now + policy.grace, immediate=revoke_now,
                                         clock=policy.clock))
            retiring += [e for e in outcome.retiring if e.key.key_id not in {r.key.key_id for r in retiring}]
            return record.model_copy(update={
                "current": outcome.current, "live_version": outcome.live_version, "live_path": outcome.live_path,
                "pending": None, "retiring": retiring, "attempts": 0, "next_attempt_at": None,
                "last_error": None, "last_error_step": None, "last_error_at": None, "blocked_fingerprint": None,
            })
        case Forgotten():
            known = record.managed_key_ids()
            return record.model_copy(update={"retiring": [*record.retiring, *(e for e in outcome.retiring if e.key.key_id not in known)]})
        case IssueBegun():
            return _with_phase(record, "issuing")
        case Swept():
            return _with_phase(record, "intent")
        case Issued(credential=cred):
            pending = _pending(record).model_copy(
                update={
                    "phase": "issued",
                    "credential": KeyRecord(
                        key_id=cred.key_id,
                        rotation_id=_pending(record).rotation_id,
                        handle=dict(cred.handle),
                        issued_at=now,
                        expires_at=cred.expires_at,
                    ),
                    "data": dict(cred.data),
                }
            )
            return record.model_copy(update={"pending": pending})
        case Verified(attempts=attempts):
            pending = _pending(record).model_copy(update={"phase": "verified", "verify_attempts": attempts})
            return record.model_copy(update={"pending": pending})
        case LiveWritten(live_version=version):
            pending = _pending(record).model_copy(update={
                "phase": "promoted", "live_version": version, "live_at": _pending(record).live_at or now,
                "live_clock": _pending(record).live_clock if _pending(record).live_at else policy.clock,
                "failed_step": None, "failure_permanent": False,
            })
            return record.model_copy(update={"pending": pending, "next_attempt_at": None})
        case Promoted():
            return _promoted(record, outcome, policy, now)
        case RevokeNowMarked():
            pending = _pending(record).model_copy(update={"revoke_now": True})
            return record.model_copy(update={"pending": pending, "retiring": _revoke_now(record.retiring, now)})
        case RolledBack():
            return _rolled_back(record, outcome, policy, now)
        case Deactivated(key_id=key_id):
            return _update_retiring(record, key_id, lambda e: e.model_copy(update={
                "stage": "deactivated",
                "delete_after": now if e.immediate else now + (policy.retire_delay or timedelta(0)),
                "attempts": 0, "next_attempt_at": None, "last_error": None,
            }))
        case Revoked(key_id=key_id):
            return record.model_copy(update={"retiring": [e for e in record.retiring if e.key.key_id != key_id]})
        case Failed():
            return _failed(record, outcome, policy, now)
    raise TypeError(f"unknown outcome {outcome!r}")


def _pending(record: StateRecord) -> Pending:
    if record.pending is None:
        raise ValueError(f"{record.credential}: no rotation in progress")
    return record.pending


def _with_phase(record: StateRecord, phase: str) -> StateRecord:
    return record.model_copy(update={"pending": _pending(record).model_copy(update={"phase": phase})})


def _started(record: StateRecord, outcome: Started, now: datetime) -> StateRecord:
    pending = Pending(
        rotation_id=outcome.rotation_id,
        reason=outcome.reason,
        started_at=now,
        revoke_now=outcome.revoke_now,
        preexisting_key_ids=list(outcome.preexisting_key_ids),
        target=outcome.target,
    )
    retiring = _revoke_now(record.retiring, now) if outcome.revoke_now else record.retiring
    update: dict[str, object] = {"pending": pending, "retiring": retiring}
    if outcome.reason == "manual":
        update.update(blocked_fingerprint=None, next_attempt_at=None)
    return record.model_copy(update=update)


def _revoke_now(retiring: list[Retiring], now: datetime) -> list[Retiring]:
    """Incident response: everything older than the live key goes now, a
    deactivated key waiting for its deletion too."""
    return [
        e.model_copy(update={
            "revoke_after": min(e.revoke_after, now), "immediate": True, "next_attempt_at": None,
            "delete_after": min(e.delete_after, now) if e.delete_after is not None else None,
        })
        for e in retiring
    ]


def _promoted(record: StateRecord, outcome: Promoted, policy: Policy, now: datetime) -> StateRecord:
    pending = _pending(record)
    assert pending.credential is not None
    live_at = pending.live_at or now  # grace runs from the live write
    live_clock = pending.live_clock if pending.live_at else policy.clock
    # Keys taken on as superseded before any successor was live (a lost or
    # renamed record's keys, a moved path's old key): their successor is this
    # one, and their grace runs from its live write too.
    retiring = [
        e.model_copy(update={"superseded_at": live_at, "revoke_after": live_at + policy.grace, "clock": live_clock})
        if e.superseded_at is None and e.stage == "active" and not e.immediate and e.revoke_after < live_at + policy.grace
        else e
        for e in record.retiring
    ]
    if record.current is not None:
        # An older retirement of the key that was live until now (it was live
        # again: restored by hand, taken on by a renamed file) is over: its
        # grace runs from this promotion.
        retiring = [e for e in retiring if e.key.key_id != record.current.key_id]
        retiring.append(
            Retiring(
                key=record.current,
                superseded_by=pending.rotation_id,
                revoke_after=now if pending.revoke_now else live_at + policy.grace,
                immediate=pending.revoke_now,
                superseded_at=live_at,
                clock=live_clock,
            )
        )
    return record.model_copy(
        update={
            "current": pending.credential,
            "live_version": outcome.live_version,
            "live_path": outcome.live_path or record.live_path,
            "last_rotated_at": now,
            "jitter_seconds": outcome.jitter_seconds,
            "rotations": record.rotations + 1,
            "pending": None,
            "retiring": retiring,
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": None,
            "last_error_step": None,
            "last_error_at": None,
            "blocked_fingerprint": None,
        }
    )


def _rolled_back(record: StateRecord, outcome: RolledBack, policy: Policy, now: datetime) -> StateRecord:
    pending = _pending(record)
    attempts = record.attempts + 1
    permanent = pending.failure_permanent
    retiring = list(record.retiring)
    if outcome.superseded and pending.credential is not None:
        retiring.append(Retiring(key=pending.credential, superseded_by=pending.rotation_id, revoke_after=now + policy.grace,
                                 clock=policy.clock))
    return record.model_copy(
        update={
            "pending": None,
            "retiring": retiring,
            "attempts": attempts,
            "next_attempt_at": None if permanent else now + backoff(attempts),
            "blocked_fingerprint": policy.fingerprint if permanent else None,
        }
    )


def _failed(record: StateRecord, outcome: Failed, policy: Policy, now: datetime) -> StateRecord:
    if outcome.step in {"deactivate", "revoke"} and outcome.key_id is not None:
        # Revocation is retried until the provider confirms, whatever the error.
        return _update_retiring(record, outcome.key_id, lambda e: e.model_copy(update={
            "attempts": e.attempts + 1,
            "next_attempt_at": now + backoff(e.attempts + 1, outcome.retry_after),
            "last_error": outcome.error,
        }))
    errors = {"last_error": outcome.error, "last_error_step": outcome.step, "last_error_at": now}
    if outcome.step == "metadata":
        # The credential is live: retried with backoff until written, never blocked.
        attempts = record.attempts + 1
        return record.model_copy(update={"attempts": attempts, "next_attempt_at": now + backoff(attempts, outcome.retry_after), **errors})
    if outcome.step == "verify" or (outcome.step == "promote" and not outcome.transient):
        # The new credential cannot go live: revoke it now, count the failure then.
        pending = _pending(record).model_copy(
            update={"phase": "rolling_back", "failed_step": outcome.step, "failure_permanent": not outcome.transient}
        )
        return record.model_copy(update={"pending": pending, "next_attempt_at": None, **errors})
    attempts = record.attempts + 1
    permanent = not outcome.transient and outcome.step != "rollback"
    update: dict[str, object] = {
        "attempts": attempts,
        "next_attempt_at": None if permanent else now + backoff(attempts, outcome.retry_after),
        "blocked_fingerprint": policy.fingerprint if permanent else record.blocked_fingerprint,
        **errors,
    }
    if outcome.step == "issue" and record.pending is not None:
        # We cannot know whether the provider minted before failing: sweep first.
        update["pending"] = _pending(record).model_copy(update={"phase": "issuing"})
    return record.model_copy(update=update)


def will_retry(record: StateRecord, policy: Policy) -> bool:
    return not is_blocked(record, policy)


def _update_retiring(record: StateRecord, key_id: str, change) -> StateRecord:  # type: ignore[no-untyped-def]
    return record.model_copy(update={"retiring": [change(e) if e.key.key_id == key_id else e for e in record.retiring]})
