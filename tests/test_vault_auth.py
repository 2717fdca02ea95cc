"""Vault authentication and the token's lifecycle.

First the session's decisions, driven by a fake Vault and a fake clock (no
sleeping); then the real thing against OpenBao with TTLs of seconds: a
renewed token, AppRole and Kubernetes logins, a new login after max TTL or
a revocation, and readiness."""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import jwt
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rotator.wiring import build_store, load_settings
from rotator.core.errors import ConfigError, PermanentError, VaultUnavailableError
from rotator.sandbox.services import OpenBaoServer, free_port
from rotator.config.settings import Settings
from rotator.testing.leaks import assert_no_leaks
from rotator.config.settings import VaultConnection
from rotator.vault.store import VaultStore
from rotator.vault.auth import TokenLease, TokenSession, VaultDeniedError, is_capped, renew_due_at, retry_delay

# -- a fake Vault and clock for the session's decisions ----------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeVault:
    """An `Authenticator` over one token with Vault's TTL rules: a renewal
    grants the full TTL, capped by what is left of the max TTL."""

    def __init__(self, clock: FakeClock, *, method: str = "approle", ttl: int = 30, max_ttl: int = 90, renewable: bool = True) -> None:
        self.method, self.clock, self.ttl, self.max_ttl, self.renewable = method, clock, ttl, max_ttl, renewable
        self.mount = None if method == "token" else method
        self.issued_at = self.expires_at = 0.0
        self.revoked = self.unreachable = False
        self.logins = self.renewals = self.lookups = 0
        if method == "token":
            self._issue()

    @property
    def can_log_in(self) -> bool:
        return self.method != "token"

    def _issue(self) -> TokenLease:
        self.issued_at, self.expires_at, self.revoked = self.clock(), self.clock() + self.ttl, False
        return TokenLease(self.ttl, self.renewable, self.ttl)

    def _check(self) -> None:
        if self.unreachable:
            raise VaultUnavailableError("Vault unreachable while testing: ConnectionError")
        if self.revoked or self.clock() >= self.expires_at:
            raise VaultDeniedError("Vault denied testing (403)")

    def log_in(self) -> TokenLease:
        if self.unreachable:
            raise VaultUnavailableError("Vault unreachable while logging in: ConnectionError")
        self.logins += 1
        return self._issue()

    def look_up(self) -> TokenLease:
        self.lookups += 1
        self._check()
        return TokenLease(int(self.expires_at - self.clock()), self.renewable, self.ttl)

    def renew(self) -> TokenLease:
        self.renewals += 1
        self._check()
        if not self.renewable:
            raise PermanentError("Vault refused renewing the token: lease is not renewable")
        granted = int(min(self.ttl, self.issued_at + self.max_ttl - self.clock()))
        self.expires_at = self.clock() + granted
        return TokenLease(granted, True, granted)


def _session(**kwargs: Any) -> tuple[TokenSession, FakeVault, FakeClock]:
    clock = FakeClock()
    vault = FakeVault(clock, **kwargs)
    return TokenSession(vault, monotonic=clock), vault, clock


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


def test_timing_rules() -> None:
    """Act at 2/3 of the TTL, never for a token that does not expire; a short grant means capped; retries wait 1-5 s."""
    assert renew_due_at(TokenLease(30, True, 30), 100.0) == 120.0
    assert renew_due_at(TokenLease(0, False, 0), 100.0) is None
    assert is_capped(TokenLease(20, True, 20), TokenLease(30, True, 30))
    assert not is_capped(TokenLease(30, True, 30), TokenLease(30, True, 30))
    assert retry_delay(0) == 1.0 and retry_delay(6) == 2.0 and retry_delay(600) == 5.0


def test_token_is_renewed_at_two_thirds_of_its_ttl(events: list[dict[str, Any]]) -> None:
    """No renewal before 2/3 of the TTL; one at it; the next 2/3 of the new TTL later."""
    session, vault, clock = _session(method="token", ttl=30)
    session.start()
    clock.advance(19)
    session.ensure()
    assert vault.renewals == 0
    clock.advance(1)
    session.ensure()
    session.ensure()
    assert vault.renewals == 1
    clock.advance(20)
    session.maintain()
    assert vault.renewals == 2
    assert [e["ttl_seconds"] for e in _named(events, "vault.token_renewed")] == [30, 30]


