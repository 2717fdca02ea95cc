"""A file's record restored to a version from before the file was renamed, and the rename undone since (sim
F228): the live path's metadata names the name it was renamed to, a name with no file now, whose record wrote
the version the path holds. That record carries this credential's keys (the restore undid the `moved_to` mark
that said so): the file takes it over, as a rename undone does (`baseline._moved_back`), instead of resuming a
rotation that finished long ago under the other name, whose "own" keys went live since, one perhaps in its grace.
"""

from __future__ import annotations

from typing import Any

from rotator.core import machine, transitions
from rotator.core.errors import TransientError
from rotator.core.state import KeyRecord, StateRecord
from rotator.engine.baseline import retiring_from
from rotator.vault.livepath import LivePath


class CarriedSteps:
    """A part of _Run (rotator.engine.run): it uses the run's attributes and methods."""

    def _renamed_in(self, content: Any, live_path: LivePath | None) -> tuple[str, StateRecord, int] | None:
        """The owner `live_path`'s metadata names (name, record, version) where it is not this file's name but a
        name with no file (`Engine.has_no_file`: every file loaded, none with that name) whose record is at this
        path; None otherwise, and for a removed file's own record. A name with a file is another credential:
        adopting its path is `rotator adopt`'s, never this."""
        owner = content.owner()
        if not self.policy.has_file or content.data is None or owner in (None, self.cred.spec.name) or not self.engine.has_no_file(owner):
            return None
        other, version = self.engine.read_record(owner)
        return None if other is None or other.live_path != str(live_path or self._live) else (owner, other, version)

    def _carried_by(self, content: Any, live_path: LivePath | None) -> tuple[str, StateRecord, int] | None:
        """The record (`_renamed_in`) that carries this file's credential at `live_path`: it wrote the version the
        path holds and was not moved on."""
        found = self._renamed_in(content, live_path)
        if found is None or found[1].moved_to is not None:
            return None
        owner, other, _ = found
        rotation = content.custom_metadata.get("rotator-rotation-id") or None
        if other.pending is not None and (other.live_version == content.version or other.pending.rotation_id == rotation):
            # Its unfinished rotation (perhaps the one that wrote this version, its record restored to before it said
            # so: sim F231) is undone or finished first, as a removed file's (rotator.engine.fileless).
            raise TransientError(f"credential {owner}, which this one was renamed to, has an unfinished rotation; waiting for it")
        return found if other.live_version == content.version else None

    def _handed_back(self, content: Any, live_path: LivePath | None) -> bool:
        """The record the metadata names (`_renamed_in`) wrote the version `live_path` holds and handed its keys
        to this credential (`moved_to`: a rename undone), a handing-over a restore of this record undid since
        (sim F229): the path's rotation is this credential's own for `_behind_at`, and the keys either name
        marked are found again at the provider (`forgotten_keys` follows `moved_to`)."""
        found = self._renamed_in(content, live_path)
        return found is not None and found[1].moved_to == self.cred.spec.name and found[1].live_version == content.version

    def _take_over_carried(self, content: Any, live_path: LivePath | None, carried: tuple[str, StateRecord, int]) -> bool:
        """Take `carried`'s record over: its current key (the one the data holds) becomes this record's, its
        superseded keys keep their schedule, and the key of a rotation this record had pending, where that
        record does not know it, retires a full grace from now (as `_recover_if_behind` retires it); its last
        rotation is this record's. The other record is marked `moved_to` this name once this one is written."""
        owner, other, version = carried
        now, grace, clock = self.engine.clock.now(), self.policy.grace, self.policy.clock
        pending = self.record.pending
        current, retiring = other.current, list(other.retiring)
        held = self.provider.live_key(content.data)
        if held is not None and (current is None or current.key_id != held.key_id):
            if current is not None:
                retiring.append(retiring_from(current, "renamed", now + grace, clock))
            current = KeyRecord(key_id=held.key_id, rotation_id=content.custom_metadata.get("rotator-rotation-id") or None,
                                handle=dict(held.handle), issued_at=held.created_at or now)
        known = {e.key.key_id for e in retiring} | ({current.key_id} if current is not None else set())
        minted = pending.credential if pending is not None else None
        if minted is not None and minted.key_id not in known | self.record.managed_key_ids():
            retiring.append(retiring_from(minted, "recovered", now + grace, clock, paths=pending.paths_written()))
        at = str(live_path or self._live)
        record = transitions.apply(self.record, machine.Recovered(current, content.version, at, tuple(retiring)), self.policy, now)
        # A key both records name: the carrying record's entry is the later one (its stage, its `--revoke-now`).
        # Its last rotation is this credential's last (the schedule runs from it, not from the restored copy's).
        theirs = {e.key.key_id: e for e in retiring}
        last = max((t for t in (record.last_rotated_at, other.last_rotated_at) if t is not None), default=None)
        self._defer(record.model_copy(update={"retiring": [theirs.get(e.key.key_id, e) for e in record.retiring],
                                              "last_rotated_at": last, "rotations": max(record.rotations, other.rotations)}))
        self._write_outcome()
        self.engine.mark_moved(owner, version, to=self.cred.spec.name)
        self.log.warning("state.behind_live_path", dropped_rotation_id=pending.rotation_id if pending else None,
                         live_rotation_id=current.rotation_id if current else None, key_id=current.key_id if current else None,
                         vault_version=content.version, moved_from=owner)
        if pending is not None:
            self.status = "completed"
        return True
