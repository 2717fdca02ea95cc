"""Redaction that holds (issue 11, item 6): every form of a registered secret
is masked in every string of an event; the scrubber is checked against
encodings computed independently here (rotator.testing.leaks)."""

from __future__ import annotations

import base64
import io
import json
import secrets as random
import string

import pytest

from rotator.audit import events as audit
from rotator.core.validators import secret_lookalike
from rotator.core.redaction import MIN_FRAGMENT, REDACTED, SecretRegistry
from rotator.testing.leaks import find_leaks, leak_forms


def a_secret(n: int = 40, alphabet: str = string.ascii_letters + string.digits + "/+=") -> str:
    return "".join(random.choice(alphabet) for _ in range(n))


def registry_with(*values: str) -> SecretRegistry:
    registry = SecretRegistry()
    for value in values:
        registry.add(value)
    return registry


@pytest.mark.parametrize("form", list(leak_forms("x" * 8)))
def test_each_encoded_form_is_masked(form: str) -> None:
    """The value itself, JSON-escaped, URL-encoded and base64 (std, url-safe, padded or not)."""
    secret = a_secret() + '"\\\n é'  # characters each encoding treats specially
    registry = registry_with(secret)
    copy = leak_forms(secret)[form]
    scrubbed = registry.scrub(f"before {copy} after")
    assert find_leaks(scrubbed, [secret]) == [] and REDACTED in scrubbed
    assert scrubbed.startswith("before ") and scrubbed.endswith(" after")


