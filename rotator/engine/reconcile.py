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

import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from rotator import __version__
from rotator.audit.events import get_logger, register_secret
from rotator.config.spec import LoadedCredential
from rotator.core import machine
from rotator.core.actions import Policy, Request
from rotator.core.clock import Clock, SystemClock
from rotator.core.errors import CasMismatchError, RotatorError
from rotator.core.holder import Identity
from rotator.core.holder import current as holder_identity
from rotator.core.provider import Provider, ProviderContext
from rotator.core.schedule import Revocation
from rotator.core.state import Lease, StateRecord
from rotator.engine.fileless import FilelessCredential
from rotator.engine.notify import Notifier
from rotator.engine.results import EngineOptions, ReconcileResult, _StaleRecordError
from rotator.engine.run import _Run
from rotator.vault.changes import ChangeFeed
from rotator.vault.records import RecordStore, default_stash_prefix, has_inline_secrets
from rotator.vault.store import VaultStore


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
        self.notices = Notifier(self._read_secret)  # consumer notices (rotator.engine.notify): never block a rotation
        # The names of every credential file the caller loaded (`wiring.loaded_names`); None: unknown (some file
        # failed to load, or nobody said). Only `is_gone` reads it.
        self.configured: Callable[[], Collection[str] | None] = lambda: None

    # -- wiring --------------------------------------------------------------

    def state_path(self, name: str) -> str:
        return f"{self.options.state_prefix}/{name}"

    def has_no_file(self, name: str) -> bool:
        """Every credential file loaded and none is named `name`. Unknown is not "no file"."""
        names = self.configured()
        return names is not None and name not in names

    def is_gone(self, name: str) -> bool:
        """No credential file is named `name` (`has_no_file`) and no record either: a renamed file's middle
        name whose record was lost (rotator.engine.baseline, sim F135). Unknown is not gone."""
        return self.has_no_file(name) and self.read_record(name)[0] is None

    def read_record(self, name: str) -> tuple[StateRecord | None, int]:
        """The record as readers see it: no secret value (those are in the stash)."""
        return self.records.read(name)

    def _revive(self, name: str, version: int) -> tuple[StateRecord | None, int]:
        """A record whose latest version was deleted by hand: its newest
        readable version comes back (RecordStore.revive), or none."""
        revived = self.records.revive(name)
        if revived is None or revived.data is None:
            return None, version
        get_logger().warning("state.record_revived", credential=name, vault_version=revived.version)
        return StateRecord.from_vault(revived.data), revived.version

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

    def _look_behind(self, cred: LoadedCredential, provider: Provider, policy: Policy, record: StateRecord,
                     version: int) -> ReconcileResult:
        """A record with nothing pending or retiring whose file was removed is reconciled for nothing else:
        restored to an older version, it would never learn of the rotations since, and the keys they left
        would stay (docs/CONTRACT-NOTES.md, "Issue 10: a removed file's idle record"). Nor is a blocked one,
        until its file changes or someone runs `rotator rotate NAME`: restored to the block, it would never
        learn of the rotation a `rotate` made past it (sim F223). Its live paths are
        read (no write when the record is up to date); one whose metadata names a rotation the record does
        not know takes that path's key back as current and retires every other key of this credential
        after a full grace, under the lease; a blocked one whose rotation went live at one of them is
        recovered there (`_Run.finish_blocked`). Not behind, the provider's keys it does not know that no path
        they can have reached holds (a rotation since that never went live, sim F117) are retired after a
        full grace (`_Run.idle_forgotten`)."""
        run = _Run(self, cred, provider, policy, record, version, None)
        try:
            went = run.went_live_blocked()  # blocked: its rotation went live past the block (sim F223)
            behind = run.behind_live() if went is None else None
            forgotten = run.idle_forgotten() if went is None and behind is None else ()  # sim F117
        except RotatorError as exc:
            get_logger().warning("state.look_behind_failed", credential=cred.spec.name, error=str(exc))
            return ReconcileResult("failed", record, version)  # looked at again: the daemon remembers only an idle look
        if went is None and behind is None and not forgotten:
            return ReconcileResult("idle", record, version)
        if record.lease is not None and self.lease_held_by_other(record.lease, self.clock.now()):
            return ReconcileResult("locked", record, version)
        try:
            run.take_lease()
            if went is not None:
                return run.finish_blocked(went)
            return run.catch_up(*behind) if behind is not None else run.take_forgotten(forgotten)
        except CasMismatchError:
            return ReconcileResult("locked", record, version)

    def lease_held_by_other(self, lease: Lease, now: datetime) -> bool:
        """Another live process holds `lease`. One on another clock (another
        host or boot) is trusted the clock skew allowance past its expiry:
        by its own clock it may still have that long left."""
        same_clock = lease.boot_id is not None and lease.boot_id == self.identity.boot_id
        allowance = timedelta(0) if same_clock else timedelta(seconds=self.options.clock_skew_allowance)
        return lease.is_held_by_other(self.holder, now - allowance)

    # -- the reconcile loop ------------------------------------------------------

    def reconcile(self, cred: LoadedCredential, *, request: Request | None = None,
                  known: tuple[StateRecord | None, int] | None = None, look_behind: bool = False) -> ReconcileResult:
        """Do everything that is due for one credential, under its lease.

        `known`: the record and version a daemon last saw (no read: the first
        write's check-and-set confirms it, and a lost one reads it again).
        `look_behind`: a record with nothing due, a removed file's or a
        blocked one, is compared with its live path (`_look_behind`): the
        daemon asks it once per version of a removed file's record, and of
        a blocked one every `LOOK_AGAIN` (rotator.daemon.loop)."""
        spec = cred.spec
        provider = self.provider_for(cred)
        policy = self.policy_for(cred, provider)
        if known is not None and has_inline_secrets(known[0], provider.secret_fields):
            known = None  # a schema 1 record: read it as Vault has it
        while True:
            record, version = known if known is not None else self.read_record(spec.name)
            if record is None and version > 0 and known is None:
                record, version = self._revive(spec.name, version)
            base = record or StateRecord.new(spec.name, spec.provider)
            now = self.clock.now()
            first = machine.next_action(base, policy, now, request)
            if first is None and not has_inline_secrets(record, provider.secret_fields):
                if look_behind and record is not None and record.moved_to is None and (
                        record.pending is None or machine.is_blocked(record, policy)):
                    return self._look_behind(cred, provider, policy, record, version)
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
