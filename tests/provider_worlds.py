"""Worlds for end-to-end and crash tests of the GitHub and Stripe providers:
one credential file per test, its referenced secret seeded in OpenBao, the
real CLI run in a subprocess, and views of what the live path holds and
what the fake provider (FakeGitHub / FakeStripe, shared per session) still
accepts.

Every world records each secret it sees (live data, state record, fakes'
answers) and, at teardown, scans every captured CLI output for them and for
anything shaped like a GitHub token, Stripe key, signing secret or private
key, so even a secret the test never saw (a crash's orphan) cannot leak.

Tests expose the fixtures by importing them:
`from provider_worlds import fake_github, fake_stripe, github_clock, make_world  # noqa: F401`
(`fake_github` needs `github_clock` in scope too).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from helpers import SecretLedger, parse_events, run_rotator, write_credential

from rotator_providers.github_http import token_key_id
from rotator.config.policy import ApiHostRule, TrustRules
from rotator.sandbox.github import FakeGitHub
from rotator.sandbox.stripe import FakeStripe

TOKEN = "github.app_installation_token"
DEPLOY_KEY = "github.deploy_key"
STRIPE_KEY = "stripe.managed_api_key"
WEBHOOK = "stripe.webhook_secret"
KINDS = (TOKEN, DEPLOY_KEY, STRIPE_KEY, WEBHOOK)

SECRET_FIELDS = frozenset({"token", "private_key", "api_key", "signing_secret", "secret"})
# Shapes of secrets the fakes mint: caught in output even when no test saw the value.
SECRET_SHAPES = (
    re.compile(r"ghs_[A-Za-z0-9]{20,}"),
    re.compile(r"\b(?:sk|rk)_test_[A-Za-z0-9]{20,}"),
    re.compile(r"whsec_[A-Za-z0-9]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
STRIPE_PREVIEW = "2026-08-26.preview"
# What a rotator process needs to reach the sandboxes (plain http on loopback).
SANDBOX_ENV = {"ROTATOR_ALLOW_LOOPBACK_HTTP": "true"}
SANDBOX_RULES = TrustRules(ApiHostRule(allow_loopback_http=True))


class ShiftableClock:
    """Wall-clock time plus an offset a test may move forward for a moment
    (to ask the fake which tokens would still be alive an hour from now)."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def sleep(self, seconds: float, *, until: threading.Event | None = None) -> bool:
        if until is None:
            time.sleep(max(0.0, seconds))
            return False
        return until.wait(max(0.0, seconds))

    @contextmanager
    def shifted(self, delta: timedelta) -> Iterator[None]:
        with self._lock:
            self._offset += delta
        try:
            yield
        finally:
            with self._lock:
                self._offset -= delta


class ProviderLedger(SecretLedger):
    """A SecretLedger that also rejects anything shaped like a minted secret."""

    def assert_clean(self) -> None:
        super().assert_clean()
        for where, text in self.outputs:
            for shape in SECRET_SHAPES:
                found = shape.findall(text)
                assert not found, f"{len(found)} secret-shaped value(s) ({shape.pattern[:12]}...) appeared in {where}"


class Secret(str):
    """A secret value that never shows itself in a repr, so a failing
    assertion's report cannot print it (never compare one with `==` in an
    assert: pytest's diff shows the content)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret of {len(self)} chars>"


def collect_secrets(ledger: SecretLedger, value: Any) -> Any:
    """Add every string under a secret-named key, at any depth, to the
    ledger; return a copy with those strings wrapped as `Secret`."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in SECRET_FIELDS and isinstance(item, str):
                ledger.add(item)
                out[key] = Secret(item)
            else:
                out[key] = collect_secrets(ledger, item)
        return out
    if isinstance(value, list):
        return [collect_secrets(ledger, item) for item in value]
    return value


