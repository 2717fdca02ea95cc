"""The steps up to a minted credential: start a rotation, sweep orphans, issue (with room made, the
credential stashed in Vault before it is used), each of them safe to re-run after a crash.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from rotator.audit.events import register_secret
from rotator.core import machine, transitions
from rotator.core.clock import to_rfc3339
from rotator.core.crashpoints import crashpoint
from rotator.core.errors import RotatorError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, NoCapacityError
from rotator.core.state import KeyRecord, StateRecord, with_value_hashes
from rotator.engine.baseline import (
    Baseline,
    find_baseline,
    is_behind,
    issued_unmarked,
    live_key_ids,
    needs_baseline,
    promoted_before,
    pending_revoke_now,
    retiring_from,
    rotation_key_overwritten,
    under_revoke_now,
)
from rotator.engine.results import _MayHaveActed, new_rotation_id
from rotator.vault.livepath import LivePath


class IssueSteps:
    """The steps up to a minted credential: start a rotation, sweep orphans, issue (with room made, the
    credential stashed in Vault before it is used), each of them safe to re-run after a crash.

    A part of _Run (rotator.engine.run): it uses the run's attributes and methods.
    """

    def _start(self, action: machine.StartRotation) -> None:
        now = self.engine.clock.now()
        try:
            found = self._baseline() if needs_baseline(self.record, str(self._live)) else None
        except RotatorError as exc:
            self._fail("start", exc)
            return
        preexisting: tuple[str, ...] = ()
        noted: tuple[Any, ...] = ()
        if self.provider.can_list and not self.provider.is_marking_atomic:
            try:
                preexisting = tuple(self._call(self.provider.list_key_ids))
                noted = self._noted_strays(preexisting, found)  # before this rotation's issuing note replaces the last
            except RotatorError as exc:
                self._fail("issue", exc)
                return
        rotation_id = new_rotation_id(now)
        self._bind_rotation(rotation_id)
        record = self._end_expired_pause(self.record, now)
        if found is not None:
            record = transitions.apply(record, machine.Baselined(found.current, found.live_version, found.live_path, found.retiring), self.policy, now)
        started = transitions.apply(record, machine.Started(rotation_id, action.reason, action.revoke_now, preexisting, str(self._live)), self.policy, now)
        if noted:
            started = transitions.apply(started, machine.Forgotten(noted), self.policy, now)
        self._started_here = rotation_id
        self._request_taken, self.request = self.request, None
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

    def _end_expired_pause(self, record: StateRecord, now: datetime) -> StateRecord:
        """A pause whose `until` passed ends with the first scheduled rotation after it, audited."""
        paused = record.paused
        if paused is None or paused.is_active(now):
            return record
        self.emit("rotation.resumed", reason=paused.reason, until=to_rfc3339(paused.until) if paused.until else None,
                  by="until", paused_by=paused.by)
        return record.model_copy(update={"paused": None})

    def _sweep(self) -> bool:
        """Revoke what this rotation's lost or crashed mint left; False: it failed (tried again later)."""
        pending = self.record.pending
        assert pending is not None
        revoked: list[str] = []
        if pending.rotation_id != self._started_here and not self._behind_checked:
            # Resumed from Vault: the record may be behind the live path (restored from an older version),
            # and then "this rotation's" keys went live since and one may be in its grace (sim F90).
            try:
                if self._recover_if_behind(self._call(self._live.read)):
                    return True
            except RotatorError as exc:
                self._fail("sweep", exc)
                return False
        try:
            if self._recover_from_undone():  # finished at a path only the versions a restore undid name (sim F111)
                return True
        except RotatorError as exc:
            self._fail("sweep", exc)
            return False
        try:
            if self.provider.can_list:
                orphans = [key for key in self._call(self.provider.list_keys) if self._is_orphan(key, pending)]
                revoked = self._revoke_orphans(orphans)
            revoked += self._sweep_stash(revoked)
        except RotatorError as exc:
            self._fail("sweep", exc)
            return False
        self._apply(machine.Swept(tuple(revoked)))
        crashpoint("after-sweep")
        return True

    def _revoke_orphans(self, orphans: list[Any]) -> list[str]:
        """Revoke keys this credential's rotations left behind, each only
        while our lease still holds and nothing names it as live."""
        revoked: list[str] = []
        for key in orphans:
            if key.key_id in self.record.managed_key_ids() or self._is_named_live(key.key_id) or self._metadata_names(key.key_id):
                continue
            # Renewed after the reads, right before the call: a holder that stalled reading stops here.
            self.persist(self.record)  # renews the lease, or raises LeaseLostError: a stale holder stops here
            self._call(lambda k=key: self.provider.revoke(k.handle))
            revoked.append(key.key_id)
            self.emit("orphan.revoked", key_id=key.key_id)
        return revoked

    def _baseline(self) -> Baseline | None:
        content = self._call(self._live.read)
        # Only reads (other records, the provider's key list): retried as any
        # read is, so a 429 with Retry-After on the listing is waited out.
        return self._call(lambda: find_baseline(
            self.record, content, name=self.cred.spec.name, live_path=str(self._live), provider=self.provider,
            grace=self.policy.grace, now=self.engine.clock.now(), read_other=self.engine.read_record, clock=self.policy.clock,
            is_gone=self.engine.is_gone,
            has_no_file=self.engine.has_no_file,
            skew=self.policy.skew_allowance,
        ))

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
        if entry.key_id in self.record.managed_key_ids() or self._is_named_live(entry.key_id) or self._metadata_names(entry.key_id):
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
        if (noted := issued_unmarked(key, self.policy.skew_allowance)) is not None:  # any rotation's: never live
            return noted.credential == self.cred.spec.name
        if self.provider.is_marking_atomic or key.key_id in pending.preexisting_key_ids or key.created_at is None:
            return False
        # An unmarked key made since this rotation began, on a scope the
        # rotator manages: the crash fell between "create" and "mark". The
        # provider stamps it by its own clock, which may run behind the one
        # that read `started_at` by up to the skew allowance (sim F64).
        return key.created_at >= pending.started_at - max(timedelta(seconds=5), self.policy.skew_allowance)

    def _issue(self) -> None:
        pending = self.record.pending
        assert pending is not None
        try:
            # A rotation started by this very run cannot have completed before.
            if pending.rotation_id != self._started_here:
                if self._already_completed(pending.rotation_id):
                    return
                self._retire_noted_strays()  # before this issue's note replaces the last one (sim F195)
        except RotatorError as exc:
            self._fail("issue", exc)
            return
        self._apply(machine.IssueBegun())
        crashpoint("after-issuing-marker")
        ctx = IssueContext(credential=self.cred.spec.name, rotation_id=pending.rotation_id, managed_key_ids=frozenset(self.record.managed_key_ids()),
                           preexisting_key_ids=frozenset(pending.preexisting_key_ids))
        try:
            credential = self._issue_with_room(ctx)
        except RotatorError as exc:
            self._fail("issue", exc)
            return
        if credential is None:  # caught up with the live path: a manual request gets a rotation of its own (F197)
            self.request = self._request_taken
            return
        register_secret(*self.provider.secret_values(credential.data, credential.handle))
        crashpoint("after-issue")
        try:
            # The record keeps the SHA-256 of each secret value, never the value (leak response, rotator.engine.leak).
            issued = transitions.apply(self.record, machine.Issued(credential), self.policy, self.engine.clock.now())
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

    def _check_behind_live(self) -> None:
        """A rotation resumed from Vault, in any phase: is the record behind
        the live path? (One live read, only when a reconcile starts with a
        rotation pending.) A record restored to an older version may name a
        pending credential revoked since, whose stash entry is gone: it must
        not be verified, promoted or rolled back from memory it lacks."""
        self._behind_checked = True
        first = self._initial.pending  # as read: taking the lease points `target` at the file's path
        lives = self._known_live_paths(first.target if first else None)
        try:
            read = [(live, self._call(live.read)) for live in lives]
            went = self._went_live_where_it_wrote(read, first)
            if went is not None:
                # It went live where it was writing: the newest, whatever an older path holds (sim F112). Where
                # `vault.path` has moved on since, it is recovered there: the usual steps look at the new path.
                if str(went) != str(self._live):
                    self._already_completed(first.rotation_id, went)
                return
            for live, content in read:
                if self._recover_if_behind(content, live):
                    return
        except RotatorError as exc:
            self._fail("recover", exc)

    def _behind_at(self, content: Any, live_path: LivePath | None = None) -> bool:
        """`content`, read at `live_path` (the file's path by default), holds this credential's data and its
        metadata names a rotation the record does not know, at a version the record has not seen."""
        rotation = content.custom_metadata.get("rotator-rotation-id") or None
        at = (str(live_path or self._live), content.version)  # a version the record wrote or caught up with: not behind
        return (content.data is not None and (content.owner() == self.cred.spec.name or self._handed_back(content, live_path))
                and is_behind(self.record, rotation, at=at)
                and not self._known_since_restore(rotation)  # one it knew since a restore and retired: sim F150
                and not (at[0] != self.record.live_path and promoted_before(content, self.record.last_rotated_at)))

    def _recover_if_behind(self, content: Any, live_path: LivePath | None = None) -> bool:
        """The live path holds a later rotation of this credential than the
        record knows: the record was restored from an older version, and the
        rotation it has pending completed long ago, as did at least one after
        it. Sweeping or re-issuing "its" keys would revoke keys that went live
        since, one perhaps in its grace. The record takes the live key back as
        current (as for a lost record), the pending rotation is dropped, and
        every key of this credential the record does not know is retired
        after a full grace from now."""
        if (carried := self._carried_by(content, live_path)) is not None:
            return self._take_over_carried(content, live_path, carried)  # a rename undone, the record restored since (F228)
        pending = self.record.pending
        live_rotation = content.custom_metadata.get("rotator-rotation-id") or None
        if not self._behind_at(content, live_path):
            return False
        now = self.engine.clock.now()
        named = self.provider.live_key(content.data)
        current = None if named is None else KeyRecord(
            key_id=named.key_id, rotation_id=live_rotation, handle=dict(named.handle), issued_at=named.created_at or now)
        live = live_key_ids(content, self.provider)
        listed = self._call(self.provider.list_keys) if self.provider.can_list else []
        # One write for both outcomes: a failed write of the first alone would leave the record caught up
        # but without the keys it forgot, the dropped rotation's own among them (sim F118). The forgotten keys
        # first: their proof reads paths, and a failed read must fail before anything is applied (sim F151).
        found = list(self._forgotten(listed, keep=live, now=now))
        old = self.record.current
        self._apply(machine.Recovered(current, content.version, str(live_path or self._live)), defer=True)
        if old is not None and pending is None:
            # The key the record had as current, superseded by the live path's rotation: at once where that one
            # was asked with `--revoke-now` (its metadata says so) and came after the key (sim F194).
            self._defer(transitions.update_retiring(self.record, old.key_id, lambda e: under_revoke_now(content, (e,), now=now)[0]))
        minted = pending.credential if pending is not None else None
        if minted is not None and minted.key_id not in live | {e.key.key_id for e in found} | self.record.managed_key_ids():
            # The dropped rotation's own key (never live, or superseded since; its paths read before it goes, F207).
            found.append(retiring_from(minted, "recovered", now + self.policy.grace, self.policy.clock, paths=pending.paths_written()))
        taken = live | {e.key.key_id for e in found} | self.record.managed_key_ids()
        # An unmarked key it made (a crash between create and mark), by the sweep's rule (sim F114).
        found += [retiring_from(KeyRecord(key_id=k.key_id, rotation_id=pending.rotation_id, handle=dict(k.handle),
                                          issued_at=k.created_at or now), "recovered", now + self.policy.grace, self.policy.clock)
                  for k in listed if pending is not None and k.mark is None and k.key_id not in taken and self._is_orphan(k, pending)]
        # Not at once under the dropped rotation's own `--revoke-now`: that was asked before these keys were made
        # (a request asked now starts a rotation of its own, which shortens them); at once where the live
        # rotation's was (those made before it).
        self._apply(machine.Forgotten(under_revoke_now(content, tuple(found), now=now)), defer=True)
        self._write_outcome()
        self.log.warning("state.behind_live_path", dropped_rotation_id=pending.rotation_id if pending else None,
                         live_rotation_id=live_rotation, key_id=current.key_id if current else None, vault_version=content.version)
        if pending is not None:
            self.status = "completed"  # a manual request (self.request) still gets a rotation of its own
        return True

    def _mint(self, ctx: IssueContext) -> IssuedCredential:
        # A create that is not idempotent is repeated inside the step only
        # when the provider refused it before acting (a rate limit with
        # Retry-After); any other transient failure may have minted, so the
        # step fails and the next one sweeps first.
        # A holder that stalled since its last write (past its lease, which another may have taken) stops here.
        self.ensure_lease()
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

    def _issue_with_room(self, ctx: IssueContext) -> IssuedCredential | None:
        """The new credential, room made for it; None: the record was behind the live path (caught up)."""
        try:
            return self._mint(ctx)
        except NoCapacityError as exc:
            live = {self.record.current.key_id} if self.record.current else set()
            in_the_way = exc.blocking_key_ids - live
            pending = self.record.pending
            if not in_the_way:
                raise
            if pending is not None and not self._behind_checked:
                # The key in the way may be the live one of a rotation the record forgot (restored): it catches
                # up, its old key retiring after a grace, instead of a block nothing lifts (sim F191).
                self._behind_checked = True
                if self._recover_if_behind(self._call(self._live.read)):
                    return None
            if pending is not None and self.provider.can_list:
                # A key one of our own rotations left (a lost create) is in the way.
                listed = [k for k in self._call(self.provider.list_keys) if k.key_id in in_the_way]
                orphans = [k for k in listed if self._is_orphan(k, pending)]
                in_the_way -= set(self._revoke_orphans(orphans))
                # One marked as this credential's that the record does not know (it was restored from an older
                # version): retired after a full grace, as after a promotion, and room comes when that ends.
                forgotten = self._forgotten([k for k in listed if k.key_id in in_the_way], keep=live, now=self.engine.clock.now())
                self._take_up_forgotten(forgotten)
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
        """After a failed stash write: did it apply all the same (a lost response)? Unsure counts as yes: a
        key left unstashed is swept (it carries this rotation's mark), a key revoked under a stash is not."""
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
