"""`rotator adopt NAME`: accept what the live path holds now as the
credential's baseline (contract §2, §5).

A first rotation onto a path holding data the rotator did not write, and a
rotation after someone else wrote the live path, both refuse until this is
run. Where the provider can name the key in that data (AWS
`access_key_id`, Stripe `key_id`, deploy key `key_id`) and the key is in the
credential's scope at the provider, it becomes the credential's current key,
so the next rotation retires it after grace: this is how a static key
becomes a rotated one.

Invariants:
- nothing is written to the live path's data, and only the `managed-by` and
  `rotator-*` keys of its metadata change (they now name the adopted key);
- the state record is written with check-and-set, never while another
  process holds the credential's lease or while a promotion is finishing;
  adopt takes the lease itself (check-and-set) before it writes the live
  path's metadata, and the adopted record releases it;
- a key the rotator made that the adopted data replaced (a foreign write
  over our key) is kept for a full grace, then revoked like any other; so
  are keys no record knows any more: this credential's (a lost record) and
  those of the credential the adopted data was written for, when its record
  is gone or says it moved here (a renamed file whose record was lost);
- a renamed file whose old name's record still holds this path (someone
  else wrote the path, so the rename was refused until adopt) carries that
  record's keys on, and the old record is marked `moved_to` this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.audit.events import get_logger, register_secret
from rotator.config.spec import LoadedCredential
from rotator.core.clock import to_rfc3339
from rotator.core.errors import CasMismatchError, LeaseHeldError, PermanentError, RotatorError
from rotator.core.provider import ProviderKey
from rotator.core.state import KeyRecord, Lease, Retiring, StateRecord
from rotator.engine.baseline import forgotten_keys
from rotator.engine.reconcile import Engine
from rotator.vault.livepath import LiveContent, LivePath


def _left_behind(engine: Engine, name: str, record: StateRecord, content: LiveContent, listed: list[ProviderKey], *,
                 grace: timedelta, now: datetime, carried: bool = False) -> tuple[Retiring, ...]:
    """Keys the rotator made for this path that no record knows any more:
    this credential's (a lost record), and, where the data adopted was
    written by the rotator for another credential whose record is gone or
    says it moved here (a renamed file whose record was lost), that one's.
    Retired after a full grace, like any key the adopted data replaced."""
    owner = content.owner()
    also: frozenset[str] = frozenset()
    if owner is not None and owner != name:
        other, _ = engine.read_record(owner)
        if carried or other is None or other.moved_to == name:
            also = frozenset({owner})
    # The rotation in flight, which adopt leaves pending, keeps its own keys: its sweep revokes them (never live)
    # or its stash entry takes one up. Retired here, its next issue took that stash entry for another process's
    # and stopped, every few minutes for ever (sim F209).
    in_flight = record.pending.rotation_id if record.pending is not None else None
    keep = {k.key_id for k in listed if k.mark is not None and k.mark.credential == name and k.mark.rotation_id == in_flight}
    return forgotten_keys(record, listed, name=name, keep=keep, grace=grace, now=now, read_other=engine.read_record,
                          clock=engine.identity.boot_id, also=also)


def _renamed_from(engine: Engine, name: str, live: LivePath, content: LiveContent, now: datetime) -> tuple[str, StateRecord, int] | None:
    """The record of the credential the adopted data was written for, when
    that record says it wrote this very path and moved nowhere: a file
    renamed after someone else wrote its path (sim F63). Its keys are
    carried on, as a rename's are (contract §6.9), and it is marked moved."""
    owner = content.owner()
    if owner is None or owner == name:
        return None
    other, version = engine.read_record(owner)
    if other is None or other.moved_to is not None or other.live_path != str(live):
        return None
    if other.pending is not None or (other.lease is not None and engine.lease_held_by_other(other.lease, now)):
        raise LeaseHeldError(f"{live} is still under credential {owner}'s unfinished rotation; try again when it is done")
    return owner, other, version


def _take_lease(engine: Engine, name: str, base: StateRecord, version: int, now: datetime) -> int:
    me = engine.identity
    lease = Lease(holder=engine.holder, expires_at=now + timedelta(seconds=engine.options.lease_seconds), host=me.host,
                  boot_id=me.boot_id, pid_namespace=me.pid_namespace, pid=me.pid, start_ticks=me.start_ticks)
    try:
        return engine.store.write(engine.options.state_mount, engine.state_path(name),
                                  base.model_copy(update={"lease": lease}).to_vault(), cas=version)
    except CasMismatchError:
        raise LeaseHeldError(f"{name}: its state record changed while adopting; try again") from None


