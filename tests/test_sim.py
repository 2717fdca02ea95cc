"""The deterministic fault simulation (issue 10): the real state machine,
engine and live-path logic against the in-memory KV v2 model and providers,
with faults at every call boundary and invariants after every step.

- sweeps: thousands of seeded schedules, one test per fault kind and group
  of provider kinds; a sweep that finds a violation fails with the seed and
  a minimal replay;
- findings: each violation the simulation found, as a named replay. While
  a finding is open its test is marked `xfail(strict=True)` with the
  finding's name (docs/RELIABILITY.md lists them): it fails today, and the
  day the fix lands it passes, strict turns that into a failure, and the
  marker must go in the same commit as the fix.

ROTATOR_SIM_SCHEDULES scales the sweeps (default: 2,000 schedules in all).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest

from rotator.core import transitions
from rotator.core.state import StateRecord
from rotator.testing.sim import explorer
from rotator.testing.sim.explorer import Schedule, replay, run, shrink
from rotator.testing.sim.sweep import sweep
from rotator.testing.sim.faults import ALL_FAULTS, CallFault
from rotator.testing.sim.lineage import Lineage
from rotator.testing.sim.quiet import quiet_logs
from rotator.testing.sim.world import World
from rotator.vault.livepath import LivePath

OTHERS = ("deploy_key", "installation_token", "stripe_key", "webhook")
GROUPS = {"aws": ("aws",), "others": OTHERS}

# Open findings (docs/RELIABILITY.md, /work/notes/sim-findings.md): fault kind -> finding, per group.
F1 = "F1 lost-create-duplicate (defect 1)"
F2 = "F2 sweep-revokes-live-after-older-record (defect 2)"
F3 = "F3 sweep-after-lost-record-revokes-in-grace (defect 2)"
F4 = "F4 retirement-frozen-behind-blocked-rotation (defect 3)"
F5 = "F5 revoke-now-dropped (defect 4)"
F6 = "F6 stale-holder-writes-live"
F7 = "F7 lost-stash-response-discards-stashed-key"
F8 = "F8 renamed-or-deleted-file-orphans (defect 6)"
F9 = "F9 lost-record-orphans-previous-key"
F10 = "F10 foreign-restore-revokes-live"
F11 = "F11 clock-skew-shortens-grace"
F12 = "F12 failed-metadata-merge-blocks-revocation (defect 8)"
F13 = "F13 lost-record-orphans-live-webhook"
F14 = "F14 restored-record-reissue-deletes-live (defect 2)"
F15 = "F15 foreign-restore-revokes-live-token"
F16 = "F16 stale-baseline-empties-stash-entry"
F17 = "F17 reissue-revokes-unrecorded-live-write"
F18 = "F18 moved-path-rollback-revokes-live"
F19 = "F19 fileless-finish-shortens-grace"
F20 = "F20 stale-holder-overwrites-stash-entry"
F21 = "F21 rollback-revokes-a-superseded-key-in-grace"
F22 = "F22 stale-sweep-revokes-a-key-in-grace"
F23 = "F23 baseline-grace-runs-from-before-the-successor"
F24 = "F24 live-again-key-keeps-its-old-retirement"
F25 = "F25 restored-record-promotes-a-revoked-key"
F26 = "F26 failed-move-leaves-the-old-record-retiring-a-live-again-key"
F40 = "F40 lost-record-before-first-live-write-orphans-marked-key"
F41 = "F41 lost-record-after-foreign-write-orphans-the-key-metadata-names"
F42 = "F42 sim-aws-throttle-carried-retry-after"
F43 = "F43 revoke-now-lost-when-the-restored-rotation-had-completed"
F44 = "F44 adopt-writes-live-metadata-without-the-lease"
F45 = "F45 adopted-key-keeps-its-old-retirement"
F46 = "F46 renamed-then-lost-record-orphans-the-old-names-keys"
F47 = "F47 sim-revoke-now-targeted-a-removed-files-live-key"
F49 = "F49 restored-record-recovers-a-rotation-whose-key-was-written-over"
F50 = "F50 restored-record-forgets-a-later-rotations-key"
F51 = "F51 first-rotation-of-a-removed-file-never-undone"
F52 = "F52 adopting-a-renamed-files-path-after-its-record-was-lost-orphans-the-old-names-keys"
F53 = "F53 revoke-now-gave-forgotten-keys-their-grace"
F54 = "F54 sim-quiescence-ignored-removed-files-work"
F60 = "F60 sim-quiescence-ended-before-an-adopted-over-keys-grace"
F61 = "F61 stale-sweep-destroys-the-live-keys-stash-entry"
F62 = "F62 rename-takes-over-a-moved-record-not-the-one-it-moved-to"
F63 = "F63 rename-takes-over-a-path-someone-else-wrote"
F64 = "F64 skewed-sweep-misses-an-unmarked-orphan"
F65 = "F65 sim-revoke-now-targeted-the-pending-key-it-finished-under-hand-written-data"
F90 = "F90 record-restored-to-an-earlier-rotations-issuing"
F91 = "F91 renamed-twice-then-lost-record-orphans-the-first-names-keys"
F92 = "F92 deleted-record-of-a-removed-file-orphans-its-superseded-key"
F93 = "F93 data-written-over-by-hand-kept-the-old-key-live-by-metadata"
F94 = "F94 sim-key-written-over-by-hand-had-no-successor"
F95 = "F95 record-restored-to-a-revoked-pending-credential-stuck-on-its-stash"
F96 = "F96 sim-quiescence-ended-before-a-restored-record-next-acted"
F97 = "F97 removed-files-unrecorded-rotation-had-completed-under-data-written-by-hand"
F98 = "F98 stalled-holder-minted-after-its-lease-expired"
F100 = "F100 deleted-record-of-a-credential-with-a-file-forgot-its-rotation-in-flight"
F101 = "F101 restored-revoke-now-rotation-revoked-later-keys-at-once"
F102 = "F102 record-behind-the-path-vault-path-left"
F103 = "F103 renamed-files-record-lost-after-the-takeover-orphans-the-old-names-keys"
F104 = "F104 restored-record-blocked-aws-on-its-own-forgotten-key"
F105 = "F105 restored-record-stuck-rolling-back-a-key-revoked-since"
F106 = "F106 finished-promotion-assumed-the-path-still-held-its-key"
F107 = "F107 record-behind-the-path-its-rotation-was-writing"
F115 = "F115 removed-files-idle-record-restored-behind-the-live-path"
F116 = "F116 record-restored-to-a-rotations-intent-forgot-the-key-it-minted-since"
F117 = "F117 removed-files-idle-record-restored-before-a-rotation-that-never-went-live"
F118 = "F118 record-caught-up-with-the-live-path-in-a-failed-write-forgot-the-dropped-rotations-key"
F119 = "F119 restored-issuing-record-swept-its-own-key-live-at-the-path-it-forgot"
F120 = "F120 record-lost-after-revoke-now-kept-a-previous-key-its-grace"
F121 = "F121 sim-quiescence-ended-inside-the-grace-a-delayed-promotion-began"
F108 = "F108 takeover-rolled-back-a-token-expired-by-the-providers-clock"
F109 = "F109 stalled-first-write-to-a-path-overwrote-the-new-holders-promotion"
F110 = "F110 sim-stale-calls-counted-across-a-fresh-lease"
F111 = "F111 restored-rotation-undone-at-a-path-only-the-undone-versions-knew"
F112 = "F112 record-behind-at-the-old-path-retired-the-key-live-at-the-new-one"
F113 = "F113 restored-rotation-swept-its-own-key-live-at-the-path-vault-path-left"
F114 = "F114 record-behind-dropped-a-rotation-with-its-unmarked-key"
F123 = "F123 sim-quiescence-missed-the-next-rotation-of-a-record-revived-in-it"
F124 = "F124 removed-files-superseded-rollback-kept-the-key-it-replaced-as-current"
F122 = "F122 failed-recovery-of-a-landed-live-write-minted-over-its-key"
F125 = "F125 restored-rotation-promoted-over-a-later-one-at-a-path-only-the-undone-versions-knew"
F126 = "F126 removed-files-record-retired-a-key-another-record-took-on-since"
F130 = "F130 restored-record-lost-the-promotions-timing-of-a-lost-records-old-key"
F131 = "F131 removed-files-record-finished-a-promotion-and-retired-the-key-live-at-the-renamed-files-path"
F150 = "F150 own-steps-back-to-an-earlier-state-taken-for-a-restore-revoked-the-live-key"
F151 = "F151 catch-up-applied-before-the-forgotten-keys-proof-whose-read-failed-left-a-key"
F152 = "F152 forgotten-key-shown-live-nowhere-restored-by-hand-at-its-path-then-revoked"
F132 = "F132 restored-record-with-a-lost-cas-after-vault-path-and-rename-revoked-early"
F133 = "F133 crashed-rotations-after-vault-path-and-rename-revoked-early"
F134 = "F134 restored-revoke-now-record-expired-a-key-at-once-after-a-crash"
F135 = "F135 lost-record-and-renames-kept-a-revoke-now-target"
F180 = "F180 restored-record-forgot-the-key-a-later-unfinished-rotation-minted"
F181 = "F181 restore-followed-by-a-lease-write-hid-the-undone-versions"
F182 = "F182 restored-records-completed-rotation-forgot-a-later-crashed-mint"
F183 = "F183 revoke-now-kept-a-key-restored-by-hand-at-a-path-the-file-left"
F184 = "F184 recovered-rotation-over-keyless-data-kept-a-lost-records-early-grace"
F185 = "F185 lost-record-revoked-a-revoke-now-rotations-own-key-at-once"
F186 = "F186 a-rotations-issuing-written-twice-taken-for-a-restore-gave-its-own-unstashed-key-a-grace"
F187 = "F187 lost-records-failed-baseline-write-released-an-empty-record-that-forgot-the-keys"
F188 = "F188 revoke-now-promotions-failed-inventory-gave-a-forgotten-key-its-grace"
F189 = "F189 revoke-now-finishing-a-restored-rotation-gave-an-undone-rotations-key-its-grace"
F190 = "F190 forgotten-key-whose-rotation-only-its-stash-entry-named-left-unproven"
F191 = "F191 restored-record-behind-the-live-path-blocked-on-aws-limit-by-its-live-key"
F192 = "F192 lost-record-under-revoke-now-gave-a-key-made-in-the-promotions-second-its-grace"
F193 = "F193 forgotten-key-never-stashed-left-unproven"
F194 = "F194 idle-record-restored-behind-the-live-path-retired-on-its-old-schedule"
F195 = "F195 resumed-rotations-issue-replaced-the-issuing-note-of-an-untagged-key"
F196 = "F196 key-with-no-successor-yet-retired-right-before-its-successors-promotion"
F197 = "F197 revoke-now-caught-up-with-the-live-path-for-room-dropped-its-request"
F198 = "F198 restored-rotation-took-its-own-stashed-key-for-an-undone-ones-and-minted-for-ever"
F199 = "F199 revoke-now-whose-revoke-of-an-earlier-key-failed-reported-done"
F200 = "F200 restored-rotation-whose-stash-entry-was-gone-blocked-the-credential"
F201 = "F201 quiescence-ended-before-the-grace-of-a-key-a-catch-up-found-superseded"
F202 = "F202 rollbacks-own-failure-replaced-the-error-it-was-undoing"
F203 = "F203 removed-files-record-refused-a-retirement-for-ever-and-never-looked-for-keys-it-forgot"
F204 = "F204 removed-files-idle-record-looked-once-before-its-forgotten-keys-path-was-written-over"
F205 = "F205 rotation-undone-after-it-went-live-timed-its-keys-grace-from-the-undo-not-the-adopters-promotion"
F206 = "F206 sweep-of-a-restored-rotation-revoked-its-key-the-live-paths-metadata-names"
F207 = "F207 catch-up-dropped-a-rotation-live-at-its-moved-path-and-revoked-its-key-there"
F208 = "F208 transient-failure-of-a-manual-rotate-on-a-blocked-record-hid-its-adopt-hint"
F209 = "F209 adopt-retired-the-key-of-the-rotation-in-flight-and-its-stash-entry-blocked-it-for-ever"
F210 = "F210 blocked-rotations-mint-by-a-crashed-rotate-never-swept"
F211 = "F211 quiescence-ended-before-the-grace-of-a-key-a-restored-record-caught-up-with"
F212 = "F212 skew-step-stepped-a-running-hosts-clock-under-a-grace-it-had-measured"
F213 = "F213 restored-rotation-live-at-a-path-vault-path-left-without-its-metadata-issued-over-its-stash"
F214 = "F214 revive-whose-read-back-failed-wrote-an-older-version-over-the-undeleted-record"
F215 = "F215 restored-rollback-whose-stash-entry-another-key-took-failed-on-every-tick"
F216 = "F216 restored-record-that-rotated-on-took-a-path-vault-path-had-left-for-newer-and-revoked-its-live-key"
F217 = "F217 restored-record-whose-catch-up-failed-retired-a-key-by-a-grace-that-ignored-its-successors-promotion"
F218 = "F218 adoption-of-keyless-data-taken-for-the-successor-that-times-a-grace"
F219 = "F219 restored-rotation-swept-its-own-key-that-an-undone-version-had-promoted"
F220 = "F220 quiescence-woke-at-a-retry-time-a-later-grace-had-passed"
F221 = "F221 restored-revoke-now-rotation-revoked-at-once-the-keys-of-rotations-after-it"
F222 = "F222 rollback-finished-after-vault-path-moved-blocked-the-new-file-for-the-old-paths-failure"
F223 = "F223 record-restored-to-a-block-a-rotate-had-passed-never-acts-on-the-key-that-rotation-made"
F224 = "F224 key-live-at-a-path-vault-path-left-before-its-metadata-was-written-kept-for-good"
F225 = "F225 a-new-files-first-write-taken-for-the-successor-of-a-removed-files-key"
F226 = "F226 revoke-now-after-a-restore-and-a-crashed-revoke-now-leaves-a-deploy-key-working"
F227 = "F227 rename-undone-and-vault-path-moved-leaves-the-old-names-key-to-the-renamed-record"
F228 = "F228 record-restored-after-a-rename-undone-resumes-a-rotation-the-renamed-record-finished"
F229 = "F229 record-restored-after-a-rename-undone-forgets-the-keys-handed-back-and-loops"
F230 = "F230 sim-lineage-carried-a-name-whose-record-another-rename-took-over"
F231 = "F231 rename-undone-then-both-records-restored-the-renamed-ones-rotation-unfinished-taken-for-nobodys"
F232 = "F232 resumed-rotation-of-a-restored-record-loses-its-lease-to-a-stash-entry-only-a-found-again-key-names"
F165 = "F165 untagged-aws-key-and-its-record-lost-left-for-good"

KNOWN_OPEN: dict[tuple[str, str], str] = {}

TOTAL = int(os.environ.get("ROTATOR_SIM_SCHEDULES", "2000"))
PASSING = [(g, f) for g in GROUPS for f in ("none", *ALL_FAULTS) if (g, f) not in KNOWN_OPEN]
PER_SWEEP = max(1, -(-TOTAL // max(1, len(PASSING))))


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet_logs():
        yield


def _cases() -> Iterator[object]:
    for group in GROUPS:
        for fault in ("none", *ALL_FAULTS):
            reason = KNOWN_OPEN.get((group, fault))
            marks = [pytest.mark.xfail(strict=True, reason=f"known-open finding {reason}")] if reason else []
            yield pytest.param(group, fault, marks=marks, id=f"{group}-{fault}")


@pytest.mark.parametrize(("group", "fault"), list(_cases()))
def test_sweep(group: str, fault: str) -> None:
    """Seeded schedules of 30-40 steps with one fault kind: no invariant breaks."""
    open_finding = (group, fault) in KNOWN_OPEN
    first_seed = 10_000 * (1 + list(GROUPS).index(group)) + 100 * ("none", *ALL_FAULTS).index(fault)
    # An open finding's sweep stops at its first violation (seeds are fixed, so this is no flake).
    report = sweep(
        max(PER_SWEEP, 400) if open_finding else PER_SWEEP, first_seed=first_seed, faults=[] if fault == "none" else [fault], kinds=GROUPS[group],
        shrink_findings=1, stop_after=1 if open_finding else None,
    )
    if not open_finding:
        assert report.schedules == PER_SWEEP and report.steps >= 30 * PER_SWEEP
        if fault != "none":
            assert report.faults[fault] > 0, f"no {fault} fault was injected: the sweep proves nothing"
    found = "\n\n".join(f"seed {f.seed} ({f.kind}): {f.detail}\nminimal replay:\n{f.replay}" for f in report.findings)
    assert report.violations == 0, f"{report.violations} of {report.schedules} schedules broke an invariant\n\n{found}"


# -- the simulation itself ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["aws", *OTHERS])
def test_a_fault_free_life_rotates_retires_and_leaves_nothing_behind(kind: str) -> None:
    """Two daily rotations: each old credential lives its grace, then the provider rejects it."""
    world = World(kind)
    every = world.every.total_seconds()
    for step in [("tick", "r0", ()), ("advance", every), ("tick", "r1", ()), ("advance", 60), ("tick", "r0", ())]:
        explorer.apply_step(world, step)
    first, second = sorted(k.key_id for k in world.service.rotator_made())[:2]
    assert world.service.key_of(world.kv.peek("secret", "apps/app")) == second
    assert world.service.is_accepted(first), "the superseded credential is inside its grace"
    explorer.quiesce(world)
    assert not world.violations
    assert not world.service.is_accepted(first), "after grace the provider rejects it"
    live = world.service.key_of(world.kv.peek("secret", "apps/app"))
    assert live is not None and world.service.is_accepted(live)
    assert world.kv.peek_metadata("secret", "apps/app")["rotator-key-id"] == live


def test_a_replay_is_exact() -> None:
    """The same schedule gives the same faults, violations and provider state."""
    schedule = explorer.generate(7, kinds=["webhook"])

    def outcome() -> tuple[object, ...]:
        world_result = run(schedule)
        return (world_result.steps, sorted(world_result.faults.items()), [str(v) for v in world_result.violations])

    assert outcome() == outcome()


def test_the_invariants_catch_a_planted_grace_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that revokes at once is caught, and the schedule shrinks to a short replay."""
    real = transitions._promoted

    def no_grace(record, outcome, policy, now):  # type: ignore[no-untyped-def]
        return real(record, outcome, policy.__class__(policy.schedule, timedelta(0), policy.retire_delay, policy.fingerprint), now)

    monkeypatch.setattr(transitions, "_promoted", no_grace)
    schedule = explorer.generate(3, kinds=["deploy_key"], faults=[])
    result = run(schedule)
    assert result.violations and result.violations[0].invariant == "grace"
    small = shrink(schedule, "grace")
    assert len(small.steps) <= 3 < len(schedule.steps)
    assert any(v.invariant == "grace" for v in run(small).violations)
    assert small.replay_text().startswith("replay('deploy_key', [")