def test_approle_logs_in_again_when_renewal_reaches_max_ttl(events: list[dict[str, Any]]) -> None:
    """Once a renewal grants less than the full TTL, a new login replaces the token."""
    session, vault, clock = _session(ttl=30, max_ttl=60)
    session.start()
    clock.advance(20)
    session.maintain()  # renewed to 30s: expires at 50
    clock.advance(20)
    session.maintain()  # only 20s left of the max TTL: log in again
    assert (vault.renewals, vault.logins, session.generation) == (2, 2, 2)
    assert [e["reason"] for e in _named(events, "vault.login")] == ["start", "max_ttl"]
    assert _named(events, "vault.login")[0]["auth_mount"] == "approle"


def test_token_method_reports_expiry_once_when_it_cannot_renew(events: list[dict[str, Any]]) -> None:
    """A given token at its max TTL warns `vault.token_expiring` once and stops trying."""
    session, vault, clock = _session(method="token", ttl=30, max_ttl=60)
    session.start()
    for _ in range(6):
        clock.advance(20)
        session.maintain()
        session.ensure()
    assert vault.renewals == 2  # at 20 s (to 30 s), at 40 s (capped to 20 s)
    warnings = _named(events, "vault.token_expiring")
    assert len(warnings) == 1 and warnings[0]["reason"] == "max_ttl" and warnings[0]["log_level"] == "warning"


def test_non_renewable_token_warns_but_approle_logs_in(events: list[dict[str, Any]]) -> None:
    """A non-renewable given token is reported at 2/3 of its TTL; an AppRole one is replaced instead."""
    session, vault, clock = _session(method="token", ttl=30, renewable=False)
    session.start()
    clock.advance(21)
    session.maintain()
    assert vault.renewals == 0
    assert [e["reason"] for e in _named(events, "vault.token_expiring")] == ["not_renewable"]

    session, vault, clock = _session(ttl=30, renewable=False)
    session.start()
    clock.advance(21)
    session.maintain()
    assert (vault.renewals, vault.logins) == (0, 2)


def test_many_threads_denied_at_once_cause_one_login() -> None:
    """A revoked token seen by eight threads at once: one new login, and all eight retry."""
    session, vault, _clock = _session()
    session.start()
    generation = session.generation
    vault.revoked = True
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        barrier.wait()
        results.append(session.recover(generation))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8
    assert vault.logins == 2 and session.generation == generation + 1


def test_policy_denial_with_a_valid_token_is_not_retried() -> None:
    """A 403 while the token's own lookup works is the policy's answer: no login, no retry."""
    session, vault, _clock = _session()
    session.start()
    assert session.recover(session.generation) is False
    assert (vault.logins, vault.lookups) == (1, 1)
    token_session, _vault, _clock = _session(method="token")
    token_session.start()
    assert token_session.recover(token_session.generation) is False


def test_failed_renewal_is_logged_and_retried_after_a_delay(events: list[dict[str, Any]]) -> None:
    """Vault down at renewal time: a warning, no exception, another attempt a little later."""
    session, vault, clock = _session(method="token", ttl=30)
    session.start()
    clock.advance(20)
    vault.unreachable = True
    session.maintain()
    session.ensure()
    assert vault.renewals == 1
    assert _named(events, "vault.token_renewal_failed")[0]["log_level"] == "warning"
    vault.unreachable = False
    clock.advance(retry_delay(10))
    session.ensure()
    assert vault.renewals == 2 and _named(events, "vault.token_renewed")


def test_expired_token_is_replaced_before_the_next_request() -> None:
    """An AppRole token that ran out while nothing happened is replaced before use."""
    session, vault, clock = _session(ttl=30)
    session.start()
    clock.advance(31)
    session.ensure()
    assert (vault.renewals, vault.logins, session.generation) == (0, 2, 2)


def test_start_survives_an_unreachable_vault_but_not_a_refusal(events: list[dict[str, Any]]) -> None:
    """Vault down at start: logged, and the login happens on first use; a refused token fails at once."""
    session, vault, _clock = _session()
    vault.unreachable = True
    session.start()
    assert _named(events, "vault.login_failed")[0]["will_retry"] is True
    vault.unreachable = False
    session.ensure()
    assert vault.logins == 1

    session, vault, _clock = _session(method="token")
    vault.revoked = True
    with pytest.raises(PermanentError, match="VAULT_TOKEN"):
        session.start()


