"""The engine and the daemon's pass, in process, with an injected clock:
grace, backoff and due times are fast-forwarded, never slept through.
Vault is the real OpenBao and AWS the real moto server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import write_credential
from rotator_providers.aws_iam import AwsIamAccessKeyProvider
from rotator.audit import events as audit
from rotator.wiring import App, load_credentials
from rotator.core.clock import FakeClock
from rotator.config.spec import LoadedCredential
from rotator.daemon.loop import Daemon
from rotator.engine.reconcile import Engine
from rotator.engine.results import EngineOptions
from rotator.core.errors import TransientError
from rotator.core.provider import IssuedCredential
from rotator.config.settings import Settings
from rotator.testing.leaks import assert_no_leaks
from rotator.vault.store import VaultStore


class EventLog:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        audit.configure(fmt="json", stream=self.stream)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def world(openbao, aws_env, iam_user, iam_admin, config_dir: Path, unique: str, events: EventLog):  # type: ignore[no-untyped-def]
    # Real time as the start: moto stamps a key's last use with the real
    # time, and a fake clock months behind would read the rotator's own
    # verification of a key as a use after its successor went live.
    clock = FakeClock(datetime.now(UTC))
    settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=openbao.addr, vault_token=openbao.token, tick_seconds=10)
    store = VaultStore(settings.vault_connection())
    engine = Engine(store, options=EngineOptions(state_prefix=settings.state_prefix), clock=clock)
    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "1d"}, every="30d", grace="1h")
    app = App(settings, store, engine)

    class World:
        pass

    w = World()
    w.clock, w.app, w.engine, w.store, w.user, w.iam = clock, app, engine, store, iam_user, iam_admin  # type: ignore[attr-defined]
    w.cred = load_credentials(settings).credentials[iam_user]  # type: ignore[attr-defined]
    w.keys = lambda: {k["AccessKeyId"]: k["Status"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}  # type: ignore[attr-defined]
    w.live = lambda: store.read("secret", f"apps/{iam_user}")  # type: ignore[attr-defined]
    yield w
    engine.close()


def test_grace_then_deactivation_then_deletion_follow_the_clock(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """The old key is active through grace, inactive for the delay, then deleted."""
    w = world
    assert w.engine.reconcile(w.cred).status == "completed"
    first = w.live().data["access_key_id"]
    w.clock.advance(timedelta(days=30))
    assert w.engine.reconcile(w.cred).status == "completed"
    second = w.live().data["access_key_id"]
    assert w.keys() == {first: "Active", second: "Active"}
    w.clock.advance(timedelta(minutes=59))
    assert w.engine.reconcile(w.cred).status == "idle"
    w.clock.advance(timedelta(minutes=1))
    w.engine.reconcile(w.cred)
    assert w.keys() == {first: "Inactive", second: "Active"}
    w.clock.advance(timedelta(hours=23))
    assert w.engine.reconcile(w.cred).status == "idle"
    w.clock.advance(timedelta(hours=1))
    w.engine.reconcile(w.cred)
    assert w.keys() == {second: "Active"}
    assert events.names().count("credential.deactivated") == 1 and events.names().count("credential.revoked") == 1


class FailingVerify(AwsIamAccessKeyProvider):
    """The real AWS provider, except that no new key ever verifies."""

    def verify(self, credential: IssuedCredential) -> None:
        raise TransientError("STS does not accept the key (injected)")


def test_a_key_that_fails_verification_is_rolled_back(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """Rollback revokes the new key, leaves the live path alone and backs off."""
    w = world
    assert w.engine.reconcile(w.cred).status == "completed"
    live_before = w.live()
    failing = LoadedCredential(w.cred.spec, FailingVerify, w.cred.params)
    events.clear()
    w.clock.advance(timedelta(days=31))
    result = w.engine.reconcile(failing)
    assert result.status == "failed"
    names = events.names()
    assert "rotation.rolled_back" in names and names.index("rotation.rolled_back") < names.index("rotation.failed")
    failed = next(e for e in events.events() if e["event"] == "rotation.failed")
    assert failed["step"] == "verify" and failed["will_retry"] is True and failed["next_attempt_at"]
    assert w.live() == live_before
    assert set(w.keys()) == {live_before.data["access_key_id"]}, "the unverified key must be deleted"
    assert result.record.attempts == 1 and result.record.pending is None
    assert w.engine.reconcile(failing).status == "idle", "backing off"


def test_an_aws_outage_is_retried_across_ticks(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """An outage at the start backs off across ticks, then the rotation succeeds; nothing is left over."""
    w = world
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = w.engine.reconcile(w.cred)
    assert result.status == "failed" and result.record.attempts == 1
    failed = next(e for e in events.events() if e["event"] == "rotation.failed")
    # The first call to AWS is the start's search for keys a lost record forgot (rotator/engine/baseline.py).
    assert failed["step"] == "start" and failed["will_retry"] is True
    monkeypatch.undo()
    w.engine.close()  # drop the provider that cached the unreachable endpoint
    assert w.engine.reconcile(w.cred).status == "idle", "backing off"
    w.clock.advance(timedelta(seconds=31))
    assert w.engine.reconcile(w.cred).status == "completed"
    assert list(w.keys()) == [w.live().data["access_key_id"]]


def make_daemon(world) -> Daemon:  # type: ignore[no-untyped-def]
    daemon = Daemon(world.app)
    daemon.load()
    return daemon


def test_a_missed_due_time_rotates_once_and_restarts_neither_skip_nor_repeat(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """Down for months: one rotation on start; a restart right after does nothing."""
    w = world
    daemon = make_daemon(w)
    assert daemon.run_pass().completed == 1
    w.clock.advance(timedelta(days=95))  # three periods missed
    assert daemon.run_pass().completed == 1
    assert daemon.run_pass().completed == 0
    daemon.close()
    restarted = make_daemon(w)  # a new process: nothing in memory
    assert restarted.run_pass().completed == 0
    w.clock.advance(timedelta(days=30))
    assert restarted.run_pass().completed == 1
    restarted.close()
    assert events.names().count("rotation.completed") == 3


def test_an_idle_tick_makes_no_vault_request(world) -> None:  # type: ignore[no-untyped-def]
    """Once due times are known, ticks with nothing due cost no Vault request."""
    w = world
    daemon = make_daemon(w)
    daemon.run_pass()
    before = w.store.requests_made
    for _ in range(20):
        w.clock.advance(timedelta(seconds=10))
        daemon.run_pass()
    assert w.store.requests_made == before
    w.clock.advance(timedelta(days=30))
    assert daemon.run_pass().completed == 1
    daemon.close()


def test_in_process_output_holds_no_secret(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """Events of a rotation and a revocation never contain the keys' secrets."""
    w = world
    w.engine.reconcile(w.cred)
    first = w.live().data
    w.clock.advance(timedelta(days=30))
    w.engine.reconcile(w.cred)
    w.clock.advance(timedelta(days=2))
    w.engine.reconcile(w.cred)
    secrets = [first["secret_access_key"], w.live().data["secret_access_key"]]
    assert_no_leaks(events.stream.getvalue(), secrets, where="the event stream")


class BuggyIssue(AwsIamAccessKeyProvider):
    """A provider whose issue() has a bug that raises a non-project error quoting a value."""

    def issue(self, ctx):  # type: ignore[no-untyped-def]
        raise KeyError("sk_live_" + "x" * 24)


def test_a_provider_bug_is_a_failed_step_that_releases_the_lease_and_quotes_nothing(world, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """An unexpected exception in a plugin is reported by type only, and the lease is released."""
    w = world
    buggy = LoadedCredential(w.cred.spec, BuggyIssue, w.cred.params)
    result = w.engine.reconcile(buggy)
    assert result.status == "failed"
    failed = next(e for e in events.events() if e["event"] == "rotation.failed")
    assert failed["step"] == "issue" and "KeyError" in failed["error"] and "sk_live_" not in events.stream.getvalue()
    record, _ = w.engine.read_record(w.cred.spec.name)
    # The failed issue is swept at once (it may have minted, sim F210); the block then holds it in `intent`.
    assert record.lease is None and record.pending is not None and record.pending.phase == "intent"
    assert record.blocked_fingerprint is not None and record.last_error_step == "issue"
