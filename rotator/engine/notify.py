"""Consumer notices (contract §4 `notify`): after each promotion, POST a
signed JSON notice to each of the credential's webhooks, so consumers
reload the live credential instead of waiting for their next poll.

Invariants:
- a notice never blocks or fails a rotation: `promoted()` only queues (a
  full queue drops the notice with a warning); one background thread
  delivers, retrying transient failures (network, 5xx, 408, 429) with
  backoff, and logs `consumer.notified` with the outcome;
- the body holds no secret value: `event`, `credential`, `vault_path`,
  `vault_version`, `key_id`, `rotation_id`, `timestamp`. It is signed with
  HMAC-SHA256 under the key at the target's Vault ref; the hex digest of the
  exact body bytes goes in `X-Rotator-Signature`. Without the key, nothing
  is sent (never an unsigned notice);
- events name the target by scheme and host only (a URL path may carry a
  token); the signing key is registered as a secret and never logged;
- delivery is at least once: a rotation recovered after a crash between
  promotion and its record may notify again, with the same
  `X-Rotator-Delivery` id, so receivers can drop the repeat.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from rotator import __version__
from rotator.audit.events import get_logger, register_secret
from rotator.config.spec import CredentialSpec, NotifyTarget
from rotator.core.clock import to_rfc3339
from rotator.core.errors import RotatorError, TransientError
from rotator.engine.retry import RetryPolicy, call_with_retry
from rotator.engine.webhooks import check_status, drain, shut_down, work_through

EVENT = "credential.rotated"
SIGNATURE_HEADER = "X-Rotator-Signature"
DELIVERY_HEADER = "X-Rotator-Delivery"
# About 8 s of retrying per target: long enough for a receiver restarting,
# short enough that a `rotator rotate` exits soon after its rotation.
NOTIFY_RETRY = RetryPolicy(max_attempts=5, max_seconds=20.0, initial_wait=0.5, max_wait=4.0, max_retry_after=10.0)
QUEUE_SIZE = 1024
# Besides 5xx: a receiver timing out or rate limiting is asked again.
RETRYABLE = frozenset({408, 429})


@dataclass(frozen=True)
class Notice:
    credential: str
    provider: str
    rotation_id: str
    target: NotifyTarget
    delivery_id: str
    body: bytes


def target_label(url: str) -> str:
    """Scheme and host only: a webhook's path or port is not for the logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"


def sign(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def notice_body(spec: CredentialSpec, *, key_id: str, vault_version: int, rotation_id: str, at: datetime) -> bytes:
    document = {
        "event": EVENT, "credential": spec.name, "vault_path": f"{spec.vault.mount}/{spec.vault.path}",
        "vault_version": vault_version, "key_id": key_id, "rotation_id": rotation_id, "timestamp": to_rfc3339(at),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class Notifier:
    """Queues notices and delivers them on one background thread."""

    def __init__(self, read_secret: Callable[[str], str], *, policy: RetryPolicy = NOTIFY_RETRY, timeout: float = 5.0) -> None:
        self._read_secret = read_secret
        self._policy = policy
        self._timeout = timeout
        self._queue: queue.Queue[Notice | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def promoted(self, spec: CredentialSpec, *, key_id: str, vault_version: int, rotation_id: str, at: datetime) -> None:
        """Queue one notice per webhook of `spec`. Never blocks, never raises."""
        if not spec.notify or self._stop.is_set():
            return
        body = notice_body(spec, key_id=key_id, vault_version=vault_version, rotation_id=rotation_id, at=at)
        self._start()
        for index, target in enumerate(spec.notify):
            notice = Notice(spec.name, spec.provider, rotation_id, target, f"{rotation_id}.{index}", body)
            try:
                self._queue.put_nowait(notice)
            except queue.Full:
                get_logger(credential=spec.name, provider=spec.provider, rotation_id=rotation_id).warning(
                    "consumer.notified", target=target_label(target.webhook), status="dropped", attempts=0,
                    error="notice queue full")

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._client = httpx.Client(timeout=self._timeout, follow_redirects=False,
                                            headers={"User-Agent": f"rotator/{__version__}"})
                self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def _run(self) -> None:
        work_through(self._queue, self._deliver, _report_bug)

    def _deliver(self, notice: Notice) -> None:
        log = get_logger(credential=notice.credential, provider=notice.provider, rotation_id=notice.rotation_id)
        target = target_label(notice.target.webhook)
        try:
            key = self._read_secret(notice.target.signing_key)
        except RotatorError as exc:
            log.error("consumer.notified", target=target, status="not_sent", attempts=0, error=f"signing key unreadable: {exc}")
            return
        register_secret(key)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(key, notice.body),
                   DELIVERY_HEADER: notice.delivery_id, "X-Rotator-Event": EVENT}
        attempts, status = 0, None

        def send() -> None:
            nonlocal attempts, status
            attempts += 1
            assert self._client is not None
            try:
                response = self._client.post(notice.target.webhook, content=notice.body, headers=headers)
            except httpx.TransportError as exc:
                status = None
                raise TransientError(f"unreachable ({type(exc).__name__})") from None
            status = response.status_code
            check_status(response, retryable=RETRYABLE)

        try:
            call_with_retry(send, policy=self._policy, shutdown=self._stop)
        except RotatorError as exc:
            log.warning("consumer.notified", target=target, status=status, outcome="failed", attempts=attempts, error=str(exc))
        else:
            log.info("consumer.notified", target=target, status=status, outcome="delivered", attempts=attempts)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued notice was delivered or given up; False on timeout."""
        return drain(self._queue, timeout)

    def close(self, timeout: float = 25.0) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        if self._thread is None or self._stop.is_set():
            return
        shut_down(self._queue, self._stop, self._thread, timeout)
        if self._client is not None:
            self._client.close()


def _report_bug(_notice: Notice, exc: Exception) -> None:
    get_logger().error("consumer.notified", status="failed", attempts=0, error=f"unexpected {type(exc).__name__}")
