"""The shipped reader policy (config/rotator-reader.hcl, contract §5 and
§6.11): `status`, `plan` and `report` work under a token holding only it, and that
token can read no secret value: every live path, every stash entry and every
management secret answers 403. The rotations themselves run under the
shipped rotator policy (config/rotator.hcl), stash included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from helpers import names, run_rotator, write_credential
from policy_token import ROOT, moto_policy_env, vault_policy_token
from provider_worlds import (  # noqa: F401 - fixtures
    KINDS,
    ProviderLedger,
    build_world,
    fake_github,
    fake_stripe,
    github_clock,
    rotate_ok,
)

READER_POLICY = ROOT / "config" / "rotator-reader.hcl"


def _walk(kv: Any, path: str) -> Iterator[str]:
    try:
        keys = kv.list_secrets(path=path, mount_point="secret")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return
    for key in keys:
        if key.endswith("/"):
            yield from _walk(kv, f"{path}/{key.rstrip('/')}")
        else:
            yield f"{path}/{key}"


def test_status_plan_and_report_work_under_the_reader_policy_which_reads_no_secret(  # type: ignore[no-untyped-def]
    openbao, moto, bao_client: hvac.Client, iam_admin, fake_github, fake_stripe, tmp_path: Path, unique: str,
) -> None:
    """Every provider kind rotated under rotator.hcl; status, plan and report under rotator-reader.hcl; each secret read denied."""
    config_dir = tmp_path / "credentials.d"
    env = {
        **moto_policy_env(moto),
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": vault_policy_token(bao_client),
        "ROTATOR_STATE_PREFIX": f"rotator/state/{unique}",
        "ROTATOR_STASH_PREFIX": f"rotator/state-stash/{unique}",
        "ROTATOR_CONFIG_DIR": str(config_dir),
        "ROTATOR_LOG_FORMAT": "json",
        "ROTATOR_ALLOW_LOOPBACK_HTTP": "true",  # the sandboxes
    }
    ledger = ProviderLedger()
    worlds = [build_world(kind, bao=bao_client, env=env, config_dir=config_dir, unique=f"{unique}{i}", github=fake_github,
                          stripe_fake=fake_stripe, ledger=ledger) for i, kind in enumerate(KINDS)]
    user = f"rd-{unique}"
    iam_admin.create_user(UserName=user, Path="/rotated/")
    write_credential(config_dir, user, params={"user_name": user, "delete_after_deactivation": "0s"}, path=f"apps/{user}")
    code, events = worlds[0].cli("run", "--once")
    assert code == 0 and names(events).count("rotation.completed") == len(KINDS) + 1, names(events)
    for w in worlds:
        rotate_ok(w, "--revoke-now")  # a second credential each, the first revoked: its stash entry destroyed
        w.live()  # adds the live secrets to the ledger
    aws_live = bao_client.secrets.kv.v2.read_secret_version(path=f"apps/{user}", mount_point="secret", raise_on_deleted_version=True)
    ledger.add(aws_live["data"]["data"]["secret_access_key"], env["VAULT_TOKEN"], env["AWS_SECRET_ACCESS_KEY"])

    root_kv = bao_client.secrets.kv.v2
    stash = sorted(_walk(root_kv, f"rotator/state-stash/{unique}"))
    assert len(stash) == len(KINDS) + 1, "one stash entry per live credential; the revoked ones' were destroyed"
    for path in stash:
        entry = root_kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        ledger.add(*[v for part in (entry.get("data") or {}, entry["handle"]) for k, v in part.items()
                     if k in {"token", "api_key", "signing_secret", "private_key", "secret_access_key"}])

    reader_token = vault_policy_token(bao_client, policy_hcl=READER_POLICY.read_text())
    ledger.add(reader_token)
    reader_env = {**env, "VAULT_TOKEN": reader_token}
    stdout = {}
    for args in (["status", "--json"], ["status"], ["plan", "--json"], ["plan"], ["report", "--format", "json"],
                 ["report", "--format", "markdown"]):
        result = run_rotator(args, reader_env)
        ledger.capture(f"rotator {' '.join(args)} under the reader policy", result.stdout + result.stderr)
        assert result.returncode == 0, f"rotator {' '.join(args)} under the reader policy: {result.stderr[-500:]}"
        stdout[" ".join(args)] = result.stdout
    rows = json.loads(stdout["status --json"])
    assert sorted(r["credential"] for r in rows) == sorted([*(w.name for w in worlds), user])
    assert all(r["phase"] == "idle" and r["last_error"] is None for r in rows)
    plan = json.loads(stdout["plan --json"])
    assert sorted(r["credential"] for r in plan) == sorted([*(w.name for w in worlds), user])
    assert all(r["action"] == "wait" for r in plan)
    report = json.loads(stdout["report --format json"])
    assert report["summary"]["credentials"] == len(KINDS) + 1
    ledger.assert_clean()

    reader = hvac.Client(url=openbao.addr, token=reader_token).secrets.kv.v2
    for name in [*(w.name for w in worlds), user]:
        record = reader.read_secret_version(path=f"rotator/state/{unique}/{name}", mount_point="secret", raise_on_deleted_version=True)
        ledger.capture(f"state record {name} as the reader reads it", json.dumps(record["data"]["data"]))
    ledger.assert_clean()
    live_paths = [w.live_path for w in worlds] + [f"apps/{user}"]
    refs = sorted(_walk(root_kv, "rotator/refs"))
    assert refs and stash and live_paths
    for path in [*live_paths, *stash, *refs]:
        with pytest.raises(hvac.exceptions.Forbidden):
            reader.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    for folder in (f"rotator/state-stash/{unique}", "rotator/refs", "apps"):
        with pytest.raises(hvac.exceptions.Forbidden):
            reader.list_secrets(path=folder, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        reader.create_or_update_secret(path=f"rotator/state/{unique}/{user}", secret={}, mount_point="secret")