def _release(engine: Engine, name: str, base: StateRecord, version: int) -> None:
    try:
        engine.store.write(engine.options.state_mount, engine.state_path(name), base.to_vault(), cas=version)
    except RotatorError:
        pass  # it expires by itself


@dataclass(frozen=True)
class Adopted:
    key_id: str | None
    vault_version: int
    note: str | None = None  # why no key was brought under management


def adopt(engine: Engine, cred: LoadedCredential) -> Adopted:
    """Take the live path's current content as the credential's baseline."""
    spec = cred.spec
    live = LivePath(engine.store, spec.vault.mount, spec.vault.path)
    content = live.read()
    if content.data is None:
        raise PermanentError(f"{live} holds no data to adopt: the first rotation writes it without `adopt`")
    record, version = engine.read_record(spec.name)
    base = record or StateRecord.new(spec.name, spec.provider)
    now = engine.clock.now()
    if base.lease is not None and engine.lease_held_by_other(base.lease, now):
        raise LeaseHeldError(f"{spec.name}: {base.lease.holder} holds the lease; try again when it is done")
    if base.pending is not None and base.pending.phase == "promoted":
        raise LeaseHeldError(f"{spec.name}: a rotation is finishing its promotion; try again when it is done")
    renamed = _renamed_from(engine, spec.name, live, content, now)
    provider = engine.provider_for(cred)
    register_secret(*provider.secret_values(content.data))
    named = provider.live_key(content.data)
    note = None
    listed = provider.list_keys() if provider.can_list else []
    if named is not None and provider.can_list and named.key_id not in {k.key_id for k in listed}:
        note = f"key {named.key_id} is not in this credential's scope at the provider, so it is not brought under management"
        named = None
    current = None
    if named is not None:
        if base.current is not None and base.current.key_id == named.key_id:
            current = base.current
        else:
            current = KeyRecord(key_id=named.key_id, rotation_id=f"adopted-v{content.version}", handle=dict(named.handle),
                                issued_at=named.created_at or now)
    # The adopted key is live again: whatever retirement it was on ends here.
    # A renamed file's old record carries on here: its superseded keys keep their schedule.
    carried = list(renamed[1].retiring) if renamed else []
    retiring = [e for i, e in enumerate([*base.retiring, *carried])
                if (current is None or e.key.key_id != current.key_id) and e.key.key_id not in {o.key.key_id for o in base.retiring[:i]}]
    # What the adopted data replaced keeps a full grace from now, and from the
    # next promotion if that comes sooner (its successor, the first new
    # credential after the adoption; rotator.core.transitions).
    for replaced in (base.current, renamed[1].current if renamed else None):
        if replaced is None or replaced.key_id == (current.key_id if current else None):
            continue
        if replaced.key_id not in {e.key.key_id for e in retiring}:
            retiring.append(Retiring(key=replaced, superseded_by=f"adopted-v{content.version}", revoke_after=now + spec.grace,
                                     clock=engine.identity.boot_id))
    retiring += _left_behind(engine, spec.name, base.model_copy(update={"current": current, "retiring": retiring}), content, listed,
                             grace=spec.grace, now=now, carried=renamed is not None)
    # Take the lease first (check-and-set), so that no rotation starts between
    # the metadata written below and the record that matches it.
    version = _take_lease(engine, spec.name, base, version, now)
    try:
        if live.read().version != content.version:
            raise LeaseHeldError(f"{live} changed while adopting; try again")
        live.store.merge_custom_metadata(live.mount, live.path, {
            "managed-by": "rotator", "rotator-credential": spec.name, "rotator-provider": spec.provider,
            "rotator-key-id": current.key_id if current else "", "rotator-rotation-id": f"adopted-v{content.version}",
            "rotator-rotated-at": to_rfc3339(now),
        })
    except RotatorError:
        _release(engine, spec.name, base, version)
        raise
    adopted = base.model_copy(update={
        "current": current, "live_version": content.version, "live_path": str(live), "retiring": retiring,
        "attempts": 0, "next_attempt_at": None, "last_error": None, "last_error_step": None, "last_error_at": None,
        "blocked_fingerprint": None, "lease": None, "moved_to": None,
    })
    try:
        engine.store.write(engine.options.state_mount, engine.state_path(spec.name), adopted.to_vault(), cas=version)
    except CasMismatchError:
        raise LeaseHeldError(f"{spec.name}: its state record changed while adopting; try again") from None
    if renamed is not None:
        engine.mark_moved(renamed[0], renamed[2], to=spec.name)
    engine.changes.record(spec.name)
    key_id = current.key_id if current else None
    get_logger(credential=spec.name, provider=spec.provider).info(
        "credential.adopted", key_id=key_id, vault_version=content.version, vault_path=str(live), **({"note": note} if note else {})
    )
    return Adopted(key_id, content.version, note)
