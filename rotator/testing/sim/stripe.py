"""Simulated Stripe: managed restricted API keys and webhook endpoint secrets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel
from rotator_providers.stripe_api import StripeManagedApiKeyParams, StripeWebhookSecretParams

from rotator.core.errors import NotFoundError, PermanentError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, ProviderKey
from rotator.testing.sim.service import Boundary, ResponseLost, Service, SimKey, _SimProvider, mark_text, parse_mark


class StripeAccount(Service):
    """One Stripe account: restricted keys or webhook endpoints, with idempotency."""

    kind = "stripe"
    EXPIRY_LAG = timedelta(seconds=20)  # an expired key keeps working this long at the API

    def __init__(self, now: Callable[[], datetime], *, boundary: Boundary | None = None, secret_field: str = "api_key") -> None:
        super().__init__(now, boundary=boundary)
        self.secret_field = secret_field  # type: ignore[misc]
        self.idempotent: dict[str, str] = {}  # Idempotency-Key -> the key id its create made
        # Numbers provider objects, standing in for the random part a real
        # process puts in its idempotency keys: `id()` could repeat once an
        # old object is freed, so a fresh process replayed a dead one's create.
        self.instances = itertools.count(1)

    def create(self, actor: str, idempotency_key: str, prefix: str, mark: str, extra: dict[str, Any]) -> SimKey:
        if idempotency_key in self.idempotent:
            return self.keys[self.idempotent[idempotency_key]]  # Stripe replays its stored answer
        key_id = self.new_id(prefix)
        secret_prefix = "rk_test_" if prefix.startswith("rk") else "whsec_"
        key = SimKey(key_id, f"{secret_prefix}{key_id}", self.now(), mark=mark, minted_by=actor, extra=dict(extra))
        self.keys[key_id] = key
        self.idempotent[idempotency_key] = key_id
        return key

    def visible(self, key_id: str) -> SimKey | None:
        key = self.keys.get(key_id)
        return key if key is not None and key.deleted_at is None else None


class _SimStripeProvider(_SimProvider):
    service: ClassVar[StripeAccount]
    _prefix: ClassVar[str]
    is_issue_retry_safe: ClassVar[bool] = True

    def __init__(self, params: BaseModel, context: Any) -> None:
        super().__init__(params, context)
        self._nonces: dict[str, str] = {}  # rotation id -> nonce of a create whose answer was lost
        self._counter = itertools.count(1)
        self._instance = next(self.service.instances)

    def _create(self, ctx: IssueContext, extra: dict[str, Any]) -> SimKey:
        nonce = self._nonces.get(ctx.rotation_id) or f"n{next(self._counter)}"
        self._nonces[ctx.rotation_id] = nonce
        idem = f"rotator-{ctx.rotation_id}-{nonce}-i{self._instance}"
        mark = mark_text(ctx.credential, ctx.rotation_id)
        try:
            key = self._call("POST create", lambda: self.service.create(self.actor, idem, self._prefix, mark, extra), mutating=True)
        except ResponseLost:
            raise  # a retry replays this very request
        except BaseException:
            self._nonces.pop(ctx.rotation_id, None)
            raise
        self._nonces.pop(ctx.rotation_id, None)
        return key

    def list_keys(self) -> list[ProviderKey]:
        keys = self._call("GET list", lambda: [(k.key_id, k.mark, k.created_at, k.extra.get("expired_at") is None)
                                               for k in self.service.existing()])
        return [ProviderKey(key_id=key_id, handle={self._handle_field: key_id}, created_at=created, active=active, mark=parse_mark(mark))
                for key_id, mark, created, active in keys]

    _handle_field: ClassVar[str]


class SimStripeManagedApiKeyProvider(_SimStripeProvider):
    """v2 API keys: no replay of a lost create (a fresh idempotency key each
    attempt), so a key a lost create of this rotation left is expired first."""

    kind = "stripe.managed_api_key"
    params_model = StripeManagedApiKeyParams
    live_fields = ("api_key", "key_id")
    confirm_budget = timedelta(minutes=4)
    reports_key_use = True
    _prefix = "rk_"
    _handle_field = "key_id"

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        mark = mark_text(ctx.credential, ctx.rotation_id)
        listed = self._call("GET list", lambda: [(k.key_id, k.mark, k.extra.get("expired_at")) for k in self.service.existing()])
        for key_id, key_mark, expired in listed:
            if expired is None and key_mark == mark:
                self.revoke({"key_id": key_id})
        fresh = f"rotator-{ctx.rotation_id}-{next(self._counter)}-i{self._instance}"
        key = self._call("POST create", lambda: self.service.create(self.actor, fresh, self._prefix, mark, {}), mutating=True)
        return IssuedCredential(key_id=key.key_id, data={"api_key": key.secret, "key_id": key.key_id},
                                handle={"key_id": key.key_id, "api_key": key.secret})

    def _probe(self, api_key: str) -> int:
        def probe() -> int:
            key = next((k for k in self.service.keys.values() if k.secret == api_key), None)
            return 200 if key is not None and self.service.is_accepted(key.key_id) else 401
        return self._call("GET customers", probe)

    def verify(self, credential: IssuedCredential) -> None:
        if self._probe(credential.data["api_key"]) == 401:  # "not live yet" as often as "bad"
            raise TransientError(f"Stripe does not accept the new key {credential.key_id} yet (HTTP 401)")

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id = handle["key_id"]

        def expire() -> None:
            key = self.service.visible(key_id)
            if key is None:
                raise NotFoundError(f"no Stripe key {key_id}")
            if key.extra.get("expired_at") is None:
                key.extra["expired_at"] = self.service.now()
                key.dead_at = self.service.now() + StripeAccount.EXPIRY_LAG

        try:
            self._call("POST expire", expire, target=key_id, mutating=True)
        except NotFoundError:
            return
        except (TransientError, PermanentError):
            if self._is_expired_at_stripe(key_id):
                return
            raise

    def _status(self, key_id: str) -> str:
        key = self.service.visible(key_id)
        if key is None:
            raise NotFoundError(f"no Stripe key {key_id}")
        return "expired" if key.extra.get("expired_at") else "active"

    def _is_expired_at_stripe(self, key_id: str) -> bool:
        try:
            return self._call("GET key", lambda: self._status(key_id)) == "expired"
        except NotFoundError:
            return True
        except (TransientError, PermanentError):
            return False

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        if handle.get("api_key"):  # revoked means Stripe rejects the key itself
            return self._probe(handle["api_key"]) == 401
        try:
            return self._call("GET key", lambda: self._status(handle["key_id"])) == "expired"
        except NotFoundError:
            return True

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        if not key_id:
            return None
        handle = {"key_id": key_id}
        if data.get("api_key"):
            handle["api_key"] = data["api_key"]
        return ProviderKey(key_id=key_id, handle=handle)

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        key = self._call("GET key", lambda: self.service.visible(handle["key_id"]))
        return key.last_used_at if key is not None else None


class SimStripeWebhookSecretProvider(_SimStripeProvider):
    kind = "stripe.webhook_secret"
    params_model = StripeWebhookSecretParams
    live_fields = ("signing_secret", "endpoint_id")
    reports_last_use = False
    _prefix = "we_"
    _handle_field = "endpoint_id"

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        params = self.params
        key = self._create(ctx, {"url": params.url, "enabled_events": list(params.enabled_events)})  # type: ignore[attr-defined]
        return IssuedCredential(key_id=key.key_id, data={"signing_secret": key.secret, "endpoint_id": key.key_id},
                                handle={"endpoint_id": key.key_id})

    def verify(self, credential: IssuedCredential) -> None:
        key = self._call("GET endpoint", lambda: self.service.visible(credential.key_id))
        if key is None:
            raise PermanentError(f"Stripe webhook endpoint {credential.key_id} does not exist")
        if key.extra.get("url") != self.params.url:  # type: ignore[attr-defined]
            raise PermanentError(f"Stripe webhook endpoint {credential.key_id} is not as configured: its url differs")

    def revoke(self, handle: Mapping[str, str]) -> None:
        endpoint_id = handle["endpoint_id"]

        def delete() -> None:
            if self.service.visible(endpoint_id) is None:
                raise NotFoundError(f"no endpoint {endpoint_id}")
            self.service.keys[endpoint_id].deleted_at = self.service.now()

        try:
            self._call("DELETE endpoint", delete, target=endpoint_id, mutating=True)
        except NotFoundError:
            return
        except (TransientError, PermanentError):
            if self._is_revoked_quietly(endpoint_id):
                return
            raise

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        return self._call("GET endpoint", lambda: self.service.visible(handle["endpoint_id"])) is None

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        endpoint_id = data.get("endpoint_id")
        return ProviderKey(key_id=endpoint_id, handle={"endpoint_id": endpoint_id}) if endpoint_id else None

    def _is_revoked_quietly(self, endpoint_id: str) -> bool:
        try:
            return self.is_revoked({"endpoint_id": endpoint_id})
        except (TransientError, PermanentError):
            return False

    def list_keys(self) -> list[ProviderKey]:
        url = self.params.url  # type: ignore[attr-defined]
        keys = self._call("GET list", lambda: [(k.key_id, k.mark, k.created_at, k.extra.get("url")) for k in self.service.existing()])
        return [ProviderKey(key_id=key_id, handle={"endpoint_id": key_id}, created_at=created, mark=parse_mark(mark))
                for key_id, mark, created, key_url in keys if parse_mark(mark) is not None or key_url == url]
