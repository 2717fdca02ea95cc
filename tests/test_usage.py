"""Usage-aware revocation (contract §6.10) against the real parts: moto
records a key's last use whenever a request is signed with it, and the fake
GitHub sets a deploy key's `last_used`. A superseded key still used after
its successor went live is held past grace (`revocation.held`), checked
again, revoked once quiet, and revoked anyway after `max_wait`.

The engine runs in process on a FakeClock that starts at the real time
(moto stamps uses with the real time), and is moved forward instead of
slept through."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
import yaml

from helpers import run_rotator, write_credential
from rotator.compliance import alerts
from rotator.audit import events as audit
from rotator.daemon import metrics
from rotator.core import usage
from rotator.commands import plan
from rotator.wiring import App, build_app, load_credentials
from rotator.core.clock import FakeClock, parse_rfc3339
from rotator.config.spec import LoadedCredential
from rotator.core.schedule import Revocation
from rotator.config.loader import load_directory, load_file
from rotator.daemon.loop import Daemon
from rotator.core.actions import Request
from rotator.config.policy import ApiHostRule, TrustRules
from rotator.engine.registry import load_providers
from rotator.sandbox.github import FakeGitHub
from rotator.config.settings import Settings
from rotator.core.state import KeyRecord, Retiring
from rotator.testing.leaks import assert_no_leaks


@pytest.fixture
def captured() -> Iterator[Any]:
    stream = io.StringIO()
    audit.configure(fmt="json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    audit.configure(fmt="json")


@dataclass
class AwsUse:
    app: App
    clock: FakeClock
    cred: LoadedCredential
    iam: Any
    endpoint: str
    user: str
    env: dict[str, str]
    secrets: list[str]

    def rotate(self) -> dict[str, str]:
        assert self.app.engine.reconcile(self.cred, request=Request()).status == "completed"
        data = self.app.store.read("secret", f"apps/{self.user}").data
        assert data is not None
        self.secrets.append(data["secret_access_key"])
        return data

    def use(self, data: dict[str, str]) -> bool:
        """Sign a request with this key, as a consumer that still holds it would."""
        sts = boto3.client("sts", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id=data["access_key_id"], aws_secret_access_key=data["secret_access_key"])
        try:
            return sts.get_caller_identity()["Arn"].endswith(f"user/{self.user}")
        except botocore.exceptions.ClientError:
            return False

    def keys(self) -> set[str]:
        return {k["AccessKeyId"] for k in self.iam.list_access_keys(UserName=self.user)["AccessKeyMetadata"]}

    def record(self) -> Any:
        return self.app.engine.read_record(self.user)[0]


def aws_use(openbao, moto, aws_env, iam_admin, iam_user, config_dir: Path, unique: str, **revocation: str) -> AwsUse:  # type: ignore[no-untyped-def]
    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, every="30d", grace="1h",
                     revocation=revocation)
    clock = FakeClock(datetime.now(UTC))
    settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=openbao.addr, vault_token=openbao.token)
    app = build_app(settings, clock=clock)
    cred = load_credentials(settings).credentials[iam_user]
    env = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.token, "ROTATOR_STATE_PREFIX": settings.state_prefix,
           "ROTATOR_CONFIG_DIR": str(config_dir), **moto.env()}
    return AwsUse(app, clock, cred, iam_admin, moto.endpoint, iam_user, env, [])


def test_moto_records_last_use_when_a_key_signs_a_request(moto, iam_admin, iam_user) -> None:  # type: ignore[no-untyped-def]
    """The premise, checked first: a new key has no last use; one signed request sets it to about now."""
    key = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]
    assert "LastUsedDate" not in iam_admin.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])["AccessKeyLastUsed"]
    before = datetime.now(UTC) - timedelta(seconds=2)
    sts = boto3.client("sts", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    sts.get_caller_identity()
    used = iam_admin.get_access_key_last_used(AccessKeyId=key["AccessKeyId"])["AccessKeyLastUsed"]
    assert before <= used["LastUsedDate"] <= datetime.now(UTC) + timedelta(seconds=2)
    assert used["ServiceName"] == "sts"
    iam_admin.delete_access_key(UserName=iam_user, AccessKeyId=key["AccessKeyId"])


def test_a_key_still_used_is_held_past_grace_then_revoked_once_quiet(  # type: ignore[no-untyped-def]
    openbao, moto, aws_env, iam_admin, iam_user, config_dir: Path, unique: str, captured
) -> None:
    """Old key used after the new one is live: held (revocation.held), still works, plan says held; quiet: revoked."""
    w = aws_use(openbao, moto, aws_env, iam_admin, iam_user, config_dir, unique, quiet="2h", max_wait="7d")
    old = w.rotate()
    new = w.rotate()
    assert w.use(old), "the old key works during grace"
    w.clock.advance(timedelta(hours=1, seconds=1))  # past grace
    assert w.app.engine.reconcile(w.cred).status != "failed"
    held = [e for e in captured() if e["event"] == "revocation.held"]
    assert len(held) == 1 and held[0]["key_id"] == old["access_key_id"] and held[0]["level"] == "warning"
    last_used = parse_rfc3339(held[0]["last_used"])
    assert abs(last_used - w.clock.now()) < timedelta(hours=1, minutes=1)
    assert parse_rfc3339(held[0]["retry_at"]) == last_used.replace(microsecond=0) + timedelta(hours=2) or \
        abs(parse_rfc3339(held[0]["retry_at"]) - (last_used + timedelta(hours=2))) < timedelta(seconds=1)
    assert parse_rfc3339(held[0]["max_wait_until"]) - w.clock.now() > timedelta(days=6)
    assert "credential.deactivated" not in [e["event"] for e in captured()]
    assert w.use(old) and old["access_key_id"] in w.keys(), "a held key keeps working past grace"
    entry = w.record().retiring[0]
    assert entry.held_since is not None and entry.recheck_at is not None and entry.checks == 1

    # The plan shows the hold and the last use, in process and through the CLI (real time: the check is ahead).
    row = plan.plan_row(w.cred, w.record(), w.app.engine.policy_for(w.cred), w.clock.now())
    assert row["action"] == "wait" and f"held revocation of {old['access_key_id']}" in row["reason"]
    assert row["held"][0]["last_used_at"] is not None
    result = run_rotator(["plan", "--json"], w.env)
    assert result.returncode == 0, result.stderr
    cli_row = json.loads(result.stdout)[0]
    assert cli_row["action"] == "wait" and "held revocation" in cli_row["reason"] and cli_row["held"][0]["key_id"] == old["access_key_id"]
    assert_no_leaks(result.stdout + result.stderr, w.secrets, where="plan")

    # Before its next check, nothing happens. At it, the use just made (proving
    # it still works) is the last use: held again, checked again later.
    assert w.app.engine.reconcile(w.cred).status == "idle"
    w.clock.advance(entry.recheck_at - w.clock.now())
    w.app.engine.reconcile(w.cred)
    again = [e for e in captured() if e["event"] == "revocation.held"]
    assert len(again) == 2 and parse_rfc3339(again[1]["last_used"]) >= parse_rfc3339(again[0]["last_used"])
    entry = w.record().retiring[0]
    assert entry.checks == 2 and entry.recheck_at > w.clock.now()
    # Nobody uses it any more: at the next check it has been quiet for `quiet`: revoked.
    w.clock.advance(entry.recheck_at - w.clock.now())
    assert w.app.engine.reconcile(w.cred).status != "failed"
    names = [e["event"] for e in captured()]
    assert names.count("revocation.held") == 2 and "credential.revoked" in names and "revocation.forced" not in names
    assert w.keys() == {new["access_key_id"]} and not w.use(old)
    assert_no_leaks(json.dumps(captured()), w.secrets, where="events")


def test_max_wait_revokes_a_key_in_use_anyway_at_error_level(  # type: ignore[no-untyped-def]
    openbao, moto, aws_env, iam_admin, iam_user, config_dir: Path, unique: str, captured
) -> None:
    """Still in use when max_wait has passed: revocation.forced (error), revoked, alerted."""
    w = aws_use(openbao, moto, aws_env, iam_admin, iam_user, config_dir, unique, quiet="1d", max_wait="2h")
    old = w.rotate()
    new = w.rotate()
    assert w.use(old)
    w.clock.advance(timedelta(hours=1, seconds=1))
    daemon = Daemon(w.app)
    daemon.load()
    assert daemon.run_pass(wait=True).failed == 0
    assert [e["event"] for e in captured()].count("revocation.held") == 1
    daemon.update_gauges()
    assert held_gauge(w.user) == 1.0
    retry_at = w.record().retiring[0].recheck_at
    assert retry_at == w.record().retiring[0].revoke_after + timedelta(hours=2), "never checked later than max_wait"
    w.clock.advance(retry_at - w.clock.now())
    w.app.engine.reconcile(w.cred)
    forced = [e for e in captured() if e["event"] == "revocation.forced"]
    assert len(forced) == 1 and forced[0]["level"] == "error" and forced[0]["key_id"] == old["access_key_id"]
    assert forced[0]["last_used"] is not None and forced[0]["held_since"] is not None
    assert alerts.should_alert(forced[0]) and alerts.should_alert(next(e for e in captured() if e["event"] == "revocation.held"))
    assert w.keys() == {new["access_key_id"]} and not w.use(old)
    daemon.views[w.user].wake_at = None
    daemon.run_pass(wait=True)
    daemon.update_gauges()
    assert held_gauge(w.user) == 0.0
    daemon.close()


def held_gauge(credential: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("rotator_revocations_held", {"credential": credential, "provider": "aws.iam_access_key"})


def test_revoke_now_and_when_in_use_revoke_never_ask(  # type: ignore[no-untyped-def]
    openbao, moto, aws_env, iam_admin, iam_user, config_dir: Path, unique: str, captured
) -> None:
    """--revoke-now revokes a key in use at once, with no usage check and no hold."""
    w = aws_use(openbao, moto, aws_env, iam_admin, iam_user, config_dir, unique, quiet="1d")
    old = w.rotate()
    assert w.use(old)
    assert w.app.engine.reconcile(w.cred, request=Request(revoke_now=True)).status == "completed"
    names = [e["event"] for e in captured()]
    assert "revocation.held" not in names and "credential.revoked" in names and not w.use(old)


# -- pure rules ----------------------------------------------------------------------

T = datetime(2026, 3, 2, 12, tzinfo=UTC)


def entry(**changes: Any) -> Retiring:
    key = KeyRecord(key_id="K1", rotation_id="r1", issued_at=T - timedelta(days=30))
    return Retiring(key=key, superseded_by="r2", revoke_after=T + timedelta(hours=1), superseded_at=T).model_copy(update=changes)


@pytest.mark.parametrize(
    ("last_used", "verdict"),
    [
        (None, "quiet"),  # never used
        (T - timedelta(minutes=1), "quiet"),  # used, but only before its successor went live
        (T + timedelta(minutes=30), "quiet"),  # after, but more than `quiet` ago (now is T + 1h40m)
        (T + timedelta(hours=1), "held"),  # after, and 40 min ago
    ],
)
def test_in_use_means_used_after_the_successor_went_live_and_within_quiet(last_used: datetime | None, verdict: str) -> None:
    """Only a use after the successor went live, within `quiet`, holds the revocation."""
    decision = usage.decide(entry(), last_used, Revocation(quiet=timedelta(hours=1)), grace=timedelta(hours=1), now=T + timedelta(minutes=100))
    assert decision.verdict == verdict


def test_checks_back_off_but_never_before_the_key_could_be_quiet_nor_after_max_wait() -> None:
    """Next check: at least last_used + quiet, backing off from 1 min; capped by max_wait_until."""
    rev = Revocation(quiet=timedelta(minutes=5), max_wait=timedelta(days=1))
    now = T + timedelta(hours=2)
    first = usage.decide(entry(), now - timedelta(seconds=10), rev, grace=timedelta(hours=1), now=now)
    assert first.retry_at == now - timedelta(seconds=10) + timedelta(minutes=5)
    later = usage.decide(entry(checks=3), now - timedelta(minutes=4, seconds=59), rev, grace=timedelta(hours=1), now=now)
    assert later.retry_at == now + timedelta(minutes=5)  # 8 min backoff, capped at quiet
    near_end = usage.decide(entry(), now, Revocation(quiet=timedelta(days=3), max_wait=timedelta(hours=2)), grace=timedelta(hours=1), now=now)
    assert near_end.retry_at == entry().revoke_after + timedelta(hours=2)
    assert usage.decide(entry(), now, Revocation(quiet=timedelta(days=3), max_wait=timedelta(minutes=30)), grace=timedelta(hours=1),
                        now=now).verdict == "forced"


def test_deactivated_immediate_and_revoke_mode_entries_are_never_checked() -> None:
    """Only an active entry, without --revoke-now, with when_in_use: wait, on a provider that reports use."""
    wait = Revocation()
    assert usage.should_check(entry(), wait, reports_use=True)
    assert not usage.should_check(entry(), wait, reports_use=False)
    assert not usage.should_check(entry(immediate=True), wait, reports_use=True)
    assert not usage.should_check(entry(stage="deactivated"), wait, reports_use=True)
    assert not usage.should_check(entry(), Revocation(when_in_use="revoke"), reports_use=True)


# -- deploy keys: the fake GitHub's last_used ------------------------------------------------

REPO = "acme/api"
SANDBOX = TrustRules(ApiHostRule(allow_loopback_http=True))


def test_a_deploy_key_used_after_promotion_is_held_then_revoked_once_quiet(openbao, bao_client, unique: str, tmp_path: Path, captured) -> None:  # type: ignore[no-untyped-def]
    """A deploy key's last_used (an SSH use) after its successor went live holds its deletion; quiet, it is deleted."""
    clock = FakeClock(datetime(2026, 3, 2, 9, tzinfo=UTC))
    fake = FakeGitHub(clock=clock).start()
    try:
        pem = fake.create_app(11, 22, repositories=[REPO])
        bao_client.secrets.kv.v2.create_or_update_secret(path=f"gh-{unique}/app", mount_point="secret", secret={"private_key": pem})
        doc = {"provider": "github.deploy_key", "owner": "platform", "schedule": {"every": "30d"}, "grace": "1h",
               "vault": {"path": f"apps/dk-{unique}"}, "revocation": {"quiet": "30m"},
               "params": {"app_id": 11, "installation_id": 22, "private_key": f"secret/gh-{unique}/app#private_key",
                          "api_url": fake.url, "repository": REPO}}
        path = tmp_path / f"dk-{unique}.yaml"
        path.write_text(yaml.safe_dump(doc))
        cred = load_file(path, load_providers(), rules=SANDBOX)  # the sandbox is loopback http
        assert isinstance(cred, LoadedCredential), cred
        settings = Settings(vault_addr=openbao.addr, vault_token=openbao.token, state_prefix=f"rotator-test/{unique}", config_dir=tmp_path,
                            allow_loopback_http=True)
        app = build_app(settings, clock=clock)
        engine = app.engine
        assert engine.reconcile(cred, request=Request()).status == "completed"
        old = engine.read_record(cred.spec.name)[0].current.key_id
        assert engine.reconcile(cred, request=Request()).status == "completed"
        new = engine.read_record(cred.spec.name)[0].current.key_id
        clock.advance(timedelta(minutes=50))
        fake.use_deploy_key(REPO, old)  # a CI job still cloning with the old key
        clock.advance(timedelta(minutes=11))  # past grace
        engine.reconcile(cred)
        held = [e for e in captured() if e["event"] == "revocation.held"]
        assert [e["key_id"] for e in held] == [old]
        assert {str(k["id"]) for k in fake.deploy_keys(REPO)} == {old, new}
        # plan shows the hold and makes no request to GitHub (the sandbox's request log).
        before = len(fake.requests)
        row = plan.collect_plan(app, load_directory(tmp_path, load_providers(), rules=SANDBOX))[0]
        assert row["action"] == "wait" and f"held revocation of {old}" in row["reason"]
        assert len(fake.requests) == before
        clock.advance(timedelta(minutes=20))  # 31 min since that use: quiet
        engine.reconcile(cred)
        assert "credential.revoked" in [e["event"] for e in captured()]
        assert {str(k["id"]) for k in fake.deploy_keys(REPO)} == {new}
        engine.close()
    finally:
        fake.stop()


