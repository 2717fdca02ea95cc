"""The steps from a minted credential to the live one: verify it at the provider, promote it to the live
path with check-and-set, describe it in the path's metadata, or roll back.
"""

from __future__ import annotations

import time
from typing import Any

from rotator.core import machine, transitions
from rotator.core.crashpoints import crashpoint
from rotator.core.errors import RotatorError, TransientError
from rotator.core.provider import IssuedCredential
from rotator.core.timetable import draw_jitter
from rotator.engine import retry
from rotator.engine.baseline import names_keys
from rotator.vault.livepath import LivePath


class PromoteSteps:
    """The steps from a minted credential to the live one: verify it at the provider, promote it to the live
    path with check-and-set, describe it in the path's metadata, or roll back.

    A part of _Run (rotator.engine.run): it uses the run's attributes and methods.
    """

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

    def _is_named_live(self, key_id: str, *, revoke_now: bool = False, read: Any = None) -> bool:
        """Whether a path this credential may have made live holds `key_id`. `revoke_now` (a `--revoke-now`
        entry): a path the file no longer names that is still this credential's own (`vault.path` changed
        since, its data restored there by hand, sim sweep seed 13729) does not keep a key its owner asked to
        revoke at once; the file's path, and a path another credential has taken on, still do. `read`: what the
        file's path held when just read (`RetireSteps._live_before_retiring`), not read again."""
        if self._described_key is not None and key_id != self._described_key:
            # This run's own metadata write (under its lease) just named
            # another key as live, after its check-and-set live write.
            return False

        def key_in(data: Any) -> str | None:
            named = self.provider.live_key(data)
            return named.key_id if named else None

        pending = self.record.pending
        # And where a key the record forgot can have gone live: the proof that it was live nowhere may be old (sim F152).
        lives = self._known_live_paths(*next((e.paths for e in self.record.retiring if e.key.key_id == key_id), []))
        # What the record knows of the key's values: data written over it by hand that holds none of them does not hold it.
        known = next((k for k in (self.record.current, pending.credential if pending else None, *(e.key for e in self.record.retiring))
                      if k is not None and k.key_id == key_id), None)
        hashes = known.value_sha256 if known is not None else ()
        secrets = self.provider.secret_values(known.handle) if known is not None else []
        if revoke_now:
            lives = [live for live in lives if str(live) == str(self._live) or self._call(live.read).owner() != self.cred.spec.name]
        here = str(self._live)
        return any(live.names_as_live(key_id, key_in=key_in if names_keys(self.provider) else None, value_sha256=hashes,
                                      secrets=secrets, read=read if str(live) == here else None) for live in lives)

    def _metadata_names(self, key_id: str) -> bool:
        """A path this credential may have made live names `key_id` in its metadata (`rotator-key-id`), whatever
        its data holds: the key went live there. The sweep, which revokes at once, leaves it alone; a retirement
        with a grace takes it (data written over it may be a later rotation's whose metadata never landed, and
        the key may be in its grace: sim F206)."""
        for live in self._known_live_paths():
            meta = self.engine.store.read_metadata(live.mount, live.path)
            if meta is not None and meta.custom_metadata.get("rotator-key-id") == key_id:
                return True
        return False

    def _known_live_paths(self, *also: str | None) -> list[LivePath]:
        """Every path this credential may have made live: its file's first, the
        one its record last wrote, the one its rotation in flight writes (and
        wrote when this run read it: taking the lease points it at the file's),
        those it wrote before `vault.path` moved on (sim F132, F133), those a
        restore of the record undid name (once read), and `also`."""
        pending, first = self.record.pending, self._initial.pending
        others = {self.record.live_path, pending.target if pending else None, first.target if first else None, *also,
                  *(pending.earlier_targets if pending else ()), *(first.earlier_targets if first else ()),
                  *(self._undone_paths or ())} - {str(self._live), None}
        return [self._live, *(LivePath(self.engine.store, *p.split("/", 1)) for p in sorted(others) if p and "/" in p)]

    @property
    def _live(self) -> LivePath:
        return LivePath(self.engine.store, self.cred.spec.vault.mount, self.cred.spec.vault.path)

    def _promote(self) -> None:
        credential = self._pending_credential()
        pending = self.record.pending
        assert pending is not None
        try:
            if self._recover_from_undone():  # a later rotation live at a path only a restore's undone versions name (sim F125)
                return
            if pending.rotation_id != self._started_here and self._written_over_since(pending):
                return
        except RotatorError as exc:
            self._fail("promote", TransientError(str(exc)))  # a read that failed: tried again, never a rollback
            return
        here = str(self._live)
        last_written = self.record.live_version if self.record.live_path in (None, here) else None
        # By the provider's clock, which may run up to the skew allowance ahead of ours (sim F108).
        expired = credential.expires_at is not None and credential.expires_at <= self.engine.clock.now() + self.policy.skew_allowance
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
            version = self._call(lambda: self._live.write(pending.data or {}, last_written=last_written, credential=self.cred.spec.name,
                                                          before_write=self.ensure_lease))
        except RotatorError as exc:
            self._fail("promote", exc)
            return
        self._wrote_live = version
        crashpoint("after-live-write")
        # Not written on its own: after a crash here the record says
        # `verified`, and the next promotion finds the version already there.
        self._apply(machine.LiveWritten(version), defer=True)

    def _written_over_since(self, pending: Any) -> bool:
        """A resumed promotion (a record restored from before it, or a crash) whose rotation the live path's
        metadata already names, though the path holds other data: it went live and was written over since (by
        a later rotation whose metadata merge never landed, or by hand). Writing its key again would put an
        old key back over the newer one, whose consumers then lose it (sim F134). It is recovered as
        completed instead: the data there is taken on, and this rotation's own key retired."""
        content = self._call(self._live.read)
        if not self._went_live_in(content, pending.rotation_id) or content.data is None or content.data == dict(pending.data or {}):
            return False
        return self._already_completed(pending.rotation_id)

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
                revoke_now=pending.revoke_now,
            ))
        except RotatorError as exc:
            # The credential is live already: never roll it back for metadata.
            self.log.error("vault.metadata_failed", vault_path=str(self._live), error=str(exc))
            self._fail("metadata", exc)
            return
        if self._wrote_live == pending.live_version:
            # Only after this run's own check-and-set live write: a promotion another run wrote may have been
            # written over since (a restore by hand), and then what the path holds is read, not assumed.
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
        promoted = transitions.apply(self.record, machine.Promoted(version, draw_jitter(self.cred.spec.schedule), live_path=str(self._live)),
                                 self.policy, self.engine.clock.now())
        before = self.record
        self._defer(promoted)
        failed = self._retire_forgotten(revoke_now=revoke_now)  # reads only, or writes what it found with the promotion
        if failed is not None and revoke_now:
            # `--revoke-now` asks for every key older than the new one to go now, those the record forgot too: the
            # promotion stays unfinished (`promoted`, retried with backoff like its metadata merge) until that look
            # succeeds; a later scheduled promotion would give them a full grace (sim F188).
            self.record = before
            self._fail("inventory", failed)
            return
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
        try:
            if self._recover_from_undone():  # finished at a path only the versions a restore undid name (sim F111)
                return
        except RotatorError as exc:
            self._fail("rollback", exc)
            return
        if pending.credential is None:
            # Undone before its credential was recorded: it may have completed all the same (a record restored
            # from before its promotion), or left a key at the provider (a crash right after the mint).
            try:
                if self._already_completed(pending.rotation_id):
                    return
            except RotatorError as exc:
                self._fail("rollback", exc)
                return
            # `intent` too: a record restored to a rotation's start may have minted (and stashed) since (sim F116).
            if pending.phase in ("issuing", "intent") and not self._sweep():
                return  # tried again later
            if self.record.pending is None:
                return  # the sweep found the record behind the live path: nothing of this rotation to undo
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
                superseded = superseded or self._held_where_it_wrote_before(pending)  # sim F133
                lost = self._needs_lost_secret(pending.credential)
                if not superseded and not lost:
                    if self._is_named_live(credential.key_id):
                        raise TransientError(f"refusing to revoke {credential.key_id}: a live path names it as the live credential")
                    self.ensure_lease()  # after the reads: a holder that stalled in them stops here
                    self._call(lambda: self.provider.revoke(credential.handle))
                    crashpoint("after-rollback-call")
                elif lost:
                    # Its secret, which its revocation needs (an installation token), is gone with its stash entry:
                    # it dies by itself within its lifetime.
                    self.log.warning("credential.expired_unrevoked", key_id=credential.key_id,
                                     reason="its stash entry is gone; it expires by itself")
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
