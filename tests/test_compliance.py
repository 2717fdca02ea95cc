"""Compliance findings (unused, unmanaged, overdue) as pure functions on plain
values; the scanner against OpenBao and the fake GitHub with an injected
clock; and the `rotator audit seal` / `audit verify` command line."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml

from rotator_providers.github_app import new_ed25519_pair
from rotator.audit import events as audit
from rotator.wiring import App, build_app
from rotator.audit.writer import AuditFile
from rotator.audit.verify import verify
from rotator.core.clock import FakeClock, to_rfc3339
from rotator.compliance.scan import (
    ComplianceScanner,
    assess,
    orphans_to_disable,
    overdue_finding,
    unmanaged_findings,
    unused_findings,
)
from rotator.config.spec import CredentialSpec, LoadedCredential
from rotator.config.loader import load_file
from rotator.config.policy import ApiHostRule, TrustRules
from rotator.core.provider import KeyMark, ProviderKey
from rotator.engine.registry import load_providers
from rotator.sandbox.github import FakeGitHub
from rotator.config.settings import Settings
from rotator.core.state import KeyRecord, Lease, Pending, Retiring, StateRecord
from rotator.testing.leaks import assert_no_leaks

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TICK = timedelta(seconds=10)


def _spec(**extra: Any) -> CredentialSpec:
    doc = {"name": "ci", "provider": "aws.iam_access_key", "owner": "platform", "schedule": {"every": "30d"},
           "grace": "1h", "vault": {"path": "apps/ci"}, "unused_after": "7d", **extra}
    return CredentialSpec.model_validate(doc)


def _key_record(key_id: str, issued_at: datetime = T0) -> KeyRecord:
    return KeyRecord(key_id=key_id, rotation_id=f"r-{key_id}", issued_at=issued_at)


def _record(current: str | None = "LIVE", *, rotated_at: datetime | None = T0, **extra: Any) -> StateRecord:
    return StateRecord(credential="ci", provider="aws.iam_access_key", current=_key_record(current) if current else None,
                       last_rotated_at=rotated_at, **extra)


def _key(key_id: str, *, mark: str | None = "ci", created: datetime | None = T0, used: datetime | None = None, active: bool = True) -> ProviderKey:
    return ProviderKey(key_id=key_id, handle={"key_id": key_id}, created_at=created, active=active, last_used_at=used,
                       mark=KeyMark(mark, "r-1") if mark else None)


# -- unused ---------------------------------------------------------------------------


def test_live_key_not_used_for_longer_than_the_window_is_unused() -> None:
    """A live key last used 8 days ago with unused_after 7d is reported, marked live."""
    (finding,) = unused_findings(_spec(), _record(), [_key("LIVE", used=T0)], T0 + timedelta(days=8))
    assert (finding.kind, finding.key_id, finding.is_live, finding.last_used) == ("unused", "LIVE", True, T0)


def test_a_key_used_within_the_window_is_not_unused() -> None:
    """Use inside the window clears the key."""
    assert unused_findings(_spec(), _record(), [_key("LIVE", used=T0 + timedelta(days=2))], T0 + timedelta(days=8)) == []


def test_a_never_used_key_counts_from_when_it_was_made() -> None:
    """Never used: young is fine, older than the window is unused; the record's issued_at stands in for a missing created_at."""
    spec, record = _spec(), _record()
    assert unused_findings(spec, record, [_key("LIVE")], T0 + timedelta(days=6)) == []
    assert [f.key_id for f in unused_findings(spec, record, [_key("LIVE")], T0 + timedelta(days=8))] == ["LIVE"]
    assert [f.key_id for f in unused_findings(spec, record, [_key("LIVE", created=None)], T0 + timedelta(days=8))] == ["LIVE"]


