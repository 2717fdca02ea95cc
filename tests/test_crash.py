"""Crash safety (contract §6.4): the process is killed with SIGKILL at every
step boundary; after a restart the world converges to guarantees 1-3 with
no orphaned key left at the provider, and the live path works throughout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aws_world import AwsWorld
from helpers import names, write_credential
from rotator.core.crashpoints import crash_env

ROTATION_POINTS = [
    "after-intent",
    "after-issuing-marker",
    "aws-after-create",  # minted, not yet marked, not stashed
    "after-issue",  # minted and marked, not stashed
    "after-stash",
    "after-verify",
    "after-live-write",  # live written, metadata not yet
    "after-metadata",
    "after-promote",
]
RETIREMENT_POINTS = ["after-deactivate", "after-revoke-call", "after-revoke"]


def converge(w: AwsWorld) -> list[str]:
    """Restart as the daemon would: a pass, wait out grace, another pass."""
    seen: list[str] = []
    for _ in range(2):
        code, events = w.cli("run", "--once")
        assert code == 0, events
        seen += names(events)
        time.sleep(2.2)
    code, events = w.cli("run", "--once")
    assert code == 0, events
    return seen + names(events)


def assert_converged(w: AwsWorld, *, old_key: dict[str, str], versions: int) -> None:
    data, meta = w.live()
    state = w.state()
    assert data is not None and w.works(data), "the live path must hold a working key"
    assert state is not None and state["pending"] is None and state["retiring"] == []
    assert state["current"]["key_id"] == data["access_key_id"] == meta["custom_metadata"]["rotator-key-id"]
    assert meta["current_version"] == versions, "each completed rotation adds exactly one version"
    assert w.user_keys() == {data["access_key_id"]}, "no orphaned or retired key may remain"
    assert not w.works(old_key), "the superseded key must be rejected"
    lease = state["lease"]
    if lease is not None:  # left by the killed process: harmless once its holder is gone
        from rotator.core.holder import is_known_dead

        assert is_known_dead(host=lease["host"], boot_id=lease["boot_id"], pid_namespace=lease["pid_namespace"],
                             pid=lease["pid"], start_ticks=lease["start_ticks"])


@pytest.mark.parametrize("point", ROTATION_POINTS)
def test_crash_during_rotation_converges(aws_world: AwsWorld, point: str) -> None:
    """Killed mid-rotation, the rotator resumes, cleans up and finishes."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    old, _ = w.live()
    code, _ = w.cli("rotate", w.name, extra_env=crash_env(point))
    assert code == -9, f"the process should have been killed at {point}"
    during, _ = w.live()
    assert during is not None and w.works(during), "guarantee 1 holds at the moment of the crash"
    assert len(w.user_keys()) <= 2
    seen = converge(w)
    if point in {"aws-after-create", "after-issue"}:
        assert "orphan.revoked" in seen
    if point not in {"after-promote"}:
        assert "rotation.completed" in seen
    assert_converged(w, old_key=old, versions=2)


@pytest.mark.parametrize("point", RETIREMENT_POINTS)
def test_crash_during_revocation_converges(aws_world: AwsWorld, point: str) -> None:
    """Killed while retiring the old key, the rotator finishes revoking it."""
    w = aws_world
    if point == "after-deactivate":  # a key is deactivated only when its deletion waits (issue 15): 1 s here, not 0
        write_credential(Path(w.env["ROTATOR_CONFIG_DIR"]), w.name, params={"user_name": w.user, "delete_after_deactivation": "1s"},
                         grace="2s", every="30d", path=w.live_path)
    assert w.cli("rotate", w.name)[0] == 0
    old, _ = w.live()
    assert w.cli("rotate", w.name)[0] == 0
    time.sleep(2.2)
    code, _ = w.cli("run", "--once", extra_env=crash_env(point))
    assert code == -9
    during, _ = w.live()
    assert w.works(during)
    seen = converge(w)
    assert "credential.revoked" in seen or point == "after-revoke"
    assert_converged(w, old_key=old, versions=2)


