"""A small view of the AWS + Vault world for end-to-end tests: what the live
path holds, whether a key works at moto, which keys a user has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
import hvac

from helpers import SecretLedger, parse_events, run_rotator


@dataclass
class AwsWorld:
    bao: hvac.Client
    iam: Any
    endpoint: str
    env: dict[str, str]
    user: str
    name: str
    live_path: str
    ledger: SecretLedger

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, list[dict[str, Any]]]:
        result = run_rotator(list(args), {**self.env, **(extra_env or {})}, timeout=timeout)
        self.ledger.capture(f"stdout of rotator {' '.join(args)}", result.stdout)
        self.ledger.capture(f"stderr of rotator {' '.join(args)}", result.stderr)
        events = parse_events(result.stdout) if result.returncode >= 0 else _parse_partial(result.stdout)
        return result.returncode, events

    def live(self) -> tuple[dict[str, str] | None, dict[str, Any]]:
        try:
            response = self.bao.secrets.kv.v2.read_secret_version(path=self.live_path, mount_point="secret", raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None, {}
        data = response["data"]["data"]
        self.ledger.add_mapping(data, ("secret_access_key",))
        meta = self.bao.secrets.kv.v2.read_secret_metadata(path=self.live_path, mount_point="secret")["data"]
        return data, meta

    def state(self) -> dict[str, Any] | None:
        prefix = self.env["ROTATOR_STATE_PREFIX"]
        try:
            data = self.bao.secrets.kv.v2.read_secret_version(path=f"{prefix}/{self.name}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        except hvac.exceptions.InvalidPath:
            return None
        pending = data.get("pending") or {}
        self.ledger.add_mapping(pending.get("data"), ("secret_access_key",))
        return data

    def works(self, data: dict[str, str]) -> bool:
        sts = boto3.client(
            "sts", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=data["access_key_id"], aws_secret_access_key=data["secret_access_key"],
        )
        try:
            arn = sts.get_caller_identity()["Arn"]
        except botocore.exceptions.ClientError:
            return False
        return arn.endswith(f"user/{self.user}")

    def user_keys(self) -> set[str]:
        return {k["AccessKeyId"] for k in self.iam.list_access_keys(UserName=self.user)["AccessKeyMetadata"]}


def _parse_partial(stdout: str) -> list[dict[str, Any]]:
    """A killed process may leave a torn last line; every whole line is an event."""
    lines = stdout.splitlines()
    if lines and not stdout.endswith("\n"):
        lines = lines[:-1]
    return parse_events("\n".join(lines))
