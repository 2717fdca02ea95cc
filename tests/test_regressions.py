"""Regression tests for the defects of issue 10, each named after it.

The engine runs for real against the real OpenBao, with an in-process
provider (tests/fake_provider.py) whose calls can fail before or after
their effect, and an injected clock: nothing sleeps.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import pytest

from fake_provider import WORLDS, FakeParams, FakeProvider, KeyWorld
from rotator.audit import events as audit
from rotator.core import holder
from rotator.core.clock import FakeClock
from rotator.config.spec import CredentialSpec, LoadedCredential
from rotator.engine.reconcile import Engine
from rotator.engine.results import EngineOptions
from rotator.core.errors import TransientError
from rotator.core.actions import Request
from rotator.vault.store import VaultStore


class EventLog:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        audit.configure(fmt="json", stream=self.stream)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [e for e in out if name is None or e["event"] == name]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events()]


class FaultyStore(VaultStore):
    """The real store; named methods can be made to fail (a Vault 5xx)."""

    failing: dict[str, int]

    def merge_custom_metadata(self, mount: str, path: str, updates: Any) -> None:
        if self.failing.get("merge_custom_metadata", 0) > 0:
            self.failing["merge_custom_metadata"] -= 1
            raise TransientError("injected: Vault 503 on the metadata write")
        super().merge_custom_metadata(mount, path, updates)


class World:
    """One fake-provider credential on the real OpenBao, with a fake clock."""

    def __init__(self, openbao: Any, bao_client: Any, unique: str, *, limit: int = 2, retire_delay: float | None = None,
                 grace: str = "1h") -> None:
        self.clock = FakeClock()
        self.keys = KeyWorld(self.clock, limit=limit)
        self.world_id = uuid.uuid4().hex
        WORLDS[self.world_id] = self.keys
        self.prefix = f"rotator-test/{unique}"
        self.bao = bao_client
        from rotator.config.settings import Settings

        settings = Settings(state_prefix=self.prefix, vault_addr=openbao.addr, vault_token=openbao.token)
        self.store = FaultyStore(settings.vault_connection())
        self.store.failing = {}
        self.engine = self.new_engine()
        self.name = f"fake-{unique}"
        self.path = f"apps/fake-{unique}"
        self.cred = self.credential(grace=grace, retire_delay=retire_delay)
        self.violations: list[str] = []
        self.keys.before_effect = self._check

    def _check(self, op: str, key_id: str) -> None:
        """Guarantee 1: no revoke or deactivate ever targets the key the live path holds."""
        if op in {"revoke", "deactivate"} and key_id and key_id == self.live_key_id():
            self.violations.append(f"{op} {key_id} while the live path holds it")

    def new_engine(self, holder_name: str | None = None) -> Engine:
        return Engine(self.store, options=EngineOptions(state_prefix=self.prefix), clock=self.clock, holder=holder_name)

    def credential(self, *, grace: str = "1h", retire_delay: float | None = None, path: str | None = None, name: str | None = None) -> LoadedCredential:
        params = {"world": self.world_id, "retire_delay_seconds": retire_delay}
        spec = CredentialSpec.model_validate({
            "name": name or self.name, "provider": "test.fake", "owner": "t", "schedule": {"every": "30d"}, "grace": grace,
            "vault": {"mount": "secret", "path": path or self.path}, "params": params,
        })
        return LoadedCredential(spec, FakeProvider, FakeParams(**params))

    def reconcile(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.engine.reconcile(self.cred, **kwargs)

    def live(self, path: str | None = None) -> dict[str, Any] | None:
        return self.store.read("secret", path or self.path).data

    def live_key_id(self) -> str | None:
        data = self.live()
        return data["key_id"] if data else None

    def meta_key_id(self) -> str | None:
        meta = self.store.read_metadata("secret", self.path)
        return meta.custom_metadata.get("rotator-key-id") if meta else None

    def record(self):  # type: ignore[no-untyped-def]
        return self.engine.read_record(self.name)[0]

    def leave_pending(self) -> None:
        """A scheduled rotation that stops in `issuing`, blocked (a refused create)."""
        self.keys.fail("issue", "permanent")
        self.clock.advance(timedelta(days=31))
        result = self.reconcile()
        assert result.status == "failed" and result.record.pending is not None

    def rotate(self) -> str:
        """One scheduled rotation, done: the new live key id."""
        self.clock.advance(timedelta(days=31))
        result = self.reconcile()
        assert result.status == "completed", result.status
        return self.live_key_id()  # type: ignore[return-value]


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def world(openbao, bao_client, unique: str, events: EventLog):  # type: ignore[no-untyped-def]
    w = World(openbao, bao_client, unique)
    yield w
    w.engine.close()
    WORLDS.pop(w.world_id, None)


def make_world(openbao, bao_client, unique: str, **kwargs: Any) -> World:  # type: ignore[no-untyped-def]
    return World(openbao, bao_client, unique + uuid.uuid4().hex[:4], **kwargs)


# -- 1. duplicate credentials after a lost response ------------------------------------


def test_lost_create_response_leaves_no_second_key(world: World, events: EventLog) -> None:
    """A create applied but unanswered is not retried blindly: the next
    action finds and revokes it, then mints again; one key is left."""
    world.keys.limit = 10  # like deploy keys: no limit hides the duplicate
    world.keys.fail("issue", "after")
    world.reconcile()
    world.clock.advance(timedelta(minutes=2))
    world.reconcile()
    assert world.live_key_id() is not None
    assert set(world.keys.keys) == {world.live_key_id()}, "the key whose response was lost must be revoked"
    assert [e["key_id"] for e in events.events("orphan.revoked")] == ["K1"]


def test_lost_create_response_with_a_full_scope_does_not_block(world: World, events: EventLog) -> None:
    """AWS's 2 keys: after a lost create, NoCapacity blames the key this
    rotation made; that is cleaned up, not a permanent block."""
    old = world.rotate()
    world.keys.fail("issue", "after")
    world.clock.advance(timedelta(days=31))
    assert world.reconcile().status == "failed"
    assert world.record().blocked_fingerprint is None, "the rotator's own lost key must not block the credential"
    world.clock.advance(timedelta(minutes=2))
    assert world.reconcile().status == "completed"
    assert set(world.keys.keys) == {old, world.live_key_id()}


# -- 2. the orphan sweep never revokes the live key --------------------------------------


def test_orphan_sweep_spares_the_live_key_after_the_record_was_lost(world: World, bao_client: Any) -> None:
    """A lost state record must not make the live key look like an orphan."""
    live = world.rotate()
    bao_client.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{world.prefix}/{world.name}", mount_point="secret")
    world.leave_pending()
    world.reconcile(request=Request())
    assert world.violations == []


def test_stale_lease_holder_resuming_never_revokes_the_live_key(world: World) -> None:
    """A replica paused past its lease resumes its sweep: it must re-check
    its lease before revoking, and never revoke what the live path holds."""
    world.rotate()
    world.leave_pending()  # in `issuing`: the next reconcile sweeps
    stale = world.new_engine("replica-a")
    other = world.new_engine("replica-b")

    def pause_past_the_lease() -> None:
        world.clock.advance(timedelta(seconds=400))
        assert other.reconcile(world.cred, request=Request()).status == "completed"

    world.keys.hooks["list"] = pause_past_the_lease
    stale.reconcile(world.cred, request=Request())
    assert world.violations == []
    assert world.live_key_id() in world.keys.keys, "the stale holder revoked the live key"


# -- 3. retirement does not freeze behind a stuck rotation -------------------------------


def test_retirement_happens_on_time_behind_a_blocked_rotation(world: World) -> None:
    """A rotation blocked by NoCapacity still lets the old key be revoked at the end of grace."""
    world.keys.limit = 3
    first = world.rotate()
    second = world.rotate()
    world.keys.add_static()  # a key someone made by hand fills the scope: NoCapacity, blocked
    result = world.reconcile(request=Request())
    assert result.record.blocked_fingerprint is not None and result.record.pending is not None
    world.clock.advance(timedelta(hours=2))
    world.reconcile()
    assert first not in world.keys.keys, "the superseded key outlived its grace behind a blocked rotation"
    assert second in world.keys.keys


# -- 4. --revoke-now is not dropped ---------------------------------------------------------


def test_revoke_now_on_an_unfinished_rotation_is_kept(world: World) -> None:
    """`rotate --revoke-now` that finishes a pending rotation revokes the old key at once."""
    old = world.rotate()
    world.leave_pending()
    result = world.reconcile(request=Request(revoke_now=True))
    assert result.status == "completed"
    assert old not in world.keys.keys, "the compromised key kept its grace"


def test_revoke_now_whose_revoke_of_a_previous_key_failed_is_not_reported_done(openbao, bao_client, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Sim F199: `rotate --revoke-now` with a key already in grace whose revoke fails (transient), as do the
    others the run tries: the run still rotates. Previous keys still work, so the run failed (exit 1), its
    summary row names a key and the step, and the daemon's next pass revokes them."""
    from rotator.engine.mass import FAILED, classify

    w = make_world(openbao, bao_client, unique, limit=10)  # room for a third key: the run goes on to rotate
    first = w.rotate()
    second = w.rotate()
    w.keys.fail("revoke", *["before"] * 100)  # every revoke of the run, past the step's own retries
    result = w.reconcile(request=Request(revoke_now=True))
    third = w.live_key_id()
    assert third not in (first, second) and set(w.keys.keys) == {first, second, third}, "it rotated; nothing was revoked"
    assert result.status == "failed", "a previous key still works: the revoke-now is not done"
    row = classify(w.cred, result, lease_wait=0, interrupted=False)
    assert (row.result, row.step) == (FAILED, "revoke") and (first in (row.reason or "") or second in (row.reason or "")), row
    w.keys.faults.clear()
    w.clock.advance(timedelta(hours=2))
    w.reconcile()
    assert set(w.keys.keys) == {third}, "the failed revokes are retried on their schedule"
    assert not w.violations
    w.engine.close()


