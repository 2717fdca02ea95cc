"""Alerts: which events alert, delivery to a generic webhook and to Slack
against a local HTTP receiver (retry on 5xx, dedup, a full queue that drops
without blocking), and that no secret or webhook URL ever leaks."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotator.compliance import alerts
from rotator.audit import events as audit
from rotator.compliance.alerts import AlertDispatcher, SlackNotifier, WebhookNotifier, should_alert, slack_text
from rotator.wiring import configure_logging, load_settings
from rotator.core.clock import FakeClock
from rotator.core.errors import ConfigError
from rotator.engine.retry import RetryPolicy
from rotator.config.settings import Settings

FAST = RetryPolicy(max_attempts=5, max_seconds=10.0, initial_wait=0.01, max_wait=0.05)
SLACK_PATH = "/services/T0001/B0002/hooktoken0123456789abcd"


class Receiver:
    """A local webhook endpoint: records posts, fails the first N per path, can hold requests."""

    def __init__(self) -> None:
        self.fail_first: dict[str, int] = {}
        self.status_for: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.posts: list[tuple[str, Any]] = []
        self.hold = threading.Event()
        self.arrived = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                receiver.arrived.set()
                receiver.hold.wait(10)
                with receiver.lock:
                    n = receiver.attempts[self.path] = receiver.attempts.get(self.path, 0) + 1
                    status = receiver.status_for.get(self.path, 500 if n <= receiver.fail_first.get(self.path, 0) else 200)
                    if status == 200:
                        receiver.posts.append((self.path, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for p, body in self.posts if p == path]

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    audit.configure(fmt="json")  # back to stdout, no alert sink


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _dispatcher(receiver: Receiver, output: io.StringIO, **options: Any) -> AlertDispatcher:
    notifiers = [WebhookNotifier(receiver.url("/hook")), SlackNotifier(receiver.url(SLACK_PATH))]
    dispatcher = AlertDispatcher(notifiers, policy=FAST, **options)
    audit.configure(fmt="json", stream=output, alert_sink=dispatcher)
    return dispatcher


def _final_failure(**fields: Any) -> None:
    audit.get_logger(credential="ci", provider="aws.iam_access_key", rotation_id="r-1").error(
        "rotation.failed", step="promote", error="someone else wrote the live path", will_retry=False, next_attempt_at=None, **fields)


def _unused(key_id: str, credential: str = "ci") -> None:
    audit.get_logger(credential=credential, provider="aws.iam_access_key").warning(
        "credential.unused", key_id=key_id, last_used=None, live=True, unused_after="7d")


# -- pure -------------------------------------------------------------------------------


def test_only_final_failures_and_findings_alert() -> None:
    """A failure that will be retried is not an alert; a final one and every finding are."""
    assert should_alert({"event": "rotation.failed", "will_retry": False})
    assert not should_alert({"event": "rotation.failed", "will_retry": True})
    for event in ("credential.unused", "credential.unmanaged", "credential.overdue"):
        assert should_alert({"event": event})
    for event in ("rotation.completed", "credential.revoked", "alert.failed", "orphan.revoked"):
        assert not should_alert({"event": event})


def test_slack_text_names_the_credential_and_escapes_markup() -> None:
    """The Slack line says what happened to which credential, with <, > and & escaped."""
    text = slack_text({"event": "rotation.failed", "credential": "ci", "provider": "aws.iam_access_key", "step": "verify",
                       "error": "<b>denied</b> & gone", "will_retry": False})
    assert "`ci`" in text and "verify" in text and "will not be retried" in text
    assert "&lt;b&gt;denied&lt;/b&gt; &amp; gone" in text
    assert "never used" in slack_text({"event": "credential.unused", "credential": "ci", "key_id": "AKIA1", "last_used": None})


# -- delivery -----------------------------------------------------------------------------


def test_a_final_failure_is_retried_until_both_receivers_accept_it(receiver: Receiver, output: io.StringIO) -> None:
    """Two 500s then 200: the JSON webhook gets the event, Slack gets a text, each exactly once."""
    receiver.fail_first = {"/hook": 2, SLACK_PATH: 2}
    dispatcher = _dispatcher(receiver, output)
    _final_failure()
    assert dispatcher.flush(10)
    (hook,) = receiver.bodies("/hook")
    assert hook["event"] == "rotation.failed" and hook["credential"] == "ci" and hook["will_retry"] is False
    assert hook["step"] == "promote" and hook["rotation_id"] == "r-1" and hook["timestamp"].endswith("Z")
    (slack,) = receiver.bodies(SLACK_PATH)
    assert set(slack) == {"text"} and "`ci`" in slack["text"] and "promote" in slack["text"]
    assert receiver.attempts == {"/hook": 3, SLACK_PATH: 3}
    sent = [e for e in _events(output) if e["event"] == "alert.sent"]
    assert sorted((e["notifier"], e["attempts"]) for e in sent) == [("slack", 3), ("webhook", 3)]
    dispatcher.close()


def test_the_same_alert_is_sent_once_per_window(receiver: Receiver, output: io.StringIO) -> None:
    """Same event, credential and key within the window: one post; another key or a later window: another."""
    clock = FakeClock()
    dispatcher = _dispatcher(receiver, output, clock=clock, dedup_window=timedelta(hours=1))
    _unused("AKIA1")
    _unused("AKIA1")
    _unused("AKIA2")
    _unused("AKIA1", credential="other")
    audit.get_logger(credential="ci").error("rotation.failed", step="issue", error="throttled", will_retry=True, next_attempt_at=None)
    assert dispatcher.flush(10)
    assert [(b["credential"], b["key_id"]) for b in receiver.bodies("/hook")] == [("ci", "AKIA1"), ("ci", "AKIA2"), ("other", "AKIA1")]
    clock.advance(timedelta(minutes=59))
    _unused("AKIA1")
    clock.advance(timedelta(minutes=2))
    _unused("AKIA1")
    assert dispatcher.flush(10)
    assert len(receiver.bodies("/hook")) == 4 and len(receiver.bodies(SLACK_PATH)) == 4
    dispatcher.close()


def test_a_full_queue_drops_with_a_warning_and_never_blocks_the_caller(receiver: Receiver, output: io.StringIO) -> None:
    """With the receiver stuck, logging stays instant; what does not fit is dropped and said so."""
    receiver.hold.clear()
    dispatcher = AlertDispatcher([WebhookNotifier(receiver.url("/hook"))], policy=FAST, queue_size=1)
    audit.configure(fmt="json", stream=output, alert_sink=dispatcher)
    _unused("K1")
    assert receiver.arrived.wait(10), "the worker is now stuck delivering K1"
    started = time.monotonic()
    for key in ("K2", "K3", "K4"):
        _unused(key)
    assert time.monotonic() - started < 0.5
    dropped = [e for e in _events(output) if e["event"] == "alert.dropped"]
    assert [e["key_id"] for e in dropped] == ["K3", "K4"] and dropped[0]["level"] == "warning"
    receiver.hold.set()
    assert dispatcher.flush(10)
    assert [b["key_id"] for b in receiver.bodies("/hook")] == ["K1", "K2"]
    _unused("K3")  # a dropped alert was not remembered, so it can still go out
    assert dispatcher.flush(10)
    assert [b["key_id"] for b in receiver.bodies("/hook")] == ["K1", "K2", "K3"]
    dispatcher.close()


def test_alerts_carry_no_secret_and_failures_never_name_the_webhook_url(receiver: Receiver, output: io.StringIO) -> None:
    """A secret in an error is masked before it is sent; a refused delivery is logged without the URL's token."""
    secret = "wJalrXUtnFEMI0K7MDENG0bPxRfiCYzEXAMPLEKEY"
    audit.register_secret(secret)
    receiver.status_for = {SLACK_PATH: 404}
    dispatcher = _dispatcher(receiver, output)
    _final_failure(detail=f"the key {secret} was refused")
    assert dispatcher.flush(10)
    (hook,) = receiver.bodies("/hook")
    assert secret not in json.dumps(hook) and "[REDACTED]" in hook["detail"]
    (failed,) = [e for e in _events(output) if e["event"] == "alert.failed"]
    assert failed["notifier"] == "slack" and failed["attempts"] == 1 and "404" in failed["error"]
    assert receiver.attempts[SLACK_PATH] == 1, "a 4xx is not retried"
    assert "hooktoken" not in output.getvalue() and secret not in output.getvalue()
    dispatcher.close()


