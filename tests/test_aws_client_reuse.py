"""Per-key STS clients (verify, is_revoked) must not re-read botocore's
service models from disk (issue 15: it was most of a rotation's CPU), and
must verify real keys at moto from many threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.loaders
import pytest

from rotator_providers.aws_iam import AwsIamAccessKeyProvider, AwsIamParams
from rotator.core.clock import SystemClock
from rotator.core.provider import IssuedCredential, ProviderContext


def make_provider(user: str) -> AwsIamAccessKeyProvider:
    params = AwsIamParams(user_name=user, delete_after_deactivation="0s")  # type: ignore[arg-type]
    return AwsIamAccessKeyProvider(params, ProviderContext(read_secret=lambda ref: "", clock=SystemClock()))


def test_per_key_sts_clients_read_nothing_from_disk_after_the_first(aws_env: dict[str, str], iam_admin: Any, iam_user: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """After one warm-up, 16 concurrent verifications of a fresh key open no model file, and all succeed at moto."""
    provider = make_provider(iam_user)
    created = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]
    credential = IssuedCredential(key_id=created["AccessKeyId"],
                                  data={"access_key_id": created["AccessKeyId"], "secret_access_key": created["SecretAccessKey"]},
                                  handle={"user_name": iam_user, "access_key_id": created["AccessKeyId"]})
    provider.verify(credential)  # warm-up: the shared session loads the models once
    reads: list[str] = []
    original = botocore.loaders.JSONFileLoader.load_file

    def counting(self: Any, file_path: str) -> Any:
        reads.append(file_path)
        return original(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counting)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: provider.verify(credential), range(16)))
    assert reads == [], f"per-key STS clients re-read {len(reads)} model file(s) from disk"
