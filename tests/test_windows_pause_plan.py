"""Windows, pause/resume and `plan` through the real CLI and daemon, against
OpenBao and moto: a closed window holds scheduled work, `rotate NAME`
ignores it; a pause is kept in the state record, shown by status, plan and
report, audited, and lets due revocations happen; `plan` calls no provider
and writes nothing to Vault, shown by a recording proxy in front of each."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aws_world import AwsWorld
from counting_proxy import CountingProxy, aws_mutations, vault_writes
from helpers import DaemonProcess, names, run_rotator, write_credential
from rotator.core.clock import parse_rfc3339


def closed_window() -> dict[str, str]:
    """A one-hour UTC window starting three hours from now: closed for the test's length."""
    start = (datetime.now(UTC).hour + 3) % 24
    return {"hours": f"{start:02d}:00-{(start + 1) % 24:02d}:00", "timezone": "UTC"}


def rewrite(w: AwsWorld, *, every: str = "30d", grace: str = "2s", **extra: object) -> None:
    write_credential(Path(w.env["ROTATOR_CONFIG_DIR"]), w.name,
                     params={"user_name": w.user, "delete_after_deactivation": "0s"}, every=every, grace=grace, path=w.live_path, **extra)


def plan(w: AwsWorld, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run_rotator(["plan", "--json"], env or w.env)
    w.ledger.capture("plan --json", result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    return {r["credential"]: r for r in json.loads(result.stdout)}[w.name]


def test_a_closed_window_holds_the_schedule_and_rotate_name_ignores_it(aws_world: AwsWorld) -> None:
    """No scheduled rotation outside the window (plan says when it opens); `rotate NAME` rotates at once."""
    w = aws_world
    window = closed_window()
    rewrite(w, schedule={"every": "30d", "window": window})
    code, events = w.cli("run", "--once")
    assert code == 0 and "rotation.started" not in names(events)
    assert w.state() is None and w.user_keys() == set()
    row = plan(w)
    assert row["action"] == "wait" and "window" in row["reason"]
    opens = parse_rfc3339(row["at"])
    assert opens.minute == 0 and opens.hour == int(window["hours"][:2]) and timedelta(hours=2) < opens - datetime.now(UTC) <= timedelta(hours=3)
    code, events = w.cli("rotate", w.name)
    assert code == 0 and names(events)[-1] == "rotation.completed"
    data, _ = w.live()
    assert data is not None and w.works(data)


def test_pause_is_kept_in_the_record_shown_everywhere_audited_and_goes_overdue(aws_world: AwsWorld) -> None:
    """pause needs a reason; status, plan and report show it; a pause past the interval is overdue in the report; resume undoes it."""
    w = aws_world
    rewrite(w, every="3s", grace="1s")
    assert w.cli("rotate", w.name)[0] == 0
    code, _ = w.cli("pause", w.name)
    assert code == 2, "a pause without a reason is a usage error"
    assert w.cli("pause", "no-such-credential", "--reason", "x")[0] == 2
    code, events = w.cli("pause", w.name, "--reason", "quarter-end freeze", "--until", "2h", "--by", "alice")
    assert code == 0
    paused = next(e for e in events if e["event"] == "rotation.paused")
    assert paused["credential"] == w.name and paused["reason"] == "quarter-end freeze" and paused["by"] == "alice"
    until = parse_rfc3339(paused["until"])
    assert timedelta(minutes=119) < until - datetime.now(UTC) <= timedelta(hours=2)
    record = w.state()
    assert record["paused"]["reason"] == "quarter-end freeze" and record["paused"]["by"] == "alice"

    # `rotate NAME` still works while paused, and the pause survives the rotation's writes.
    assert w.cli("rotate", w.name, "--revoke-now")[0] == 0
    assert w.state()["paused"]["reason"] == "quarter-end freeze" and w.state()["rotations"] == 2
    status = json.loads(run_rotator(["status", "--json"], w.env).stdout)
    assert next(r for r in status if r["credential"] == w.name)["paused"]["by"] == "alice"
    time.sleep(3.2)  # past the 3 s interval since the last rotation: due, but paused
    row = plan(w)
    assert row["action"] == "paused" and "quarter-end freeze" in row["reason"] and row["paused"]["by"] == "alice"
    report = json.loads(run_rotator(["report", "--format", "json"], {**w.env, "ROTATOR_TICK_SECONDS": "1"}).stdout)
    line = next(r for r in report["credentials"] if r["credential"] == w.name)
    assert line["paused"]["reason"] == "quarter-end freeze" and line["overdue"] is True, "compliance sees the paused credential overdue"
    assert report["summary"]["paused"] == 1

    code, events = w.cli("resume", w.name, "--by", "bob")
    assert code == 0
    resumed = next(e for e in events if e["event"] == "rotation.resumed")
    assert resumed["by"] == "bob" and resumed["reason"] == "quarter-end freeze"
    assert w.state()["paused"] is None
    assert plan(w)["action"] == "rotate"


def test_plan_calls_no_provider_and_writes_nothing_to_vault(aws_world: AwsWorld, openbao, moto) -> None:  # type: ignore[no-untyped-def]
    """With a key past grace, plan says `revoke KEY`; the proxies saw no provider request and no Vault write."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    first = w.state()["current"]["key_id"]
    assert w.cli("rotate", w.name)[0] == 0
    time.sleep(2.2)  # past grace
    version_before = w.bao.secrets.kv.v2.read_secret_metadata(path=f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}", mount_point="secret")["data"]["current_version"]
    with CountingProxy(openbao.addr) as vault, CountingProxy(moto.endpoint) as aws:
        row = plan(w, {**w.env, "VAULT_ADDR": vault.url, "AWS_ENDPOINT_URL": aws.url})
        seen_vault, seen_aws = vault.requests(), aws.requests()
    assert row["action"] == "revoke" and row["key_id"] == first
    assert seen_vault, "plan must read the state from Vault (through the proxy)"
    assert vault_writes(seen_vault) == [], vault_writes(seen_vault)
    assert aws_mutations(seen_aws) == [] and seen_aws == [], "plan calls no provider at all"
    meta = w.bao.secrets.kv.v2.read_secret_metadata(path=f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}", mount_point="secret")["data"]
    assert meta["current_version"] == version_before
    assert first in w.user_keys(), "plan revoked nothing"
    # ...and the pass it predicted does exactly that.
    code, events = w.cli("run", "--once")
    assert code == 0 and first not in w.user_keys()


def test_the_daemon_obeys_windows_and_pauses_and_still_revokes_while_paused(aws_world: AwsWorld, iam_admin, unique: str) -> None:  # type: ignore[no-untyped-def]
    """One daemon, three credentials: window open (rotates), window closed (waits), paused (no rotation, but its due revocation happens)."""
    w = aws_world
    config = Path(w.env["ROTATOR_CONFIG_DIR"])
    users = {kind: f"{kind}-{unique}" for kind in ("open", "closed")}
    for kind, user in users.items():
        iam_admin.create_user(UserName=user)
        window = {"hours": "00:00-24:00", "timezone": "Europe/Berlin"} if kind == "open" else closed_window()
        write_credential(config, user, params={"user_name": user, "delete_after_deactivation": "0s"}, grace="1s",
                         schedule={"every": "30d", "window": window})
    rewrite(w, every="4s", grace="1s")
    assert w.cli("rotate", w.name)[0] == 0
    old = w.state()["current"]["key_id"]
    assert w.cli("rotate", w.name)[0] == 0  # `old` now retiring, past grace in a second
    assert w.cli("pause", w.name, "--reason", "freeze")[0] == 0
    daemon = DaemonProcess({**w.env, "ROTATOR_TICK_SECONDS": "1"})
    try:
        daemon.wait_for(lambda ev: any(e["event"] == "rotation.completed" and e.get("credential") == users["open"] for e in ev)
                        and any(e["event"] == "credential.revoked" and e.get("key_id") == old for e in ev), timeout=60, what="open rotation and paused revocation")
        time.sleep(5)  # past the paused credential's interval (4 s): still no rotation
    finally:
        assert daemon.stop() == 0
        w.ledger.capture("daemon output", daemon.output())
    started = [e.get("credential") for e in daemon.events() if e["event"] == "rotation.started"]
    assert users["open"] in started and users["closed"] not in started and w.name not in started, started
    assert old not in w.user_keys()
