"""Alerts: final rotation failures and compliance findings, pushed to a
generic JSON webhook and/or a Slack incoming webhook (docs/COMPLIANCE.md).

The dispatcher is a structlog processor placed after redaction (see
`rotator.audit.events.configure(alert_sink=...)`), so an alert is built from the
event exactly as it is logged.

Invariants:
- alerting events: `rotation.failed` with `will_retry` false (final),
  `credential.overdue`, `credential.unused`, `credential.unmanaged`,
  `revocation.held` and `revocation.forced`;
- an alert never carries more than the log line does, and the log line
  never carries a secret value; webhook URLs are secrets themselves (a
  Slack URL holds a token), so they are registered for masking and never
  put in a message;
- the caller (a rotation logging an event) never waits: the queue is
  bounded, and when it is full the alert is dropped with a logged warning;
- one alert per (event, credential, key_id) within the dedup window;
- deliveries run on one background thread, each retried with backoff on
  transient failures (5xx, 429, network) through `rotator.engine.retry`; a final
  failure is logged (`alert.failed`), never raised.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from rotator import __version__
from rotator.audit.events import get_logger, register_secret
from rotator.core.clock import Clock, SystemClock
from rotator.core.errors import RotatorError, TransientError
from rotator.engine.retry import RetryPolicy, call_with_retry
from rotator.engine.webhooks import check_status, drain, shut_down, work_through

if TYPE_CHECKING:
    from rotator.config.settings import Settings

FINDING_EVENTS = frozenset({"credential.overdue", "credential.unused", "credential.unmanaged"})
# Usage-aware revocation (contract §6.10): a key still in use past grace, and
# one revoked anyway after max_wait.
USAGE_EVENTS = frozenset({"revocation.held", "revocation.forced"})
# A delivery keeps trying for about two minutes before it is given up.
ALERT_RETRY = RetryPolicy(max_attempts=6, max_seconds=120.0, initial_wait=1.0, max_wait=30.0, max_retry_after=60.0)
QUEUE_SIZE = 256
DedupKey = tuple[str, str | None, str | None]


def should_alert(event: Mapping[str, Any]) -> bool:
    """Whether this logged event is worth waking someone for."""
    name = event.get("event")
    if name == "rotation.failed":
        return event.get("will_retry") is False
    return name in FINDING_EVENTS or name in USAGE_EVENTS


def dedup_key(event: Mapping[str, Any]) -> DedupKey:
    return (str(event.get("event")), _opt(event.get("credential")), _opt(event.get("key_id")))


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _slack_escape(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: Mapping[str, Any]) -> str:
    """One human line for Slack, from the (already redacted) event."""
    e = {k: _slack_escape(v) for k, v in event.items()}
    who = f"`{e.get('credential', '?')}` ({e.get('provider', '?')})"
    name = event.get("event")
    if name == "rotation.failed":
        text = f":x: rotation of {who} failed at step `{e.get('step', '?')}` and will not be retried: {e.get('error', '')}"
    elif name == "credential.overdue":
        text = f":alarm_clock: {who} is overdue for rotation: due {e.get('due_at', '?')}, last rotated {e.get('last_rotated_at', 'never')}"
    elif name == "credential.unused":
        used = f"last used {e['last_used']}" if event.get("last_used") else "never used"
        text = f":warning: key `{e.get('key_id', '?')}` of {who} looks unused ({used})"
    elif name == "revocation.held":
        text = f":hourglass: revocation of key `{e.get('key_id', '?')}` of {who} is held: still in use (last used {e.get('last_used', '?')}); " \
               f"revoked anyway after {e.get('max_wait_until', '?')}"
    elif name == "revocation.forced":
        text = f":rotating_light: key `{e.get('key_id', '?')}` of {who} was revoked while still in use (last used {e.get('last_used', '?')}): max_wait passed"
    elif name == "credential.unmanaged":
        text = f":warning: key `{e.get('key_id', '?')}` in the scope of {who} was not made by the rotator"
    else:
        text = f"{e.get('event', '?')} for {who}"
    return f"rotator: {text}"


class Notifier(Protocol):
    name: str

    def send(self, event: Mapping[str, Any]) -> None:
        """Deliver one alert; raise `TransientError` to be retried, `PermanentError` not to be."""

    def close(self) -> None: ...


class WebhookNotifier:
    """POSTs the event itself as JSON."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        register_secret(url)  # a path token must never reach a log line
        self._url = url
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": f"rotator/{__version__}"})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(...)"

    def body(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return dict(event)

    def send(self, event: Mapping[str, Any]) -> None:
        try:
            response = self._client.post(self._url, json=self.body(event))
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name} unreachable ({type(exc).__name__})") from None
        check_status(response, retryable=frozenset({429}), label=f"{self.name} answered ")

    def close(self) -> None:
        self._client.close()


