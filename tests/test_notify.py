"""Consumer notices (contract §4 `notify`), through the real CLI against
OpenBao and moto: a local receiver gets one signed notice per promotion
(checked with the key from Vault), a receiver that is down neither delays
nor fails the rotation, and the documented example receivers verify the
signature before they reload anything."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aws_world import AwsWorld
from helpers import write_credential
from rotator.core.clock import parse_rfc3339
from rotator.config.loader import load_directory
from rotator.engine.registry import load_providers
from rotator.sandbox.services import free_port

REPO = Path(__file__).resolve().parent.parent
HOOK_KEY = "hook-signing-key-for-tests-0123456789"  # a test value, seeded in the dev OpenBao


@dataclass
class Receiver:
    """A consumer's webhook: answers `statuses` in turn (then 204) and records each request."""

    statuses: list[int] = field(default_factory=list)
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rotated"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(statuses=[503])  # restarting at first: the notice is retried
    yield r
    r.close()


def test_a_notice_reaches_the_receiver_signed_and_a_dead_receiver_costs_the_rotation_nothing(aws_world: AwsWorld, receiver: Receiver, unique: str) -> None:
    """One signed notice per promotion, no secret in it; the down target fails alone, after the rotation completed."""
    w = aws_world
    w.bao.secrets.kv.v2.create_or_update_secret(path=f"hooks-{unique}", mount_point="secret", secret={"hmac": HOOK_KEY})
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    write_credential(Path(w.env["ROTATOR_CONFIG_DIR"]), w.name, params={"user_name": w.user, "delete_after_deactivation": "0s"},
                     grace="2s", path=w.live_path, notify=[{"webhook": down, "signing_key": f"secret/hooks-{unique}#hmac"},
                                                           {"webhook": receiver.url, "signing_key": f"secret/hooks-{unique}#hmac"}])
    started = time.monotonic()
    code, events = w.cli("rotate", w.name, extra_env={"ROTATOR_ALLOW_LOOPBACK_HTTP": "true"})
    elapsed = time.monotonic() - started
    assert code == 0, events
    data, meta = w.live()
    assert data is not None and w.works(data)

    names = [e["event"] for e in events]
    completed = names.index("rotation.completed")
    notified = [e for e in events if e["event"] == "consumer.notified"]
    assert len(notified) == 2 and all(names.index("consumer.notified") > completed for _ in notified)
    by_outcome = {e["outcome"]: e for e in notified}
    assert by_outcome["delivered"]["target"] == "http://127.0.0.1" and by_outcome["delivered"]["status"] == 204
    assert by_outcome["delivered"]["attempts"] == 2, "the 503 was retried"
    failed = by_outcome["failed"]
    assert failed["target"] == "http://127.0.0.1" and failed["status"] is None and failed["attempts"] >= 2 and failed["level"] == "warning"
    assert "nobody-listens" not in json.dumps(events), "events name the target by scheme and host only"
    # The rotation was done before the dead receiver was given up on: it did not wait for it.
    assert parse_rfc3339(events[completed]["timestamp"]) <= parse_rfc3339(failed["timestamp"])
    assert events[completed]["duration_ms"] < 15000 and elapsed < 60

    assert len(receiver.seen) == 2  # the 503, then the delivery
    headers, body = receiver.seen[-1]
    assert hmac.compare_digest(headers["x-rotator-signature"], hmac.new(HOOK_KEY.encode(), body, hashlib.sha256).hexdigest())
    assert receiver.seen[0][0]["x-rotator-delivery"] == headers["x-rotator-delivery"], "a retry is the same delivery"
    notice = json.loads(body)
    state = w.state()
    assert notice == {
        "event": "credential.rotated", "credential": w.name, "vault_path": f"secret/{w.live_path}",
        "vault_version": meta["current_version"], "key_id": data["access_key_id"],
        "rotation_id": state["current"]["rotation_id"], "timestamp": notice["timestamp"],
    }
    assert data["secret_access_key"] not in body.decode() and HOOK_KEY not in json.dumps(events)
    assert state["pending"] is None and state["attempts"] == 0


@pytest.mark.parametrize(
    ("target", "field", "message"),
    [
        ({"webhook": "http://deploy.example.com/hook", "signing_key": "secret/h#k"}, "notify.0.webhook", "https"),
        ({"webhook": "https://deploy.example.com/hook", "signing_key": "not-a-ref"}, "notify.0.signing_key", "MOUNT/PATH#FIELD"),
        ({"webhook": "https://deploy.example.com/hook"}, "notify.0.signing_key", "required"),
        ({"url": "https://deploy.example.com/hook", "signing_key": "secret/h#k"}, "notify.0.url", "unknown key"),
    ],
)
def test_a_bad_notify_target_is_a_clear_error(tmp_path: Path, target: dict[str, str], field: str, message: str) -> None:
    """Notify URLs follow the API-URL rule (any host); the key is a Vault ref."""
    write_credential(tmp_path, "n", params={"user_name": "u"}, notify=[target])
    problems = load_directory(tmp_path, load_providers()).problems
    assert field in [p.field for p in problems], problems
    assert message in next(p.message for p in problems if p.field == field)


@pytest.mark.parametrize(("script", "argv", "tool", "expected"), [
    ("systemd_receiver.py", ["myapp.service"], "systemctl", "reload myapp.service"),
    ("k8s_receiver.py", ["payments/api"], "kubectl", "-n payments rollout restart deployment/api"),
])
def test_the_documented_receivers_check_the_signature_then_reload(tmp_path: Path, script: str, argv: list[str], tool: str, expected: str) -> None:
    """docs' example receivers: a bad signature is 401 and runs nothing; a good one runs the reload."""
    import httpx

    assert (REPO / "examples" / "notify" / script).read_text() in (REPO / "docs" / "OPERATIONS.md").read_text(), "the docs show this file"

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / tool
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n')
    fake.chmod(0o755)
    key_file = tmp_path / "hook.key"
    key_file.write_text(HOOK_KEY + "\n")
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOOK_KEY_FILE": str(key_file)}
    proc = subprocess.Popen([sys.executable, str(REPO / "examples" / "notify" / script), *argv, str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = json.dumps({"event": "credential.rotated", "credential": "ci", "vault_version": 7}).encode()
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                bad = httpx.post(url, content=body, headers={"X-Rotator-Signature": "0" * 64}, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert bad.status_code == 401 and not calls.exists()
        good = httpx.post(url, content=body, headers={"X-Rotator-Signature": hmac.new(HOOK_KEY.encode(), body, hashlib.sha256).hexdigest()}, timeout=5)
        assert good.status_code == 204
        assert calls.read_text().strip() == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)
