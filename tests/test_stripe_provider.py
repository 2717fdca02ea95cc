"""The Stripe providers against the stateful fake Stripe API over real HTTP:
the shared conformance suite, sealed-key (JWE) handling, idempotent creates,
revocation semantics, listing, webhook signing, params validation and leaks."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from joserfc.jwk import RSAKey
from pydantic import ValidationError

from rotator_providers.stripe_api import (
    StripeManagedApiKeyParams,
    StripeManagedApiKeyProvider,
    StripeWebhookSecretParams,
    StripeWebhookSecretProvider,
)
from rotator_providers.stripe_http import parse_mark, resolve_page_url
from rotator.core.clock import FakeClock
from rotator.core.errors import NotFoundError, PermanentError, RotatorError, TransientError
from rotator.core.provider import IssueContext, KeyMark, ProviderContext
from rotator.sandbox.stripe import FakeStripe
from rotator.sandbox.stripe_state import JweSettings
from rotator.testing.conformance import ProviderConformance
from rotator.testing.leaks import assert_no_leaks

ACCOUNT = "acct_1RotatorTest"
APP_REF = "secret/stripe/app#secret_key"
ADMIN_REF = "secret/stripe/admin#secret_key"
HOOK_URL = "https://hooks.example.com/stripe"
EVENTS = ["invoice.paid", "customer.created"]


def digest(value: str) -> str:
    """Secrets are compared by digest, so a failing assertion never shows one."""
    return hashlib.sha256(value.encode()).hexdigest()


class Env:
    """A running fake with one account, and the secrets a provider may read."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.secrets = {APP_REF: fake.add_account(ACCOUNT), ADMIN_REF: fake.add_secret_key(ACCOUNT)}
        self.clock = FakeClock()
        self.context = ProviderContext(read_secret=self.secrets.__getitem__, clock=self.clock)
        self.seen: list[str] = list(self.secrets.values())  # every secret, for leak checks

    def managed(self, **overrides: Any) -> StripeManagedApiKeyProvider:
        params = {
            "account": ACCOUNT, "management_key": APP_REF, "permissions": ["customer_read"], "api_base": self.fake.url,
        }
        return StripeManagedApiKeyProvider(StripeManagedApiKeyParams(**{**params, **overrides}), self.context)

    def webhook(self, **overrides: Any) -> StripeWebhookSecretProvider:
        params = {"url": HOOK_URL, "enabled_events": EVENTS, "management_key": ADMIN_REF, "api_base": self.fake.url}
        return StripeWebhookSecretProvider(StripeWebhookSecretParams(**{**params, **overrides}), self.context)

    def customers(self, api_key: str) -> int:
        """The status /v1/customers answers this key with."""
        headers = {"Authorization": f"Bearer {api_key}"}
        return httpx.get(f"{self.fake.url}/v1/customers", params={"limit": 1}, headers=headers).status_code


@pytest.fixture
def env() -> Iterator[Env]:
    fake = FakeStripe().start()
    try:
        yield Env(fake)
    finally:
        fake.stop()


def ctx(rotation_id: str = "r0123456789abcdef", credential: str = "payments") -> IssueContext:
    return IssueContext(credential=credential, rotation_id=rotation_id)


@contextlib.contextmanager
def faults(fake: FakeStripe, kind: str) -> Iterator[None]:
    fake.inject(None, 503 if kind == "transient" else 403, count=10_000)
    try:
        yield
    finally:
        fake.clear_faults()


# -- the shared conformance suite -------------------------------------------------


class TestManagedApiKeyConformance(ProviderConformance):
    @pytest.fixture
    def provider(self, env: Env) -> Iterator[StripeManagedApiKeyProvider]:
        self.fake = env.fake
        provider = env.managed()
        yield provider
        provider.close()

    def fault(self, kind: str) -> contextlib.AbstractContextManager[None]:
        return faults(self.fake, kind)


class TestWebhookSecretConformance(ProviderConformance):
    @pytest.fixture
    def provider(self, env: Env) -> Iterator[StripeWebhookSecretProvider]:
        self.fake = env.fake
        provider = env.webhook()
        yield provider
        provider.close()

    def fault(self, kind: str) -> contextlib.AbstractContextManager[None]:
        return faults(self.fake, kind)


# -- managed API keys ------------------------------------------------------------------


def test_new_key_works_at_customers_and_gets_401_after_revoke(env: Env) -> None:
    """The minted rk_ key authenticates at /v1/customers until revoked, then gets 401."""
    provider = env.managed()
    credential = provider.issue(ctx())
    api_key = credential.data["api_key"]
    assert api_key[:8] == "rk_test_"  # a slice, so a failure never prints the key
    assert env.customers(api_key) == 200
    provider.revoke(credential.handle)
    assert env.customers(api_key) == 401
    assert provider.is_revoked(credential.handle)


