"""`rotator rotate --all | --provider | --owner` (contract §2, incident
response), through the real CLI against OpenBao and moto: each selected
credential rotated once within ROTATOR_MAX_CONCURRENCY, old keys rejected
at once with --revoke-now, a summary on stderr, exit 1 on any failure,
and Ctrl-C finishing the steps in flight while starting no new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import hvac
import pytest

from helpers import SecretLedger, names, parse_events, run_rotator, write_credential


@dataclass
class Fleet:
    """N AWS credentials (one IAM user each) and the means to look at them."""

    env: dict[str, str]
    bao: hvac.Client
    endpoint: str
    config_dir: Path
    users: list[str]
    ledger: SecretLedger

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = run_rotator(list(args), {**self.env, **(extra_env or {})}, timeout=300)
        self.ledger.capture(f"stdout of rotator {' '.join(args)}", result.stdout)
        self.ledger.capture(f"stderr of rotator {' '.join(args)}", result.stderr)
        return result

    def live(self, user: str) -> dict[str, str]:
        data = self.bao.secrets.kv.v2.read_secret_version(path=f"apps/{user}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        self.ledger.add(data["secret_access_key"])
        return data

    def state(self, user: str) -> dict[str, Any]:
        prefix = self.env["ROTATOR_STATE_PREFIX"]
        return self.bao.secrets.kv.v2.read_secret_version(path=f"{prefix}/{user}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]

    def works(self, data: dict[str, str]) -> bool:
        sts = boto3.client("sts", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id=data["access_key_id"], aws_secret_access_key=data["secret_access_key"])
        try:
            sts.get_caller_identity()
        except botocore.exceptions.ClientError:
            return False
        return True


@pytest.fixture
def fleet(request: pytest.FixtureRequest, rotator_env: dict[str, str], bao_client: hvac.Client, iam_admin: Any, unique: str,
          config_dir: Path, moto: Any) -> Any:
    size = getattr(request, "param", 3)
    users = [f"m{i:02d}-{unique}" for i in range(size)]
    for user in users:
        iam_admin.create_user(UserName=user)
        write_credential(config_dir, user, params={"user_name": user, "delete_after_deactivation": "0s"}, grace="1h", path=f"apps/{user}")
    ledger = SecretLedger()
    yield Fleet(rotator_env, bao_client, moto.endpoint, config_dir, users, ledger)
    ledger.assert_clean()


def completed_per_credential(events: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        if event["event"] == "rotation.completed":
            counts[event["credential"]] = counts.get(event["credential"], 0) + 1
    return counts


@pytest.mark.parametrize("fleet", [20], indirect=True)
def test_twenty_aws_keys_rotated_once_each_with_old_keys_rejected(fleet: Fleet) -> None:
    """--provider aws.iam_access_key --revoke-now rotates each of 20 credentials once, 8 at a time;
    every old key is rejected at STS, every new one works; the progress bar is drawn on a terminal
    stderr while stdout stays one JSON event per line."""
    first = fleet.cli("rotate", "--all")
    assert first.returncode == 0, first.stderr[-2000:]
    old = {user: fleet.live(user) for user in fleet.users}

    master, slave = os.openpty()  # stderr on a terminal, stdout a pipe
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "rotator", "rotate", "--provider", "aws.iam_access_key", "--revoke-now"],
                            env={**base, **fleet.env, "ROTATOR_MAX_CONCURRENCY": "8"}, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    terminal = _drain(master)
    out, _ = proc.communicate(timeout=300)
    tty_text = terminal()
    fleet.ledger.capture("stdout of rotate --provider", out)
    fleet.ledger.capture("terminal of rotate --provider", tty_text)
    assert proc.returncode == 0, tty_text[-2000:]

    events = parse_events(out)
    assert completed_per_credential(events) == {user: 1 for user in fleet.users}
    assert sum(1 for e in events if e["event"] == "credential.revoked") == 20
    for user in fleet.users:
        new = fleet.live(user)
        assert new["access_key_id"] != old[user]["access_key_id"]
        assert fleet.works(new)
        assert not fleet.works(old[user]), f"{user}: the old key still authenticates after --revoke-now"
        state = fleet.state(user)
        assert state["rotations"] == 2 and state["retiring"] == []
    assert "rotate [" in tty_text and "20/20" in tty_text, "no progress bar on the terminal"
    assert "rotate: 20 credential(s)" in tty_text and "20 done, 0 failed, 0 rolled back" in tty_text
    in_flight = _max_in_flight(events)
    assert 1 < in_flight <= 8, f"{in_flight} rotations were in flight at once (ROTATOR_MAX_CONCURRENCY=8)"


def test_a_failing_credential_makes_exit_1_and_a_true_summary(fleet: Fleet, iam_admin: Any) -> None:
    """One credential whose IAM user is gone fails at its first step, `start` (a rotation
    first lists the user's keys, to find any a lost record left: sim F40): exit 1, the
    others rotated, and the summary names the failure and its step, and holds no secret value."""
    gone = fleet.users[1]
    iam_admin.delete_user(UserName=gone)
    result = fleet.cli("rotate", "--all", "--revoke-now")
    assert result.returncode == 1, result.stderr[-2000:]
    events = parse_events(result.stdout)
    assert completed_per_credential(events) == {u: 1 for u in fleet.users if u != gone}
    rows = _summary_rows(result.stderr)
    assert rows[gone][:2] == ["failed", "start"], rows
    assert "NoSuchEntity" in rows[gone][2], rows
    assert "NoSuchEntity" in rows[gone][2] or "not" in rows[gone][2].lower()
    assert all(rows[u][0] == "done" for u in fleet.users if u != gone)
    assert "rotate: 3 credential(s)" in result.stderr and "2 done, 1 failed, 0 rolled back" in result.stderr
    for user in fleet.users:
        if user != gone:
            assert fleet.works(fleet.live(user))


def test_owner_and_provider_select_and_unknown_selections_exit_2(fleet: Fleet) -> None:
    """--owner picks only that owner's files (with --provider as well); a selection of nothing, NAMEs with --all,
    or an unknown NAME is exit 2 and rotates nothing."""
    other = fleet.users[0]
    write_credential(fleet.config_dir, other, params={"user_name": other}, grace="1h", path=f"apps/{other}", owner="other-team")
    result = fleet.cli("rotate", "--owner", "platform-team", "--provider", "aws.iam_access_key")
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(completed_per_credential(parse_events(result.stdout))) == set(fleet.users[1:])
    for args in (["--owner", "nobody"], ["--provider", "stripe.webhook_secret"], [other, "--all"], ["no-such-cred"], []):
        result = fleet.cli("rotate", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "rotation.started" not in names(parse_events(result.stdout))
    with pytest.raises(hvac.exceptions.InvalidPath):
        fleet.state(other)


@pytest.mark.parametrize("fleet", [6], indirect=True)
def test_ctrl_c_finishes_the_steps_in_flight_and_starts_no_new_rotation(fleet: Fleet) -> None:
    """SIGINT after the first completed rotation (one at a time): no rotation starts after it, the run
    exits 1 with the rest 'not started', and a second run finishes everything (resuming any half-done one)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "rotator", "rotate", "--all"], env={**base, **fleet.env, "ROTATOR_MAX_CONCURRENCY": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    interrupted_at = None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if interrupted_at is None and '"rotation.completed"' in line:
            proc.send_signal(signal.SIGINT)
            interrupted_at = len(lines)
        assert time.monotonic() < deadline
    out_rest, err = proc.communicate(timeout=120)
    out = "".join(lines) + out_rest
    fleet.ledger.capture("stdout of an interrupted rotate", out)
    fleet.ledger.capture("stderr of an interrupted rotate", err)
    assert interrupted_at is not None, err[-2000:]
    assert proc.returncode == 1, err[-2000:]
    events = parse_events(out)
    started = [e["credential"] for e in events if e["event"] == "rotation.started"]
    assert len(started) <= 2, f"rotations started after Ctrl-C: {started}"
    assert "finishing the steps in flight" in err
    rows = _summary_rows(err)
    assert sum(1 for r in rows.values() if r[0] == "not started") >= len(fleet.users) - 2
    assert sum(1 for r in rows.values() if r[0] == "done") >= 1

    again = fleet.cli("rotate", "--all")
    assert again.returncode == 0, again.stderr[-2000:]
    for user in fleet.users:
        state = fleet.state(user)
        assert state["pending"] is None and state["rotations"] >= 1
        assert fleet.works(fleet.live(user))


# -- helpers ---------------------------------------------------------------------


def _drain(fd: int) -> Any:
    """Read a pty's master side in the background; returns a function giving all text read."""
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def text() -> str:
        thread.join(timeout=10)
        os.close(fd)
        return b"".join(chunks).decode(errors="replace")

    return text


def _summary_rows(stderr: str) -> dict[str, list[str]]:
    """credential -> [result, step, reason] from the summary table."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CREDENTIAL"))
    header = lines[start]
    cols = [header.index(h) for h in ("CREDENTIAL", "PROVIDER", "RESULT", "KEY ID", "STEP", "REASON")]
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("rotate: "):
            break
        cells = [line[a:b].strip() for a, b in zip(cols, [*cols[1:], None])]
        rows[cells[0]] = [cells[2], cells[4], cells[5]]
    return rows


def _max_in_flight(events: list[dict[str, Any]]) -> int:
    level = peak = 0
    for event in events:
        if event["event"] == "rotation.started":
            level += 1
            peak = max(peak, level)
        elif event["event"] in ("rotation.completed", "rotation.failed"):
            level -= 1
    return peak
