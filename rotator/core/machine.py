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

from datetime import datetime

from rotator.core.actions import (  # noqa: F401 - the machine's vocabulary, named machine.X by its callers
    Action,
    Baselined,
    Deactivate,
    Deactivated,
    DescribeLive,
    Failed,
    Forgotten,
    Issue,
    IssueBegun,
    Issued,
    LiveWritten,
    MarkRevokeNow,
    Outcome,
    Policy,
    Promote,
    Promoted,
    Recovered,
    Request,
    Revoke,
    Revoked,
    RevokeNowMarked,
    RollBack,
    RolledBack,
    Started,
    StartRotation,
    SweepOrphans,
    Swept,
    Verified,
    Verify,
)
from rotator.core.state import Pending, Retiring, StateRecord
from rotator.core.timetable import EPOCH, due_at


def grace_ends(entry: Retiring, policy: Policy) -> datetime:
    """When `entry`'s grace is over by this process's clock. A grace read on
    the clock that measured it ends at `revoke_after`; on any other clock
    (or an unknown one) `skew_allowance` later, so clocks that differ by up
    to the allowance never shorten it. `--revoke-now` has no grace."""
    if entry.immediate or (entry.clock is not None and entry.clock == policy.clock):
        return entry.revoke_after
    return entry.revoke_after + policy.skew_allowance


# -- deciding ------------------------------------------------------------------


def unrevoked(record: StateRecord) -> tuple[Retiring, ...]:
    """Previous keys `--revoke-now` asked to end at once that still work: not revoked, nor deactivated."""
    return tuple(e for e in record.retiring if e.immediate and e.stage == "active")


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


def _retirement_action(record: StateRecord, policy: Policy, now: datetime, *, before_promotion: bool = False) -> Action | None:
    """`before_promotion`: a rotation about to issue; an entry no successor has gone live for yet (`superseded_at`
    unset: taken on, or found, while the live path held no key of the credential) waits for its promotion, which
    times its grace (sim F196). A stuck rotation does not wait: retirement then runs on its own (`next_action`)."""
    live = record.current.key_id if record.current else None
    for entry in record.retiring:
        if entry.key.key_id == live or not _retirement_due(entry, policy, now):
            continue
        if before_promotion and entry.superseded_at is None and not entry.immediate:
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


def _swept_even_blocked(record: StateRecord) -> bool:
    """A rotation in `issuing` is swept blocked or not (a mint may have happened, sim F210), unless the block is
    the sweep's own (a denied listing): that waits, as any block does."""
    return record.pending is not None and record.pending.phase == "issuing" and record.last_error_step != "sweep"


def _pending_action(record: StateRecord, pending: Pending, policy: Policy, now: datetime, request: Request | None) -> Action | None:
    may_retry = request is not None or (_retry_gate_open(record, now) and not is_blocked(record, policy))
    if pending.phase == "rolling_back":
        return RollBack() if _retry_gate_open(record, now) or request is not None else None
    if pending.phase == "promoted":
        # Live already: finishing it is never blocked, only backed off.
        return DescribeLive() if _retry_gate_open(record, now) or request is not None else None
    if pending.phase == "issuing" and (may_retry or (_retry_gate_open(record, now) and _swept_even_blocked(record))):
        # A mint may have happened (a failed or crashed issue): swept, blocked or not, once (then `intent`, which a
        # block holds). A `rotate` that resumed a blocked rotation and crashed mid-mint left its key (sim F210).
        # Not where the block is the sweep's own (a denied listing): that waits, as any block does.
        return SweepOrphans()
    if not may_retry:
        return None
    if pending.phase == "intent":
        # Retire what is due first: it may free the slot the new key needs (and, where it does not, the issue
        # makes room from keys past grace itself).
        return _retirement_action(record, policy, now, before_promotion=True) or Issue()
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
        if record.pending.phase in {"rolling_back", "promoted"} or _swept_even_blocked(record) or not is_blocked(record, policy) \
                or not policy.has_file:
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
