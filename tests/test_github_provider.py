"""The GitHub providers against the stateful fake GitHub (real HTTP, injected
clock), and the fake itself where the providers rely on its behaviour."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from rotator_providers.github_app import (
    DeployKeyParams,
    GitHubAppInstallationTokenProvider,
    GitHubDeployKeyProvider,
    InstallationTokenParams,
    new_ed25519_pair,
    openssh_fingerprint,
)
from rotator_providers.github_http import API_VERSION, app_jwt
from rotator.core.clock import FakeClock
from rotator.core.errors import PermanentError, RotatorError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, ProviderContext
from rotator.engine.retry import call_with_retry
from rotator.sandbox.github import FakeGitHub
from rotator.sandbox.services import free_port
from rotator.testing.conformance import ProviderConformance
from rotator.testing.leaks import assert_no_leaks

APP_ID = 4242
INSTALLATION_ID = 777
KEY_REF = "secret/github/app#private_key"
REPO = "acme/api"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github(clock: FakeClock, app_key: rsa.RSAPrivateKey) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(clock=clock).start()
    public = app_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fake.add_app(APP_ID, public)
    fake.add_installation(INSTALLATION_ID, APP_ID, repositories=[REPO, "acme/web"])
    yield fake
    fake.stop()


@pytest.fixture
def vault(app_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """What `read_secret` sees: a dict standing in for Vault."""
    return {KEY_REF: _pem(app_key)}


@pytest.fixture
def context(clock: FakeClock, vault: dict[str, str]) -> ProviderContext:
    return ProviderContext(read_secret=lambda ref: vault[ref], clock=clock, user_agent="rotator-tests")


def _auth_params(github: FakeGitHub, **extra: object) -> dict[str, object]:
    return {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, "api_url": github.url, **extra}


@contextlib.contextmanager
def _closing(provider: GitHubAppInstallationTokenProvider | GitHubDeployKeyProvider) -> Iterator[None]:
    try:
        yield
    finally:
        provider.close()


@pytest.fixture
def token_provider(github: FakeGitHub, context: ProviderContext) -> Iterator[GitHubAppInstallationTokenProvider]:
    provider = GitHubAppInstallationTokenProvider(InstallationTokenParams.model_validate(_auth_params(github)), context)
    with _closing(provider):
        yield provider


@pytest.fixture
def key_provider(github: FakeGitHub, context: ProviderContext) -> Iterator[GitHubDeployKeyProvider]:
    provider = GitHubDeployKeyProvider(DeployKeyParams.model_validate(_auth_params(github, repository=REPO)), context)
    with _closing(provider):
        yield provider


def _ctx(credential: str = "ci-token", rotation_id: str = "r0123456789abcdef") -> IssueContext:
    return IssueContext(credential=credential, rotation_id=rotation_id)


class _FakeFaults:
    """`fault(kind)` for the conformance suite, through the fake's fault injection."""

    github: FakeGitHub

    @contextlib.contextmanager
    def fault(self, kind: str) -> Iterator[None]:
        if kind == "transient":
            self.github.inject(None, 503, count=None)
        else:
            self.github.inject(None, 403, count=None, body={"message": "Resource not accessible by integration"})
        try:
            yield
        finally:
            self.github.clear_faults()


class TestInstallationTokenConformance(_FakeFaults, ProviderConformance):
    @pytest.fixture
    def provider(self, github: FakeGitHub, token_provider: GitHubAppInstallationTokenProvider) -> GitHubAppInstallationTokenProvider:
        self.github = github
        return token_provider


