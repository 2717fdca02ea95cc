"""Where state records and their secrets are kept (docs/STATE.md, "The stash").

A state record (`ROTATOR_STATE_MOUNT/ROTATOR_STATE_PREFIX/NAME`) is what
`status`, `plan` and `report` read, under the reader policy; it holds no
secret value. The secrets that finishing a rotation or a revocation needs,
the new credential's live fields and the secret parts of a handle (a GitHub
installation token, a Stripe key), live in the stash: one KV v2 entry per
issued credential, `ROTATOR_STASH_PREFIX/NAME/ROTATION_ID`, readable only
under the rotator's own policy. Each key in the record names its entry
(`stash`) and the handle fields kept there (`stashed_fields`).

Invariants:
- an entry is written (create-only check-and-set) before the record that
  names it, so a minted credential is always stashed or not yet recorded;
  an entry that no record names is found by the next sweep of its rotation
  (`orphan`), and that sweep revokes it, even where the provider cannot
  list its keys;
- an entry never changes once written, so a rotation writes the stash once;
  it is destroyed after the record stops naming it (revoked, rolled back),
  and a crash in between leaves at most a dead credential's entry behind;
- records of schema version 1, with secrets inline, still load; the next
  write moves their secrets to the stash;
- every `last_error` is scrubbed before it is stored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rotator.core import machine
from rotator.core.crashpoints import crashpoint
from rotator.core.errors import CasMismatchError, LeaseLostError, NotFoundError, PermanentError, RotatorError
from rotator.core.redaction import register_secret
from rotator.core.state import SCHEMA_VERSION, KeyRecord, StateRecord
from rotator.vault.store import VaultStore, Versioned

STASH_SUFFIX = "-stash"  # the default stash prefix: ROTATOR_STATE_PREFIX + this
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@=-]{0,127}$")


class StashEntry(BaseModel):
    """One issued credential's secrets: what finishing or undoing it needs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = 1
    credential: str
    rotation_id: str
    key_id: str
    handle: dict[str, str]  # the whole handle, so an orphan can be revoked from the entry alone
    data: dict[str, str] | None = None  # the live fields
    # The live paths its rotation was writing when it was stashed (its target, then its earlier ones): where it
    # can have gone live, for a record that forgot the rotation (lost, or restored past the kept versions, sim F190).
    targets: list[str] = Field(default_factory=list)

    def __repr__(self) -> str:
        return f"StashEntry(key_id={self.key_id!r})"

    __str__ = __repr__


def default_stash_prefix(state_prefix: str) -> str:
    return state_prefix + STASH_SUFFIX


def scrub_errors(record: StateRecord, scrub: Callable[[str], str]) -> StateRecord:
    """The record with every stored error message passed through `scrub`."""
    update: dict[str, Any] = {}
    if record.last_error is not None and scrub(record.last_error) != record.last_error:
        update["last_error"] = scrub(record.last_error)
    if any(e.last_error is not None and scrub(e.last_error) != e.last_error for e in record.retiring):
        update["retiring"] = [e.model_copy(update={"last_error": scrub(e.last_error)}) if e.last_error else e for e in record.retiring]
    return record.model_copy(update=update) if update else record


def _keys(record: StateRecord) -> Iterator[KeyRecord]:
    if record.current is not None:
        yield record.current
    for entry in record.retiring:
        yield entry.key
    if record.pending is not None and record.pending.credential is not None:
        yield record.pending.credential


def _map_keys(record: StateRecord, change: Callable[[KeyRecord, bool], KeyRecord]) -> StateRecord:
    """The record with `change(key, is_pending)` applied to each key it holds."""
    update: dict[str, Any] = {}
    if record.current is not None:
        update["current"] = change(record.current, False)
    if record.retiring:
        update["retiring"] = [e.model_copy(update={"key": change(e.key, False)}) for e in record.retiring]
    pending = record.pending
    if pending is not None and pending.credential is not None:
        update["pending"] = pending.model_copy(update={"credential": change(pending.credential, True)})
    return record.model_copy(update=update) if update else record