def test_key_without_customer_permission_verifies_through_403(env: Env) -> None:
    """A restricted key that may not read customers still verifies: 403 proves it authenticated."""
    provider = env.managed(permissions=["product_read"])
    credential = provider.issue(ctx())
    assert env.customers(credential.data["api_key"]) == 403
    provider.verify(credential)


def test_create_carries_preview_version_context_mark_and_idempotency_key(env: Env) -> None:
    """The create names the account, the preview version, our mark, and a per-rotation idempotency key."""
    credential = env.managed().issue(ctx("rABC"))
    create = next(r for r in env.fake.requests if r.method == "POST" and r.path == "/v2/iam/api_keys")
    assert (create.stripe_version, create.stripe_context) == ("2026-08-26.preview", ACCOUNT)
    assert create.idempotency_key is not None and create.idempotency_key.startswith("rotator-rABC-")
    assert env.fake.key(credential.key_id)["name"] == "rotator:payments:rABC"


@pytest.mark.parametrize(
    "settings",
    [
        JweSettings(alg="RSA1_5"),
        JweSettings(enc="A128CBC-HS256"),
        JweSettings(recipient_pem=RSAKey.generate_key(2048, private=True).as_pem(private=False).decode()),
        JweSettings(tamper=True),
    ],
    ids=["alg-RSA1_5", "enc-A128CBC-HS256", "sealed-to-another-key", "tampered"],
)
def test_unopenable_sealed_key_is_expired_before_the_error(env: Env, settings: JweSettings) -> None:
    """A key whose JWE is the wrong algorithm, for another key or tampered is expired, then PermanentError."""
    env.fake.jwe = settings
    with pytest.raises(PermanentError, match="was expired"):
        env.managed().issue(ctx())
    (key,) = env.fake.keys(ACCOUNT)
    assert key["status"] == "expired"


def test_sealed_key_for_another_recipient_id_is_refused_and_expired(env: Env) -> None:
    """A ciphertext whose recipient_key_id names another public key is refused, and the key expired."""
    env.fake.jwe = JweSettings(recipient_key_id="someone-else")
    with pytest.raises(PermanentError, match="another public key"):
        env.managed().issue(ctx())
    assert all(k["status"] == "expired" for k in env.fake.keys(ACCOUNT))


def test_test_mode_plaintext_token_is_accepted_without_ciphertext(env: Env) -> None:
    """Without a ciphertext, the test-mode plaintext token is used."""
    env.fake.encrypt_secrets = False
    provider = env.managed()
    credential = provider.issue(ctx())
    provider.verify(credential)


def test_ciphertext_is_preferred_over_a_plaintext_token(env: Env) -> None:
    """When both come back, the ciphertext decides: a bad one fails even beside a token."""
    env.fake.plaintext_token_on_create = True
    env.fake.jwe = JweSettings(tamper=True)
    with pytest.raises(PermanentError):
        env.managed().issue(ctx())


def test_lost_create_is_expired_and_minted_again(env: Env) -> None:
    """v2 does not replay: a retry after a lost create expires the lost key (found by name) and mints one more."""
    provider = env.managed()
    env.fake.inject(r"^/v2/iam/api_keys$", method="POST", after=True, drop=True)
    with pytest.raises(TransientError):
        provider.issue(ctx("rLOST"))
    credential = provider.issue(ctx("rLOST"))
    active = [k["id"] for k in env.fake.keys(ACCOUNT) if k["status"] == "active"]
    assert active == [credential.key_id], "one live key: the lost one was expired"
    provider.verify(credential)


def test_lost_create_after_restart_leaves_no_second_live_key(env: Env) -> None:
    """A fresh process (no memory of the attempt) finds the lost key by its mark, expires it, mints anew."""
    env.fake.inject(r"^/v2/iam/api_keys$", method="POST", after=True, drop=True)
    with pytest.raises(TransientError):
        env.managed().issue(ctx("rCRASH"))
    credential = env.managed().issue(ctx("rCRASH"))
    marked = [k for k in env.managed().list_keys() if k.mark == KeyMark("payments", "rCRASH")]
    assert [k.key_id for k in marked] == [credential.key_id]


