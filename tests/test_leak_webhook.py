"""`POST /webhooks/leak` on a real daemon (contract §7), against OpenBao and
moto: a bad or missing signature is 401 and changes nothing; a signed report
of the live value logs credential.leaked (source webhook) and rotates with
revoke-now; a repeated delivery is acted on once; an unknown value is 202
matched: false; the setting without its secret is a settings error."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from typing import Any

import requests

from aws_world import AwsWorld
from helpers import DaemonProcess, run_rotator

HOOK_SECRET = "leak-hook-test-signing-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(url: str, report: dict[str, Any], *, secret: str | None = HOOK_SECRET, delivery: str | None = None,
         signature: str | None = None) -> requests.Response:
    body = json.dumps(report).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Rotator-Signature"] = signature or hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if delivery:
        headers["X-Rotator-Delivery"] = delivery
    return requests.post(url, data=body, headers=headers, timeout=30)


def count(events: list[dict[str, Any]], name: str) -> int:
    return sum(1 for e in events if e["event"] == name)


def test_signed_leak_reports_rotate_once_and_unsigned_ones_change_nothing(aws_world: AwsWorld) -> None:
    """401 for a bad or missing signature (state, live path and key untouched); a signed report of
    the live value: 202 matched, credential.leaked (webhook), the old key rejected at once; the same
    delivery again: acknowledged, not acted on; an unknown value: 202 matched false."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    live, meta = w.live()
    assert live is not None
    w.bao.secrets.kv.v2.create_or_update_secret(path="hooks/leak", mount_point="secret", secret={"hmac": HOOK_SECRET})
    w.ledger.add(HOOK_SECRET)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/leak"
    daemon = DaemonProcess({**w.env, "ROTATOR_WEBHOOK_ADDR": f"127.0.0.1:{port}", "ROTATOR_LEAK_WEBHOOK_SECRET": "secret/hooks/leak#hmac",
                            "ROTATOR_TICK_SECONDS": "1"})
    try:
        daemon.wait_for(lambda ev: count(ev, "daemon.state_loaded") == 1, what="daemon.state_loaded")
        state_before = w.state()
        report = {"value": live["secret_access_key"]}
        assert post(url, report, secret=None).status_code == 401
        assert post(url, report, secret="not-the-secret").status_code == 401
        assert post(url, report, signature="sha256=" + "0" * 64).status_code == 401
        assert w.state() == state_before and w.live()[1]["current_version"] == meta["current_version"]
        assert w.works(live)
        assert count(daemon.events(), "credential.leaked") == 0

        answer = post(url, report, delivery="d-1")
        assert answer.status_code == 202, answer.text
        assert answer.json()["matched"] is True and answer.json()["key_ids"] == [live["access_key_id"]]
        events = daemon.wait_for(lambda ev: count(ev, "rotation.completed") == 1 and count(ev, "credential.revoked") == 1,
                                 what="the leak rotation")
        leak = next(e for e in events if e["event"] == "credential.leaked")
        assert leak["key_id"] == live["access_key_id"] and leak["source"] == "webhook" and leak["credential"] == w.name
        assert not w.works(live), "the leaked key still authenticates"
        new, _ = w.live()
        assert new is not None and w.works(new)

        again = post(url, report, delivery="d-1")
        assert again.status_code == 200 and again.json()["duplicate"] is True
        unknown = post(url, {"sha256": hashlib.sha256(b"nothing we manage").hexdigest()}, delivery="d-2")
        assert unknown.status_code == 202 and unknown.json() == {"matched": False}
        assert post(url, {"neither": 1}).status_code == 400
        assert requests.get(f"http://127.0.0.1:{port}/webhooks/leak", timeout=10).status_code == 405
        state = w.state()
        assert state is not None and state["rotations"] == 2
        assert count(daemon.events(), "credential.leaked") == 1
        assert answer.text.find(live["secret_access_key"]) < 0
    finally:
        code = daemon.stop()
        w.ledger.capture("daemon output", daemon.output())
    assert code == 0


def test_webhook_addr_without_its_secret_is_a_settings_error(rotator_env: dict[str, str]) -> None:
    """ROTATOR_WEBHOOK_ADDR alone: exit 2, naming ROTATOR_LEAK_WEBHOOK_SECRET; a malformed ref or address too."""
    for extra, named in (({"ROTATOR_WEBHOOK_ADDR": "127.0.0.1:9"}, "ROTATOR_LEAK_WEBHOOK_SECRET"),
                         ({"ROTATOR_WEBHOOK_ADDR": "127.0.0.1:9", "ROTATOR_LEAK_WEBHOOK_SECRET": "no-field"}, "ROTATOR_LEAK_WEBHOOK_SECRET"),
                         ({"ROTATOR_WEBHOOK_ADDR": "nowhere", "ROTATOR_LEAK_WEBHOOK_SECRET": "secret/h#k"}, "ROTATOR_WEBHOOK_ADDR")):
        result = run_rotator(["run", "--once"], {**rotator_env, **extra}, timeout=60)
        assert result.returncode == 2, result.stderr
        assert named in result.stderr
