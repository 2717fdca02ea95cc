"""`rotator plan`'s answers for each kind of state, from plain records (the
plan comes from the state machine itself), and one unreadable record in a
real OpenBao that must not hide the other credentials' plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import write_credential
from rotator.core import machine as m
from rotator.core import transitions
from rotator.wiring import build_app, load_credentials
from rotator.core.clock import FakeClock
from rotator.config.spec import LoadedCredential
from rotator.config.loader import load_file
from rotator.commands.plan import collect_plan, plan_row
from rotator.core.provider import IssuedCredential
from rotator.engine.registry import load_providers
from rotator.config.settings import Settings
from rotator.core.state import Pause, StateRecord

NOW = datetime(2026, 3, 4, 12, tzinfo=UTC)  # a Wednesday


def cred(tmp_path: Path, **extra: object) -> LoadedCredential:
    path = write_credential(tmp_path, "c", params={"user_name": "u"}, every="30d", grace="1h", **extra)
    loaded = load_file(path, load_providers())
    assert isinstance(loaded, LoadedCredential), loaded
    return loaded


def policy(c: LoadedCredential) -> m.Policy:
    return m.Policy(schedule=c.spec.schedule, grace=c.spec.grace, retire_delay=timedelta(0), fingerprint=c.fingerprint)


def rotated(c: LoadedCredential, at: datetime, n: int = 1, record: StateRecord | None = None) -> StateRecord:
    record = record or StateRecord.new("c", "aws.iam_access_key")
    for outcome in (m.Started(f"r{n}", "manual"), m.IssueBegun(), m.Issued(IssuedCredential(key_id=f"K{n}", data={}, handle={})),
                    m.Verified(1), m.Promoted(n, 0.0)):
        record = transitions.apply(record, outcome, policy(c), at)
    return record


def test_each_state_gets_its_action_and_reason(tmp_path: Path) -> None:
    """Never rotated: rotate; fresh: wait for the schedule; in grace: wait; past grace: revoke K1; blocked: blocked."""
    c = cred(tmp_path)
    p = policy(c)
    first = plan_row(c, None, p, NOW)
    assert first["action"] == "rotate" and "never rotated" in first["reason"]
    one = rotated(c, NOW)
    row = plan_row(c, one, p, NOW + timedelta(minutes=5))
    assert row["action"] == "wait" and row["at"] == NOW + timedelta(days=30) and "schedule" in row["reason"]
    two = rotated(c, NOW, 2, record=one)
    row = plan_row(c, two, p, NOW + timedelta(minutes=5))
    assert row["action"] == "wait" and row["at"] == NOW + timedelta(hours=1) and "grace of K1" in row["reason"]
    row = plan_row(c, two, p, NOW + timedelta(hours=2))
    assert (row["action"], row["key_id"]) == ("revoke", "K1") and "last used" in row["reason"]
    due = plan_row(c, one, p, NOW + timedelta(days=31))
    assert due["action"] == "rotate" and "due since" in due["reason"]
    blocked = one.model_copy(update={"blocked_fingerprint": c.fingerprint, "last_error": "AWS AccessDenied while creating", "last_error_step": "issue"})
    row = plan_row(c, blocked, p, NOW + timedelta(days=31))
    assert row["action"] == "blocked" and "AccessDenied" in row["reason"]
    backing_off = one.model_copy(update={"attempts": 2, "next_attempt_at": NOW + timedelta(days=31, minutes=1),
                                         "last_error": "AWS Throttling", "last_error_step": "issue"})
    row = plan_row(c, backing_off, p, NOW + timedelta(days=31))
    assert row["action"] == "wait" and "Throttling" in row["reason"] and row["at"] == NOW + timedelta(days=31, minutes=1)


def test_paused_and_window_waits_say_so(tmp_path: Path) -> None:
    """Paused: `paused` with who and why; due outside the window: wait for the window's opening."""
    c = cred(tmp_path, schedule={"every": "30d", "window": {"days": ["sat"], "hours": "02:00-04:00", "timezone": "UTC"}})
    p = policy(c)
    one = rotated(c, NOW)
    friday = NOW + timedelta(days=30, hours=6)  # due since noon; the window opens on Saturday at 02:00
    row = plan_row(c, one, p, friday)
    assert row["action"] == "wait" and row["at"] == datetime(2026, 4, 4, 2, tzinfo=UTC)
    assert "due 2026-04-03T12:00:00Z, starts when the window (sat 02:00-04:00 UTC) opens" in row["reason"]
    saturday_noon = NOW + timedelta(days=31)  # that window was missed (say the daemon was down): the next one
    row = plan_row(c, one, p, saturday_noon)
    assert row["at"] == datetime(2026, 4, 11, 2, tzinfo=UTC) and "window (sat 02:00-04:00 UTC) for the rotation due since 2026-04-03" in row["reason"]
    due = friday
    paused = one.model_copy(update={"paused": Pause(reason="change freeze", by="dave@host", at=NOW)})
    row = plan_row(c, paused, p, due)
    assert row["action"] == "paused" and "change freeze" in row["reason"] and "dave@host" in row["reason"] and row["at"] is None


def test_an_unreadable_record_is_blocked_and_the_others_are_planned(openbao, bao_client, unique: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A record edited into nonsense blocks only its own credential's plan (the error names no value)."""
    for name in ("good", "broken"):
        write_credential(tmp_path, name, params={"user_name": name})
    settings = Settings(vault_addr=openbao.addr, vault_token=openbao.token, state_prefix=f"rotator-test/{unique}", config_dir=tmp_path)
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"{settings.state_prefix}/broken", mount_point="secret",
                                                     secret={"credential": "broken", "provider": "aws.iam_access_key", "rotations": "many"})
    app = build_app(settings, clock=FakeClock(NOW))
    rows = {r["credential"]: r for r in collect_plan(app, load_credentials(settings))}
    assert rows["good"]["action"] == "rotate"
    assert rows["broken"]["action"] == "blocked" and "malformed" in rows["broken"]["reason"] and "many" not in rows["broken"]["reason"]