def test_answered_failure_gets_a_fresh_idempotency_key(env: Env) -> None:
    """After Stripe answered with an error, the next attempt does not replay that answer."""
    provider = env.managed()
    env.fake.inject(r"^/v2/iam/api_keys$", 500, method="POST", after=True)
    with pytest.raises(TransientError):
        provider.issue(ctx("rFAIL"))
    provider.issue(ctx("rFAIL"))
    creates = [r.idempotency_key for r in env.fake.requests if r.path == "/v2/iam/api_keys" and r.method == "POST"]
    assert len(creates) == 2 and creates[0] != creates[1]


def test_fake_rejects_idempotency_key_reuse_with_another_body(env: Env) -> None:
    """The fake, like Stripe, replays same key + same body and refuses same key + other body."""
    headers = {"Authorization": f"Bearer {env.secrets[ADMIN_REF]}", "Idempotency-Key": "k1"}
    url = f"{env.fake.url}/v1/webhook_endpoints"
    first = httpx.post(url, headers=headers, data={"url": HOOK_URL, "enabled_events[]": ["*"]})
    again = httpx.post(url, headers=headers, data={"url": HOOK_URL, "enabled_events[]": ["*"]})
    other = httpx.post(url, headers=headers, data={"url": HOOK_URL + "x", "enabled_events[]": ["*"]})
    assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    assert len(env.fake.endpoints(ACCOUNT)) == 1


def test_fake_rejects_old_preview_version_with_stripe_shaped_error(env: Env) -> None:
    """A version before 2026-08-26.preview gets a Stripe-shaped 400 with a Request-Id."""
    headers = {
        "Authorization": f"Bearer {env.secrets[APP_REF]}",
        "Stripe-Version": "2026-03-25.preview",
        "Stripe-Context": ACCOUNT,
    }
    response = httpx.get(f"{env.fake.url}/v2/iam/api_keys", headers=headers)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"type", "code", "message"}
    assert response.headers["Request-Id"].startswith("req_")


def test_rate_limit_becomes_transient_with_retry_after(env: Env) -> None:
    """A 429 with Retry-After surfaces as TransientError carrying retry_after."""
    env.fake.inject(r"^/v2/iam/api_keys$", 429, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as caught:
        env.managed().issue(ctx())
    assert caught.value.retry_after == 7.0


def test_wrong_management_key_is_permanent_and_unquoted(env: Env) -> None:
    """A management key Stripe rejects is a PermanentError whose text holds no key."""
    env.secrets[APP_REF] = "sk_test_" + "x" * 32
    with pytest.raises(PermanentError) as caught:
        env.managed().issue(ctx())
    assert_no_leaks(str(caught.value), [env.secrets[APP_REF]], where="the error")


def test_revoke_of_unknown_key_is_done(env: Env) -> None:
    """Expire answering 404 means already gone."""
    env.managed().revoke({"key_id": "mk_doesnotexist"})


def test_failed_expire_of_an_expired_key_counts_as_done(env: Env) -> None:
    """If expire fails but a GET shows the key expired, revoke succeeds."""
    provider = env.managed()
    credential = provider.issue(ctx())
    provider.revoke(credential.handle)
    env.fake.inject(r"/expire$", 500)
    provider.revoke(credential.handle)


def test_failed_expire_of_an_active_key_raises(env: Env) -> None:
    """If expire fails and the key is still active, the expire's error stands."""
    provider = env.managed()
    credential = provider.issue(ctx())
    env.fake.inject(r"/expire$", 503)
    with pytest.raises(TransientError):
        provider.revoke(credential.handle)
    assert env.fake.key(credential.key_id)["status"] == "active"


def test_failing_reads_never_block_an_expire(env: Env) -> None:
    """Revoke expires first: a failing GET of the key does not stop it."""
    provider = env.managed()
    credential = provider.issue(ctx())
    env.fake.inject(r"^/v2/iam/api_keys/mk_\w+$", 500, count=100, method="GET")
    provider.revoke(credential.handle)
    assert env.fake.key(credential.key_id)["status"] == "expired"


def test_is_revoked_waits_until_stripe_rejects_the_key() -> None:
    """With an expiry delay, is_revoked stays False until the key actually stops working."""
    clock = FakeClock()
    with FakeStripe(expiry_delay=10, now=lambda: clock.now().timestamp()) as fake:
        env = Env(fake)
        provider = env.managed()
        credential = provider.issue(ctx())
        provider.revoke(credential.handle)
        assert not provider.is_revoked(credential.handle)
        clock.advance(11)
        assert provider.is_revoked(credential.handle)
        with pytest.raises(RotatorError):
            provider.verify(credential)


def test_listing_reports_last_use_marks_and_no_secrets(env: Env) -> None:
    """Listing pages through every key, shows last use and marks, and carries no token."""
    provider = env.managed()
    provider.page_size = 2
    issued = [provider.issue(ctx(f"r{i}")) for i in range(4)]
    provider.verify(issued[0])
    keys = {k.key_id: k for k in provider.list_keys()}
    assert set(keys) == {c.key_id for c in issued}
    assert keys[issued[0].key_id].last_used_at is not None
    assert keys[issued[1].key_id].mark == KeyMark("payments", "r1")
    assert_no_leaks(repr(list(keys.values())), [c.data["api_key"] for c in issued], where="list_keys")


def test_foreign_key_names_have_no_mark() -> None:
    """Names that are not `prefix:credential:rotation` parse to no mark."""
    assert parse_mark("rotator:payments:r1", "rotator") == KeyMark("payments", "r1")
    for name in ("Default secret key", "rotator:Bad Name:r1", "other:payments:r1", None, "rotator:payments"):
        assert parse_mark(name, "rotator") is None


def test_pagination_links_to_other_hosts_are_refused() -> None:
    """A next_page_url on another host is never followed (the key would go with it)."""
    followed = resolve_page_url("https://api.stripe.com", "/v2/iam/api_keys?page=p2")
    assert followed == "https://api.stripe.com/v2/iam/api_keys?page=p2"
    with pytest.raises(PermanentError):
        resolve_page_url("https://api.stripe.com", "https://evil.example/v2/iam/api_keys")


# -- webhook endpoint secrets ------------------------------------------------------------


def test_new_signing_secret_verifies_a_signed_event_with_the_sdk(env: Env) -> None:
    """stripe.Webhook.construct_event accepts an event signed with the new secret."""
    credential = env.webhook().issue(ctx())
    secret = credential.data["signing_secret"]
    (delivery,) = env.fake.deliver(ACCOUNT, "invoice.paid")
    event = stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, secret, tolerance=None)
    assert event["type"] == "invoice.paid"
    payload = '{"id": "evt_local", "object": "event", "type": "customer.created", "data": {"object": {}}}'
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    assert stripe.Webhook.construct_event(payload, header, secret)["id"] == "evt_local"


