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
from counting_proxy import CountingProxy


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


# -- the calls each operation makes (issue 15: a rotation's cost is its calls) -------------


@pytest.fixture
def aws_calls(aws_env: dict[str, str], moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:  # type: ignore[no-untyped-def]
    """Every AWS call (IAM and STS) of this test, through a recording proxy in front of moto."""
    with CountingProxy(moto.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # part of the IAM client's cache key: a new client
        yield proxy


def actions(proxy: CountingProxy) -> list[str | None]:
    return [seen.action for seen in proxy.requests()]


def test_issue_with_room_creates_and_marks_and_lists_nothing(aws_calls: CountingProxy, iam_user: str, iam_admin) -> None:  # type: ignore[no-untyped-def]
    """Create first: the 2-key limit is AWS's to check (LimitExceeded), not a listing before every create. Right
    before it, the issuing tag (a key left unmarked is told by it from one a person made); the mark clears it."""
    provider = make_provider(iam_user)
    credential = provider.issue(IssueContext("ci", "r1"))
    assert actions(aws_calls) == ["TagUser", "CreateAccessKey", "TagUser"]
    tags = {t["Key"]: t["Value"] for t in iam_admin.list_user_tags(UserName=iam_user)["Tags"]}
    assert tags == {credential.key_id: "rotator:ci:r1", "rotator-issuing:ci": ""}
    keys = {k["AccessKeyId"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}
    assert keys == {credential.key_id}


def test_a_full_user_is_listed_only_after_aws_refused_the_create(aws_calls: CountingProxy, iam_user: str, iam_admin) -> None:  # type: ignore[no-untyped-def]
    """LimitExceeded: one listing names the keys in the way (NoCapacityError, as before); nothing is made or deleted."""
    first = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    second = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    provider = make_provider(iam_user)
    with pytest.raises(NoCapacityError, match="both are the rotator's") as caught:
        provider.issue(IssueContext("ci", "r1", managed_key_ids=frozenset({first, second})))
    assert caught.value.blocking_key_ids == {first, second}
    assert actions(aws_calls) == ["TagUser", "CreateAccessKey", "ListAccessKeys"]
    keys = {k["AccessKeyId"] for k in iam_admin.list_access_keys(UserName=iam_user)["AccessKeyMetadata"]}
    assert keys == {first, second}


def test_listing_without_last_use_makes_two_calls_whatever_the_number_of_keys(aws_calls: CountingProxy, iam_user: str,
                                                                               iam_admin) -> None:  # type: ignore[no-untyped-def]
    """`list_keys_without_use`: ids, marks, status and creation times, without a GetAccessKeyLastUsed per key."""
    manual = iam_admin.create_access_key(UserName=iam_user)["AccessKey"]["AccessKeyId"]
    provider = make_provider(iam_user)
    credential = provider.issue(IssueContext("ci", "r9"))
    before = len(aws_calls.requests())
    keys = {k.key_id: k for k in provider.list_keys_without_use()}
    assert actions(aws_calls)[before:] == ["ListAccessKeys", "ListUserTags"]
    assert keys[manual].mark is None and keys[manual].created_at is not None and keys[manual].active
    assert keys[credential.key_id].mark is not None and keys[credential.key_id].mark.rotation_id == "r9"
    assert all(k.last_used_at is None for k in keys.values())
    full = {k.key_id: k for k in provider.list_keys()}
    assert {k: (v.mark, v.created_at, v.active) for k, v in full.items()} == {k: (v.mark, v.created_at, v.active) for k, v in keys.items()}


def test_sts_checks_are_one_signed_request_each_and_make_no_client(aws_calls: CountingProxy, iam_user: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """verify and is_revoked send one GetCallerIdentity signed with the key itself, to the endpoint boto
    would use (here AWS_ENDPOINT_URL, the proxy), and build no botocore client per key (issue 15)."""
    import botocore.session

    provider = make_provider(iam_user)
    warm = provider.issue(IssueContext("ci", "r0"))
    verify_eventually(provider, warm)  # the first check may set up what every later one shares
    provider.revoke(warm.handle)
    made: list[str] = []
    original = botocore.session.Session.create_client

    def counting(self, service_name, *args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(service_name)
        return original(self, service_name, *args, **kwargs)

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)
    credential = provider.issue(IssueContext("ci", "r1"))
    before = len(aws_calls.requests())
    provider.verify(credential)
    assert not provider.is_revoked(credential.handle)
    provider.revoke(credential.handle)
    assert provider.is_revoked(credential.handle)
    assert actions(aws_calls)[before:] == ["GetCallerIdentity", "GetCallerIdentity", "DeleteAccessKey", "UntagUser",
                                           "GetCallerIdentity"]
    assert made == [], f"botocore clients made per key: {made}"


def test_sts_errors_keep_their_meaning(aws_env: dict[str, str], iam_user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key STS does not know is not accepted (yet) for verify and rejected for is_revoked; no STS at all is transient."""
    from rotator.core.errors import TransientError
    from rotator.core.provider import IssuedCredential

    provider = make_provider(iam_user)
    unknown = IssuedCredential(key_id="AKIAUNKNOWNUNKNOWN01", data={"access_key_id": "AKIAUNKNOWNUNKNOWN01", "secret_access_key": "x" * 40},
                               handle={"user_name": iam_user, "access_key_id": "AKIAUNKNOWNUNKNOWN01", "secret_access_key": "x" * 40})
    with pytest.raises(TransientError, match="does not accept key AKIAUNKNOWNUNKNOWN01 yet"):
        provider.verify(unknown)
    assert provider.is_revoked(unknown.handle)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: connection refused
    with pytest.raises(TransientError, match="unreachable"):
        provider.verify(unknown)
    with pytest.raises(TransientError, match="unreachable"):
        provider.is_revoked(unknown.handle)