def test_revoke_now_shortens_deactivated_entries(openbao, bao_client, unique: str, events: EventLog) -> None:  # type: ignore[no-untyped-def]
    """A key already deactivated (waiting for deletion) is deleted at once by --revoke-now."""
    w = make_world(openbao, bao_client, unique, retire_delay=86400.0, limit=10)
    first = w.rotate()
    w.rotate()
    w.clock.advance(timedelta(hours=2))
    w.reconcile()
    assert w.keys.keys[first].active is False
    assert w.reconcile(request=Request(revoke_now=True)).status == "completed"
    assert first not in w.keys.keys, "the deactivated key waited out its deletion delay"
    w.engine.close()


# -- 5. a live lease holder is not taken for dead -------------------------------------------


def test_unreadable_proc_is_not_taken_for_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ProtectProc=invisible another user's /proc entry is unreadable:
    that is unknown, not dead. Only a process that is gone counts as dead."""
    me = holder.current()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = holder.process_start_ticks(alive.pid)
        assert ticks is not None
        lease = {"host": me.host, "boot_id": me.boot_id, "pid_namespace": me.pid_namespace, "pid": alive.pid, "start_ticks": ticks}
        assert holder.is_known_dead(**lease) is False
        monkeypatch.setattr(holder, "process_start_ticks", lambda pid: None)  # /proc/PID hidden
        assert holder.is_known_dead(**lease) is False, "a running holder whose /proc is hidden was taken for dead"
    finally:
        alive.kill()
        alive.wait()
    assert holder.is_known_dead(**lease) is True, "a holder that is gone is dead"


# -- 8. a failed metadata merge does not block revocation -----------------------------------


def test_failed_metadata_merge_is_retried_as_its_own_step(world: World, events: EventLog) -> None:
    """The promotion is done only once rotator-key-id names the new key; then the old one is revoked on time."""
    old = world.rotate()
    world.store.failing["merge_custom_metadata"] = 8  # more than one step's retries
    world.clock.advance(timedelta(days=31))
    world.reconcile()
    assert world.meta_key_id() == old
    for _ in range(6):
        world.clock.advance(timedelta(minutes=30))
        world.reconcile()
    new = world.live_key_id()
    assert world.meta_key_id() == new
    assert world.record().current.key_id == new
    assert old not in world.keys.keys, "the old key could never be revoked"


# -- smaller ones -------------------------------------------------------------------------


def test_manual_request_is_consumed_by_a_failure(world: World) -> None:
    """One `rotate` that fails makes one attempt, not one per step of the reconcile."""
    world.keys.limit = 10
    world.rotate()
    world.leave_pending()
    world.keys.fail("issue", *["after"] * 40)
    before = len([c for c in world.keys.calls if c[0] == "issue"])
    result = world.reconcile(request=Request())
    made = len([c for c in world.keys.calls if c[0] == "issue"]) - before
    assert made == 1, f"one rotate minted {made} keys"
    assert result.status == "failed"


def test_sigterm_during_verify_finishes_the_step(world: World, events: EventLog) -> None:
    """SIGTERM while verification is still retrying lets the verification finish; no rollback."""
    world.rotate()
    world.keys.fail("verify", "before", "before")
    world.keys.hooks["verify"] = world.engine.shutdown.set
    world.clock.advance(timedelta(days=31))
    world.reconcile()
    assert "rotation.rolled_back" not in events.names()
    assert world.record().pending.phase == "verified"


def test_transient_revoke_failure_while_making_room_does_not_block(openbao, bao_client, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Deleting our deactivated key to make room fails transiently: retry later, do not block."""
    w = make_world(openbao, bao_client, unique, retire_delay=86400.0)
    first = w.rotate()
    w.rotate()
    w.clock.advance(timedelta(hours=2))
    w.reconcile()  # first: deactivated, deletion due in a day
    w.keys.fail("revoke", *["before"] * 5)  # one step's retries
    assert w.reconcile(request=Request()).status == "failed"
    assert w.record().blocked_fingerprint is None, "a transient failure blocked the credential"
    w.clock.advance(timedelta(hours=2))
    assert w.reconcile().status == "completed"
    assert first not in w.keys.keys
    w.engine.close()