@dataclass(repr=False)
class ProviderWorld:
    """One credential of one provider kind, its Vault paths and its fake."""

    kind: str
    bao: hvac.Client
    env: dict[str, str]
    config_dir: Path
    name: str
    live_path: str
    ledger: SecretLedger
    runs: list[list[dict[str, Any]]] = field(default_factory=list)

    def __repr__(self) -> str:  # the fields hold secrets (a management key)
        return f"{type(self).__name__}({self.name})"

    # -- the CLI ---------------------------------------------------------------

    def write_file(self, *, every: str, grace: str, params: dict[str, Any]) -> None:
        # These worlds prove an old Stripe key still works in grace by using
        # it, which the fake records as a use after its successor went live:
        # usage-aware revocation would hold it. test_usage.py tests holding.
        extra = {"revocation": {"when_in_use": "revoke"}} if self.kind == STRIPE_KEY else {}
        write_credential(self.config_dir, self.name, provider=self.kind, params=params, every=every, grace=grace,
                         path=self.live_path, **extra)

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, list[dict[str, Any]]]:
        result = run_rotator(list(args), {**self.env, **(extra_env or {})}, timeout=timeout)
        self.ledger.capture(f"stdout of rotator {' '.join(args)}", result.stdout)
        self.ledger.capture(f"stderr of rotator {' '.join(args)}", result.stderr)
        events = parse_events(result.stdout) if result.returncode >= 0 else parse_partial(result.stdout)
        self.runs.append(events)
        return result.returncode, events

    def all_events(self) -> list[dict[str, Any]]:
        """This credential's events over every run (runs may serve several credentials)."""
        return [e for run in self.runs for e in run if e.get("credential") == self.name]

    # -- Vault -----------------------------------------------------------------

    def live(self) -> tuple[dict[str, str] | None, dict[str, Any]]:
        try:
            response = self.bao.secrets.kv.v2.read_secret_version(
                path=self.live_path, mount_point="secret", raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None, {}
        data = collect_secrets(self.ledger, response["data"]["data"])
        meta = self.bao.secrets.kv.v2.read_secret_metadata(path=self.live_path, mount_point="secret")["data"]
        return data, meta

    def state(self) -> dict[str, Any] | None:
        prefix = self.env["ROTATOR_STATE_PREFIX"]
        try:
            response = self.bao.secrets.kv.v2.read_secret_version(
                path=f"{prefix}/{self.name}", mount_point="secret", raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None
        return collect_secrets(self.ledger, response["data"]["data"])

    # -- the provider (per kind) -------------------------------------------------

    def key_id(self, data: dict[str, str]) -> str:
        """The credential's non-secret identifier, as events and metadata name it."""
        raise NotImplementedError

    def works(self, data: dict[str, str]) -> bool:
        """Whether the provider accepts this live data right now."""
        raise NotImplementedError

    def is_rejected(self, data: dict[str, str]) -> bool:
        """Whether the provider now rejects it (revoked, deleted)."""
        return not self.works(data)

    def rotator_keys(self) -> set[str]:
        """Ids of the rotator-made credentials the provider still accepts."""
        raise NotImplementedError

    def is_foreign_intact(self) -> bool:
        """Whether what the test itself made at the provider is still there."""
        return True


# -- GitHub ---------------------------------------------------------------------


def _github_get(fake: FakeGitHub, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{fake.url}{path}", headers={"Authorization": f"Bearer {token}", "User-Agent": "e2e-tests",
                                                   "Accept": "application/vnd.github+json"}, timeout=10)


@dataclass(repr=False)
class GitHubWorld(ProviderWorld):
    fake: FakeGitHub = None  # type: ignore[assignment]
    repo: str = ""


@dataclass(repr=False)
class TokenWorld(GitHubWorld):
    """`github.app_installation_token`, minted for the world's one repository."""

    def key_id(self, data: dict[str, str]) -> str:
        return token_key_id(data["token"])

    def status(self, data: dict[str, str]) -> int:
        return _github_get(self.fake, "/installation/repositories", data["token"]).status_code

    def works(self, data: dict[str, str]) -> bool:
        return self.status(data) == 200

    def is_rejected(self, data: dict[str, str]) -> bool:
        return self.status(data) == 401

    def active_token_hashes(self) -> set[str]:
        """Tokens alive at the fake for this world's repository (all rotator-made)."""
        return {h for h in self.fake.active_token_hashes() if self.fake.token_grant(h)[0] == [self.repo]}

    def rotator_keys(self) -> set[str]:
        return {"sha256:" + h[:16] for h in self.active_token_hashes()}


@dataclass(repr=False)
class DeployKeyWorld(GitHubWorld):
    """`github.deploy_key` on the world's repository, beside one hand-made key."""

    foreign_key_id: str = ""

    def key_id(self, data: dict[str, str]) -> str:
        return data["key_id"]

    def registered(self) -> dict[str, dict[str, Any]]:
        return {str(k["id"]): k for k in self.fake.deploy_keys(self.repo)}

    def works(self, data: dict[str, str]) -> bool:
        """The fake has the key registered, and it is the public half of the private key in Vault."""
        key = self.registered().get(data["key_id"])
        return key is not None and key_body(ssh_public_key(data["private_key"])) == key_body(key["key"])

    def is_rejected(self, data: dict[str, str]) -> bool:
        return data["key_id"] not in self.registered()

    def rotator_keys(self) -> set[str]:
        return set(self.registered()) - {self.foreign_key_id}

    def is_foreign_intact(self) -> bool:
        return self.foreign_key_id in self.registered()

    def management_tokens(self) -> int:
        """Installation tokens alive for the repository: the provider mints one for itself per process."""
        return len([h for h in self.fake.active_token_hashes() if self.fake.token_grant(h)[0] == [self.repo]])


def key_body(public_key: str) -> str:
    return " ".join(public_key.split()[:2])


def ssh_public_key(private_key: str) -> str:
    """`ssh-keygen -y` of an OpenSSH private key, via a 0600 temporary file."""
    fd, path = tempfile.mkstemp(prefix="deploy-key-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(private_key if private_key.endswith("\n") else private_key + "\n")
        assert os.stat(path).st_mode & 0o777 == 0o600
        done = subprocess.run(["ssh-keygen", "-y", "-f", path], capture_output=True, text=True, timeout=10, check=False)
        assert done.returncode == 0, f"ssh-keygen cannot read the private key: {done.stderr.strip()[:200]}"
        return done.stdout.strip()
    finally:
        os.unlink(path)


def ssh_fingerprint(public_key: str) -> str:
    """`ssh-keygen -l` of a public key: SHA256:..."""
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as handle:
        handle.write(public_key + "\n")
        handle.flush()
        done = subprocess.run(["ssh-keygen", "-l", "-f", handle.name], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.split()[1]


# -- Stripe ---------------------------------------------------------------------


@dataclass(repr=False)
class StripeWorld(ProviderWorld):
    fake: FakeStripe = None  # type: ignore[assignment]
    account: str = ""
    management_key: str = ""
    foreign_id: str = ""


@dataclass(repr=False)
class StripeKeyWorld(StripeWorld):
    """`stripe.managed_api_key` for the world's own account, beside one hand-made key."""

    def key_id(self, data: dict[str, str]) -> str:
        return data["key_id"]

    def status(self, data: dict[str, str]) -> int:
        return stripe_customers_status(self.fake, data["api_key"])

    def works(self, data: dict[str, str]) -> bool:
        return self.status(data) in (200, 403)

    def is_rejected(self, data: dict[str, str]) -> bool:
        return self.status(data) == 401

    def rotator_keys(self) -> set[str]:
        return {k["id"] for k in self.fake.keys(self.account) if k["status"] == "active"} - {self.foreign_id}

    def is_foreign_intact(self) -> bool:
        return self.fake.key(self.foreign_id)["status"] == "active"


def stripe_customers_status(fake: FakeStripe, api_key: str) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    return httpx.get(f"{fake.url}/v1/customers", params={"limit": 1}, headers=headers, timeout=10).status_code


@dataclass(repr=False)
class WebhookWorld(StripeWorld):
    """`stripe.webhook_secret` for the world's own account, beside one hand-made
    endpoint at the same URL."""

    url: str = ""

    def key_id(self, data: dict[str, str]) -> str:
        return data["endpoint_id"]

    def endpoint_ids(self) -> set[str]:
        return {e["id"] for e in self.fake.endpoints(self.account)}

    def works(self, data: dict[str, str]) -> bool:
        """The endpoint exists and an event Stripe signs for it verifies with the official SDK."""
        import stripe

        deliveries = [d for d in self.fake.deliver(self.account, "invoice.paid") if d.endpoint_id == data["endpoint_id"]]
        if len(deliveries) != 1:
            return False
        (delivery,) = deliveries
        try:
            event = stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, data["signing_secret"])
        except stripe.SignatureVerificationError:
            return False
        return event["type"] == "invoice.paid"

    def is_rejected(self, data: dict[str, str]) -> bool:
        return data["endpoint_id"] not in self.endpoint_ids()

    def rotator_keys(self) -> set[str]:
        return self.endpoint_ids() - {self.foreign_id}

    def is_foreign_intact(self) -> bool:
        return self.foreign_id in self.endpoint_ids()


# -- building worlds ---------------------------------------------------------------


_github_ids = iter(range(910_000, 10**9, 7))


def seed_secret(bao: hvac.Client, path: str, field_name: str, value: str) -> str:
    bao.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={field_name: value})
    return f"secret/{path}#{field_name}"


def build_world(
    kind: str, *, bao: hvac.Client, env: dict[str, str], config_dir: Path, unique: str,
    github: FakeGitHub | None = None, stripe_fake: FakeStripe | None = None, grace: str = "1s",
    foreign: bool = True, params: dict[str, Any] | None = None, ledger: SecretLedger | None = None,
) -> ProviderWorld:
    """A fresh credential of `kind` (own App/repo or own Stripe account) with its file written.

    Worlds built with one `env` and `config_dir` share a daemon (and should share `ledger`)."""
    ledger = ledger if ledger is not None else ProviderLedger()
    short = {TOKEN: "ght", DEPLOY_KEY: "ghd", STRIPE_KEY: "srk", WEBHOOK: "swh"}[kind]
    name = f"{short}-{unique}"
    common = {"kind": kind, "bao": bao, "env": env, "config_dir": config_dir, "name": name,
              "live_path": f"apps/{name}", "ledger": ledger}
    if kind in (TOKEN, DEPLOY_KEY):
        assert github is not None
        repo_name = f"repo-{unique}"
        repo = f"acme/{repo_name}"
        app_id, installation_id = next(_github_ids), next(_github_ids)
        pem = github.create_app(app_id, installation_id, repositories=[repo])
        ledger.add(pem)
        ref = seed_secret(bao, f"rotator/refs/{name}", "private_key", pem)
        auth = {"app_id": app_id, "installation_id": installation_id, "private_key": ref, "api_url": github.url}
        if kind == TOKEN:
            world: ProviderWorld = TokenWorld(**common, fake=github, repo=repo)
            world.write_file(every="30m", grace=grace, params={**auth, "repositories": [repo_name],
                                                               "permissions": {"contents": "read"}, **(params or {})})
        else:
            world = DeployKeyWorld(**common, fake=github, repo=repo)
            if foreign:
                from rotator_providers.github_app import new_ed25519_pair

                _, public = new_ed25519_pair()
                world.foreign_key_id = str(github.add_deploy_key(repo, public, title="added by hand"))
            world.write_file(every="30d", grace=grace, params={**auth, "repository": repo, **(params or {})})
        return world
    assert stripe_fake is not None
    account = f"acct_{unique}"
    if kind == STRIPE_KEY:
        management_key = stripe_fake.add_account(account)
        ledger.add(management_key)
        ref = seed_secret(bao, f"rotator/refs/{name}", "management_key", management_key)
        world = StripeKeyWorld(**common, fake=stripe_fake, account=account, management_key=management_key)
        if foreign:
            world.foreign_id = _stripe_foreign_key(stripe_fake, account, management_key, ledger)
        world.write_file(every="30d", grace=grace, params={"account": account, "management_key": ref,
                                                           "permissions": ["customer_read"], "api_base": stripe_fake.url,
                                                           **(params or {})})
        return world
    management_key = stripe_fake.add_secret_key(account)
    ledger.add(management_key)
    ref = seed_secret(bao, f"rotator/refs/{name}", "management_key", management_key)
    url = f"https://hooks.example.test/stripe/{unique}"
    world = WebhookWorld(**common, fake=stripe_fake, account=account, management_key=management_key, url=url)
    if foreign:
        world.foreign_id = _stripe_foreign_endpoint(stripe_fake, url, management_key, ledger)
    world.write_file(every="30d", grace=grace, params={"url": url, "enabled_events": ["invoice.paid", "customer.created"],
                                                       "management_key": ref, "api_base": stripe_fake.url, **(params or {})})
    return world


def _stripe_foreign_key(fake: FakeStripe, account: str, app_key: str, ledger: SecretLedger) -> str:
    """A restricted key someone made by hand (no rotator mark)."""
    response = httpx.post(
        f"{fake.url}/v2/iam/api_keys", timeout=10,
        headers={"Authorization": f"Bearer {app_key}", "Stripe-Version": STRIPE_PREVIEW, "Stripe-Context": account},
        json={"type": "secret_key", "name": "made by hand", "permissions": ["customer_read"]},
    )
    assert response.status_code == 200, response.status_code
    body = response.json()
    collect_secrets(ledger, body)
    return str(body["id"])


def _stripe_foreign_endpoint(fake: FakeStripe, url: str, secret_key: str, ledger: SecretLedger) -> str:
    """An endpoint someone made by hand at the same URL (no rotator mark)."""
    response = httpx.post(
        f"{fake.url}/v1/webhook_endpoints", timeout=10, headers={"Authorization": f"Bearer {secret_key}"},
        data={"url": url, "enabled_events[]": ["invoice.paid"], "description": "made by hand"},
    )
    assert response.status_code == 200, response.status_code
    body = response.json()
    collect_secrets(ledger, body)
    return str(body["id"])


def parse_partial(stdout: str) -> list[dict[str, Any]]:
    """A killed process may leave a torn last line; every whole line is an event."""
    lines = stdout.splitlines()
    if lines and not stdout.endswith("\n"):
        lines = lines[:-1]
    return parse_events("\n".join(lines))


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def github_clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture(scope="session")
def fake_github(github_clock: ShiftableClock) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(clock=github_clock).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


def rotator_env_for(vault_env: dict[str, str], config_dir: Path) -> dict[str, str]:
    """What `rotator_env` gives, without AWS: these providers never call it.
    The sandboxes serve plain http on loopback, which only this flag allows."""
    return {**vault_env, "ROTATOR_CONFIG_DIR": str(config_dir), **SANDBOX_ENV}


@pytest.fixture
def make_world(
    request: pytest.FixtureRequest, bao_client: hvac.Client, vault_env: dict[str, str], config_dir: Path, unique: str,
) -> Iterator[Callable[..., ProviderWorld]]:
    """`make_world(kind, grace=..., foreign=..., params=...)`: one world per test;
    all its captured output is scanned for secrets at teardown."""
    rotator_env = rotator_env_for(vault_env, config_dir)
    made: list[ProviderWorld] = []

    def make(kind: str, **options: Any) -> ProviderWorld:
        assert not made, "one world per test (they share the config directory)"
        github = request.getfixturevalue("fake_github") if kind in (TOKEN, DEPLOY_KEY) else None
        stripe_fake = request.getfixturevalue("fake_stripe") if kind in (STRIPE_KEY, WEBHOOK) else None
        world = build_world(kind, bao=bao_client, env=rotator_env, config_dir=config_dir, unique=unique,
                            github=github, stripe_fake=stripe_fake, **options)
        made.append(world)
        return world

    yield make
    for world in made:
        world.ledger.assert_clean()


GRACE = 1.2  # seconds to sleep past the worlds' 1s grace


def rotate_ok(w, *args: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """`rotator rotate NAME ARGS` on a world, which must succeed."""
    from helpers import names

    code, events = w.cli("rotate", w.name, *args)
    assert code == 0, names(events)
    assert "rotation.completed" in names(events) and "rotation.failed" not in names(events)
    return events
