"""`POST /webhooks/leak` on `ROTATOR_WEBHOOK_ADDR` (contract §7): leak
reports from scanners and SIEMs, answered by the running daemon.

Invariants:
- the signature (HMAC-SHA256, hex, of the raw body, in `X-Rotator-Signature`,
  keyed by the secret at `ROTATOR_LEAK_WEBHOOK_SECRET`) is checked before
  anything else, in constant time; a bad or missing one is 401 and nothing
  is read, logged (but the refusal) or changed;
- a delivery id (`X-Rotator-Delivery`) seen before is acknowledged again
  and acted on once; a delivery that failed on our side (Vault down: 503)
  is forgotten, so the sender's retry is acted on;
- the leaked value is never logged or answered: the answer names only the
  matched credentials and key ids;
- rotations go through the daemon (`Daemon.request_rotation`), after any
  reconcile of the same credential in flight, never beside it; the answer
  (202) does not wait for them;
- the listener is bounded like the metrics port (rotator.daemon.listener).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from rotator.audit.events import get_logger, register_secret
from rotator.core.actions import Request
from rotator.core.errors import RotatorError
from rotator.daemon.listener import BoundedHTTPServer, QuietHandler, serve
from rotator.engine import leak

if TYPE_CHECKING:
    from rotator.daemon.loop import Daemon

PATH = "/webhooks/leak"
MAX_BODY = leak.MAX_VALUE_BYTES + 1024
SECRET_TTL = 300.0  # the signing secret is read again from Vault this often (it may be rotated)
DELIVERIES_KEPT = 4096


class SigningSecret:
    """The HMAC key from Vault, cached; a failed re-read keeps the last one."""

    def __init__(self, read: Callable[[], str], *, ttl: float = SECRET_TTL) -> None:
        self._read = read
        self._ttl = ttl
        self._value: bytes | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()
        self.get()  # at start: a missing secret stops the daemon from starting

    def get(self) -> bytes:
        with self._lock:
            if self._value is None or time.monotonic() - self._read_at >= self._ttl:
                try:
                    value = self._read()
                except RotatorError:
                    if self._value is None:
                        raise
                    get_logger().warning("leak.webhook_secret_unreadable", error="kept the last secret read")
                else:
                    register_secret(value)
                    self._value, self._read_at = value.encode(), time.monotonic()
            assert self._value is not None
            return self._value


def is_signed(secret: bytes, body: bytes, signature: str | None) -> bool:
    """HMAC-SHA256 hex of the body; `sha256=` in front (GitHub's style) is accepted too."""
    if not signature:
        return False
    given = signature.strip().removeprefix("sha256=").lower()
    return hmac.compare_digest(hmac.new(secret, body, sha256).hexdigest(), given)


class LeakReports:
    """The endpoint's logic, apart from HTTP: (status, JSON answer) per delivery."""

    def __init__(self, daemon: Daemon, secret: SigningSecret) -> None:
        self.daemon = daemon
        self.secret = secret
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def handle(self, body: bytes, *, signature: str | None, delivery: str | None) -> tuple[int, dict[str, Any]]:
        if not is_signed(self.secret.get(), body, signature):
            get_logger().warning("leak.webhook_refused", reason="missing signature" if not signature else "bad signature")
            return 401, {"error": "bad or missing X-Rotator-Signature"}
        key = (delivery or "").strip()[:200]
        if key:
            with self._lock:
                if key in self._seen:
                    return 200, {**self._seen[key], "duplicate": True}
                self._seen[key] = {"matched": None, "status": "in progress"}
                while len(self._seen) > DELIVERIES_KEPT:
                    self._seen.popitem(last=False)
        try:
            status, answer = self._act(body)
        except Exception:
            if key:
                with self._lock:
                    self._seen.pop(key, None)  # not acted on: the sender's retry is
            raise
        if key:
            with self._lock:
                if status >= 500:
                    self._seen.pop(key, None)
                else:
                    self._seen[key] = answer
        return status, answer

    def _act(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            report = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, {"error": "the body is not JSON"}
        digests = _digests(report)
        if digests is None:
            return 400, {"error": 'give {"value": "..."} or {"sha256": "64 hex digits"}'}
        creds = [view.cred for view in list(self.daemon.views.values())]
        try:
            matches = leak.find_matches(self.daemon.engine, creds, digests, concurrency=self.daemon.app.settings.max_concurrency)
        except RotatorError as exc:
            from rotator.audit.events import redact_text

            get_logger().error("leak.lookup_failed", source="webhook", error=redact_text(str(exc)))
            return 503, {"error": "cannot read the state from Vault now; send it again"}
        if not matches:
            return 202, {"matched": False}
        for cred in leak.announce(matches, source="webhook"):
            self.daemon.request_rotation(cred.spec.name, Request(revoke_now=True))
        return 202, {"matched": True, "credentials": sorted({m.cred.spec.name for m in matches}),
                     "key_ids": sorted({m.key_id for m in matches}), "rotation": "started, with revoke-now"}


def _digests(report: Any) -> set[str] | None:
    if not isinstance(report, dict):
        return None
    value, digest = report.get("value"), report.get("sha256")
    if isinstance(value, str) and value and digest is None:
        return leak.digests_of(value)
    if isinstance(digest, str) and value is None:
        try:
            return {leak.parse_digest(digest)}
        except ValueError:
            return None
    return None


def serve_leak_webhook(addr: str, daemon: Daemon, ref: str) -> BoundedHTTPServer:
    """Read the signing secret (a RotatorError if it cannot be read), then serve in a background thread."""
    reports = LeakReports(daemon, SigningSecret(lambda: daemon.app.store.read_ref(ref)))
    return serve(addr, _handler(reports), name="leak-webhook")


def _handler(reports: LeakReports) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != PATH:
                self._send(404, {"error": "not found"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._send(411, {"error": "Content-Length required"})
                return
            if int(length) > MAX_BODY:
                self._send(413, {"error": f"at most {MAX_BODY} bytes"})
                return
            body = self.rfile.read(int(length))
            self.mark_served()
            try:
                status, answer = reports.handle(body, signature=self.headers.get("X-Rotator-Signature"),
                                                delivery=self.headers.get("X-Rotator-Delivery"))
            except Exception as exc:  # a bug: never a traceback, never a value
                get_logger().error("leak.webhook_failed", error=f"unexpected {type(exc).__name__}")
                status, answer = 500, {"error": "internal error"}
            self._send(status, answer)

        def do_GET(self) -> None:  # noqa: N802
            self._send(405 if self.path.split("?")[0] == PATH else 404, {"error": "POST only" if self.path.split("?")[0] == PATH else "not found"})

        def _send(self, status: int, answer: dict[str, Any]) -> None:
            self.send_body(status, json.dumps(answer).encode() + b"\n", "application/json")

    return Handler