def test_failed_rollback_logs_an_event(world: World, events: EventLog) -> None:
    """A rollback whose revoke fails is reported (rotation.failed, step rollback)."""
    world.rotate()
    world.keys.fail("verify", "permanent")
    world.keys.fail("revoke", *["before"] * 10)
    world.clock.advance(timedelta(days=31))
    world.reconcile()
    assert world.record().pending.phase == "rolling_back"
    failed = [e for e in events.events("rotation.failed") if e.get("step") == "rollback"]
    assert failed and failed[0]["will_retry"] is True


def test_blocked_credential_costs_no_vault_read_per_tick(world: World) -> None:
    """A blocked credential with nothing to retire is not read on every tick."""
    from rotator.wiring import App
    from rotator.daemon.loop import CredentialView, Daemon
    from rotator.config.settings import Settings

    world.keys.add_static()
    world.keys.add_static()  # two unmanaged keys: NoCapacity, blocked until the file changes
    settings = Settings(state_prefix=world.prefix, vault_addr="http://127.0.0.1:1", tick_seconds=10)
    daemon = Daemon(App(settings, world.store, world.engine))
    daemon.views = {world.name: CredentialView(world.cred)}
    daemon.run_pass()
    assert world.record().blocked_fingerprint is not None
    before = world.store.requests_made
    for _ in range(5):
        world.clock.advance(timedelta(seconds=10))
        daemon.run_pass()
    assert world.store.requests_made == before, "each tick read the blocked credential's record"
    daemon.close()


