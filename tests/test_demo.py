"""`rotator demo`: the real daemon rotates one credential of every provider
type against local services, prints no secret, and leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from helpers import SecretLedger, names, parse_events, run_rotator

from rotator.config.loader import load_directory
from rotator.config.policy import ApiHostRule, TrustRules
from rotator.demo import DemoError, credential_documents, prepare_workdir, write_credential_files
from rotator.core.validators import secret_lookalike
from rotator.core.provider import Provider
from rotator.engine.registry import load_providers

PROVIDERS = set(load_providers())
SECRET_FIELDS = Provider.secret_fields | {"app_key", "webhook_key"}


# -- fast checks ---------------------------------------------------------------------


def test_demo_credential_files_are_valid(tmp_path: Path) -> None:
    """The files the demo writes validate, one per provider type, schedules under a minute."""
    config_dir = tmp_path / "credentials.d"
    files = write_credential_files(config_dir, credential_documents("http://127.0.0.1:1", "http://127.0.0.1:2"))
    result = load_directory(config_dir, load_providers(), rules=TrustRules(ApiHostRule(allow_loopback_http=True)))
    assert result.problems == []
    assert {c.spec.provider for c in result.credentials.values()} == PROVIDERS
    assert all(c.spec.schedule.every is not None and c.spec.schedule.every.total_seconds() <= 60 for c in result.credentials.values())
    assert all(f.read_text().startswith("# yaml-language-server: $schema=../credential.schema.json") for f in files)
    assert (tmp_path / "credential.schema.json").exists()


def test_demo_refuses_a_workdir_it_did_not_make(tmp_path: Path) -> None:
    """A non-empty directory without the demo's marker is never cleared."""
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoError):
        prepare_workdir(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_clears_its_own_workdir(tmp_path: Path) -> None:
    """A second demo run starts from a clean directory (fresh audit chain)."""
    workdir = prepare_workdir(tmp_path / "demo")
    (workdir / "audit.jsonl").write_text("old\n")
    prepare_workdir(workdir)
    assert sorted(p.name for p in workdir.iterdir()) == [".rotator-demo"]


# -- the real thing ---------------------------------------------------------------------


def _start_demo(workdir: Path, out_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "ROTATOR_", "AWS_"))}
    env["ROTATOR_LOG_FORMAT"] = "json"
    stdout, stderr = out_dir / "demo.stdout", out_dir / "demo.stderr"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "demo", "--workdir", str(workdir), *extra],
            stdout=out, stderr=err, env=env, start_new_session=True,
        )
    return proc, stdout, stderr


@pytest.fixture
def demo_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Demo processes a test started; killed with their group if the test fails midway."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_for(predicate: Any, *, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"the demo exited with {proc.returncode} while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _manifest(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / "demo.json").read_text())
    except (OSError, ValueError):
        return None


def _audit_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _completed_providers(events: list[dict[str, Any]]) -> set[str]:
    return {e["provider"] for e in events if e["event"] == "rotation.completed"}


def _secret_strings(value: Any, *, under_secret_key: bool = False) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _secret_strings(item, under_secret_key=under_secret_key or key in SECRET_FIELDS)
    elif isinstance(value, list):
        for item in value:
            yield from _secret_strings(item, under_secret_key=under_secret_key)
    elif isinstance(value, str) and under_secret_key:
        yield value


def _harvest_secrets(addr: str, ledger: SecretLedger) -> None:
    """Every version of every live path, the referenced management secrets and
    the state records' handles, read from the demo's OpenBao while it runs."""
    client = hvac.Client(url=addr, token="root")  # the dev server's root token
    kv = client.secrets.kv.v2

    def walk(path: str) -> Iterator[str]:
        for key in kv.list_secrets(path=path, mount_point="secret")["data"]["keys"]:
            yield from walk(f"{path}/{key.rstrip('/')}") if key.endswith("/") else [f"{path}/{key}"]

    for top in ("apps", "rotator"):
        for path in walk(top):
            versions = kv.read_secret_metadata(path=path, mount_point="secret")["data"]["versions"]
            for version in versions:
                data = kv.read_secret_version(path=path, version=int(version), mount_point="secret",
                                              raise_on_deleted_version=False)["data"]["data"] or {}
                ledger.add(*_secret_strings(data))
    count = len(ledger.values)  # never let an assertion message show the values
    assert count >= 8, "expected five live credentials and three management secrets in OpenBao"


