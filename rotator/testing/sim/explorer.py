"""The seeded explorer: make a schedule from a seed, run it against a fresh
world, check the invariants after every step, run to quiescence, and on a
violation shrink the schedule to a minimal replay.

A schedule is plain data — a provider kind and a list of steps (tuples) —
so a failing one prints as a line of Python that becomes a regression test:

    replay("aws", [("tick", "r0", (CallFault(3, "lost"),)), ("advance", 86400), ...])

Steps:
- ("tick", SLOT, PLAN): a daemon replica reconciles every credential it has
  a file for, with the call faults in PLAN;
- ("rotate", REVOKE_NOW, PLAN): `rotator rotate NAME [--revoke-now]`;
- ("pause", SLOT, AT, SECONDS, OTHER): SLOT reconciles, and before its
  AT-th Vault call it stalls for SECONDS while OTHER (a replica, or "cli"
  for `rotate --revoke-now`) runs; then it resumes;
- ("advance", SECONDS), ("skew", SLOT, SECONDS);
- ("state", lost|older|soft), ("foreign", garbage|restore),
  ("edit", rename|delete|restore|flap|path|params) — flap: the file is
  gone while one replica runs, then back; a rename at a step index that is
  a multiple of 3, of a file whose name came from the last rename, undoes
  that rename (the file's previous name back).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotator.core.transitions import BACKOFF_CAP
from rotator.engine.fileless import LOOK_AGAIN, has_work
from rotator.testing.sim import invariants
from rotator.testing.sim.faults import ALL_FAULTS, CALL_FAULTS, CallFault
from rotator.testing.sim.providers import KINDS, toggled_params
from rotator.testing.sim.world import LEASE_SECONDS, MOUNT, SKEW_ALLOWANCE, SLOTS, STATE_PREFIX, FileSpec, RunResult, Tracking, World

Step = tuple[Any, ...]
ADVANCES = (5, 30, 120, 400, 1200, 3600, 3 * 3600, 7 * 3600, 86400)
RETRY_AFTERS = (1.0, 20.0, 90.0, 300.0)
SETTLE_SECONDS = 120.0  # past every simulated provider's own lag between "revoked" and "rejected"
QUIESCE_ROUNDS = 80  # ticks of every replica, each followed by a jump to the next wake


@dataclass(frozen=True)
class Schedule:
    kind: str
    steps: tuple[Step, ...]
    seed: int = 0

    def replay_text(self) -> str:
        body = ",\n    ".join(repr(s) for s in self.steps)
        return f"replay({self.kind!r}, [\n    {body},\n], seed={self.seed})"


# -- making schedules ---------------------------------------------------------------


def generate(seed: int, *, faults: Iterable[str] = ALL_FAULTS, kinds: Sequence[str] | None = None,
             steps: tuple[int, int] = (30, 40)) -> Schedule:
    rng = random.Random(seed)
    enabled = set(faults)
    kind = rng.choice(list(kinds or KINDS))
    call_kinds = [k for k in CALL_FAULTS if k in enabled]
    menu: list[tuple[str, int]] = [("tick", 40), ("advance", 24), ("rotate", 4)]
    optional = {"pause": 6, "skew": 2, "state_lost": 1, "state_older": 1, "state_soft_deleted": 1, "foreign_garbage": 1,
                "foreign_restore": 1, "edit_rename": 2, "edit_delete": 1, "edit_restore": 1, "edit_path": 1, "edit_params": 1,
                "revoke_now": 4}
    menu += [(name, weight) for name, weight in optional.items() if name in enabled]
    names, weights = zip(*menu, strict=True)
    out: list[Step] = []
    for _ in range(rng.randint(*steps)):
        what = rng.choices(names, weights)[0]
        out.append(_make_step(rng, what, call_kinds))
    return Schedule(kind, tuple(out), seed)


def _plan(rng: random.Random, call_kinds: list[str]) -> tuple[CallFault, ...]:
    if not call_kinds or rng.random() < 0.45:
        return ()
    faults = []
    for index in sorted(rng.sample(range(30), rng.choice((1, 1, 2, 3)))):
        kind = rng.choice(call_kinds)
        faults.append(CallFault(index, kind, rng.choice(RETRY_AFTERS) if kind == "429" else 0.0))
    return tuple(faults)


def _make_step(rng: random.Random, what: str, call_kinds: list[str]) -> Step:
    if what == "tick":
        return ("tick", rng.choice(SLOTS), _plan(rng, call_kinds))
    if what == "advance":
        return ("advance", rng.choice(ADVANCES))
    if what in ("rotate", "revoke_now"):
        return ("rotate", what == "revoke_now", _plan(rng, call_kinds))
    if what == "pause":
        slot = rng.choice(SLOTS)
        other = rng.choice([s for s in SLOTS if s != slot] + ["cli"])
        return ("pause", slot, rng.randrange(12), rng.choice((LEASE_SECONDS + SKEW_ALLOWANCE + 1, LEASE_SECONDS * 3, 3600.0)), other)
    if what == "skew":
        # Within half the allowance of the true time (the `rotate` process's): two clocks differ by at most the allowance.
        half = SKEW_ALLOWANCE / 2
        return ("skew", rng.choice(SLOTS), rng.choice((-half, -30.0, 0.0, 30.0, half)))
    if what == "edit_restore":
        return ("edit", "flap")
    group, _, detail = what.partition("_")
    return (group, {"soft": "soft", "soft_deleted": "soft"}.get(detail, detail))


# -- running -----------------------------------------------------------------------


def apply_step(world: World, step: Step) -> None:
    op = step[0]
    if op == "tick":
        world.with_plan(step[1], step[2], lambda: world.tick(step[1]))
    elif op == "rotate":
        if step[1]:
            world.faults["revoke_now"] += 1
        world.with_plan("cli", step[2], lambda: world.rotate(step[1]))
    elif op == "pause":
        _, slot, at, seconds, other = step
        world.with_plan(slot, (), lambda: world.tick(slot), pause=(at, seconds, other))
    elif op == "advance":
        world.clock.advance(step[1])
    elif op == "skew":
        world.set_skew(step[1], step[2])
        world.faults["skew"] += 1
    elif op == "state":
        _state_fault(world, step[1])
    elif op == "foreign":
        _foreign_write(world, step[1])
    elif op == "edit":
        _edit(world, step[1])
    else:
        raise ValueError(f"unknown step {step!r}")


def _state_fault(world: World, what: str) -> None:
    files = list(world.files.values())
    if not files:
        return
    path = f"{STATE_PREFIX}/{files[0].stem}"
    kv = world.kv
    current = kv.current_version(MOUNT, path)
    if current == 0:
        return
    if what == "lost":
        kv.delete_metadata(MOUNT, path)
    elif what == "soft":
        kv.delete_latest(MOUNT, path)
    elif what == "older":
        older = [v for v in kv.versions_of(MOUNT, path) if v <= current - 2 and kv.peek(MOUNT, path, v) is not None]
        if not older:
            return
        kv._write(MOUNT, path, kv.peek(MOUNT, path, older[len(older) // 2]) or {}, current)
        for request in world.revoke_now:
            request.undone = request.undone or request.completed_at is not None
    world.faults[f"state_{'soft_deleted' if what == 'soft' else what}"] += 1


def _foreign_write(world: World, what: str) -> None:
    files = list(world.files.values())
    if not files:
        return
    path = files[0].path
    kv = world.kv
    current = kv.current_version(MOUNT, path)
    if what == "garbage":
        data: dict[str, Any] | None = {"note": "written by hand"}
    else:
        now_held = kv.peek(MOUNT, path)
        data = next((kv.peek(MOUNT, path, v) for v in reversed(kv.versions_of(MOUNT, path))
                     if v < current and kv.peek(MOUNT, path, v) not in (None, now_held)), None)
        if data is None:
            return
    kv._write(MOUNT, path, data, current)
    world.tracked.setdefault(path, Tracking()).foreign = True
    world.faults[f"foreign_{what}"] += 1


def _edit(world: World, what: str) -> None:
    files = world.files
    if what == "restore":
        if not world.deleted:
            return
        stem, spec = world.deleted.popitem()
        if files:
            return
        files[stem] = spec
        world.tracked.setdefault(spec.path, Tracking()).retired = False
    elif what == "flap":
        # A file removed and put back while a replica ran (an editor's
        # atomic save, a config-management run): the replica saw no file.
        if not files:
            return
        saved = dict(files)
        files.clear()
        world.tick(SLOTS[1])
        files.update(saved)
        world.faults["edit_restore"] += 1
        return
    elif not files:
        return
    else:
        stem, spec = next(iter(files.items()))
        if what == "rename":
            world.renames += 1
            del files[stem]
            new = f"app-r{world.renames}"
            if world.last_rename is not None and world.last_rename[1] == stem and world.step_index % 3 == 0:
                # A rename undone (at one step index in three, of a file whose name the last rename gave it; the
                # generator's draws stay as they were): its previous name back (CONTRACT-NOTES, "A rename undone").
                new = world.last_rename[0]
                world.faults["edit_rename_undone"] += 1
            world.last_rename = (stem, new)
            files[new] = FileSpec(new, spec.path, spec.params)
        elif what == "delete":
            del files[stem]
            world.deleted = {stem: spec}
        elif what == "path":
            new_path = f"apps/app-moved{world.renames}{world.step_index}"
            world.tracked.setdefault(spec.path, Tracking()).retired = True
            files[stem] = FileSpec(stem, new_path, spec.params)
            world.tracked[new_path] = Tracking()
        elif what == "params":
            files[stem] = FileSpec(stem, spec.path, toggled_params(world.kind.name, spec.params))
    world.faults[f"edit_{what}"] += 1


def quiesce(world: World) -> None:
    """Faults stop; time runs past grace, deactivation delays, backoff caps and leases."""
    start = world.clock.now()
    settle = world.grace + timedelta(hours=2) + BACKOFF_CAP + timedelta(seconds=LEASE_SECONDS + 2 * SKEW_ALLOWANCE) + timedelta(minutes=30)
    # And past each credential's next scheduled rotation: an idle credential costs no Vault request, so a
    # record restored by hand to an older version is compared with the live path when it next acts (§6.4).
    names = {spec.stem for spec in world.files.values()}

    def next_rotations() -> list[datetime]:
        return [r.last_rotated_at + world.every for n, r in world.records().items() if n in names and r.last_rotated_at is not None]

    horizon = max([start, *next_rotations()]) + settle
    checkpoint = start + invariants.REVOKE_NOW_WINDOW
    checked = False
    adopted: Counter[str] = Counter()
    writes_at_adoption: int | None = None
    writes_at_start: int | None = world.live_writes
    scheduled = {e.key.key_id for r in world.records().values() for e in r.retiring}
    # A record restored from an older version (or lost) forgets promotions before quiescence: a key one of them
    # superseded is one it may learn of again.
    forgetful = any(world.faults[f] for f in ("state_lost", "state_older", "state_soft_deleted"))
    for round_ in range(QUIESCE_ROUNDS):
        for slot in SLOTS:
            world.tick(slot)
        invariants.check_step(world)
        for entry in (e for r in world.records().values() for e in r.retiring
                      if e.key.key_id not in scheduled
                      and (e.key.key_id not in world.superseded_at or (forgetful and world.superseded_at[e.key.key_id] < start))):
            # A key a record learned of in quiescence, superseded by no promotion it knows of (a catch-up with a
            # live path written over by hand, a key it forgot, a restored record behind its live path: sim F211),
            # retires a full grace from then: the rotator cannot know when it was superseded. Once per key, so a
            # retirement put off again and again is still caught (sim F201).
            scheduled.add(entry.key.key_id)
            horizon = max(horizon, entry.revoke_after + settle - world.grace)
        if round_ == 0:
            # A record soft-deleted by hand is revived by the first pass (F123): its next rotation counts too.
            horizon = max([horizon, *(t + settle for t in next_rotations())])
        if writes_at_start is not None and world.live_writes > writes_at_start:
            # The first promotion in quiescence (a restored record's next rotation, perhaps held up a grace by
            # AWS's 2-key limit): what the record held as current gets its grace from it (§6.3, sim F121).
            horizon, writes_at_start = max(horizon, world.clock.now() + settle), None
        if writes_at_adoption is not None and world.live_writes > writes_at_adoption:
            # §6.3: what adopt replaced stays valid at least a grace after its successor, the first new
            # credential written since (F60: the rotator keeps it a grace from that promotion).
            horizon, writes_at_adoption = max(horizon, world.clock.now() + settle), None
        # The operator does what `status` tells them: a credential refusing a
        # live path someone else wrote says "run `rotator adopt NAME`" (§2, §5).
        for name in world.needs_adoption():
            if adopted[name] < 3:
                adopted[name] += 1
                world.adopt(name)
                invariants.check_step(world)
                horizon = max(horizon, world.clock.now() + settle)  # what adopt replaced gets its grace from now
                writes_at_adoption = world.live_writes
        if world.violations:
            return
        now = world.clock.now()
        if not checked and now >= checkpoint:
            invariants.check_revoke_now(world, undone_too=False)
            checked = True
        wake = _next_wake(world)
        if not checked:
            wake = min(wake, checkpoint) if wake is not None else checkpoint
        if wake is None or wake > horizon:
            break
        world.clock.advance(max(1.0, (wake - now).total_seconds() + 1.0 + max(abs(o) for o in world.offsets.values())))
    else:
        # Work still due after every round: a credential retried on every tick without backoff, never done (F215).
        world.violate("settles", f"quiescence did not settle in {QUIESCE_ROUNDS} rounds (next wake {_next_wake(world)})")
        return
    # A revocation the provider confirmed may take a moment to reach its API
    # (Stripe's expiry: 20 s here; STS: 5 s): time runs on past it (F40).
    last_pass = world.clock.now()
    world.clock.advance(SETTLE_SECONDS)
    invariants.check_revoke_now(world)  # every request by the end, those a restore undid too (sim F194)
    invariants.check_orphans(world, graced_at=last_pass)


def _next_wake(world: World) -> Any:
    """The earliest moment some replica may have work (mirrors the machine's gates)."""
    now = world.clock.now()
    times = []
    names = {spec.stem for spec in world.files.values()}
    allowance = timedelta(seconds=SKEW_ALLOWANCE)  # a lease or grace read on another clock ends that much later
    for name, record in world.records().items():
        if record.lease is not None and record.lease.expires_at + allowance > now:
            times.append(record.lease.expires_at + allowance)  # nobody else acts before it expires
            continue
        fileless = name not in names
        if fileless and not has_work(record):
            # Idle: looked at again every LOOK_AGAIN by each replica that looked (F204).
            times += [seen[1] + LOOK_AGAIN for p in world.procs.values() if (seen := p.looked_behind.get(name))]
            continue  # a removed file's record with work left is reconciled by the daemon too (§6.9, F54)
        if record.next_attempt_at is not None:
            times.append(record.next_attempt_at)
        elif record.pending is not None and record.blocked_fingerprint is None:
            times.append(now)
        times += [since + LOOK_AGAIN for p in world.procs.values() if (since := p.blocked_since.get(name))]  # F223
        for entry in record.retiring:
            # The later of its retry and its grace (or deactivation delay), as the machine waits (sim F220).
            moment = entry.revoke_after + allowance if entry.stage == "active" else entry.delete_after or now
            times.append(max(moment, entry.next_attempt_at) if entry.next_attempt_at else moment)
        if record.last_rotated_at is not None and not fileless:
            times.append(record.last_rotated_at + world.every)
    # Records hold times of the replica that wrote them, which may run behind.
    skew = timedelta(seconds=max(abs(o) for o in world.offsets.values()) + 1)
    future = [t for t in times if t > now - skew]
    return max(min(future), now) if future else None


def run(schedule: Schedule, *, quiescence: bool = True) -> RunResult:
    random.seed(schedule.seed)  # tenacity's jitter: the same schedule replays exactly
    world = World(schedule.kind)
    result = RunResult()
    for index, step in enumerate(schedule.steps):
        world.step_index = index
        apply_step(world, step)
        result.steps += 1
        if not world.violations:
            invariants.check_step(world)
        if world.violations:
            break
    else:
        if quiescence:
            world.step_index = len(schedule.steps)
            quiesce(world)
    result.violations = list(world.violations)
    result.faults = world.faults
    return result


def replay(kind: str, steps: Sequence[Step], *, seed: int = 0) -> RunResult:
    """Run one schedule given as data (a printed minimal replay)."""
    return run(Schedule(kind, tuple(steps), seed))


# -- shrinking ----------------------------------------------------------------------


def shrink(schedule: Schedule, invariant: str, *, budget: int = 400) -> Schedule:
    """A shorter schedule that still breaks `invariant` (greedy step and fault removal)."""
    def fails(candidate: Schedule) -> bool:
        return any(v.invariant == invariant for v in run(candidate).violations)

    best = schedule
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        steps = list(best.steps)
        # Drop everything after the failing step first.
        failing = next((v.step for v in run(best).violations if v.invariant == invariant), len(steps))
        if failing + 1 < len(steps):
            candidate = Schedule(best.kind, tuple(steps[: failing + 1]), best.seed)
            tries += 1
            if fails(candidate):
                best, changed = candidate, True
                continue
        for chunk in (8, 4, 2, 1):
            i = 0
            while i < len(best.steps) and tries < budget:
                steps = list(best.steps)
                candidate = Schedule(best.kind, tuple(steps[:i] + steps[i + chunk:]), best.seed)
                tries += 1
                if candidate.steps and fails(candidate):
                    best, changed = candidate, True
                else:
                    i += chunk
        for i, step in enumerate(best.steps):
            if step[0] in ("tick", "rotate") and step[-1]:
                for j in range(len(step[-1])):
                    plan = step[-1][:j] + step[-1][j + 1:]
                    candidate_steps = list(best.steps)
                    candidate_steps[i] = (*step[:-1], plan)
                    candidate = Schedule(best.kind, tuple(candidate_steps), best.seed)
                    tries += 1
                    if fails(candidate):
                        best, changed = candidate, True
                        break
    return best
