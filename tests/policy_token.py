"""Test helpers that give a test the rotator's shipped least privilege instead
of a root identity: a Vault token holding only `config/rotator.hcl`, and a
moto IAM user holding only the actions of `config/iam-policy.json`.

End-to-end tests use them to show the daemon works under those policies.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import hvac

from rotator.sandbox.services import MotoServer

ROOT = Path(__file__).resolve().parent.parent
VAULT_POLICY = ROOT / "config" / "rotator.hcl"
IAM_POLICY = ROOT / "config" / "iam-policy.json"


def vault_policy_token(root: hvac.Client, *, policy_hcl: str | None = None, ttl: str = "1h") -> str:
    """A renewable token holding only the given policy (default: the shipped
    one) and not Vault's `default` policy, so it proves the policy suffices.

    The shipped policy covers state under `secret/rotator/state/` and the
    stash under `secret/rotator/state-stash/`: give a test its own with
    ROTATOR_STATE_PREFIX=rotator/state/<unique> and
    ROTATOR_STASH_PREFIX=rotator/state-stash/<unique>.
    """
    name = f"rotator-{uuid.uuid4().hex[:8]}"
    root.sys.create_or_update_policy(name=name, policy=policy_hcl or VAULT_POLICY.read_text())
    created = root.auth.token.create(policies=[name], no_default_policy=True, ttl=ttl, renewable=True)
    return str(created["auth"]["client_token"])


def iam_policy() -> dict[str, Any]:
    return json.loads(IAM_POLICY.read_text())


def widened_for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy with every Resource set to "*": moto checks IAM identity
    policies against the resource "*" only, so a user-ARN-scoped statement
    would deny everything there. Actions stay exactly as shipped."""
    widened = copy.deepcopy(policy)
    for statement in widened["Statement"]:
        statement["Resource"] = "*"
    return widened


def moto_policy_env(moto: MotoServer, *, policy: dict[str, Any] | None = None) -> dict[str, str]:
    """boto3 environment for a new moto user that holds only `policy`
    (default: the shipped IAM policy, widened for moto)."""
    admin = boto3.client(
        "iam",
        endpoint_url=moto.endpoint,
        region_name="us-east-1",
        aws_access_key_id=moto.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=moto.env()["AWS_SECRET_ACCESS_KEY"],
    )
    user = f"rotator-{uuid.uuid4().hex[:8]}"
    admin.create_user(UserName=user)
    admin.put_user_policy(
        UserName=user,
        PolicyName="rotator",
        PolicyDocument=json.dumps(policy or widened_for_moto(iam_policy())),
    )
    key = admin.create_access_key(UserName=user)["AccessKey"]
    return {
        **moto.env(),
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
