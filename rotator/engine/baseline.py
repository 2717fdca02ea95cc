"""What a credential starts from when its record does not know the live
path: a first rotation, a lost state record, a renamed file, a changed
`vault.path`.

Invariants (contract §5, §6.9):
- a live path holding data the rotator did not write for this credential is
  never taken over here: that needs `rotator adopt NAME` (rotator.engine.adoption);
- data the rotator wrote for this credential (a lost record) gives back the
  key it holds as `current`, and the keys this credential's rotations left
  at the provider are retired after a full grace from now; with nothing
  live yet, a record that knows no key still retires them (a lost record
  whose rotation never reached the live path, or a changed `vault.path`);
- data the rotator wrote for another credential whose record says it wrote
  this very path (the file was renamed) carries that record's keys on: the
  key the live path holds becomes this credential's current key, and the
  other record's superseded keys keep their schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.core.clock import parse_rfc3339
from rotator.core.errors import PermanentError, TransientError
from rotator.core.provider import KeyMark, Provider, ProviderKey
from rotator.core.state import KeyRecord, Retiring, StateRecord
from rotator.vault.livepath import ADOPT_HINT, LiveContent


@dataclass(frozen=True)
class Baseline:
    current: KeyRecord | None
    live_version: int
    live_path: str
    retiring: tuple[Retiring, ...] = ()
    moved_from: tuple[str, int] | None = None  # (credential, its record's version): the renamed file's record


def is_behind(record: StateRecord, live_rotation: str | None, *, at: tuple[str, int] | None = None) -> bool:
    """The live path's metadata names a rotation of this credential (`live_rotation`) that the record
    knows nothing of: the record was restored from an older version (docs/CONTRACT-NOTES.md, "Issue 10:
    state records restored, deleted or lost"). `at`: the path and version read; a record that has seen
    that version of that path (it wrote it, or caught up with it) is not behind it (a rotation it
    rolled back or retired since is one it knew)."""
    if live_rotation is None:
        return False
    if at is not None and record.live_path == at[0] and record.live_version is not None and record.live_version >= at[1]:
        return False
    pending = record.pending
    known = {k.rotation_id for k in (record.current, pending.credential if pending else None) if k is not None}
    known |= {e.key.rotation_id for e in record.retiring}
    if pending is not None:
        known.add(pending.rotation_id)
    return live_rotation not in known


def promoted_before(content: LiveContent, moment: datetime | None) -> bool:
    """The live path's rotation went live before `moment` (a record's last promotion, elsewhere): one that
    record moved on from, not one it is behind, though a restore made it forget that rotation (sim F216:
    taken for newer, its key became current again and the key live where the record had written since was
    revoked). Its metadata's time is in whole seconds; unknown, or too close to tell, is not before."""
    promoted = _promoted_by(content)
    return moment is not None and promoted is not None and promoted <= moment


def _promoted_by(content: LiveContent) -> datetime | None:
    """The latest moment the live path's rotation can have gone live: its metadata's `rotator-rotated-at`,
    written in whole seconds, plus that second (sim F192); unknown or unreadable is None."""
    at = content.custom_metadata.get("rotator-rotated-at")
    if not at:
        return None
    try:
        return parse_rfc3339(at) + timedelta(seconds=1)
    except ValueError:
        return None


