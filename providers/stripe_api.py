"""The Stripe providers: managed (restricted) API keys through the v2 IAM
preview API, and webhook endpoint signing secrets by endpoint replacement.

Invariants:
- Rotation is create-then-retire, never Stripe's `rotate` (which kills or
  time-limits the old key on Stripe's clock, not after our verified
  promotion plus `grace`; see docs/providers/stripe.md).
- Every object we create is marked `{name_prefix}:{credential}:{rotation_id}`
  in the same call (key name; endpoint description and metadata), so
  `list_keys` finds a crash's orphans.
- A new API key arrives sealed (JWE) to a key pair made for that create and
  held in memory only. A key we cannot open is expired before the error
  propagates; an endpoint whose secret is missing is deleted.
- API keys (v2): every create attempt has a fresh Idempotency-Key and key
  pair. v2 does not replay a stored response (a retry "returns an updated
  response") and never returns a live secret on a read, so before minting,
  an active key already carrying this rotation's name or mark (a create
  whose response was lost) is expired. Names fit Stripe's 100-character
  limit; the full mark is also the note's first line.
- Webhook endpoints (v1): Idempotency-Key = rotation id + a nonce per create
  attempt, kept only while its response is unknown (lost), so an in-process
  retry replays Stripe's stored response with the secret; any answer from
  Stripe ends the attempt.
- Revocation expires (deletes) first and asks only if that failed: a
  failing read never blocks a revocation that would have worked.
- No secret reaches a message, a repr or a log; list results keep ids,
  names and timestamps only (Stripe test mode returns tokens in lists).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel
from rotator_providers.stripe_http import (
    CreateAttempt,
    NoResponseError,
    PendingCreates,
    StripeHttp,
    key_name,
    mark_text,
    parse_mark,
    parse_timestamp,
)
from rotator_providers.stripe_jwe import EphemeralKeyPair, JweError, open_created_secret
from rotator_providers.stripe_params import _OBJECT_ID, StripeManagedApiKeyParams, StripeWebhookSecretParams

from rotator.core.errors import NotFoundError, PermanentError, RotatorError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, Provider, ProviderContext, ProviderKey


def _note_mark(note: object) -> str | None:
    """The mark on the first line of a key's note, where the rotator puts it."""
    return note.split("\n", 1)[0] if isinstance(note, str) else None


def _object_id(handle: Mapping[str, str], field: str) -> str:
    value = handle.get(field, "")
    if not _OBJECT_ID.fullmatch(value):
        raise PermanentError(f"the handle's {field} is missing or not a Stripe id")
    return value


class _StripeProvider(Provider):
    """What both Stripe providers share: the client, the management key, creates."""

    page_size: ClassVar[int] = 100  # Stripe's maximum
    # A retried create is safe: an API key's issue first expires any key a
    # lost create of this rotation left (v2 does not replay); a webhook
    # endpoint's retry replays its v1 idempotency key (see `_create`).
    is_issue_retry_safe: ClassVar[bool] = True

    def __init__(self, params: BaseModel, context: ProviderContext) -> None:
        super().__init__(params, context)
        api_base: str = params.api_base  # type: ignore[attr-defined]
        self.http = StripeHttp(api_base, user_agent=context.user_agent, now=context.clock.now)
        # v1 creates only (webhook endpoints): v1 replays a stored response.
        self._pending = PendingCreates(context.clock, make_secret=None)

    def close(self) -> None:
        self.http.close()

    def _management_key(self) -> str:
        ref: str = self.params.management_key  # type: ignore[attr-defined]
        value = self.context.read_secret(ref).strip()
        if not value:
            raise PermanentError(f"the Stripe management key at {ref} is empty")
        return value

    def _create(
        self, ctx: IssueContext, path: str, payload: Callable[[CreateAttempt], Mapping[str, Any]], **kwargs: Any
    ) -> tuple[dict[str, Any], CreateAttempt]:
        """POST a create once; keep the attempt only if its response was lost.

        `payload` turns the attempt into `json=` or `form=` arguments; it must
        give the same body for the same attempt, so a replay matches.
        """
        attempt = self._pending.begin(ctx.rotation_id)
        try:
            body = self.http.request(
                "POST", path, idempotency_key=f"rotator-{ctx.rotation_id}-{attempt.nonce}", **payload(attempt), **kwargs
            )
        except NoResponseError:
            raise  # a retry replays this very request, which Stripe may have applied
        except BaseException:
            self._pending.end(ctx.rotation_id)
            raise
        self._pending.end(ctx.rotation_id)
        return body, attempt


