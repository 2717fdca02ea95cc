"""Stripe's HTTP API as the Stripe providers need it: one attempt per call,
Stripe's answers mapped to the project's two error kinds, v1 and v2 list
pagination, and the rotator's mark in key names.

Invariants:
- One attempt per call: retrying is the engine's job (`rotator.engine.retry`).
  429, 5xx, timeouts and connection errors become `TransientError` (with
  `retry_after` from Retry-After where given); other 4xx become
  `PermanentError` (404: `NotFoundError`), unless Stripe says
  `Stripe-Should-Retry: true` (a conflicting concurrent request).
- A request that got no response at all raises `NoResponseError`: it may
  or may not have been applied, which matters for idempotent creates.
- Every POST carries an `Idempotency-Key` chosen by the caller.
- No API key, signing secret or response body reaches a message, a repr or
  a log. Stripe's own error message is quoted only when it looks like no
  secret. Query strings (page tokens) are never quoted.
- Requests only ever go to the configured API origin: a pagination link
  that points elsewhere is refused, so a key never leaves for another host.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from rotator.core.clock import Clock
from rotator.core.errors import NotFoundError, PermanentError, TransientError
from rotator.core.provider import KeyMark
from rotator.core.validators import secret_lookalike

DEFAULT_API_BASE = "https://api.stripe.com"
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Mark parts: credential names per contract §4; rotation ids as the engine makes them.
_CREDENTIAL = r"[a-z0-9][a-z0-9._-]{0,62}"
_ROTATION_ID = r"[A-Za-z0-9_-]{1,64}"


class NoResponseError(TransientError):
    """The request got no response: Stripe may or may not have applied it."""


# Stripe caps API key names (Infisical truncates at 100; not stated in the
# OpenAPI description): names are kept within this.
KEY_NAME_LIMIT = 100


def mark_text(prefix: str, credential: str, rotation_id: str) -> str:
    """The name (or metadata value) that marks a Stripe object as the rotator's."""
    return f"{prefix}:{credential}:{rotation_id}"


def key_name(mark: str, *, limit: int = KEY_NAME_LIMIT) -> str:
    """`mark` itself when it fits Stripe's name limit, else a shorter name that
    is still unique per rotation: the credential part is cut and followed by
    a digest of the whole mark (the full mark then rides in the note)."""
    if len(mark) <= limit:
        return mark
    prefix, credential, rotation_id = mark.split(":")
    digest = hashlib.sha256(mark.encode()).hexdigest()[:12]
    room = limit - len(prefix) - len(rotation_id) - len(digest) - 3
    if room < 1:
        raise PermanentError(f"a Stripe key name for {prefix}:…:{rotation_id} cannot fit {limit} characters; shorten name_prefix")
    return f"{prefix}:{credential[:room]}~{digest}:{rotation_id}"


def parse_mark(text: object, prefix: str) -> KeyMark | None:
    """`rotator:ci:r123` -> KeyMark("ci", "r123"); anything else -> None."""
    if not isinstance(text, str):
        return None
    match = re.fullmatch(rf"{re.escape(prefix)}:({_CREDENTIAL}):({_ROTATION_ID})", text)
    return KeyMark(match.group(1), match.group(2)) if match else None


def parse_timestamp(value: object) -> datetime | None:
    """A v2 RFC 3339 string or a v1 Unix time, as an aware UTC datetime."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            return None
    return None


def resolve_page_url(api_base: str, next_url: str) -> str:
    """Where a v2 `next_page_url` points, refusing any other origin."""
    target = urljoin(api_base + "/", next_url)
    base, dest = urlsplit(api_base), urlsplit(target)
    if (dest.scheme, dest.netloc) != (base.scheme, base.netloc):
        raise PermanentError(f"Stripe returned a next_page_url on another host ({dest.netloc}); refusing to follow it")
    return target


@dataclass
class CreateAttempt:
    """One create's idempotency nonce and, for API keys, its key pair."""

    nonce: str
    started: datetime
    material: object | None


