"""End to end through the real CLI, against OpenBao and the fake Stripe
served over HTTP: restricted keys work at /v1/customers until revoked, and
webhook signing secrets verify events with the official SDK until their
endpoint is replaced and deleted."""

from __future__ import annotations

import time

import pytest
import stripe
from helpers import names
from provider_worlds import (  # noqa: F401 - fixtures
    GRACE,
    STRIPE_KEY,
    WEBHOOK,
    StripeKeyWorld,
    WebhookWorld,
    fake_stripe,
    make_world,
    rotate_ok,
)


def test_restricted_key_works_and_the_old_one_gets_401(make_world) -> None:  # type: ignore[no-untyped-def]
    """The rk_ key in Vault is accepted at /v1/customers; the superseded one gets 401 after grace or --revoke-now."""
    w: StripeKeyWorld = make_world(STRIPE_KEY)
    events = rotate_ok(w)
    first, meta = w.live()
    assert first is not None and set(first) == {"api_key", "key_id"}
    assert first["api_key"].startswith("rk_") and w.status(first) == 200
    assert meta["custom_metadata"]["rotator-key-id"] == first["key_id"] == w.state()["current"]["key_id"]
    assert [e["key_id"] for e in events if e["event"] == "credential.issued"] == [first["key_id"]]
    assert w.fake.key(first["key_id"])["name"].startswith(f"rotator:{w.name}:")

    rotate_ok(w)
    second, meta = w.live()
    assert meta["current_version"] == 2
    assert w.status(first) == 200 and w.status(second) == 200, "the old key keeps working during grace"
    time.sleep(GRACE)
    code, events = w.cli("run", "--once")
    assert code == 0 and [e["key_id"] for e in events if e["event"] == "credential.revoked"] == [first["key_id"]]
    assert w.status(first) == 401 and w.status(second) == 200
    assert w.rotator_keys() == {second["key_id"]} and w.is_foreign_intact()

    rotate_ok(w, "--revoke-now")
    third, meta = w.live()
    assert meta["current_version"] == 3
    assert w.status(second) == 401 and w.status(third) == 200
    assert w.rotator_keys() == {third["key_id"]} and w.is_foreign_intact()


def test_a_key_without_customer_permissions_is_verified_by_its_403(make_world) -> None:  # type: ignore[no-untyped-def]
    """A restricted key lacking customer_read authenticates (403, not 401): it goes live."""
    w: StripeKeyWorld = make_world(STRIPE_KEY, foreign=False, params={"permissions": ["webhook_read"]})
    rotate_ok(w)
    data, _ = w.live()
    assert w.status(data) == 403 and w.works(data)


def test_webhook_secret_verifies_signed_events_and_the_old_endpoint_goes(make_world) -> None:  # type: ignore[no-untyped-def]
    """The SDK's construct_event verifies the fake's signed event with the secret from Vault; the old endpoint goes after grace."""
    w: WebhookWorld = make_world(WEBHOOK)
    rotate_ok(w)
    first, meta = w.live()
    assert first is not None and set(first) == {"signing_secret", "endpoint_id"}
    assert first["signing_secret"].startswith("whsec_") and w.works(first)
    assert meta["custom_metadata"]["rotator-key-id"] == first["endpoint_id"] == w.state()["current"]["key_id"]
    endpoint = next(e for e in w.fake.endpoints(w.account) if e["id"] == first["endpoint_id"])
    assert endpoint["url"] == w.url and endpoint["metadata"]["managed-by"] == "rotator"

    rotate_ok(w)
    second, meta = w.live()
    assert meta["current_version"] == 2
    assert w.works(first) and w.works(second), "during grace both endpoints receive events"
    (delivery,) = [d for d in w.fake.deliver(w.account, "customer.created") if d.endpoint_id == second["endpoint_id"]]
    event = stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, second["signing_secret"])
    assert event["type"] == "customer.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.payload, delivery.signature_header, first["signing_secret"])

    time.sleep(GRACE)
    code, events = w.cli("run", "--once")
    assert code == 0 and [e["key_id"] for e in events if e["event"] == "credential.revoked"] == [first["endpoint_id"]]
    assert w.is_rejected(first) and w.works(second)
    assert w.rotator_keys() == {second["endpoint_id"]}
    assert w.is_foreign_intact(), "an endpoint made by hand at the same URL is never touched"
    assert first["endpoint_id"] not in {d.endpoint_id for d in w.fake.deliver(w.account, "invoice.paid")}


def test_a_rate_limited_burst_is_waited_out(make_world, fake_stripe) -> None:  # type: ignore[no-untyped-def]
    """429s with Retry-After: 1 on the next requests delay the rotation; it still completes."""
    w: StripeKeyWorld = make_world(STRIPE_KEY, foreign=False)
    fake_stripe.inject(None, 429, count=2, headers={"Retry-After": "1"})
    before = len(fake_stripe.requests)
    started = time.monotonic()
    try:
        events = rotate_ok(w)
    finally:
        fake_stripe.clear_faults()
    assert time.monotonic() - started >= 1.8, "each Retry-After must be waited out"
    limited = [r for r in fake_stripe.requests[before:] if r.status == 429]
    assert len(limited) == 2
    data, _ = w.live()
    assert w.works(data) and "rotation.failed" not in names(events)