class StripeManagedApiKeyProvider(_StripeProvider):
    """A restricted API key (`rk_…`) minted by a Stripe App for one account."""

    kind = "stripe.managed_api_key"
    params_model = StripeManagedApiKeyParams
    scope_params: ClassVar[Mapping[str, str]] = {"account": "stripe_accounts"}
    live_fields = ("api_key", "key_id")
    # Stripe's expiry reaches the API late (about 9 s observed, "minutes" by
    # other reports): poll for up to 4 min inside one step, well within the
    # engine's 5 min lease; after that the state machine tries again later.
    confirm_budget = timedelta(minutes=4)
    # The v2 API key object has `last_used` (usage-aware revocation, §6.10).
    reports_key_use = True
    params: StripeManagedApiKeyParams

    def _v2(self) -> dict[str, str]:
        return {"Stripe-Version": self.params.api_version, "Stripe-Context": self.params.account}

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        """Mint a key named for this rotation, first expiring one a lost create left.

        v2 does not replay: a retried create "returns an updated response"
        and a read never returns a live secret, so a key whose create
        response was lost can never be opened. It is found by its unique
        name, expired, and a new key is minted under a fresh idempotency key
        and key pair.
        """
        mark = mark_text(self.params.name_prefix, ctx.credential, ctx.rotation_id)
        name = key_name(mark)
        self._expire_lost_creates(name, mark)
        pair = EphemeralKeyPair()
        body = {
            "type": "secret_key",
            "name": name,
            # The note's first line is the full mark, also where the name had to be shortened.
            "note": f"{mark}\nManaged by rotator for credential {ctx.credential}; replaced and expired automatically.",
            "permissions": list(self.params.permissions),
            "public_key": {"id": pair.key_id, "pem_key": {"algorithm": "RSA", "data": pair.public_pem}},
        }
        key = self.http.request(
            "POST", "/v2/iam/api_keys", api_key=self._management_key(), headers=self._v2(), json=body,
            idempotency_key=f"rotator-{ctx.rotation_id}-{uuid.uuid4().hex}",
        )
        key_id = key.get("id")
        if not isinstance(key_id, str) or not _OBJECT_ID.fullmatch(key_id):
            raise PermanentError(f"Stripe created a key without an id (named {name}); the orphan sweep will find it")
        try:
            api_key = open_created_secret(key, pair)
            self.context.register_secret(api_key)
        except JweError as exc:
            raise PermanentError(f"Stripe key {key_id}: {exc}; {self._expire_quietly(key_id)}") from None
        return IssuedCredential(
            key_id=key_id,
            data={"api_key": api_key, "key_id": key_id},
            # The key itself rides in the handle (stored in Vault only) so
            # is_revoked can confirm Stripe rejects it: expiry takes seconds.
            handle={"key_id": key_id, "api_key": api_key},
        )

    def _expire_lost_creates(self, name: str, mark: str) -> None:
        """Expire every active key already carrying this rotation's name or mark."""
        for item in self.http.paginate_v2(
            "/v2/iam/api_keys", api_key=self._management_key(), headers=self._v2(), limit=self.page_size
        ):
            if item.get("status") == "expired" or not isinstance(item.get("id"), str):
                continue
            if item.get("name") == name or _note_mark(item.get("note")) == mark:
                self.revoke({"key_id": str(item["id"])})

    def verify(self, credential: IssuedCredential) -> None:
        """Use the key: 200, or 403 (authenticated, lacks customer_read), means it works.

        A 401 right after the create means "not live yet" as often as "bad":
        transient, so the engine keeps trying within `verify_budget`.
        """
        response = self._probe(credential.data["api_key"])
        if response.status_code == 401:
            raise TransientError(f"Stripe does not accept the new key {credential.key_id} yet (HTTP 401)")
        if response.status_code not in (200, 403):
            raise self.http.error(response)

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id = _object_id(handle, "key_id")
        try:
            self.http.request(
                "POST", f"/v2/iam/api_keys/{key_id}/expire", api_key=self._management_key(),
                headers=self._v2(), json={}, idempotency_key=f"rotator-expire-{key_id}-{uuid.uuid4().hex[:16]}",
            )
        except NotFoundError:
            return
        except RotatorError:
            if self._is_expired_at_stripe(key_id):
                return
            raise

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        """Revoked means Stripe rejects the key itself (401, `api_key_expired`).

        Neither a 404 on the key id (Stripe's `rotate` makes the old id 404 at
        once while its token still works) nor `status: expired` (expiry takes
        seconds to minutes to reach the API) proves it, so the key is used.
        Only a handle without the key (listed orphans, records from before
        the key rode in the handle) falls back to the key's status.
        """
        api_key = handle.get("api_key")
        if api_key:
            response = self._probe(api_key)
            if response.status_code == 401:
                return True
            if response.status_code in (200, 403):
                return False  # still authenticates: not yet
            raise self.http.error(response)
        key_id = _object_id(handle, "key_id")
        try:
            key = self.http.request("GET", f"/v2/iam/api_keys/{key_id}", api_key=self._management_key(), headers=self._v2())
        except NotFoundError:
            return True  # nothing left to ask: without the key, gone is the best evidence there is
        return key.get("status") == "expired"

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        if not key_id or not _OBJECT_ID.fullmatch(key_id):
            return None
        handle = {"key_id": key_id}
        if data.get("api_key"):
            handle["api_key"] = data["api_key"]  # lets is_revoked confirm Stripe rejects it
        return ProviderKey(key_id=key_id, handle=handle)

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        key_id = _object_id(handle, "key_id")
        try:
            key = self.http.request("GET", f"/v2/iam/api_keys/{key_id}", api_key=self._management_key(), headers=self._v2())
        except NotFoundError:
            return None  # gone: nobody can use it
        return parse_timestamp(key.get("last_used"))  # only this field is taken: a test-mode answer holds the token

    def list_keys(self) -> list[ProviderKey]:
        items = self.http.paginate_v2(
            "/v2/iam/api_keys", api_key=self._management_key(), headers=self._v2(), limit=self.page_size
        )
        # Map each item to ids, names and times at once: in test mode Stripe
        # lists every key's plaintext token, which must go no further.
        return [key for key in map(self._listed, items) if key is not None]

    def _listed(self, item: Mapping[str, Any]) -> ProviderKey | None:
        key_id = item.get("id")
        if item.get("type", "secret_key") != "secret_key" or not isinstance(key_id, str):
            return None  # publishable keys are not secrets
        return ProviderKey(
            key_id=key_id,
            handle={"key_id": key_id},
            created_at=parse_timestamp(item.get("created")),
            active=item.get("status") != "expired",
            last_used_at=parse_timestamp(item.get("last_used")),
            mark=parse_mark(item.get("name"), self.params.name_prefix)
            or parse_mark(_note_mark(item.get("note")), self.params.name_prefix),
        )

    def _probe(self, api_key: str) -> httpx.Response:
        """Use a key once; any status comes back (403 and 401 mean different things here)."""
        return self.http.send("GET", "/v1/customers", api_key=api_key, params={"limit": 1})

    def _is_expired_at_stripe(self, key_id: str) -> bool:
        """After a failed expire: is the key expired (or gone) anyway? Unknown -> False."""
        try:
            key = self.http.request("GET", f"/v2/iam/api_keys/{key_id}", api_key=self._management_key(), headers=self._v2())
        except NotFoundError:
            return True
        except RotatorError:
            return False
        return key.get("status") == "expired"

    def _expire_quietly(self, key_id: str) -> str:
        """Expire a key we cannot use; say what happened, for the error message."""
        try:
            self.revoke({"key_id": key_id})
        except RotatorError as exc:
            return f"expiring it failed too ({exc}); it carries the rotator mark, so the orphan sweep will expire it"
        return "the key was expired at Stripe"