def public_view(record: StateRecord, secret_fields: frozenset[str]) -> StateRecord:
    """What goes into the record in Vault: no stashed value, no secret field."""

    def strip(key: KeyRecord, _: bool) -> KeyRecord:
        drop = set(key.stashed_fields) | secret_fields
        if not drop & set(key.handle):
            return key
        return key.model_copy(update={"handle": {k: v for k, v in key.handle.items() if k not in drop}})

    public = _map_keys(record, strip)
    if public.pending is not None and public.pending.data is not None:
        public = public.model_copy(update={"pending": public.pending.model_copy(update={"data": None})})
    return public.model_copy(update={"schema_version": SCHEMA_VERSION})


def has_inline_secrets(record: StateRecord | None, secret_fields: frozenset[str]) -> bool:
    """A record (schema 1) that still holds secrets in Vault: migrate it."""
    if record is None:
        return False
    if record.pending is not None and record.pending.data:
        return True
    return any(set(key.handle) & secret_fields for key in _keys(record))


def needed_keys(record: StateRecord, action: machine.Action) -> list[KeyRecord]:
    """The keys whose stashed secrets `action` needs and memory lacks."""
    pending = record.pending
    if isinstance(action, (machine.Verify, machine.Promote, machine.RollBack)):
        if pending is not None and pending.credential is not None and (pending.data is None or pending.credential.lacks_secrets()):
            return [pending.credential]
        return []
    if isinstance(action, (machine.Deactivate, machine.Revoke)):
        return [e.key for e in record.retiring if e.key.key_id == action.key_id and e.key.lacks_secrets()]
    return []


