"""End to end through the real CLI, against OpenBao and a moto server with
IAM auth enforced: the guarantees of contract §6 for AWS access keys."""

from __future__ import annotations

import time
from datetime import datetime

from aws_world import AwsWorld
from helpers import names


def test_two_rotations_give_two_versions_and_revoke_each_old_key(aws_world: AwsWorld) -> None:
    """Each rotation adds one live version; each old key is rejected after grace; never more than 2 keys."""
    w = aws_world
    seen: list[dict[str, str]] = []
    for expected_version in (1, 2, 3):
        code, events = w.cli("rotate", w.name)
        assert code == 0, events
        rotation_events = [n for n in names(events) if n.startswith(("rotation.", "credential."))]
        assert rotation_events[:1] == ["rotation.started"] and rotation_events[-1] == "rotation.completed"
        data, meta = w.live()
        assert data is not None and meta["current_version"] == expected_version
        assert w.works(data)
        assert len(w.user_keys()) <= 2
        seen.append(data)
        time.sleep(2.2)  # past grace
        code, events = w.cli("run", "--once")
        assert code == 0, events
        assert w.user_keys() == {data["access_key_id"]}
    for old in seen[:-1]:
        assert not w.works(old), "a revoked key still authenticates"
    assert w.works(seen[-1])
    state = w.state()
    assert state and state["rotations"] == 3 and state["retiring"] == []


def test_live_metadata_is_merged_and_operator_settings_kept(aws_world: AwsWorld) -> None:
    """Only rotator-* and managed-by keys change; max_versions, cas_required and other metadata stay."""
    w = aws_world
    w.bao.secrets.kv.v2.update_metadata(path=w.live_path, mount_point="secret", max_versions=5, cas_required=True,
                                        delete_version_after="768h", custom_metadata={"team": "payments"})
    code, events = w.cli("rotate", w.name)
    assert code == 0, events
    _, meta = w.live()
    assert meta["max_versions"] == 5 and meta["cas_required"] is True and meta["delete_version_after"] == "768h0m0s"
    custom = meta["custom_metadata"]
    assert custom["team"] == "payments" and custom["managed-by"] == "rotator"
    state = w.state()
    assert custom["rotator-key-id"] == state["current"]["key_id"]
    assert custom["rotator-credential"] == w.name and custom["rotator-provider"] == "aws.iam_access_key"
    assert custom["rotator-rotation-id"] == state["current"]["rotation_id"]
    datetime.strptime(custom["rotator-rotated-at"], "%Y-%m-%dT%H:%M:%SZ")
    assert custom["rotator-revoke-now"] == "false"


def test_revoke_now_kills_the_old_key_at_once(aws_world: AwsWorld) -> None:
    """Incident response: the old key is rejected right after the new one is live."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    old, _ = w.live()
    code, events = w.cli("rotate", w.name, "--revoke-now")
    assert code == 0
    new, meta = w.live()
    assert names(events).count("credential.revoked") == 1
    assert w.works(new) and not w.works(old)
    assert w.user_keys() == {new["access_key_id"]}
    # What a record rebuilt after a loss reads: keys of this credential made before it are revoked at once (sim F120).
    assert meta["custom_metadata"]["rotator-revoke-now"] == "true"


def test_a_concurrent_writer_is_detected_not_overwritten(aws_world: AwsWorld) -> None:
    """Someone else's write to the live path stops the rotation; the new key is rolled back."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    ours, _ = w.live()
    w.bao.secrets.kv.v2.create_or_update_secret(path=w.live_path, mount_point="secret", secret={"note": "restored by hand"})
    code, events = w.cli("rotate", w.name)
    assert code == 1
    failed = [e for e in events if e["event"] == "rotation.failed"]
    assert failed and failed[0]["step"] == "promote" and failed[0]["will_retry"] is False
    assert "rotation.rolled_back" in names(events)
    data, meta = w.live()
    assert data == {"note": "restored by hand"} and meta["current_version"] == 2
    assert w.user_keys() == {ours["access_key_id"]}, "the rolled-back key must be deleted"


def test_two_rotate_commands_never_overlap(aws_world: AwsWorld) -> None:
    """Two processes rotating one credential take turns under the lease."""
    import subprocess
    import sys

    from helpers import parse_events

    w = aws_world
    assert w.cli("rotate", w.name, "--revoke-now")[0] == 0
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    procs = [
        subprocess.Popen([sys.executable, "-m", "rotator", "rotate", w.name, "--revoke-now"], env={**base, **w.env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    windows = []
    for (out, err), proc in zip(outputs, procs, strict=True):
        w.ledger.capture("stdout of a concurrent rotate", out)
        w.ledger.capture("stderr of a concurrent rotate", err)
        assert proc.returncode == 0, out + err
        events = parse_events(out)
        start = next(e["timestamp"] for e in events if e["event"] == "rotation.started")
        end = next(e["timestamp"] for e in events if e["event"] == "rotation.completed")
        windows.append((start, end))
    windows.sort()
    assert windows[0][1] <= windows[1][0], f"rotations overlapped: {windows}"
    assert w.state()["rotations"] == 3
    data, meta = w.live()
    assert meta["current_version"] == 3 and w.works(data)


def test_status_shows_facts_and_no_secret(aws_world: AwsWorld) -> None:
    """`rotator status` reports phase, last rotation and pending revocations, never a value."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    assert w.cli("rotate", w.name)[0] == 0
    from helpers import run_rotator

    result = run_rotator(["status", "--json"], w.env)
    w.ledger.capture("status --json", result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    import json

    rows = {r["credential"]: r for r in json.loads(result.stdout)}
    row = rows[w.name]
    assert row["phase"] == "idle" and row["provider"] == "aws.iam_access_key"
    assert len(row["pending_revocations"]) == 1 and row["last_rotated_at"]
    table = run_rotator(["status"], w.env)
    w.ledger.capture("status", table.stdout + table.stderr)
    assert w.name in table.stdout


def test_status_exits_1_when_vault_is_unreachable(aws_world: AwsWorld) -> None:
    """No Vault, no status: exit 1 with a message."""
    from helpers import run_rotator

    result = run_rotator(["status"], {**aws_world.env, "VAULT_ADDR": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert "cannot read state from Vault" in result.stderr
