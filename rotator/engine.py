"""The engine: carries out the state machine's actions against Vault and
the provider, one credential at a time, under that credential's lease.

Invariants:
- the state record is written back (check-and-set, lease renewed) after
  every outcome, and `issuing` is written before the provider mints, so a
  crash anywhere is repaired by the next reconcile of any replica;
- a lost check-and-set write means another process took the lease: stop at
  once, with no further side effect;
- `credential.issued` is logged only once the new credential is stashed;
- nothing is revoked while the live path names it (metadata or data), and a
  credential that reached the live path is never rolled back;
- a create that is not idempotent is never retried inside its step: after
  a lost response the next step lists the provider's keys and revokes what
  the rotation made before minting again;
- the orphan sweep renews the lease (a check-and-set write) before each
  revoke, so a holder that was paused past its lease revokes nothing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from rotator import __version__, machine, retry, usage
from rotator.audit import get_logger, redact_text, register_secret
from rotator.baseline import (
    Baseline,
    find_baseline,
    forgotten_keys,
    live_key_ids,
    needs_baseline,
    pending_revoke_now,
    rotation_key_overwritten,
)
from rotator.changes import ChangeFeed
from rotator.clock import Clock, SystemClock, to_rfc3339
from rotator.config import LoadedCredential, Revocation
from rotator.errors import (
    CasMismatchError,
    LeaseLostError,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.faults import crashpoint
from rotator.fileless import FilelessCredential
from rotator.holder import Identity
from rotator.holder import current as holder_identity
from rotator.livepath import LivePath
from rotator.machine import Policy, Request
from rotator.notify import Notifier
from rotator.records import RecordStore, default_stash_prefix, has_inline_secrets, public_view
from rotator.provider import (
    IssueContext,
    IssuedCredential,
    NoCapacityError,
    Provider,
    ProviderContext,
)
from rotator.state import KeyRecord, Lease, Retiring, StateRecord, with_value_hashes
from rotator.timetable import draw_jitter
from rotator.vault import VaultStore

T = TypeVar("T")
MAX_STEPS_PER_RECONCILE = 32


class _StaleRecordError(Exception):
    """The first write of a reconcile started from a remembered record lost
    its check-and-set: the record changed since; read it and start again."""


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

    @property
    def is_failure(self) -> bool:
        return self.status == "failed"


def new_rotation_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class Engine:
    def __init__(
        self,
        store: VaultStore,
        *,
        options: EngineOptions | None = None,
        clock: Clock | None = None,
        shutdown: threading.Event | None = None,
        holder: str | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.store = store
        self.options = options or EngineOptions()
        self.clock = clock or SystemClock()
        self.shutdown = shutdown or threading.Event()
        # `identity`: who the lease names (the simulation runs many replicas in one process).
        self.identity = identity or holder_identity()
        self.holder = holder or self.identity.holder
        self.changes = ChangeFeed(store, mount=self.options.state_mount, prefix=self.options.state_prefix, holder=self.holder)
        opts = self.options
        self.records = RecordStore(store, opts.state_mount, opts.state_prefix, opts.stash_prefix or default_stash_prefix(opts.state_prefix))
        self._providers: dict[tuple[str, str, str], Provider] = {}
        self._policies: dict[tuple[str, str, str], Policy] = {}
        self._providers_lock = threading.Lock()
        self.notices = Notifier(self._read_secret)  # consumer notices (rotator.notify): never block a rotation

    # -- wiring --------------------------------------------------------------

    def state_path(self, name: str) -> str:
        return f"{self.options.state_prefix}/{name}"

    def read_record(self, name: str) -> tuple[StateRecord | None, int]:
        """The record as readers see it: no secret value (those are in the stash)."""
        return self.records.read(name)

    def _read_secret(self, ref: str) -> str:
        value = self.store.read_ref(ref)
        register_secret(value)
        return value

    def provider_for(self, cred: LoadedCredential) -> Provider:
        key = (cred.spec.name, cred.fingerprint, cred.provider_cls.__qualname__)
        stale: list[Provider] = []
        with self._providers_lock:  # held for the dict only: making a provider does no I/O
            provider = self._providers.get(key)
            if provider is None:
                provider = self._new_provider(cred)
                stale = [self._providers.pop(k) for k in [k for k in self._providers if k[0] == cred.spec.name]]
                self._providers[key] = provider
        for old in stale:  # the file changed: its old provider goes, closed outside the lock (closing may call the API)
            old.close()
        return provider

    def mark_moved(self, name: str, version: int, *, to: str) -> None:
        """The renamed file's old record: its keys now live in `to`'s record."""
        record, current = self.read_record(name)
        if record is None or current != version:
            return  # changed meanwhile: both records then name the same keys, and revoking twice is harmless
        moved = record.model_copy(update={"current": None, "retiring": [], "moved_to": to, "lease": None})
        try:
            self.store.write(self.options.state_mount, self.state_path(name), moved.to_vault(), cas=version)
        except RotatorError as exc:
            get_logger().warning("state.move_failed", credential=name, moved_to=to, error=str(exc))

    def _new_provider(self, cred: LoadedCredential) -> Provider:
        context = ProviderContext(read_secret=self._read_secret, clock=self.clock, shutdown=self.shutdown, user_agent=f"rotator/{__version__}",
                                  register_secret=register_secret)
        return cred.provider_cls(cred.params, context)

    def close(self) -> None:
        """Close every provider (they may hold short-lived tokens of their own),
        after giving queued consumer notices a short while to go out."""
        self.notices.close()
        with self._providers_lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                provider.close()
            except Exception as exc:  # closing is best effort
                get_logger().warning("provider.close_failed", provider=provider.kind, error=f"{type(exc).__name__}: {exc}")

    def policy_for(self, cred: LoadedCredential, provider: Provider | None = None) -> Policy:
        """The machine's view of a credential file. Cached, and made without
        keeping a provider around: a daemon with thousands of idle
        credentials keeps providers only for those it acted on."""
        key = (cred.spec.name, cred.fingerprint, cred.provider_cls.__qualname__)
        policy = self._policies.get(key)
        if policy is None:
            provider = provider or self._providers.get(key) or self._new_provider(cred)
            policy = Policy(schedule=cred.spec.schedule, grace=cred.spec.grace, retire_delay=provider.retire_delay(),
                            fingerprint=cred.fingerprint, revocation=cred.spec.revocation or Revocation(),
                            has_file=not isinstance(cred, FilelessCredential),
                            skew_allowance=timedelta(seconds=self.options.clock_skew_allowance), clock=self.identity.boot_id)
            self._policies[key] = policy
        return policy

    def lease_held_by_other(self, lease: Lease, now: datetime) -> bool:
        """Another live process holds `lease`. One on another clock (another
        host or boot) is trusted the clock skew allowance past its expiry:
        by its own clock it may still have that long left."""
        same_clock = lease.boot_id is not None and lease.boot_id == self.identity.boot_id
        allowance = timedelta(0) if same_clock else timedelta(seconds=self.options.clock_skew_allowance)
        return lease.is_held_by_other(self.holder, now - allowance)

    # -- the reconcile loop ------------------------------------------------------

    def reconcile(self, cred: LoadedCredential, *, request: Request | None = None,
                  known: tuple[StateRecord | None, int] | None = None) -> ReconcileResult:
        """Do everything that is due for one credential, under its lease.

        `known`: the record and version a daemon last saw (no read: the first
        write's check-and-set confirms it, and a lost one reads it again)."""
        spec = cred.spec
        provider = self.provider_for(cred)
        policy = self.policy_for(cred, provider)
        if known is not None and has_inline_secrets(known[0], provider.secret_fields):
            known = None  # a schema 1 record: read it as Vault has it
        while True:
            record, version = known if known is not None else self.read_record(spec.name)
            base = record or StateRecord.new(spec.name, spec.provider)
            now = self.clock.now()
            first = machine.next_action(base, policy, now, request)
            if first is None and not has_inline_secrets(record, provider.secret_fields):
                return ReconcileResult("idle", record, version)
            if base.lease is not None and self.lease_held_by_other(base.lease, now):
                return ReconcileResult("locked", record, version)
            run = _Run(self, cred, provider, policy, base, version, request, from_memory=known is not None)
            try:
                # A rotation's start does nothing at the provider but read:
                # its lease rides on the write that marks it `issuing`.
                run.take_lease(defer=isinstance(first, machine.StartRotation))
                return run.execute()
            except _StaleRecordError:
                known = None
            except CasMismatchError:
                if known is None:
                    return ReconcileResult("locked", record, version)
                known = None


class _Run:
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
        self.status = "progressed"
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
        self._described_key: str | None = None  # the key this run's metadata write named as live
        self._initial = record
        _register_record_secrets(record, provider)

    # -- persistence -------------------------------------------------------------

    def _write(self, record: StateRecord) -> None:
        # rotator.records: new secrets go to the stash first, then the record.
        try:
            self.record, self.version = self.engine.records.save(
                record, cas=self.version, previous=self._persisted, secret_fields=self.provider.secret_fields, scrub=redact_text,
            )
        except CasMismatchError:
            if self._from_memory and not self._wrote:
                raise _StaleRecordError() from None
            raise
        self._persisted, self._dirty, self._wrote = self.record, False, True
        ours = record.lease is not None and record.lease.holder == self.engine.holder
        self._lease_until = record.lease.expires_at if ours and record.lease is not None else None
        self._released = record.lease is None
        durable, self._durable = self._durable, []
        for announce in durable:
            announce()

    def _defer(self, record: StateRecord) -> None:
        """Keep an outcome in memory: the next write carries it."""
        self.record, self._dirty = record, True

    def ensure_lease(self) -> None:
        """Before a side effect: a process that was paused (or slow) may have
        outlived its lease; renew it first (check-and-set), or stop."""
        margin = timedelta(seconds=min(60.0, self.engine.options.lease_seconds / 5))
        if self._lease_until is None or self.engine.clock.now() >= self._lease_until - margin:
            self.persist(self.record)

    def _lease(self) -> Lease:
        me = self.engine.identity
        return Lease(
            holder=self.engine.holder,
            expires_at=self.engine.clock.now() + timedelta(seconds=self.engine.options.lease_seconds),
            host=me.host, boot_id=me.boot_id, pid_namespace=me.pid_namespace, pid=me.pid, start_ticks=me.start_ticks,
        )

    def take_lease(self, *, defer: bool = False) -> None:
        update: dict[str, Any] = {"lease": self._lease()}
        if self.policy.has_file:
            # What a removed file's keys need to be retired (rotator.fileless).
            update["params"] = json.loads(json.dumps(self.cred.spec.params, default=str))  # plain JSON, whatever YAML made
            update["source"] = self.cred.spec.source or None
            update["grace_seconds"] = self.cred.spec.grace.total_seconds()
            if self.record.live_path is None or self.record.live_version is None:
                # A record from before live_path was kept, or one that has not written its path yet: the
                # file's path, so that a first rotation whose file is removed is still undone (sim F51).
                update["live_path"] = str(self._live)
            pending = self.record.pending
            if pending is not None and pending.target != str(self._live):
                # Where the rotation writes, known before it writes: a removed
                # file's rotation is finished (or undone) where it went live.
                update["pending"] = pending.model_copy(update={"target": str(self._live)})
        if defer:
            self._defer(self.record.model_copy(update=update))
            return
        self._write(self.record.model_copy(update=update))

    def persist(self, record: StateRecord) -> None:
        """Write the record back, renewing the lease; a lost CAS means the lease is gone."""
        try:
            self._write(record.model_copy(update={"lease": self._lease()}))
        except CasMismatchError:
            raise LeaseLostError(f"{record.credential}: another process took the lease") from None

    def release(self) -> None:
        if self._released and not self._dirty:
            return  # the last write released it already
        try:
            self._write(self.record.model_copy(update={"lease": None}))
        except RotatorError as exc:  # it expires by itself
            self.log.warning("lease.release_failed", error=str(exc))

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        self.events.append(event)
        getattr(self.log, level)(event, **fields)

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
            for _ in range(MAX_STEPS_PER_RECONCILE):
                if self.engine.shutdown.is_set():
                    break  # finish the step in flight, start no new one
                now = self.engine.clock.now()
                action = machine.next_action(self.record, self.policy, now, self.request)
                if action is None:
                    break
                self.record = self.engine.records.hydrate(self.record, action, self.provider.secret_fields)
                self._do(action)
        except LeaseLostError as exc:
            self.log.warning("lease.lost", error=str(exc))
            return ReconcileResult("locked", self._public(), self.version, self.events)
        except RotatorError as exc:
            # Vault failed while persisting: the record in Vault is still a
            # consistent earlier state; the next reconcile resumes from it.
            self.emit("rotation.failed", "error", step="persist", error=str(exc), will_retry=True, next_attempt_at=None)
            self.status = "failed"
        self.release()
        if self._wakes_earlier():
            self.engine.changes.record(self.record.credential)
        return ReconcileResult(self.status, self._public(), self.version, self.events, self.duration_seconds)

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
        record = machine.apply(self.record, outcome, self.policy, now)
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
        will_retry = machine.will_retry(self.record, self.policy)
        nxt = self.record.next_attempt_at
        self.status = "failed"
        self.emit("rotation.failed", "error", step=step, error=error, will_retry=will_retry,
                  next_attempt_at=to_rfc3339(nxt) if will_retry and nxt else None)

    # -- steps ---------------------------------------------------------------------

    def _start(self, action: machine.StartRotation) -> None:
        now = self.engine.clock.now()
        try:
            found = self._baseline() if needs_baseline(self.record, str(self._live)) else None
        except RotatorError as exc:
            self._fail("start", exc)
            return
        preexisting: tuple[str, ...] = ()
        if self.provider.can_list and not self.provider.is_marking_atomic:
            try:
                preexisting = tuple(self._call(self.provider.list_key_ids))
            except RotatorError as exc:
                self._fail("issue", exc)
                return
        rotation_id = new_rotation_id(now)
        self._bind_rotation(rotation_id)
        record = self._end_expired_pause(self.record, now)
        if found is not None:
            record = machine.apply(record, machine.Baselined(found.current, found.live_version, found.live_path, found.retiring), self.policy, now)
        started = machine.apply(record, machine.Started(rotation_id, action.reason, action.revoke_now, preexisting, str(self._live)), self.policy, now)
        self._started_here = rotation_id
        self.request = None
        self._started_monotonic = time.monotonic()

        def announce() -> None:
            self.emit("rotation.started", reason=action.reason)
            crashpoint("after-intent")

        self._durable.append(announce)  # logged once the intent is in Vault
        if found is None:
            self._defer(started)  # written with `issuing`: until then nothing happened at the provider
            return
        self.persist(started)
        if found.moved_from is not None:
            self.engine.mark_moved(*found.moved_from, to=self.cred.spec.name)

    def _retire_forgotten(self, *, revoke_now: bool) -> None:
        """After a promotion: keys of this credential at the provider that
        the record does not know (it was restored from an older version, or
        lost: a later rotation's key, stashed or in grace) are retired after
        a full grace. Never the live one. Best effort: the next promotion
        looks again."""
        if not self.provider.can_list:
            return
        now = self.engine.clock.now()
        try:
            found = forgotten_keys(self.record, self._call(self.provider.list_keys), name=self.cred.spec.name, keep=set(),
                                   grace=self.policy.grace, now=now, read_other=self.engine.read_record, clock=self.policy.clock,
                                   keeps_inactive=self.policy.retire_delay is not None)
            if found:
                live = live_key_ids(self._call(self._live.read), self.provider)
                found = tuple(e for e in found if e.key.key_id not in live)
        except RotatorError as exc:
            self.log.warning("inventory.failed", error=str(exc))
            return
        if found and revoke_now:  # incident response: everything older than the new key goes now
            found = tuple(e.model_copy(update={"revoke_after": now, "immediate": True}) for e in found)
        if found:
            self.log.warning("inventory.forgotten_keys", key_ids=[e.key.key_id for e in found])
            self._apply(machine.Forgotten(found))

    def _end_expired_pause(self, record: StateRecord, now: datetime) -> StateRecord:
        """A pause whose `until` passed ends with the first scheduled rotation after it, audited."""
        paused = record.paused
        if paused is None or paused.is_active(now):
            return record
        self.emit("rotation.resumed", reason=paused.reason, until=to_rfc3339(paused.until) if paused.until else None,
                  by="until", paused_by=paused.by)
        return record.model_copy(update={"paused": None})

    def _sweep(self) -> None:
        pending = self.record.pending
        assert pending is not None
        revoked: list[str] = []
        if self.provider.can_list:
            try:
                orphans = [key for key in self._call(self.provider.list_keys) if self._is_orphan(key, pending)]
                revoked = self._revoke_orphans(orphans)
            except RotatorError as exc:
                self._fail("sweep", exc)
                return
        try:
            revoked += self._sweep_stash(revoked)
        except RotatorError as exc:
            self._fail("sweep", exc)
            return
        self._apply(machine.Swept(tuple(revoked)))
        crashpoint("after-sweep")

    def _revoke_orphans(self, orphans: list[Any]) -> list[str]:
        """Revoke keys this credential's rotations left behind, each only
        while our lease still holds and nothing names it as live."""
        revoked: list[str] = []
        for key in orphans:
            if key.key_id in self.record.managed_key_ids() or self._is_named_live(key.key_id):
                continue
            # Renewed after the reads, right before the call: a holder that stalled reading stops here.
            self.persist(self.record)  # renews the lease, or raises LeaseLostError: a stale holder stops here
            self._call(lambda k=key: self.provider.revoke(k.handle))
            revoked.append(key.key_id)
            self.emit("orphan.revoked", key_id=key.key_id)
        return revoked

    def _baseline(self) -> Baseline | None:
        content = self._call(self._live.read)
        return find_baseline(
            self.record, content, name=self.cred.spec.name, live_path=str(self._live), provider=self.provider,
            grace=self.policy.grace, now=self.engine.clock.now(), read_other=self.engine.read_record, clock=self.policy.clock,
        )

    def _sweep_stash(self, revoked: list[str]) -> list[str]:
        """A credential stashed but never recorded (a crash between the two
        writes): revoked from its stash entry, which lists can't (GitHub
        tokens), under the same rules as `_revoke_orphans`."""
        found = self.engine.records.orphan(self.record, self.provider.secret_fields)
        if found is None:
            return []
        path, entry = found
        if entry.key_id in revoked:
            self.engine.records.forget(path)
            return []
        if entry.key_id in self.record.managed_key_ids() or self._is_named_live(entry.key_id):
            return []
        self.persist(self.record)  # renews the lease right before the call, or raises LeaseLostError
        self._call(lambda: self.provider.revoke(entry.handle))
        self.emit("orphan.revoked", key_id=entry.key_id)
        self.engine.records.forget(path)
        return [entry.key_id]

    def _is_orphan(self, key: Any, pending: Any) -> bool:
        """Made by this very rotation (its mark, or unmarked and new since it
        began) and unknown to the record. Keys of older rotations are never
        swept: one may be in its grace under a record that was lost."""
        if key.key_id in self.record.managed_key_ids():
            return False
        if key.mark is not None:
            return key.mark.credential == self.cred.spec.name and key.mark.rotation_id == pending.rotation_id
        if self.provider.is_marking_atomic or key.key_id in pending.preexisting_key_ids or key.created_at is None:
            return False
        # An unmarked key made since this rotation began, on a scope the
        # rotator manages: the crash fell between "create" and "mark".
        return key.created_at >= pending.started_at - timedelta(seconds=5)

    def _issue(self) -> None:
        pending = self.record.pending
        assert pending is not None
        try:
            # A rotation started by this very run cannot have completed before.
            if pending.rotation_id != self._started_here and self._already_completed(pending.rotation_id):
                return
        except RotatorError as exc:
            self._fail("issue", exc)
            return
        self._apply(machine.IssueBegun())
        crashpoint("after-issuing-marker")
        ctx = IssueContext(credential=self.cred.spec.name, rotation_id=pending.rotation_id, managed_key_ids=frozenset(self.record.managed_key_ids()))
        try:
            credential = self._issue_with_room(ctx)
        except RotatorError as exc:
            self._fail("issue", exc)
            return
        register_secret(*self.provider.secret_values(credential.data, credential.handle))
        crashpoint("after-issue")
        try:
            # The record keeps the SHA-256 of each secret value, never the value (leak response, rotator.leak).
            issued = machine.apply(self.record, machine.Issued(credential), self.policy, self.engine.clock.now())
            issued = with_value_hashes(issued, self.provider.secret_values(credential.data, credential.handle))
            # The stash now; the record names it with the verification's
            # outcome: a crash before that leaves `issuing`, whose sweep
            # revokes this key from its stash entry.
            self._defer(self.engine.records.stash(issued, secret_fields=self.provider.secret_fields))
        except RotatorError:
            if not self._stash_landed(credential):
                self._discard(credential)
            raise
        self.emit("credential.issued", key_id=credential.key_id)
        crashpoint("after-stash")

    def _already_completed(self, rotation_id: str) -> bool:
        """A record restored from before this rotation's promotion: the live
        path says it completed. Minting again could delete the live key (a
        retry-safe create removes what "its" lost create left)."""
        content = self._call(self._live.read)
        if content.owner() != self.cred.spec.name or content.custom_metadata.get("rotator-rotation-id") != rotation_id:
            return self._live_write_landed(content)
        named = self.provider.live_key(content.data) if content.data else None
        current = None
        if named is not None:
            current = KeyRecord(key_id=named.key_id, rotation_id=rotation_id, handle=dict(named.handle),
                                issued_at=named.created_at or self.engine.clock.now())
        # Data written over the rotation's key since (the metadata still names it): that key is retired.
        overwritten = self._call(lambda: rotation_key_overwritten(
            content, self.provider, current, rotation_id=rotation_id, name=self.cred.spec.name, grace=self.policy.grace,
            now=self.engine.clock.now(), revoke_now=pending_revoke_now(self.record), clock=self.policy.clock))
        self._apply(machine.Recovered(current, content.version, str(self._live), overwritten))
        self.log.warning("rotation.already_completed", key_id=current.key_id if current else None, vault_version=content.version)
        self.status = "completed"
        if self.request is not None and self.request.revoke_now:
            return True  # the key live when `--revoke-now` was asked is the one recovered: it is replaced too
        self.request = None
        return True

    def _live_write_landed(self, content: Any) -> bool:
        """The live path holds exactly what this rotation stashed, though the
        record says it never got that far (restored from an older version, or
        a crash between the live write and its metadata): it went live.
        Minting again would revoke it (a retry-safe create removes what "its"
        lost create left), so the promotion is finished instead (sim F17)."""
        named = self.provider.live_key(content.data) if content.data else None
        current = self.record.current
        if content.data is None or (named is not None and current is not None and named.key_id == current.key_id):
            return False  # the live path holds the current key: the usual case, no stash read
        found = self.engine.records.orphan(self.record, self.provider.secret_fields)
        if found is None or found[1].data != content.data:
            return False
        _, entry = found
        issued = IssuedCredential(key_id=entry.key_id, data=dict(entry.data or {}), handle=dict(entry.handle))
        self._apply(machine.Issued(issued))
        self._apply(machine.LiveWritten(content.version))
        self.log.warning("rotation.live_write_recovered", key_id=entry.key_id, vault_version=content.version)
        return True

    def _mint(self, ctx: IssueContext) -> IssuedCredential:
        # A create that is not idempotent is repeated inside the step only
        # when the provider refused it before acting (a rate limit with
        # Retry-After); any other transient failure may have minted, so the
        # step fails and the next one sweeps first.
        if self.provider.is_issue_retry_safe:
            return self._call(lambda: self.provider.issue(ctx))

        def attempt() -> IssuedCredential:
            try:
                return self.provider.issue(ctx)
            except TransientError as exc:
                if exc.retry_after is None:
                    raise _MayHaveActed(exc) from None
                raise

        try:
            return self._call(attempt)
        except _MayHaveActed as wrapped:
            raise wrapped.error from None

    def _issue_with_room(self, ctx: IssueContext) -> IssuedCredential:
        try:
            return self._mint(ctx)
        except NoCapacityError as exc:
            live = {self.record.current.key_id} if self.record.current else set()
            in_the_way = exc.blocking_key_ids - live
            pending = self.record.pending
            if not in_the_way:
                raise
            if pending is not None and self.provider.can_list:
                # A key one of our own rotations left (a lost create) is in the way.
                orphans = [k for k in self._call(self.provider.list_keys) if k.key_id in in_the_way and self._is_orphan(k, pending)]
                in_the_way -= set(self._revoke_orphans(orphans))
            # Room can be made only from our own keys already past grace.
            now = self.engine.clock.now()
            ours = {e.key.key_id for e in self.record.retiring if now >= machine.grace_ends(e, self.policy)}
            if not in_the_way <= ours:
                waiting = [machine.grace_ends(e, self.policy) for e in self.record.retiring if e.key.key_id in in_the_way - ours]
                if in_the_way <= ours | {e.key.key_id for e in self.record.retiring}:
                    # Only our own keys, some still in grace: room comes by itself when it ends.
                    raise TransientError(f"{exc}; retrying when the grace ends",
                                         retry_after=max(1.0, (min(waiting) - now).total_seconds())) from None
                raise
            for key_id in sorted(in_the_way):
                self._retire(key_id, deactivate=False)
            still = sorted(in_the_way & {e.key.key_id for e in self.record.retiring})
            if still:
                raise TransientError(f"no room for a new key yet: revoking {', '.join(still)} failed; will retry") from None
            return self._mint(ctx)

    def _stash_landed(self, credential: IssuedCredential) -> bool:
        """After a failed stash write: did it apply all the same (a lost
        response)? Unsure counts as yes: a key left unstashed is swept (it
        carries this rotation's mark), a key revoked under a stash is not."""
        pending = self.record.pending
        assert pending is not None
        try:
            return self.engine.records.is_stashed(self.cred.spec.name, pending.rotation_id, credential.key_id)
        except RotatorError:
            return True

    def _discard(self, credential: IssuedCredential) -> None:
        """The stash failed: revoke the new credential rather than orphan it."""
        try:
            self._call(lambda: self.provider.revoke(credential.handle))
            self.emit("orphan.revoked", key_id=credential.key_id)
        except RotatorError as exc:
            self.log.error("orphan.revoke_failed", key_id=credential.key_id, error=str(exc))

    def _pending_credential(self) -> IssuedCredential:
        pending = self.record.pending
        assert pending is not None and pending.credential is not None
        return IssuedCredential(
            key_id=pending.credential.key_id,
            data=dict(pending.data or {}),
            handle=dict(pending.credential.handle),
            expires_at=pending.credential.expires_at,
        )

    def _verify(self) -> None:
        credential = self._pending_credential()
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self.provider.verify(credential)

        try:
            # SIGTERM finishes this step: verification runs out its (bounded)
            # budget rather than turn a shutdown into a rollback.
            self._call(attempt, retry.VERIFY, max_seconds=self.provider.verify_budget.total_seconds(), watch_shutdown=False)
        except RotatorError as exc:
            self._fail("verify", exc)
            return
        self._apply(machine.Verified(attempts))
        self._verified_here = True
        self.emit("credential.verified", key_id=credential.key_id, attempts=attempts)
        crashpoint("after-verify")

    def _is_named_live(self, key_id: str) -> bool:
        if self._described_key is not None and key_id != self._described_key:
            # This run's own metadata write (under its lease) just named
            # another key as live, after its check-and-set live write.
            return False

        def key_in(data: Any) -> str | None:
            named = self.provider.live_key(data)
            return named.key_id if named else None

        # Every path this credential may have made live: its file's, the one
        # its record last wrote, and the one its rotation in flight writes.
        pending = self.record.pending
        paths = {str(self._live), self.record.live_path, pending.target if pending else None}
        lives = [self._live] + [LivePath(self.engine.store, *p.split("/", 1)) for p in sorted(paths - {str(self._live), None}) if "/" in p]
        return any(live.names_as_live(key_id, key_in=key_in) for live in lives)

    @property
    def _live(self) -> LivePath:
        return LivePath(self.engine.store, self.cred.spec.vault.mount, self.cred.spec.vault.path)

    def _promote(self) -> None:
        credential = self._pending_credential()
        pending = self.record.pending
        assert pending is not None
        here = str(self._live)
        last_written = self.record.live_version if self.record.live_path in (None, here) else None
        expired = credential.expires_at is not None and credential.expires_at <= self.engine.clock.now()
        if not self._verified_here and not expired:
            # Verified by another run (a crash since, or a record restored from
            # an older version): it may have been revoked meanwhile. Verified
            # again before it goes live (sim F25). One that has simply outlived
            # its own expiry (a token's hour) is not: undoing it here would let
            # a writer stalled past its lease land it on a path left unwritten.
            try:
                self._call(lambda: self.provider.verify(credential), retry.VERIFY,
                           max_seconds=self.provider.verify_budget.total_seconds(), watch_shutdown=False)
            except RotatorError as exc:
                self._fail("verify", exc)
                return
            self._verified_here = True
        try:
            self.ensure_lease()
            version = self._call(lambda: self._live.write(pending.data or {}, last_written=last_written, credential=self.cred.spec.name))
        except RotatorError as exc:
            self._fail("promote", exc)
            return
        crashpoint("after-live-write")
        # Not written on its own: after a crash here the record says
        # `verified`, and the next promotion finds the version already there.
        self._apply(machine.LiveWritten(version), defer=True)

    def _describe_live(self) -> None:
        """The promotion's second half: until the metadata names the new
        key, the old one is not superseded (its revocation would be refused)."""
        credential = self._pending_credential()
        pending = self.record.pending
        assert pending is not None and pending.live_version is not None
        try:
            self.ensure_lease()
            self._call(lambda: self._live.describe(
                credential=self.cred.spec.name, provider=self.cred.spec.provider, key_id=credential.key_id,
                rotation_id=pending.rotation_id, rotated_at=pending.live_at or self.engine.clock.now(), expires_at=credential.expires_at,
            ))
        except RotatorError as exc:
            # The credential is live already: never roll it back for metadata.
            self.log.error("vault.metadata_failed", vault_path=str(self._live), error=str(exc))
            self._fail("metadata", exc)
            return
        self._described_key = credential.key_id
        crashpoint("after-metadata")
        self._finish_promotion(credential, pending.live_version)
        crashpoint("after-promote")

    def _finish_promotion(self, credential: IssuedCredential, version: int) -> None:
        # Logged before the record says so: after a crash in between, the
        # recovery logs it again (at least once), never not at all.
        self.emit("credential.promoted", key_id=credential.key_id, vault_path=str(self._live), vault_version=version)
        rotation_id = self.record.pending.rotation_id if self.record.pending else ""
        revoke_now = bool(self.record.pending and self.record.pending.revoke_now)
        self.request = None
        promoted = machine.apply(self.record, machine.Promoted(version, draw_jitter(self.cred.spec.schedule), live_path=str(self._live)),
                                 self.policy, self.engine.clock.now())
        self._defer(promoted)
        self._retire_forgotten(revoke_now=revoke_now)  # reads only, or writes what it found with the promotion
        if self._dirty and not self._next_is_retirement():
            # Otherwise written with the retirement's outcome (`--revoke-now`):
            # after a crash before it the promotion is found done and redone.
            self._write_outcome()
        if self._started_monotonic is not None:
            self.duration_seconds = time.monotonic() - self._started_monotonic
        duration_ms = int(self.duration_seconds * 1000) if self.duration_seconds is not None else None
        self.emit("rotation.completed", duration_ms=duration_ms)
        self.engine.notices.promoted(self.cred.spec, key_id=credential.key_id, vault_version=version, rotation_id=rotation_id,
                                     at=self.engine.clock.now())
        self.status = "completed"
        self.log = self.log.unbind("rotation_id")

    def _roll_back(self) -> None:
        pending = self.record.pending
        assert pending is not None
        superseded = False
        if pending.credential is not None:
            credential = self._pending_credential()
            try:
                live_version = self._call(lambda: self._live.version_holding(pending.data)) if pending.data else None
                if live_version is not None:
                    # It reached the live path after all: it is live, keep it.
                    self._apply(machine.LiveWritten(live_version))
                    return
                since = (self.record.live_version or 0) if self.record.live_path in (None, str(self._live)) else 0
                # Live once and superseded since (another record took the path on): a grace, not a revoke (sim F21).
                superseded = bool(pending.data) and self._call(lambda: self._live.held_before(pending.data, since=since))
                if not superseded:
                    if self._is_named_live(credential.key_id):
                        raise TransientError(f"refusing to revoke {credential.key_id}: a live path names it as the live credential")
                    self.ensure_lease()  # after the reads: a holder that stalled in them stops here
                    self._call(lambda: self.provider.revoke(credential.handle))
                    crashpoint("after-rollback-call")
            except RotatorError as exc:
                self._fail("rollback", exc)
                return
        failed_step, error = pending.failed_step or "verify", self.record.last_error or "verification failed"
        if not self.policy.has_file:
            failed_step, error = "removed", "its credential file was removed: the unfinished rotation is undone"
        if pending.credential is not None:
            self.emit("rotation.rolled_back", "warning", key_id=pending.credential.key_id, **({"superseded": True} if superseded else {}))
        self._apply(machine.RolledBack(superseded=superseded))
        self._report_failure(failed_step, error)

    def _retire(self, key_id: str, *, deactivate: bool) -> None:
        entry = next(e for e in self.record.retiring if e.key.key_id == key_id)
        log, self.log = self.log, self.log.bind(rotation_id=entry.superseded_by)
        step = "deactivate" if deactivate else "revoke"
        if not self._may_retire_for_use(entry, step):
            self.log = log
            return
        try:
            if self._is_named_live(key_id):
                raise PermanentError(f"refusing to retire {key_id}: the live path names it as the live credential")
            self.ensure_lease()  # after the reads, right before the call: a holder that stalled in them stops here
            if deactivate:
                self._call(lambda: self.provider.deactivate(entry.key.handle))
            else:
                self._call(lambda: self.provider.revoke(entry.key.handle))
                crashpoint("after-revoke-call")
                confirm_seconds = self.provider.confirm_budget.total_seconds()
                if not self._call(lambda: self._confirm_revoked(entry.key.handle), retry.CONFIRM, max_seconds=confirm_seconds):
                    raise TransientError(f"{self.provider.kind} has not yet confirmed the revocation of {key_id}")
        except RotatorError as exc:
            self._fail(step, exc, key_id=key_id)
            self.log = log
            return
        self.emit(f"credential.{'deactivated' if deactivate else 'revoked'}", key_id=key_id)
        if deactivate:
            # A revocation due at once carries it: redone after a crash, deactivating twice is harmless.
            self._apply(machine.Deactivated(key_id), defer=True)
            if not self._next_is_retirement():
                self._write_outcome()
        else:
            self._apply(machine.Revoked(key_id))
        self.log = log
        crashpoint(f"after-{step}")

    def _may_retire_for_use(self, entry: Retiring, step: str) -> bool:
        """Usage-aware revocation (contract §6.10, rotator.usage): a key the
        provider reports in use is held, and checked again with backoff."""
        revocation = self.policy.revocation
        if not usage.should_check(entry, revocation, reports_use=self.provider.reports_key_use):
            return True
        key_id, now = entry.key.key_id, self.engine.clock.now()
        deadline = usage.max_wait_until(entry, revocation)
        try:
            last_used = self._call(lambda: self.provider.last_used(entry.key.handle))
        except RotatorError as exc:
            if now < deadline:
                self._fail(step, exc, key_id=key_id)
                return False
            last_used = entry.last_used_at  # past max_wait: retire it whatever the provider says
        decision = usage.decide(entry, last_used, revocation, grace=self.policy.grace, now=now)
        used = to_rfc3339(last_used) if last_used else None
        if decision.verdict == "held":
            self.persist(usage.held(self.record, key_id, decision, now))
            assert decision.retry_at is not None
            self.emit("revocation.held", "warning", key_id=key_id, last_used=used, retry_at=to_rfc3339(decision.retry_at),
                      max_wait_until=to_rfc3339(deadline))
            return False
        if decision.verdict == "forced":
            self.emit("revocation.forced", "error", key_id=key_id, last_used=used, max_wait_until=to_rfc3339(deadline),
                      held_since=to_rfc3339(entry.held_since) if entry.held_since else None)
        return True

    def _confirm_revoked(self, handle: Any) -> bool:
        if not self.provider.is_revoked(handle):
            raise TransientError("not yet revoked")
        return True


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
