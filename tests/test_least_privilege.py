"""The end-to-end AWS rotation under the shipped least-privilege policies:
a Vault token holding only config/rotator.hcl and an AWS identity holding
only the actions of config/iam-policy.json."""

from __future__ import annotations

import json
from pathlib import Path

import hvac
import pytest

from helpers import SecretLedger, names, parse_events, run_rotator, write_credential
from policy_token import moto_policy_env, vault_policy_token


def test_rotation_works_under_the_shipped_policies_and_nothing_more(openbao, moto, bao_client, iam_admin, config_dir: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Rotate, revoke, status and report on policy-limited identities; other paths are denied."""
    user = f"lp-{unique}"
    iam_admin.create_user(UserName=user, Path="/rotated/")
    write_credential(config_dir, user, params={"user_name": user, "delete_after_deactivation": "0s"}, path=f"apps/{user}")
    token = vault_policy_token(bao_client)
    env = {
        **moto_policy_env(moto),
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": token,
        "ROTATOR_STATE_PREFIX": f"rotator/state/{unique}",
        "ROTATOR_STASH_PREFIX": f"rotator/state-stash/{unique}",
        "ROTATOR_CONFIG_DIR": str(config_dir),
        "ROTATOR_LOG_FORMAT": "json",
    }
    ledger = SecretLedger()
    ledger.add(token, env["AWS_SECRET_ACCESS_KEY"])
    for args in (["rotate", user], ["rotate", user, "--revoke-now"], ["status", "--json"]):
        result = run_rotator(args, env)
        ledger.capture(" ".join(args), result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        if args[0] == "rotate":
            assert "rotation.completed" in names(parse_events(result.stdout))
    rows = json.loads(result.stdout)
    assert [r["credential"] for r in rows] == [user]
    live = bao_client.secrets.kv.v2.read_secret_version(path=f"apps/{user}", mount_point="secret", raise_on_deleted_version=True)["data"]
    assert live["metadata"]["version"] == 2
    ledger.add(live["data"]["secret_access_key"])
    assert len(iam_admin.list_access_keys(UserName=user)["AccessKeyMetadata"]) == 1
    ledger.assert_clean()

    limited = hvac.Client(url=openbao.addr, token=token)
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.create_or_update_secret(path=f"other/{unique}", secret={"x": "y"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.secrets.kv.v2.delete_metadata_and_all_versions(path=f"apps/{user}", mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.sys.list_mounted_secrets_engines()