# -- settings and wiring -------------------------------------------------------------------


def test_webhook_urls_must_be_https_except_loopback_and_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """http:// to a remote host is refused, without quoting the URL; https and loopback http are accepted."""
    monkeypatch.setenv("ROTATOR_ALERT_SLACK_WEBHOOK_URL", "http://hooks.example.com/services/T1/B1/sekrit-token-value")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "sekrit" not in str(caught.value) and "ALERT_SLACK_WEBHOOK_URL" in str(caught.value)
    monkeypatch.delenv("ROTATOR_ALERT_SLACK_WEBHOOK_URL")
    ok = Settings(alert_webhook_url="https://alerts.example.com/rotator", alert_slack_webhook_url="http://127.0.0.1:9/x")
    assert ok.alert_webhook_url == "https://alerts.example.com/rotator"
    assert "alerts.example.com" not in repr(ok)
    assert alerts.notifiers_from(Settings()) == []


def test_configure_logging_wires_alerts_from_the_settings(receiver: Receiver, output: io.StringIO) -> None:
    """The settings' webhook gets final failures logged anywhere in the process."""
    settings = Settings(alert_webhook_url=receiver.url("/hook"), log_format="json")
    configure_logging(settings, stream=output, with_audit_file=False)
    dispatcher = alerts._installed
    assert dispatcher is not None
    _final_failure()
    assert dispatcher.flush(10)
    assert [b["event"] for b in receiver.bodies("/hook")] == ["rotation.failed"]
    dispatcher.close()


def test_a_short_lived_rotate_delivers_its_final_failure_before_it_exits(receiver: Receiver, tmp_path: Path) -> None:
    """`rotator rotate` with Vault down fails for good, alerts, and the alert is delivered at exit."""
    from helpers import run_rotator, write_credential

    write_credential(tmp_path, "ci", params={"user_name": "ci"})
    env = {"VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "unused-token", "ROTATOR_CONFIG_DIR": str(tmp_path),
           "ROTATOR_LOG_FORMAT": "json", "ROTATOR_ALERT_WEBHOOK_URL": receiver.url("/hook")}
    result = run_rotator(["rotate", "ci"], env, timeout=60)
    assert result.returncode == 1
    (alert,) = receiver.bodies("/hook")
    assert alert["event"] == "rotation.failed" and alert["will_retry"] is False and alert["credential"] == "ci"
    assert '"event": "alert.sent"' in result.stdout and receiver.url("/hook") not in result.stdout + result.stderr