def test_a_lease_held_elsewhere_blocks_until_it_expires(aws_world: AwsWorld) -> None:
    """A replica on another host that died holding the lease is taken over
    after expiry plus the clock skew allowance (its clock may run behind)."""
    from datetime import UTC, datetime, timedelta

    w = aws_world
    # Longer than a CLI's start under load (8 s was not, at load 10 on 2 cores: the second run started after it).
    w.env["ROTATOR_CLOCK_SKEW_ALLOWANCE_SECONDS"] = "20"
    assert w.cli("rotate", w.name)[0] == 0
    old, _ = w.live()
    assert w.cli("rotate", w.name, extra_env=crash_env("after-stash"))[0] == -9
    path = f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}"
    current = w.bao.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]
    record = current["data"]
    expires = datetime.now(UTC) + timedelta(seconds=6)
    record["lease"] = {"holder": "other-host:4242:abcdef", "expires_at": expires.isoformat(), "host": "other-host", "pid": 4242}
    w.bao.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=record, cas=current["metadata"]["version"])
    code, events = w.cli("run", "--once")
    assert code == 0 and not [n for n in names(events) if n.startswith(("rotation.", "credential."))], "another host's live lease must be respected"
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    code, events = w.cli("run", "--once")
    assert code == 0 and not [n for n in names(events) if n.startswith(("rotation.", "credential."))], \
        "another host's lease is trusted the skew allowance past its expiry"
    time.sleep(max(0.0, (expires + timedelta(seconds=20) - datetime.now(UTC)).total_seconds()) + 0.2)
    seen = converge(w)
    assert "rotation.completed" in seen
    assert_converged(w, old_key=old, versions=2)


def test_a_restarted_process_takes_over_its_dead_predecessors_lease_at_once(aws_world: AwsWorld) -> None:
    """On the same host, a dead holder is recognised and its work resumed without waiting."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    old, _ = w.live()
    assert w.cli("rotate", w.name, extra_env={**crash_env("after-stash"), "ROTATOR_LEASE_SECONDS": "3600"})[0] == -9
    code, events = w.cli("run", "--once")
    assert code == 0 and "rotation.completed" in names(events)
    assert [e["reason"] for e in events if e["event"] == "rotation.started"] == ["recovery"]


def test_the_audit_chain_survives_a_sigkill_and_restart(aws_world: AwsWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Events of a killed process and of its successor form one intact chain."""
    from helpers import run_rotator

    w = aws_world
    audit_file = tmp_path / "audit.jsonl"
    env = {"ROTATOR_AUDIT_FILE": str(audit_file)}
    assert w.cli("rotate", w.name, extra_env=env)[0] == 0
    assert w.cli("rotate", w.name, extra_env={**env, **crash_env("after-verify")})[0] == -9
    assert w.cli("run", "--once", extra_env=env)[0] == 0
    verify = run_rotator(["audit", "verify", str(audit_file)], {})
    assert verify.returncode == 0, verify.stdout
    import json

    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert names(events).count("rotation.completed") == 2
    w.ledger.capture("audit file", audit_file.read_text())


def test_a_torn_audit_file_stops_run_with_a_message_not_a_traceback(aws_world: AwsWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A crash mid-write leaves a torn last line: the next run refuses to chain over it, cleanly."""
    from helpers import run_rotator

    w = aws_world
    audit_file = tmp_path / "audit.jsonl"
    assert w.cli("rotate", w.name, extra_env={"ROTATOR_AUDIT_FILE": str(audit_file)})[0] == 0
    with audit_file.open("a") as handle:
        handle.write('{"seq": 99, "event": "torn')
    result = run_rotator(["run", "--once"], {**w.env, "ROTATOR_AUDIT_FILE": str(audit_file)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "audit" in result.stderr.lower()
