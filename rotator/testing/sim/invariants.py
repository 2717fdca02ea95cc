"""The guarantees of contract §6, as checks over a simulated world.

Checked just before each provider or live-path effect (call time):
- `never-revoke-live`: no revoke or deactivate targets a key that a live
  path's current version holds (§6.1);
- `grace`: a superseded credential is not revoked or deactivated before
  `grace` has passed since its successor went live, unless a revoke-now
  was asked after it was made (§6.3);
- `one-lease-holder`: a process that mints a credential or writes a live
  path holds a lease on some state record; after another process took the
  lease over, the first does nothing more (§6.5);
- `aws-two-keys`: an IAM user never holds more than 2 keys;
- `reconcile-raised`: a reconcile never ends in an exception other than the
  project's errors (the daemon would survive it, but the step never ends).

Checked after every step:
- `live-works`: from the first promotion on, each live path's current
  version holds a credential the provider accepts (§6.1); a path someone
  else wrote since is excused, and so is an installation token that died
  of its own hour.

Checked at quiescence (faults stopped, time run past grace, deactivation
delays, backoff caps and leases):
- `revoke-now-honoured`: every completed `rotate --revoke-now` left no
  older credential accepted within 70 minutes of quiescence (§6.3);
- `no-orphans`: nothing rotator-made is still accepted at the provider
  except what a live path holds, a record's current or pending credential,
  and credentials still inside their grace (§6.4, §6.8, §6.9).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rotator.testing.sim.aws import AwsIam
from rotator.testing.sim.facts import MOUNT, STATE_PREFIX

if TYPE_CHECKING:
    from rotator.testing.sim.world import World

CREATE_OPS = frozenset({"create_access_key", "POST keys", "POST access_tokens", "POST create"})
RETIRE_OPS = frozenset({"delete_access_key", "update_access_key", "DELETE key", "DELETE installation/token", "POST expire", "DELETE endpoint"})
REVOKE_NOW_WINDOW = timedelta(minutes=70)  # past the 1 h backoff cap


def check_acting_holder(world: World, actor: str, what: str, *, kind: str) -> None:
    """A process that holds no lease (it stalled past it, and another may
    have taken it over) never mints and never lands a live-path write. It
    may make the one call that follows its last lease check, if that call
    is a metadata merge or a retirement (neither can be fenced: KV v2
    metadata has no check-and-set, providers have no fencing tokens); what
    that call does is judged by never-revoke-live, grace and live-works.
    `kind`: mint, live-write (one that landed: a lost check-and-set has no
    effect), metadata, retire."""
    records = world.records()
    if any(r.lease is not None and r.lease.holder == actor for r in records.values()):
        world.stale_effects.pop(actor, None)
        return
    holders = sorted({r.lease.holder for r in records.values() if r.lease is not None})
    world.stale_effects[actor] = world.stale_effects.get(actor, 0) + 1
    if kind in ("mint", "live-write"):
        world.violate("one-lease-holder", f"{actor} made {what} without holding a lease (holders now: {holders or 'none'})")
    elif world.stale_effects[actor] > 1:
        world.violate("one-lease-holder", f"{actor} made {what}, a second call since it lost its lease (holders now: {holders or 'none'})")


def record_written(world: World, actor: str, path: str) -> None:
    """A state-record write of `actor` landed (check-and-set): holding the lease
    in it, the actor checked its lease afresh, and its count of calls made
    without one starts over (F110)."""
    record = world.records().get(path[len(STATE_PREFIX) + 1:])
    if record is not None and record.lease is not None and record.lease.holder == actor:
        world.stale_effects.pop(actor, None)


def _revoke_now_voids_grace(world: World, key_id: str) -> bool:
    key = world.service.keys.get(key_id)
    return key is not None and any(r.started_at >= key.created_at for r in world.revoke_now)


def before_provider_effect(world: World, actor: str, op: str, target: str | None) -> None:
    if op in CREATE_OPS:
        check_acting_holder(world, actor, op, kind="mint")
        return
    if op not in RETIRE_OPS or target is None:
        return
    check_acting_holder(world, actor, op, kind="retire")
    if not world.service.is_accepted(target):
        return
    holders = [path for path, key in world._live_keys().items() if key == target]
    if holders:
        world.violate("never-revoke-live", f"{actor} called {op} on {target}, which live path {holders[0]} holds")
    superseded = world.superseded_at.get(target)
    now = world.clock.now()
    if superseded is not None and now < superseded + world.grace and not _revoke_now_voids_grace(world, target):
        world.violate("grace", f"{actor} called {op} on {target} {now - superseded} after its successor went live (grace {world.grace})")


def after_provider_effect(world: World, op: str) -> None:
    if isinstance(world.service, AwsIam) and len(world.service.user_keys()) > AwsIam.LIMIT:
        world.violate("aws-two-keys", f"the IAM user holds {len(world.service.user_keys())} keys after {op}")


def check_step(world: World) -> None:
    for path, tracking in world.tracked.items():
        if not tracking.promoted or tracking.foreign or tracking.retired:
            continue
        key = world.service.key_of(world.kv.peek("secret", path))
        if key is None:
            world.violate("live-works", f"live path {path} holds no credential the rotator made")
        elif not world.service.is_accepted(key) and not world.service.expired_naturally(key):
            world.violate("live-works", f"live path {path} holds {key}, which the provider rejects")


def check_revoke_now(world: World, *, undone_too: bool = True) -> None:
    """Within the window after quiescence began; `undone_too=False` leaves out the requests a restore of the
    state record to an older version undid: an idle record is compared with its live path when it next acts
    (docs/CONTRACT-NOTES.md), so those are checked at the end of quiescence."""
    live = set(world._live_keys().values())
    for request in world.revoke_now:
        if request.completed_at is None or (request.undone and not undone_too):
            continue
        for key_id in sorted(request.targets - live):
            if world.service.is_accepted(key_id):
                world.violate("revoke-now-honoured",
                              f"{key_id} is still accepted long after rotate --revoke-now completed at {request.completed_at:%H:%M:%S}")


def check_orphans(world: World, *, graced_at: datetime | None = None) -> None:
    """`graced_at`: the moment whose grace windows count (the last pass);
    acceptance is judged now."""
    now = graced_at or world.clock.now()
    allowed = {key for key in world._live_keys(retired=True).values() if key}
    for record in world.records().values():
        if record.current is not None:
            allowed.add(record.current.key_id)
        if record.pending is not None and record.pending.credential is not None:
            allowed.add(record.pending.credential.key_id)
    for key_id, at in world.superseded_at.items():
        if now < at + world.grace:
            allowed.add(key_id)
    for key in world.service.rotator_made():
        if key.key_id not in allowed and world.service.is_accepted(key.key_id) and not _forgotten_by_all(world, key.key_id):
            why = "never stashed" if key.key_id not in world.superseded_at else f"superseded at {world.superseded_at[key.key_id]:%d %H:%M}"
            world.violate("no-orphans", f"{key.key_id} (made by {key.minted_by}, {why}) is still accepted at quiescence")


def _forgotten_by_all(world: World, key_id: str) -> bool:
    """Nothing the rotator can read links the key's credential to anything it
    acts on: following the records' `moved_to` from the name the key was
    minted for, no name has a file, none has a record that still holds keys
    (a moved one handed them over; a soft-deleted one is revived, so counts),
    and no file's live path has metadata naming one. The provider params
    (which account, which user) were only in those, so no rotator can find
    the key to retire it (docs/CONTRACT-NOTES.md, "Issue 10: state records
    restored, deleted or lost"). Counted, not hidden: `world.unrecoverable`."""
    name = world.lines.minted_for.get(key_id)
    if name is None:
        return False
    chain: list[str] = []
    while name is not None and name not in chain:
        chain.append(name)
        path = f"{STATE_PREFIX}/{name}"
        if world.kv.current_version(MOUNT, path) == 0:
            break  # deleted with every version
        record = world.records().get(name)
        if record is None or record.moved_to is None:
            return False  # a record that holds its keys (or soft-deleted: revived)
        name = record.moved_to
    files = {spec.stem: spec.path for spec in world.files.values()}
    if set(chain) & set(files):
        return False
    if any(world.kv.peek_metadata(MOUNT, path).get("rotator-credential") in chain for path in files.values()):
        return False
    world.unrecoverable.add(key_id)
    return True