def test_a_due_renewal_never_blocks_a_request_while_another_thread_renews() -> None:
    """While one thread holds the session's lock, another's request goes ahead with the still-valid token."""
    session, vault, clock = _session(ttl=30)
    session.start()
    clock.advance(21)
    with session._lock:
        session.ensure()
    assert vault.renewals == 0


# -- settings ---------------------------------------------------------------------


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return [str(p) for p in caught.value.problems]


def test_approle_without_its_settings_names_each_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROTATOR_VAULT_AUTH=approle needs a role id and a secret id file; each missing one is named."""
    problems = _problems(monkeypatch, ROTATOR_VAULT_AUTH="approle")
    assert any("ROTATOR_VAULT_ROLE_ID" in p for p in problems)
    assert any("ROTATOR_VAULT_SECRET_ID_FILE" in p for p in problems)
    problems = _problems(monkeypatch, ROTATOR_VAULT_AUTH="approle", ROTATOR_VAULT_ROLE_ID="r")
    assert len(problems) == 1 and "ROTATOR_VAULT_SECRET_ID_FILE" in problems[0]


def test_kubernetes_without_a_role_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROTATOR_VAULT_AUTH=kubernetes needs ROTATOR_VAULT_K8S_ROLE."""
    assert any("ROTATOR_VAULT_K8S_ROLE" in p for p in _problems(monkeypatch, ROTATOR_VAULT_AUTH="kubernetes"))


def test_auth_mount_defaults_per_method_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount defaults to the method's name, accepts an `auth/` prefix, and must be a safe path."""
    assert Settings(vault_auth="approle", vault_role_id="r", vault_secret_id_file="/f").vault_connection().effective_auth_mount == "approle"
    assert Settings(vault_auth="kubernetes", vault_k8s_role="r").vault_connection().effective_auth_mount == "kubernetes"
    assert Settings(vault_auth_mount="auth/approle-ci/").vault_auth_mount == "approle-ci"
    assert any("ROTATOR_VAULT_AUTH_MOUNT" in p for p in _problems(monkeypatch, ROTATOR_VAULT_AUTH_MOUNT="../sys"))


# -- against OpenBao -------------------------------------------------------------------


def _policy(bao_client: hvac.Client, base: str) -> str:
    """A policy for this test's own folder, plus what the shipped policy gives the token itself."""
    name = f"auth-test-{base.rsplit('/', 1)[-1]}"
    bao_client.sys.create_or_update_policy(name=name, policy=f"""
        path "secret/data/{base}/*" {{ capabilities = ["create", "read", "update"] }}
        path "secret/metadata/{base}/*" {{ capabilities = ["read"] }}
        path "auth/token/lookup-self" {{ capabilities = ["read"] }}
        path "auth/token/renew-self" {{ capabilities = ["update"] }}
    """)
    return name


@pytest.fixture
def base(unique: str) -> str:
    return f"auth-test/{unique}"


def _keep_working(store: VaultStore, base: str, seconds: float, *, tick: Callable[[], None] | None = None) -> int:
    """Write and read through the store every quarter second (calling `tick` like the daemon); returns writes."""
    version = store.read("secret", f"{base}/probe").version
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if tick:
            tick()
        version = store.write("secret", f"{base}/probe", {"n": str(version)}, cas=version)
        assert store.read("secret", f"{base}/probe").version == version
        time.sleep(0.25)
    return version


def test_short_ttl_token_is_renewed_and_outlives_its_first_ttl(
    openbao: OpenBaoServer, bao_client: hvac.Client, base: str, events: list[dict[str, Any]]
) -> None:
    """A 4 s renewable token keeps working for 6 s (renewed at 2/3 of its TTL), and is still valid after."""
    policy = _policy(bao_client, base)
    token = bao_client.auth.token.create(policies=[policy], no_default_policy=True, ttl="4s", explicit_max_ttl="30s", renewable=True)["auth"]["client_token"]
    store = VaultStore(VaultConnection(url=openbao.addr, token=token))
    store.login()
    _keep_working(store, base, 6.0, tick=store.maintain_token)
    assert bao_client.auth.token.lookup(token)["data"]["ttl"] > 0
    assert store.is_ready()
    assert len(_named(events, "vault.token_renewed")) >= 2
    assert not _named(events, "vault.token_expiring")
    assert_no_leaks(repr(events), [token], where="the log events")