def test_blocked_record_restored_behind_its_rotation_is_looked_at_again(world: World) -> None:
    """Sim F223, against the real OpenBao and the daemon: a credential blocked (no room at the provider), then
    rotated past the block by `rotator rotate`, its record restored by hand to the blocked version. Blocked, the
    record costs no request, so without a look it would name the superseded key as current for good and that
    key would never be revoked. The daemon looks at a blocked record every LOOK_AGAIN: the record catches up
    with the rotation that went live, and the key it superseded is revoked a full grace later."""
    from rotator.config.settings import Settings
    from rotator.daemon.loop import CredentialView, Daemon
    from rotator.engine.fileless import LOOK_AGAIN
    from rotator.wiring import App

    first = world.rotate()
    static = world.keys.add_static()  # with `first`, the provider's 2-key limit: the next rotation is blocked
    settings = Settings(state_prefix=world.prefix, vault_addr="http://127.0.0.1:1", tick_seconds=10)
    daemon = Daemon(App(settings, world.store, world.engine))
    daemon.views = {world.name: CredentialView(world.cred)}
    world.clock.advance(timedelta(days=31))
    daemon.run_pass()
    state_path = f"{world.prefix}/{world.name}"
    blocked = world.store.read("secret", state_path)
    assert world.record().blocked_fingerprint is not None and world.record().current.key_id == first
    del world.keys.keys[static.key_id]  # room made by hand; the operator runs `rotator rotate NAME`
    assert world.engine.reconcile(world.cred, request=Request()).status == "completed"
    second = world.live_key_id()
    assert second not in (None, first)
    world.store.write("secret", state_path, blocked.data, cas=world.store.read("secret", state_path).version)  # restored by hand
    assert world.record().current.key_id == first and world.record().blocked_fingerprint is not None
    before = world.store.requests_made
    world.clock.advance(timedelta(minutes=10))
    daemon.run_pass()
    assert world.store.requests_made == before, "a blocked record was read before its look was due"
    world.clock.advance(LOOK_AGAIN)
    daemon.run_pass()
    record = world.record()
    assert record.current.key_id == second and record.blocked_fingerprint is None
    # The restored record's last rotation is the first one's, 31 days back: a scheduled rotation is due, and
    # waits for room (the superseded key's grace).
    assert record.pending is None or record.pending.credential is None
    assert first in world.keys.keys, "the superseded key keeps a full grace from the look"
    world.clock.advance(timedelta(hours=1, minutes=5))
    daemon.run_pass()
    assert first not in world.keys.keys, "the key the restored record named as current was never revoked"
    assert world.live_key_id() in world.keys.keys and world.violations == []
    daemon.close()


def test_malformed_state_record_gives_a_clean_message(rotator_env, config_dir, bao_client, iam_user: str) -> None:  # type: ignore[no-untyped-def]
    """`status` and `rotate` on a record that does not parse: one line naming
    the credential, exit 1, no traceback, no pydantic text, no value quoted."""
    from helpers import run_rotator, write_credential

    write_credential(config_dir, iam_user, params={"user_name": iam_user})
    leaked = "sk_live_" + "Q" * 24
    bad = {"credential": iam_user, "provider": "aws.iam_access_key", "current": {"key_id": leaked, "handle": leaked}, "rotations": "many"}
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"{rotator_env['ROTATOR_STATE_PREFIX']}/{iam_user}", secret=bad, mount_point="secret")
    for args in (["status"], ["rotate", iam_user]):
        proc = run_rotator(args, rotator_env)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, output[-800:])
        assert "Traceback" not in output and "pydantic" not in output and "validation error" not in output.lower(), output[-800:]
        assert leaked not in output and "QQQQ" not in output
        assert iam_user in output and "malformed" in output


# -- 7. a foreign write no longer blocks for good: `rotator adopt` -------------------------


def _adopt(world: World, cred: LoadedCredential | None = None):  # type: ignore[no-untyped-def]
    from rotator.engine.adoption import adopt

    return adopt(world.engine, cred or world.cred)


def test_first_rotation_refuses_a_path_holding_foreign_data(world: World, events: EventLog) -> None:
    """Contract §5: data the rotator did not write is never written over without `adopt`."""
    static = world.keys.add_static()
    world.store.write("secret", world.path, {"key_id": static.key_id, "secret": static.secret}, cas=0)
    result = world.reconcile()
    assert result.status == "failed"
    assert world.live() == {"key_id": static.key_id, "secret": static.secret}, "the foreign data was overwritten"
    failed = events.events("rotation.failed")[-1]
    assert "rotator adopt" in failed["error"] and failed["will_retry"] is False
    assert set(world.keys.keys) == {static.key_id}, "nothing may be minted for a path it will not write"


def test_foreign_write_then_adopt_lets_rotation_continue(world: World, events: EventLog) -> None:
    """After someone else wrote the live path the credential blocks; `rotator adopt`
    takes the written key on, the next rotation retires it after grace."""
    ours = world.rotate()
    static = world.keys.add_static()
    world.store.write("secret", world.path, {"key_id": static.key_id, "secret": static.secret}, cas=1)
    world.clock.advance(timedelta(days=31))
    assert world.reconcile().status == "failed"
    assert world.live()["key_id"] == static.key_id
    adopted = _adopt(world)
    assert adopted.key_id == static.key_id and adopted.vault_version == 2
    assert events.events("credential.adopted")[-1]["key_id"] == static.key_id
    world.reconcile()  # AWS-like: no room while our replaced key is in its grace; retried when it ends
    assert world.record().blocked_fingerprint is None
    world.clock.advance(timedelta(hours=2))
    assert world.reconcile().status == "completed", "adopt must unblock the credential"
    new = world.live_key_id()
    assert new not in {ours, static.key_id}
    world.clock.advance(timedelta(hours=2))
    world.reconcile()
    assert set(world.keys.keys) == {new}, "the adopted key and the one it replaced are retired after grace"
    assert world.violations == []


