"""Redaction that holds, end to end (issue 11, item 6): a vendor that echoes
secrets back in its error messages, in every encoding, and every output
channel of the real daemon and CLI checked for every registered secret in
every form (rotator.testing.leaks): stdout events, the audit file, alerts,
/metrics, the state records, `status`, `plan`, `report`, and the
exceptions they print.

The secrets pushed through: each minted installation token (echoed when it
is used, and once quoted from inside `issue()`), the deploy-key provider's
own management token, the App JWTs, the App private keys, a new Stripe key
and its management key, and the Vault token."""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hvac
import pytest

from helpers import DaemonProcess, run_rotator
from policy_token import vault_policy_token
from provider_worlds import DEPLOY_KEY, STRIPE_KEY, TOKEN, ProviderLedger, build_world, github_clock  # noqa: F401 - fixture
from rotator.sandbox.github import FakeGitHub, _Answer
from rotator.sandbox.stripe import FakeStripe, _Request, _Response
from rotator.sandbox.services import free_port
from rotator.testing.leaks import find_leaks, leak_forms

FORMS = list(leak_forms("x" * 8))


class EchoingGitHub(FakeGitHub):
    """A GitHub that quotes the credentials it is sent back in its errors:
    the verification call of each world's new token (or deploy key) answers
    422 with that token, the Vault token and the App key in one encoded form;
    one world's mint answer carries an unreadable `expires_at` holding the
    base64 of the token it just minted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.form_of_installation: dict[int, str] = {}
        self.form_of_repo: dict[str, str] = {}
        self.pem_of_installation: dict[int, str] = {}
        self.corrupt_mint: set[int] = set()
        self.vault_token = ""
        self.seen: set[str] = set()  # every bearer and minted token
        self._installation_of_token: dict[str, int] = {}
        self._echo_lock = threading.Lock()

    def _echo(self, form: str, token: str, pem: str) -> _Answer:
        pieces = [leak_forms(value)[form] for value in (token, self.vault_token, pem)]
        return _Answer(422, {"message": "Validation Failed: " + " | ".join(pieces), "documentation_url": "https://docs.github.com"})

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], raw_body: bytes) -> _Answer:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        with self._echo_lock:
            if bearer:
                self.seen.add(bearer)
        path = urlsplit(raw_path).path
        if method == "GET" and path == "/installation/repositories":
            installation = self._installation_of_token.get(bearer)
            if installation in self.form_of_installation:
                return self._echo(self.form_of_installation[installation], bearer, self.pem_of_installation[installation])
        if method == "GET" and path.startswith("/repos/") and "/keys/" in path:
            repo = "/".join(path.split("/")[2:4])
            if repo in self.form_of_repo:
                return self._echo(self.form_of_repo[repo], bearer, "")
        answer = super().handle(method, raw_path, headers, raw_body)
        if method == "POST" and path.endswith("/access_tokens") and answer.status == 201:
            installation = int(path.split("/")[3])
            token = answer.body["token"]
            with self._echo_lock:
                self.seen.add(token)
                self._installation_of_token[token] = installation
            if installation in self.corrupt_mint:
                answer.body["expires_at"] = base64.b64encode(token.encode()).decode()
        return answer


class EchoingStripe(FakeStripe):
    """A Stripe that quotes, in base64url, the key a call was made with and
    the management key when the new key is first used (verification)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.management_key = ""
        self.seen: set[str] = set()

    def handle(self, request: _Request) -> _Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer:
            self.seen.add(bearer)
        if request.method == "GET" and request.path == "/v1/customers" and bearer != self.management_key:
            pieces = [leak_forms(value)["base64url unpadded"] for value in (bearer, self.management_key)]
            return _Response(400, {"error": {"type": "invalid_request_error", "message": "Bad key: " + " ".join(pieces)}})
        return super().handle(request)


