"""Keys a state record forgot (found at the provider by this credential's mark, unknown to the record: it
was restored from an older version), and whether one may be retired: only where no path it can have gone
live at holds it (sim F117, F131).

A restored record does not know every path its credential went live at since: `vault.path` changed, a
file was renamed and the new name adopted the path. The key's mark names its rotation; the versions of
the record that marked it (KV v2 keeps its recent ones) name the paths that rotation was writing or held
live, and a live path whose metadata names that rotation was written by it; failing both, the rotation's
stash entry names the paths it was writing when it minted, and a rotation with no stash entry never
recorded its key (so never wrote it live). A key whose rotation none names has no such proof and is left
alone (a key left behind is reported; a live key revoked breaks consumers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rotator.core import machine
from rotator.core.provider import ProviderKey
from rotator.core.state import Retiring, StateRecord
from rotator.engine.baseline import names_keys
from rotator.vault.history import recent_versions, rotation_paths


class ForgottenSteps:
    """A part of _Run (rotator.engine.run): it uses the run's attributes and methods."""

    def _live_nowhere(self, found: Iterable[Retiring], listed: Iterable[ProviderKey]) -> tuple[Retiring, ...]:
        """Of `found` (keys this record forgot, from `listed`), those shown live at no path they can have
        reached (sim F131: the key a renamed file had adopted, live at a path only the restore's undone
        versions named, was revoked at once). Where its rotation can have gone live: the paths the versions
        of the marking credential's record name for it (`rotation_paths`), and any path the run knows (the
        record's as read too) whose metadata names that rotation (it wrote there); with neither, the paths
        its stash entry says it was writing (sim F190), and a rotation with no stash entry at all never
        recorded its key, so never made it live (sim F193). A key with none of these is kept out: where it
        went live is not known."""
        marks = {k.key_id: k.mark.credential for k in listed if k.mark is not None}
        histories: dict[str, list[StateRecord]] = {}
        known = [(live, self._call(live.read)) for live in self._known_live_paths(self._initial.live_path)]
        out: list[Retiring] = []
        for entry in found:
            owner = marks.get(entry.key.key_id, self.cred.spec.name)
            rotation = entry.key.rotation_id
            if owner not in histories:
                histories[owner] = self._history_of(owner)
            paths = [str(live) for live, content in known if content.custom_metadata.get("rotator-rotation-id") == rotation]
            paths += [p for p in rotation_paths(histories[owner], rotation) or [] if p not in paths]
            never_stashed = False
            if not paths:
                # Nothing else names the rotation (its record lost, or restored past the versions KV keeps): its stash
                # entry, written before any live write, says which paths it was writing (sim F190). No entry at all:
                # the entry is written before the record names the key, the record before any live write, and the
                # entry is destroyed only once the key is revoked. Minted and never recorded (a crash or a lost
                # answer right after the mint): it never went live (sim F193).
                targets = self._call(lambda: self.engine.records.stashed_targets(owner, rotation, entry.key.key_id))
                never_stashed, paths = targets is None, targets or []
            if not paths and not never_stashed:
                self.log.warning("inventory.unproven_key", key_id=entry.key.key_id, marked_by=owner,
                                 reason="neither the live paths nor its record's readable versions name its rotation: "
                                        "where it went live is not known")
                continue
            if self._held_at_any(entry.key.key_id, paths, marked_by=owner):
                continue
            # A removed file's record (every path counts for it): read again before it is revoked (sim F152).
            out.append(entry if self.policy.has_file else entry.model_copy(update={"paths": paths}))
        return tuple(out)

    def _history_of(self, name: str) -> list[StateRecord]:
        """`name`'s record as Vault holds it and its versions before (up to 10 reads)."""
        records = self.engine.records
        if name == self.cred.spec.name:
            record, version = self._persisted, self.version
        else:
            record, version = self._call(lambda: self.engine.read_record(name))
            if record is None:
                return []
        return self._call(lambda: recent_versions(records.store, records.mount, records.record_path(name),
                                                  version=version, record=record))

    def _held_at_any(self, key_id: str, paths: list[str], *, marked_by: str) -> bool:
        """A fresh read of each path the run knows and of `paths` names `key_id` as live (its data, or its
        metadata where the data names no key), at a path that is still some credential's: not one this
        credential's file has moved away from (`vault.path` changed: the old path is left as it is and its
        key retired, docs/CONTRACT-NOTES.md), which its metadata still names as this credential's, or as
        `marked_by`'s (the name whose mark the key carries: this one, or a renamed file's old name this
        credential took over, `forgotten_keys`, while no loaded file has that name; sim F226), or names no
        credential at all (the key's own live write, its metadata merge never done: sim F224). A removed
        file's record does not know which of its paths was its file's last one: every path counts."""
        def key_in(data: Any) -> str | None:
            named = self.provider.live_key(data)
            return named.key_id if named else None

        by = key_in if names_keys(self.provider) else None
        # An old name counts only while no file has it: one that is back in a file of its own is another credential.
        files = self.engine.configured()
        own = {None, self.cred.spec.name} | ({marked_by} if files is not None and marked_by not in files else set())
        for live in self._known_live_paths(self._initial.live_path, *paths):
            if not self._call(lambda live=live: live.names_as_live(key_id, key_in=by)):
                continue
            left = (self.policy.has_file and str(live) != str(self._live)
                    and self._call(live.read).owner() in own)
            if not left:
                return True
        return False

    def _take_up_forgotten(self, found: tuple[Retiring, ...]) -> None:
        """Keys the record forgot, retiring as `found` says from now on (logged `inventory.forgotten_keys`)."""
        if found:
            self.log.warning("inventory.forgotten_keys", key_ids=[e.key.key_id for e in found])
            self._apply(machine.Forgotten(found))

    def idle_forgotten(self) -> tuple[Retiring, ...]:
        """A removed file's idle record that is not behind its live paths (`behind_live`): keys marked as
        its credential's that it does not know and that are shown live nowhere (`_live_nowhere`), retiring
        a full grace from now. A rotation since that minted and never went live (undone, crashed), the
        record restored to before it (sim F117). Reads only: the provider's keys (ids first, where cheaper),
        then, only when some key is unknown, the record's versions and the paths they name."""
        if not self.provider.can_list:
            return ()
        listed = self._inventory()
        found = self._forgotten(listed, keep=set(), now=self.engine.clock.now())
        return self._live_nowhere(found, listed) if found else ()