class SlackNotifier(WebhookNotifier):
    """A Slack incoming webhook: `{"text": ...}`."""

    name = "slack"

    def body(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": slack_text(event)}


class AlertDispatcher:
    """The alert sink: filters, deduplicates and queues; a thread delivers."""

    def __init__(
        self, notifiers: Sequence[Notifier], *, dedup_window: timedelta = timedelta(hours=1), queue_size: int = QUEUE_SIZE,
        clock: Clock | None = None, policy: RetryPolicy = ALERT_RETRY,
    ) -> None:
        self.notifiers = list(notifiers)
        self.dedup_window = dedup_window
        self.clock = clock or SystemClock()
        self.policy = policy
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._seen: OrderedDict[DedupKey, datetime] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    # -- the structlog side: never blocks ------------------------------------------

    def __call__(self, event: dict[str, Any]) -> None:
        if getattr(self._local, "busy", False) or self._stop.is_set() or not should_alert(event):
            return
        key, now = dedup_key(event), self.clock.now()
        with self._lock:
            self._forget_before(now - self.dedup_window)
            if key in self._seen:
                return
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._dropped(event)
                return
            self._seen[key] = now

    def _forget_before(self, cutoff: datetime) -> None:
        while self._seen and next(iter(self._seen.values())) <= cutoff:
            self._seen.popitem(last=False)

    def _dropped(self, event: Mapping[str, Any]) -> None:
        self._local.busy = True
        try:
            get_logger().warning("alert.dropped", reason="alert queue full", alert_event=event.get("event"),
                              credential=event.get("credential"), key_id=event.get("key_id"))
        finally:
            self._local.busy = False

    # -- the delivery thread -----------------------------------------------------------

    def _run(self) -> None:
        work_through(self._queue, self._deliver, _report_bug)

    def _deliver(self, event: Mapping[str, Any]) -> None:
        for notifier in self.notifiers:
            attempts = 0

            def send(n: Notifier = notifier) -> None:
                nonlocal attempts
                attempts += 1
                n.send(event)

            try:
                call_with_retry(send, policy=self.policy, clock=self.clock, shutdown=self._stop)
            except RotatorError as exc:
                get_logger().warning("alert.failed", notifier=notifier.name, alert_event=event.get("event"),
                                  credential=event.get("credential"), attempts=attempts, error=str(exc))
            else:
                get_logger().info("alert.sent", notifier=notifier.name, alert_event=event.get("event"),
                               credential=event.get("credential"), attempts=attempts)

    # -- lifecycle ------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        return drain(self._queue, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        if self._stop.is_set():
            return
        shut_down(self._queue, self._stop, self._thread, timeout)
        for notifier in self.notifiers:
            notifier.close()


def _report_bug(event: Mapping[str, Any], exc: Exception) -> None:
    get_logger().error("alert.failed", notifier="dispatcher", alert_event=str(event and event.get("event")),
                       error=f"unexpected {type(exc).__name__}")


def notifiers_from(settings: Settings) -> list[Notifier]:
    out: list[Notifier] = []
    if settings.alert_webhook_url:
        out.append(WebhookNotifier(settings.alert_webhook_url))
    if settings.alert_slack_webhook_url:
        out.append(SlackNotifier(settings.alert_slack_webhook_url))
    return out


_installed: AlertDispatcher | None = None
_installed_lock = threading.Lock()


def install(settings: Settings) -> AlertDispatcher | None:
    """The process's dispatcher for these settings (None when no URL is set).

    Replaces (and closes) one installed before. Queued alerts get up to 10 s
    at exit, so a short `rotator rotate` still delivers its final failure.
    """
    global _installed
    notifiers = notifiers_from(settings)
    dispatcher = AlertDispatcher(notifiers, dedup_window=timedelta(seconds=settings.alert_dedup_seconds)) if notifiers else None
    with _installed_lock:
        previous, _installed = _installed, dispatcher
    if previous is not None:
        previous.close(timeout=0.0)
    if dispatcher is not None:
        atexit.register(dispatcher.close)
    return dispatcher