def test_the_invariants_catch_a_revoked_live_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Revoking the key the live path holds breaks never-revoke-live at the call."""
    world = World("stripe_key")
    explorer.apply_step(world, ("tick", "r0", ()))
    live = world.service.key_of(world.kv.peek("secret", "apps/app"))
    proc = world.process("r0")
    provider = proc.engine.provider_for(world.loaded()[0])
    provider.revoke({"key_id": live})
    assert [v.invariant for v in world.violations] == ["never-revoke-live"]


def test_one_lease_holder_catches_a_second_call_after_the_lease_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled holder may make the one unfenceable call that followed its last lease check (F110: counted from its
    latest lease, not its first); a planted second metadata merge after a stall is caught."""
    steps = [("tick", "r1", ()), ("state", "lost"), ("pause", "r1", 8, 900.0, "cli"), ("state", "older"), ("pause", "r1", 9, 900.0, "cli")]
    assert not [v for v in replay("aws", steps).violations if v.invariant == "one-lease-holder"]
    real = LivePath.describe

    def twice(self: LivePath, **kwargs: object) -> None:
        real(self, **kwargs)  # type: ignore[arg-type]
        real(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LivePath, "describe", twice)
    broken = [v for v in replay("aws", steps).violations if v.invariant == "one-lease-holder"]
    assert broken and "a second call since it lost its lease" in broken[0].detail


def test_faults_are_injected_at_the_named_call() -> None:
    """A lost response after the state write's effect leaves the write applied."""
    world = World("webhook")
    # call 3 (after reading the record and the live path, and listing the endpoints): the write that takes the
    # lease and marks `issuing`
    explorer.apply_step(world, ("tick", "r0", (CallFault(3, "lost"),)))
    assert world.faults["lost"] == 1
    record = world.records()["app"]
    assert record.lease is not None and record.rotations == 0, "the lease write applied; its answer was lost"


def test_a_crash_drops_the_process_and_a_fresh_one_resumes() -> None:
    """SimCrash passes the engine's `except Exception`; the next replica finishes the rotation."""
    world = World("deploy_key")
    explorer.apply_step(world, ("tick", "r0", (CallFault(4, "crash_after"),)))  # call 4: the mint
    assert "r0" not in world.procs and world.faults["crash_after"] == 1
    assert world.records()["app"].pending is not None
    explorer.quiesce(world)
    assert not world.violations
    assert len([k for k in world.service.existing()]) == 1, "the crash's unstashed key was swept"


def test_a_fresh_process_never_replays_a_dead_ones_stripe_create() -> None:
    """Seed 80620, about one run in 300: the simulated Stripe providers put
    `id(self)` in their idempotency keys, and a fresh process's provider could
    get a freed one's address, so its create replayed a dead process's answer
    (an old key). A real process's keys carry a random part; the sim numbers
    its provider objects instead, so a run is the same every time."""
    import gc
    import types

    from rotator.core.provider import IssueContext

    for kind in ("stripe_key", "webhook"):
        world = World(kind)
        context = types.SimpleNamespace(clock=types.SimpleNamespace(actor="r0.0"))
        params = world.provider_cls.params_model.model_validate(world.kind.params)
        ctx = IssueContext(credential="app", rotation_id="20260301T000000Z-00000001")
        minted = []
        for _ in range(20):
            provider = world.provider_cls(params, context)
            minted.append(provider.issue(ctx).key_id)
            del provider
            gc.collect()  # its address is free for the next one
        assert len(set(minted)) == len(minted), f"{kind}: a fresh provider object replayed an earlier one's create"


def test_a_lease_from_another_clock_is_trusted_the_allowance_past_its_expiry() -> None:
    """Sim F11, the lease half: a holder on another host may read its lease
    as running for up to the allowance after our clock says it expired."""
    from rotator.core.state import Lease
    from rotator.testing.sim.world import SKEW_ALLOWANCE

    world = World("webhook")
    engine = world.process("r0").engine
    now = world.clock.now()
    expired = now - timedelta(seconds=SKEW_ALLOWANCE / 2)
    elsewhere = Lease(holder="r1.1", expires_at=expired, host="sim-r1", boot_id="sim-r1")
    assert engine.lease_held_by_other(elsewhere, now)
    assert not engine.lease_held_by_other(elsewhere, now + timedelta(seconds=SKEW_ALLOWANCE))
    here = Lease(holder="r0.0", expires_at=expired, host="sim-r0", boot_id="sim-r0")  # an earlier incarnation, same clock
    assert not engine.lease_held_by_other(here, now)


def test_revoke_now_targets_follow_the_renames_the_rotator_saw() -> None:
    """`rotate NEW --revoke-now` owes NEW's previous credentials, those it carries on from a file
    renamed with the same live path included (§2, §6.9); a file renamed and moved to another
    vault.path before any process looked is a removed file and a new one, whose keys it does not owe."""
    seen = World("stripe_key")
    for step in [("tick", "r0", ()), ("edit", "rename"), ("tick", "r1", ())]:
        explorer.apply_step(seen, step)
    assert seen.lines.names("app-r1", seen.records()) == {"app-r1", "app"}
    unseen = World("stripe_key")
    for step in [("tick", "r0", ()), ("edit", "rename"), ("edit", "path"), ("tick", "r1", ())]:
        explorer.apply_step(unseen, step)
    assert unseen.lines.names("app-r1", unseen.records()) == {"app-r1"}
    assert {unseen.lines.minted_for[k.key_id] for k in unseen.service.rotator_made()} == {"app", "app-r1"}


def test_a_rename_carries_the_old_names_keys_only_where_its_own_record_handed_them_on() -> None:
    """A rename seen with the same live path carries OLD's keys on only where OLD's record says moved_to NEW
    (or NEW's holds a key minted for another name): that another record (a name NEW took over) says moved_to
    NEW says nothing of OLD, a removed file's record where it never acted at that path (sim F230)."""
    def record(name: str, moved_to: str | None = None) -> StateRecord:
        return StateRecord(credential=name, provider="stripe.webhook_secret", moved_to=moved_to)
    lines = Lineage(minted_for={"we_1": "app", "we_4": "app-r3"}, renamed_from={"app-r3": "app", "app": "app-r1"})
    other_took_over = {"app": record("app"), "app-r1": record("app-r1", moved_to="app-r3"), "app-r3": record("app-r3")}
    assert lines.names("app-r3", other_took_over) == {"app-r3"}
    handed_on = {**other_took_over, "app": record("app", moved_to="app-r3")}
    assert lines.names("app-r3", handed_on) == {"app-r3", "app"}


def test_revoke_now_honoured_catches_a_carried_key_left_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planted bug: `--revoke-now` shortens no older retirement. The old name's key, carried on
    by the renamed file, is then caught as not revoked (it is a target through the rename)."""
    monkeypatch.setattr(transitions, "_revoke_now", lambda retiring, now: retiring)
    result = replay("stripe_key", [("tick", "r0", ()), ("rotate", False, ()), ("edit", "rename"), ("tick", "r1", ()), ("rotate", True, ())])
    broken = [v for v in result.violations if v.invariant == "revoke-now-honoured"]
    assert broken and "rk_000001" in broken[0].detail, [str(v) for v in result.violations]


def test_no_orphans_catches_the_adopted_over_key_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quiescence waits for what `adopt` replaced (F60: a grace past its successor), and then a planted
    retirement that never revokes is caught on the key the hand-written data was written over."""
    from rotator.engine.retire import RetireSteps

    world = World("deploy_key")
    for step in [("tick", "r0", ()), ("foreign", "garbage"), ("rotate", False, ())]:  # refused: someone else wrote it
        explorer.apply_step(world, step)
    assert world.needs_adoption() == ["app"]
    monkeypatch.setattr(RetireSteps, "_retire", lambda self, key_id, *, deactivate: None)
    result = replay("deploy_key", [("tick", "r0", ()), ("foreign", "garbage"), ("advance", 86400)])
    assert any(v.invariant == "no-orphans" and "1001" in v.detail for v in result.violations), [str(v) for v in result.violations]


# -- named findings ------------------------------------------------------------------------

