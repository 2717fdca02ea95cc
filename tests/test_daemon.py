"""`rotator run` as a real process: signals, replicas, health endpoints and
systemd notifications, against OpenBao and moto."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path

import hvac

from helpers import DaemonProcess, SecretLedger, names, write_credential
from rotator.core.crashpoints import pause_env
from rotator.sandbox.services import free_port


def state_of(bao: hvac.Client, env: dict[str, str], name: str) -> dict:
    path = f"{env['ROTATOR_STATE_PREFIX']}/{name}"
    return bao.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]


def completed(events: list[dict], name: str | None = None) -> list[dict]:
    return [e for e in events if e["event"] == "rotation.completed" and (name is None or e["credential"] == name)]


def scan(ledger: SecretLedger, bao: hvac.Client, live_paths: list[str], *outputs: str) -> None:
    for path in live_paths:
        data = bao.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        ledger.add(data.get("secret_access_key"))
    for text in outputs:
        ledger.capture("daemon output", text)
    ledger.assert_clean()


def test_sigterm_finishes_the_step_in_flight_releases_the_lease_and_exits_0(rotator_env, config_dir: Path, iam_user: str, bao_client) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM mid-rotation: the current step completes, no new one starts, exit 0."""
    write_credential(config_dir, iam_user, params={"user_name": iam_user})
    daemon = DaemonProcess({**rotator_env, "ROTATOR_TICK_SECONDS": "1", **pause_env("after-stash:3")})
    daemon.wait_for(lambda ev: "credential.issued" in names(ev), what="credential.issued")
    assert daemon.stop(signal.SIGTERM) == 0
    events = daemon.events()
    assert names(events)[-1] == "daemon.stopped"
    assert "credential.verified" not in names(events), "no new step may start after SIGTERM"
    state = state_of(bao_client, rotator_env, iam_user)
    assert state["pending"]["phase"] == "issued" and state["lease"] is None
    # The next daemon picks the rotation up where it stopped.
    again = DaemonProcess({**rotator_env, "ROTATOR_TICK_SECONDS": "1"})
    again.wait_for(lambda ev: completed(ev, iam_user), what="rotation.completed")
    assert again.stop() == 0
    assert [e["reason"] for e in again.events() if e["event"] == "rotation.started"] == ["recovery"]
    scan(SecretLedger(), bao_client, [f"apps/{iam_user}"], daemon.output(), again.output())


def test_sighup_reloads_files_and_keeps_the_last_good_version_of_a_broken_one(rotator_env, config_dir: Path, iam_admin, unique: str, bao_client) -> None:  # type: ignore[no-untyped-def]
    """Added files are picked up; a file that breaks keeps its last good version, logged."""
    users = [f"hup-{unique}-{i}" for i in range(2)]
    for user in users:
        iam_admin.create_user(UserName=user)
    first = write_credential(config_dir, users[0], params={"user_name": users[0]})
    daemon = DaemonProcess({**rotator_env, "ROTATOR_TICK_SECONDS": "1"})
    daemon.wait_for(lambda ev: completed(ev, users[0]), what="the first rotation")
    write_credential(config_dir, users[1], params={"user_name": users[1]})
    first.write_text("provider: [broken\n")
    daemon.proc.send_signal(signal.SIGHUP)
    events = daemon.wait_for(lambda ev: completed(ev, users[1]), what="the added credential's rotation")
    assert "config.reload" in names(events)
    invalid = [e for e in events if e["event"] == "config.invalid"]
    assert invalid and invalid[0]["file"] == str(first)
    kept = [e for e in events if e["event"] == "config.kept_last_good"]
    assert kept and kept[0]["credential"] == users[0]
    assert daemon.stop() == 0
    scan(SecretLedger(), bao_client, [f"apps/{u}" for u in users], daemon.output())


def test_three_replicas_rotate_each_credential_exactly_once(rotator_env, config_dir: Path, iam_admin, unique: str, bao_client) -> None:  # type: ignore[no-untyped-def]
    """Active-active replicas sharing one Vault: none rotated twice, none skipped."""
    users = [f"rep-{unique}-{i}" for i in range(12)]
    for user in users:
        iam_admin.create_user(UserName=user)
        write_credential(config_dir, user, params={"user_name": user})
    env = {**rotator_env, "ROTATOR_TICK_SECONDS": "0.5"}
    replicas = [DaemonProcess(env) for _ in range(3)]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done = sum(len(completed(r.events())) for r in replicas)
        if done >= len(users):
            break
        time.sleep(0.2)
    time.sleep(2)  # give any duplicate a chance to show itself
    for replica in replicas:
        assert replica.stop() == 0
    per_credential: dict[str, int] = {}
    for replica in replicas:
        for event in completed(replica.events()):
            per_credential[event["credential"]] = per_credential.get(event["credential"], 0) + 1
    assert per_credential == {user: 1 for user in users}
    for user in users:
        state = state_of(bao_client, rotator_env, user)
        assert state["rotations"] == 1 and state["pending"] is None
        meta = bao_client.secrets.kv.v2.read_secret_metadata(path=f"apps/{user}", mount_point="secret")["data"]
        assert meta["current_version"] == 1
        assert len(iam_admin.list_access_keys(UserName=user)["AccessKeyMetadata"]) == 1
    scan(SecretLedger(), bao_client, [f"apps/{u}" for u in users], *(r.output() for r in replicas))