def test_inactive_and_unmanaged_keys_are_never_reported_unused() -> None:
    """An inactive key cannot be used, and someone else's key is reported as unmanaged instead."""
    keys = [_key("LIVE", used=T0 + timedelta(days=9)), _key("OLD", active=False), _key("HAND", mark=None)]
    assert unused_findings(_spec(), _record(), keys, T0 + timedelta(days=10)) == []


def test_without_unused_after_nothing_is_unused() -> None:
    """The feature is off by default."""
    spec = _spec(unused_after=None)
    assert spec.unused_after is None and unused_findings(spec, _record(), [_key("LIVE")], T0 + timedelta(days=400)) == []


# -- unmanaged ------------------------------------------------------------------------


def test_unmanaged_is_an_unmarked_key_the_record_does_not_know() -> None:
    """A hand-made key is unmanaged; a recorded key, or one marked by any rotator credential, is not."""
    record = _record(retiring=[Retiring(key=_key_record("RET"), superseded_by="r-2", revoke_after=T0)])
    keys = [_key("LIVE", mark=None), _key("RET", mark=None), _key("OTHER", mark="another-cred"), _key("HAND", mark=None)]
    assert [f.key_id for f in unmanaged_findings(_spec(), record, keys)] == ["HAND"]
    assert [f.key_id for f in unmanaged_findings(_spec(), None, [_key("HAND", mark=None)])] == ["HAND"]


def test_an_unmarked_key_made_during_a_rotation_in_flight_is_not_unmanaged() -> None:
    """Where the mark is a second call, the rotation in flight may own a fresh unmarked key; a preexisting one is still reported."""
    pending = Pending(rotation_id="r-2", reason="schedule", started_at=T0, phase="issuing", preexisting_key_ids=["HAND"])
    record = _record(pending=pending)
    keys = [_key("FRESH", mark=None, created=T0 + timedelta(seconds=1)), _key("HAND", mark=None, created=T0 - timedelta(days=3))]
    assert [f.key_id for f in unmanaged_findings(_spec(), record, keys, is_marking_atomic=False)] == ["HAND"]
    assert {f.key_id for f in unmanaged_findings(_spec(), record, keys, is_marking_atomic=True)} == {"FRESH", "HAND"}


# -- overdue --------------------------------------------------------------------------


def test_overdue_only_past_the_due_time_plus_one_tick() -> None:
    """Due at last rotation + 30d; within one tick after that it is not yet overdue."""
    spec, record = _spec(), _record()
    due = T0 + timedelta(days=30)
    assert overdue_finding(spec, record, due + TICK, allowance=TICK) is None
    finding = overdue_finding(spec, record, due + TICK + timedelta(seconds=1), allowance=TICK)
    assert finding is not None and finding.due_at == due and finding.key_id == "LIVE" and finding.last_rotated_at == T0


def test_overdue_follows_a_cron_schedule_and_ignores_never_rotated_credentials() -> None:
    """A weekly cron is due at the next Monday 03:00; a credential never rotated is due, not overdue."""
    spec = _spec(schedule={"cron": "0 3 * * MON"})  # T0 is a Sunday
    assert overdue_finding(spec, _record(), T0 + timedelta(hours=27), allowance=TICK) is None
    assert overdue_finding(spec, _record(), T0 + timedelta(hours=28), allowance=TICK) is not None
    assert overdue_finding(spec, _record(rotated_at=None), T0 + timedelta(days=400), allowance=TICK) is None


def test_a_provider_that_never_reports_use_calls_no_key_unused() -> None:
    """Without last-use data "never used" would be a guess: unmanaged keys are still reported."""
    keys = [_key("LIVE"), _key("HAND", mark=None)]
    findings = assess(_spec(), _record(), keys, T0 + timedelta(days=9), allowance=TICK, reports_last_use=False)
    assert [(f.kind, f.key_id) for f in findings] == [("unmanaged", "HAND")]