def needs_baseline(record: StateRecord, live_path: str) -> bool:
    """The record knows no version of this live path, or handed what it knew to a renamed file's record
    (`moved_to`): a file with its name again (a rename undone) takes that record over in turn."""
    if record.moved_to is not None:
        return True
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
    is_gone: Callable[[str], bool] = lambda name: False,
    has_no_file: Callable[[str], bool] = lambda name: False,
    skew: timedelta = timedelta(0),
) -> Baseline | None:
    """The baseline to start from, None when the path is empty; a
    `PermanentError` when the path holds someone else's data."""
    if content.data is None:
        back = _moved_back(record, name=name, live_path=live_path, read_other=read_other, has_no_file=has_no_file)
        if back is not None:
            to, other, version = back
            retiring = list(other.retiring)
            if other.current is not None:
                retiring.append(retiring_from(other.current, "moved", now + grace, clock))
            return Baseline(None, content.version, live_path, tuple(retiring), moved_from=(to, version))
        # Nothing live here yet. A lost record may still have left keys of
        # this credential's rotations at the provider (minted or stashed
        # before the first live write, or live at a `vault.path` it left).
        strays = _strays(record, provider, name=name, keep=set(), grace=grace, now=now,
                         read_other=read_other, clock=clock, skew=skew) if is_fresh(record) else ()
        return Baseline(None, content.version, live_path, strays) if strays else None
    owner = content.owner()
    meta_key = content.custom_metadata.get("rotator-key-id") or None
    rotation_id = content.custom_metadata.get("rotator-rotation-id") or "recovered"
    if owner == name:
        current = record.current
        held = _key_in(content, provider, rotation_id=rotation_id, now=now)
        if held is not None and (current is None or current.key_id != held.key_id):
            superseded = () if current is None else (retiring_from(current, "recovered", now + grace, clock),)
            current = held
        else:
            superseded = ()
        # The key the metadata names is live only if the data holds it: data
        # written over it by hand (the metadata left as it was) does not.
        named_live = meta_key if meta_key and not names_keys(provider) else None
        strays = _strays(record, provider, name=name, keep={k for k in (named_live, current.key_id if current else None) if k},
                         grace=grace, now=now, read_other=read_other, clock=clock, skew=skew) if is_fresh(record) else ()
        return Baseline(current, content.version, live_path, under_revoke_now(content, superseded + strays, now=now))
    if owner is not None:
        owner, other, version = _moved_on(owner, *read_other(owner), name=name, live_path=live_path, read_other=read_other)
        if other is not None and other.pending is not None and _wrote_here(other, live_path, meta_key):
            # A renamed file's rotation under way: its record is undone or finished first (rotator.engine.fileless).
            raise TransientError(f"{live_path} is still under credential {owner}'s unfinished rotation; waiting for it")
        if other is not None and _wrote_here(other, live_path, meta_key):
            held = _key_in(content, provider, rotation_id=rotation_id, now=now)
            # Written since by someone else (data over it, a restore): a rename does not make that
            # the rotator's own (§2, §5); the same as without the rename (sim F63). A record that
            # recorded no write here (its rotation undone) vouches only for data holding its keys.
            unrecorded_own = other.live_version is None and held is not None and held.key_id in other.managed_key_ids()
            if other.live_version != content.version and not unrecorded_own:
                wrote = f"last wrote version {other.live_version}" if other.live_version is not None else "recorded no write"
                raise PermanentError(
                    f"{live_path} is at version {content.version} but the rotator {wrote} there for credential {owner}: "
                    "someone else wrote the live path; the rotator will not overwrite it: " + ADOPT_HINT.format(name=name)
                )
            current = other.current
            retiring = list(other.retiring)
            if held is not None and (current is None or current.key_id != held.key_id):
                if current is not None:
                    retiring.append(retiring_from(current, "renamed", now + grace, clock))
                current = held
            middle = other.moved_to if other.moved_to not in (None, name) and is_gone(other.moved_to) else None
            if (other.moved_to == name or middle) and is_fresh(record):
                # Taken over already, and this credential's own record lost since: the old record handed its
                # keys over and holds none. The provider's marked keys of either name are found again. Or taken
                # over by a name that has neither a file nor a record any more (renamed again, its record lost,
                # sim F135): the keys marked with that name are this credential's too.
                known = {k.key_id for k in (current, *(e.key for e in retiring)) if k is not None}
                retiring += _strays(record, provider, name=name, keep=known, grace=grace, now=now, read_other=read_other, clock=clock,
                                    also=frozenset({middle} if middle else ()), skew=skew)
            return Baseline(current, content.version, live_path, tuple(retiring), moved_from=(owner, version))
        raise PermanentError(
            f"{live_path} holds the data of credential {owner}, whose record does not say it wrote this path; "
            f"the rotator will not overwrite it: " + ADOPT_HINT.format(name=name)
        )
    raise PermanentError(
        f"{live_path} holds data the rotator did not write; it will not overwrite it: " + ADOPT_HINT.format(name=name)
    )