def test_vault_path_change_does_not_block(world: World) -> None:
    """A changed `vault.path` writes the new (empty) path; the old key is retired after grace."""
    old = world.rotate()
    world.cred = world.credential(path=world.path + "-moved")
    world.rotate()
    assert world.live(world.path + "-moved")["key_id"] == world.record().current.key_id != old
    world.clock.advance(timedelta(hours=2))
    world.reconcile()
    assert set(world.keys.keys) == {world.record().current.key_id}


def test_lost_record_takes_the_live_key_back_as_current(world: World, bao_client: Any) -> None:
    """A lost state record: the key the live path holds (and one still in grace) is retired on schedule, never orphaned."""
    world.keys.limit = 10
    first = world.rotate()
    second = world.rotate()  # first is in its grace
    bao_client.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{world.prefix}/{world.name}", mount_point="secret")
    world.clock.advance(timedelta(minutes=5))
    assert world.reconcile(request=Request()).status == "completed"
    third = world.live_key_id()
    assert first in world.keys.keys, "a key in its grace was revoked"
    world.clock.advance(timedelta(hours=2))
    world.reconcile()
    assert set(world.keys.keys) == {third}, f"left behind: {set(world.keys.keys) - {third}} (second was {second})"
    assert world.violations == []


# -- 6. renamed or deleted files do not orphan their keys ----------------------------------


def test_renamed_file_carries_its_keys_on(world: World) -> None:
    """Contract §6.9: a file renamed with the same live path carries the old name's keys on."""
    world.keys.limit = 10
    first = world.rotate()
    world.rotate()  # first in grace, second live
    old_name = world.name
    world.name = world.name + "-renamed"
    world.cred = world.credential(name=world.name)
    world.clock.advance(timedelta(minutes=5))
    assert world.reconcile(request=Request()).status == "completed"
    third = world.live_key_id()
    assert first in world.keys.keys, "the renamed credential's key in grace was revoked early"
    world.clock.advance(timedelta(hours=2))
    world.reconcile()
    assert set(world.keys.keys) == {third}
    moved = world.engine.read_record(old_name)[0]
    assert moved.moved_to == world.name and moved.retiring == [] and moved.current is None
    assert world.violations == []


def _renamed_twice_with_the_middle_record_lost(world: World, bao_client: Any, *, configured: bool) -> tuple[str, str]:
    """A rotated; renamed to B, whose takeover minted a key (marked B) whose answer was lost; B's record then
    lost; renamed to C, rotated with `--revoke-now`. Returns (the key B minted, C's live key)."""
    world.keys.limit = 10
    world.rotate()
    world.name, world.cred = world.name + "-b", world.credential(name=world.name + "-b")
    world.keys.fail("issue", "after")
    world.clock.advance(timedelta(days=31))
    assert world.reconcile().status == "failed"
    minted = next(k for k in world.keys.keys.values() if k.mark is not None and k.mark.credential == world.name).key_id
    bao_client.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{world.prefix}/{world.name}", mount_point="secret")
    world.name, world.cred = world.name + "-c", world.credential(name=world.name + "-c")
    if configured:
        world.engine.configured = lambda: frozenset({world.name})
    world.clock.advance(timedelta(minutes=5))
    assert world.reconcile(request=Request(revoke_now=True)).status == "completed"
    return minted, world.live_key_id()  # type: ignore[return-value]


def test_a_renamed_files_middle_name_lost_with_its_record_leaves_no_key(world: World) -> None:
    """sim F135 on the real OpenBao: the old name's record says it moved to a name that has neither a file
    nor a record any more; the keys marked with that name are this credential's, revoked at once under the
    `--revoke-now` asked of the last name."""
    minted, live = _renamed_twice_with_the_middle_record_lost(world, world.bao, configured=True)
    revoked = minted != live and minted not in world.keys.keys
    assert revoked, "the middle name's key must be revoked at once"
    assert world.violations == []


def test_a_middle_name_is_not_taken_for_gone_when_the_files_are_unknown(openbao, bao_client, unique: str) -> None:  # type: ignore[no-untyped-def]
    """The same, with no list of the files loaded (a file failed to load, or a caller that did not say): the
    middle name might still be a file, so its keys are never taken by guess."""
    world = make_world(openbao, bao_client, unique)
    try:
        minted, _ = _renamed_twice_with_the_middle_record_lost(world, bao_client, configured=False)
        assert minted in world.keys.keys and world.keys.keys[minted].active
    finally:
        world.engine.close()
        WORLDS.pop(world.world_id, None)


