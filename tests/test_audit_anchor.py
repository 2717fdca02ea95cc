"""Audit anchors in Vault against a real OpenBao: the tip moves forward with
check-and-set, a cut or rewritten file is refused and detected, a rewound or
forged anchor is rejected when anchors are signed by Transit (ed25519), and
chain and anchor survive logrotate and a SIGKILL between append and anchor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator.audit.anchor import Anchorer, AnchorStore, signature_problem
from rotator.audit.chain import ChainState, Tip, encode_chain_state, read_chain_state
from rotator.audit.chain import AuditChainError
from rotator.audit.writer import AuditFile
from rotator.audit.seal import seal
from rotator.audit.verify import verify
from rotator.core.clock import FakeClock
from rotator.core.errors import VaultUnavailableError
from rotator.sandbox.services import OpenBaoServer
from rotator.config.settings import VaultConnection
from rotator.vault.store import VaultStore


class FileLog:
    """The process's logger as far as anchoring sees it: each event is appended to the audit file."""

    def __init__(self, writer: AuditFile) -> None:
        self.writer = writer
        self.events: list[dict[str, Any]] = []

    def _log(self, level: str, event: str, **fields: Any) -> None:
        record = {"timestamp": "2026-01-01T00:00:00Z", "level": level, "event": event, **fields}
        self.events.append(self.writer.append(record))

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)


@pytest.fixture
def store(openbao: OpenBaoServer) -> VaultStore:
    vault = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    vault.login()
    return vault


@pytest.fixture
def prefix(unique: str) -> str:
    return f"rotator-test/{unique}/_audit"


@pytest.fixture
def anchors(store: VaultStore, prefix: str) -> AnchorStore:
    return AnchorStore(store, ("secret", prefix))


