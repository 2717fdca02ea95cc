"""Stripe as Stripe documents it, not as the sandbox's author remembered it:
the permission catalogue, key-name limits, v2 idempotency, confirmation by
use. Each test names the public source it holds the code to
(docs/providers/stripe.md, "What was checked")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import write_credential
from rotator_providers.stripe_permissions import PERMISSIONS, suggestion
from rotator.config.loader import load_directory
from rotator.engine.registry import load_providers

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "credentials.d" / "payments-api-key.yaml"


def _key_file(tmp_path: Path, permissions: list[str]) -> list[str]:
    params = {"account": "acct_1Nv0FGQ9RKHgCVdK", "management_key": "secret/rotator/refs/stripe#app_key",
              "permissions": permissions}
    write_credential(tmp_path, "pay", provider="stripe.managed_api_key", params=params)
    return [str(p) for p in load_directory(tmp_path, load_providers()).problems]


def test_shipped_example_names_only_catalogue_permissions() -> None:
    """The shipped Stripe example validates, and every permission it names is in the catalogue."""
    permissions = yaml.safe_load(EXAMPLE.read_text())["params"]["permissions"]
    assert permissions and set(permissions) <= PERMISSIONS
    assert load_directory(EXAMPLE.parent, load_providers()).problems == []


@pytest.mark.parametrize(("plural", "singular"), [
    ("customers_read", "customer_read"), ("payment_intents_write", "payment_intent_write"),
    ("charges_read", "charge_read"), ("webhook_endpoints_write", "webhook_write"),
])
def test_plural_permission_fails_with_a_hint(tmp_path: Path, plural: str, singular: str) -> None:
    """Stripe refuses plural names; validation does too, naming the field and the singular name."""
    problems = _key_file(tmp_path, [plural])
    assert len(problems) == 1
    assert "params.permissions" in problems[0] and f"did you mean {singular}?" in problems[0]


def test_unknown_permission_without_a_near_name_still_fails(tmp_path: Path) -> None:
    """A name far from any in the catalogue is refused without a misleading hint."""
    problems = _key_file(tmp_path, ["launch_rockets_write"])
    assert len(problems) == 1 and "not in Stripe's permission catalogue" in problems[0]
    assert "did you mean" not in problems[0]


def test_catalogue_names_are_singular_and_suggestions_are_in_it() -> None:
    """The catalogue holds the names Stripe documents (singular) and hints only point into it."""
    assert {"customer_read", "payment_intent_write", "charge_read", "webhook_write", "api_key_write"} <= PERMISSIONS
    assert not {"customers_read", "payment_intents_write", "webhook_endpoints_write"} & PERMISSIONS
    for name in ("customers_write", "invoices_read", "subscriptions_write", "checkout_sessions_read"):
        assert suggestion(name) in PERMISSIONS


# -- confirmation by use, readiness ---------------------------------------------------

import httpx  # noqa: E402

from rotator_providers.stripe_api import StripeManagedApiKeyParams, StripeManagedApiKeyProvider  # noqa: E402
from rotator.core.clock import FakeClock  # noqa: E402
from rotator.core.errors import TransientError  # noqa: E402
from rotator.core.provider import IssueContext, ProviderContext  # noqa: E402
from rotator.sandbox.stripe import FakeStripe  # noqa: E402

ACCOUNT = "acct_1RotatorFidelity"
APP_REF = "secret/stripe/app#secret_key"


class World:
    """A fake Stripe on an injected clock, and a managed-key provider against it."""

    def __init__(self, **fake_options: float) -> None:
        self.clock = FakeClock()
        self.fake = FakeStripe(now=lambda: self.clock.now().timestamp(), **fake_options).start()
        self.app_key = self.fake.add_account(ACCOUNT)
        context = ProviderContext(read_secret={APP_REF: self.app_key}.__getitem__, clock=self.clock)
        params = StripeManagedApiKeyParams(account=ACCOUNT, management_key=APP_REF, permissions=["customer_read"],
                                           api_base=self.fake.url)
        self.provider = StripeManagedApiKeyProvider(params, context)

    def customers(self, api_key: str) -> httpx.Response:
        return httpx.get(f"{self.fake.url}/v1/customers", headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self.provider.close()
        self.fake.stop()


@pytest.fixture
def world() -> Iterator[World]:
    w = World(expiry_delay=90)
    yield w
    w.close()


def ctx(rotation_id: str = "20260101T000000Z-0000abcd", credential: str = "payments") -> IssueContext:
    return IssueContext(credential=credential, rotation_id=rotation_id)


def test_a_404_on_the_key_id_is_not_proof_the_key_stopped_working(world: World) -> None:
    """Stripe's rotate makes the old id 404 at once while its token still works: not revoked until 401."""
    credential = world.provider.issue(ctx())
    headers = {"Authorization": f"Bearer {world.app_key}", "Stripe-Version": "2026-08-26.preview",
               "Stripe-Context": ACCOUNT}
    rotated = httpx.post(f"{world.fake.url}/v2/iam/api_keys/{credential.key_id}/rotate", headers=headers,
                         json={"expire_current_key_in_minutes": 10})
    assert rotated.status_code == 200
    assert httpx.get(f"{world.fake.url}/v2/iam/api_keys/{credential.key_id}", headers=headers).status_code == 404
    assert world.customers(credential.data["api_key"]).status_code == 200
    assert not world.provider.is_revoked(credential.handle)
    world.clock.advance(11 * 60 + 90)
    answer = world.customers(credential.data["api_key"])
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "api_key_expired"
    assert world.provider.is_revoked(credential.handle)