@pytest.mark.parametrize("prefix", ["", "x", "xy", "x-access-token:"])
def test_base64_of_a_longer_text_holding_the_secret_is_masked(prefix: str) -> None:
    """Basic auth and the like: the secret at any byte offset inside base64 text."""
    secret = a_secret(36)
    registry = registry_with(secret)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(f"{prefix}{secret}:tail".encode()).decode()
        scrubbed = registry.scrub(blob)
        assert REDACTED in scrubbed
        # Only the characters that encode the prefix and the tail (and the
        # groups they share with the secret) may be left.
        left = len(scrubbed.replace(REDACTED, ""))
        assert left <= -(-(len(prefix) + len(":tail")) * 4 // 3) + 4


def test_cut_off_copies_keeping_the_minimum_are_masked_and_shorter_ones_are_not() -> None:
    """A copy cut at either end is masked down to MIN_FRAGMENT characters (the documented floor)."""
    secret = a_secret(40)
    registry = registry_with(secret)
    for keep in (MIN_FRAGMENT, 20, 39):
        assert registry.scrub(f"body: {secret[:keep]}") == f"body: {REDACTED}"
        assert registry.scrub(f"{secret[-keep:]} (truncated)") == f"{REDACTED} (truncated)"
    short = secret[: MIN_FRAGMENT - 1]
    assert registry.scrub(f"body: {short}") == f"body: {short}"


def test_a_json_escaped_pem_cut_short_is_masked() -> None:
    """A private key quoted in JSON (newlines as \\n), and cut off mid-body."""
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(a_secret(70) for _ in range(5)) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    registry = registry_with(pem)
    quoted = json.dumps({"private_key": pem})
    scrubbed = registry.scrub(quoted[:180])
    assert all(line not in scrubbed for line in pem.splitlines()[1:-1])


def test_a_url_is_masked_whole_but_its_host_is_not_a_fragment() -> None:
    """An alert webhook URL is a secret; the Vault address sharing its host is not."""
    url = "http://127.0.0.1:9999/services/T000/B000/" + a_secret(24, string.ascii_letters)
    registry = registry_with(url)
    assert registry.scrub(f"posting to {url}") == f"posting to {REDACTED}"
    assert registry.scrub("Vault at http://127.0.0.1:8200") == "Vault at http://127.0.0.1:8200"


def test_short_values_are_not_registered_and_the_registry_is_bounded() -> None:
    registry = SecretRegistry(limit=3)
    registry.add("short")
    assert len(registry) == 0 and registry.scrub("a short word") == "a short word"
    values = [a_secret() for _ in range(5)]
    for value in values:
        registry.add(value)
    assert len(registry) == 3
    assert registry.scrub(values[0]) == values[0]  # the oldest was forgotten
    assert registry.scrub(values[-1]) == REDACTED


def test_a_stateless_installation_token_is_a_lookalike_without_registration() -> None:
    """GitHub's 2026 format: ghs_ + app id + a JWT (~520 chars, dots, underscores, dashes)."""
    alnum = string.ascii_letters + string.digits  # no 40-character run for the AWS lookalike to catch
    token = f"ghs_123456_eyJhbGciOiJSUzI1NiJ9.{a_secret(400, alnum)}.{a_secret(86, alnum)}"
    assert len(token) == 519 and token.count(".") == 2
    assert secret_lookalike(f"GitHub said: {token}") is not None
    classic = "ghs_" + a_secret(36, string.ascii_letters + string.digits)
    assert secret_lookalike(classic) is not None


def _logged(**fields: object) -> dict[str, object]:
    stream = io.StringIO()
    audit.configure(fmt="json", stream=stream)
    audit.get_logger().info(fields.pop("event_name", "test.event"), **fields)
    return json.loads(stream.getvalue().splitlines()[-1])


def test_every_string_of_an_event_is_scrubbed_event_keys_and_bytes_included() -> None:
    """The event name, dict keys, bytes, nested lists and exceptions."""
    secret = a_secret(32, string.ascii_letters)
    audit.register_secret(secret)
    line = _logged(
        event_name=f"oops {secret}",
        detail={secret: "value", "nested": [f"x{secret}", (b"bytes " + secret.encode(),)]},
        raw=base64.b64encode(secret.encode()),
        error=ValueError(f"bad {secret}"),
        other=secret[:20],
    )
    text = json.dumps(line)
    assert find_leaks(text, [secret], fragments=True) == []
    assert line["event"] == f"oops {REDACTED}"
    assert REDACTED in line["detail"] and line["raw"] == REDACTED


def test_unregistered_lookalikes_are_masked_whole() -> None:
    line = _logged(message="here is sk_live_" + a_secret(24, string.ascii_letters))
    assert line["message"] == REDACTED


def test_the_aws_provider_registers_assumed_role_credentials_and_new_keys(aws_env, iam_admin, iam_user: str, unique: str) -> None:  # type: ignore[no-untyped-def]
    """STS session credentials (`role_arn`), the rotator's own AWS secret and each new
    secret access key are registered the moment the provider holds them (moto)."""
    from rotator_providers.aws_iam import AwsIamAccessKeyProvider, AwsIamParams
    from rotator.core.clock import SystemClock
    from rotator.core.provider import IssueContext, ProviderContext

    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}
    role = iam_admin.create_role(RoleName=f"rot-{unique}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    rights = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
    iam_admin.put_role_policy(RoleName=f"rot-{unique}", PolicyName="rotate", PolicyDocument=json.dumps(rights))
    seen: list[str] = []
    context = ProviderContext(read_secret=lambda ref: "", clock=SystemClock(), register_secret=lambda *v: seen.extend(x for x in v if x))
    params = AwsIamParams(user_name=iam_user, role_arn=role, delete_after_deactivation="0s")  # type: ignore[arg-type]
    provider = AwsIamAccessKeyProvider(params, context)
    frozen = provider.iam._request_signer._credentials.get_frozen_credentials()
    assert frozen.token and frozen.token in seen and frozen.secret_key in seen, "the assumed role's session credentials"
    assert aws_env["AWS_SECRET_ACCESS_KEY"] in seen, "the rotator's own secret"
    issued = provider.issue(IssueContext(credential=iam_user, rotation_id="r1"))
    assert issued.data["secret_access_key"] in seen, "the new key's secret, registered inside issue()"
    provider.revoke(issued.handle)