class PendingCreates:
    """Create attempts whose response was lost, by rotation id, in memory only.

    `begin` returns the lost attempt for this rotation if there is one (so a
    retry sends the very same request and Stripe replays its answer), else
    a fresh one; `end` forgets it once Stripe answered anything.
    """

    TTL = timedelta(hours=1)  # well inside Stripe's 24 h idempotency window

    def __init__(self, clock: Clock, *, make_secret: Callable[[], object] | None) -> None:
        self._clock = clock
        self._make_secret = make_secret
        self._attempts: dict[str, CreateAttempt] = {}
        self._lock = threading.Lock()

    def begin(self, rotation_id: str) -> CreateAttempt:
        now = self._clock.now()
        with self._lock:
            self._attempts = {k: a for k, a in self._attempts.items() if now - a.started < self.TTL}
            attempt = self._attempts.get(rotation_id)
            if attempt is None:
                material = self._make_secret() if self._make_secret else None
                attempt = self._attempts[rotation_id] = CreateAttempt(uuid.uuid4().hex, now, material)
            return attempt

    def end(self, rotation_id: str) -> None:
        with self._lock:
            self._attempts.pop(rotation_id, None)


class StripeHttp:
    """A thin client for the few Stripe calls the providers make."""

    def __init__(
        self,
        api_base: str,
        *,
        user_agent: str,
        now: Callable[[], datetime],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._now = now
        self._client = httpx.Client(
            timeout=_TIMEOUT,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        api_key: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        form: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """One attempt, any status; only a missing response raises (`NoResponseError`)."""
        url = path if path.startswith(("http://", "https://")) else self.api_base + path
        sent = {"Authorization": f"Bearer {api_key}", **(headers or {})}
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        try:
            return self._client.request(method, url, headers=sent, params=params, json=json, data=form)
        except httpx.TimeoutException:
            raise NoResponseError(f"{_where(method, url)}: timed out") from None
        except httpx.TransportError as exc:
            raise NoResponseError(f"{_where(method, url)}: {type(exc).__name__}") from None

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One attempt; the parsed JSON body of a 2xx, else a mapped error."""
        response = self.send(method, path, **kwargs)
        if response.is_success:
            return _json_body(response, _where(method, str(response.request.url)))
        raise self.error(response)

    def paginate_v2(self, path: str, *, api_key: str, headers: Mapping[str, str], limit: int) -> Iterator[dict[str, Any]]:
        """Every item of a v2 list, following `next_page_url`."""
        page = self.request("GET", path, api_key=api_key, headers=headers, params={"limit": limit})
        while True:
            yield from _items(page)
            next_url = page.get("next_page_url")
            if not next_url:
                return
            page = self.request("GET", resolve_page_url(self.api_base, str(next_url)), api_key=api_key, headers=headers)

    def paginate_v1(self, path: str, *, api_key: str, limit: int) -> Iterator[dict[str, Any]]:
        """Every item of a v1 list, following `has_more` with `starting_after`."""
        params: dict[str, Any] = {"limit": limit}
        while True:
            page = self.request("GET", path, api_key=api_key, params=params)
            items = _items(page)
            yield from items
            if not page.get("has_more") or not items:
                return
            params = {"limit": limit, "starting_after": items[-1].get("id")}

    def error(self, response: httpx.Response) -> Exception:
        """The project error for a non-2xx response."""
        where = _where(response.request.method, str(response.request.url))
        status = response.status_code
        detail = _describe(response)
        message = f"{where}: HTTP {status}{detail}"
        should_retry = response.headers.get("Stripe-Should-Retry", "").lower()
        if status == 429 or status >= 500 or should_retry == "true":
            return TransientError(message, retry_after=self._retry_after(response))
        if status == 404:
            return NotFoundError(message)
        return PermanentError(message)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - self._now()).total_seconds())


def _where(method: str, url: str) -> str:
    return f"Stripe {method} {urlsplit(url).path}"


def _json_body(response: httpx.Response, where: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        # Treated like a lost response: the request may have been applied.
        raise NoResponseError(f"{where}: HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise PermanentError(f"{where}: expected a JSON object")
    return body


def _items(page: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = page.get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _describe(response: httpx.Response) -> str:
    """` type/code: message [request req_…]`, with Stripe's message only if it looks safe."""
    parts = []
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if isinstance(error, dict):
        kind = "/".join(str(error[k]) for k in ("type", "code") if error.get(k))
        if kind:
            parts.append(f" {kind}")
        text = str(error.get("message") or "")[:300]
        if text and secret_lookalike(text) is None:
            parts.append(f": {text}")
    request_id = response.headers.get("Request-Id")
    if request_id and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", request_id):
        parts.append(f" [request {request_id}]")
    return "".join(parts)