def test_an_old_name_back_in_a_file_of_its_own_keeps_its_live_key(world: World) -> None:
    """A renamed file's old name that is back in a file of its own (another path) is another credential: the
    new name's `--revoke-now` finds that file's key by the old name's mark (its record still says it moved),
    but the key is live at that file's path and is never revoked (the guard beside sim F226's fix: only an old
    name no loaded file has makes its paths this credential's own)."""
    world.keys.limit = 10
    world.rotate()
    old = world.name
    new_cred = world.credential(name=old + "-b")
    world.clock.advance(timedelta(days=31))
    assert world.engine.reconcile(new_cred).status == "completed"  # takes the old record over
    assert world.engine.read_record(old)[0].moved_to == new_cred.spec.name
    back = world.credential(name=old, path=world.path + "-back")
    world.engine.configured = lambda: frozenset({old, new_cred.spec.name})
    assert world.engine.reconcile(back, request=Request()).status == "completed"
    theirs = world.live(world.path + "-back")["key_id"]
    world.clock.advance(timedelta(minutes=5))
    assert world.engine.reconcile(new_cred, request=Request(revoke_now=True)).status == "completed"
    assert theirs in world.keys.keys and world.keys.keys[theirs].active, "the other file's live key was retired"
    assert world.violations == []


def test_a_rename_undone_carries_the_keys_back(world: World) -> None:
    """A file renamed and renamed back, same path: the new name's rotation took the old record over and wrote
    the path; the old name, back, takes the new name's record over in turn (its own still says it moved)
    instead of blocking on a live path "someone else wrote", and its rotation retires what the new name left."""
    world.keys.limit = 10
    world.rotate()
    old = world.name
    renamed = world.credential(name=old + "-b")
    world.clock.advance(timedelta(days=31))
    world.engine.configured = lambda: frozenset({renamed.spec.name})
    assert world.engine.reconcile(renamed).status == "completed"  # takes the old record over, writes the path
    assert world.engine.read_record(old)[0].moved_to == renamed.spec.name
    taken = world.live_key_id()
    world.engine.configured = lambda: frozenset({old})
    world.clock.advance(timedelta(days=31))
    result = world.reconcile()
    assert result.status == "completed", (result.events, result.record.last_error if result.record else None)
    record = world.record()
    assert record.moved_to is None and record.blocked_fingerprint is None
    assert record.current is not None and record.current.key_id == world.live_key_id() != taken
    assert taken in {e.key.key_id for e in record.retiring}, "the key live under the new name is this record's to retire"
    assert world.engine.read_record(renamed.spec.name)[0].moved_to == old
    world.clock.advance(timedelta(hours=2))
    assert [world.reconcile().status for _ in range(3)][-1] == "idle"
    assert {k for k, key in world.keys.keys.items() if key.active} == {world.live_key_id()}
    assert world.violations == []


def test_a_rename_undone_at_another_path_is_a_vault_path_change(world: World) -> None:
    """Renamed, the new name's rotation writing the path, then renamed back with another `vault.path`: the old
    name takes the new name's record over as after a `vault.path` change, and its `--revoke-now` ends the keys
    that record held (its own first key among them) at once (sim F227, on the real OpenBao)."""
    world.keys.limit = 10
    first = world.rotate()
    old = world.name
    renamed = world.credential(name=old + "-b")
    world.clock.advance(timedelta(days=31))
    world.engine.configured = lambda: frozenset({renamed.spec.name})
    assert world.engine.reconcile(renamed).status == "completed"
    second = world.live_key_id()
    world.engine.configured = lambda: frozenset({old})
    back = world.credential(name=old, path=world.path + "-moved")
    world.clock.advance(timedelta(minutes=5))
    assert world.engine.reconcile(back, request=Request(revoke_now=True)).status == "completed"
    alive = {k for k, key in world.keys.keys.items() if key.active}
    assert first not in alive and second not in alive
    assert world.engine.read_record(renamed.spec.name)[0].moved_to == old
    assert alive == {world.live(world.path + "-moved")["key_id"]}


def test_a_record_restored_after_a_rename_undone_takes_the_renamed_record_over(world: World) -> None:
    """Renamed (the new name's rotation wrote the path, the old name's key in its grace in the new name's
    record), renamed back, then the old name's record restored by hand to a copy taken mid-rotation, before
    the rename: the old name takes the new name's record over (F228's take-over, on the real OpenBao) instead of
    resuming that finished rotation, which blocked on a path "someone else wrote"."""
    world.keys.limit = 10
    world.rotate()
    old, state_path = world.name, f"{world.prefix}/{world.name}"
    copy: dict[str, Any] = {}
    world.keys.hooks["verify"] = lambda: copy.update(world.store.read("secret", state_path).data)  # the record mid-rotation
    second = world.rotate()
    assert copy["pending"] is not None
    renamed = world.credential(name=old + "-b")
    world.clock.advance(timedelta(days=31))
    world.engine.configured = lambda: frozenset({renamed.spec.name})
    assert world.engine.reconcile(renamed).status == "completed"
    third = world.live_key_id()
    world.engine.configured = lambda: frozenset({old})
    world.clock.advance(timedelta(minutes=5))
    world.store.write("secret", state_path, copy, cas=world.store.read("secret", state_path).version)  # restored by hand
    result = world.reconcile()
    # Before F228: the finished rotation resumed, minted, found the path "written by someone else" (its metadata
    # names the new name), rolled its key back and blocked; a deploy key's retry-safe create (the simulation's
    # seed 21746) removed the key in its grace as well.
    assert result.status == "completed" and "rotation.failed" not in result.events, result.events
    assert second in world.keys.keys and world.keys.keys[second].active, "the key in its grace was revoked"
    record = world.record()
    assert record.pending is None and record.current is not None and record.current.key_id == third == world.live_key_id()
    assert second in {e.key.key_id for e in record.retiring}, result.events
    assert world.engine.read_record(renamed.spec.name)[0].moved_to == old
    world.clock.advance(timedelta(hours=2))
    assert [world.reconcile().status for _ in range(3)][-1] == "idle"
    assert {k for k, key in world.keys.keys.items() if key.active} == {third}
    assert world.violations == []