@pytest.fixture
def transit(bao_client: hvac.Client, unique: str) -> Iterator[tuple[str, str]]:
    """A Transit mount of its own with an ed25519 key, as an operator would set it up."""
    mount = f"transit-{unique}"
    bao_client.sys.enable_secrets_engine("transit", path=mount)
    bao_client.secrets.transit.create_key(name="rotator-audit", key_type="ed25519", mount_point=mount)
    yield mount, "rotator-audit"
    bao_client.sys.disable_secrets_engine(mount)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def _event(i: int) -> dict[str, Any]:
    return {"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "test.tick", "i": i}


def _anchorer(writer: AuditFile, anchors: AnchorStore) -> tuple[Anchorer, FileLog]:
    log = FileLog(writer)
    return Anchorer(writer, anchors, log=lambda: log, clock=FakeClock(), host="test-host"), log


def _append(writer: AuditFile, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        writer.append(_event(i))


def _cut_tail(path: Path, lines: int, *, fix_sidecar: bool) -> None:
    """Cut the newest lines, as `truncate` would; optionally make the sidecar agree, as a careful attacker would."""
    kept = path.read_bytes().splitlines(keepends=True)[:-lines]
    os.truncate(path, sum(len(line) for line in kept))
    if fix_sidecar:
        state = read_chain_state(path)
        assert state is not None
        last = json.loads(kept[-1])
        path.with_name(path.name + ".chain").write_bytes(encode_chain_state(ChainState(Tip(last["seq"], last["hash"]), None, state.chain_id)))


# --- the anchor moves forward ----------------------------------------------------


def test_a_round_anchors_the_tip_logs_audit_anchored_and_anchors_that_line_too(log_path: Path, anchors: AnchorStore) -> None:
    """After one round the anchor holds the file's very last line (the audit.anchored event itself)."""
    writer = AuditFile(log_path)
    _append(writer, 5)
    anchorer, log = _anchorer(writer, anchors)
    anchorer.check_at_start()
    first = anchorer.anchor_round()
    assert first is not None and first.seq == 5
    (anchored,) = [e for e in log.events if e["event"] == "audit.anchored"]
    assert (anchored["anchored_seq"], anchored["anchored_hash"], anchored["seq"]) == (5, first.hash, 6)
    assert anchored["anchor"] == anchors.where(writer.chain_id)
    stored = anchors.read(writer.chain_id)
    assert stored.record is not None and stored.record.tip == writer.tip() and stored.version == 2
    assert (stored.record.kv_version, stored.record.host, stored.record.file) == (2, "test-host", str(log_path))
    assert anchorer.anchor_round() is None and anchors.read(writer.chain_id).version == 2  # idle: no write


def test_two_processes_on_one_file_keep_one_anchor_moving_forward(log_path: Path, anchors: AnchorStore) -> None:
    """Writers sharing a file share its chain id and one anchor record, whose seq never goes back."""
    one, two = AuditFile(log_path), AuditFile(log_path)
    a, _ = _anchorer(one, anchors)
    b, _ = _anchorer(two, anchors)
    seen = []
    for turn in range(4):
        _append(one if turn % 2 else two, 3, start=turn * 3)
        (a if turn % 2 else b).anchor_round()
        seen.append(anchors.read(one.chain_id).record.seq)  # type: ignore[union-attr]
    assert one.chain_id == two.chain_id and seen == sorted(seen) and seen[-1] == one.tip().seq
    assert verify([log_path]).ok


def test_start_refuses_a_file_cut_behind_its_anchor_even_with_the_sidecar_fixed(log_path: Path, anchors: AnchorStore) -> None:
    """The sidecar can be rewritten by whoever cut the file; the anchor in Vault cannot, so start is refused."""
    writer = AuditFile(log_path)
    _append(writer, 6)
    _anchorer(writer, anchors)[0].anchor_round()
    _cut_tail(log_path, 3, fix_sidecar=True)
    reopened = AuditFile(log_path)  # the sidecar agrees with the cut file now
    with pytest.raises(AuditChainError, match=r"seq 5 to 7 were cut.*rotator audit seal"):
        _anchorer(reopened, anchors)[0].check_at_start()


def test_a_cut_while_running_is_refused_and_the_anchor_never_moves_back(log_path: Path, anchors: AnchorStore) -> None:
    """A round that finds the file behind the anchor logs audit.anchor_refused and writes nothing."""
    writer = AuditFile(log_path)
    _append(writer, 6)
    anchorer, log = _anchorer(writer, anchors)
    anchorer.anchor_round()
    before = anchors.read(writer.chain_id)
    _cut_tail(log_path, 4, fix_sidecar=True)
    assert anchorer.anchor_round() is None and anchorer.anchor_round() is None
    after = anchors.read(writer.chain_id)
    assert after == before
    refused = [e for e in log.events if e["event"] == "audit.anchor_refused"]
    assert len(refused) == 1 and "were cut" in refused[0]["error"]


def test_seal_records_the_cut_range_and_appending_and_anchoring_go_on(log_path: Path, anchors: AnchorStore) -> None:
    """seal names the missing seqs in a hashed audit.chain_broken; the anchor then moves forward past it."""
    writer = AuditFile(log_path)
    _append(writer, 6)
    anchorer, _ = _anchorer(writer, anchors)
    anchorer.anchor_round()
    anchored = anchors.read(writer.chain_id).record
    assert anchored is not None
    _cut_tail(log_path, 3, fix_sidecar=True)
    seal(log_path, anchor=anchored.tip, clock=FakeClock())
    broken = json.loads(log_path.read_bytes().splitlines()[-1])
    assert (broken["event"], broken["missing_first"], broken["missing_last"]) == ("audit.chain_broken", 5, anchored.seq)
    assert (broken["seq"], broken["prev_hash"], broken["recorded_by"]) == (anchored.seq + 1, anchored.hash, "anchor")
    resumed = AuditFile(log_path)
    fresh, _ = _anchorer(resumed, anchors)
    fresh.check_at_start()
    _append(resumed, 2, start=10)
    assert fresh.anchor_round() is not None
    result = verify([log_path])
    assert result.ok and result.gaps == ((5, anchored.seq),)
    assert any("missing (cut), sealed by audit.chain_broken" in note for note in result.notes)


def test_vault_down_is_logged_once_and_never_stops_appends(log_path: Path, anchors: AnchorStore) -> None:
    """An unreachable Vault makes a round a logged warning; appends go on, and the next reachable round anchors."""
    writer = AuditFile(log_path)
    _append(writer, 2)
    down = AnchorStore(VaultStore(VaultConnection(url="http://127.0.0.1:9", token="t", timeout=1.0)), (anchors.mount, anchors.prefix))
    anchorer, log = _anchorer(writer, down)
    anchorer.check_at_start()  # cannot read: remembered, not raised
    assert anchorer.anchor_round() is None and anchorer.anchor_round() is None
    failed = [e for e in log.events if e["event"] == "audit.anchor_failed"]
    assert len(failed) == 1 and "unreachable" in failed[0]["error"]
    _append(writer, 1, start=2)
    anchorer.anchors = anchors
    assert anchorer.anchor_round() is not None
    with pytest.raises(VaultUnavailableError):
        down.read(writer.chain_id)


# --- logrotate and SIGKILL ---------------------------------------------------------


def test_chain_and_anchor_survive_logrotate(log_path: Path, anchors: AnchorStore) -> None:
    """The new file's first line carries the chain id; one anchor record covers old and new files."""
    writer = AuditFile(log_path)
    _append(writer, 4)
    anchorer, _ = _anchorer(writer, anchors)
    anchorer.anchor_round()
    old = log_path.with_name("audit.jsonl-20260101")
    os.rename(log_path, old)
    _append(writer, 3, start=4)
    anchorer.anchor_round()
    first_new = json.loads(log_path.read_bytes().splitlines()[0])
    last_old = json.loads(old.read_bytes().splitlines()[-1])
    assert first_new["chain_id"] == writer.chain_id and first_new["prev_hash"] == last_old["hash"]
    record = anchors.read(writer.chain_id).record
    assert record is not None and record.tip == writer.tip()
    both = verify([old, log_path], probe=record.seq)
    assert both.ok and both.probe is not None and both.probe.hash == record.hash
    alone = verify([log_path], start=Tip(last_old["seq"], last_old["hash"]), probe=record.seq)
    assert alone.ok and alone.chain_id == writer.chain_id and alone.probe is not None


KILLABLE = """
import sys
from pathlib import Path
from rotator.audit.anchor import Anchorer, AnchorStore, signature_problem
from rotator.audit.writer import AuditFile
from rotator.vault.store import VaultConnection, VaultStore

class Log:
    def __init__(self, writer): self.writer = writer
    def info(self, event, **f): self.writer.append({"event": event, **f})
    warning = error = info

writer = AuditFile(Path(sys.argv[1]))
store = VaultStore(VaultConnection(url=sys.argv[2], token=sys.argv[3]))
anchorer = Anchorer(writer, AnchorStore(store, ("secret", sys.argv[4])), log=lambda: Log(writer))
i = 0
while True:
    writer.append({"event": "test.tick", "i": i})
    i += 1
    if i % 7 == 0:
        anchorer.anchor_round()
"""


def test_a_sigkill_between_append_and_anchor_leaves_a_chain_the_next_process_continues(
    log_path: Path, anchors: AnchorStore, openbao: OpenBaoServer, prefix: str,
) -> None:
    """Killed at any moment, the file is at or past its anchor; the next process starts, anchors forward, verifies."""
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(log_path), openbao.addr, openbao.token, prefix], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (log_path.exists() and log_path.read_bytes().count(b'"audit.anchored"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    writer = AuditFile(log_path)
    anchorer, _ = _anchorer(writer, anchors)
    anchorer.check_at_start()
    before = anchors.read(writer.chain_id).record
    assert before is not None and before.seq <= writer.tip().seq
    _append(writer, 1)
    after = anchorer.anchor_round()
    assert after is not None and after.seq > before.seq
    result = verify([log_path], probe=after.seq)
    assert result.ok and result.probe is not None and result.probe.hash == after.hash


# --- the real daemon commands -----------------------------------------------------------------


def test_rotate_anchors_and_a_cut_file_stops_run_until_sealed(aws_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Real processes: rotate anchors its tip at exit; after `truncate`, verify --anchor fails and run
    refuses to append; `audit seal` records the cut; then run appends and anchors again."""
    from helpers import run_rotator

    w = aws_world
    log = tmp_path / "audit.jsonl"
    env = {**w.env, "ROTATOR_AUDIT_FILE": str(log)}
    code, events = w.cli("rotate", w.name, extra_env={"ROTATOR_AUDIT_FILE": str(log)})
    assert code == 0 and "audit.anchored" in [e["event"] for e in events]
    assert len(events) == log.read_bytes().count(b"\n")  # every stdout event is in the file, the start check's too
    anchored = run_rotator(["audit", "verify", str(log), "--anchor"], env)
    assert anchored.returncode == 0 and "anchored: seq" in anchored.stdout, anchored.stdout + anchored.stderr
    lines = log.read_bytes().count(b"\n")
    assert f"anchored: seq {lines} " in anchored.stdout  # the anchor is the very last line
    size = sum(len(line) for line in log.read_bytes().splitlines(keepends=True)[:-1])
    subprocess.run(["truncate", "-s", str(size), str(log)], check=True)
    cut = run_rotator(["audit", "verify", str(log), "--anchor"], env)
    assert cut.returncode == 1 and "missing (cut" in cut.stdout.splitlines()[0]
    before = log.read_bytes()
    refused = run_rotator(["run", "--once"], env)
    assert refused.returncode == 1 and "its newest lines were cut" in refused.stderr
    assert log.read_bytes() == before  # wrote nothing
    sealed = run_rotator(["audit", "seal", str(log)], env)
    assert sealed.returncode == 0 and "anchored: seq" in sealed.stdout, sealed.stdout + sealed.stderr
    assert w.cli("run", "--once", extra_env={"ROTATOR_AUDIT_FILE": str(log)})[0] == 0
    after = run_rotator(["audit", "verify", str(log), "--anchor"], env)
    assert after.returncode == 0, after.stdout
    assert "missing (cut), sealed by audit.chain_broken" in after.stdout


def test_the_shipped_policy_allows_signed_anchors(bao_client: hvac.Client, openbao: OpenBaoServer, log_path: Path, unique: str) -> None:
    """A token holding only config/rotator.hcl anchors under the state prefix and signs with transit/rotator-audit."""
    from policy_token import vault_policy_token

    if "transit/" not in bao_client.sys.list_mounted_secrets_engines()["data"]:
        bao_client.sys.enable_secrets_engine("transit", path="transit")
    bao_client.secrets.transit.create_key(name="rotator-audit", key_type="ed25519")
    limited = VaultStore(VaultConnection(url=openbao.addr, token=vault_policy_token(bao_client)))
    limited.login()
    anchors = AnchorStore(limited, ("secret", f"rotator/state/{unique}/_audit"), transit=("transit", "rotator-audit"))
    writer = AuditFile(log_path)
    _append(writer, 2)
    anchorer, log = _anchorer(writer, anchors)
    anchorer.check_at_start()
    assert anchorer.anchor_round() is not None, log.events
    stored = anchors.read(writer.chain_id)
    assert stored.record is not None and (stored.record.signature or "").startswith("vault:v")
    root = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    assert signature_problem(stored.record, stored.version, store=root, transit=("transit", "rotator-audit")) is None


def test_an_anchor_written_back_through_kv_is_logged_into_the_chain_at_start(
    log_path: Path, anchors: AnchorStore, bao_client: hvac.Client,
) -> None:
    """A record whose kv_version is not its version was rewound: the next process logs audit.anchor_invalid, then anchors forward."""
    writer = AuditFile(log_path)
    _append(writer, 2)
    _anchorer(writer, anchors)[0].anchor_round()
    path = anchors.path(writer.chain_id)
    old = bao_client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", version=1, raise_on_deleted_version=True)["data"]["data"]
    bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret=old, mount_point="secret")
    anchorer, log = _anchorer(AuditFile(log_path), anchors)
    anchorer.check_at_start()
    anchorer.log_start_findings()
    (invalid,) = [e for e in log.events if e["event"] == "audit.anchor_invalid"]
    assert "names version 1 but is version 3" in invalid["error"]
    assert anchorer.anchor_round() is not None


TWO_WRITERS = KILLABLE.replace("while True:", "for _ in range(int(sys.argv[5])):").replace(
    'writer.append({"event": "test.tick", "i": i})', 'writer.append({"event": "test.tick", "i": i, "pid": __import__("os").getpid()})',
) + "\nanchorer.anchor_round()\n"


def test_two_processes_appending_at_once_keep_one_chain_and_one_anchor(
    log_path: Path, anchors: AnchorStore, openbao: OpenBaoServer, prefix: str,
) -> None:
    """Two OS processes appending and anchoring concurrently: one gapless chain, one anchor at its tip."""
    procs = [subprocess.Popen([sys.executable, "-c", TWO_WRITERS, str(log_path), openbao.addr, openbao.token, prefix, "60"],
                              stderr=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    writer = AuditFile(log_path)
    records = [json.loads(line) for line in log_path.read_bytes().splitlines()]
    assert len({r["pid"] for r in records if r["event"] == "test.tick"}) == 2
    stored = anchors.read(writer.chain_id)
    assert stored.record is not None and stored.record.tip == writer.tip()  # the last one out anchored the very tip
    result = verify([log_path], probe=stored.record.seq)
    assert result.ok and result.probe is not None and result.probe.hash == stored.record.hash


def test_a_malformed_anchor_is_logged_as_evidence_and_written_past(log_path: Path, anchors: AnchorStore, bao_client: hvac.Client) -> None:
    """Garbage written to the anchor path does not stop anchoring: audit.anchor_invalid, then a check-and-set write over it."""
    writer = AuditFile(log_path)
    _append(writer, 2)
    bao_client.secrets.kv.v2.create_or_update_secret(path=anchors.path(writer.chain_id), secret={"seq": "many"}, mount_point="secret")
    anchorer, log = _anchorer(writer, anchors)
    anchorer.check_at_start()
    anchorer.log_start_findings()
    (invalid,) = [e for e in log.events if e["event"] == "audit.anchor_invalid"]
    assert "missing or malformed" in invalid["error"] and "many" not in invalid["error"]
    assert anchorer.anchor_round() is not None
    stored = anchors.read(writer.chain_id)
    assert stored.version == 3 and stored.record is not None and stored.record.tip == writer.tip()