# A case that names invariants is checked for those only (another finding's invariant breaks later in it).
SAFETY = ("never-revoke-live", "live-works", "grace", "one-lease-holder")
FINDINGS = [
    (F1, "deploy_key", [("tick", "r1", (CallFault(4, "lost"),))]),
    (F1, "aws", [("tick", "r1", (CallFault(7, "lost"),))]),  # call 7: create_access_key (6: the issuing tag)
    (F2, "aws", [("tick", "r0", ()), ("state", "older")]),
    (F3, "aws", [("tick", "r0", ()), ("rotate", False, ()), ("state", "lost"), ("tick", "r0", ()), ("rotate", False, ())]),
    (F4, "aws", [("tick", "r0", ()), ("advance", 86400), ("tick", "r1", ()), ("rotate", False, ()), ("advance", 25200)]),
    # Pauses name Vault calls by index: r0 paused with its rotation in flight (`issuing`, its lease on it),
    # and r1 paused at its promotion's read of the live path (F6 deploy_key) or at the live write itself (stripe_key).
    (F5, "deploy_key", [("tick", "r1", ()), ("advance", 86400), ("pause", "r0", 2, 3600.0, "cli")]),
    (F6, "deploy_key", [("pause", "r1", 5, 3600.0, "r0")]),
    (F6, "stripe_key", [("pause", "r1", 6, 3600.0, "r0")]),
    (F7, "stripe_key", [("tick", "r1", (CallFault(5, "lost"),))]),
    (F8, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("edit", "rename"), ("advance", 86400)]),
    (F8, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("edit", "delete"), ("advance", 86400)]),
    (F9, "stripe_key", [("tick", "r0", ()), ("state", "lost"), ("tick", "r0", ()), ("rotate", False, ())]),
    (F10, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("foreign", "restore")]),
    (F11, "installation_token", [("skew", "r1", 120.0), ("tick", "r0", ()), ("advance", 30)]),
    (F12, "deploy_key", [("tick", "r0", ()), ("rotate", False, (CallFault(13, "429", 300.0),))]),
    (F13, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("state", "lost"),
                      ("tick", "r0", (CallFault(4, "429", 300.0),))]),
    (F14, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("state", "older")]),
    (F15, "installation_token", [("tick", "r1", ()), ("rotate", False, ()), ("foreign", "restore")]),
    # Found by the 100,000-schedule sweep with every fault kind mixed (issue 10, helper `safety`).
    (F16, "stripe_key", [("tick", "r0", ()), ("state", "soft"), ("tick", "r0", (CallFault(14, "crash_after"),)), ("state", "older")]),
    (F16, "stripe_key", [("tick", "r1", ()), ("state", "lost"), ("pause", "r1", 2, 301.0, "cli"), ("state", "older")]),
    (F17, "stripe_key", [("tick", "r0", (CallFault(15, "crash"),)), ("state", "older")]),
    (F17, "stripe_key", [("pause", "r1", 7, 900.0, "r0"), ("advance", 86400), ("tick", "r0", (CallFault(18, "429", 300.0),)),
                         ("state", "older")]),
    (F18, "deploy_key", [("tick", "r0", ()), ("advance", 86400), ("edit", "path"), ("tick", "r0", (CallFault(15, "429", 1.0),)),
                         ("edit", "rename")]),
    (F18, "installation_token", [("tick", "r1", ()), ("advance", 86400), ("edit", "path"), ("tick", "r0", ()), ("state", "older"),
                                 ("edit", "rename")]),
    (F19, "deploy_key", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r1", ()), ("state", "older"), ("edit", "delete")]),
    (F20, "aws", [("pause", "r1", 6, 900.0, "cli"), ("advance", 86400)]),
    (F22, "stripe_key", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("state", "older"), ("pause", "r0", 3, 900.0, "r1")]),
    (F23, "aws", [("tick", "r1", ()), ("state", "lost"), ("edit", "path"), ("tick", "r0", (CallFault(14, "crash_after"),))]),
    (F24, "webhook", [("rotate", False, ()), ("rotate", False, ()), ("foreign", "restore"), ("advance", 25200), ("edit", "rename")]),
    (F25, "webhook", [("tick", "r1", ()), ("foreign", "garbage"), ("advance", 86400), ("tick", "r0", (CallFault(4, "lost"), CallFault(24, "crash"))),
                      ("edit", "path"), ("state", "older"), ("advance", 25200), ("tick", "r1", (CallFault(4, "crash_after"),)),
                      ("state", "older")], SAFETY),
    # The rename's mark_moved failed (Vault down), so the old name's file-less record still retired the key the new
    # name took back as current (restored by hand) on the old schedule. Since F63 a rename onto a path someone else
    # wrote since (the restore) waits for `rotator adopt`, which carries the old record on and marks it moved.
    (F26, "stripe_key", [("tick", "r0", ()), ("rotate", False, ()), ("foreign", "restore"), ("edit", "rename"),
                         ("tick", "r1", (CallFault(6, "fail"),)), ("advance", 1200)]),
    (F21, "webhook", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", (CallFault(18, "crash_after"),)), ("edit", "rename")]),
    (F19, "webhook", [("rotate", False, ()), ("rotate", False, (CallFault(11, "429", 20.0), CallFault(18, "crash_after"))),
                      ("advance", 3600), ("edit", "flap")]),
    (F40, "aws", [("tick", "r0", (CallFault(17, "crash"),)), ("state", "soft")]),
    (F40, "stripe_key", [("tick", "r1", (CallFault(12, "crash_after"),)), ("state", "lost")]),
    (F40, "deploy_key", [("tick", "r1", ()), ("edit", "path"), ("state", "soft"), ("rotate", True, ())]),
    (F40, "deploy_key", [("tick", "r0", ()), ("state", "lost"), ("edit", "path"), ("rotate", True, ())]),
    (F41, "deploy_key", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "soft")]),
    (F41, "stripe_key", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "lost")]),
    (F41, "webhook", [("pause", "r0", 0, 3600.0, "r1"), ("foreign", "garbage"), ("state", "lost")]),
    (F41, "aws", [("tick", "r1", ()), ("rotate", True, ()), ("foreign", "restore"), ("state", "soft")]),
    (F41, "deploy_key", [("rotate", False, ()), ("foreign", "garbage"), ("state", "soft"), ("rotate", True, ())]),
    (F42, "aws", [("tick", "r0", (CallFault(11, "429", 1.0), CallFault(12, "429", 1.0)))]),
    (F43, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r1", ()), ("state", "older"), ("advance", 86400),
                      ("rotate", True, ())]),
    (F44, "aws", [("foreign", "garbage")]),
    (F44, "deploy_key", [("tick", "r0", ()), ("foreign", "garbage"), ("advance", 86400)]),
    (F45, "webhook", [("tick", "r0", ()), ("rotate", False, ()), ("advance", 25600), ("foreign", "restore"), ("advance", 26400)]),
    (F46, "deploy_key", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r1", ()), ("state", "lost")]),
    (F46, "stripe_key", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", ()), ("state", "soft")]),
    (F46, "webhook", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", ()), ("state", "soft")]),
    (F47, "stripe_key", [("tick", "r0", ()), ("edit", "rename"), ("edit", "path"), ("rotate", True, ())]),
    (F47, "webhook", [("tick", "r1", ()), ("edit", "rename"), ("edit", "path"), ("pause", "r1", 1, 900.0, "cli")]),
    (F20, "stripe_key", [("tick", "r0", ()), ("state", "soft"), ("tick", "r0", (CallFault(14, "fail"),)), ("pause", "r0", 10, 3600.0, "r1"),
                         ("edit", "rename")]),  # found by orphans as F48
    (F49, "deploy_key", [("pause", "r1", 3, 3600.0, "cli"), ("foreign", "garbage"), ("state", "older")]),
    (F50, "stripe_key", [("tick", "r0", ()), ("state", "soft"), ("tick", "r0", (CallFault(14, "crash_after"),)), ("state", "older")]),
    (F50, "webhook", [("tick", "r0", (CallFault(11, "crash"),)), ("state", "older")]),
    (F51, "webhook", [("tick", "r0", (CallFault(7, "crash_after"),)), ("edit", "delete")]),
    (F52, "stripe_key", [("pause", "r0", 7, 900.0, "r1"), ("rotate", False, ()), ("state", "soft"), ("edit", "rename")]),
    (F52, "stripe_key", [("tick", "r0", ()), ("state", "soft"), ("edit", "rename"), ("foreign", "garbage")]),
    (F52, "webhook", [("pause", "r0", 0, 3600.0, "r1"), ("foreign", "garbage"), ("state", "soft"), ("edit", "rename")]),
    (F52, "deploy_key", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "soft"), ("edit", "rename")]),
    (F53, "deploy_key", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", (CallFault(15, "crash"),)), ("state", "soft"),
                         ("rotate", True, ())]),
    (F54, "deploy_key", [("tick", "r0", ()), ("foreign", "garbage"), ("edit", "rename"), ("tick", "r1", ()), ("edit", "delete")]),
    # Found by the mixed sweep without state-record faults (helper combo3): a key written over by hand, then adopted,
    # lives a grace past its successor, the first new credential after the adoption (§6.3); quiescence ended a
    # settle after the adoption, before that grace (simulation). The first engine "fix" (superseded at the
    # adoption, 80eddd5) broke grace in the two cases after it: a key still live at the path vault.path left.
    (F60, "deploy_key", [("rotate", False, ()), ("advance", 3600), ("foreign", "garbage"), ("advance", 10800), ("advance", 25200),
                         ("advance", 10800), ("advance", 3600), ("rotate", False, ()), ("advance", 10800)]),
    (F60, "webhook", [("tick", "r1", ()), ("rotate", True, ()), ("advance", 25200), ("advance", 10800), ("foreign", "restore"),
                      ("advance", 10800), ("advance", 25200), ("rotate", True, ())]),
    (F60, "deploy_key", [("tick", "r1", ()), ("edit", "path"), ("advance", 86400), ("foreign", "garbage"), ("advance", 5)], None, 601802),
    (F60, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("advance", 86400), ("tick", "r0", (CallFault(17, "crash_after"),)),
                         ("advance", 400), ("edit", "path"), ("tick", "r0", ()), ("foreign", "garbage"), ("edit", "rename")], None, 611636),
    # r1 sweeps the crashed rotation's key and stalls before destroying its stash entry; r0 sweeps again, re-issues in
    # the same rotation (same stash path) and promotes; r1's destroy then removes the live key's entry, so that key's
    # retirement (it needs the stashed secret) failed for ever.
    # (Its seed drives the retry jitter: with another, the verification's retries move the calls.)
    (F61, "aws", [("tick", "r0", (CallFault(9, "crash_after"),)), ("advance", 25200), ("pause", "r1", 6, 900.0, "r0"), ("rotate", False, ())],
     None, 600451),  # call 8: the stash write; r1's 6th Vault call: the stash entry's destroy
    # Renamed three times with the same live path; the second name never reached it (a lost stash answer): the
    # live path's metadata still names the first, whose record says it moved to the second. The third took the
    # first's (empty) record over, not the second's, so `rotate --revoke-now` left the original key its grace.
    (F62, "deploy_key", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r0", ()), ("edit", "rename"), ("tick", "r1", (CallFault(10, "lost"),)),
                         ("edit", "rename"), ("pause", "r0", 9, 900.0, "cli")], None, 600484),
    (F62, "webhook", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r0", ()), ("edit", "rename"), ("tick", "r0", (CallFault(13, "crash"),)),
                      ("edit", "rename"), ("rotate", True, ())], None, 610909),
    # A rename's takeover accepted the live path as it was, data written over it by hand included, and rotated over
    # it (a rotation after someone else wrote the live path refuses until `adopt`, contract §2): the old name's key
    # the foreign write had replaced kept the grace of the new name's first promotion, past quiescence.
    (F63, "aws", [("tick", "r0", ()), ("rotate", False, ()), ("edit", "rename"), ("foreign", "garbage")], None, 611081),
    (F63, "aws", [("tick", "r1", ()), ("rotate", False, ()), ("rotate", False, ()), ("foreign", "restore"), ("edit", "rename")], None, 610369),
    (F63, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("foreign", "restore"), ("edit", "rename"), ("advance", 3600),
                         ("rotate", False, (CallFault(6, "fail"),))], None, 611670),
    # A replica whose clock runs 60 s ahead crashed between AWS's create and its tag: the key, unmarked, was made
    # (by AWS's clock) before the rotation's start (by the replica's), so the sweep did not take it for this
    # rotation's; it stayed, and AWS's 2-key limit then blocked the rotation too.
    (F64, "aws", [("rotate", False, ()), ("edit", "path"), ("advance", 25200), ("advance", 25200), ("advance", 25200), ("skew", "r1", 60.0),
                  ("advance", 25200), ("tick", "r1", (CallFault(6, "crash"),))], None, 612793),
    # (Simulation) `rotate --revoke-now` finished the promotion an earlier one left (its metadata merge failed) after
    # someone wrote over the live data by hand: the key it made live is the pending one it finished, which the
    # simulation, looking at the data only, took for a target.
    (F65, "deploy_key", [("tick", "r1", ()), ("rotate", True, (CallFault(8, "429", 300.0),)), ("foreign", "garbage"), ("rotate", True, ())],
     None, 612897),
    # A record restored to a version of an earlier rotation than the live path's: reached by the sweeps once a
    # rotation writes its record 3-4 times, not 9 (issue 15), so that the fault's "older version" spans rotations.
    # Restoring the `issuing` record of the rotation before the last breaks main before that change too.
    (F90, "deploy_key", [("tick", "r1", ()), ("rotate", False, ()), ("rotate", False, ()), ("state", "older")]),
    (F90, "aws", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("advance", 86400), ("tick", "r1", ()),
                  ("rotate", False, ()), ("state", "older")]),
    # A record lost after two renames: adopt (the metadata names the middle name) retires keys marked with the
    # first name too, whose record says it moved to the middle one (the chain of moved_to is followed).
    (F91, "stripe_key", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r0", ()), ("state", "lost"), ("edit", "rename")]),
    # The record's latest version deleted by hand and its file removed: the daemon's scan for file-less records
    # writes back its newest readable version, whose superseded key is then revoked on schedule.
    (F92, "stripe_key", [("tick", "r0", ()), ("rotate", False, ()), ("state", "soft"), ("edit", "delete"), ("advance", 86400)]),
    (F92, "aws", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "soft"), ("edit", "delete")]),
    # The live data written over by hand (no key in it): the metadata still names the old key, but none of the
    # key's secret values is in the data, so it is not live and its retirement goes ahead.
    (F93, "aws", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "soft"), ("edit", "delete")]),
    # Simulation: a key written over by hand is superseded by the rotator's next write there (its grace runs from it).
    (F94, "aws", [("rotate", True, ()), ("rotate", False, ()), ("foreign", "garbage"), ("state", "soft")]),
    # A record restored to the first rotation's `verified`, whose key was revoked (and its stash entry destroyed)
    # since: every reconcile failed reading that entry. A resumed rotation is first compared with the live path.
    (F95, "deploy_key", [("pause", "r0", 6, 421.0, "cli"), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage")]),
    # Simulation: an idle credential costs no Vault request, so a record restored to an older version is compared
    # with the live path when the credential next acts; quiescence runs past each credential's next rotation.
    (F96, "aws", [("tick", "r0", ()), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage")]),
    (F96, "stripe_key", [("tick", "r1", ()), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage")]),
    # A record restored to its first rotation's `issuing`, the live data then written over by hand, the file removed:
    # undoing the rotation found it completed (the metadata names it) and retires its key, which the data no longer
    # holds (the provider names keys in data; this data names none), instead of keeping it live by the metadata.
    (F97, "webhook", [("tick", "r0", ()), ("state", "older"), ("foreign", "garbage"), ("edit", "delete")]),
    # A replica stalled 15 min between its last record write and the mint (AWS now creates without a listing
    # first): the other replica took the lease and rotated; the stalled one minted on resuming. The lease is
    # checked (renewed when short) right before every mint.
    (F98, "aws", [("tick", "r0", ()), ("advance", 86400), ("tick", "r0", ()), ("advance", 86400), ("pause", "r0", 10, 900.0, "r1")]),
    (F98, "aws", [("tick", "r1", ()), ("advance", 86400), ("pause", "r1", 9, 900.0, "cli"), ("advance", 86400),
                  ("pause", "r0", 10, 3600.0, "r1")]),
    # The record's latest version deleted by hand while its file stays: it is written back from its newest
    # readable version (RecordStore.revive), so the rotation it had in flight (a create whose answer was lost)
    # is swept, not forgotten.
    (F100, "aws", [("tick", "r1", (CallFault(7, "lost"),)), ("state", "soft")]),
    # A record restored to a `--revoke-now` rotation's `issuing`, completed and followed by another since: the keys it
    # did not know get a full grace (that revoke-now was asked before they were made).
    (F101, "deploy_key", [("rotate", True, ()), ("rotate", True, (CallFault(3, "fail"),)), ("rotate", False, ()), ("state", "older")]),
    # The same after `vault.path` changed: the record is behind the path it last wrote, not the file's new one.
    (F102, "aws", [("tick", "r0", ()), ("rotate", True, ()), ("rotate", False, ()), ("edit", "path"), ("state", "older")]),
    # A rename taken over (the old record says moved_to, holds no key), then the new name's record lost: its baseline
    # finds the provider's keys marked with either name again (the old one's key in grace blocked AWS for good).
    (F103, "aws", [("tick", "r1", ()), ("rotate", False, ()), ("edit", "rename"), ("tick", "r0", ()), ("state", "lost"), ("advance", 86400)]),
    (F103, "aws", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r0", (CallFault(12, "lost"),)), ("state", "lost")]),
    # A record restored to the rotation before the last, the live data then written over by hand: its next rotation
    # found AWS full with a key marked as its own that it did not know, and blocked for good ("remove it yourself").
    # That key is retired after a full grace (the inventory's rule), and the rotation waits for the room.
    (F104, "aws", [("tick", "r0", ()), ("rotate", False, ()), ("state", "older"), ("foreign", "garbage")]),
    # A record restored to a rollback whose key was revoked since (its stash entry destroyed): every reconcile
    # failed reading that entry. The rollback revokes by the handle's ids (a verify or promote rolls back instead).
    (F105, "stripe_key", [("rotate", True, ()), ("rotate", False, ()), ("foreign", "restore"), ("rotate", False, ()),
                          ("rotate", False, ()), ("state", "older")]),
    (F105, "webhook", [("rotate", True, ()), ("advance", 86400), ("tick", "r0", ()), ("foreign", "restore"), ("rotate", True, ()),
                       ("rotate", False, ()), ("state", "older")]),
    # A `--revoke-now` promotion left with its metadata unmerged (a long 429), the path then restored by hand to the
    # previous token: the run that finished the promotion took its own metadata write as proof of what the path
    # holds and revoked the restored, live token. Only a run's own check-and-set live write proves that.
    (F106, "installation_token", [("rotate", False, ()), ("advance", 86400), ("tick", "r1", ()),
                                  ("rotate", True, (CallFault(2, "429", 20.0), CallFault(9, "lost"), CallFault(13, "429", 300.0))),
                                  ("foreign", "restore")]),
    # A record restored to its first rotation's `issuing` after `vault.path` changed: the path that rotation wrote is
    # compared as it was read (taking the lease points the rotation at the file's new path).
    (F107, "deploy_key", [("tick", "r1", ()), ("state", "older"), ("tick", "r1", ()), ("edit", "path"), ("state", "older")]),
    # A record restored to an older version with nothing pending or retiring, the live data then written over by hand,
    # the file removed: no pass looked at the record again (a removed file's record is reconciled only for work it
    # knows of), so the key the live path's metadata named, which the record did not know, stayed accepted.
    (F115, "deploy_key", [("tick", "r0", ()), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage"), ("edit", "delete")]),
    (F115, "aws", [("tick", "r1", ()), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage"), ("edit", "delete")]),
    # A rotation that minted and stashed its key (then crashed), its record restored to the version that only started
    # it (`intent`), the file removed: undoing a rotation with no credential swept only an `issuing` one, so the key
    # it had minted stayed.
    (F116, "deploy_key", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r0", (CallFault(13, "crash"),)), ("state", "older"),
                          ("edit", "delete")]),
    # A rotation that minted a key and was undoing it (the live data written over by hand) crashed; the record was then
    # restored to the version before it (idle: nothing pending or retiring) and the file removed. The live path names
    # the record's own rotation, so the record is not behind it; the key is found at the provider by its mark.
    # Fixed (restore5): the look at the idle record also lists the provider's keys, and retires one the record does
    # not know only where the versions of the record that marked it name its rotation and no path they name (nor any
    # the run knows) holds it (rotator/engine/forgotten.py).
    (F117, "deploy_key", [("pause", "r1", 2, 900.0, "cli"), ("foreign", "garbage"), ("rotate", False, (CallFault(11, "crash"),)),
                          ("state", "older"), ("edit", "delete")]),
    # What the first fix of F117 (55ab0e6, taken out in 24dd666) got wrong: a rotation live at the path `vault.path`
    # moved to, the record restored to before it and the file removed (or renamed): "no live path holds it" read only
    # the paths the restored record knows, and revoked the key live at the new one (sweep seeds 7411, 6991, 2437).
    (F117, "aws", [("tick", "r0", ()), ("edit", "path"), ("rotate", True, ()), ("state", "older"), ("edit", "delete")], None, 7411),
    (F117, "deploy_key", [("tick", "r0", ()), ("edit", "path"), ("rotate", True, ()), ("state", "older"), ("edit", "delete")],
     None, 6991),
    (F117, "webhook", [("tick", "r1", ()), ("edit", "path"), ("rotate", True, ()), ("state", "older"), ("edit", "rename"),
                       ("tick", "r1", ()), ("advance", 86400)], None, 2437),
    # A record restored behind the live path, whose rotation since minted a key and was being undone (crashed), the file
    # then removed: the catching-up wrote the record twice (caught up, then the keys it forgot), and the first write
    # hit a 429; the failure's write kept the caught-up record without the dropped rotation's key, which was left.
    (F118, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("state", "older"), ("rotate", False, (CallFault(12, "crash"),)),
                       ("advance", 86400), ("edit", "delete"), ("tick", "r1", (CallFault(5, "429", retry_after=90),))]),
    # A record restored (twice) to its first rotation's `issuing` after `vault.path` changed: that rotation had completed
    # at the old path, which the restored record does not know. Its sweep took the key live there for a lost create's
    # and revoked it at once. A key older than a lease that a resumed rotation sweeps is retired after a full grace.
    (F119, "stripe_key", [("tick", "r0", ()), ("edit", "path"), ("advance", 10800), ("state", "older"), ("tick", "r1", ()), ("state", "older")]),
    # `rotate --revoke-now` completed while the revocation of one previous key failed (to be retried in 30 s); the
    # record was then lost: rebuilt from the live path, it found that key again and gave it a full grace. The live
    # path's metadata says its rotation was asked with `--revoke-now`: keys made before it are revoked at once.
    (F120, "webhook", [("tick", "r0", ()), ("rotate", False, ()), ("rotate", True, (CallFault(1, "fail"),)), ("state", "lost")]),
    (F120, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("rotate", False, ()), ("edit", "path"),
                       ("rotate", True, (CallFault(12, "fail"),)), ("state", "lost")]),
    # Simulation: a restored record's next rotation found AWS full (a key it forgot, given a grace) and promoted a grace
    # later; the record's current key then got its own grace from that promotion (§6.3). Quiescence ended before it.
    (F121, "aws", [("tick", "r0", ()), ("rotate", False, ()), ("foreign", "garbage"), ("state", "older"), ("edit", "path")]),
    # A replica stalled an hour (a token's lifetime) right before its check-and-set live write; the replica that took
    # the lease over runs 30-60 s behind the provider's clock, so by its own clock the token had not yet expired: it
    # verified it again, GitHub refused it, and it rolled back without writing the path, so the stalled write landed.
    (F108, "installation_token", [("skew", "r1", -30.0), ("tick", "r1", (CallFault(2, "429", 20.0),)), ("pause", "r0", 10, 3600.0, "r1")]),
    (F108, "installation_token", [("tick", "r1", ()), ("rotate", False, ()), ("rotate", False, ()), ("skew", "r1", -60.0),
                                  ("advance", 25200), ("tick", "r0", (CallFault(7, "fail"),)), ("pause", "r0", 10, 3600.0, "r1")]),
    # A first write to a path (`vault.path` changed) stalled before its read: meanwhile another replica took the lease,
    # rotated and wrote that path for the same credential; the resumed write read it (this credential's data, so
    # writable) and wrote over the new holder's promotion with check-and-set against what it had just read.
    (F109, "installation_token", [("tick", "r0", ()), ("rotate", False, ()), ("rotate", True, ()), ("advance", 520),
                                  ("state", "older"), ("advance", 1200), ("edit", "path"), ("advance", 120),
                                  ("pause", "r1", 8, 3600.0, "r0")]),
    # (simulation) A replica made its one unfenceable call after a stall (a retirement, a metadata merge), later took a
    # fresh lease and stalled again before a metadata merge: one call since its last lease check, counted as a second
    # one because the count of calls without a lease was never reset by the new lease.
    (F110, "aws", [("tick", "r1", ()), ("state", "lost"), ("pause", "r1", 8, 900.0, "cli"), ("state", "older"),
                   ("pause", "r1", 9, 900.0, "cli")]),
    (F110, "webhook", [("pause", "r0", 3, 421.0, "r1"), ("advance", 86400), ("tick", "r1", ()), ("rotate", False, ()),
                       ("rotate", True, (CallFault(21, "crash"),)), ("advance", 86400), ("pause", "r0", 8, 900.0, "r1")]),
    # A rotation finished at the path `vault.path` had moved to (its record then named that path), the record restored
    # to a version from before (naming the old path only) and the file removed: the removed file's rollback of the
    # restored rotation revoked (or swept) its key, live at the path only the versions the restore undid knew.
    (F111, "deploy_key", [("rotate", True, (CallFault(9, "crash_after"),)), ("edit", "path"), ("advance", 10800),
                          ("tick", "r0", ()), ("state", "older"), ("edit", "delete")]),
    (F111, "webhook", [("tick", "r1", ()), ("edit", "path"), ("advance", 86400), ("tick", "r0", (CallFault(2, "429", 1.0),)),
                       ("edit", "path"), ("tick", "r1", ()), ("state", "older"), ("edit", "delete")]),
    # A record restored, `vault.path` changed, then a rotation crashed after its live write at the new path: the
    # recovery found a rotation the record did not know at the old path (the record is behind) and took that key as
    # current, retiring the rotation in flight's own key, live at the new path, a grace later.
    (F112, "deploy_key", [("tick", "r0", ()), ("rotate", True, ()), ("state", "older"), ("edit", "path"),
                          ("rotate", True, (CallFault(12, "crash"),)), ("edit", "delete")]),
    # A record restored to its first rotation's `issuing` after `vault.path` changed: that rotation had completed at
    # the old path (its metadata names it), but the sweep looked at the new one and revoked the rotation's key, live
    # at the old path with no successor yet (and again at quiescence, inside the grace its successor then began).
    (F113, "stripe_key", [("tick", "r0", ()), ("edit", "path"), ("advance", 1200), ("state", "older"), ("tick", "r1", ()),
                          ("state", "older")]),
    (F113, "stripe_key", [("tick", "r0", ()), ("edit", "path"), ("advance", 10800), ("state", "older"), ("tick", "r1", ()),
                          ("state", "older")]),
    (F113, "aws", [("pause", "r0", 7, 900.0, "cli"), ("rotate", True, (CallFault(9, "crash_after"),)), ("advance", 86400),
                   ("edit", "rename"), ("tick", "r1", ()), ("rotate", True, (CallFault(4, "fail"),)), ("state", "older"),
                   ("edit", "path")]),
    # A record restored to an older version, then a rotation on it crashed between AWS's create and its tag: the next
    # pass found the record behind the live path and dropped that rotation without its sweep, leaving the unmarked key.
    (F114, "aws", [("tick", "r0", ()), ("rotate", True, ()), ("state", "older"), ("rotate", False, (CallFault(7, "crash"),))]),
    # The same after `vault.path` changed, the create's answer lost (AWS made the key, untagged).
    (F114, "aws", [("tick", "r0", ()), ("pause", "r0", 0, 421.0, "cli"), ("state", "older"), ("edit", "path"), ("advance", 86400),
                   ("tick", "r1", (CallFault(7, "lost"),))]),
    # Simulation: a record soft-deleted by hand when quiescence began is revived by its first pass; quiescence had
    # counted the next rotations before, without it, and ended before that credential next acted (F96's rule).
    (F123, "deploy_key", [("tick", "r1", ()), ("rotate", True, ()), ("state", "older"), ("foreign", "garbage"), ("state", "soft")]),
    # A rotation crashed right after its live write, the data then written over by hand, the file removed: undoing it
    # found it had gone live and been superseded (so it retires it after a grace), but kept the key it had replaced as
    # `current`, which a removed file's record never retires. (And looking at the record later took the rolled-back
    # rotation, which the record had known, for one it had missed.)
    (F124, "stripe_key", [("pause", "r0", 9, 421.0, "r1"), ("rotate", False, (CallFault(10, "crash"),)), ("foreign", "garbage"),
                          ("edit", "delete")]),
    # A rotation's live write landed and its metadata merge crashed; the record, lost and rebuilt, was then restored to
    # that rotation's `intent`. The next pass saw the live data equal to the rotation's stash entry (F17) and took the
    # key as issued and live, but that record write hit a 429: the failure was recorded as the issue step's, which
    # sends a rotation back to `issuing` (sweep, then mint again) with the key kept; Stripe's retried create expires
    # every key with the rotation's mark first, the live one.
    (F122, "stripe_key", [("tick", "r0", ()), ("edit", "rename"), ("pause", "r0", 0, 3600.0, "cli"), ("state", "lost"),
                          ("tick", "r0", (CallFault(15, "crash"),)), ("state", "older"), ("advance", 25200),
                          ("tick", "r1", (CallFault(7, "429", 300.0),))]),
    # `vault.path` changed twice; a rotation had completed at the middle path and a later one since; the record was then
    # restored to the first rotation's `verified` (a `--revoke-now` one), naming neither the middle path nor the later
    # rotation. Its promotion wrote the old key to the new path and, under the old request, revoked at once the later
    # rotation's key, which had just been superseded. Before a resumed promotion the paths the undone versions name
    # are read too (F111): the record is behind the middle one.
    (F125, "deploy_key", [("rotate", True, (CallFault(7, "crash_after"),)), ("advance", 25200), ("tick", "r0", (CallFault(16, "crash_after"),)),
                          ("advance", 86400), ("edit", "path"), ("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()),
                          ("edit", "path"), ("state", "older")]),
    # A file renamed; the new name's takeover crashed after writing its own record (the old one never marked moved);
    # the live path restored by hand to the previous key; renamed again, adopted (the old name's record carried on)
    # and rotated: the previous key, live again and superseded again, had a new grace there, but the first new name's
    # file-less record still retired it on its old schedule, 5:55 into that grace.
    (F126, "stripe_key", [("tick", "r0", ()), ("rotate", False, ()), ("edit", "rename"), ("tick", "r0", (CallFault(4, "crash_after"),)),
                          ("foreign", "restore"), ("edit", "rename")]),
    # A record lost after `vault.path` changed: its next rotation's baseline took the old path's key on as superseded
    # (a grace from the rotation's start, timed again from the promotion, 10 s later). The record was then restored to
    # the version before that promotion: finding the rotation completed did not time that grace again, so the old key
    # was deactivated 10 s before a grace had passed since its successor went live.
    (F130, "aws", [("tick", "r1", ()), ("edit", "path"), ("state", "lost"), ("tick", "r1", ()), ("state", "older")]),
    # A record restored twice after `vault.path` changed, the file then renamed and the new name adopting the
    # path: the old name's file-less record finished its restored promotion at the old path, and its after-promotion
    # inventory retired the key the new name had adopted, live at the new path (the second try no longer counted that
    # path among its own). Sweep seed 2402. Fixed (restore5): a key a record forgot is retired only where the
    # versions of the record that marked it name its rotation and no path they name (nor any the run knows) holds it
    # (rotator/engine/forgotten.py), wherever such keys are found (after a promotion, a recovery, a record behind).
    (F131, "aws", [("pause", "r1", 6, 421.0, "r0"), ("rotate", True, ()), ("edit", "path"), ("rotate", False, ()), ("state", "older"),
                   ("state", "older"), ("edit", "rename")]),
    # Seed 2402 itself (shrunk at d6032f3): the record restored to the first rotation's `issuing`, recovered where that
    # rotation went live (the old path, F112), took the key live at the file's own path for one it forgot.
    (F131, "aws", [("pause", "r1", 6, 421.0, "r0"), ("rotate", True, ()), ("edit", "path"), ("rotate", False, ()), ("state", "older"),
                   ("advance", 1200), ("tick", "r1", ()), ("edit", "rename")], None, 2402),
    # A rotation's live write landed and it crashed before the metadata merge (which still named the rotation
    # before, a `--revoke-now` one); the record was then restored to that earlier rotation's `verified`. Its resumed
    # promotion wrote its old key over the newer one (the path's metadata named this very rotation, so the path was
    # "its own"), and its after-promotion inventory expired the newer key at once under the old request. A resumed
    # promotion whose rotation the metadata names over other data is recovered as completed: the newer key is taken
    # on (under its own rotation, by its mark), and the rotation's own key retired after a full grace (sweep seed 18194).
    (F134, "stripe_key", [("rotate", True, ()), ("advance", 86400), ("tick", "r1", (CallFault(8, "crash"),)), ("state", "older")],
     None, 18194),
    # A `--revoke-now` rotation minted and verified a key, then crashed; the record was restored to the rotation
    # before, and the file's data written over by hand, the file removed. The restored rotation was rolled back, and
    # nothing else named the later rotation's key: the live path never held it. The versions the restore undid name
    # it: a resumed rotation about to be undone retires such keys a full grace later, unless a path holds them
    # (sweep seed 12222).
    (F180, "stripe_key", [("tick", "r1", ()), ("rotate", True, (CallFault(6, "crash_after"),)), ("state", "older"),
                          ("foreign", "garbage"), ("edit", "delete")], None, 12222),
    # The record restored to its first rotation's `issuing` after `vault.path` changed (that rotation had completed
    # at the old path); a crashed tick then wrote it once (its lease). The versions the restore undid were looked
    # for as those before a version equal to the record read, which the lease write had changed: none found, the
    # old path never read, and the rotation's key, live there, swept at once. The copy is now the newest version
    # equal to an older one, whatever was written since (sweep seed 14045).
    (F181, "webhook", [("tick", "r1", ()), ("edit", "path"), ("state", "older"), ("tick", "r1", (CallFault(2, "crash"),)),
                       ("edit", "rename")], None, 14045),
    # A later rotation crashed right after its mint (`issuing`, no key recorded; marked at Stripe); the record was
    # restored to the first rotation's start, which had completed, and the file renamed after a `vault.path` change.
    # The file-less record found its rotation completed, and nothing named the later key. The versions the restore
    # undid name that rotation: its marked keys are retired too, a full grace later (sweep seed 16904).
    (F182, "webhook", [("tick", "r1", ()), ("rotate", True, ()), ("edit", "path"), ("advance", 86400),
                       ("tick", "r1", (CallFault(5, "crash_after"),)), ("advance", 10800), ("tick", "r1", (CallFault(9, "crash"),)),
                       ("state", "older"), ("edit", "rename")], None, 16904),
    # The previous key written back by hand at the live path, then `vault.path` changed and `rotate --revoke-now`
    # asked: the old key, held only at the path the file left (still marked as this credential's), was refused as
    # "live" and kept its grace. A `--revoke-now` entry is kept only by the file's path and by a path another
    # credential has taken on (sweep seed 13729).
    (F183, "stripe_key", [("tick", "r0", ()), ("advance", 86400), ("tick", "r1", ()), ("foreign", "restore"), ("edit", "path"),
                          ("rotate", True, ()), ("state", "older")], None, 13729),
    # A lost record's baseline took the old key on as superseded (timed from the rotation's start); the rotation
    # completed 10 s later; the record restored to that rotation's `issuing`, the live data then written over by hand
    # with no key in it. The rotation was found completed, but F130's re-timing of such entries ran only where the
    # live data held a key: the old key was deactivated 10 s before a grace had passed since its successor went
    # live. The rotation recovered went live by now whatever the data holds since (sweep seed 18542).
    (F184, "aws", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "lost"), ("tick", "r0", ()), ("state", "older"),
                   ("foreign", "restore")], None, 18542),
    # A `--revoke-now` rotation completed; the next rotation's live write landed and it crashed before its metadata
    # merge (the metadata still naming the `--revoke-now` rotation and its key); the record then lost. The rebuilt
    # record found that rotation's own key among its forgotten ones and, under its `rotator-revoke-now`, revoked it
    # at once, 0:00 after its successor went live. The request was for the keys before it (sweep seed 85589).
    (F185, "webhook", [("tick", "r1", ()), ("rotate", True, (CallFault(2, "fail"), CallFault(3, "lost"))),
                       ("rotate", False, (CallFault(6, "crash_after"),)), ("state", "lost")], None, 85589),
    # Found by the 20,000-schedule sweep at the end of session 5 (they pass at e023a0e; bisected to 805e17c). F132:
    # a rotation completed at the old path, its record restored to its `verified`, `vault.path` changed; the next
    # pass found it live where it was writing and recovered it there (F112), but that record write lost its
    # check-and-set. Its lease write had already pointed the rotation's target at the new path, so nothing named the
    # old one any more: the file renamed, the removed file's record rolled the rotation back and revoked its key,
    # live at the old path, with the new name's key just live.
    # F133: a rotation's live write landed and its metadata merge crashed; `vault.path` changed; the next pass
    # (target moved to the new path) crashed before its own live write; the file renamed: the rollback revoked the
    # key at once, live at the old path. (805e17c's extra record-version read moved the crash from the metadata
    # merge to the live write; with the faults one call earlier it fails at e023a0e too.) Fixed: a rotation's
    # earlier targets are kept in the record (`pending.earlier_targets`): a path where it went live is recovered
    # there (F132) and counts as live for every revoke; its data held there undoes it with a grace (F133).
    (F132, "aws", [("pause", "r1", 8, 421.0, "r0"), ("state", "older"), ("edit", "path"), ("tick", "r0", (CallFault(10, "cas"),)),
                   ("edit", "rename")], None, 9124),
    (F133, "webhook", [("tick", "r0", (CallFault(10, "crash"),)), ("edit", "path"), ("advance", 3600),
                       ("tick", "r1", (CallFault(7, "429", retry_after=90), CallFault(10, "crash"))), ("edit", "rename")], None, 19499),
    # A file renamed; the new name's takeover rotation minted a key (marked with the new name) whose stash write's
    # answer was lost; that name's record then lost, and the file renamed again: the third name took the path over
    # from the first name, whose record said it moved to the second, which had neither a file nor a record any
    # more. Nothing tied the second name's key to the third. A name with no file (every file loaded, none has it)
    # and no record, that the old record says it moved to, is a middle name: its keys are the taker's (sweep seed 1110).
    (F135, "stripe_key", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", (CallFault(10, "lost"),)), ("state", "lost"),
                          ("edit", "rename"), ("rotate", True, ())], None, 1110),
    # An AWS key made and never tagged (the create's answer lost, or a crash right after it: call 4, after the
    # issuing tag at 3), and then the state record lost (seed 2420), or restored to a version from before that
    # rotation (seeds 2024, 1774): nothing the record says tells it from a key a person made; the
    # `rotator-issuing:app` tag set before the create does. Caught by a lost record's baseline, the inventory after the
    # restored record's promotion, and (the last) the look before a rotation replaces the issuing tag.
    (F165, "aws", [("rotate", True, ()), ("rotate", True, (CallFault(4, "lost"),)), ("state", "lost")]),
    (F165, "aws", [("rotate", False, ()), ("rotate", True, (CallFault(4, "crash_after"),)), ("state", "older")]),
    (F165, "aws", [("pause", "r1", 3, 3600.0, "cli"), ("advance", 86400), ("tick", "r1", (CallFault(4, "lost"),)), ("state", "older")]),
    # No restore at all: a lost create's sweep sent a rotation from `issuing` back to `intent`, and the next issue
    # wrote `issuing` again, within one lease (the lease not renewed: the same expiry), so that version equals the one
    # two before. The versions a restore undid are looked for from the newest version equal to an older one (F181):
    # this one was taken for a restore, the version between for an undone one, and the path `vault.path` had left
    # (named there) was read. Its metadata named a rotation the record had known and retired since, so the file-less
    # record took itself for behind that old path: it dropped its rotation and revoked its current key, live at the
    # file's last path (sweep seed 484, found by helper restore5 on 2524489).
    (F150, "webhook", [("rotate", False, ()), ("rotate", False, ()), ("rotate", True, (CallFault(10, "429", retry_after=20),)),
                       ("edit", "path"), ("tick", "r0", ()), ("rotate", False, (CallFault(5, "429", retry_after=300),)),
                       ("edit", "delete")], None, 484),
    # A record restored behind the live path (its data written over by hand); catching up, the look for the keys it
    # forgot read the live path again (the proof that none is live, F131) after the caught-up record was applied in
    # memory; that read hit a 429, the failure's write kept the caught-up record without the forgotten key, and
    # nothing named it again (F118's shape; sweep seed 4243, found by restore5 on 4eda7e3, its own 72096e2).
    (F151, "webhook", [("rotate", False, ()), ("advance", 86400), ("tick", "r0", ()), ("foreign", "garbage"), ("state", "older"),
                       ("tick", "r0", (CallFault(13, "429", retry_after=300),)), ("rotate", False, (CallFault(18, "429", retry_after=300),))],
     None, 4243),
    # The idle look of a removed file's record (the file gone while a replica ran) showed a forgotten key live nowhere
    # (its path, only the record's versions named, held hand-written data) and retired it after a grace; the path was
    # then restored by hand to that key and the file renamed: at the end of the grace the retirement read only the
    # paths the record knows and revoked the key, live again (sweep seed 9346, found by restore5 on 7c7cd0f, its own
    # 72096e2). The paths the proof placed the key at are kept in its retiring entry and read again before the revoke.
    (F152, "webhook", [("tick", "r0", ()), ("edit", "path"), ("pause", "r1", 0, 3600.0, "cli"), ("foreign", "garbage"),
                       ("state", "older"), ("edit", "flap"), ("foreign", "restore"), ("edit", "rename"), ("advance", 86400)],
     None, 9346),
    # No restore at all (F150's shape): a lost lease write, then a pass whose sweep sent its rotation from `issuing`
    # back to `intent` and issued again in the same lease, so the record's version equalled the one two before and was
    # taken for a copy; the create's answer then lost to a crash (the key never stashed). The `--revoke-now` that
    # finished the rotation took that key for one an undone version had made and retired it after a full grace,
    # instead of sweeping it at once as the rotation's own unrecorded mint (sweep seed 19289). Each record write now
    # carries its own `write_id`: only a copy equals an older version.
    (F186, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r1", (CallFault(1, "lost"),)),
                       ("tick", "r1", (CallFault(13, "crash_after"),)), ("advance", 1200), ("rotate", True, ())], None, 19289),
    # The state record lost; the next pass's baseline (the live key as current, the superseded one retiring) was
    # refused by a 429 on its first write, and the pass then "released" the lease it had never written: a new, empty
    # record that knew no key, whose `rotation.started` was logged besides. The file renamed with its path changed,
    # that empty record (a removed file's) never took a baseline, and its superseded key was left at the provider
    # (sweep seed 14480). A run that wrote nothing has nothing to release.
    (F187, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("state", "lost"), ("tick", "r0", (CallFault(4, "429", retry_after=90),)),
                          ("edit", "rename"), ("edit", "path")], None, 14480),
    # `vault.path` changed and the record restored to before the last rotation (it forgot that rotation's key, live
    # at the path the file left); `rotate --revoke-now` then promoted, and its look for forgotten keys (the inventory)
    # hit a 429 reading the old path: "best effort, the next promotion looks again". The next promotion was a
    # scheduled one, which gave the forgotten key a full grace (sweep seed 14835). A `--revoke-now` promotion is
    # finished only once that look has succeeded: until then it stays `promoted`, retried like its metadata merge.
    (F188, "deploy_key", [("tick", "r1", ()), ("rotate", False, ()), ("edit", "path"), ("state", "older"),
                          ("rotate", True, (CallFault(15, "429", retry_after=300),))], None, 14835),
    # Two `--revoke-now` rotations; the second minted, stashed and verified its key, then crashed; the record restored
    # to the first one's unfinished promotion. A third `rotate --revoke-now` (while a replica stalled) finished that
    # promotion and found the second rotation's key among the undone versions' (F180): it retired it after a full
    # grace, and the after-promotion look (which revokes at once under `--revoke-now`) then knew it (sweep seed
    # 20437). Under a `--revoke-now` (asked now, or of the rotation being finished) those keys go at once too.
    (F189, "stripe_key", [("rotate", True, ()), ("rotate", True, (CallFault(6, "crash"),)), ("state", "older"),
                          ("pause", "r0", 0, 421.0, "cli")], None, 20437),
    # A key minted and stashed, then the record lost (17091: with a crash right after the stash write, the live
    # data then written over by hand and the file renamed) or restored past the ten versions KV keeps (14540: the
    # `verified` write refused by a 429, `vault.path` changed before): no readable record version and no live path's
    # metadata named its rotation, so the proof that it is live nowhere (F131) had nothing to read and the key was
    # left (`inventory.unproven_key`). Its stash entry, written before any live write, now keeps the paths the
    # rotation was writing (`targets`): they are the proof's paths when nothing else names the rotation.
    (F190, "stripe_key", [("tick", "r1", (CallFault(6, "crash_after"),)), ("state", "lost"), ("foreign", "garbage"),
                          ("tick", "r1", ()), ("edit", "rename")], None, 17091),
    (F190, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r1", ()), ("rotate", False, ()), ("advance", 10800),
                       ("advance", 10800), ("advance", 400), ("edit", "path"), ("rotate", True, (CallFault(21, "429", retry_after=300),)),
                       ("state", "older"), ("tick", "r1", ()), ("rotate", False, (CallFault(4, "429", retry_after=90),))], None, 14540),
    # AWS: the record restored to before the last rotation (current: the old key), no rotation pending, so nothing
    # compared it with the live path; its next rotation found the user full, the other key (live at the path, the
    # rotation the record forgot) held live by the proof (F131) and so not retired: blocked for good
    # (LimitExceeded), and both keys stayed once the data was written over by hand (sweep seed 58308). With a key
    # in the way, the live path is read first: a record behind it catches up (the old key retiring after a grace).
    (F191, "aws", [("tick", "r1", ()), ("advance", 86400), ("tick", "r0", ()), ("state", "older"), ("tick", "r0", ()),
                   ("foreign", "garbage")], None, 58308),
    # `rotate --revoke-now` completed while the revoke of an older key failed (retried 30 s later); the record was then
    # lost. The rebuilt record's F120 rule (the keys made before a `--revoke-now` promotion go at once) compared that
    # key's creation time, with its fraction of a second, with the metadata's `rotator-rotated-at`, which has whole
    # seconds: made 0.3 s "after" the promotion's second, the key got a full grace (sweep seed 54438).
    (F192, "stripe_key", [("tick", "r1", (CallFault(4, "lost"),)), ("rotate", False, ()), ("rotate", True, (CallFault(3, "fail"),)),
                          ("state", "lost")], None, 54438),
    # A rotation crashed between its mint and its stash write (the key marked, never recorded); the record restored
    # to before it. Nothing named the rotation, and it has no stash entry either (F190's proof had no paths): the key
    # was left through a `--revoke-now` (sweep seed 50681). A rotation writes its stash entry before the record names
    # the key and the record before any live write: a marked key whose rotation has no stash entry never went live,
    # and is retired like one shown live nowhere.
    (F193, "stripe_key", [("rotate", True, ()), ("advance", 86400), ("tick", "r1", ()), ("rotate", False, (CallFault(4, "crash"),)),
                          ("state", "older"), ("rotate", True, ()), ("rotate", False, ()),
                          ("rotate", False, (CallFault(10, "429", retry_after=300),)), ("pause", "r0", 0, 900.0, "cli")], None, 50681),
    # `rotate --revoke-now` completed while one older key's revoke hit a 429 (retried 5 min later); the record was then
    # restored to a version from before that rotation, with nothing pending: nothing compared it with the live path
    # (only a rotation in flight, or a removed file's idle record, is), so it retired on its old schedule and the
    # older key kept its grace though the live path's metadata says `--revoke-now` (sweep seeds 95318, 91331, 83626,
    # 91323). A retirement reads the file's live path anyway (is the key live?): a record behind it catches up first.
    (F194, "webhook", [("tick", "r0", ()), ("advance", 86400), ("tick", "r0", ()), ("rotate", True, (CallFault(16, "429", retry_after=300),)),
                       ("state", "older")], None, 95318),
    (F194, "deploy_key", [("tick", "r0", ()), ("state", "lost"), ("tick", "r1", ()), ("rotate", True, (CallFault(1, "lost"),)),
                          ("state", "older")], None, 83626),
    # AWS: a rotation crashed right after its create (the key untagged; the `rotator-issuing` note names the moment);
    # the record then restored to that rotation's `intent`. Resumed, it issued again: its own issuing note replaced
    # the one that told the untagged key apart, and nothing looked first (F165's look ran only when a rotation
    # started), so the key stayed (sweep seed 86231). A resumed rotation's issue looks first too.
    (F195, "aws", [("tick", "r0", (CallFault(16, "crash"),)), ("advance", 86400), ("tick", "r0", (CallFault(16, "crash_after"),)),
                   ("advance", 3600), ("rotate", True, (CallFault(12, "cas"),)), ("state", "older")], None, 86231),
    # The live data written over by hand; the record restored to its rotation's start, the file renamed: the old
    # name's record found the rotation completed and retired the key the undone versions named after a grace from
    # then, with no successor live yet (its data hidden by hand). The new name took that entry over and, seven hours
    # later, its first rotation retired the key (due) in `intent`, right before promoting its successor: 0:00 after
    # it (sweep seed 16314). An entry no successor has gone live for yet (`superseded_at` unset) waits, in a rotation
    # about to issue, for that promotion, which times its grace (a stuck rotation still never holds it up).
    (F196, "stripe_key", [("tick", "r1", ()), ("foreign", "garbage"), ("state", "older"), ("edit", "rename"), ("tick", "r1", ()),
                          ("advance", 25200), ("tick", "r0", (CallFault(6, "429", retry_after=20),))], None, 16314),
    # The same shape found completed over data written by hand (F184's re-timing): the entries were marked as
    # superseded at the recovery, though no key was live, so the successor's promotion 7 minutes later did not time
    # them again, and a replica retired one 5:55 after it (sweep seed 3987). With no key live they stay unsuperseded.
    (F196, "deploy_key", [("tick", "r1", ()), ("state", "lost"), ("pause", "r0", 3, 900.0, "r1"), ("state", "older"), ("foreign", "garbage"),
                          ("tick", "r1", (CallFault(10, "429", retry_after=20), CallFault(16, "lost"), CallFault(20, "lost"))),
                          ("advance", 400)], None, 3987),
    # A removed file's record (renamed, its path's data written over by hand) found a key it forgot and retired it a
    # grace from then; the new name adopted the path and promoted its successor there an hour later: the old record
    # revoked the key 4:52 after that promotion (sweep seed 38357). It now reads when the paths were last promoted.
    (F196, "webhook", [("rotate", False, ()), ("edit", "path"), ("advance", 86400), ("tick", "r1", ()), ("state", "older"),
                       ("foreign", "garbage"), ("edit", "rename")], None, 38357),
    # AWS: the live path restored by hand to the previous key, the record restored to before the last rotation; then
    # `rotate --revoke-now`: the user full, the record caught up with the live path (F191) and the rotation was dropped,
    # and with it the request it had taken: nothing was revoked at once (sweep seed 36188). The request now carries on.
    (F197, "aws", [("tick", "r0", ()), ("rotate", False, ()), ("foreign", "restore"), ("state", "older"), ("rotate", True, ())], None, 36188),
    # A rotation's `verified` write lost, the record restored to its start: resumed, the look at what the restore undid
    # took the rotation's own stashed key for an undone rotation's and retired it; the issue then met its own stash
    # entry naming that key and stopped (another process took over?), every pass minting a key and revoking it, and
    # the first key stayed at quiescence (sweep seed 47218, after 2416587). The rotation in flight's own keys are its
    # sweep's, never the undone versions'.
    (F198, "webhook", [("tick", "r1", ()), ("rotate", False, (CallFault(3, "lost"),)), ("rotate", True, (CallFault(11, "lost"),)),
                       ("state", "older")], None, 47218),
    # `rotate --revoke-now` with a key already in grace: its revoke failed (Vault's read of the live path), the run
    # went on, promoted a new key, revoked the one it replaced and reported the rotation done, exit 0, with the
    # older key still working; the record was then lost, so only the orphan sweep found that key, hours later
    # (sweep seed 54438). A revoke-now run that leaves a previous key working now fails (exit 1, step `revoke`).
    (F199, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("rotate", True, (CallFault(3, "fail"),)), ("state", "lost"),
                          ("edit", "rename")], None, 54438),
    # A `rotate` crashed after its mint, before its stash write (a marked key nothing records); the record was then
    # restored to an earlier rotation, `verified`, that had been rolled back since (its stash entry destroyed).
    # Resumed, that rotation could be neither verified nor promoted and was undone, but as a *permanent* verify
    # failure: the credential was blocked until its file changed, so it never rotated again and the crashed
    # rotation's key stayed for ever (sweep seed 67795). A missing stash entry is not the file's fault: the
    # rotation is rolled back and the credential retried with backoff.
    (F200, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("foreign", "restore"), ("rotate", False, ()), ("advance", 86400),
                          ("rotate", False, (CallFault(9, "crash"),)), ("state", "older"),
                          ("tick", "r0", (CallFault(13, "429", retry_after=300),))], None, 67795),
    # A simulation defect: `rotate --revoke-now` made a key live, the live path was then written back by hand to the
    # key before it, the record restored to before that rotation and the file deleted. Six hours on, the removed
    # file's record caught up with the live path (its metadata names the rotation) and retired the rotation's own
    # key, which the data no longer held, a full grace from then, as documented (`_recover_if_behind`: the rotator
    # cannot know when data was written over it); quiescence ended before that grace did (sweep seeds 63575, 15155).
    # Quiescence now runs past the grace of each key a record takes up in it, once per key.
    (F201, "aws", [("tick", "r0", ()), ("state", "lost"), ("tick", "r1", ()), ("rotate", True, ()), ("foreign", "restore"),
                   ("state", "older"), ("edit", "delete")], None, 63575),
    (F201, "aws", [("pause", "r0", 0, 900.0, "r1"), ("state", "older"), ("tick", "r1", ()), ("rotate", True, ()), ("state", "older"),
                   ("foreign", "restore"), ("edit", "delete")], None, 15155),
    # A rotation refused to overwrite a live path written by hand ("run `rotator adopt app`") and was rolling back
    # when a 429 from Vault failed the rollback's step: that error replaced the refusal as the record's last error,
    # and the finished rollback reported "rate limited", will_retry false. The credential stayed blocked with no
    # word of `adopt`, so nobody adopted it and a crashed `rotate`'s key stayed (sweep seed 67795, after F200). The
    # failure being rolled back stays the record's error; the rollback's own failures are events.
    (F202, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("foreign", "restore"), ("rotate", False, ()), ("advance", 86400),
                          ("tick", "r0", ()), ("rotate", False, (CallFault(9, "crash"),)), ("state", "older"),
                          ("tick", "r0", (CallFault(13, "429", retry_after=300),))], None, 67795),
    # The live path written back by hand to a key past its grace; `rotate --revoke-now` crashed after its mint; the
    # record restored to before it; the file deleted. The removed file's record refused, hour after hour, to retire
    # the key the live path holds (right: it is live), so it was never idle, and only an idle record looks for keys
    # it forgot (F117): the crashed rotation's key stayed (sweep seed 71053). A removed file's record that refuses a
    # retirement because a live path holds the key now looks for them too.
    (F203, "stripe_key", [("rotate", False, ()), ("advance", 86400), ("tick", "r0", ()), ("advance", 25200), ("foreign", "restore"),
                          ("rotate", True, (CallFault(19, "crash"),)), ("state", "older"), ("edit", "delete")], None, 71053),
    # `vault.path` changed, a `rotate` made a key live at the new path, the record restored to before both, the file
    # renamed: the old name's record is a removed file's, idle. Its one look (per record version, F117) found the
    # key it forgot live at the new path, so kept it; the path was then written over by hand, and with no new
    # version of the record nothing looked again: the key stayed (sweep seed 22674). An idle removed file's record
    # is now looked at again every `LOOK_AGAIN` (6 h), new version or not.
    (F204, "aws", [("tick", "r0", ()), ("edit", "path"), ("rotate", False, ()), ("state", "older"), ("edit", "rename"), ("tick", "r0", ()),
                   ("tick", "r1", ()), ("foreign", "garbage")], None, 22674),
    # `vault.path` changed; `rotate --revoke-now` wrote its key live at the new path and crashed; the data there was
    # written over by hand and the file renamed twice. The old name's record, now a removed file's, undid the
    # rotation (it had gone live and been written over since) and retired its key a grace from then; 30 s later the
    # new name, having adopted the path, promoted its successor there, and the key was revoked 5:59:30 after that
    # promotion (grace 6 h; sweep seed 99530, this session's 100,000 sweep). The entry now keeps the paths its
    # rotation wrote, so its grace is timed from a successor promoted at one of them since (F196's rule).
    (F205, "stripe_key", [("tick", "r0", ()), ("rotate", False, ()), ("edit", "path"), ("rotate", True, (CallFault(27, "crash_after"),)),
                          ("foreign", "garbage"), ("edit", "rename"), ("tick", "r1", ()), ("edit", "rename"), ("advance", 86400)],
     None, 99530),
    # A `rotate` wrote its key's data live and crashed before its metadata merge (the metadata still names the
    # previous rotation's key); the record was then restored to that previous rotation's `issuing`. Resumed, its
    # sweep took its own key, live until a moment before, for a crashed mint's leftover (the data holds the later
    # key; the metadata names this one, but only data counted) and revoked it at once: 0:00 of its grace (seed
    # 123857, the first sweep of seeds 100,000-149,999). The sweep now leaves alone a key a live path's metadata
    # names; a retirement with a grace takes it.
    (F206, "deploy_key", [("tick", "r0", ()), ("advance", 86400), ("tick", "r0", ()), ("rotate", False, (CallFault(7, "crash_after"),)),
                          ("state", "older")], None, 123857),
    # `vault.path` changed, the record restored to before the last rotation, then a `rotate` wrote its key live at
    # the new path and crashed before its metadata merge; the file deleted. The removed file's record caught up
    # with its old path (behind it), dropped the rotation and retired its key a grace later, without the path the
    # rotation had written: nothing read it again, and the key the moved path holds was revoked (never-revoke-live,
    # seed 106995, the first sweep of seeds 100,000-149,999). The dropped rotation's key keeps the paths it wrote.
    (F207, "webhook", [("tick", "r1", ()), ("pause", "r0", 0, 3600.0, "cli"), ("edit", "path"), ("state", "older"),
                       ("rotate", False, (CallFault(8, "crash_after"),)), ("edit", "delete")], None, 106995),
    # A record blocked on a live path it may not overwrite ("run `rotator adopt NAME`"); a `rotate` then failed
    # transiently (a 429) before starting. The record stayed blocked, but its error became "rate limited": the
    # operator was never told to adopt, and the key the path's metadata names stayed (no-orphans, seed 149975).
    # A transient failure of a blocked record leaves the error that blocks it.
    (F208, "deploy_key", [("tick", "r1", ()), ("state", "lost"), ("edit", "rename"), ("foreign", "garbage"),
                          ("tick", "r1", ()), ("rotate", False, (CallFault(2, "429", retry_after=300),))], None, 149975),
    # A `rotate` crashed after stashing the key it made, before the record named it (`issuing`); `adopt` then
    # took that key for one the record forgot and put it on a grace. Each resumed issue minted again, found the
    # stash entry holding a key the record names, took it for another process's and stopped (revoking its own
    # new key): a mint and a revoke every few minutes, for ever, and the retirements behind it never ran
    # (no-orphans, seed 128302). A key of the rotation in flight is that rotation's, not a forgotten one.
    (F209, "webhook", [("pause", "r1", 1, 900.0, "r0"), ("rotate", False, ()), ("foreign", "restore"), ("rotate", True, ()),
                       ("rotate", False, (CallFault(3, "crash_after"),)), ("advance", 400)], None, 128302),
    # A renamed file's first rotation onto its moved path was blocked by AWS's 2-key limit, in `issuing` (its
    # failed issue is swept before the next). `rotate --revoke-now` resumed it, minted and crashed: the record was
    # still `issuing` and blocked, so nothing swept, and the crashed mint's key stayed for good (no-orphans,
    # seed 122265). A rotation whose mint may have happened is swept, blocked or not.
    (F210, "aws", [("tick", "r0", ()), ("rotate", True, (CallFault(18, "crash"),)), ("edit", "rename"), ("edit", "path"),
                   ("advance", 86400), ("tick", "r1", ()), ("rotate", True, (CallFault(25, "crash_after"),))], None, 122265),
    # F209's first form, in `forgotten_keys` for every look: a record restored to a rotation in `issuing` whose key
    # a later rotation had superseded caught up with the live path, which drops that rotation, and left its key
    # for no one until a later look, 6 h on (no-orphans, seeds 154044, 150072, 162274, 180912 of the sweep of
    # 150,000-199,999). Only `adopt` leaves a rotation pending, so only adopt leaves its keys to it.
    (F209, "stripe_key", [("tick", "r1", ()), ("rotate", False, ()), ("rotate", False, ()), ("state", "older"),
                          ("edit", "delete")], None, 154044),
    # A simulation defect: a removed file's record restored behind its live path caught up with it when its next
    # retirement fell due, 6 h on, and retired the key it had as current a full grace from then (it cannot know
    # when that key was superseded). Quiescence ended first: it ran past such a grace only for keys no promotion
    # had superseded, and the restore made the record forget the one that had (no-orphans, seed 190600 of the
    # sweep of 150,000-199,999; fails on 8365e31 too).
    (F211, "stripe_key", [("tick", "r1", (CallFault(8, "429", retry_after=1),)), ("tick", "r1", ()), ("rotate", False, ()),
                          ("state", "older"), ("advance", 30), ("advance", 400), ("tick", "r0", ()),
                          ("rotate", True, (CallFault(19, "crash"),)), ("state", "older"), ("edit", "delete")], None, 190600),
    # A simulation defect: a skew step moved the clock of a host whose process had measured a grace on it, and
    # that process, reading its own measurement on its own (now stepped) clock, revoked 59 s early by true time.
    # Within one boot the allowance never applies, and a clock stepped under a running grace is outside the
    # promise (docs/CONTRACT-NOTES.md): a skew step now sets a host's clock anew, as a reboot does (grace, seed
    # 206823 of the sweep of 150,000-249,999; fails on 8365e31 too).
    (F212, "webhook", [("pause", "r0", 8, 3600.0, "cli"), ("edit", "path"), ("advance", 30), ("edit", "rename"),
                       ("tick", "r0", ()), ("advance", 120), ("state", "lost"), ("tick", "r0", ()),
                       ("skew", "r0", 60.0)], None, 206823),
    # A rename's first rotation crashed between its live write and the metadata merge; `vault.path` then moved
    # and the record was restored to before the mint. Resumed by `rotate --revoke-now`, nothing took the data
    # at the old path (the rotation's own stashed key) for a write that landed: the metadata named another
    # rotation, and only the file's path was compared with the stash. The issue minted again and wrote over the
    # stash entry, the key's last trace, and left it working for ever (revoke-now-honoured, then no-orphans;
    # seed 217796 of the sweep of 150,000-249,999; fails on 8365e31 too).
    (F213, "webhook", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r0", (CallFault(13, "crash"),)), ("edit", "path"),
                       ("state", "older"), ("advance", 86400), ("rotate", True, ())], None, 217796),
    # The revive of a soft-deleted record undid the delete, then its read back met a 429, and it took that for
    # an undelete it may not make: it wrote the version before over the one it had just undeleted. The rotation
    # in flight fell back from `issuing` (whose sweep revokes its unmarked key) to `intent`; its issue replaced
    # the issuing note that alone proved the key the rotator's, and with the record lost next nothing named it
    # (no-orphans, seed 219529 of the sweep of 150,000-249,999; fails on 8365e31 too).
    (F214, "aws", [("tick", "r0", ()), ("edit", "rename"), ("tick", "r1", (CallFault(10, "crash_after"),)), ("advance", 1200),
                   ("state", "soft"), ("tick", "r0", (CallFault(3, "429", retry_after=20), CallFault(24, "crash"))),
                   ("state", "lost")], None, 219529),
    # A replica stalled an hour inside its mint; `rotate --revoke-now` took the rotation over, met the path
    # written by hand and rolled back; the stalled replica's stash write then took the entry (the record no longer
    # named its key). The record restored to the rollback found the entry holding that other key: hydrating it
    # failed as a Vault failure, with no backoff, on every tick, and nothing behind it (a retirement) ran
    # (no-orphans, seed 243360 of the sweep of 150,000-249,999; fails on 8365e31 too).
    (F215, "webhook", [("rotate", False, ()), ("edit", "rename"), ("tick", "r1", ()), ("foreign", "garbage"), ("advance", 86400),
                       ("tick", "r0", (CallFault(6, "429", retry_after=1),)), ("pause", "r1", 2, 3600.0, "cli"),
                       ("rotate", True, ()), ("state", "older")], None, 243360),
    # A record restored to before a rotation at its old path rotated on at the path `vault.path` had moved to; a
    # `rotate --revoke-now` then left a rotation pending (a lost answer) and the file was renamed. Undoing that
    # rotation, the old name's record found the old path naming a rotation it did not know, took itself for
    # behind it, took that path's key back as current and revoked, at once, the key live at the new path: that
    # rotation came before the record's own last promotion (never-revoke-live, seed 283790 of the sweep of
    # 250,000-299,999; fails on 8365e31 too).
    (F216, "installation_token", [("tick", "r0", ()), ("rotate", False, ()), ("edit", "path"), ("advance", 25200), ("state", "older"),
                                  ("tick", "r1", ()), ("rotate", True, (CallFault(4, "lost"),)), ("edit", "rename")], None, 283790),
    # A lost record rebuilt over a live path written by hand put its key on a grace with no successor live yet
    # (F196: timed again at the next promotion), which came 8 h in. Restored to before it, the record resumed
    # its rotation; the catch-up's read was lost, the sweep failed, and the retirement that runs whatever the
    # rotation's state revoked the key by the old time, 3 h into the grace its successor's promotion began
    # (grace, seed 268563 of the sweep of 250,000-299,999; fails on 8365e31 too).
    (F217, "stripe_key", [("pause", "r0", 6, 421.0, "r1"), ("foreign", "garbage"), ("state", "lost"), ("tick", "r1", (CallFault(8, "crash"),)),
                          ("advance", 25200), ("pause", "r1", 5, 3600.0, "r0"), ("state", "older"), ("advance", 10800),
                          ("tick", "r1", (CallFault(23, "lost"),))], None, 268563),
    # F217's first form: a rolled-back rotation's key, its data written over by hand, waited for a successor;
    # `adopt` accepted the hand-written data (no key) and wrote `rotator-rotated-at`, which the retirement took
    # for the successor's promotion, so the real one an hour later no longer timed the grace: revoked 5 h into
    # it (grace, seed 295343 of the re-sweep of 250,000-299,999 at 94c8b74; passes on 8e007ca).
    (F218, "stripe_key", [("tick", "r0", ()), ("state", "older"), ("tick", "r0", (CallFault(6, "lost"), CallFault(29, "crash"))),
                          ("foreign", "garbage"), ("advance", 86400), ("tick", "r1", ()), ("advance", 3600), ("advance", 3600),
                          ("advance", 10800)], None, 295343),
    # A rotation went live at a moved `vault.path`, and a `rotate` superseded its key; the record was restored to
    # before its mint (`issuing`), then the file renamed, and the new file's record took the path on. Resumed,
    # the removed file's rotation was undone and its sweep revoked the key as one the rotation made but never
    # recorded, 7 min into its 6 h grace, though the versions the restore undid had it current, then retiring
    # (grace, seed 300275 of the sweep of 300,000-349,999).
    (F219, "webhook", [("tick", "r1", ()), ("edit", "path"), ("advance", 86400), ("tick", "r1", ()), ("rotate", False, ()),
                       ("state", "older"), ("tick", "r1", (CallFault(21, "crash_after"),)), ("edit", "rename")], None, 300275),
    # A simulation defect: a key whose retire was refused (the live path, restored by hand, named it) waited
    # for its retry, 30 s on; adopt and the next promotion then timed its grace anew, 6 h on. Quiescence woke at
    # the retry time alone, which had passed, not at the later of the two as the machine does, and stopped
    # before the grace ended (no-orphans, seed 360490 of the sweep of 350,000-399,999 at 3ad558d).
    (F220, "webhook", [("tick", "r1", ()), ("advance", 86400), ("tick", "r1", (CallFault(4, "crash_after"),)), ("advance", 400),
                       ("tick", "r1", (CallFault(18, "lost"),)), ("tick", "r1", (CallFault(23, "crash_after"),)),
                       ("foreign", "restore"), ("advance", 10800), ("edit", "flap"), ("advance", 86400), ("tick", "r1", ()),
                       ("foreign", "restore")], None, 360490),
    # `rotate --revoke-now` went live at a moved `vault.path`, a `rotate` superseded its key; the record was
    # restored to the revoke-now rotation's `issuing` and the file renamed. Undoing that rotation, the removed
    # file's record retired the keys the undone versions named at once, as its request asked, the later
    # rotation's key too, 0 s into its grace: the request was for the keys before it (grace, seed 379710 of
    # the sweep of 350,000-399,999 at e3356c8).
    (F221, "deploy_key", [("tick", "r1", ()), ("edit", "path"), ("rotate", True, ()), ("rotate", False, (CallFault(2, "429", 90),)),
                          ("state", "older"), ("edit", "rename")], None, 379710),
    # The same on Stripe keys, the path moved while a replica stalled (seed 425738 of the sweep of 400,000-449,999).
    (F221, "stripe_key", [("tick", "r1", ()), ("pause", "r0", 0, 900.0, "cli"), ("edit", "path"), ("rotate", False, ()),
                          ("state", "older"), ("edit", "rename")], None, 425738),
    # A rotation refused a live path written by hand and crashed rolling back; `vault.path` then moved. The
    # rollback, finished under the edited file, blocked the credential with the edited file's fingerprint, for
    # a failure at the path it had left: nothing rotated again (adopt finds the new path empty), and the key of
    # the rotation a restore of the record had undone stayed (no-orphans, seed 399261 of the sweep of
    # 350,000-399,999 at e3356c8).
    (F222, "webhook", [("rotate", True, ()), ("rotate", False, ()), ("edit", "rename"), ("tick", "r1", ()),
                       ("rotate", True, (CallFault(16, "fail"),)), ("foreign", "garbage"), ("state", "older"),
                       ("rotate", False, (CallFault(16, "crash"),)), ("edit", "path")], None, 399261),
    # A renamed file's first rotation at a moved `vault.path` was blocked by AWS's 2-key limit: the old
    # name's live key at the path it left (left alone, §6.9) and its rotation in flight (undone in the same
    # pass). `rotate` then rotated it (a request passes a block); the record was restored to the blocked version
    # and the live path written over by hand. Blocked, the record did nothing until its file changed or someone
    # ran `rotator rotate` (as `plan` says), so the key its rotation made, live no more, stayed (no-orphans,
    # seed 368313 of the sweep of 350,000-399,999 at e3356c8; fails on 8365e31 too). Fixed in session 14: a
    # blocked record is looked at every LOOK_AGAIN (rotator.engine.fileless.blocked_since).
    (F223, "aws", [("rotate", False, ()), ("edit", "path"), ("rotate", True, (CallFault(15, "crash_after"),)), ("edit", "rename"),
                   ("advance", 10800), ("tick", "r1", ()), ("rotate", False, ()), ("state", "older"), ("foreign", "garbage")],
     None, 368313),
    # A rotation wrote its key live at a moved `vault.path` and crashed before the metadata merge; the record
    # was restored to before it and the path moved again. The key at the path the file left, its metadata
    # never written, counted as held live: neither the restore's look nor the after-promotion look retired
    # it, and `rotate --revoke-now` left it working for good (revoke-now-honoured, seed 4824 of a sweep of
    # the state, crash, lost, rename, path and revoke-now faults alone, seeds 0-19,999; fails on d47b2a0 and 8365e31).
    (F224, "stripe_key", [("tick", "r0", ()), ("state", "soft"), ("advance", 86400), ("edit", "path"),
                          ("tick", "r0", (CallFault(13, "crash"),)), ("state", "older"), ("edit", "path"), ("rotate", True, ())],
     None, 4824),
    # A simulation defect: a lost record rebuilt over a moved `vault.path` put the key live at the path the
    # file had left on a grace from then; the file was then renamed and moved again before any process looked,
    # a removed file and a new one as far as the rotator can tell (§6.9, F47). The new file's first write was
    # taken for that key's successor, so its revocation on the removed file's schedule, 3 h later, broke
    # "grace" (seed 484181 of the sweep of 450,000-499,999 at 05fff2d; fails on 8365e31 too).
    (F225, "aws", [("tick", "r1", ()), ("edit", "path"), ("state", "lost"), ("tick", "r0", (CallFault(8, "fail"),)),
                   ("edit", "rename"), ("edit", "path"), ("advance", 10800)], None, 484181),
    # A `rotate --revoke-now` (key 1002 live at the first path), `vault.path` moved, the record restored to before
    # that rotation, a second `--revoke-now` that crashed after its live write at the new path, the file renamed
    # (same path), a replica finishing the old name's rotation (a removed file's record: every path counts, so
    # 1002 stays), and a third `--revoke-now` of the new name, which takes the old record over: its look after
    # the promotion found 1002 by the old name's mark and kept it, the old path's metadata naming the old name,
    # not this one, so that path passed for another credential's (revoke-now-honoured, seed 529737 of the sweep
    # of 500,000-599,999 at 0f26a99; fails on 7e49ad6 too, before the F223 fix).
    (F226, "deploy_key", [("tick", "r0", ()), ("rotate", True, ()), ("edit", "path"), ("state", "older"),
                          ("rotate", True, (CallFault(29, "crash_after"),)), ("advance", 25200), ("edit", "rename"),
                          ("tick", "r0", ()), ("pause", "r1", 0, 3600.0, "cli")], None, 529737),
    # A file renamed (app -> app-r1, whose rotation took app's record over and wrote the path), the rename
    # undone (the simulation's undo: the second rename at step 3), the old path written over with an older
    # version by hand, `vault.path` moved, then `rotate app --revoke-now`. app's record said moved_to app-r1,
    # a name with no file whose record holds app's first key (superseded) at the old path; app's baseline at
    # the new, empty path took nothing over, and its look kept that key, live at a path whose metadata names
    # app-r1 (revoke-now-honoured, seed 15944 of the first sweep with renames undone, at e1db82b).
    (F227, "deploy_key", [("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", ()), ("edit", "rename"),
                          ("foreign", "restore"), ("edit", "path"), ("rotate", True, ())], None, 15944),
    # Renamed (app -> app-r1, whose rotation took app's record over, wrote the path and left app's key 1002
    # in its grace), the rename undone, then app's record restored to a version with its first rotation
    # pending (before the rename). app resumed that rotation: the live path's metadata names app-r1, a name
    # with no file, so the record was not seen behind it; the resumed mint's retry-safe create deleted
    # "its" key 1002 inside its grace (grace, seed 21746 of the sweep of 0-99,999 at f1d6b19; 23 of that
    # sweep family's 32 violations had this cause). The replays are whole: a rename undone is tied to its
    # step's index, so the shrinker cannot drop steps before it.
    (F228, "deploy_key", [("advance", 400), ("state", "older"), ("tick", "r1", (CallFault(7, "crash_after"),)), ("state", "soft"),
                          ("foreign", "restore"), ("advance", 5), ("tick", "r1", ()), ("tick", "r0", ()), ("tick", "r1", ()),
                          ("edit", "flap"), ("advance", 1200), ("tick", "r1", ()), ("advance", 25200), ("tick", "r1", ()),
                          ("tick", "r0", ()), ("tick", "r1", ()), ("pause", "r1", 5, 3600.0, "cli"), ("edit", "rename"),
                          ("tick", "r1", ()), ("advance", 400), ("tick", "r1", ()), ("edit", "rename"), ("state", "older")],
     None, 21746),
    # Renamed twice (app -> app-r1 -> app-r2), the second undone (app-r1 takes app-r2's record over, app-r2
    # marked moved_to app-r1), a `rotate --revoke-now` crashed, then app-r1's record restored to a version from
    # before: the live path's metadata names app-r2, whose record handed its keys back; app-r1 resumed its old
    # rotation, its stash entry naming a key the restored record knew, and lost its lease on every pass,
    # minting and revoking a webhook endpoint each time (settles, seed 49236 of the same sweep).
    (F229, "webhook", [("pause", "r1", 0, 3600.0, "cli"), ("edit", "rename"), ("tick", "r1", ()), ("tick", "r1", ()),
                       ("advance", 30), ("tick", "r1", ()), ("tick", "r0", ()), ("tick", "r0", ()), ("advance", 86400),
                       ("pause", "r1", 10, 900.0, "r0"), ("tick", "r1", ()), ("edit", "rename"), ("tick", "r0", ()),
                       ("tick", "r0", ()), ("tick", "r1", ()), ("tick", "r0", ()), ("advance", 120), ("tick", "r0", ()),
                       ("edit", "rename"), ("rotate", True, (CallFault(9, "crash"),)), ("state", "older")], None, 49236),
    # The simulation's oracle, not the engine: renamed and moved at once (app -> app-r1, a removed file and a
    # new one, §6.9), renamed back (app, at app-r1's path, never reconciled), renamed again (app-r3, which took
    # app-r1's record over), then `rotate app-r3 --revoke-now`. The lineage counted app's keys as app-r3's
    # because some record (app-r1's) said moved_to app-r3, not app's: app's live key at the path it left was
    # a target (revoke-now-honoured, seed 187655 of the same sweep; 5 of its 32 violations).
    (F230, "webhook", [("advance", 1200), ("tick", "r1", ()), ("tick", "r1", ()), ("state", "older"), ("advance", 3600),
                       ("state", "older"), ("tick", "r0", ()), ("edit", "rename"), ("edit", "path"), ("pause", "r0", 5, 3600.0, "cli"),
                       ("tick", "r0", ()), ("skew", "r0", 60.0), ("edit", "rename"), ("pause", "r1", 7, 421.0, "r0"), ("edit", "rename"),
                       ("pause", "r1", 0, 3600.0, "cli")], None, 187655),
    # Renamed (app -> app-r1, which wrote the path), app-r1's record restored to a version with the rotation
    # that wrote the path's version still pending, the rename undone, then app's record restored too. The path's
    # metadata names app-r1, whose record does not know that version, so F228's take-over did not apply and app
    # resumed its own old rotation, whose retry-safe create removed a key in its grace in app-r1's record
    # (grace, seed 558297 of the sweep of 500,000-599,999 at f1d6b19; seed 64583, never-revoke-live, too).
    (F231, "deploy_key", [("tick", "r0", ()), ("rotate", False, ()), ("advance", 25200), ("advance", 400), ("tick", "r1", ()),
                          ("tick", "r0", ()), ("advance", 120), ("advance", 30), ("advance", 30), ("advance", 10800), ("tick", "r0", ()),
                          ("rotate", False, ()), ("tick", "r1", ()), ("advance", 5), ("advance", 10800), ("tick", "r1", ()), ("tick", "r1", ()),
                          ("pause", "r1", 11, 421.0, "r0"), ("advance", 25200), ("tick", "r0", ()), ("skew", "r1", 60.0), ("advance", 5),
                          ("advance", 1200), ("tick", "r0", ()), ("tick", "r1", ()), ("edit", "rename"), ("tick", "r1", ()), ("tick", "r0", ()),
                          ("state", "older"), ("advance", 5), ("edit", "rename"), ("state", "older")], None, 558297),
    # A record restored to a version with a rotation pending whose stash entry holds a key the record has found
    # again at the provider since (retiring, `recovered`, no stash of its own), the path written over by hand:
    # each pass of the resumed rotation minted a key, then its stash write refused ("the record names" the held
    # key: taken for another process's re-issue, sim F20) and lost the lease; the next pass swept the key and
    # minted again, for ever (settles, seed 68500 of the sweep of 0-99,999 at f1d6b19).
    (F232, "stripe_key", [("tick", "r0", ()), ("advance", 10800), ("advance", 86400), ("tick", "r0", (CallFault(9, "crash_after"),)),
                          ("tick", "r0", ()), ("advance", 10800), ("tick", "r0", ()), ("tick", "r0", ()), ("tick", "r0", ()), ("tick", "r0", ()),
                          ("state", "soft"), ("pause", "r0", 7, 421.0, "cli"), ("tick", "r0", ()), ("tick", "r1", ()), ("tick", "r1", ()),
                          ("tick", "r1", ()), ("edit", "rename"), ("rotate", False, ()), ("rotate", False, ()), ("tick", "r1", ()),
                          ("foreign", "garbage"), ("tick", "r1", ()), ("pause", "r1", 11, 421.0, "r0"), ("tick", "r0", ()), ("tick", "r0", ()),
                          ("rotate", True, (CallFault(15, "fail"),)), ("foreign", "garbage"), ("edit", "rename"), ("state", "older")],
     None, 68500),
]
OPEN_FINDINGS: set[str] = set()
# Cases of an open finding that no longer reproduce.
FIXED_CASES: set[tuple[str, str]] = set()


