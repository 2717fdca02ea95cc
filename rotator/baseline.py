"""What a credential starts from when its record does not know the live
path: a first rotation, a lost state record, a renamed file, a changed
`vault.path`.

Invariants (contract §5, §6.9):
- a live path holding data the rotator did not write for this credential is
  never taken over here: that needs `rotator adopt NAME` (rotator.adoption);
- data the rotator wrote for this credential (a lost record) gives back the
  key it holds as `current`, and the keys this credential's rotations left
  at the provider are retired after a full grace from now;
- data the rotator wrote for another credential whose record says it wrote
  this very path (the file was renamed) carries that record's keys on: the
  key the live path holds becomes this credential's current key, and the
  other record's superseded keys keep their schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.errors import PermanentError, TransientError
from rotator.livepath import ADOPT_HINT, LiveContent
from rotator.provider import Provider
from rotator.state import KeyRecord, Retiring, StateRecord


@dataclass(frozen=True)
class Baseline:
    current: KeyRecord | None
    live_version: int
    live_path: str
    retiring: tuple[Retiring, ...] = ()
    moved_from: tuple[str, int] | None = None  # (credential, its record's version): the renamed file's record


def needs_baseline(record: StateRecord, live_path: str) -> bool:
    """The record knows no version of this live path."""
    if record.live_path is not None and record.live_path != live_path:
        return True
    return record.live_version is None


def _key_in(content: LiveContent, provider: Provider, *, rotation_id: str, now: datetime) -> KeyRecord | None:
    """The key the live data holds, if the provider can name it."""
    if content.data is None:
        return None
    named = provider.live_key(content.data)
    if named is None:
        return None
    return KeyRecord(key_id=named.key_id, rotation_id=rotation_id, handle=dict(named.handle), issued_at=named.created_at or now)


def find_baseline(
    record: StateRecord,
    content: LiveContent,
    *,
    name: str,
    live_path: str,
    provider: Provider,
    grace: timedelta,
    now: datetime,
    read_other: Callable[[str], tuple[StateRecord | None, int]],
    clock: str | None = None,
) -> Baseline | None:
    """The baseline to start from, None when the path is empty; a
    `PermanentError` when the path holds someone else's data."""
    if content.data is None:
        return None
    owner = content.owner()
    meta_key = content.custom_metadata.get("rotator-key-id") or None
    rotation_id = content.custom_metadata.get("rotator-rotation-id") or "recovered"
    if owner == name:
        current = record.current
        held = _key_in(content, provider, rotation_id=rotation_id, now=now)
        if held is not None and (current is None or current.key_id != held.key_id):
            superseded = () if current is None else (_retire(current, "recovered", now + grace, clock),)
            current = held
        else:
            superseded = ()
        strays = _strays(record, provider, name=name, keep={k for k in (meta_key, current.key_id if current else None) if k},
                         grace=grace, now=now, clock=clock) if record.current is None and record.rotations == 0 else ()
        return Baseline(current, content.version, live_path, superseded + strays)
    if owner is not None:
        other, version = read_other(owner)
        if other is not None and other.pending is not None and _wrote_here(other, live_path, meta_key):
            # A renamed file's rotation under way: its record is undone or finished first (rotator.fileless).
            raise TransientError(f"{live_path} is still under credential {owner}'s unfinished rotation; waiting for it")
        if other is not None and _wrote_here(other, live_path, meta_key):
            held = _key_in(content, provider, rotation_id=rotation_id, now=now)
            current = other.current
            retiring = list(other.retiring)
            if held is not None and (current is None or current.key_id != held.key_id):
                if current is not None:
                    retiring.append(_retire(current, "renamed", now + grace, clock))
                current = held
            return Baseline(current, content.version, live_path, tuple(retiring), moved_from=(owner, version))
        raise PermanentError(
            f"{live_path} holds the data of credential {owner}, whose record does not say it wrote this path; "
            f"the rotator will not overwrite it: " + ADOPT_HINT.format(name=name)
        )
    raise PermanentError(
        f"{live_path} holds data the rotator did not write; it will not overwrite it: " + ADOPT_HINT.format(name=name)
    )


def _wrote_here(other: StateRecord, live_path: str, meta_key: str | None) -> bool:
    if other.live_path is not None:
        return other.live_path == live_path
    # A record from before live_path was kept: its current key is the one named here.
    return other.current is not None and other.current.key_id == meta_key


def _retire(key: KeyRecord, by: str, after: datetime, clock: str | None) -> Retiring:
    return Retiring(key=key, superseded_by=by, revoke_after=after, clock=clock)


def _strays(record: StateRecord, provider: Provider, *, name: str, keep: set[str], grace: timedelta, now: datetime,
            clock: str | None) -> tuple[Retiring, ...]:
    """Keys this credential's rotations made that a lost record forgot:
    retired after a full grace from now (one may still be in its grace)."""
    if not provider.can_list:
        return ()
    known = record.managed_key_ids() | keep
    found = []
    for key in provider.list_keys():
        if key.key_id in known or key.mark is None or key.mark.credential != name:
            continue
        found.append(_retire(KeyRecord(key_id=key.key_id, rotation_id=key.mark.rotation_id, handle=dict(key.handle),
                                       issued_at=key.created_at or now), "recovered", now + grace, clock))
    return tuple(found)