class TestDeployKeyConformance(_FakeFaults, ProviderConformance):
    @pytest.fixture
    def provider(self, github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> GitHubDeployKeyProvider:
        self.github = github
        return key_provider


# -- the fake's own contract ---------------------------------------------------


def test_fake_refuses_requests_without_user_agent(github: FakeGitHub) -> None:
    """A request with no User-Agent header gets 403, as GitHub answers."""
    parts = urlsplit(github.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", "/installation/repositories")  # http.client adds no User-Agent
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    assert response.status == 403
    assert "User-Agent" in body


def test_provider_jwt_has_the_claims_github_requires(clock: FakeClock, app_key: rsa.RSAPrivateKey) -> None:
    """The App JWT is RS256, iss is the app id, iat is backdated and exp is at most 10 minutes ahead."""
    token = app_jwt(str(APP_ID), app_key, now=clock.now())
    claims = jwt.decode(token, app_key.public_key(), algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    now = int(clock.now().timestamp())
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["iss"] == str(APP_ID)
    assert claims["iat"] <= now - 30
    assert now < claims["exp"] <= now + 600


def _mint_with(github: FakeGitHub, token: str) -> int:
    response = httpx.post(
        f"{github.url}/app/installations/{INSTALLATION_ID}/access_tokens",
        headers={"Authorization": f"Bearer {token}", "User-Agent": "t", "X-GitHub-Api-Version": API_VERSION},
    )
    return response.status_code


def test_fake_accepts_the_provider_jwt_and_rejects_bad_ones(
    github: FakeGitHub, clock: FakeClock, app_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    """The fake mints for a good JWT and answers 401 for a wrong key, a far exp, a future iat or an expired JWT."""
    now = int(clock.now().timestamp())
    assert _mint_with(github, app_jwt(str(APP_ID), app_key, now=clock.now())) == 201
    assert _mint_with(github, app_jwt(str(APP_ID), other_key, now=clock.now())) == 401
    far = jwt.encode({"iat": now - 60, "exp": now + 660, "iss": str(APP_ID)}, app_key, algorithm="RS256")
    future = jwt.encode({"iat": now + 300, "exp": now + 500, "iss": str(APP_ID)}, app_key, algorithm="RS256")
    expired = jwt.encode({"iat": now - 700, "exp": now - 100, "iss": str(APP_ID)}, app_key, algorithm="RS256")
    unknown_app = jwt.encode({"iat": now - 60, "exp": now + 500, "iss": "999"}, app_key, algorithm="RS256")
    assert [_mint_with(github, t) for t in (far, future, expired, unknown_app)] == [401, 401, 401, 401]


def test_fake_tokens_expire_after_an_hour_of_the_injected_clock(
    github: FakeGitHub, clock: FakeClock, token_provider: GitHubAppInstallationTokenProvider
) -> None:
    """A token stops working once the fake's clock passes its expires_at."""
    credential = token_provider.issue(_ctx())
    token_provider.verify(credential)
    clock.advance(timedelta(minutes=61))
    assert token_provider.is_revoked(credential.handle)
    assert github.active_tokens() == 0


def test_fake_refuses_duplicate_and_untitled_deploy_keys(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """The same key twice in one repository, or a key without a title, gets 422."""
    _, public = new_ed25519_pair()
    github.add_deploy_key(REPO, public, title="by hand")
    token = key_provider._token()
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "t"}
    duplicate = httpx.post(f"{github.url}/repos/{REPO}/keys", headers=headers, json={"title": "x", "key": public})
    _, other = new_ed25519_pair()
    untitled = httpx.post(f"{github.url}/repos/{REPO}/keys", headers=headers, json={"key": other})
    assert duplicate.status_code == 422 and "already in use" in duplicate.text
    assert untitled.status_code == 422 and untitled.json()["errors"][0]["field"] == "title"
    assert set(duplicate.json()) >= {"message", "documentation_url"}
    assert "x-ratelimit-remaining" in duplicate.headers


# -- installation tokens -------------------------------------------------------


def test_installation_token_key_id_and_expiry(token_provider: GitHubAppInstallationTokenProvider, github: FakeGitHub, clock: FakeClock) -> None:
    """The key id is sha256: and 16 hex digits of the token; expires_at is an RFC 3339 string an hour ahead."""
    credential = token_provider.issue(_ctx())
    token = credential.data["token"]
    assert credential.key_id == "sha256:" + _sha(token)[:16]
    assert credential.expires_at == clock.now() + timedelta(hours=1)
    assert credential.data["expires_at"] == credential.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert credential.handle["token"] == token
    assert _sha(token) in github.active_token_hashes()


def test_installation_token_is_scoped_as_configured(github: FakeGitHub, context: ProviderContext) -> None:
    """repositories and permissions are sent, and the token is minted with exactly them."""
    params = InstallationTokenParams.model_validate(_auth_params(github, repositories=["api"], permissions={"contents": "read"}))
    provider = GitHubAppInstallationTokenProvider(params, context)
    with _closing(provider):
        credential = provider.issue(_ctx())
        assert github.token_grant(_sha(credential.data["token"])) == ([REPO], {"contents": "read"})
        provider.revoke(credential.handle)


def test_permissions_the_installation_lacks_are_a_permanent_error(github: FakeGitHub, context: ProviderContext) -> None:
    """Asking for more than the installation grants is PermanentError quoting GitHub's message."""
    params = InstallationTokenParams.model_validate(_auth_params(github, permissions={"workflows": "write"}))
    provider = GitHubAppInstallationTokenProvider(params, context)
    with _closing(provider), pytest.raises(PermanentError, match="not granted"):
        provider.issue(_ctx())


def test_wrong_app_key_is_a_permanent_error_naming_the_app(
    github: FakeGitHub, vault: dict[str, str], other_key: rsa.RSAPrivateKey, token_provider: GitHubAppInstallationTokenProvider
) -> None:
    """A JWT GitHub rejects is PermanentError naming app_id and the Vault ref, never the key."""
    vault[KEY_REF] = _pem(other_key)
    with pytest.raises(PermanentError) as caught:
        token_provider.issue(_ctx())
    assert str(APP_ID) in str(caught.value) and KEY_REF in str(caught.value)
    assert_no_leaks(str(caught.value), [vault[KEY_REF]], where="the error")


def test_unreadable_app_key_is_a_permanent_error(vault: dict[str, str], token_provider: GitHubAppInstallationTokenProvider) -> None:
    """A Vault field that is not a PEM key is PermanentError naming the reference."""
    vault[KEY_REF] = "not a key"
    with pytest.raises(PermanentError, match="not an unencrypted PEM"):
        token_provider.issue(_ctx())


def test_check_policy_rejects_intervals_of_an_hour_or_more() -> None:
    """Tokens live one hour: an interval >= 1h is refused on the schedule, and interval + grace beyond the hour on grace."""
    params = InstallationTokenParams.model_validate({"app_id": 1, "installation_id": 2, "private_key": KEY_REF})
    check = GitHubAppInstallationTokenProvider.check_policy
    for every in (timedelta(hours=1), timedelta(hours=2), timedelta(days=30)):
        assert [f for f, _ in check(params, interval=every, grace=timedelta(minutes=5))] == [""]  # "": the schedule field
    assert check(params, interval=timedelta(minutes=45), grace=timedelta(minutes=20))[0][0] == "grace"
    assert check(params, interval=timedelta(minutes=30), grace=timedelta(minutes=10)) == []
    assert check(params, interval=None, grace=timedelta(minutes=10)) == []


def test_ghes_style_api_url_with_a_path_works(clock: FakeClock) -> None:
    """An api_url with a path (GitHub Enterprise Server's /api/v3) is honoured; create_app sets up an App in one call."""
    with FakeGitHub(clock=clock, path_prefix="/api/v3") as ghes:
        pem = ghes.create_app(APP_ID, INSTALLATION_ID, repositories=[REPO])
        context = ProviderContext(read_secret={KEY_REF: pem}.__getitem__, clock=clock)
        provider = GitHubAppInstallationTokenProvider(InstallationTokenParams.model_validate(_auth_params(ghes)), context)
        with _closing(provider):
            credential = provider.issue(_ctx())
            provider.verify(credential)
            provider.revoke(credential.handle)


# -- rate limits and outages ---------------------------------------------------


def test_429_with_retry_after_is_transient_and_waited_out(
    github: FakeGitHub, clock: FakeClock, token_provider: GitHubAppInstallationTokenProvider
) -> None:
    """429 + retry-after raises TransientError(retry_after) and call_with_retry waits that long on the clock, then succeeds."""
    github.inject(r"/access_tokens$", 429, headers={"retry-after": "7"})
    with pytest.raises(TransientError) as caught:
        token_provider.issue(_ctx())
    assert caught.value.retry_after == 7
    github.inject(r"/access_tokens$", 429, headers={"retry-after": "7"})
    start = clock.now()
    credential = call_with_retry(lambda: token_provider.issue(_ctx()), clock=clock)
    assert clock.now() - start >= timedelta(seconds=7)
    token_provider.revoke(credential.handle)


def test_exhausted_rate_limit_waits_until_reset(
    github: FakeGitHub, clock: FakeClock, key_provider: GitHubDeployKeyProvider
) -> None:
    """x-ratelimit-remaining: 0 gives retry_after = reset - now, and the retry after it succeeds."""
    github.exhaust_rate_limit(reset_in=42)
    with pytest.raises(TransientError) as caught:
        key_provider.list_keys()
    assert caught.value.retry_after == pytest.approx(42, abs=1)
    start = clock.now()
    assert call_with_retry(key_provider.list_keys, clock=clock) == []
    assert clock.now() - start >= timedelta(seconds=41)


@pytest.mark.parametrize(("status", "retry_after", "expected"), [(403, None, 60.0), (403, 3, 3.0), (429, None, 60.0)])
def test_secondary_rate_limits_are_transient(
    github: FakeGitHub, token_provider: GitHubAppInstallationTokenProvider, status: int, retry_after: int | None, expected: float
) -> None:
    """A secondary rate limit is TransientError; without retry-after it waits GitHub's advised minute."""
    github.inject_secondary_rate_limit(status=status, retry_after=retry_after)
    with pytest.raises(TransientError) as caught:
        token_provider.issue(_ctx())
    assert caught.value.retry_after == expected


def test_plain_403_is_permanent(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """A 403 that is no rate limit (missing permission) is PermanentError."""
    github.inject(r"/keys$", 403, body={"message": "Resource not accessible by integration"})
    with pytest.raises(PermanentError, match="not accessible"):
        key_provider.issue(_ctx())


def test_unreachable_github_is_transient(context: ProviderContext) -> None:
    """A connection refused is TransientError."""
    params = InstallationTokenParams.model_validate(
        {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, "api_url": f"http://127.0.0.1:{free_port()}"}
    )
    provider = GitHubAppInstallationTokenProvider(params, context)
    with _closing(provider), pytest.raises(TransientError, match="cannot reach"):
        provider.issue(_ctx())


def test_writes_to_one_app_go_one_at_a_time(clock: FakeClock, app_key: rsa.RSAPrivateKey, context: ProviderContext) -> None:
    """Concurrent issues through several provider instances never overlap their writes to one App."""
    with FakeGitHub(clock=clock, latency=0.03) as slow:
        public = app_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        slow.add_app(APP_ID, public)
        slow.add_installation(INSTALLATION_ID, APP_ID, repositories=[REPO])
        providers = [
            GitHubDeployKeyProvider(DeployKeyParams.model_validate(_auth_params(slow, repository=REPO)), context) for _ in range(4)
        ]
        errors: list[BaseException] = []

        def issue(provider: GitHubDeployKeyProvider) -> None:
            try:  # one rotation each: a rotation's issue clears keys a lost create of its own left
                provider.issue(_ctx("deploy", f"r{providers.index(provider)}"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=issue, args=(p,)) for p in providers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        for provider in providers:
            provider.close()
        assert not errors
        assert slow.max_concurrent_writes[str(APP_ID)] == 1
        assert len(slow.deploy_keys(REPO)) == 4


# -- deploy keys ---------------------------------------------------------------


def test_deploy_private_key_is_valid_openssh(tmp_path: Path, github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """ssh-keygen derives, from the private key, the public key GitHub has registered, with the same fingerprint."""
    credential = key_provider.issue(_ctx())
    path = tmp_path / "id_ed25519"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(credential.data["private_key"])
    derived = subprocess.run(["/usr/bin/ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    listed = subprocess.run(["/usr/bin/ssh-keygen", "-l", "-E", "sha256", "-f", str(path)], capture_output=True, text=True, check=True).stdout
    registered = {str(k["id"]): k["key"] for k in github.deploy_keys(REPO)}[credential.key_id]
    assert derived.split()[:2] == registered.split()[:2]
    assert credential.data["public_key"].split()[:2] == registered.split()[:2]
    assert listed.split()[1] == credential.data["fingerprint"] == openssh_fingerprint(registered)
    assert credential.data["key_id"] == credential.key_id


@pytest.mark.parametrize("read_only", [True, False])
def test_read_only_is_always_sent(github: FakeGitHub, context: ProviderContext, read_only: bool) -> None:
    """The create call carries read_only explicitly, and the key is registered that way."""
    params = DeployKeyParams.model_validate(_auth_params(github, repository=REPO, read_only=read_only))
    provider = GitHubDeployKeyProvider(params, context)
    with _closing(provider):
        credential = provider.issue(_ctx())
        provider.verify(credential)
    posts = [r for r in github.requests if r.method == "POST" and r.path == f"/repos/{REPO}/keys"]
    assert posts and posts[0].body["read_only"] is read_only and posts[0].auth == "token"
    assert github.deploy_keys(REPO)[0]["read_only"] is read_only


def test_missing_administration_permission_is_explained(github: FakeGitHub, context: ProviderContext) -> None:
    """An installation without administration: write fails for good, and the error says what is missing."""
    github.add_installation(INSTALLATION_ID + 1, APP_ID, repositories=[REPO], permissions={"contents": "write", "metadata": "read"})
    params = DeployKeyParams.model_validate({**_auth_params(github, repository=REPO), "installation_id": INSTALLATION_ID + 1})
    provider = GitHubDeployKeyProvider(params, context)
    with _closing(provider), pytest.raises(PermanentError, match="administration: write"):
        provider.issue(_ctx())


def test_server_errors_are_transient_and_keep_retry_after(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """A 503 is TransientError, carrying GitHub's retry-after when it sends one."""
    github.inject(r"/keys$", 503, headers={"retry-after": "5"})
    with pytest.raises(TransientError) as caught:
        key_provider.issue(_ctx())
    assert caught.value.retry_after == 5


def test_unparsable_and_misshapen_answers_are_rotator_errors(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """A 2xx body that is not JSON is transient; JSON of the wrong shape is permanent; nothing else escapes."""
    github.inject(r"/keys$", 201, body=b"<html>proxy</html>", method="POST")
    with pytest.raises(TransientError, match="not JSON"):
        key_provider.issue(_ctx())
    github.inject(r"/keys$", 200, body={"not": "a list"})
    with pytest.raises(PermanentError, match="expected a list"):
        key_provider.list_keys()


def test_verify_rejects_a_key_that_is_not_our_public_half(key_provider: GitHubDeployKeyProvider) -> None:
    """A registered key that does not match the private key fails verification for good."""
    credential = key_provider.issue(_ctx())
    other_private, _ = new_ed25519_pair()
    forged = IssuedCredential(key_id=credential.key_id, data={**credential.data, "private_key": other_private}, handle=credential.handle)
    with pytest.raises(PermanentError, match="not the public half"):
        key_provider.verify(forged)


def test_list_keys_follows_pages_and_reads_marks(github: FakeGitHub, clock: FakeClock, key_provider: GitHubDeployKeyProvider) -> None:
    """Listing follows Link rel=next; our keys carry their mark, others have none; last_used is read."""
    for title in ("by hand", "rotator:other", "otherprefix:ci:r1"):
        github.add_deploy_key(REPO, new_ed25519_pair()[1], title=title)
    ours = [key_provider.issue(_ctx("deploy", f"r{i}")) for i in range(2)]
    github.use_deploy_key(REPO, ours[0].key_id, at=clock.now())
    key_provider.page_size = 2
    before = len(github.requests)
    keys = {k.key_id: k for k in key_provider.list_keys()}
    assert len(keys) == 5
    assert sum(1 for r in github.requests[before:] if r.method == "GET" and r.path == f"/repos/{REPO}/keys") == 3
    assert [keys[c.key_id].mark.rotation_id for c in ours] == ["r0", "r1"]  # type: ignore[union-attr]
    assert keys[ours[0].key_id].last_used_at == clock.now()
    assert keys[ours[1].key_id].last_used_at is None
    assert all(k.created_at is not None and k.created_at <= clock.now() for k in keys.values())  # writes are 1 s apart
    assert sum(1 for k in keys.values() if k.mark is None) == 3


def test_pagination_never_leaves_the_api_origin(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """A next link to another host is refused rather than followed with our token."""
    github.inject(r"/keys$", 200, body=[], headers={"link": '<http://127.0.0.2:9/steal>; rel="next"'})
    with pytest.raises(PermanentError, match="outside the configured api_url"):
        key_provider.list_keys()


def test_management_token_is_cached_renewed_and_revoked_on_close(
    github: FakeGitHub, clock: FakeClock, key_provider: GitHubDeployKeyProvider
) -> None:
    """One management token serves many calls, a new one is minted near expiry, and close() revokes it."""
    def mints() -> int:
        return sum(1 for r in github.requests if r.path.endswith("/access_tokens"))

    credential = key_provider.issue(_ctx())
    key_provider.verify(credential)
    key_provider.list_keys()
    assert mints() == 1
    assert github.token_grant(next(iter(github.active_token_hashes())))[1] == {"administration": "write"}
    clock.advance(timedelta(minutes=56))
    key_provider.list_keys()
    assert mints() == 2
    key_provider.close()
    assert github.active_tokens() == 0


def test_a_dead_management_token_is_dropped_and_reminted(github: FakeGitHub, key_provider: GitHubDeployKeyProvider) -> None:
    """If GitHub rejects the cached token, the call is TransientError and the next call mints a new one."""
    key_provider.list_keys()
    key_provider.auth.revoke(key_provider._token())
    with pytest.raises(TransientError):
        key_provider.list_keys()
    assert key_provider.list_keys() == []


def test_is_revoked_will_not_confirm_when_the_repository_is_out_of_reach(key_provider: GitHubDeployKeyProvider) -> None:
    """A 404 from a repository the App cannot see is no proof the key is gone."""
    with pytest.raises(PermanentError, match="acme/secret-repo"):
        key_provider.is_revoked({"repository": "acme/secret-repo", "key_id": "1", "public_key": ""})


# -- params --------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"repository": "acme"},
        {"repository": "acme/api/extra"},
        {"repository": "-acme/api"},
        {"unknown": 1},
        {"api_url": "http://github.example.com"},
        {"title_prefix": ""},
        {"title_prefix": " leading space"},
        {"title_prefix": "tab\tinside"},
        {"title_prefix": "x" * 61},
        {"private_key": "-----BEGIN RSA PRIVATE KEY-----"},
        {"app_id": 0},
    ],
)
def test_deploy_key_params_reject_bad_values(override: dict[str, object]) -> None:
    """Bad repository shapes, unknown keys, plain-http non-loopback URLs and malformed values are refused."""
    values = {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, "repository": REPO, **override}
    with pytest.raises(ValidationError):
        DeployKeyParams.model_validate(values)


def test_deploy_key_params_defaults_and_accepted_urls() -> None:
    """read_only defaults to true, api_url to api.github.com; https and loopback http are accepted."""
    base = {"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, "repository": REPO}
    params = DeployKeyParams.model_validate(base)
    assert (params.read_only, params.title_prefix, params.api_url) == (True, "rotator", "https://api.github.com")
    for url in ("https://ghe.example.com/api/v3", "http://127.0.0.1:8080"):
        assert DeployKeyParams.model_validate({**base, "api_url": url}).api_url == url


@pytest.mark.parametrize(
    "override",
    [{"repositories": ["acme/api"]}, {"repositories": []}, {"permissions": {"contents": "rw"}}, {"permissions": {"Bad Name": "read"}}, {"extra": True}],
)
def test_installation_token_params_reject_bad_values(override: dict[str, object]) -> None:
    """Owner-qualified or empty repository lists, unknown permission levels and unknown keys are refused."""
    with pytest.raises(ValidationError):
        InstallationTokenParams.model_validate({"app_id": APP_ID, "installation_id": INSTALLATION_ID, "private_key": KEY_REF, **override})


# -- secrets stay secret -------------------------------------------------------


def test_no_secret_reaches_output_logs_or_errors(
    github: FakeGitHub,
    vault: dict[str, str],
    token_provider: GitHubAppInstallationTokenProvider,
    key_provider: GitHubDeployKeyProvider,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tokens, deploy private keys and the App key appear in no output, log, repr or error text, even when GitHub echoes one."""
    seen: list[str] = [vault[KEY_REF]]
    texts: list[str] = []
    token = token_provider.issue(_ctx())
    deploy = key_provider.issue(_ctx())
    seen += [token.data["token"], deploy.data["private_key"], key_provider._token()]
    texts += [repr(token), repr(deploy), repr(key_provider._own_token), repr(token_provider), repr(key_provider)]
    failures = [
        lambda: github.inject(None, 500, body={"message": f"oops {token.data['token']}"}),
        lambda: github.inject(None, 401, body={"message": "Bad credentials"}),
        lambda: github.inject(None, 429, headers={"retry-after": "1"}),
        lambda: github.inject(None, 422, body={"message": f"bad key {deploy.data['private_key']}"}),
    ]
    for arm in failures:
        for call in (lambda: token_provider.issue(_ctx()), lambda: key_provider.issue(_ctx()), lambda: token_provider.verify(token)):
            arm()
            try:
                call()
            except RotatorError as exc:
                texts += [str(exc), repr(exc)]
            github.clear_faults()
    token_provider.revoke(token.handle)
    key_provider.revoke(deploy.handle)
    captured = capsys.readouterr()
    everything = "\n".join([*texts, captured.out, captured.err, caplog.text])
    assert len(texts) > 10
    assert_no_leaks(everything, seen, where="output, logs and errors")
