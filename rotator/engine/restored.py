"""A resumed rotation that may have finished where the record no longer says: the live path says it
completed (a record restored from before its promotion, F17), at a path `vault.path` has moved on from
(F112), or at a path only the versions a restore of the record undid name (F111).
"""

from __future__ import annotations

from typing import Any

from rotator.core import machine
from rotator.core.provider import IssuedCredential
from rotator.core.state import KeyRecord, Pending, StateRecord
from rotator.engine.baseline import live_key_ids, pending_revoke_now, retiring_from, rotation_key_overwritten
from rotator.vault.history import paths_named, restore_split
from rotator.vault.livepath import LivePath


class RestoredSteps:
    """A part of _Run (rotator.engine.run): it uses the run's attributes and methods."""

    def _already_completed(self, rotation_id: str, live: LivePath | None = None) -> bool:
        """A record restored from before this rotation's promotion: the live
        path (or `live`, one the file no longer names) says it completed.
        Minting again could delete the live key (a retry-safe create removes
        what "its" lost create left). Recovered at `live`, the keys of this
        credential the record does not know are retired a full grace later, as
        for a record found behind (`_recover_if_behind`)."""
        path = live or self._live
        content = self._call(path.read)
        if (live is not None or not self._behind_checked) and self._recover_if_behind(content, path):
            return True
        if not self._went_live_in(content, rotation_id) and not (live is not None and self._holds_its_stash(content, live)):
            return self._live_write_landed(content) if live is None else False
        named = self.provider.live_key(content.data) if content.data else None
        current = None
        if named is not None:
            meta_key = content.custom_metadata.get("rotator-key-id") or None
            # Data written over the rotation's key since holds another key: that key's own rotation, by its mark
            # (a later rotation whose metadata merge never landed, sim F134), else one of its own name.
            of = rotation_id if meta_key in (None, named.key_id) else self._rotation_of(named.key_id, content.version)
            current = KeyRecord(key_id=named.key_id, rotation_id=of, handle=dict(named.handle),
                                issued_at=named.created_at or self.engine.clock.now())
        # Data written over the rotation's key since (the metadata still names it): that key is retired, after a
        # full grace: the rotation's own `--revoke-now` was asked for the keys before it, not for its own (sim F134).
        overwritten = self._call(lambda: rotation_key_overwritten(
            content, self.provider, current, rotation_id=rotation_id, name=self.cred.spec.name, grace=self.policy.grace,
            now=self.engine.clock.now(), revoke_now=False, clock=self.policy.clock))
        listed = self._call(self.provider.list_keys) if live is not None and self.provider.can_list else []
        # The forgotten keys' proof reads paths: done before anything is applied, so a failed read leaves nothing
        # half recorded (sim F151).
        found = self._forgotten(listed, keep=live_key_ids(content, self.provider), now=self.engine.clock.now()) if listed else ()
        self._apply(machine.Recovered(current, content.version, str(path), overwritten))
        if found:
            self._apply(machine.Forgotten(found))
        self._retire_undone_keys(self._read_undone())  # a restore may have undone a later rotation's mint (sim F182)
        self.log.warning("rotation.already_completed", key_id=current.key_id if current else None, vault_version=content.version,
                         **({"vault_path": str(path)} if live is not None else {}))
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

    def _rotation_of(self, key_id: str, version: int) -> str:
        """The rotation whose mark `key_id` carries at the provider, if it is one of this credential's."""
        if self.provider.can_list:
            for key in self._call(self.provider.list_keys):
                if key.key_id == key_id and key.mark is not None and key.mark.credential == self.cred.spec.name:
                    return key.mark.rotation_id
        return f"recovered-v{version}"

    def _went_live_in(self, content: Any, rotation_id: str) -> bool:
        """The path's data is this credential's, and its metadata names `rotation_id` as the one that wrote it."""
        return content.owner() == self.cred.spec.name and content.custom_metadata.get("rotator-rotation-id") == rotation_id

    def _went_live_where_it_wrote(self, read: list[tuple[LivePath, Any]], first: Pending | None) -> LivePath | None:
        """Of the paths `read` (each with its content), the one the rotation `first` (the record's, as read)
        was writing whose metadata names it: its target, else a path it wrote before `vault.path` moved on
        (`earlier_targets`, newest first: taking the lease, which a failed pass did, points the target at the
        file's path; sim F132)."""
        if first is None:
            return None
        by_path = {str(live): (live, content) for live, content in read}
        for path in (first.target, *first.earlier_targets):
            live, content = by_path.get(path or "", (None, None))
            if live is not None and content.data is not None and (
                    self._went_live_in(content, first.rotation_id) or (str(live) != str(self._live) and self._holds_its_stash(content, live))):
                return live
        return None

    def _holds_its_stash(self, content: Any, live: LivePath) -> bool:
        """`live` (a path `vault.path` has moved on from) holds exactly what the rotation in flight stashed for it,
        a key the record does not know: its live write landed there and a crash fell before the metadata merge (at
        the file's own path: `_live_write_landed`). It went live there (sim F213)."""
        named = self.provider.live_key(content.data) if content.data else None
        if content.data is None or (named is not None and named.key_id in self.record.managed_key_ids()):
            return False  # a key the record knows: no stash entry it does not know holds it, so no stash read
        found = self.engine.records.orphan(self.record, self.provider.secret_fields)
        return found is not None and found[1].data == content.data and str(live) in found[1].targets

    def _held_where_it_wrote_before(self, pending: Pending) -> bool:
        """A rotation being undone whose data a path it wrote before `vault.path` moved on holds (or held): a
        crash after that live write, before its metadata or the record said so. It went live there, and the
        path its credential writes now superseded it: a grace, not a revoke (sim F133). Not where another
        credential has taken the path on since (adopted it): the key is live there, and never revoked."""
        for target in pending.earlier_targets if pending.data else ():
            live = LivePath(self.engine.store, *target.split("/", 1))
            content = self._call(live.read)
            if content.owner() not in (None, self.cred.spec.name):
                continue
            if content.data == dict(pending.data or {}) or self._call(lambda at=live: at.held_before(pending.data, since=0)):
                return True
        return False

    def _recover_from_undone(self) -> bool:
        """Before a resumed rotation is undone (rolled back, its keys swept): when the record read is a copy of
        an earlier version (a restore), the paths the versions since named (where a rotation finished after
        `vault.path` changed, say) are read too. Where the rotation, or a later one the record does not know,
        is live at one of them, it is recovered there; and for every revoke of this run those paths count as
        live paths (`PromoteSteps._known_live_paths`). Up to 10 reads of the record's versions, once a run."""
        pending = self.record.pending
        if pending is None or pending.rotation_id == self._started_here or self._undone_paths is not None:
            return False
        undone = self._read_undone()
        first = self._initial.pending
        known = {str(live) for live in self._known_live_paths(first.target if first else None)}
        self._undone_paths = [path for path in paths_named(undone) if path not in known]
        for path in self._undone_paths:
            if self._already_completed(pending.rotation_id, LivePath(self.engine.store, *path.split("/", 1))):
                return True
        self._retire_undone_keys(undone)
        return False

    def _read_undone(self) -> list[StateRecord]:
        """The versions a restore of the record undid (`history.undone_versions`), read once a run."""
        if self._undone is None:
            records, name = self.engine.records, self.cred.spec.name
            self._since_copy, self._undone = self._call(lambda: restore_split(
                records.store, records.mount, records.record_path(name), version=self._initial_version, record=self._initial))
        return self._undone

    def _known_since_restore(self, rotation: str | None) -> bool:
        """`rotation` is one a version from the copy on (the restored state, and what the rotator wrote since)
        named: the record knew it, though it may have retired it since. A path naming it is one the record has
        moved on from, not one it is behind (sim F150: no restore at all, a version equal to the one two before
        taken for a copy, and the path `vault.path` had left, naming a rotation retired since, taken for newer:
        the record dropped its rotation and revoked its live key)."""
        return rotation is not None and any(rotation in _rotations_of(version) for version in self._since_copy)

    def _retire_undone_keys(self, undone: list[StateRecord]) -> None:
        """The keys the undone versions name that the record no longer knows (a later rotation that minted,
        perhaps verified, and never went live: its record restored to before it, sim sweep seed 12222).
        Nothing else names them: the live path never held them, and a restored record does not know every
        path its credential went live at, so a bare listing of the provider's keys cannot retire them (F117).
        Retired after a full grace from now, each only if the provider still lists it as active and no path
        this credential may have made live (the file's, the record's, those the undone versions name) holds it.
        Keys made by a rotation those versions had under way before it recorded its key (`issuing`: a crash
        right after the mint, sim sweep seed 16904) are found by their mark. Once a run."""
        if self._undone_retired:
            return
        self._undone_retired = True
        known = self.record.managed_key_ids()
        # The rotation in flight's own keys are its sweep's (or, stashed, its issue's): taken for forgotten here,
        # its issue again would meet its own stash entry naming a retiring key, and mint and revoke for ever
        # (sim F198, seed 47218). Not one an undone version had current: it went live, and is retired after its
        # grace, never swept as one its rotation made and never recorded (sim F219).
        own = self.record.pending.rotation_id if self.record.pending is not None else None
        named = {key.key_id for version in undone for key in _keys_of(version)
                 if key.rotation_id != own or key is version.current} - known
        rotations = {version.pending.rotation_id for version in undone if version.pending is not None} - {own}
        if not (named or rotations) or not self.provider.can_list:
            return
        name = self.cred.spec.name
        listed = [key for key in self._call(self.provider.list_keys) if key.active and key.key_id not in known and (
            key.key_id in named or (key.mark is not None and key.mark.credential == name and key.mark.rotation_id in rotations))]
        if not listed:
            return
        live: set[str] = set()
        paths = {str(path): path for path in self._known_live_paths()}  # and those the undone versions name (read or not yet)
        paths.update({p: LivePath(self.engine.store, *p.split("/", 1)) for p in paths_named(undone) if p not in paths})
        for path in paths.values():
            live |= live_key_ids(self._call(path.read), self.provider)
        now = self.engine.clock.now()
        # Under a `--revoke-now` (asked of this run, or of the rotation it finishes) they go at once, as the keys
        # the after-promotion look finds do: listed here first, that look would know them (sim F189). The
        # rotation's own request was for the keys before it, those the undone versions name while it was under
        # way: its own key and later rotations' keep their grace (sim F221).
        asked = self.request is not None and self.request.revoke_now
        before = _named_while_under_way(undone, own) if pending_revoke_now(self.record) else set()
        found = []
        for key in (k for k in listed if k.key_id not in live):
            at_once = asked or key.key_id in before
            found.append(retiring_from(KeyRecord(key_id=key.key_id, rotation_id=key.mark.rotation_id if key.mark else "recovered",
                                                 handle=dict(key.handle), issued_at=key.created_at or now),
                                       "recovered", now if at_once else now + self.policy.grace, self.policy.clock, immediate=at_once))
        if found:
            self._apply(machine.Forgotten(tuple(found)), defer=True)
            self.log.warning("state.restore_forgot_keys", key_ids=sorted(e.key.key_id for e in found))


def _keys_of(record: StateRecord) -> list[KeyRecord]:
    return [k for k in (record.current, record.pending.credential if record.pending else None, *(e.key for e in record.retiring))
            if k is not None]


def _named_while_under_way(undone: list[StateRecord], rotation: str | None) -> set[str]:
    """The keys other than its own that versions with `rotation` pending name: the keys before it."""
    return {key.key_id for version in undone if version.pending is not None and version.pending.rotation_id == rotation
            for key in _keys_of(version) if key.rotation_id != rotation}


def _rotations_of(record: StateRecord) -> set[str]:
    named = {k.rotation_id for k in _keys_of(record)}
    return named | ({record.pending.rotation_id} if record.pending is not None else set())