def test_health_readiness_metrics_and_systemd_notifications(rotator_env, config_dir: Path, iam_user: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """/healthz, /readyz and /metrics answer; READY, WATCHDOG and STOPPING reach NOTIFY_SOCKET."""
    write_credential(config_dir, iam_user, params={"user_name": iam_user})
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(0.2)
    port = free_port()
    daemon = DaemonProcess({**rotator_env, "ROTATOR_TICK_SECONDS": "1", "ROTATOR_METRICS_ADDR": f"127.0.0.1:{port}", "NOTIFY_SOCKET": str(sock_path)})
    daemon.wait_for(lambda ev: completed(ev, iam_user), what="a rotation")

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    assert get("/healthz")[0] == 200
    assert get("/readyz")[0] == 200
    # The counter is bumped when the reconcile returns, a moment after its
    # last event was printed: poll for it (bounded) rather than race it.
    expected = f'rotator_rotations_total{{credential="{iam_user}",outcome="completed",provider="aws.iam_access_key"}} 1.0'
    deadline = time.monotonic() + 10
    status, body = get("/metrics")
    while expected not in body and time.monotonic() < deadline:
        time.sleep(0.1)
        status, body = get("/metrics")
    assert status == 200
    for metric in ("rotator_rotations_total", "rotator_rotation_duration_seconds", "rotator_credential_age_seconds",
                   "rotator_next_rotation_timestamp_seconds", "rotator_pending_revocations", "rotator_overdue_credentials"):
        assert metric in body
    assert expected in body
    assert daemon.stop() == 0
    messages = []
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except TimeoutError:
            break
    listener.close()
    assert "READY=1" in messages and "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"


def test_a_running_daemon_notices_a_manual_rotation_and_revokes_after_grace(rotator_env, config_dir: Path, iam_user: str, iam_admin, bao_client) -> None:  # type: ignore[no-untyped-def]
    """`rotator rotate` beside a running daemon: the daemon learns of the new grace period from the change feed."""
    from helpers import run_rotator

    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, grace="2s")
    env = {**rotator_env, "ROTATOR_TICK_SECONDS": "0.5", "ROTATOR_CHANGE_POLL_SECONDS": "1"}
    daemon = DaemonProcess(env)
    daemon.wait_for(lambda ev: completed(ev, iam_user), what="the first rotation")
    manual = run_rotator(["rotate", iam_user], env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    revoked = daemon.wait_for(lambda ev: "credential.revoked" in names(ev), timeout=30, what="the daemon revoking the old key")
    assert len(completed(revoked)) == 1, "the daemon itself rotated only once"
    assert daemon.stop() == 0
    assert len(iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]) == 1
    scan(SecretLedger(), bao_client, [f"apps/{iam_user}"], daemon.output(), manual.stdout, manual.stderr)


def test_a_broken_file_and_a_failing_provider_never_stop_the_others(rotator_env, config_dir: Path, iam_user: str, bao_client) -> None:  # type: ignore[no-untyped-def]
    """One bad file and one failing credential: the good one rotates; the daemon says it is degraded."""
    write_credential(config_dir, iam_user, params={"user_name": iam_user})
    write_credential(config_dir, "ghost", params={"user_name": "no-such-user-anywhere"})
    (config_dir / "broken.yaml").write_text("provider: aws.iam_access_key\nowner: x\ncolour: blue\n")
    daemon = DaemonProcess({**rotator_env, "ROTATOR_TICK_SECONDS": "0.5"})
    events = daemon.wait_for(
        lambda ev: completed(ev, iam_user) and any(e["event"] == "daemon.degraded" and e["failing_credentials"] for e in ev),
        what="a rotation and the degraded report",
    )
    assert daemon.stop() == 0
    invalid = [e for e in events if e["event"] == "config.invalid"]
    assert {Path(e["file"]).name for e in invalid} == {"broken.yaml"}
    degraded = [e for e in daemon.events() if e["event"] == "daemon.degraded"]
    assert degraded[-1]["failing_credentials"] == ["ghost"] and degraded[-1]["config_problems"] >= 1
    failed = [e for e in events if e["event"] == "rotation.failed" and e["credential"] == "ghost"]
    assert failed and failed[0]["will_retry"] is False
    scan(SecretLedger(), bao_client, [f"apps/{iam_user}"], daemon.output())