class StripeWebhookSecretProvider(_StripeProvider):
    """A webhook endpoint's signing secret (`whsec_…`), rotated by replacing the endpoint."""

    kind = "stripe.webhook_secret"
    params_model = StripeWebhookSecretParams
    scope_params: ClassVar[Mapping[str, str]] = {"url": "urls"}
    live_fields = ("signing_secret", "endpoint_id")
    reports_last_use = False  # Stripe says nothing of when an endpoint last received an event
    params: StripeWebhookSecretParams

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        mark = mark_text(self.params.name_prefix, ctx.credential, ctx.rotation_id)
        form: dict[str, Any] = {
            "url": self.params.url,
            "enabled_events[]": list(self.params.enabled_events),
            "description": mark,
            "metadata[rotator-mark]": mark,
            "metadata[managed-by]": "rotator",
        }
        if self.params.event_api_version:
            form["api_version"] = self.params.event_api_version
        endpoint, _ = self._create(ctx, "/v1/webhook_endpoints", lambda _: {"form": form}, api_key=self._management_key())
        endpoint_id, secret = endpoint.get("id"), endpoint.get("secret")
        if isinstance(secret, str):
            self.context.register_secret(secret)  # before anything below can raise
        if not isinstance(endpoint_id, str) or not _OBJECT_ID.fullmatch(endpoint_id):
            raise PermanentError(f"Stripe created a webhook endpoint without an id (marked {mark})")
        if not isinstance(secret, str) or not re.fullmatch(r"whsec_[A-Za-z0-9+/=_-]{8,}", secret):
            outcome = self._delete_quietly(endpoint_id)
            raise PermanentError(f"Stripe webhook endpoint {endpoint_id} came without a signing secret; {outcome}")
        return IssuedCredential(
            key_id=endpoint_id,
            data={"signing_secret": secret, "endpoint_id": endpoint_id},
            handle={"endpoint_id": endpoint_id},
        )

    def verify(self, credential: IssuedCredential) -> None:
        """Read the endpoint back: a signing secret cannot be used against Stripe."""
        endpoint_id = credential.key_id
        endpoint = self.http.request("GET", f"/v1/webhook_endpoints/{endpoint_id}", api_key=self._management_key())
        problems = []
        if endpoint.get("url") != self.params.url:
            problems.append("its url differs")
        if sorted(endpoint.get("enabled_events") or []) != sorted(self.params.enabled_events):
            problems.append("its enabled_events differ")
        if endpoint.get("status") != "enabled":
            problems.append(f"its status is {endpoint.get('status')!r}")
        if problems:
            raise PermanentError(f"Stripe webhook endpoint {endpoint_id} is not as configured: {', '.join(problems)}")

    def revoke(self, handle: Mapping[str, str]) -> None:
        endpoint_id = _object_id(handle, "endpoint_id")
        try:
            self.http.request("DELETE", f"/v1/webhook_endpoints/{endpoint_id}", api_key=self._management_key())
        except NotFoundError:
            return
        except RotatorError:
            if self.is_revoked_quietly(endpoint_id):
                return
            raise

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        endpoint_id = _object_id(handle, "endpoint_id")
        try:
            self.http.request("GET", f"/v1/webhook_endpoints/{endpoint_id}", api_key=self._management_key())
        except NotFoundError:
            return True
        return False

    def is_revoked_quietly(self, endpoint_id: str) -> bool:
        try:
            return self.is_revoked({"endpoint_id": endpoint_id})
        except RotatorError:
            return False

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        endpoint_id = data.get("endpoint_id")
        if not endpoint_id or not _OBJECT_ID.fullmatch(endpoint_id):
            return None
        return ProviderKey(key_id=endpoint_id, handle={"endpoint_id": endpoint_id})

    def list_keys(self) -> list[ProviderKey]:
        """Endpoints for our URL, and any endpoint carrying the rotator's mark."""
        keys = []
        for item in self.http.paginate_v1("/v1/webhook_endpoints", api_key=self._management_key(), limit=self.page_size):
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            mark = parse_mark(metadata.get("rotator-mark"), self.params.name_prefix) or parse_mark(
                item.get("description"), self.params.name_prefix
            )
            endpoint_id = item.get("id")
            if not isinstance(endpoint_id, str) or (mark is None and item.get("url") != self.params.url):
                continue
            # A disabled endpoint still exists and its secret still signs once
            # re-enabled, so every listed endpoint counts as active.
            keys.append(ProviderKey(
                key_id=endpoint_id,
                handle={"endpoint_id": endpoint_id},
                created_at=parse_timestamp(item.get("created")),
                mark=mark,
            ))
        return keys

    def _delete_quietly(self, endpoint_id: str) -> str:
        try:
            self.revoke({"endpoint_id": endpoint_id})
        except RotatorError as exc:
            return f"deleting it failed too ({exc}); it carries the rotator mark, so the orphan sweep will delete it"
        return "the endpoint was deleted"