def test_during_grace_each_event_reaches_both_endpoints_with_one_id(env: Env) -> None:
    """While old and new endpoints exist, one event arrives twice, each signed with its own secret."""
    provider = env.webhook()
    old, new = provider.issue(ctx("rOLD")), provider.issue(ctx("rNEW"))
    assert digest(old.data["signing_secret"]) != digest(new.data["signing_secret"])
    secret_of = {c.key_id: c.data["signing_secret"] for c in (old, new)}
    deliveries = env.fake.deliver(ACCOUNT, "customer.created")
    assert sorted(d.endpoint_id for d in deliveries) == sorted(secret_of)
    event_ids = set()
    for delivery in deliveries:
        event = stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, secret_of[delivery.endpoint_id])
        event_ids.add(event["id"])
        other = next(s for i, s in secret_of.items() if i != delivery.endpoint_id)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, other)
    assert len(event_ids) == 1  # consumers deduplicate on the event id


def test_webhook_create_is_form_encoded_and_marked(env: Env) -> None:
    """The endpoint is created with our url, events and mark; its secret is not readable later."""
    credential = env.webhook(event_api_version="2025-09-30.clover").issue(ctx("rW"))
    (endpoint,) = env.fake.endpoints(ACCOUNT)
    assert endpoint["id"] == credential.key_id == credential.data["endpoint_id"]
    assert (endpoint["url"], endpoint["enabled_events"], endpoint["api_version"]) == (HOOK_URL, EVENTS, "2025-09-30.clover")
    assert endpoint["metadata"]["rotator-mark"] == endpoint["description"] == "rotator:payments:rW"
    assert "secret" not in endpoint


def test_webhook_verify_refuses_an_endpoint_not_as_configured(env: Env) -> None:
    """Verification reads the endpoint back and refuses a different url or event set."""
    credential = env.webhook().issue(ctx())
    with pytest.raises(PermanentError, match="url differs"):
        env.webhook(url="https://other.example.com/hook").verify(credential)


def test_webhook_listing_scope_is_our_url_or_our_mark(env: Env) -> None:
    """Endpoints for other URLs without our mark are out of scope; ours are listed."""
    admin, url = {"Authorization": f"Bearer {env.secrets[ADMIN_REF]}"}, f"{env.fake.url}/v1/webhook_endpoints"
    httpx.post(url, headers=admin, data={"url": "https://else.example.com/", "enabled_events[]": ["*"]})
    hand_made = httpx.post(url, headers=admin, data={"url": HOOK_URL, "enabled_events[0]": "*"}).json()
    provider = env.webhook()
    provider.page_size = 1
    credential = provider.issue(ctx("rL"))
    keys = {k.key_id: k.mark for k in provider.list_keys()}
    assert keys == {hand_made["id"]: None, credential.key_id: KeyMark("payments", "rL")}