def test_assess_without_a_listing_reports_only_overdue() -> None:
    """A provider that cannot list yields no key findings, only the schedule's."""
    kinds = [f.kind for f in assess(_spec(), _record(), None, T0 + timedelta(days=40), allowance=TICK)]
    assert kinds == ["overdue"]


# -- on_unused: disable -----------------------------------------------------------------


def test_disable_picks_only_old_unused_orphans_never_the_live_or_recorded_keys() -> None:
    """Candidates exclude the live key, retiring keys, the key Vault names live, young orphans and others' keys."""
    spec = _spec(on_unused="disable")
    now = T0 + timedelta(days=20)
    record = _record(retiring=[Retiring(key=_key_record("RET"), superseded_by="r-2", revoke_after=T0)])
    keys = [_key("LIVE"), _key("RET"), _key("ORPHAN"), _key("VAULT-LIVE"), _key("YOUNG", created=now - timedelta(days=2)),
            _key("HAND", mark=None)]
    findings = assess(spec, record, keys, now, allowance=TICK)
    assert {f.key_id for f in findings if f.kind == "unused"} == {"LIVE", "RET", "ORPHAN", "VAULT-LIVE"}
    assert orphans_to_disable(spec, record, findings, now, live_key_id="VAULT-LIVE") == ["ORPHAN"]
    assert orphans_to_disable(_spec(), record, findings, now, live_key_id=None) == []  # report only by default


def test_disable_waits_while_a_rotation_may_be_in_flight() -> None:
    """A pending rotation or a held lease stops disabling: its fresh key could look like an orphan."""
    spec, now = _spec(on_unused="disable"), T0 + timedelta(days=20)
    findings = assess(spec, _record(), [_key("ORPHAN")], now, allowance=TICK)
    pending = Pending(rotation_id="r-2", reason="schedule", started_at=now, phase="issued")
    lease = Lease(holder="other", expires_at=now + timedelta(minutes=5))
    assert orphans_to_disable(spec, _record(), findings, now, live_key_id=None) == ["ORPHAN"]
    assert orphans_to_disable(spec, _record(pending=pending), findings, now, live_key_id=None) == []
    assert orphans_to_disable(spec, _record(lease=lease), findings, now, live_key_id=None) == []


def test_credential_file_fields_are_validated_and_keep_old_fingerprints() -> None:
    """disable needs unused_after; leaving both at their defaults leaves the file's fingerprint unchanged."""
    with pytest.raises(ValueError, match="disable needs unused_after"):
        _spec(unused_after=None, on_unused="disable")
    with pytest.raises(ValueError, match="at least 1s"):
        _spec(unused_after="0s")
    plain = _spec(unused_after=None)
    before = {k: v for k, v in plain.model_dump(mode="json").items() if k not in {"unused_after", "on_unused"}}
    before["schedule"].pop("window")  # added later too (issue 14), left out at their defaults
    before.pop("revocation")
    before.pop("notify")
    digest = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert plain.fingerprint() == digest
    assert plain.fingerprint() != _spec().fingerprint() != _spec(on_unused="disable").fingerprint()


# -- the scanner, against OpenBao and the fake GitHub ---------------------------------------


REPO = "acme/api"


@dataclass
class GitHubEstate:
    app: App
    clock: FakeClock
    fake: FakeGitHub
    config_dir: Path
    events: Callable[[], list[dict[str, Any]]]
    secrets: list[str]
    app_key_ref: str

    def credential(self, name: str, **extra: Any) -> LoadedCredential:
        doc = {
            "provider": "github.deploy_key", "owner": "platform", "schedule": {"every": "30d"}, "grace": "1h",
            "vault": {"path": f"apps/{name}"}, "unused_after": "7d",
            "params": {"app_id": 11, "installation_id": 22, "private_key": self.app_key_ref, "api_url": self.fake.url, "repository": REPO},
            **extra,
        }
        path = self.config_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        loaded = load_file(path, load_providers(), rules=TrustRules(ApiHostRule(allow_loopback_http=True)))  # the sandbox is loopback http
        assert isinstance(loaded, LoadedCredential), loaded
        return loaded

    def rotate(self, cred: LoadedCredential) -> None:
        result = self.app.engine.reconcile(cred)
        assert result.status == "completed", result.status
        record, _ = self.app.engine.read_record(cred.spec.name)
        assert record is not None and record.current is not None

    def found(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == event]