def _moved_back(record: StateRecord, *, name: str, live_path: str, read_other: Callable[[str], tuple[StateRecord | None, int]],
                has_no_file: Callable[[str], bool]) -> tuple[str, StateRecord, int] | None:
    """A rename undone, and `vault.path` changed too: this record handed its keys to a renamed file's record
    (`moved_to`), that name has no file any more, and its record is at another path. That record's keys are
    this credential's again, as after a `vault.path` change: its superseded ones keep their schedule, its
    live one is retired a full grace from now (the old path left as it is, docs/CONTRACT-NOTES.md). At the
    same path the rename is taken over as any rename is (`find_baseline`); a name with a file is another
    credential, and an unknown set of names (a file did not load) is not a name gone."""
    to = record.moved_to
    if to is None or to == name or not has_no_file(to):
        return None
    other, version = read_other(to)
    if other is None or other.moved_to is not None or other.live_path in (None, live_path):
        return None
    if other.pending is not None:
        # Its unfinished rotation is undone or finished first, as a removed file's (rotator.engine.fileless).
        raise TransientError(f"credential {to}, which this one was renamed to, has an unfinished rotation; waiting for it")
    return to, other, version


def _moved_on(owner: str, other: StateRecord | None, version: int, *, name: str, live_path: str,
              read_other: Callable[[str], tuple[StateRecord | None, int]]) -> tuple[str, StateRecord | None, int]:
    """The record that carries `owner`'s credentials now: a file renamed
    again before its new name wrote the path leaves the metadata naming the
    first name, whose record says `moved_to` the second (sim F62). Followed
    while each record says it wrote this path; otherwise `owner`'s own."""
    seen = {owner, name}
    found = (owner, other, version)
    while other is not None and other.moved_to is not None and other.moved_to not in seen and len(seen) < 10:
        nxt = other.moved_to
        seen.add(nxt)
        other, version = read_other(nxt)
        if other is None or other.live_path != live_path:
            break
        found = (nxt, other, version)
    return found


def names_keys(provider: Provider) -> bool:
    """The provider can tell the key in live data (`Provider.live_key`)."""
    return type(provider).live_key is not Provider.live_key


def is_fresh(record: StateRecord) -> bool:
    """A record that knows no key: a first rotation, or a record that was lost."""
    return record.current is None and record.rotations == 0 and not record.retiring


def _wrote_here(other: StateRecord, live_path: str, meta_key: str | None) -> bool:
    if other.live_path is not None:
        return other.live_path == live_path
    # A record from before live_path was kept: its current key is the one named here.
    return other.current is not None and other.current.key_id == meta_key


def retiring_from(key: KeyRecord, by: str, after: datetime, clock: str | None, *, immediate: bool = False,
                  paths: list[str] | None = None) -> Retiring:
    return Retiring(key=key, superseded_by=by, revoke_after=after, clock=clock, immediate=immediate, paths=paths or [])


def _strays(record: StateRecord, provider: Provider, *, name: str, keep: set[str], grace: timedelta, now: datetime,
            read_other: Callable[[str], tuple[StateRecord | None, int]], clock: str | None,
            also: frozenset[str] = frozenset(), skew: timedelta = timedelta(0)) -> tuple[Retiring, ...]:
    """Keys this credential's rotations made that a lost record forgot:
    retired after a full grace from now (one may still be in its grace)."""
    if not provider.can_list:
        return ()
    return forgotten_keys(record, provider.list_keys(), name=name, keep=keep, grace=grace, now=now, read_other=read_other, clock=clock,
                          keeps_inactive=provider.retire_delay() is not None, also=also, skew=skew)


CREATE_CALL_TIME = timedelta(seconds=30)  # an issuing note to its create: one call (connect 5 s + read 15 s at most)


def issued_unmarked(key: ProviderKey, skew: timedelta) -> KeyMark | None:
    """The rotation whose issuing note (rotator.core.provider.IssuingNote) names this unmarked key: made
    within the clock skew allowance (and one call's time) of the note, and not among the keys it listed
    before. Such a key never reached the rotator's hands (issue() returns a key once marked), so it was
    never live. None where no note fits, or notes of two credentials do."""
    if key.mark is not None or key.created_at is None:
        return None
    margin = max(timedelta(seconds=5), skew)
    fits = {KeyMark(n.credential, n.rotation_id) for n in key.issuing
            if key.key_id not in n.before and n.at - margin <= key.created_at <= n.at + margin + CREATE_CALL_TIME}
    return fits.pop() if len(fits) == 1 else None