@dataclass(frozen=True)
class RecordStore:
    """State records and their stash in Vault."""

    store: VaultStore
    mount: str
    prefix: str
    stash_prefix: str

    def record_path(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def stash_path(self, name: str, rotation_id: str) -> str:
        segment = rotation_id if _SAFE_SEGMENT.match(rotation_id) else "r-" + hashlib.sha256(rotation_id.encode()).hexdigest()[:32]
        return f"{self.stash_prefix}/{name}/{segment}"

    # -- records -------------------------------------------------------------------

    def read(self, name: str) -> tuple[StateRecord | None, int]:
        """The record as readers see it (no stash read)."""
        current = self.store.read(self.mount, self.record_path(name))
        if current.data is None:
            return None, current.version
        where = f"the state record of {name} ({self.mount}/{self.record_path(name)})"
        return StateRecord.from_vault(current.data, where=where), current.version

    def revive(self, name: str, *, back: int = 10) -> Versioned | None:
        """A record whose latest version was deleted (`bao kv delete`; the
        rotator never deletes its records): that version is undeleted, or,
        where it cannot be, its newest readable earlier version is written
        back as the latest (check-and-set); returned.
        None when there is none among the last `back` versions, or when the
        path holds a record or nothing at all. The engine treats what comes
        back as a record restored from an older version; only the record
        knows what a rotation in flight had minted, and, with no file, the
        keys it retires have nobody else to name them (contract §6.9). Returns the data written back and its new version."""
        path = self.record_path(name)
        current = self.store.read(self.mount, path)
        if current.data is not None or current.version == 0:
            return None
        try:
            # The deleted version itself, if it can be undone (`undelete` on the state prefix, config/rotator.hcl):
            # nothing is lost then, not even a rotation in flight that only that version knew.
            self.store.undelete_version(self.mount, path, current.version)
        except RotatorError:
            pass  # no such permission (a policy from before it), destroyed, or its answer lost: the read tells
        # A failed read raises: the next pass revives again. Taken for an undelete that did not land, it would
        # write an older version over the one just undeleted, and lose what only that one knew (sim F214).
        again = self.store.read(self.mount, path)
        if again.data is not None:  # undeleted, or written since (another process revived it)
            try:
                StateRecord.from_vault(again.data, where=f"the state record of {name} ({self.mount}/{path})")
                return again
            except ValueError:
                pass  # malformed: an older version
        for version in range(current.version - 1, max(0, current.version - 1 - back), -1):
            data = self.store.read_version(self.mount, path, version)
            if data is None:
                continue
            try:
                StateRecord.from_vault(data, where=f"the state record of {name} ({self.mount}/{path}) version {version}")
            except ValueError:
                continue  # malformed (perhaps why it was deleted): an older one
            return Versioned(data, self.store.write(self.mount, path, data, cas=current.version))
        return None

    def save(
        self, record: StateRecord, *, cas: int, previous: StateRecord | None, secret_fields: frozenset[str],
        scrub: Callable[[str], str],
    ) -> tuple[StateRecord, int]:
        """Stash what is new, then write the record (check-and-set), then
        destroy the entries it no longer names. Returns the record as kept
        in memory (secrets inline, stash references set) and its version."""
        record = self.stash(scrub_errors(record, scrub), secret_fields=secret_fields)
        data = public_view(record, secret_fields).to_vault()
        record = record.model_copy(update={"write_id": data["write_id"]})  # in memory as in Vault
        version = self.store.write(self.mount, self.record_path(record.credential), data, cas=cas)
        if previous is not None:
            self._forget_dropped(previous, record)
        return record, version

    def stash(self, record: StateRecord, *, secret_fields: frozenset[str]) -> StateRecord:
        """Write the stash entries of the record's keys that have none yet;
        the record naming them (written later) is returned."""
        return _map_keys(record, lambda key, is_pending: self._stashed(record, key, is_pending, secret_fields))

    def stashed_targets(self, name: str, rotation_id: str, key_id: str) -> list[str] | None:
        """The paths this rotation's stash entry says it was writing, if the entry holds `key_id` (else none);
        None when the rotation has no stash entry at all (nor one that does not parse)."""
        data = self.store.read_data(self.mount, self.stash_path(name, rotation_id))
        if data is None:
            return None
        entry = _parse(data)
        return list(entry.targets) if entry is not None and entry.key_id == key_id else []

    def is_stashed(self, name: str, rotation_id: str, key_id: str) -> bool:
        """Whether this rotation's stash entry holds `key_id` (after a write whose answer was lost)."""
        entry = _parse(self.store.read_data(self.mount, self.stash_path(name, rotation_id)))
        return entry is not None and entry.key_id == key_id

    def _stashed(self, record: StateRecord, key: KeyRecord, is_pending: bool, secret_fields: frozenset[str]) -> KeyRecord:
        secret_parts = sorted(set(key.handle) & secret_fields)
        data = record.pending.data if is_pending and record.pending is not None else None
        if key.stash is not None or not (secret_parts or data):
            return key
        path = self.stash_path(record.credential, key.rotation_id)
        pending = record.pending if is_pending else None
        targets = [p for p in dict.fromkeys((pending.target, *pending.earlier_targets)) if p] if pending is not None else []
        entry = StashEntry(credential=record.credential, rotation_id=key.rotation_id, key_id=key.key_id, handle=dict(key.handle), data=data,
                           targets=targets)
        self._put(path, entry)
        crashpoint("after-stash-entry")  # tests: a crash between the stash and the record
        return key.model_copy(update={"stash": path, "stashed_fields": secret_parts})

    def _put(self, path: str, entry: StashEntry) -> None:
        payload = entry.model_dump(mode="json")
        try:
            self.store.write(self.mount, path, payload, cas=0)
            return
        except CasMismatchError:
            pass
        # Written before: by this very attempt (a lost answer), by a migration
        # cut short, or by an earlier issue of this rotation whose credential
        # the sweep (which always runs before a rotation issues again) revoked
        # but could not destroy the entry of. Each is safe to write over; an
        # entry of another rotation or credential never is.
        current = self.store.read(self.mount, path)
        held = _parse(current.data)
        if held is None or held.credential != entry.credential or held.rotation_id != entry.rotation_id:
            raise PermanentError(f"stash entry {self.mount}/{path} belongs to something else; refusing to write over it")
        if held.key_id == entry.key_id:
            # The same key stashed again (a lost record rebuilt from the live
            # path knows its handle, not its live fields): what is held is
            # kept and only completed, never emptied (sim F16).
            entry = entry.model_copy(update={"handle": {**entry.handle, **held.handle}, "data": held.data or entry.data,
                                             "targets": list(dict.fromkeys((*held.targets, *entry.targets)))})
            payload = entry.model_dump(mode="json")
        else:
            # Another key of this rotation: written over only if the record no
            # longer relies on it (swept). A writer that stalled past its lease while
            # another process re-issued must not replace that key's secrets (sim F20).
            # A key the record names without this entry (found again at the provider
            # after a restore, `stash` unset) does not rely on it: a resumed rotation of
            # a restored record writes over it, or it would lose its lease on every
            # pass and mint a key each time (sim F232).
            record, _ = self.read(entry.credential)
            pending = record.pending.credential if record is not None and record.pending is not None else None
            if record is not None and (any(key.key_id == held.key_id and key.stash == path for key in _keys(record))
                                       or (pending is not None and pending.key_id == held.key_id)):
                raise LeaseLostError(f"{entry.credential}: the stash entry {self.mount}/{path} holds key {held.key_id}, "
                                     "which the record names: another process took over")
        if held != entry:
            self.store.write(self.mount, path, payload, cas=current.version)

    def _forget_dropped(self, previous: StateRecord, record: StateRecord) -> None:
        kept = {key.stash for key in _keys(record)}
        own = f"{self.stash_prefix}/{record.credential}/"
        for key in _keys(previous):
            if key.stash and key.stash not in kept and key.stash.startswith(own):
                try:
                    self.store.destroy(self.mount, key.stash)
                except RotatorError:
                    pass  # a dead credential's secrets, readable only by the rotator: harmless, left behind

    # -- the stash -----------------------------------------------------------------

    def hydrate(self, record: StateRecord, action: machine.Action, secret_fields: frozenset[str]) -> StateRecord:
        """The record with the stashed secrets `action` needs filled back in."""
        needed = {key.stash: key for key in needed_keys(record, action) if key.stash}
        if not needed:
            return record
        retiring = isinstance(action, (machine.Deactivate, machine.Revoke, machine.RollBack))
        entries = {}
        for path, key in needed.items():
            try:
                entries[path] = self._entry(path, key)
            except NotFoundError:
                if not retiring:
                    raise
                # A superseded or rolled-back key's entry is gone (destroyed
                # after an earlier revocation of it, the record since restored
                # from an older version): it is revoked by its handle's ids
                # alone, or waited out when its provider needs the secret
                # (rotator.engine.retire, promote). One to verify or promote
                # raises: the engine rolls that rotation back (rotator.engine.run).
                continue
        for entry in entries.values():
            _register(entry, secret_fields)

        def fill(key: KeyRecord, _: bool) -> KeyRecord:
            entry = entries.get(key.stash or "")
            return key.model_copy(update={"handle": {**entry.handle, **key.handle}}) if entry else key

        filled = _map_keys(record, fill)
        pending = filled.pending
        if pending is not None and pending.credential is not None and pending.credential.stash in entries and pending.data is None:
            filled = filled.model_copy(update={"pending": pending.model_copy(update={"data": entries[pending.credential.stash].data or {}})})
        return filled

    def _entry(self, path: str, key: KeyRecord) -> StashEntry:
        entry = _parse(self.store.read_data(self.mount, path))
        if entry is None:
            raise NotFoundError(f"the stash entry {self.mount}/{path} of key {key.key_id} is missing or unreadable")
        if entry.key_id != key.key_id:
            # Another key of the rotation took the entry (a writer stalled past its lease, once the record no
            # longer named this key; `_put`): this key's entry is gone, as if destroyed (sim F215).
            raise NotFoundError(f"the stash entry {self.mount}/{path} of key {key.key_id} holds another key now")
        return entry

    def orphan(self, record: StateRecord, secret_fields: frozenset[str]) -> tuple[str, StashEntry] | None:
        """A stashed credential of the rotation in flight that the record does
        not know (a crash fell between the stash and the record)."""
        pending = record.pending
        if pending is None:
            return None
        path = self.stash_path(record.credential, pending.rotation_id)
        if any(key.stash == path for key in _keys(record)):
            return None
        entry = _parse(self.store.read_data(self.mount, path))
        if entry is None or entry.key_id in record.managed_key_ids():
            return None
        _register(entry, secret_fields)
        return path, entry

    def forget(self, path: str) -> None:
        """Destroy a stash entry after its credential was revoked; best effort
        (a dead credential's entry left behind is harmless, and the next
        issue of the rotation writes over it, see `_put`)."""
        try:
            self.store.destroy(self.mount, path)
        except RotatorError:
            pass


def _register(entry: StashEntry, secret_fields: frozenset[str]) -> None:
    register_secret(*[v for m in (entry.data or {}, entry.handle) for k, v in m.items() if k in secret_fields])


def _parse(data: dict[str, Any] | None) -> StashEntry | None:
    if data is None:
        return None
    try:
        return StashEntry.model_validate(data)
    except ValidationError:
        return None
