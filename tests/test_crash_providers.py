"""Crash safety (contract §6.4) for the GitHub and Stripe providers: the CLI
is killed with SIGKILL at every step boundary; after a restart pass the
world has converged to guarantees 1-3, with no orphaned rotator-made
credential left at the fake (apart from the one documented exception: an
installation token minted just before the crash, which cannot be listed and
dies within its hour).

To keep the matrix affordable, each provider kind runs one batch: one
credential per crash point, all in one config directory (each with its own
GitHub App and repository, or its own Stripe account). One `run --once`
brings all of them under management; then, one by one, `rotate NAME
--revoke-now` is killed at that credential's point; then one `run --once`
restarts them all at once, as a daemon restarted after a crash would. Each
(kind, point) is then its own test of what that credential's world looks
like. The crashed rotations ask for --revoke-now, so the one restart pass
also revokes the old credential, which proves the urgency of an
incident-response rotation survives the crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from helpers import names
from provider_worlds import (  # noqa: F401 - fixtures
    DEPLOY_KEY,
    KINDS,
    STRIPE_KEY,
    TOKEN,
    WEBHOOK,
    ProviderLedger,
    ProviderWorld,
    ShiftableClock,
    TokenWorld,
    build_world,
    fake_github,
    fake_stripe,
    github_clock,
    rotator_env_for,
)
from rotator.core.crashpoints import crash_env

POINTS = [
    "after-intent",
    "after-issuing-marker",
    "after-issue",  # minted, not stashed
    "after-stash-entry",  # stashed, not recorded: found from the stash, even an installation token
    "after-stash",  # stashed and logged, not yet recorded (the record names it with the verification's outcome): swept too
    "after-verify",
    "after-live-write",  # live written, metadata not yet
    "after-metadata",
    "after-promote",
    "after-revoke-call",  # the provider revoked the old one; the record does not know
    "after-revoke",
]
# Points where the restart finds no rotation in progress.
AFTER_ROTATION = {"after-promote", "after-revoke-call", "after-revoke"}


@dataclass
class CrashBatch:
    """One kind's worlds (one per point) and what each crash and the restart did."""

    kind: str
    worlds: dict[str, ProviderWorld]
    ledger: ProviderLedger
    old: dict[str, dict[str, str]] = field(default_factory=dict)
    crash_codes: dict[str, int] = field(default_factory=dict)
    # At the crash: does the live credential work, how many rotator-made ones exist, is the old one rejected.
    during: dict[str, tuple[bool, int, bool]] = field(default_factory=dict)
    setup_code: int | None = None
    restart_code: int | None = None
    restart_events: list[dict[str, Any]] = field(default_factory=list)


def run_batch(kind: str, *, openbao: Any, base: Path, github: Any, stripe_fake: Any) -> CrashBatch:
    """Set up one world per point, bring all under management, crash each at its point, restart once."""
    config_dir = base / kind
    vault_env = {
        "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.token, "ROTATOR_STATE_MOUNT": "secret",
        "ROTATOR_STATE_PREFIX": f"rotator-test/crash-{uuid.uuid4().hex[:8]}", "ROTATOR_LOG_FORMAT": "json",
    }
    env = rotator_env_for(vault_env, config_dir)
    bao = hvac.Client(url=openbao.addr, token=openbao.token)
    ledger = ProviderLedger()
    worlds = {
        point: build_world(kind, bao=bao, env=env, config_dir=config_dir, unique=uuid.uuid4().hex[:8],
                           github=github, stripe_fake=stripe_fake, ledger=ledger)
        for point in POINTS
    }
    batch = CrashBatch(kind, worlds, ledger)
    any_world = next(iter(worlds.values()))
    batch.setup_code, _ = any_world.cli("run", "--once")
    for point, w in worlds.items():
        old, _ = w.live()
        if old is None:
            continue  # the setup pass failed for it; its test reports that
        batch.old[point] = old
        batch.crash_codes[point], _ = w.cli("rotate", w.name, "--revoke-now", extra_env=crash_env(point))
        during, _ = w.live()
        batch.during[point] = (during is not None and w.works(during), len(w.rotator_keys()), w.is_rejected(old))
    batch.restart_code, batch.restart_events = any_world.cli("run", "--once")
    shared = [run for w in worlds.values() for run in w.runs]
    for w in worlds.values():  # each world's all_events() picks its own from every run
        w.runs = shared
    return batch