def forgotten_keys(record: StateRecord, listed: Iterable[ProviderKey], *, name: str, keep: set[str], grace: timedelta,
                   now: datetime, read_other: Callable[[str], tuple[StateRecord | None, int]], clock: str | None,
                   keeps_inactive: bool = True, also: frozenset[str] = frozenset(),
                   skew: timedelta = timedelta(0)) -> tuple[Retiring, ...]:
    """The listed keys marked as this credential's that `record` does not
    know (nor `keep`), as retiring after a full grace from now. Keys marked
    with an old name whose record says it moved here (a renamed file,
    contract §6.9), directly or along a chain of renames, are this
    credential's too. An unmarked key an issuing note of this credential
    names (`issued_unmarked`) is its too, and revoked at once: it was never
    live. `keeps_inactive`: an inactive
    key still has to be retired (AWS: deactivated, not yet deleted).
    `also`: more credential names whose keys count as this one's."""
    known = record.managed_key_ids() | keep
    moved: dict[str, bool] = {name: True, **dict.fromkeys(also, True)}

    def ours(credential: str) -> bool:
        # Followed along a chain of renames (a -> b -> this one), each hop by its record's moved_to.
        chain: list[str] = []
        while credential not in moved and credential not in chain and len(chain) < 32:
            chain.append(credential)
            other, _ = read_other(credential)
            if other is None or other.moved_to is None:
                break
            credential = other.moved_to
        verdict = moved.get(credential, False)
        for hop in chain:
            moved[hop] = verdict
        return verdict

    found = []
    for key in listed:
        mark = key.mark or issued_unmarked(key, skew)
        if key.key_id in known or mark is None or not ours(mark.credential):
            continue
        if not key.active and not keeps_inactive:
            continue  # revoked already (an expired Stripe key stays listed)
        entry = retiring_from(KeyRecord(key_id=key.key_id, rotation_id=mark.rotation_id, handle=dict(key.handle),
                                        issued_at=key.created_at or now), "recovered", now + grace, clock)
        found.append(entry if key.mark else entry.model_copy(update={"revoke_after": now, "immediate": True}))
    return tuple(found)


def under_revoke_now(content: LiveContent, entries: tuple[Retiring, ...], *, now: datetime) -> tuple[Retiring, ...]:
    """Keys a record forgot, found again: where the live path's rotation was asked with `--revoke-now`
    (its metadata says so), those made before that rotation's promotion are its previous credentials,
    which it revoked or was revoking at once (sim F120: the record lost before it got to them); later
    ones keep their grace."""
    meta = content.custom_metadata
    promoted = _promoted_by(content)
    if meta.get("rotator-revoke-now") != "true" or promoted is None:
        return entries
    # Not that rotation's own key (the metadata names it; data written over it since, say a later rotation whose
    # metadata merge never landed): the request was for the keys before it (sim F185).
    own = {meta.get("rotator-key-id") or None} - {None}
    rotation = meta.get("rotator-rotation-id") or None
    return tuple(e.model_copy(update={"revoke_after": now, "immediate": True})
                 if e.key.issued_at < promoted and e.key.key_id not in own and (rotation is None or e.key.rotation_id != rotation)
                 else e for e in entries)


def live_key_ids(content: LiveContent, provider: Provider) -> set[str]:
    """The keys the live path holds: the one its data holds, or, where the
    provider cannot tell keys in data, the one its metadata names."""
    held = provider.live_key(content.data) if content.data else None
    if held is not None:
        return {held.key_id}
    meta_key = content.custom_metadata.get("rotator-key-id") or None
    return {meta_key} if meta_key and not names_keys(provider) else set()


def pending_revoke_now(record: StateRecord) -> bool:
    return record.pending is not None and record.pending.revoke_now


def rotation_key_overwritten(content: LiveContent, provider: Provider, held: KeyRecord | None, *, rotation_id: str, name: str,
                             grace: timedelta, now: datetime, revoke_now: bool, clock: str | None) -> tuple[Retiring, ...]:
    """A completed rotation found again (machine.Recovered) whose key the live
    data no longer holds (someone wrote over it, the metadata left as it
    was): that key, found by its mark, retired after a full grace (at once
    under `--revoke-now`)."""
    meta_key = content.custom_metadata.get("rotator-key-id") or None
    if not meta_key or not names_keys(provider) or not provider.can_list or (held is not None and held.key_id == meta_key):
        return ()
    for key in provider.list_keys():
        if key.key_id == meta_key and key.mark is not None and key.mark.credential == name and key.mark.rotation_id == rotation_id:
            record = KeyRecord(key_id=key.key_id, rotation_id=rotation_id, handle=dict(key.handle), issued_at=key.created_at or now)
            return (Retiring(key=record, superseded_by="overwritten", revoke_after=now if revoke_now else now + grace,
                             immediate=revoke_now, clock=clock),)
    return ()
