"""`aws.iam_access_key` against a moto server that enforces IAM auth."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
import pytest

from rotator_providers.aws_iam import AwsIamAccessKeyProvider, AwsIamParams
from rotator.core.clock import SystemClock
from rotator.core.errors import PermanentError
from rotator.core.provider import IssueContext, NoCapacityError, ProviderContext
from rotator.testing.conformance import ProviderConformance, verify_eventually


def make_provider(user: str) -> AwsIamAccessKeyProvider:
    params = AwsIamParams(user_name=user, delete_after_deactivation="0s")  # type: ignore[arg-type]
    return AwsIamAccessKeyProvider(params, ProviderContext(read_secret=lambda ref: "", clock=SystemClock()))


class TestAwsConformance(ProviderConformance):
    @pytest.fixture
    def provider(self, aws_env: dict[str, str], iam_user: str) -> AwsIamAccessKeyProvider:
        # A fresh provider per test: its IAM client is made on first use, so
        # a fault set up before that first use reaches it.
        return make_provider(iam_user)

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        monkey = pytest.MonkeyPatch()
        if kind == "transient":
            monkey.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: connection refused
        else:
            monkey.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")  # rejected by IAM auth
        try:
            yield
        finally:
            monkey.undo()


def test_deleted_key_is_rejected_by_aws(aws_env: dict[str, str], iam_user: str, moto) -> None:  # type: ignore[no-untyped-def]
    """After revoke, the old key no longer authenticates anywhere."""
    provider = make_provider(iam_user)
    credential = provider.issue(IssueContext("ci", "r1"))
    verify_eventually(provider, credential)
    provider.revoke(credential.handle)
    sts = boto3.client(
        "sts", endpoint_url=moto.endpoint, region_name="us-east-1",
        aws_access_key_id=credential.data["access_key_id"], aws_secret_access_key=credential.data["secret_access_key"],
    )
    with pytest.raises(Exception, match="InvalidClientTokenId"):
        sts.get_caller_identity()


def test_user_with_an_unmanaged_second_key_gets_a_clear_error(aws_env: dict[str, str], iam_user: str, iam_admin) -> None:  # type: ignore[no-untyped-def]
    """Two keys already, one not the rotator's: refuse, name it, delete nothing."""
    first = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    second = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    provider = make_provider(iam_user)
    with pytest.raises(NoCapacityError, match="unmanaged key") as caught:
        provider.issue(IssueContext("ci", "r1", managed_key_ids=frozenset({first})))
    assert second in str(caught.value)
    assert isinstance(caught.value, PermanentError)
    keys = {k["AccessKeyId"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}
    assert keys == {first, second}


def test_listing_reports_last_use_and_unmarked_keys(aws_env: dict[str, str], iam_user: str, iam_admin) -> None:  # type: ignore[no-untyped-def]
    """Keys made by hand show no mark; used keys show when."""
    manual = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    provider = make_provider(iam_user)
    credential = provider.issue(IssueContext("ci", "r9"))
    verify_eventually(provider, credential)
    keys = {k.key_id: k for k in provider.list_keys()}
    assert keys[manual].mark is None
    assert keys[credential.key_id].mark is not None
    assert keys[credential.key_id].last_used_at is not None


def test_params_reject_unknown_keys_and_bad_values() -> None:
    """The params model is strict."""
    with pytest.raises(ValueError):
        AwsIamParams.model_validate({"user_name": "x", "colour": "blue"})
    with pytest.raises(ValueError):
        AwsIamParams.model_validate({"user_name": "x", "role_arn": "not-an-arn"})


def test_revocation_is_confirmed_with_the_old_key_itself(aws_env: dict[str, str], iam_user: str) -> None:
    """is_revoked asks STS with the old key (InvalidClientTokenId), which the handle carries for that."""
    provider = make_provider(iam_user)
    credential = provider.issue(IssueContext("ci", "r1"))
    verify_eventually(provider, credential)
    same = credential.handle.get("secret_access_key") == credential.data["secret_access_key"]
    assert same, "the handle carries the key's secret (compared, never printed)"
    assert not provider.is_revoked(credential.handle)
    provider.revoke(credential.handle)
    assert provider.is_revoked(credential.handle)
    legacy = {k: v for k, v in credential.handle.items() if k != "secret_access_key"}
    assert provider.is_revoked(legacy), "a handle without the secret falls back to ListAccessKeys"