# -- Stripe: the v2 API key's last_used ------------------------------------------------------


def test_stripe_managed_keys_report_their_last_use_and_webhook_secrets_do_not() -> None:
    """A managed key reads as never used until a request is made with it; webhook endpoints report no use."""
    from test_stripe_provider import Env, ctx

    from rotator.sandbox.stripe import FakeStripe

    fake = FakeStripe().start()
    try:
        env = Env(fake)
        provider = env.managed()
        assert provider.reports_key_use and not env.webhook().reports_key_use
        issued = provider.issue(ctx())
        assert provider.last_used(issued.handle) is None
        before = datetime.now(UTC) - timedelta(seconds=2)
        assert env.customers(issued.data["api_key"]) == 200
        used = provider.last_used(issued.handle)
        assert used is not None and before <= used <= datetime.now(UTC) + timedelta(seconds=2)
        provider.close()
    finally:
        fake.stop()


# -- a pause with an end ------------------------------------------------------------------


def test_a_pause_holds_the_schedule_until_its_end_then_the_rotation_logs_the_resume(  # type: ignore[no-untyped-def]
    openbao, moto, aws_env, iam_admin, iam_user, config_dir: Path, unique: str, captured
) -> None:
    """Paused past the due time: nothing; once `until` passes, the next pass rotates and logs rotation.resumed (by: until)."""
    from rotator.commands.pause import change_pause
    from rotator.core.state import Pause

    w = aws_use(openbao, moto, aws_env, iam_admin, iam_user, config_dir, unique)
    w.rotate()
    until = w.clock.now() + timedelta(days=31)
    change_pause(w.app.engine, w.user, w.cred.spec.provider, Pause(reason="audit", by="carol", at=w.clock.now(), until=until), wait_seconds=5)
    w.clock.advance(timedelta(days=30, seconds=1))  # due
    assert w.app.engine.reconcile(w.cred).status == "idle"
    w.clock.advance(timedelta(days=1))  # the pause has ended
    assert w.app.engine.reconcile(w.cred).status == "completed"
    resumed = [e for e in captured() if e["event"] == "rotation.resumed"]
    assert len(resumed) == 1 and resumed[0]["by"] == "until" and resumed[0]["paused_by"] == "carol" and resumed[0]["reason"] == "audit"
    assert w.record().paused is None and w.record().rotations == 2
