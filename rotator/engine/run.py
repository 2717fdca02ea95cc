"""One reconcile run of one credential: ask the state machine for the next action, carry it out through
the steps, apply the outcome and persist the record, until there is nothing left to do now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rotator.audit.events import get_logger, register_secret
from rotator.config.spec import LoadedCredential
from rotator.core import machine, transitions
from rotator.core.actions import Policy, Request
from rotator.core.clock import to_rfc3339
from rotator.core.errors import CasMismatchError, LeaseLostError, NotFoundError, PermanentError, RotatorError, TransientError
from rotator.core.provider import Provider, ProviderKey
from rotator.core.state import Retiring, StateRecord
from rotator.engine import retry
from rotator.engine.baseline import forgotten_keys
from rotator.engine.carried import CarriedSteps
from rotator.engine.forgotten import ForgottenSteps
from rotator.engine.issue import IssueSteps
from rotator.engine.persistence import Persistence
from rotator.engine.promote import PromoteSteps
from rotator.engine.results import MAX_STEPS_PER_RECONCILE, ReconcileResult, T
from rotator.engine.restored import RestoredSteps
from rotator.engine.retire import RetireSteps
from rotator.vault.livepath import LivePath
from rotator.vault.records import public_view

if TYPE_CHECKING:
    from rotator.engine.reconcile import Engine


class _Run(CarriedSteps, ForgottenSteps, RestoredSteps, RetireSteps, PromoteSteps, IssueSteps, Persistence):
    """One reconcile of one credential, holding its lease."""

    def __init__(
        self, engine: Engine, cred: LoadedCredential, provider: Provider, policy: Policy,
        record: StateRecord, version: int, request: Request | None, *, from_memory: bool = False,
    ) -> None:
        self.engine = engine
        self.cred = cred
        self.provider = provider
        self.policy = policy
        self.record = record
        self.version = version
        self.request = request
        self._revoke_now_asked = request is not None and request.revoke_now
        self.status = "progressed"
        self._unsaved = False  # Vault failed while persisting: the record here is not Vault's
        self.events: list[str] = []
        self.log = get_logger(credential=cred.spec.name, provider=cred.spec.provider)
        self._started_monotonic: float | None = None
        self.duration_seconds: float | None = None
        self._lease_until: datetime | None = None
        self._verified_here = False  # the pending credential was verified by this run
        # Writes are merged where a crash between two of them needs neither
        # (docs/STATE.md, "Vault writes of a rotation"): `_dirty` marks
        # outcomes applied in memory only, `_persisted` is the record as
        # Vault holds it, and `_durable` holds events that wait for a write.
        self._persisted = record
        self._dirty = False
        self._released = False
        self._from_memory = from_memory
        self._wrote = False
        self._durable: list[Callable[[], None]] = []
        self._started_here: str | None = None  # the rotation this run started
        self._request_taken: Request | None = None  # the request it started it for
        self._described_key: str | None = None  # the key this run's metadata write named as live
        self._wrote_live: int | None = None  # the live version this run's own check-and-set write made
        self._behind_checked = False  # whether this run compared a resumed rotation with the live path
        self._initial, self._initial_version = record, version
        self._undone_paths: list[str] | None = None  # what a restore of the record undid names (RestoredSteps)
        self._undone: list[StateRecord] | None = None  # the versions it undid, once read
        self._since_copy: list[StateRecord] = []  # the versions from its copy on (RestoredSteps._known_since_restore)
        self._undone_retired = False  # the keys only they name were looked for
        _register_record_secrets(record, provider)

    # -- persistence -------------------------------------------------------------


    def _defer(self, record: StateRecord) -> None:
        """Keep an outcome in memory: the next write carries it."""
        self.record, self._dirty = record, True


    # -- the loop ----------------------------------------------------------------

    def execute(self) -> ReconcileResult:
        try:
            if self.record.pending is not None:
                pending = self.record.pending
                self._bind_rotation(pending.rotation_id)
                self.emit("rotation.started", reason="recovery")
                self._started_monotonic = time.monotonic()
                if pending.credential is not None:
                    # A crash may have fallen between the stash and its event.
                    self.emit("credential.issued", key_id=pending.credential.key_id, recovered=True)
                self._check_behind_live()
            for _ in range(MAX_STEPS_PER_RECONCILE):
                if self.engine.shutdown.is_set():
                    break  # finish the step in flight, start no new one
                now = self.engine.clock.now()
                action = machine.next_action(self.record, self.policy, now, self.request)
                if action is None:
                    break
                try:
                    self.record = self.engine.records.hydrate(self.record, action, self.provider.secret_fields)
                except NotFoundError as exc:
                    if not isinstance(action, (machine.Verify, machine.Promote)):
                        raise
                    # The new credential's stash entry is gone (a record restored to a rotation whose key was
                    # revoked since): it can be neither verified nor written live, so the rotation is undone;
                    # not the file's fault, so retried with backoff, never blocked (sim F200).
                    self._fail("verify", TransientError(str(exc)))
                    continue
                self._do(action)
        except LeaseLostError as exc:
            self.log.warning("lease.lost", error=str(exc))
            return ReconcileResult("locked", self._public(), self.version, self.events)
        except RotatorError as exc:
            # Vault failed while persisting: the record in Vault is still a
            # consistent earlier state; the next reconcile resumes from it.
            self.emit("rotation.failed", "error", step="persist", error=str(exc), will_retry=True, next_attempt_at=None)
            self.status, self._unsaved = "failed", True
        self.release()
        if self.status == "completed" and self._revoke_now_asked and machine.unrevoked(self.record):
            # `--revoke-now` is done when no previous key works: one whose revoke failed is retried
            # on its entry's schedule, and this run is not done (exit 1; sim F199).
            self.status = "failed"
        if self._wakes_earlier():
            self.engine.changes.record(self.record.credential)
        return ReconcileResult(self.status, self._public(), self.version, self.events, self.duration_seconds, unsaved=self._unsaved)

    def behind_live(self) -> tuple[Any, LivePath] | None:
        """An idle record looked at again (a removed file's, `Engine._look_behind`). Reads only: the first
        live path it may have written whose metadata names a rotation of this credential it does not know.
        (Keys it does not know that never went live: `ForgottenSteps.idle_forgotten`, sim F117.)"""
        for live in self._known_live_paths():
            content = self._call(live.read)
            if self._behind_at(content, live):
                return content, live
        return None

    def went_live_blocked(self) -> LivePath | None:
        """A blocked record looked at again (`Engine._look_behind`): the path where its rotation went live, resumed
        past the block by a `rotate`, the record restored to the block since (sim F223). Reads only."""
        pending = self.record.pending
        if pending is None:
            return None
        for live in self._known_live_paths():
            if self._went_live_in(self._call(live.read), pending.rotation_id):
                return live
        return None

    def finish_blocked(self, live: LivePath) -> ReconcileResult:
        """`Engine._look_behind`, under the lease: the blocked rotation that went live at `live` is recovered there
        (the block lifted, what the record had as current retired a full grace from now), then what is due is done."""
        rotation_id = self.record.pending.rotation_id if self.record.pending else ""
        return self._then_execute(lambda: self._already_completed(rotation_id, None if str(live) == str(self._live) else live))

    def catch_up(self, content: Any, live: LivePath) -> ReconcileResult:
        """`Engine._look_behind`, under the lease: the record catches up with `live`, then does what is due."""
        self._behind_checked = True
        return self._then_execute(lambda: self._recover_if_behind(content, live))

    def take_forgotten(self, found: tuple[Retiring, ...]) -> ReconcileResult:
        """`Engine._look_behind`, under the lease: the keys `idle_forgotten` found are retired a full grace
        from then (sim F117), then what is due is done."""
        return self._then_execute(lambda: self._take_up_forgotten(found))

    def _then_execute(self, step: Callable[[], object]) -> ReconcileResult:
        """An idle record's look (`catch_up`, `take_forgotten`): `step`, then `execute`; a failed step is
        logged as the look's (`state.look_behind_failed`) and the lease released."""
        try:
            step()
        except LeaseLostError as exc:
            self.log.warning("lease.lost", error=str(exc))
            return ReconcileResult("locked", self._public(), self.version, self.events)
        except RotatorError as exc:
            self.log.warning("state.look_behind_failed", error=str(exc))
            self.release()
            return ReconcileResult("failed", self._public(), self.version, self.events)
        return self.execute()

    def _wakes_earlier(self) -> bool:
        """Whether others must hear of this reconcile (the change feed): only
        when it moved the credential's next wake earlier than the record it
        started from said. A process that remembers that record wakes no
        later than it named, and then reads what this run wrote."""
        if not self._wrote:
            return False
        now = self.engine.clock.now()
        before = machine.next_wake_at(self._initial, self.policy, now)
        after = machine.next_wake_at(self._persisted, self.policy, now)
        return after is not None and (before is None or after < before)

    def _public(self) -> StateRecord:
        """The record as callers keep it: no secret value."""
        return public_view(self.record, self.provider.secret_fields)

    def _bind_rotation(self, rotation_id: str) -> None:
        self.log = self.log.bind(rotation_id=rotation_id)

    def _apply(self, outcome: machine.Outcome, *, defer: bool = False) -> None:
        """Apply an outcome and write the record; `defer`: only in memory,
        where a crash before the next write is repaired by redoing the step.
        The write after which nothing is due releases the lease with it."""
        now = self.engine.clock.now()
        record = transitions.apply(self.record, outcome, self.policy, now)
        self._defer(record)
        if not defer:
            self._write_outcome()

    def _write_outcome(self) -> None:
        """Write what is in memory, as `_apply` would have."""
        record, now = self.record, self.engine.clock.now()
        if machine.next_action(record, self.policy, now, self.request) is None and not self.engine.shutdown.is_set():
            try:
                self._write(record.model_copy(update={"lease": None}))
            except CasMismatchError:
                raise LeaseLostError(f"{record.credential}: another process took the lease") from None
            return
        self.persist(record)

    def _next_is_retirement(self) -> bool:
        """The next action retires a key at once (no wait): the outcome
        before it need not be written on its own (redone after a crash)."""
        action = machine.next_action(self.record, self.policy, self.engine.clock.now(), None)
        return isinstance(action, (machine.Deactivate, machine.Revoke))

    def _call(self, fn: Callable[[], T], policy: retry.RetryPolicy = retry.API, *, max_seconds: float | None = None,
              watch_shutdown: bool = True) -> T:
        def guarded() -> T:
            try:
                return fn()
            except RotatorError:
                raise
            except Exception as exc:
                # A plugin bug becomes a failed step, not a crashed reconcile
                # holding its lease; its message may quote a value, so only
                # the type is kept.
                raise PermanentError(f"{self.provider.kind} raised {type(exc).__name__} (a bug in the provider?)") from None

        shutdown = self.engine.shutdown if watch_shutdown else None
        return retry.call_with_retry(guarded, policy=policy, clock=self.engine.clock, shutdown=shutdown, max_seconds=max_seconds)

    def _do(self, action: machine.Action) -> None:
        match action:
            case machine.StartRotation():
                self._start(action)
            case machine.SweepOrphans():
                self._sweep()
            case machine.Issue():
                self._issue()
            case machine.Verify():
                self._verify()
            case machine.Promote():
                self._promote()
            case machine.DescribeLive():
                self._describe_live()
            case machine.MarkRevokeNow():
                self._apply(machine.RevokeNowMarked())
            case machine.RollBack():
                self._roll_back()
            case machine.Deactivate(key_id=key_id):
                self._retire(key_id, deactivate=True)
            case machine.Revoke(key_id=key_id):
                self._retire(key_id, deactivate=False)

    def _fail(self, step: str, exc: Exception, *, key_id: str | None = None) -> None:
        transient = isinstance(exc, TransientError)
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        self._apply(machine.Failed(step=step, error=str(exc), transient=transient, retry_after=retry_after, key_id=key_id))
        if step in {"deactivate", "revoke"}:
            entry = next((e for e in self.record.retiring if e.key.key_id == key_id), None)
            self.emit(
                "rotation.failed", "error", step=step, error=str(exc), key_id=key_id, will_retry=True,
                next_attempt_at=to_rfc3339(entry.next_attempt_at) if entry and entry.next_attempt_at else None,
            )
            return
        self.request = None  # a manual request gets one attempt, not one per step
        pending = self.record.pending
        if step == "rollback" and pending is not None:
            nxt = self.record.next_attempt_at
            self.status = "failed"
            self.emit("rotation.failed", "error", step=step, error=str(exc), will_retry=True,
                      key_id=pending.credential.key_id if pending.credential else None,
                      next_attempt_at=to_rfc3339(nxt) if nxt else None)
            return
        if pending is not None and pending.phase == "rolling_back":
            return  # reported once the rollback is done
        self._report_failure(step, str(exc))

    def _report_failure(self, step: str, error: str) -> None:
        will_retry = transitions.will_retry(self.record, self.policy)
        nxt = self.record.next_attempt_at
        self.status = "failed"
        self.emit("rotation.failed", "error", step=step, error=error, will_retry=will_retry,
                  next_attempt_at=to_rfc3339(nxt) if will_retry and nxt else None)

    # -- steps ---------------------------------------------------------------------


    def _forgotten(self, listed: list[ProviderKey], *, keep: set[str], now: datetime) -> tuple[Retiring, ...]:
        """`baseline.forgotten_keys` for this credential: the listed keys marked as its own that the record does
        not know (nor `keep`), retiring a full grace from `now`; of those, only the ones shown live at no path
        they can have reached (`ForgottenSteps._live_nowhere`, sim F131)."""
        found = forgotten_keys(self.record, listed, name=self.cred.spec.name, keep=keep, grace=self.policy.grace, now=now,
                               read_other=self.engine.read_record, clock=self.policy.clock,
                               keeps_inactive=self.policy.retire_delay is not None, skew=self.policy.skew_allowance)
        return self._live_nowhere(found, listed) if found else ()

    def _retire_forgotten(self, *, revoke_now: bool) -> RotatorError | None:
        """After a promotion: keys of this credential at the provider that
        the record does not know (it was restored from an older version, or
        lost: a later rotation's key, stashed or in grace) are retired after
        a full grace (at once under `revoke_now`). Never the live one. A
        failed look is returned: best effort, the next promotion looks again,
        except under `--revoke-now` (`_finish_promotion`)."""
        if not self.provider.can_list:
            return None
        now = self.engine.clock.now()
        try:
            found = self._forgotten(self._inventory(), keep=set(), now=now)
        except RotatorError as exc:
            self.log.warning("inventory.failed", error=str(exc))
            return exc
        if found and revoke_now:  # incident response: everything older than the new key goes now
            found = tuple(e.model_copy(update={"revoke_after": now, "immediate": True}) for e in found)
        self._take_up_forgotten(found)
        return None


    def _noted_strays(self, ids: tuple[str, ...], found: Any) -> tuple[Retiring, ...]:
        """Unmarked keys the last issuing note of this credential names (rotator.core.provider.IssuingNote: a
        crash or a lost answer between create and mark) that the record does not know (lost or restored since),
        revoked at once: never live. Tags are read only where `ids` (listed) holds a key nobody here knows."""
        known = set(self.record.managed_key_ids())
        if found is not None:
            known |= {k.key_id for k in (found.current, *(e.key for e in found.retiring)) if k is not None}
        if set(ids) <= known:
            return ()
        unmarked = [k for k in self._call(self.provider.list_keys_without_use) if k.mark is None]
        return self._forgotten(unmarked, keep=known, now=self.engine.clock.now())

    def _retire_noted_strays(self) -> None:
        """A rotation resumed from Vault, about to issue again: its issue replaces the last issuing note, the
        only thing that tells an unmarked key made under it (a crash right after the create) from one a person
        made. Looked at first, as a start does (`_noted_strays`); found ones go with the issue's own write."""
        if self.provider.can_list and not self.provider.is_marking_atomic:
            noted = self._noted_strays(tuple(self._call(self.provider.list_key_ids)), None)
            if noted:
                self._apply(machine.Forgotten(noted), defer=True)

    def _inventory(self) -> list[ProviderKey]:
        """The provider's keys as `forgotten_keys` reads them (marks, not last
        use). Where the ids alone cost less (AWS: one ListAccessKeys, not
        that + ListUserTags), they come first: keys the record all knows
        leave nothing to find, and no mark is read (issue 15)."""
        if type(self.provider).list_key_ids is not Provider.list_key_ids:
            if set(self._call(self.provider.list_key_ids)) <= self.record.managed_key_ids():
                return []
        return self._call(self.provider.list_keys_without_use)


def _register_record_secrets(record: StateRecord, provider: Provider) -> None:
    """A restarted process must mask secrets it only knows from the record."""
    if record.pending is not None:
        register_secret(*provider.secret_values(record.pending.data or {}))
    keys = [record.current, *(e.key for e in record.retiring)]
    if record.pending is not None:
        keys.append(record.pending.credential)
    for key in keys:
        if key is not None:
            register_secret(*provider.secret_values(key.handle))
