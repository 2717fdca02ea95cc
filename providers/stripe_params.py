"""The Stripe providers' params (contract §4), validated as the API will take them.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import field_validator as validates
from rotator_providers.stripe_http import DEFAULT_API_BASE
from rotator_providers.stripe_permissions import PERMISSIONS, suggestion

from rotator.core.validators import ApiUrl, VaultRef

PREVIEW_VERSION = "2026-08-26.preview"


_PREVIEW_FLOOR = date(2026, 8, 26)


_OBJECT_ID = re.compile(r"[A-Za-z0-9_]{1,255}")


def _check_prefix(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,31}", text):
        raise ValueError("use 1-32 of a-z 0-9 . _ - (no ':'), starting with a letter or digit")
    return text


def _check_event_version(text: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?", text):
        raise ValueError(f"{text!r} is not a Stripe API version such as 2025-09-30.clover")
    return text


NamePrefix = Annotated[str, AfterValidator(_check_prefix)]


def _distinct_names(value: list[str], pattern: str, what: str, field: str) -> list[str]:
    """Each name matches `pattern`, and none repeats."""
    for name in value:
        if not re.fullmatch(pattern, name):
            raise ValueError(f"{name!r} is not {what}")
    if len(set(value)) != len(value):
        raise ValueError(f"{field} must not repeat")
    return value


class StripeManagedApiKeyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(
        description="The Stripe account (acct_…) the key belongs to; sent as Stripe-Context.",
        json_schema_extra={"pattern": "^acct_[A-Za-z0-9]{1,64}$"},
    )
    management_key: VaultRef = Field(description="Vault reference to the secret key of a Stripe App with api_key_write.")
    permissions: list[str] = Field(min_length=1, description="Permissions of the new restricted key, from Stripe's catalogue (singular names), e.g. customer_read.")
    name_prefix: NamePrefix = "rotator"
    api_base: ApiUrl = DEFAULT_API_BASE
    api_version: str = Field(
        PREVIEW_VERSION,
        description=(
            f"Stripe-Version sent to /v2/iam/api_keys: {PREVIEW_VERSION} or any later YYYY-MM-DD.name, "
            "preview or GA (e.g. a future 2027-03-31.dahlia), checked by shape only."
        ),
        json_schema_extra={"pattern": r"^\d{4}-\d{2}-\d{2}\.[a-z]+$"},
    )

    @validates("account")
    @classmethod
    def _account(cls, value: str) -> str:
        if not re.fullmatch(r"acct_[A-Za-z0-9]{1,64}", value):
            raise ValueError(f"{value!r} is not a Stripe account id such as acct_1Nv0FGQ9RKHgCVdK")
        return value

    @validates("permissions")
    @classmethod
    def _permissions(cls, value: list[str]) -> list[str]:
        _distinct_names(value, r"[a-z][a-z0-9_]{0,80}", "a Stripe permission name such as customer_read", "permissions")
        for name in value:
            if name not in PERMISSIONS:
                hint = suggestion(name)
                raise ValueError(
                    f"{name!r} is not in Stripe's permission catalogue"
                    + (f"; did you mean {hint}?" if hint else " (see providers/stripe_permissions.py)")
                )
        return value

    @validates("api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        # By shape, so a GA release of the API (a new named version) needs no
        # rotator release; Stripe itself refuses a version that does not serve it.
        match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})\.[a-z]+", value)
        try:
            day = date(*map(int, match.groups())) if match else None
        except ValueError:
            day = None
        if day is None or day < _PREVIEW_FLOOR:
            raise ValueError(
                f"{value!r}: use a Stripe version YYYY-MM-DD.name (.preview or a GA name) on or after {PREVIEW_VERSION}"
            )
        return value


class StripeWebhookSecretParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="The https URL of the consumer's webhook endpoint.")
    enabled_events: list[str] = Field(min_length=1, description="Event types to deliver, e.g. invoice.paid, or *.")
    management_key: VaultRef = Field(description="Vault reference to a key with webhook_write.")
    api_base: ApiUrl = DEFAULT_API_BASE
    name_prefix: NamePrefix = "rotator"
    event_api_version: Annotated[str, AfterValidator(_check_event_version)] | None = Field(
        None, description="API version of the events the new endpoint receives (pin it to the old endpoint's)."
    )

    @validates("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s#]*)?", value):
            raise ValueError(f"{value!r} is not an https:// URL (Stripe delivers webhooks over https only)")
        return value

    @validates("enabled_events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return _distinct_names(value, r"\*|[a-z0-9_]+(\.[a-z0-9_*]+)+", "a Stripe event type such as invoice.paid (or *)", "enabled_events")
