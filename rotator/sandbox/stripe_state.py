"""The fake Stripe's state and its Python API: accounts and App installs,
API keys and webhook endpoints (introspection never returns a token or a
signing secret), injected faults, and signed event deliveries. The HTTP side
is rotator.sandbox.stripe."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rotator.sandbox.serving import BackgroundServer
from rotator.sandbox.stripe_wire import _Request, _Response

MIN_PREVIEW = "2026-08-26.preview"
_ALNUM = string.ascii_letters + string.digits


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass
class JweSettings:
    """How the next created keys are sealed (tests change it to misbehave)."""

    alg: str = "RSA-OAEP-256"
    enc: str = "A256GCM"
    recipient_pem: str | None = None  # seal to this key instead of the posted one
    tamper: bool = False  # flip a byte of the ciphertext
    recipient_key_id: str | None = None  # echo this instead of the posted public_key.id


@dataclass
class RecordedRequest:
    """One request as the fake saw it, without its Authorization header."""

    method: str
    path: str
    query: str
    status: int
    idempotency_key: str | None
    stripe_version: str | None
    stripe_context: str | None
    replayed: bool = False


@dataclass(frozen=True)
class Delivery:
    """One signed webhook delivery to one endpoint."""

    endpoint_id: str
    url: str
    payload: str
    signature_header: str


@dataclass
class _Key:
    id: str
    account: str
    name: str
    note: str
    permissions: list[str]
    token: str
    created: float
    last_used: float | None = None
    expires_at: float | None = None  # when the status turns expired
    hidden: bool = False  # replaced by rotate: its id no longer resolves

    def view(self, *, now: float, with_token: bool) -> dict[str, Any]:
        secret: dict[str, Any] = {"secret_token_redacted": self.token[:8] + "..." + self.token[-4:]}
        if with_token:
            secret["token"] = self.token
        return {
            "id": self.id, "object": "v2.iam.api_key", "type": "secret_key", "name": self.name,
            "note": self.note, "permissions": list(self.permissions), "livemode": False, "ip_allowlist": [],
            "status": "expired" if self.expires_at is not None and now >= self.expires_at else "active",
            "created": _rfc3339(self.created), "expires_at": _rfc3339(self.expires_at),
            "last_used": _rfc3339(self.last_used), "secret_key": secret,
        }


@dataclass
class _Endpoint:
    id: str
    account: str
    url: str
    enabled_events: list[str]
    description: str | None
    metadata: dict[str, str]
    secret: str
    api_version: str | None
    created: int
    status: str = "enabled"

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "webhook_endpoint", "url": self.url, "api_version": self.api_version,
            "application": None, "created": self.created, "description": self.description,
            "enabled_events": list(self.enabled_events), "livemode": False,
            "metadata": dict(self.metadata), "status": self.status,
        }


@dataclass
class _Fault:
    pattern: re.Pattern[str] | None
    method: str | None
    status: int
    remaining: int
    headers: dict[str, str]
    after: bool
    drop: bool


@dataclass
class _Principal:
    kind: str  # "app", "secret" or "restricted"
    accounts: frozenset[str]
    key: _Key | None = None


def _rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _preview_ok(version: str | None) -> bool:
    """The first preview that served /v2/iam/api_keys, or any later version (preview or GA)."""
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.[a-z]+", version or "")
    return bool(match) and match.group(1) >= MIN_PREVIEW[:10]  # type: ignore[union-attr]


class StripeState:
    """The fake Stripe's state and its Python API (set-up and introspection)."""

    def __init__(self, *, expiry_delay: float = 0.0, activation_delay: float = 0.0,
                 now: Callable[[], float] = time.time) -> None:
        self.expiry_delay = expiry_delay
        # A new key authenticates only this long after its create (propagation).
        self.activation_delay = activation_delay
        self.now = now
        self.jwe = JweSettings()
        self.encrypt_secrets = True  # False: answer creates with a plaintext token only
        self.plaintext_token_on_create = False
        self.plaintext_tokens_in_reads = True  # as Stripe test mode does
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._principals: dict[str, _Principal] = {}
        self._keys: dict[str, _Key] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._idempotent: dict[tuple[str, str], tuple[str, _Response]] = {}
        self._faults: list[_Fault] = []
        self._server: BackgroundServer | None = None
        self.url = ""

    # -- set-up --------------------------------------------------------------

    def add_account(self, account: str, management_key: str | None = None) -> str:
        """Install the App on `account`; returns the App's secret key (api_key_write)."""
        with self._lock:
            key = management_key or "sk_test_" + _rand(32)
            known = self._principals.get(key)
            accounts = (known.accounts if known else frozenset()) | {account}
            self._principals[key] = _Principal("app", accounts)
            return key

    def add_secret_key(self, account: str, key: str | None = None) -> str:
        """Give `account` a standard (full access) secret key; returns it."""
        with self._lock:
            key = key or "sk_test_" + _rand(32)
            self._principals[key] = _Principal("secret", frozenset({account}))
            return key

    def inject(self, path: str | None = None, status: int = 500, count: int = 1, headers: dict[str, str] | None = None,
               *, method: str | None = None, after: bool = False, drop: bool = False) -> None:
        """Fail the next `count` requests whose path matches `path` (a regex; None: any).

        `after`: handle the request first (and store its idempotent result),
        then answer with the fault; `drop`: close the connection unanswered.
        """
        with self._lock:
            pattern = re.compile(path) if path else None
            self._faults.append(_Fault(pattern, method, status, count, dict(headers or {}), after, drop))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- introspection (never returns a token or a signing secret) -----------

    def keys(self, account: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [k.view(now=now, with_token=False) for k in self._keys.values() if account in (None, k.account)]

    def key(self, key_id: str) -> dict[str, Any]:
        with self._lock:
            return self._keys[key_id].view(now=self.now(), with_token=False)

    def endpoints(self, account: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e.view() for e in self._endpoints.values() if account in (None, e.account)]

    def accepts(self, api_key: str) -> bool:
        """Whether this key would authenticate right now."""
        with self._lock:
            return self._authenticate(api_key, touch=False) is not None

    def deliver(self, account: str, event_type: str, data: dict[str, Any] | None = None, *,
                timestamp: int | None = None) -> list[Delivery]:
        """Sign one event for every enabled endpoint subscribed to it (same event id)."""
        moment = int(self.now()) if timestamp is None else timestamp
        with self._lock:
            targets = [e for e in self._endpoints.values() if e.account == account and e.status == "enabled"
                       and (event_type in e.enabled_events or "*" in e.enabled_events)]
            event_id = "evt_" + _rand(24)
            out = []
            for endpoint in targets:
                payload = json.dumps({"id": event_id, "object": "event", "type": event_type, "created": moment,
                                      "api_version": endpoint.api_version, "livemode": False,
                                      "data": {"object": data or {}}})
                mac = hmac.new(endpoint.secret.encode(), f"{moment}.{payload}".encode(), hashlib.sha256).hexdigest()
                out.append(Delivery(endpoint.id, endpoint.url, payload, f"t={moment},v1={mac}"))
            return out

    # -- faults and authentication, as state ---------------------------------

    def _take_fault(self, request: _Request) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and (fault.method in (None, request.method)) and (
                fault.pattern is None or fault.pattern.search(request.path)
            ):
                fault.remaining -= 1
                return fault
        return None

    def _authenticate(self, token: str, *, touch: bool = True) -> _Principal | None:
        principal = self._principals.get(token)
        if principal is not None:
            return principal
        key = next((k for k in self._keys.values() if k.token == token), None) if token else None
        now = self.now()
        if key is None or (key.expires_at is not None and now >= key.expires_at + self.expiry_delay):
            return None
        if now < key.created + self.activation_delay:
            return None  # minted, not yet live
        if touch:
            key.last_used = self.now()
        return _Principal("restricted", frozenset({key.account}), key)