def test_webhook_lost_create_response_is_replayed(env: Env) -> None:
    """A retried endpoint create after a lost response returns the same endpoint and secret."""
    provider = env.webhook()
    env.fake.inject(r"^/v1/webhook_endpoints$", method="POST", after=True, drop=True)
    with pytest.raises(TransientError):
        provider.issue(ctx("rW"))
    credential = provider.issue(ctx("rW"))
    assert [e["id"] for e in env.fake.endpoints(ACCOUNT)] == [credential.key_id]


def test_webhook_delete_failure_checks_whether_it_is_gone(env: Env) -> None:
    """A failed DELETE of an endpoint that no longer exists counts as revoked; of one that exists, it raises."""
    provider = env.webhook()
    credential = provider.issue(ctx())
    env.fake.inject(r"^/v1/webhook_endpoints/", 500, method="DELETE")
    with pytest.raises(TransientError):
        provider.revoke(credential.handle)
    provider.revoke(credential.handle)
    env.fake.inject(r"^/v1/webhook_endpoints/", 500, method="DELETE")
    provider.revoke(credential.handle)
    with pytest.raises(NotFoundError):
        provider.verify(credential)


# -- params -------------------------------------------------------------------------------

MANAGED_OK = {"account": ACCOUNT, "management_key": APP_REF, "permissions": ["customer_read"]}
WEBHOOK_OK = {"url": HOOK_URL, "enabled_events": EVENTS, "management_key": ADMIN_REF}


def test_managed_params_defaults() -> None:
    """Defaults: Stripe's API base, the first preview version, the `rotator` prefix."""
    params = StripeManagedApiKeyParams(**MANAGED_OK)
    assert (params.api_base, params.api_version, params.name_prefix) == (
        "https://api.stripe.com", "2026-08-26.preview", "rotator"
    )
    later = StripeManagedApiKeyParams(**MANAGED_OK, api_version="2027-01-15.preview", api_base="http://127.0.0.1:9")
    assert later.api_version == "2027-01-15.preview"


@pytest.mark.parametrize(
    "change",
    [
        {"account": "acct-123"}, {"account": "1234"}, {"permissions": []}, {"permissions": ["Customers Read"]},
        {"api_version": "2026-08-25.preview"}, {"api_version": "2026-08-26"}, {"api_version": "2026-02-30.preview"},
        {"api_base": "http://api.stripe.com"}, {"management_key": "sk_test_notaref"}, {"name_prefix": "a:b"},
        {"unknown": 1},
    ],
)
def test_managed_params_reject(change: dict[str, Any]) -> None:
    """Bad account shapes, permissions, versions, hosts, refs, prefixes and unknown keys are errors."""
    with pytest.raises(ValidationError):
        StripeManagedApiKeyParams(**{**MANAGED_OK, **change})


@pytest.mark.parametrize(
    "change",
    [
        {"url": "http://hooks.example.com/stripe"}, {"url": "hooks.example.com"}, {"enabled_events": []},
        {"enabled_events": ["Invoice Paid"]}, {"api_base": "http://10.0.0.1"}, {"event_api_version": "latest"},
        {"secret": "whsec_abc"},
    ],
)
def test_webhook_params_reject(change: dict[str, Any]) -> None:
    """Non-https URLs, empty or malformed events, remote http bases and unknown keys are errors."""
    with pytest.raises(ValidationError):
        StripeWebhookSecretParams(**{**WEBHOOK_OK, **change})


# -- leaks ----------------------------------------------------------------------------------


def test_no_secret_in_output_logs_or_errors(
    env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A full cycle plus failures puts no key or signing secret in output, logs or error text."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    managed, webhook = env.managed(), env.webhook()
    for provider in (managed, webhook):
        credential = provider.issue(ctx())
        env.seen += list(credential.data.values())
        provider.verify(credential)
        texts += [repr(credential), repr(provider.list_keys())]
        provider.revoke(credential.handle)
        with pytest.raises(RotatorError) as caught:
            provider.verify(credential)
        texts.append(str(caught.value))
    env.fake.jwe = JweSettings(tamper=True)
    with pytest.raises(PermanentError) as caught:
        managed.issue(ctx("rBAD"))
    texts.append(str(caught.value))
    secrets = [s for s in env.seen if not s.startswith(("mk_", "we_"))]
    out, err = capsys.readouterr()
    assert_no_leaks("\n".join([out, err, caplog.text, *texts]), secrets, where="output, logs or errors")