def test_the_names_loaded_are_unknown_when_any_file_did_not_load() -> None:
    """`Engine.is_gone` trusts the names loaded only when every file loaded: a file that failed, was refused
    by the policy or clashed with another may carry the very name (sim F135's rule never guesses)."""
    from rotator.config.spec import LoadResult
    from rotator.core.errors import ConfigProblem
    from rotator.wiring import loaded_names

    every = LoadResult(credentials={"a": None, "b": None})  # type: ignore[dict-item]
    assert loaded_names(every)() == frozenset({"a", "b"})
    refused = LoadResult(credentials={"a": None}, problems=[ConfigProblem("c.yaml", "owner", "refused by the policy")])  # type: ignore[dict-item]
    assert loaded_names(refused)() is None
    failed = LoadResult(credentials={"a": None}, failed_files={"c.yaml"})  # type: ignore[dict-item]
    assert loaded_names(failed)() is None


def _two_rotations_by_a_daemon(openbao, iam_user, iam_admin, config_dir, unique: str) -> Any:  # type: ignore[no-untyped-def]
    """A real daemon over one AWS credential file (grace 1h, no deactivation delay) that has rotated twice;
    `first` is in its grace, `second` live. Real OpenBao, real moto."""
    from types import SimpleNamespace
    from datetime import UTC, datetime

    from helpers import write_credential
    from rotator.wiring import App
    from rotator.daemon.loop import Daemon
    from rotator.config.settings import Settings

    clock = FakeClock(datetime.now(UTC))  # moto's last-use times are real ones: keep the clock past them
    settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=openbao.addr, vault_token=openbao.token)
    store = VaultStore(settings.vault_connection())
    engine = Engine(store, options=EngineOptions(state_prefix=settings.state_prefix), clock=clock)
    file = write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, every="30d", grace="1h")
    daemon = Daemon(App(settings, store, engine))
    keys = lambda: {k["AccessKeyId"]: k["Status"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}  # noqa: E731
    live = lambda: store.read("secret", f"apps/{iam_user}").data["access_key_id"]  # noqa: E731
    daemon.load()
    daemon.preload_state()
    assert daemon.run_pass().completed == 1
    first = live()
    clock.advance(timedelta(days=31))
    assert daemon.run_pass().completed == 1
    second = live()
    assert set(keys()) == {first, second}
    return SimpleNamespace(clock=clock, store=store, engine=engine, file=file, daemon=daemon, keys=keys, live=live, first=first, second=second)


def test_deleted_file_keeps_revoking_superseded_keys_on_schedule(openbao, aws_env, iam_user, iam_admin, config_dir, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Contract §6.9: a removed file's superseded key is still revoked on
    schedule, and its live key is left alone. Real moto, real daemon pass."""
    w = _two_rotations_by_a_daemon(openbao, iam_user, iam_admin, config_dir, unique)
    w.file.unlink()
    w.daemon.load()
    w.daemon.preload_state()
    w.clock.advance(timedelta(hours=2))
    w.daemon.run_pass()
    assert w.keys() == {w.second: "Active"}, "the removed file's superseded key must be revoked at the end of grace"
    assert w.live() == w.second
    w.clock.advance(timedelta(days=60))
    w.daemon.run_pass()
    assert w.keys() == {w.second: "Active"}, "the removed file's live key is left alone"
    w.daemon.close()


def test_a_deleted_record_of_a_removed_file_is_revived_and_its_superseded_key_revoked(openbao, aws_env, iam_user, iam_admin, config_dir, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Sim F92: the record's latest version deleted by hand (`bao kv delete`)
    and the file removed: nothing else names the superseded key. The daemon's
    scan for file-less records brings the record back (undeleted, or its newest
    readable version written back), and the key is revoked on schedule. Real
    OpenBao, real moto, real daemon pass."""
    import hvac

    w = _two_rotations_by_a_daemon(openbao, iam_user, iam_admin, config_dir, unique)
    record_path = w.engine.state_path(iam_user)
    kv = hvac.Client(url=openbao.addr, token=openbao.token).secrets.kv.v2
    kv.delete_latest_version_of_secret(path=record_path, mount_point="secret")
    assert w.store.read("secret", record_path).data is None
    w.file.unlink()
    w.daemon.load()
    w.daemon.preload_state()
    revived = w.store.read("secret", record_path)
    assert revived.data is not None and revived.data["credential"] == iam_user  # readable again
    w.daemon.run_pass()  # whatever rotation the revived version has pending is finished; its grace runs from no earlier than now
    assert set(w.keys()) == {w.first, w.second} and w.live() == w.second
    w.clock.advance(timedelta(hours=2))
    w.daemon.run_pass()
    assert w.keys() == {w.second: "Active"}, "the superseded key of the revived record must be revoked at the end of grace"
    assert w.live() == w.second
    w.daemon.close()


def test_a_removed_files_idle_record_restored_behind_its_live_path_retires_what_it_forgot(openbao, aws_env, iam_user, iam_admin, config_dir, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Sim F115: the record restored by hand to the version after the first
    rotation (nothing pending, nothing retiring), the live data written over
    by hand, the file removed. The record names neither the second rotation
    nor its key; a removed file's record was reconciled only for work it
    knew of, so the second key stayed active for good. The daemon's scan
    compares such a record once with its live path, whose metadata names
    the second rotation: that key, which the data no longer holds, is
    revoked after a full grace. Real OpenBao, real moto, real daemon pass."""
    import hvac

    w = _two_rotations_by_a_daemon(openbao, iam_user, iam_admin, config_dir, unique)
    w.clock.advance(timedelta(hours=2))
    w.daemon.run_pass()
    assert w.keys() == {w.second: "Active"}
    record_path = w.engine.state_path(iam_user)
    kv = hvac.Client(url=openbao.addr, token=openbao.token).secrets.kv.v2
    versions = kv.read_secret_metadata(path=record_path, mount_point="secret")["data"]["versions"]
    older = None
    for number in sorted(map(int, versions)):
        data = kv.read_secret_version(path=record_path, version=number, mount_point="secret", raise_on_deleted_version=False)["data"]["data"]
        if data and data.get("pending") is None and (data.get("current") or {}).get("key_id") == w.first and not data.get("retiring"):
            older = data
            break
    assert older is not None, "the record's version after the first rotation"
    kv.create_or_update_secret(path=record_path, secret=older, mount_point="secret")  # `bao kv rollback`, by hand
    kv.create_or_update_secret(path=f"apps/{iam_user}", secret={"note": "written by hand"}, mount_point="secret")
    w.file.unlink()
    w.daemon.load()
    w.daemon.preload_state()
    w.daemon.run_pass()
    assert w.keys() == {w.second: "Active"}, "a full grace from the moment the record caught up"
    w.clock.advance(timedelta(hours=2))
    w.daemon.run_pass()
    assert w.keys() == {}, "the key the restored record forgot must be revoked at the end of its grace"
    w.daemon.close()


def test_a_removed_files_idle_record_is_looked_at_again_after_its_forgotten_keys_path_is_written_over(openbao, aws_env, iam_user, iam_admin, config_dir, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Sim F204: `vault.path` changed and a rotation made `second` live at the new path; the record restored by
    hand to before both (current `first`, at the old path); the file removed. The scan's look at the idle record
    finds `second`, a key it does not know, live at the new path, so keeps it. That path is then written over by
    hand: the record has no new version, and it was looked at once per version, so `second` stayed for good. It is
    looked at again every LOOK_AGAIN: `second`, now live nowhere, is revoked a full grace later; `first`, the
    record's live key at its path, is left alone (§6.9). Real OpenBao, real moto, real daemon."""
    from datetime import UTC, datetime

    import hvac

    from helpers import write_credential
    from rotator.config.settings import Settings
    from rotator.daemon.loop import Daemon
    from rotator.engine.fileless import LOOK_AGAIN
    from rotator.wiring import App

    clock = FakeClock(datetime.now(UTC))  # moto's last-use times are real ones: keep the clock past them
    settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=openbao.addr, vault_token=openbao.token)
    store = VaultStore(settings.vault_connection())
    engine = Engine(store, options=EngineOptions(state_prefix=settings.state_prefix), clock=clock)
    params = {"user_name": iam_user, "delete_after_deactivation": "0s"}
    file = write_credential(config_dir, iam_user, params=params, every="30d", grace="1h")
    daemon = Daemon(App(settings, store, engine))
    keys = lambda: {k["AccessKeyId"]: k["Status"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}  # noqa: E731
    daemon.load()
    daemon.preload_state()
    assert daemon.run_pass().completed == 1
    first = store.read("secret", f"apps/{iam_user}").data["access_key_id"]
    kv = hvac.Client(url=openbao.addr, token=openbao.token).secrets.kv.v2
    record_path = engine.state_path(iam_user)
    after_first = kv.read_secret_version(path=record_path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    write_credential(config_dir, iam_user, params=params, every="30d", grace="1h", path=f"apps/{iam_user}-moved")
    daemon.load()
    clock.advance(timedelta(days=31))
    assert daemon.run_pass().completed == 1
    second = store.read("secret", f"apps/{iam_user}-moved").data["access_key_id"]
    assert set(keys()) == {first, second}
    kv.create_or_update_secret(path=record_path, secret=after_first, mount_point="secret")  # `bao kv rollback`, by hand
    file.unlink()
    daemon.load()
    daemon.preload_state()
    daemon.run_pass()
    assert set(keys()) == {first, second}, "second is live at the moved path: kept"
    kv.create_or_update_secret(path=f"apps/{iam_user}-moved", secret={"note": "written by hand"}, mount_point="secret")
    clock.advance(LOOK_AGAIN)
    daemon.find_fileless()  # the daemon's periodic scan
    daemon.run_pass()
    assert set(keys()) == {first, second}, "a full grace from the look that found it live nowhere"
    clock.advance(timedelta(hours=2))
    daemon.run_pass()
    assert set(keys()) == {first}, "the key the restored record forgot must be revoked once it is live nowhere"
    daemon.close()