def _finding_cases() -> Iterator[object]:
    for name, kind, steps, *rest in FINDINGS:
        only, seed = (*rest, None, 0)[:2]  # optional: the invariants checked, the seed of the retry jitter
        is_open = name in OPEN_FINDINGS and (name, kind) not in FIXED_CASES
        marks = [pytest.mark.xfail(strict=True, reason=f"known-open finding {name}")] if is_open else []
        yield pytest.param(kind, steps, only, seed, marks=marks, id=f"{name.split()[0]}-{name.split()[1]}-{kind}")


@pytest.mark.parametrize(("kind", "steps", "only", "seed"), list(_finding_cases()))
def test_finding(kind: str, steps: list[tuple[object, ...]], only: tuple[str, ...] | None, seed: int) -> None:
    """Each schedule the simulation once failed on now keeps every invariant (or the ones named)."""
    result = replay(kind, steps, seed=seed)
    broken = [v for v in result.violations if only is None or v.invariant in only]
    assert not broken, "\n".join(str(v) for v in broken)


def test_schedule_text_replays() -> None:
    """A printed replay is Python that runs the same schedule."""
    schedule = Schedule("webhook", (("tick", "r0", (CallFault(2, "429", 20.0),)), ("advance", 60)), 5)
    text = schedule.replay_text()
    again = eval(text, {"replay": lambda kind, steps, seed: Schedule(kind, tuple(steps), seed), "CallFault": CallFault})  # noqa: S307
    assert again == schedule