@pytest.fixture(scope="module")
def crash_batches(
    request: pytest.FixtureRequest, openbao: Any, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, CrashBatch]]:
    """Each kind's batch, run the first time a test asks for it; output scanned for secrets at the end."""
    base = tmp_path_factory.mktemp("crash")
    batches: dict[str, CrashBatch] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, kind: str) -> CrashBatch:
            github = request.getfixturevalue("fake_github") if kind in (TOKEN, DEPLOY_KEY) else None
            stripe_fake = request.getfixturevalue("fake_stripe") if kind in (STRIPE_KEY, WEBHOOK) else None
            batch = run_batch(kind, openbao=openbao, base=base, github=github, stripe_fake=stripe_fake)
            batches[kind] = self[kind] = batch
            return batch

    yield Lazy()
    for batch in batches.values():
        batch.ledger.assert_clean()


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", KINDS)
def test_crash_converges(crash_batches: dict[str, CrashBatch], github_clock: ShiftableClock, kind: str, point: str) -> None:
    """Killed at this point of a revoke-now rotation, one restart pass finishes it, revokes the old credential and leaves no orphan."""
    batch = crash_batches[kind]
    w = batch.worlds[point]
    assert batch.setup_code == 0 and point in batch.old, "the first rotation (setup) must succeed"
    old = batch.old[point]
    assert batch.crash_codes[point] == -9, f"the process should have been killed at {point}"
    works, keys, old_rejected = batch.during[point]
    assert works, "guarantee 1 holds at the moment of the crash"
    assert keys <= 2, f"{keys} rotator-made credentials at the provider at the crash: at most the old and the new"
    if point in {"after-revoke-call", "after-revoke"}:
        assert old_rejected, "the provider had revoked the old credential when the process died"
    else:
        assert not old_rejected, "nothing revokes the old credential before the new one is live and recorded"
    events = [e for e in batch.restart_events if e.get("credential") == w.name]
    assert "rotation.failed" not in names(events), _failures(events)
    if point not in AFTER_ROTATION:
        assert [e["reason"] for e in events if e["event"] == "rotation.started"] == ["recovery"]
        assert "rotation.completed" in names(events)
    assert ("credential.revoked" in names(events)) == (point != "after-revoke"), "revoke-now survives the crash"
    if (point == "after-issue" and kind != TOKEN) or point in {"after-stash-entry", "after-stash"}:
        assert len([e for e in events if e["event"] == "orphan.revoked"]) == 1, "the credential minted before the crash is revoked"
    assert_converged(w, old=old, point=point, github_clock=github_clock)


@pytest.mark.parametrize("kind", KINDS)
def test_the_restart_pass_succeeds_for_every_crashed_credential(crash_batches: dict[str, CrashBatch], kind: str) -> None:
    """The one restart pass over all crashed credentials exits 0 and logs only JSON events, no secret."""
    batch = crash_batches[kind]
    batch.ledger.assert_clean()
    assert batch.restart_code == 0, _failures(batch.restart_events)


def assert_converged(w: ProviderWorld, *, old: dict[str, str], point: str, github_clock: ShiftableClock) -> None:
    data, meta = w.live()
    state = w.state()
    assert data is not None and w.works(data), "the live path must hold a working credential"
    assert state is not None and state["pending"] is None and state["retiring"] == []
    live_id = w.key_id(data)
    assert live_id != w.key_id(old)
    assert state["current"]["key_id"] == live_id == meta["custom_metadata"]["rotator-key-id"]
    assert meta["current_version"] == 2, "each completed rotation adds exactly one version"
    assert w.is_rejected(old), "the superseded credential must be rejected"
    assert w.is_foreign_intact(), "what the rotator did not make is never touched"
    events = w.all_events()
    issued = [e["key_id"] for e in events if e["event"] == "credential.issued" and not e.get("recovered")]
    # After "after-stash" the credential logged as issued before the crash was swept from its stash entry.
    swept = [e["key_id"] for e in events if e["event"] == "orphan.revoked"] if point == "after-stash" else []
    assert sorted(issued) == sorted([w.key_id(old), live_id, *swept]), f"credential.issued once per stashed credential: {_trace(events)}"
    recovered = {e["key_id"] for e in events if e["event"] == "credential.issued" and e.get("recovered")}
    assert recovered <= {live_id}, "a restart re-announces only the stashed credential"
    extra = w.rotator_keys() - {live_id}
    if isinstance(w, TokenWorld) and point == "after-issue":
        # Contract §6.4's exception: unlistable, it dies by itself within the hour.
        assert len(extra) == 1, f"exactly the token minted before the crash may remain, found {len(extra)}"
        (orphan,) = extra
        assert all(orphan != e.get("key_id") for e in events), "nothing was logged for the unstashed token"
        with github_clock.shifted(timedelta(hours=1, seconds=1)):
            assert orphan not in w.rotator_keys(), "the orphaned token must expire within the hour"
    else:
        assert not extra, f"{len(extra)} orphaned rotator-made credential(s) remain at the provider"
    lease = state["lease"]
    if lease is not None:  # left by a killed process: harmless once its holder is gone
        from rotator.core.holder import is_known_dead

        assert is_known_dead(host=lease["host"], boot_id=lease["boot_id"], pid_namespace=lease["pid_namespace"],
                             pid=lease["pid"], start_ticks=lease["start_ticks"])


def _failures(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Failed steps, by name only (an error text is product output, scanned for secrets elsewhere)."""
    return [(e.get("credential"), e["event"], e.get("step")) for e in events if e["level"] in ("error", "warning")]


def _trace(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["event"], e.get("key_id")) for e in events]
