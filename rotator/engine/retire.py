"""Retiring superseded keys: deactivate, then revoke once grace has passed and, where the provider
reports use, once the key is quiet (held up to max_wait); revocation is confirmed at the provider.
"""

from __future__ import annotations

from typing import Any

from rotator.core import machine, transitions, usage
from rotator.core.clock import parse_rfc3339, to_rfc3339
from rotator.core.crashpoints import crashpoint
from rotator.core.errors import PermanentError, RotatorError, TransientError
from rotator.core.state import KeyRecord, Retiring
from rotator.engine import retry
from rotator.engine.baseline import live_key_ids


class RetireSteps:
    """Retiring superseded keys: deactivate, then revoke once grace has passed and, where the provider
    reports use, once the key is quiet (held up to max_wait); revocation is confirmed at the provider.

    A part of _Run (rotator.engine.run): it uses the run's attributes and methods.
    """

    def _retire(self, key_id: str, *, deactivate: bool) -> None:
        entry = next(e for e in self.record.retiring if e.key.key_id == key_id)
        log, self.log = self.log, self.log.bind(rotation_id=entry.superseded_by)
        if deactivate and self._deletion_follows(key_id):
            # A deletion due the moment the key is deactivated (--revoke-now,
            # `delete_after_deactivation: 0s`): the deactivation would be a call
            # for nothing; the key is deleted instead (docs/CONTRACT-NOTES.md, issue 15).
            deactivate = False
        step = "deactivate" if deactivate else "revoke"
        reads: dict[str, Any] = {}  # what the two checks below read, each path once

        def read(live: Any) -> Any:
            if str(live) not in reads:
                reads[str(live)] = self._call(live.read)
            return reads[str(live)]

        if not entry.immediate and ((not self.policy.has_file and self._taken_on_by_another(entry, step, read))
                                    or self._successor_live_since(entry, step, read)):
            self.log = log
            return
        if not self._may_retire_for_use(entry, step):
            self.log = log
            return
        if entry.key.lacks_secrets() and self._retired_without_secrets(entry, step):
            self.log = log
            return
        try:
            read = self._live_before_retiring()
            if read is True:
                self.log = log
                return  # caught up with the live path: what is due is decided again
            if self._is_named_live(key_id, revoke_now=entry.immediate, read=read):
                if not self.policy.has_file:
                    # Never idle while a live path holds the key, so the idle record's look for keys it forgot
                    # (`idle_forgotten`) never ran: it runs at each refusal, backing off to the retry cap (sim F203).
                    self._take_up_forgotten(self.idle_forgotten())
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

    def _live_before_retiring(self) -> Any:
        """An idle record (a file's, nothing pending) about to retire a key, once a run: the file's live path,
        read for the retirement's own check (is the key live?), is first compared with the record. Restored to
        an older version, the record is behind it (a rotation it does not know went live there): it catches up
        (True), and keys it forgot are retired from then, at once under that rotation's `--revoke-now` (sim
        F194). Otherwise what was read (None: not read here)."""
        if not self.policy.has_file or self.record.pending is not None or self._behind_checked or self._described_key is not None:
            return None  # (a run that just described the path itself knows what it holds)
        self._behind_checked = True
        content = self._call(self._live.read)
        return True if self._recover_if_behind(content) else content

    def _taken_on_by_another(self, entry: Retiring, step: str, read: Any) -> bool:
        """A removed file's record retiring a key that the credential now writing
        its live path has taken on since (renamed twice, the path restored by
        hand and adopted: live again there, and superseded there later): that
        record names it, as current or retiring after this one, and retires it
        on its own schedule; this one lets go of it (sim F126). True when
        handled here (let go, or a read failed: tried again later). `read`: a live path's content."""
        key_id = entry.key.key_id
        try:
            for live in self._known_live_paths():
                owner = read(live).owner()
                if owner is None or owner == self.cred.spec.name:
                    continue
                other, _ = self._call(lambda o=owner: self.engine.read_record(o))  # type: ignore[misc]
                if other is None:
                    continue
                holds = {k.key_id for k in (other.current, other.pending.credential if other.pending else None) if k is not None}
                if key_id in holds or any(e.key.key_id == key_id and e.revoke_after > entry.revoke_after for e in other.retiring):
                    self.log.warning("credential.handed_over", key_id=key_id, to=owner)
                    self._apply(machine.Revoked(key_id))
                    return True
        except RotatorError as exc:
            self._fail(step, exc, key_id=key_id)
            return True
        return False

    def _successor_live_since(self, entry: Retiring, step: str, read: Any) -> bool:
        """A record retiring a key no successor had gone live for when it was found (its data written over by
        hand, `superseded_at` unset): a promotion at one of the paths since (a renamed file that adopted it, a
        removed file's record; or this record's own, which a restore made it forget and a failed catch-up did
        not bring back, sim F217) went live after it, and the key keeps a grace from that promotion (sim F196,
        seed 38357). True when postponed (or a read failed: tried again later)."""
        if entry.superseded_at is not None:
            return False
        grace, now = self.policy.grace, self.engine.clock.now()
        try:
            # Only where the path holds a credential other than this key: an adoption of data that holds none
            # (written over by hand) is no successor; the first credential written after it is (sim F218).
            times = [parse_rfc3339(at) for live in self._known_live_paths(*entry.paths)
                     if (at := read(live).custom_metadata.get("rotator-rotated-at")) and self._holds_another_key(read(live), entry)]
        except RotatorError as exc:
            self._fail(step, exc, key_id=entry.key.key_id)
            return True
        except ValueError:
            return False
        later = [t for t in times if t > entry.revoke_after - grace and now < t + grace]
        if not later:
            return False
        at = max(later)
        self._defer(transitions.update_retiring(self.record, entry.key.key_id,
                                                lambda e: e.model_copy(update={"superseded_at": at, "revoke_after": at + grace})))
        self._write_outcome()
        return True

    def _holds_another_key(self, content: Any, entry: Retiring) -> bool:
        return bool(live_key_ids(content, self.provider) - {entry.key.key_id})

    def _retired_without_secrets(self, entry: Retiring, step: str) -> bool:
        """Its stash entry is gone (`RecordStore.hydrate`): only the handle's
        ids are known. Providers that retire by id do so; one that needs the
        secret (an installation token revokes itself) cannot, and the key is
        done with once it has expired by itself. True when handled here."""
        if not self._needs_lost_secret(entry.key):
            return False
        key_id, now = entry.key.key_id, self.engine.clock.now()
        expires = entry.key.expires_at
        if expires is not None and expires <= now:
            self.log.warning("credential.expired_unrevoked", key_id=key_id, expired_at=to_rfc3339(expires),
                             reason="its stash entry is gone; it expired by itself")
            self._apply(machine.Revoked(key_id))
            return True
        self._fail(step, TransientError(f"the stash entry of {key_id} is gone and {self.provider.kind} needs its secret to "
                                        "revoke it; waiting for it to expire"), key_id=key_id)
        return True

    def _needs_lost_secret(self, key: KeyRecord) -> bool:
        """Its stashed secret parts are not in memory (the stash entry is gone)
        and its provider cannot revoke it by the handle's ids alone."""
        missing = set(key.stashed_fields) - set(key.handle)
        return any(f in self.provider.secret_fields for f in missing) and not self.provider.retires_by_id

    def _deletion_follows(self, key_id: str) -> bool:
        """Deactivating `key_id` now would make its revocation the next action at once."""
        now = self.engine.clock.now()
        deactivated = transitions.apply(self.record, machine.Deactivated(key_id), self.policy, now)
        return machine.next_action(deactivated, self.policy, now, None) == machine.Revoke(key_id)

    def _may_retire_for_use(self, entry: Retiring, step: str) -> bool:
        """Usage-aware revocation (contract §6.10, rotator.core.usage): a key the
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