class AlertSink:
    """A webhook receiver that keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                sink.bodies.append(self.rfile.read(int(self.headers.get("content-length") or 0)).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts/T0/B0/hook"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def echoing_stripe() -> Iterator[EchoingStripe]:
    fake = EchoingStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def echoing_github(github_clock) -> Iterator[EchoingGitHub]:  # type: ignore[no-untyped-def]
    fake = EchoingGitHub(clock=github_clock).start()
    yield fake
    fake.stop()


@pytest.mark.off_spec_vendor  # its vendors echo secrets into fields (an unreadable expires_at) on purpose
def test_no_registered_secret_in_any_form_reaches_any_output_channel(  # type: ignore[no-untyped-def]
    openbao, bao_client: hvac.Client, echoing_github: EchoingGitHub, echoing_stripe: EchoingStripe, tmp_path: Path, unique: str,
) -> None:
    """Eleven credentials fail with vendor errors quoting secrets; every channel is scanned for every form."""
    config_dir = tmp_path / "credentials.d"
    audit_file = tmp_path / "audit.jsonl"
    sink = AlertSink()
    vault_token = vault_policy_token(bao_client)
    echoing_github.vault_token = vault_token
    metrics_port = free_port()
    env = {
        "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": vault_token,
        "ROTATOR_STATE_PREFIX": f"rotator/state/{unique}", "ROTATOR_STASH_PREFIX": f"rotator/state-stash/{unique}",
        "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_LOG_FORMAT": "json", "ROTATOR_TICK_SECONDS": "1",
        "ROTATOR_AUDIT_FILE": str(audit_file), "ROTATOR_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "ROTATOR_ALERT_WEBHOOK_URL": sink.url, "ROTATOR_ALLOW_LOOPBACK_HTTP": "true",
    }
    ledger = ProviderLedger()
    worlds = []
    for i, form in enumerate([*FORMS, "issue"]):
        w = build_world(TOKEN, bao=bao_client, env=env, config_dir=config_dir, unique=f"{i}{uuid.uuid4().hex[:6]}",
                        github=echoing_github, ledger=ledger)
        installation = _installation_id(config_dir, w.name)
        echoing_github.pem_of_installation[installation] = _pem(bao_client, w.name)
        if form == "issue":
            echoing_github.corrupt_mint.add(installation)
        else:
            echoing_github.form_of_installation[installation] = form
        worlds.append(w)
    deploy = build_world(DEPLOY_KEY, bao=bao_client, env=env, config_dir=config_dir, unique=uuid.uuid4().hex[:8],
                         github=echoing_github, ledger=ledger, foreign=False)
    echoing_github.form_of_repo[deploy.repo] = "base64"
    worlds.append(deploy)
    stripe = build_world(STRIPE_KEY, bao=bao_client, env=env, config_dir=config_dir, unique=uuid.uuid4().hex[:8],
                         stripe_fake=echoing_stripe, ledger=ledger, foreign=False)
    echoing_stripe.management_key = stripe.management_key  # type: ignore[attr-defined]
    worlds.append(stripe)

    daemon = DaemonProcess(env)
    try:
        daemon.wait_for(lambda events: len([e for e in events if e["event"] == "rotation.failed" and e.get("will_retry") is False])
                        >= len(worlds), timeout=90, what="every credential's final failure")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:  # noqa: S310 - loopback
            metrics = response.read().decode()
    finally:
        code = daemon.stop()
    alerts = list(sink.bodies)
    sink.close()
    assert code == 0
    events = daemon.events()
    failures = {e["credential"]: e for e in events if e["event"] == "rotation.failed" and e.get("will_retry") is False}
    assert set(failures) == {w.name for w in worlds}
    masked = "[REDACTED]" in failures[worlds[FORMS.index("base64")].name]["error"]
    assert masked, "the vendor's echo must be there, masked (the error is not shown: it may hold the secret)"
    assert len(alerts) >= len(worlds), "one alert per final failure"

    secrets = set(ledger.values) | echoing_github.seen | echoing_stripe.seen | {vault_token}
    seen = len(echoing_github.seen)  # never let an assertion print the values
    assert seen >= 2 * (len(worlds) - 1), f"JWTs, minted tokens and the management token were seen: only {seen}"
    assert echoing_stripe.seen, "the Stripe keys were seen"
    channels: dict[str, str] = {
        "daemon stdout and stderr": daemon.output(),
        "audit file": audit_file.read_text(),
        "alert bodies": "\n".join(alerts),
        "/metrics": metrics,
    }
    reader = hvac.Client(url=openbao.addr, token=openbao.token).secrets.kv.v2
    for w in worlds:
        record = reader.read_secret_version(path=f"rotator/state/{unique}/{w.name}", mount_point="secret", raise_on_deleted_version=True)
        channels[f"state record {w.name}"] = json.dumps(record["data"]["data"])
        assert record["data"]["data"]["last_error"], "each record keeps its (scrubbed) last error"
    for args in (["status", "--json"], ["status"], ["plan"], ["report", "--format", "json"], ["report", "--format", "markdown"]):
        result = run_rotator(args, env)
        assert result.returncode == 0, result.stderr[-500:]
        channels[f"rotator {' '.join(args)}"] = result.stdout + result.stderr
        if args == ["status", "--json"]:
            status = json.loads(result.stdout)
    broken = run_rotator(["status"], {**env, "VAULT_ADDR": f"http://127.0.0.1:{free_port()}"})  # an exception message printed
    assert broken.returncode == 1
    channels["rotator status, Vault unreachable"] = broken.stdout + broken.stderr

    assert all(row["last_error"] for row in status if row["credential"] in failures), "status shows the last error"
    for where, text in channels.items():
        leaks = find_leaks(text, secrets, fragments=True)
        assert not leaks, f"{len(leaks)} secret(s) in {where}: {leaks}"


def _installation_id(config_dir: Path, name: str) -> int:
    import yaml

    return int(yaml.safe_load((config_dir / f"{name}.yaml").read_text())["params"]["installation_id"])


def _pem(bao: hvac.Client, name: str) -> str:
    data = bao.secrets.kv.v2.read_secret_version(path=f"rotator/refs/{name}", mount_point="secret", raise_on_deleted_version=True)
    return str(data["data"]["data"]["private_key"])
