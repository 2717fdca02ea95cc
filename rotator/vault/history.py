"""What a state record restored from an older version forgot: the versions the restore undid.

KV v2 keeps a record's recent versions. A restore (`bao kv rollback`, or an older version written back
by hand) writes an earlier version's data as the latest; the versions between that one and the copy
are what the rotator wrote since and the record no longer says: a rotation finished at a path
`vault.path` had moved to, say. Read only before a resumed rotation is undone (rare), never on the
usual path.
"""

from __future__ import annotations

from rotator.core.state import StateRecord
from rotator.vault.store import VaultStore


def undone_versions(store: VaultStore, mount: str, path: str, *, version: int, record: StateRecord,
                    back: int = 10) -> list[StateRecord]:
    """When `record` (read at `version`) is a copy of an earlier version, or descends from one (the
    rotator wrote since the restore: a lease taken, a step recorded, sim sweep seed 14045), the versions
    written between the original and its copy, newest first; empty when no copy is found (up to `back`
    version reads). The newest version equal to an older one, with a version between, is the copy: each
    write carries a new random `write_id`, so only a copy equals an older version (records written before
    it was kept compare by content alone, sim F186). Versions deleted, destroyed or malformed are passed over."""
    return restore_split(store, mount, path, version=version, record=record, back=back)[1]


def restore_split(store: VaultStore, mount: str, path: str, *, version: int, record: StateRecord,
                  back: int = 10) -> tuple[list[StateRecord], list[StateRecord]]:
    """`undone_versions`, with the versions from `record` back to the copy (newest first, the copy last):
    what the record has known since the restore. Both empty when no copy is found."""
    read = _versions(store, mount, path, version=version, record=record, older=back)
    for copy, held in enumerate(read):
        # Two equal versions with nothing between say nothing (a copy of the version just before changes nothing).
        original = next((i for i in range(copy + 2, len(read)) if read[i] == held), None)
        if original is not None:
            return read[:copy + 1], read[copy + 1:original]
    return [], []


def paths_named(records: list[StateRecord]) -> list[str]:
    """The live paths those versions name (where each last wrote, where its rotation in flight wrote), newest first."""
    out: list[str] = []
    for record in records:
        for path in (record.live_path, record.pending.target if record.pending is not None else None):
            if path and "/" in path and path not in out:
                out.append(path)
    return out


def recent_versions(store: VaultStore, mount: str, path: str, *, version: int, record: StateRecord,
                    back: int = 10) -> list[StateRecord]:
    """`record` (read at `version`) and the versions before it, newest first, up to `back` in all (KV v2
    keeps 10 by default). Versions deleted, destroyed or malformed are passed over."""
    return _versions(store, mount, path, version=version, record=record, older=back - 1)


def _versions(store: VaultStore, mount: str, path: str, *, version: int, record: StateRecord, older: int) -> list[StateRecord]:
    """`record` (read at `version`), then up to `older` versions before it that parse, newest first."""
    out = [record]
    for at in range(version - 1, max(0, version - 1 - older), -1):
        data = store.read_version(mount, path, at)
        if data is None:
            continue
        try:
            out.append(StateRecord.from_vault(data))
        except ValueError:
            continue
    return out


def rotation_paths(records: list[StateRecord], rotation_id: str) -> list[str] | None:
    """The live paths named by those versions in which `rotation_id` is the rotation in flight or the
    current one (its earlier targets too): every path that rotation can have written its key to, as far as
    those versions tell. None when no version names it so (where it went live is not known: one naming it
    only as retiring says where its successor went live, not where it did)."""
    naming = [r for r in records if (r.pending is not None and r.pending.rotation_id == rotation_id)
              or (r.current is not None and r.current.rotation_id == rotation_id)]
    if not naming:
        return None
    paths = paths_named(naming)
    earlier = [p for r in naming if r.pending is not None and r.pending.rotation_id == rotation_id for p in r.pending.earlier_targets]
    return paths + [p for p in dict.fromkeys(earlier) if p not in paths]
