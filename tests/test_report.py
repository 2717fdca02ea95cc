"""`rotator report` through the real CLI, over a mixed estate built once per
module against OpenBao, moto and the fake GitHub: an AWS user with an
unused live key and a second, hand-made key; an overdue AWS credential; a
GitHub deploy-key credential beside a hand-made deploy key; and an
installation-token credential, which cannot be listed. Every format is
checked for its content and for the absence of any secret."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import hvac
import pytest
import yaml

from helpers import run_rotator
from rotator_providers.github_app import new_ed25519_pair
from rotator.audit import events as audit
from rotator.wiring import build_app
from rotator.config.spec import LoadedCredential
from rotator.config.loader import load_file
from rotator.config.policy import ApiHostRule, TrustRules
from rotator.core.validators import secret_lookalike
from rotator.engine.registry import load_providers
from rotator.sandbox.github import FakeGitHub
from rotator.sandbox.services import MotoServer, OpenBaoServer
from rotator.config.settings import Settings
from rotator.testing.leaks import assert_no_leaks

REPO = "acme/deploy"


@dataclass
class Estate:
    env: dict[str, str]
    idle_user: str
    hand_key: str = ""
    hand_deploy_key: str = ""
    live: dict[str, str] = field(default_factory=dict)  # credential -> live key id
    secrets: set[str] = field(default_factory=set)
    logs: str = ""

    def report(self, fmt: str) -> str:
        result = run_rotator(["report", "--format", fmt], self.env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert_no_leaks(result.stdout + result.stderr, self.secrets, where=f"report --format {fmt}")
        assert secret_lookalike(result.stdout) is None
        return result.stdout


def _write(config_dir: Path, name: str, provider: str, params: dict[str, Any], **extra: Any) -> LoadedCredential:
    doc = {"provider": provider, "owner": f"team-{name}", "description": f"{name}: used by the | deploy job",
           "schedule": {"every": "30d"}, "grace": "1h", "vault": {"path": f"apps/{name}"}, "params": params, **extra}
    path = config_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    loaded = load_file(path, load_providers(), rules=TrustRules(ApiHostRule(allow_loopback_http=True)))  # the sandbox is loopback http
    assert isinstance(loaded, LoadedCredential), loaded
    return loaded


def _iam(moto: MotoServer) -> Any:
    env = moto.env()
    return boto3.client("iam", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def _age_record(bao: hvac.Client, path: str, *, days: int) -> None:
    """Make the credential look rotated `days` ago, as an unattended estate would."""
    current = bao.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    record = current["data"]["data"]
    record["last_rotated_at"] = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    bao.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret=record, cas=current["data"]["metadata"]["version"])


@pytest.fixture(scope="module")
def estate(openbao: OpenBaoServer, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    unique = uuid.uuid4().hex[:8]
    config_dir = tmp_path_factory.mktemp("report") / "credentials.d"
    config_dir.mkdir()
    bao = hvac.Client(url=openbao.addr, token=openbao.token)
    iam = _iam(moto)
    idle_user, late_user = f"idle-{unique}", f"late-{unique}"
    for user in (idle_user, late_user):
        iam.create_user(UserName=user)
    github = FakeGitHub().start()
    app_pem = github.create_app(31, 41, repositories=[REPO])
    bao.secrets.kv.v2.create_or_update_secret(path=f"report-{unique}/app", mount_point="secret", secret={"private_key": app_pem})
    app_params = {"app_id": 31, "installation_id": 41, "private_key": f"secret/report-{unique}/app#private_key", "api_url": github.url}
    prefix = f"rotator-test/report-{unique}"
    env = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.token, "ROTATOR_STATE_PREFIX": prefix,
           "ROTATOR_LOG_FORMAT": "json", "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_ALLOW_LOOPBACK_HTTP": "true", **moto.env()}
    world = Estate(env, idle_user, secrets={app_pem, moto.env()["AWS_SECRET_ACCESS_KEY"]})

    creds = [
        _write(config_dir, "aws-idle", "aws.iam_access_key", {"user_name": idle_user, "delete_after_deactivation": "0s"}, unused_after="1s"),
        _write(config_dir, "aws-late", "aws.iam_access_key", {"user_name": late_user, "delete_after_deactivation": "0s"}),
        _write(config_dir, "gh-deploy", "github.deploy_key", {**app_params, "repository": REPO}),
        _write(config_dir, "gh-token", "github.app_installation_token", app_params, schedule={"every": "30m"}, grace="5m"),
    ]
    logs = io.StringIO()
    audit.configure(fmt="json", stream=logs)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in moto.env().items():
            mp.setenv(key, value)
        app = build_app(Settings(vault_addr=openbao.addr, vault_token=openbao.token, state_prefix=prefix, config_dir=config_dir))
        for cred in creds:
            assert app.engine.reconcile(cred).status == "completed"
            record, _ = app.engine.read_record(cred.spec.name)
            world.live[cred.spec.name] = record.current.key_id
            live = bao.secrets.kv.v2.read_secret_version(path=cred.spec.vault.path, mount_point="secret", raise_on_deleted_version=True)
            world.secrets.update(v for k, v in live["data"]["data"].items() if k in {"secret_access_key", "private_key", "token"})
            app.engine.provider_for(cred).close()
    audit.configure(fmt="json")
    world.logs = logs.getvalue()

    hand = iam.create_access_key(UserName=idle_user)["AccessKey"]  # a second key someone made by hand
    world.hand_key = hand["AccessKeyId"]
    world.secrets.add(hand["SecretAccessKey"])
    world.hand_deploy_key = str(github.add_deploy_key(REPO, new_ed25519_pair()[1], title="laptop of a contractor"))
    _age_record(bao, f"{prefix}/aws-late", days=40)
    time.sleep(1.5)  # the idle key was last used when it was verified: now it is past unused_after
    yield world
    github.stop()


def test_report_json_lists_findings_policy_and_facts(estate: Estate) -> None:
    """JSON: the unused live key, both unmanaged keys, the overdue credential and the unlistable one, with owners and policy."""
    report = json.loads(estate.report("json"))
    rows = {r["credential"]: r for r in report["credentials"]}
    assert set(rows) == {"aws-idle", "aws-late", "gh-deploy", "gh-token"}
    idle = rows["aws-idle"]
    assert idle["owner"] == "team-aws-idle" and idle["provider"] == "aws.iam_access_key" and idle["description"].startswith("aws-idle")
    assert (idle["interval"], idle["cron"], idle["grace"], idle["unused_after"]) == ("4w2d", None, "1h", "1s")
    assert [(k["key_id"], k["live"]) for k in idle["unused_keys"]] == [(estate.live["aws-idle"], True)]
    assert [k["key_id"] for k in idle["unmanaged_keys"]] == [estate.hand_key]
    assert idle["overdue"] is False and idle["keys"] == "listed" and idle["last_rotated_at"].endswith("Z")
    late = rows["aws-late"]
    assert late["overdue"] is True and late["age"].startswith("5w") and late["unmanaged_keys"] == [] and late["unused_keys"] == []
    deploy = rows["gh-deploy"]
    assert [k["key_id"] for k in deploy["unmanaged_keys"]] == [estate.hand_deploy_key]
    assert deploy["unused_keys"] == [] and deploy["overdue"] is False
    token = rows["gh-token"]
    assert token["keys"] == "not listable" and token["unused_keys"] is None and token["unmanaged_keys"] is None
    assert token["interval"] == "30m" and token["grace"] == "5m" and token["pending_revocations"] == []
    assert report["summary"] == {"credentials": 4, "overdue": 1, "paused": 0, "failing": 0, "unused_keys": 1, "unmanaged_keys": 2, "not_listable": 1}


def test_report_csv_has_one_row_per_credential(estate: Estate) -> None:
    """CSV: a header, one row per credential, yes/no for overdue and 'not listable' where the provider cannot list."""
    rows = {r["credential"]: r for r in csv.DictReader(io.StringIO(estate.report("csv")))}
    assert set(rows) == {"aws-idle", "aws-late", "gh-deploy", "gh-token"}
    assert rows["aws-late"]["overdue"] == "yes" and rows["aws-idle"]["overdue"] == "no"
    assert rows["aws-idle"]["unmanaged_keys"] == estate.hand_key
    assert rows["aws-idle"]["unused_keys"].startswith(f"{estate.live['aws-idle']} (live, last used ")
    assert rows["gh-deploy"]["unmanaged_keys"] == estate.hand_deploy_key
    assert rows["gh-token"]["unused_keys"] == rows["gh-token"]["unmanaged_keys"] == "not listable"
    assert rows["aws-idle"]["schedule"] == "every 4w2d" and rows["aws-idle"]["owner"] == "team-aws-idle"


def test_report_markdown_is_a_table_with_a_summary(estate: Estate) -> None:
    """Markdown: a summary line and a table whose cells escape pipes."""
    text = estate.report("markdown")
    lines = text.splitlines()
    assert lines[0] == "# rotator compliance report"
    assert "4 credential(s), 1 overdue, 0 failing, 1 unused key(s), 2 unmanaged key(s), 1 not listable" in text
    header = next(i for i, line in enumerate(lines) if line.startswith("| Credential |"))
    body = lines[header + 2:]
    assert len(body) == 4 and all(line.startswith("| ") and line.endswith(" |") for line in body)
    idle = next(line for line in body if line.startswith("| aws-idle |"))
    assert estate.hand_key in idle and "used by the \\| deploy job" in idle
    assert "not listable" in next(line for line in body if line.startswith("| gh-token |"))


def test_building_the_estate_logged_no_secret(estate: Estate) -> None:
    """The in-process rotations that built the estate logged events, none with a secret."""
    assert '"event": "credential.promoted"' in estate.logs or '"event":"credential.promoted"' in estate.logs
    assert_no_leaks(estate.logs, estate.secrets, where="estate set-up logs")