@pytest.fixture
def approle(openbao: OpenBaoServer, bao_client: hvac.Client, base: str, unique: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Enable AppRole at a mount of this test's own and point the rotator's settings at a role:
    returns a function that makes the role and returns its secret id (written to a 0600 file)."""
    mount = f"approle-{unique}"
    bao_client.sys.enable_auth_method("approle", path=mount)
    policy = _policy(bao_client, base)
    secret_file = tmp_path / "secret-id"

    def make(*, ttl: str, max_ttl: str) -> str:
        bao_client.auth.approle.create_or_update_approle("rotator", token_ttl=ttl, token_max_ttl=max_ttl,
                                                          token_policies=[policy], mount_point=mount)
        role_id = bao_client.auth.approle.read_role_id("rotator", mount_point=mount)["data"]["role_id"]
        secret_id = bao_client.auth.approle.generate_secret_id("rotator", mount_point=mount)["data"]["secret_id"]
        secret_file.write_text(secret_id + "\n")
        os.chmod(secret_file, 0o600)
        for key, value in {"VAULT_ADDR": openbao.addr, "ROTATOR_VAULT_AUTH": "approle", "ROTATOR_VAULT_AUTH_MOUNT": mount,
                           "ROTATOR_VAULT_ROLE_ID": role_id, "ROTATOR_VAULT_SECRET_ID_FILE": str(secret_file)}.items():
            monkeypatch.setenv(key, value)
        return str(secret_id)

    return make


def test_approle_logs_in_again_by_itself_after_max_ttl(approle: Callable[..., str], base: str, unique: str,
                                                       events: list[dict[str, Any]]) -> None:
    """Token TTL 3 s, max 6 s: the store renews, then logs in again, and never fails a request."""
    secret_id = approle(ttl="3s", max_ttl="6s")
    store = build_store(load_settings())
    _keep_working(store, base, 8.0)
    logins = _named(events, "vault.login")
    assert logins[0]["reason"] == "start" and logins[0]["method"] == "approle"
    assert logins[0]["auth_mount"] == f"approle-{unique}"
    assert "max_ttl" in [e["reason"] for e in logins[1:]]
    assert _named(events, "vault.token_renewed")
    assert_no_leaks(repr(events), [secret_id], where="the log events")


def test_revoked_token_causes_a_new_login_and_one_retry(approle: Callable[..., str], bao_client: hvac.Client, base: str,
                                                        unique: str, events: list[dict[str, Any]]) -> None:
    """A token revoked behind the store's back: the refused request logs in again and succeeds;
    a request the policy denies is not retried and causes no login."""
    approle(ttl="60s", max_ttl="120s")
    store = build_store(load_settings())
    store.write("secret", f"{base}/a", {"v": "1"}, cas=0)
    bao_client.sys.revoke_prefix(f"auth/approle-{unique}/login")
    assert store.read("secret", f"{base}/a").data == {"v": "1"}
    assert [e["reason"] for e in _named(events, "vault.login")] == ["start", "token_rejected"]
    with pytest.raises(PermanentError) as caught:
        store.read("secret", f"other-{unique}/x")
    assert f"secret/other-{unique}/x" in str(caught.value)
    assert len(_named(events, "vault.login")) == 2
    bao_client.sys.revoke_prefix(f"auth/approle-{unique}/login")
    assert store.is_ready()  # readiness logs in again too


def test_approle_refusals_are_permanent_and_never_quote_the_secret_id(approle: Callable[..., str], tmp_path: Path) -> None:
    """A wrong secret id or a missing secret id file stops start-up with a message naming the mount or the variable."""
    approle(ttl="60s", max_ttl="120s")
    (tmp_path / "secret-id").write_text("not-the-right-secret-id-0000\n")
    with pytest.raises(PermanentError) as caught:
        build_store(load_settings())
    assert "AppRole" in str(caught.value) and "auth/approle-" in str(caught.value)
    assert "not-the-right-secret-id-0000" not in str(caught.value)
    (tmp_path / "secret-id").unlink()
    with pytest.raises(PermanentError, match="ROTATOR_VAULT_SECRET_ID_FILE"):
        build_store(load_settings())


class _FakeKubernetesApi:
    """Just enough of the Kubernetes API for Vault's kubernetes auth: a
    TokenReview that authenticates the one service-account token it issued."""

    def __init__(self, namespace: str, account: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        self.jwt = jwt.encode({
            "iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{namespace}:{account}", "iat": now, "exp": now + 3600,
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": account,
            "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
        }, self.key, algorithm="RS256")
        self.user = {"username": f"system:serviceaccount:{namespace}:{account}", "uid": "uid-1"}
        self.reviews = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def ca_pem(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kubernetes-ca")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1)).not_valid_after(datetime.datetime(2040, 1, 1))
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.reviews += 1
                ok = self.path == "/apis/authentication.k8s.io/v1/tokenreviews" and review["spec"]["token"] == api.jwt
                status = {"authenticated": True, "user": api.user} if ok else {"authenticated": False, "error": "invalid token"}
                body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler


def test_kubernetes_login_with_a_service_account_token(openbao: OpenBaoServer, bao_client: hvac.Client, base: str, unique: str,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       events: list[dict[str, Any]]) -> None:
    """Kubernetes auth logs in with the token file's JWT, and logs in again (re-reading the file) after a revocation."""
    api = _FakeKubernetesApi("ops", "rotator")
    try:
        mount = f"k8s-{unique}"
        bao_client.sys.enable_auth_method("kubernetes", path=mount)
        bao_client.write_data(f"auth/{mount}/config", data={"kubernetes_host": api.url, "kubernetes_ca_cert": api.ca_pem(),
                                                            "disable_local_ca_jwt": True})
        bao_client.write_data(f"auth/{mount}/role/rotator", data={
            "bound_service_account_names": ["rotator"], "bound_service_account_namespaces": ["ops"],
            "token_policies": [_policy(bao_client, base)], "token_ttl": "60s"})
        jwt_file = tmp_path / "sa-token"
        jwt_file.write_text(api.jwt)
        for key, value in {"VAULT_ADDR": openbao.addr, "ROTATOR_VAULT_AUTH": "kubernetes", "ROTATOR_VAULT_AUTH_MOUNT": mount,
                           "ROTATOR_VAULT_K8S_ROLE": "rotator", "ROTATOR_VAULT_K8S_TOKEN_FILE": str(jwt_file)}.items():
            monkeypatch.setenv(key, value)
        store = build_store(load_settings())
        store.write("secret", f"{base}/k", {"v": "1"}, cas=0)
        bao_client.sys.revoke_prefix(f"auth/{mount}/login")
        assert store.read("secret", f"{base}/k").data == {"v": "1"}
        assert [(e["method"], e["reason"]) for e in _named(events, "vault.login")] == [("kubernetes", "start"), ("kubernetes", "token_rejected")]
        assert api.reviews == 2
        jwt_file.write_text("not-a-service-account-token")
        bao_client.sys.revoke_prefix(f"auth/{mount}/login")
        with pytest.raises(PermanentError) as caught:
            store.read("secret", f"{base}/k")
        assert_no_leaks(repr(events) + str(caught.value), [api.jwt], where="the log events and the error")
    finally:
        api.server.shutdown()


def test_readiness_needs_a_reachable_vault_and_a_valid_token_and_is_cached(openbao: OpenBaoServer, bao_client: hvac.Client) -> None:
    """is_ready() is False for an unreachable Vault or an invalid token; one answer serves probes for two seconds."""
    unreachable = VaultStore(VaultConnection(url=f"http://127.0.0.1:{free_port()}", token="s.unused", timeout=2))
    assert unreachable.is_ready() is False
    assert VaultStore(VaultConnection(url=openbao.addr, token="s.no-such-token-anywhere")).is_ready() is False

    clock = FakeClock()
    token = bao_client.auth.token.create(ttl="1h")["auth"]["client_token"]
    store = VaultStore(VaultConnection(url=openbao.addr, token=token), monotonic=clock)
    assert store.is_ready() is True
    before = store.requests_made
    bao_client.auth.token.revoke(token)
    clock.advance(1.5)
    assert store.is_ready() is True and store.requests_made == before  # the cached answer
    clock.advance(1.0)
    assert store.is_ready() is False