def _port_is_open(url_or_addr: str) -> bool:
    host_port = url_or_addr.split("://")[-1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def _processes_mentioning(needles: list[bytes]) -> list[int]:
    """Live processes whose command line or environment names one of `needles`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(needle in blob for needle in needles):
            found.append(int(entry.name))
    return found


def _assert_nothing_left(manifest: dict[str, Any]) -> None:
    addresses = [manifest[k] for k in ("openbao_addr", "moto_endpoint", "github_url", "stripe_url", "metrics_addr")]
    assert [a for a in addresses if _port_is_open(a)] == []
    with pytest.raises(ProcessLookupError):
        os.kill(manifest["daemon_pid"], 0)
    needles = [manifest[k].split("://")[-1].encode() for k in ("openbao_addr", "moto_endpoint")]
    needles += [b"-p\0" + manifest["moto_endpoint"].rsplit(":", 1)[1].encode() + b"\0", manifest["config_dir"].encode()]
    assert _processes_mentioning(needles) == []


@pytest.mark.slow
def test_demo_rotates_every_provider_type(tmp_path: Path, demo_processes: list[subprocess.Popen[bytes]]) -> None:
    """`rotator demo --duration 60`: rotations of all five provider types, revocations
    after grace, an intact audit chain, no secret in any output, nothing left running."""
    workdir = tmp_path / "demo"
    began = time.monotonic()
    proc, stdout_path, stderr_path = _start_demo(workdir, tmp_path, "--duration", "60")
    demo_processes.append(proc)
    manifest = _wait_for(lambda: _manifest(workdir), timeout=60, what="demo.json", proc=proc)
    audit_file = Path(manifest["audit_file"])
    _wait_for(lambda: _completed_providers(_audit_events(audit_file)) == PROVIDERS, timeout=50,
              what="a completed rotation of every provider type", proc=proc)
    all_five_after = time.monotonic() - began
    ledger = SecretLedger()
    _harvest_secrets(manifest["openbao_addr"], ledger)
    # Late enough to include the second rotations, early enough that OpenBao still runs.
    time.sleep(max(0.0, 50 - (time.monotonic() - began)))
    if proc.poll() is None:
        _harvest_secrets(manifest["openbao_addr"], ledger)

    assert proc.wait(timeout=120) == 0
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    print(f"all five provider types rotated {all_five_after:.1f}s after `rotator demo` started")

    events = parse_events(stdout)  # in JSON format every stdout line is one event
    assert _completed_providers(events) == PROVIDERS
    revoked = {e["provider"] for e in events if e["event"] == "credential.revoked"}
    assert "aws.iam_access_key" in revoked and "github.app_installation_token" in revoked
    assert [e for e in events if e["event"] in {"rotation.failed", "config.invalid"}] == []
    # The final audit anchor is written (and logged) after daemon.stopped: docs/AUDIT.md section 8.
    assert "daemon.started" in names(events) and _last_but_anchors(events) == "daemon.stopped"
    assert "export VAULT_ADDR=" in stderr and "rotator audit verify" in stderr

    verified = run_rotator(["audit", "verify", str(audit_file)], {})
    assert verified.returncode == 0, verified.stdout
    assert len(_audit_events(audit_file)) == len(events)

    audit_text = audit_file.read_text()
    for where, text in (("stdout", stdout), ("stderr", stderr), ("audit file", audit_text)):
        ledger.capture(where, text)
        shaped = [n for n, line in enumerate(text.splitlines(), 1) if secret_lookalike(line)]
        assert shaped == [], f"{where} lines {shaped} look like they hold a secret"
    ledger.assert_clean()
    _assert_nothing_left(manifest)


@pytest.mark.slow
def test_demo_stops_everything_on_ctrl_c(tmp_path: Path, demo_processes: list[subprocess.Popen[bytes]]) -> None:
    """Ctrl-C (SIGINT to the foreground process group) stops the daemon and every server."""
    workdir = tmp_path / "demo"
    proc, stdout_path, _ = _start_demo(workdir, tmp_path)
    demo_processes.append(proc)
    manifest = _wait_for(lambda: _manifest(workdir), timeout=60, what="demo.json", proc=proc)
    _wait_for(lambda: _completed_providers(_audit_events(Path(manifest["audit_file"]))), timeout=30,
              what="a first completed rotation", proc=proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=45) == 0
    events = parse_events(stdout_path.read_text())
    assert _last_but_anchors(events) == "daemon.stopped"
    _assert_nothing_left(manifest)


def _last_but_anchors(events: list[dict[str, Any]]) -> str:
    return [e["event"] for e in events if e["event"] != "audit.anchored"][-1]
