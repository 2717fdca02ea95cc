"""Applying an outcome to a state record: `apply(record, outcome, policy, now)` returns the next record, a
plain value (rotator.core.machine decides the next action from it). Failures back off exponentially,
honouring Retry-After, up to a cap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rotator.core.actions import (
    Baselined,
    Deactivated,
    Failed,
    Forgotten,
    IssueBegun,
    Issued,
    LiveWritten,
    Outcome,
    Policy,
    Promoted,
    Recovered,
    Revoked,
    RevokeNowMarked,
    RolledBack,
    Started,
    Swept,
    Verified,
)
from rotator.core.machine import is_blocked
from rotator.core.state import KeyRecord, Pending, Retiring, StateRecord

BACKOFF_BASE = timedelta(seconds=30)


BACKOFF_CAP = timedelta(hours=1)


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """Delay before attempt `attempts + 1` across ticks: 30 s doubling, capped at 1 h."""
    # The exponent is bounded: past the cap it changes nothing, and 30 s * 2**n overflows timedelta at n ~ 45
    # (a key refused as live for days would crash every later reconcile).
    delay = min(BACKOFF_BASE * (2 ** min(max(0, attempts - 1), 16)), BACKOFF_CAP)
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
            # Keys taken on as superseded before any successor was live (a lost record's baseline) whose
            # successor's promotion the restored record never saw: the rotation recovered (or the later one the
            # record is behind) went live by now, so their grace runs from no earlier than now (as `_promoted`
            # would have timed them; sim F130), also where the live data has been written over by hand since
            # and holds no key (sweep seed 18542, F184).
            # Where the live data holds no key now (written over by hand), no successor is live yet: the entries
            # keep `superseded_at` unset, so the next promotion times them again (sim F196, seed 3987).
            live_now = outcome.current is not None
            retiring = [
                e.model_copy(update={"superseded_at": now if live_now else None, "revoke_after": now + policy.grace, "clock": policy.clock})
                if e.superseded_at is None and e.stage == "active" and not e.immediate
                and e.revoke_after < now + policy.grace
                else e
                for e in record.retiring
            ]
            old = record.current
            if old is not None and old.key_id != (outcome.current.key_id if outcome.current else None) \
                    and old.key_id not in {e.key.key_id for e in retiring}:
                # Superseded at a time the restored record does not know: a full grace from now
                # (none under `--revoke-now`). An idle record (a removed file's, looked at again) has no
                # rotation of its own: its current key was superseded by the one the live path names.
                pending = record.pending
                revoke_now = pending is not None and pending.revoke_now
                superseded_by = pending.rotation_id if pending is not None else (
                    outcome.current.rotation_id if outcome.current is not None else "recovered")
                retiring.append(Retiring(key=old, superseded_by=superseded_by,
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
            return update_retiring(record, key_id, lambda e: e.model_copy(update={
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
    # A record that said its keys moved to a renamed file's record starts a rotation only when a file has its
    # name again (a rename undone, a new file): from here on it is that file's own (its baseline took over what
    # the other record holds of this live path, rotator.engine.baseline).
    update: dict[str, object] = {"pending": pending, "retiring": retiring, "moved_to": None}
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
    current = record.current
    if outcome.superseded and pending.credential is not None:
        # The paths it went live at: a successor promoted at one since (a renamed file's, which adopted the path)
        # times its grace, and each is read again before it is revoked (sim F205).
        retiring.append(Retiring(key=pending.credential, superseded_by=pending.rotation_id, revoke_after=now + policy.grace,
                                 clock=policy.clock, paths=pending.paths_written()))
        if not policy.has_file and current is not None and current.key_id not in {e.key.key_id for e in retiring}:
            # A removed file's (nothing rotates it again): the rotation went live, so the key it replaced was
            # superseded then, and no longer what the path holds; a full grace from now (sim F124).
            retiring.append(Retiring(key=current, superseded_by=pending.rotation_id, revoke_after=now + policy.grace,
                                     clock=policy.clock))
            current = None
    return record.model_copy(
        update={
            "current": current,
            "pending": None,
            "retiring": retiring,
            "attempts": attempts,
            "next_attempt_at": None if permanent else now + backoff(attempts),
            "blocked_fingerprint": (pending.failed_fingerprint or policy.fingerprint) if permanent else None,
        }
    )


def _failed(record: StateRecord, outcome: Failed, policy: Policy, now: datetime) -> StateRecord:
    if outcome.step in {"deactivate", "revoke"} and outcome.key_id is not None:
        # Revocation is retried until the provider confirms, whatever the error.
        return update_retiring(record, outcome.key_id, lambda e: e.model_copy(update={
            "attempts": e.attempts + 1,
            "next_attempt_at": now + backoff(e.attempts + 1, outcome.retry_after),
            "last_error": outcome.error,
        }))
    errors = {"last_error": outcome.error, "last_error_step": outcome.step, "last_error_at": now}
    if outcome.step == "rollback" and record.pending is not None and record.pending.failed_step is not None:
        # The failure being undone stays the record's error (what `status` and the final report quote, e.g.
        # "run `rotator adopt NAME`"); the rollback's own failures are `rotation.failed` events (sim F202).
        errors = {}
    if outcome.transient and is_blocked(record, policy):
        # Blocked, and a `rotate` failed before it could start (a 429 reading the live path), or a blocked
        # rotation's sweep did: the record stays blocked, so its error stays the one that blocks it ("run
        # `rotator adopt NAME`"); the run's own failure is its report and its `rotation.failed` event (sim F208).
        errors = {}
    if outcome.step in {"metadata", "inventory"}:
        # The credential is live: retried with backoff until written (or looked), never blocked.
        attempts = record.attempts + 1
        return record.model_copy(update={"attempts": attempts, "next_attempt_at": now + backoff(attempts, outcome.retry_after), **errors})
    if outcome.step == "verify" or (outcome.step == "promote" and not outcome.transient):
        # The new credential cannot go live: revoke it now, count the failure then.
        pending = _pending(record).model_copy(
            update={"phase": "rolling_back", "failed_step": outcome.step, "failure_permanent": not outcome.transient,
                    "failed_fingerprint": None if outcome.transient else policy.fingerprint}
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
        # We cannot know whether the provider minted before failing: sweep first. Unless the record names what it
        # minted (the step failed after, writing it down): verified next, never minted over (sim F122).
        update["pending"] = _pending(record).model_copy(update={"phase": "issuing" if record.pending.credential is None else "issued"})
    return record.model_copy(update=update)


def will_retry(record: StateRecord, policy: Policy) -> bool:
    return not is_blocked(record, policy)


def update_retiring(record: StateRecord, key_id: str, change) -> StateRecord:  # type: ignore[no-untyped-def]
    """`record` with the retiring entry of `key_id` replaced by `change(entry)`."""
    return record.model_copy(update={"retiring": [change(e) if e.key.key_id == key_id else e for e in record.retiring]})