@pytest.fixture
def captured() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    stream = io.StringIO()
    audit.configure(fmt="json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    audit.configure(fmt="json")


@pytest.fixture
def estate(openbao: Any, bao_client: hvac.Client, unique: str, tmp_path: Path,
           captured: Callable[[], list[dict[str, Any]]]) -> Iterator[GitHubEstate]:
    clock = FakeClock(T0)
    fake = FakeGitHub(clock=clock).start()
    pem = fake.create_app(11, 22, repositories=[REPO])
    bao_client.secrets.kv.v2.create_or_update_secret(path=f"gh-{unique}/app", mount_point="secret", secret={"private_key": pem})
    settings = Settings(vault_addr=openbao.addr, vault_token=openbao.token, state_prefix=f"rotator-test/{unique}", allow_loopback_http=True,
                        config_dir=tmp_path, compliance_scan_seconds=3600, tick_seconds=10)
    app = build_app(settings, clock=clock)
    world = GitHubEstate(app, clock, fake, tmp_path, captured, [pem], f"secret/gh-{unique}/app#private_key")
    yield world
    fake.stop()
    text = json.dumps(captured())
    for name in (p.stem for p in tmp_path.glob("*.yaml")):
        try:
            live = bao_client.secrets.kv.v2.read_secret_version(path=f"apps/{name}", mount_point="secret", raise_on_deleted_version=True)
            world.secrets.append(live["data"]["data"]["private_key"])
        except hvac.exceptions.InvalidPath:
            pass
    assert_no_leaks(text, world.secrets, where="scanner events")


def _scanner(estate: GitHubEstate) -> ComplianceScanner:
    return ComplianceScanner.for_app(estate.app)


def test_scanner_reports_each_finding_once_per_window_and_leaves_unmanaged_keys_alone(estate: GitHubEstate) -> None:
    """A hand-made deploy key is reported unmanaged, the idle live key unused, each once per window, both kept."""
    cred = estate.credential("deploy")
    estate.rotate(cred)
    _, public = new_ed25519_pair()
    hand = str(estate.fake.add_deploy_key(REPO, public, title="added by hand"))
    scanner = _scanner(estate)
    scanner.scan(cred)
    assert [e["key_id"] for e in estate.found("credential.unmanaged")] == [hand]
    assert estate.found("credential.unused") == []
    estate.clock.advance(timedelta(days=8))
    scanner.scan(cred)
    scanner.scan(cred)  # same window: nothing new
    assert len(estate.found("credential.unmanaged")) == 2
    (unused,) = estate.found("credential.unused")
    assert unused["live"] is True and unused["last_used"] is None and unused["credential"] == "deploy"
    assert unused["provider"] == "github.deploy_key" and unused["level"] == "warning"
    estate.fake.use_deploy_key(REPO, unused["key_id"])
    estate.clock.advance(timedelta(hours=1))
    scanner.scan(cred)
    assert len(estate.found("credential.unused")) == 1, "a key in use again is no longer reported"
    assert hand in {str(k["id"]) for k in estate.fake.deploy_keys(REPO)}, "an unmanaged key is never touched"


def test_scanner_reports_an_overdue_credential(estate: GitHubEstate) -> None:
    """Past due by more than one tick: credential.overdue with the due time and the live key."""
    cred = estate.credential("late")
    estate.rotate(cred)
    record, _ = estate.app.engine.read_record("late")
    estate.clock.advance(timedelta(days=31))
    _scanner(estate).scan(cred)
    (overdue,) = estate.found("credential.overdue")
    assert record.last_rotated_at is not None  # GitHub writes are spaced 1 s apart, on this clock too
    assert overdue["key_id"] == record.current.key_id
    assert overdue["due_at"] == to_rfc3339(record.last_rotated_at + timedelta(days=30))


def test_disable_revokes_an_old_unused_orphan_and_nothing_else(estate: GitHubEstate) -> None:
    """With on_unused: disable, an old orphan with the rotator's mark goes; the idle live key and a hand-made key stay."""
    cred = estate.credential("tidy", on_unused="disable")
    estate.clock.advance(timedelta(days=1))
    estate.rotate(cred)
    live = estate.app.engine.read_record("tidy")[0].current.key_id
    # Made after the rotation (a rotation's own search would retire a marked key it finds: rotator/engine/baseline.py).
    _, orphan_public = new_ed25519_pair()
    orphan = str(estate.fake.add_deploy_key(REPO, orphan_public, title="rotator:tidy:20260101T000000Z-deadbeef"))
    _, hand_public = new_ed25519_pair()
    hand = str(estate.fake.add_deploy_key(REPO, hand_public, title="ci by hand"))
    scanner = _scanner(estate)
    scanner.scan(cred)
    assert {str(k["id"]) for k in estate.fake.deploy_keys(REPO)} >= {orphan, hand, live}, "nothing is old enough yet"
    estate.clock.advance(timedelta(days=8))
    scanner.scan(cred)
    remaining = {str(k["id"]) for k in estate.fake.deploy_keys(REPO)}
    assert orphan not in remaining and {hand, live} <= remaining
    assert [e["key_id"] for e in estate.found("orphan.revoked")] == [orphan]
    assert {e["key_id"] for e in estate.found("credential.unused")} == {orphan, live}


def test_a_failing_provider_is_logged_and_the_tick_never_raises(estate: GitHubEstate) -> None:
    """A listing the provider refuses becomes compliance.scan_failed; tick schedules one job and no second while it runs."""
    cred = estate.credential("broken")
    estate.rotate(cred)
    estate.fake.inject(r"/keys", 403, count=None, body={"message": "Resource not accessible by integration"})
    scanner = _scanner(estate)
    with ThreadPoolExecutor(max_workers=2) as pool:
        scanner.tick([cred], pool.submit)
        assert scanner._running is None, "the first scan waits a minute after start-up"
        estate.clock.advance(timedelta(seconds=60) + scanner.interval)  # past the delay and the spread offset
        scanner.tick([cred], pool.submit)
        job = scanner._running
        assert job is not None
        job.result(timeout=30)
        scanner.tick([cred], pool.submit)  # scanned in this window already
        assert scanner._running is job
    (failed,) = estate.found("compliance.scan_failed")
    assert failed["credential"] == "broken" and "403" in failed["error"]
    estate.fake.clear_faults()


def test_first_scans_are_spread_over_the_window(estate: GitHubEstate) -> None:
    """Thousands of credentials are scanned evenly across the window, not all at start-up."""
    scanner = _scanner(estate)
    firsts = [scanner._spread(f"cred-{i}") for i in range(1000)]
    start = min(firsts)
    offsets = sorted((t - start).total_seconds() for t in firsts)
    window = scanner.interval.total_seconds()
    assert offsets[-1] < window
    assert sum(1 for o in offsets if o < window / 2) in range(400, 600)


def test_the_daemon_tick_scans_in_its_worker_pool(estate: GitHubEstate) -> None:
    """The daemon's tick starts the scan beside its reconciles; findings come out as events."""
    from rotator.daemon.loop import Daemon

    cred = estate.credential("ticked")
    estate.rotate(cred)
    _, public = new_ed25519_pair()
    hand = str(estate.fake.add_deploy_key(REPO, public, title="someone's key"))
    daemon = Daemon(estate.app)
    daemon.load()
    estate.clock.advance(timedelta(seconds=60) + daemon.compliance.interval)  # past the delay and the spread offset
    daemon._tick()
    job = daemon.compliance._running
    assert job is not None
    job.result(timeout=30)
    daemon.close()
    assert [e["key_id"] for e in estate.found("credential.unmanaged")] == [hand]


# -- `rotator audit seal` / `verify` through the command line ------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rotator", "audit", *args], capture_output=True, text=True, timeout=60, check=False)


def _write(path: Path, count: int) -> None:
    audit_file = AuditFile(path)
    for i in range(count):
        audit_file.append({"timestamp": "2026-03-01T00:00:00Z", "level": "info", "event": "test.tick", "i": i})


def test_audit_seal_cli_seals_a_torn_file_and_verify_notes_the_seal(tmp_path: Path) -> None:
    """seal moves the torn file aside and starts a linked one; verify of both passes and says why."""
    log = tmp_path / "audit.jsonl"
    _write(log, 3)
    with log.open("ab") as stream:
        stream.write(b'{"event":"credential.revoked","lev')
    broken = _cli("verify", str(log))
    assert broken.returncode == 1 and broken.stdout.startswith(f"{log}:4: torn write")
    sealed = _cli("seal", str(log))
    assert sealed.returncode == 0, sealed.stderr
    (aside,) = tmp_path.glob("audit.jsonl.broken-*")
    assert str(aside) in sealed.stdout and "seq 4" in sealed.stdout
    AuditFile(log).append({"timestamp": "2026-03-01T00:00:01Z", "level": "info", "event": "test.tick", "i": 4})
    both = _cli("verify", str(aside), str(log))
    assert both.returncode == 0, both.stdout
    assert both.stdout.splitlines()[0] == "intact: 5 event(s) in 2 file(s), seq 1 to 5"
    assert "note: " in both.stdout and "sealed by audit.chain_broken" in both.stdout


def test_audit_seal_cli_refuses_an_intact_file_and_changes_nothing(tmp_path: Path) -> None:
    """Nothing to seal: exit 1 with the reason on stderr, the file untouched."""
    log = tmp_path / "audit.jsonl"
    _write(log, 2)
    before = log.read_bytes()
    result = _cli("seal", str(log))
    assert result.returncode == 1 and "nothing to seal" in result.stderr and result.stdout == ""
    assert log.read_bytes() == before and not list(tmp_path.glob("*.broken-*"))


def test_audit_seal_previous_resumes_the_chain_and_verify_needs_from_for_the_continuation(tmp_path: Path) -> None:
    """seal --previous starts an empty file from a rotated one elsewhere; verify of the new file alone fails at line 1 unless --from names the link."""
    log = tmp_path / "audit.jsonl"
    _write(log, 3)
    archive = tmp_path / "archive"
    archive.mkdir()
    previous = archive / "audit.jsonl-20260301"
    previous.write_bytes(log.read_bytes())
    log.unlink()
    log.with_name("audit.jsonl.chain").write_bytes(b"damaged")
    result = _cli("seal", str(log), "--previous", str(previous))
    assert result.returncode == 0, result.stderr
    assert f"continues the chain from {previous}" in result.stdout
    AuditFile(log).append({"timestamp": "2026-03-01T00:00:01Z", "level": "info", "event": "test.tick", "i": 3})
    alone = _cli("verify", str(log))
    assert alone.returncode == 1 and alone.stdout.startswith(f"{log}:1: seq 4 ") and "genesis" in alone.stdout
    last = json.loads(previous.read_text().splitlines()[-1])
    linked = _cli("verify", str(log), "--from", f"{last['seq']}:{last['hash']}")
    assert linked.returncode == 0, linked.stdout
    assert linked.stdout.splitlines()[0] == "intact: 1 event(s) in 1 file(s), seq 4 to 4"
    assert verify([previous, log]).ok
