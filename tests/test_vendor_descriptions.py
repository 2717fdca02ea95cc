"""The fakes held to the vendors' own OpenAPI descriptions (tests/openapi/,
checked with openapi-core by tests/openapi_check.py; the conftest fixture
`vendor_descriptions` applies the same check to every test). These tests
show the check bites: a provider request or a sandbox answer that breaks a
described operation is reported, and a full provider lifecycle is clean."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openapi_check import problems
from rotator_providers.github_app import (
    DeployKeyParams,
    GitHubAppInstallationTokenProvider,
    GitHubDeployKeyProvider,
    InstallationTokenParams,
)
from rotator_providers.stripe_api import (
    StripeManagedApiKeyParams,
    StripeManagedApiKeyProvider,
    StripeWebhookSecretParams,
    StripeWebhookSecretProvider,
)
from rotator.core.clock import FakeClock
from rotator.core.provider import IssueContext, ProviderContext
from rotator.sandbox.exchanges import Exchange, observe
from rotator.sandbox.github import FakeGitHub
from rotator.sandbox.stripe import FakeStripe

APP_ID, INSTALLATION_ID, CLIENT_ID = 4242, 777, "Iv23liRotatorTest01x"
KEY_REF, REPO = "secret/github/app#private_key", "acme/api"
ACCOUNT, APP_REF, ADMIN_REF = "acct_1Vendor", "secret/stripe/app#key", "secret/stripe/admin#key"


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def seen() -> Iterator[list[Exchange]]:
    exchanges: list[Exchange] = []
    stop = observe(exchanges.append)
    yield exchanges
    stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github(clock: FakeClock, app_key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(clock=clock).start()
    public = app_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fake.add_app(APP_ID, public, client_id=CLIENT_ID)
    fake.add_installation(INSTALLATION_ID, APP_ID, repositories=[REPO])
    yield fake
    fake.stop()


def _context(clock: FakeClock, secrets: dict[str, str]) -> ProviderContext:
    return ProviderContext(read_secret=secrets.__getitem__, clock=clock)


def _github_secrets(app_key: rsa.RSAPrivateKey) -> dict[str, str]:
    pem = app_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {KEY_REF: pem.decode()}


def _auth(github: FakeGitHub, **extra: object) -> dict[str, object]:
    return {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, "api_url": github.url, **extra}


def _operations(exchanges: list[Exchange], sandbox: str) -> set[tuple[str, str]]:
    import re
    return {(e.method, re.sub(r"/(mk|we)_\w+|/\d+", "/{id}", e.path)) for e in exchanges if e.sandbox == sandbox}


def test_every_github_call_of_both_providers_fits_the_description(github: FakeGitHub, clock: FakeClock,
                                                                   app_key: rsa.RSAPrivateKey, seen: list[Exchange]) -> None:
    """Mint, verify, revoke tokens; add, verify, list, delete deploy keys: every request and answer is valid."""
    context = _context(clock, _github_secrets(app_key))
    tokens = GitHubAppInstallationTokenProvider(InstallationTokenParams.model_validate(_auth(github)), context)
    keys = GitHubDeployKeyProvider(DeployKeyParams.model_validate(_auth(github, repository=REPO)), context)
    try:
        for rotation in ("r1", "r2"):
            token = tokens.issue(IssueContext("ci", rotation))
            tokens.verify(token)
            tokens.revoke(token.handle)
            assert tokens.is_revoked(token.handle)
        key = keys.issue(IssueContext("deploy", "r1"))
        keys.verify(key)
        keys.list_keys()
        keys.revoke(key.handle)
        assert keys.is_revoked(key.handle)
    finally:
        tokens.close()
        keys.close()
    assert [p for e in seen for p in problems(e)] == []
    assert {("POST", "/app/installations/{id}/access_tokens"), ("GET", "/installation/repositories"),
            ("DELETE", "/installation/token"), ("POST", "/repos/acme/api/keys"), ("GET", "/repos/acme/api/keys/{id}"),
            ("GET", "/repos/acme/api/keys"), ("DELETE", "/repos/acme/api/keys/{id}"),
            ("GET", "/repos/acme/api")} <= _operations(seen, "github")


def test_every_stripe_call_of_both_providers_fits_the_description(clock: FakeClock, seen: list[Exchange]) -> None:
    """Mint, verify, list, expire API keys; create, verify, list, delete endpoints: every request and answer is valid."""
    with FakeStripe(now=lambda: clock.now().timestamp()) as fake:
        secrets = {APP_REF: fake.add_account(ACCOUNT), ADMIN_REF: fake.add_secret_key(ACCOUNT)}
        context = _context(clock, secrets)
        api_keys = StripeManagedApiKeyProvider(StripeManagedApiKeyParams(
            account=ACCOUNT, management_key=APP_REF, permissions=["customer_read"], api_base=fake.url), context)
        hooks = StripeWebhookSecretProvider(StripeWebhookSecretParams(
            url="https://hooks.example.com/x", enabled_events=["invoice.paid"], management_key=ADMIN_REF,
            api_base=fake.url), context)
        key = api_keys.issue(IssueContext("pay", "r1"))
        api_keys.verify(key)
        api_keys.list_keys()
        api_keys.revoke(key.handle)
        assert api_keys.is_revoked(key.handle)
        assert api_keys.is_revoked({"key_id": key.key_id})
        endpoint = hooks.issue(IssueContext("hook", "r1"))
        hooks.verify(endpoint)
        hooks.list_keys()
        hooks.revoke(endpoint.handle)
        assert hooks.is_revoked(endpoint.handle)
        api_keys.close()
        hooks.close()
    assert [p for e in seen for p in problems(e)] == []
    assert {("POST", "/v2/iam/api_keys"), ("GET", "/v2/iam/api_keys"), ("GET", "/v2/iam/api_keys/{id}"),
            ("POST", "/v2/iam/api_keys/{id}/expire"), ("GET", "/v1/customers"), ("POST", "/v1/webhook_endpoints"),
            ("GET", "/v1/webhook_endpoints"), ("GET", "/v1/webhook_endpoints/{id}"),
            ("DELETE", "/v1/webhook_endpoints/{id}")} <= _operations(seen, "stripe")


def _exchange(sandbox: str, method: str, path: str, body: object, status: int, answer: object, **headers: str) -> Exchange:
    sent = {"user-agent": "rotator/1.0", "authorization": "Bearer x", "content-type": "application/json", **headers}
    return Exchange(sandbox, method, path, "", sent, json.dumps(body).encode() if body is not None else b"", status,
                    {"content-type": "application/json"}, json.dumps(answer).encode())


STRIPE_V2 = {"stripe-version": "2026-08-26.preview", "stripe-context": ACCOUNT, "idempotency-key": "k"}
GITHUB = {"x-github-api-version": "2022-11-28"}
KEY = {"id": "mk_1", "object": "v2.iam.api_key", "type": "secret_key", "status": "active", "livemode": False,
       "created": "2026-01-01T00:00:00.000Z", "ip_allowlist": []}
DEPLOY_KEY = {"id": 1, "key": "ssh-ed25519 AAAA", "url": "u", "title": "t", "verified": True,
              "created_at": "2026-01-01T00:00:00Z", "read_only": True}


@pytest.mark.parametrize(("exchange", "expected"), [
    (_exchange("stripe", "POST", "/v2/iam/api_keys", {"type": "secret_key", "name": "n"}, 200, KEY, **STRIPE_V2), None),
    (_exchange("stripe", "POST", "/v2/iam/api_keys", {"type": "secret_key", "nmae": "n"}, 200, KEY, **STRIPE_V2), "request"),
    (_exchange("stripe", "POST", "/v2/iam/api_keys", {"type": "secret_key", "name": "x" * 101}, 200, KEY, **STRIPE_V2), "request"),
    (_exchange("stripe", "POST", "/v2/iam/api_keys", {"type": "secret_key"}, 200, KEY,
               **{**STRIPE_V2, "stripe-version": "latest"}), "request"),
    (_exchange("stripe", "POST", "/v2/iam/api_keys", {"type": "secret_key"}, 200, {k: v for k, v in KEY.items() if k != "status"},
               **STRIPE_V2), "response"),
    (_exchange("stripe", "GET", "/v2/iam/keys", None, 404, {"error": {"type": "invalid_request_error"}}, **STRIPE_V2), "request"),
    (_exchange("github", "POST", "/repos/acme/api/keys", {"title": "t", "key": "k", "read_only": True}, 201, DEPLOY_KEY, **GITHUB), None),
    (_exchange("github", "POST", "/repos/acme/api/keys", {"title": "t", "key": "k", "readonly": True}, 201, DEPLOY_KEY, **GITHUB), "request"),
    (_exchange("github", "POST", "/repos/acme/api/keys", {"title": "t", "key": "k"}, 201, {**DEPLOY_KEY, "verified": "yes"}, **GITHUB), "response"),
    (_exchange("github", "GET", "/repos/acme/api/keys/1", None, 200, DEPLOY_KEY), "request"),
    (_exchange("github", "POST", "/app/installations/7/access_tokens", None, 201,
               {"token": "ghs_" + "a" * 20, "expires_at": "2026-01-01T00:00:00Z"}, **GITHUB), "response"),
])
def test_the_check_bites(exchange: Exchange, expected: str | None) -> None:
    """Unknown or misspelt fields, a wrong header, an undescribed path, a missing or mistyped answer field all fail."""
    found = problems(exchange)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(expected), found


# -- GitHub specifics: token formats, client id, write spacing -----------------------


def test_sandbox_mints_both_token_formats_and_both_work(github: FakeGitHub, clock: FakeClock, app_key: rsa.RSAPrivateKey) -> None:
    """Classic (ghs_ + 36) and stateless (ghs_APPID_JWT, ~520 chars) tokens both verify, revoke and get 401 after."""
    provider = GitHubAppInstallationTokenProvider(InstallationTokenParams.model_validate(_auth(github)), _context(clock, _github_secrets(app_key)))
    try:
        issued = [provider.issue(IssueContext("ci", f"r{i}")) for i in range(2)]
        lengths = sorted(len(c.data["token"]) for c in issued)
        assert lengths[0] == 40 and 450 <= lengths[1] <= 600
        stateless = next(c.data["token"] for c in issued if len(c.data["token"]) > 40)
        assert stateless.startswith(f"ghs_{APP_ID}_") and stateless.count(".") == 2
        header = stateless.split("_", 2)[2].split(".")[0]
        assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["typ"] == "JWT"
        for credential in issued:
            provider.verify(credential)
            provider.revoke(credential.handle)
            assert provider.is_revoked(credential.handle)
    finally:
        provider.close()


def test_client_id_is_the_jwt_issuer_and_the_app_id_still_works(github: FakeGitHub, clock: FakeClock,
                                                                app_key: rsa.RSAPrivateKey, seen: list[Exchange]) -> None:
    """With client_id the JWT's iss is the Client ID (GitHub's advice); without it, the App id (GHES)."""
    context = _context(clock, _github_secrets(app_key))
    for extra, issuer in (({"client_id": CLIENT_ID}, CLIENT_ID), ({}, str(APP_ID))):
        provider = GitHubAppInstallationTokenProvider(InstallationTokenParams.model_validate(_auth(github, **extra)), context)
        try:
            provider.verify(provider.issue(IssueContext("ci", "r1")))
        finally:
            provider.close()
        mint = [e for e in seen if e.path.endswith("/access_tokens")][-1]
        claims = jwt.decode(mint.request_headers["authorization"].split(" ", 1)[1], options={"verify_signature": False})
        assert claims["iss"] == issuer
    with pytest.raises(ValueError, match="Client ID"):
        InstallationTokenParams.model_validate(_auth(github, client_id="4242"))


def test_writes_as_one_app_are_a_second_apart_on_the_injected_clock(github: FakeGitHub, clock: FakeClock,
                                                                    app_key: rsa.RSAPrivateKey) -> None:
    """GitHub's best practices: writes for one App at least 1 s apart; waited on the fake clock, so no test sleeps."""
    provider = GitHubDeployKeyProvider(DeployKeyParams.model_validate(_auth(github, repository=REPO)), _context(clock, _github_secrets(app_key)))
    started = clock.now()
    try:
        for i in range(3):
            provider.revoke(provider.issue(IssueContext("deploy", f"r{i}")).handle)
    finally:
        provider.close()
    assert github.min_write_gap[str(APP_ID)] >= 1.0
    assert (clock.now() - started).total_seconds() >= 6, "seven writes, each a second after the last"