def test_keys_nothing_names_any_more_are_counted_not_hidden() -> None:
    """A credential's file removed and its state record deleted with every version: nothing the rotator reads
    names it, and its provider params were only there. Its superseded key is excused from no-orphans, and counted
    in `world.unrecoverable`; with the record kept (only the file removed), the same key must be revoked."""
    steps = [("tick", "r0", ()), ("rotate", False, ()), ("state", "lost"), ("advance", 25200), ("edit", "delete")]
    world = World("stripe_key")
    for index, step in enumerate(steps):
        world.step_index = index
        explorer.apply_step(world, step)
    explorer.quiesce(world)
    assert world.violations == [] and len(world.unrecoverable) == 1
    kept = World("stripe_key")
    for index, step in enumerate([s for s in steps if s[0] != "state"]):
        kept.step_index = index
        explorer.apply_step(kept, step)
    explorer.quiesce(kept)
    assert kept.violations == [] and kept.unrecoverable == set()
    assert not any(kept.service.is_accepted(k) for k in world.unrecoverable if k in kept.service.keys)
    # A record lost before the file's rename: nothing links the new name to the old one's key (the live path was
    # never written, so its metadata names nobody), which is counted too.
    renamed = World("webhook")
    for index, step in enumerate([("tick", "r0", (CallFault(7, "lost"),)), ("state", "lost"), ("edit", "rename")]):
        renamed.step_index = index
        explorer.apply_step(renamed, step)
    explorer.quiesce(renamed)
    assert renamed.violations == [] and len(renamed.unrecoverable) == 1

