"""Stripe as Stripe documents it, not as the sandbox's author remembered it:
the permission catalogue, key-name limits, v2 idempotency, confirmation by
use. Each test names the public source it holds the code to
(docs/providers/stripe.md, "What was checked")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import write_credential
from providers.stripe_permissions import PERMISSIONS, suggestion
from rotator.config import load_directory
from rotator.provider import load_providers

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