def test_an_expired_key_counts_as_revoked_only_once_it_gets_401(world: World) -> None:
    """Expiry takes effect late (the sandbox: 90 s); is_revoked follows what the key itself gets."""
    credential = world.provider.issue(ctx())
    world.provider.revoke(credential.handle)
    assert world.fake.key(credential.key_id)["status"] == "expired"
    assert not world.provider.is_revoked(credential.handle), "status expired, but the key still authenticates"
    world.clock.advance(91)
    assert world.provider.is_revoked(credential.handle)


def test_confirmation_budget_covers_minutes_and_stays_inside_the_lease() -> None:
    """Stripe's expiry can take minutes: the provider asks the engine to poll that long, under the 5 min lease."""
    budget = StripeManagedApiKeyProvider.confirm_budget.total_seconds()
    assert 120 <= budget < 300


def test_a_fresh_key_that_gets_401_is_not_live_yet_not_dead() -> None:
    """A key Stripe does not accept yet is a transient verify failure; it verifies once live."""
    w = World(activation_delay=5)
    try:
        credential = w.provider.issue(ctx())
        with pytest.raises(TransientError):
            w.provider.verify(credential)
        w.clock.advance(6)
        w.provider.verify(credential)
    finally:
        w.close()


# -- v2 idempotency, name limits ----------------------------------------------------


def test_sandbox_v2_retry_returns_an_updated_response_without_the_secret(world: World) -> None:
    """Same Idempotency-Key on /v2: one key, and the retry's answer carries no secret (docs: v2 does not replay)."""
    from rotator_providers.stripe_jwe import EphemeralKeyPair

    pair = EphemeralKeyPair()
    headers = {"Authorization": f"Bearer {world.app_key}", "Stripe-Version": "2026-08-26.preview",
               "Stripe-Context": ACCOUNT, "Idempotency-Key": "same-key"}
    body = {"type": "secret_key", "name": "n", "permissions": ["customer_read"],
            "public_key": {"id": pair.key_id, "pem_key": {"algorithm": "RSA", "data": pair.public_pem}}}
    first = httpx.post(f"{world.fake.url}/v2/iam/api_keys", headers=headers, json=body).json()
    again = httpx.post(f"{world.fake.url}/v2/iam/api_keys", headers=headers, json=body).json()
    assert first["id"] == again["id"] and len(world.fake.keys(ACCOUNT)) == 1
    assert first["secret_key"].get("encrypted_secret") and not again["secret_key"].get("encrypted_secret")
    assert not again["secret_key"].get("token")


def test_lost_create_leaves_no_second_key(world: World) -> None:
    """A dropped create response, then the engine's retry: exactly one active key with this rotation's mark."""
    world.fake.inject(r"^/v2/iam/api_keys$", method="POST", after=True, drop=True)
    with pytest.raises(TransientError):
        world.provider.issue(ctx())
    credential = world.provider.issue(ctx())
    active = [k for k in world.fake.keys(ACCOUNT) if k["status"] == "active"]
    assert [k["id"] for k in active] == [credential.key_id]
    creates = [r.idempotency_key for r in world.fake.requests if r.method == "POST" and r.path == "/v2/iam/api_keys"]
    assert len(creates) == 2 and creates[0] != creates[1], "never depends on a replay: a fresh key each attempt"


def test_long_names_fit_stripe_and_stay_unique(world: World) -> None:
    """Prefix 32 + credential 63 + rotation id overflow 100 chars: names are shortened, still unique and parsed."""
    from rotator_providers.stripe_http import KEY_NAME_LIMIT

    long_prefix, long_name = "p" * 32, "c" * 63
    provider = StripeManagedApiKeyProvider(
        StripeManagedApiKeyParams(account=ACCOUNT, management_key=APP_REF, permissions=["customer_read"],
                                  api_base=world.fake.url, name_prefix=long_prefix), world.provider.context)
    first = provider.issue(ctx("20260101T000000Z-00000001", long_name))
    second = provider.issue(ctx("20260101T000000Z-00000002", long_name))
    names = {k["id"]: k["name"] for k in world.fake.keys(ACCOUNT)}
    assert all(len(n) <= KEY_NAME_LIMIT for n in names.values())
    assert names[first.key_id] != names[second.key_id]
    marks = {k.key_id: k.mark for k in provider.list_keys()}
    assert marks[first.key_id] is not None and marks[first.key_id].credential == long_name
    assert marks[second.key_id].rotation_id == "20260101T000000Z-00000002"  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["2027-03-31.dahlia", "2026-10-28.preview", "2026-08-26.preview"])
def test_a_future_ga_or_preview_stripe_version_is_accepted_by_shape(version: str) -> None:
    """A GA release of /v2/iam/api_keys under a named version needs no new rotator release."""
    params = StripeManagedApiKeyParams(account=ACCOUNT, management_key=APP_REF, permissions=["customer_read"],
                                       api_version=version)
    assert params.api_version == version


@pytest.mark.parametrize("version", ["2026-08-25.preview", "2026-09-30", "2027-02-30.dahlia", "2027-01-01.Dahlia", "latest"])
def test_a_stripe_version_of_another_shape_or_too_old_is_refused(version: str) -> None:
    """Only YYYY-MM-DD.name on or after the first preview that served the API."""
    with pytest.raises(ValueError, match="api_version"):
        StripeManagedApiKeyParams(account=ACCOUNT, management_key=APP_REF, permissions=["customer_read"],
                                  api_version=version)


def test_sandbox_serves_a_future_ga_version(world: World) -> None:
    """The sandbox, like Stripe after a GA, answers /v2 under a later named version."""
    headers = {"Authorization": f"Bearer {world.app_key}", "Stripe-Version": "2027-03-31.dahlia", "Stripe-Context": ACCOUNT}
    assert httpx.get(f"{world.fake.url}/v2/iam/api_keys", headers=headers).status_code == 200
