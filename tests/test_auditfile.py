"""The tamper-evident audit file: chain format, tamper detection, several
writers, crashes, logrotate and the documented recovery path (`seal`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rotator.audit.chain import (
    CHAIN_BROKEN_EVENT,
    GENESIS_HASH,
    AuditChainError,
    ChainState,
    Pending,
    Tip,
    canonical_json,
    encode_chain_state,
    read_chain_state,
)
from rotator.audit.writer import AuditFile
from rotator.audit.seal import seal
from rotator.audit.verify import verify
from rotator.core.clock import FakeClock

# A writer process: appends COUNT events (forever if COUNT < 0) as WRITER.
WRITER = """
import sys
from pathlib import Path
from rotator.audit.writer import AuditFile

audit = AuditFile(Path(sys.argv[1]))
count, writer = int(sys.argv[2]), sys.argv[3]
i = 0
while count < 0 or i < count:
    audit.append({"event": "test.tick", "level": "info", "writer": writer, "i": i})
    i += 1
"""


def _event(i: int) -> dict[str, object]:
    return {"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "test.tick", "i": i}


def _write_events(path: Path, count: int, *, start: int = 0) -> AuditFile:
    audit = AuditFile(path)
    for i in range(start, start + count):
        audit.append(_event(i))
    return audit


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(path)]


def _spawn(path: Path, count: int, writer: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count), writer], stderr=subprocess.PIPE)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# --- format ---------------------------------------------------------------------


def test_first_event_links_to_64_zeros_and_seq_starts_at_1(log: Path) -> None:
    """The first record has seq 1 and a prev_hash of 64 zeros; each next one links to the last."""
    _write_events(log, 3)
    first, second, third = _records(log)
    assert (first["seq"], first["prev_hash"]) == (1, GENESIS_HASH)
    assert (second["seq"], second["prev_hash"]) == (2, first["hash"])
    assert (third["seq"], third["prev_hash"]) == (3, second["hash"])


def test_hash_matches_an_independent_canonical_json_with_non_ascii_unescaped(log: Path) -> None:
    """The hash is SHA-256 of the sorted, compact, UTF-8 JSON without `hash`, and "é" is written as is."""
    returned = AuditFile(log).append({"event": "credential.issued", "owner": "équipe", "key_id": "AKIA…"})
    raw = log.read_bytes()
    assert "équipe".encode() in raw and b"\\u00e9" not in raw
    on_disk = json.loads(raw)
    body = {k: v for k, v in on_disk.items() if k != "hash"}
    expected = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    ).hexdigest()
    assert on_disk["hash"] == expected == returned["hash"]
    assert raw == (json.dumps(on_disk, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    assert canonical_json(on_disk) + "\n" == raw.decode()


def test_append_returns_exactly_what_the_line_holds(log: Path) -> None:
    """Values that are not JSON types are stored as strings, and the returned record equals the line."""
    returned = AuditFile(log).append({"event": "x", "path": Path("/a/b")})
    assert returned == _records(log)[0]
    assert returned["path"] == "/a/b"


def test_event_carrying_its_own_chain_fields_is_refused(log: Path) -> None:
    """An event that already has `seq`, `prev_hash` or `hash` is rejected rather than overwritten."""
    with pytest.raises(ValueError, match="seq"):
        AuditFile(log).append({"event": "x", "seq": 7})


# --- verify catches tampering --------------------------------------------------


def test_intact_file_verifies(log: Path) -> None:
    """An untouched file verifies, counting every event."""
    _write_events(log, 5)
    result = verify([log])
    assert result.ok and result.reason == "intact" and result.events == 5
    assert result.line is None and result.continues_from is None


def test_verify_catches_an_edited_line(log: Path) -> None:
    """Changing a value on line 3 is reported at line 3."""
    _write_events(log, 5)
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"i":2', b'"i":9')
    log.write_bytes(b"".join(lines))
    result = verify([log])
    assert not result.ok and (result.file, result.line) == (log, 3)
    assert "edited" in result.reason and result.events == 2


def test_verify_catches_an_edited_line_whose_hash_was_recomputed(log: Path) -> None:
    """An edit with a freshly computed hash breaks the next line's prev_hash."""
    _write_events(log, 5)
    records = _records(log)
    records[1]["i"] = 99
    body = {k: v for k, v in records[1].items() if k != "hash"}
    records[1]["hash"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    log.write_text("".join(canonical_json(r) + "\n" for r in records), encoding="utf-8")
    result = verify([log])
    assert not result.ok and result.line == 3 and "prev_hash" in result.reason


def test_verify_catches_a_reformatted_line(log: Path) -> None:
    """A line re-serialised with spaces (same data) is not canonical and is reported."""
    _write_events(log, 3)
    lines = _lines(log)
    lines[1] = (json.dumps(json.loads(lines[1]), sort_keys=True) + "\n").encode()
    log.write_bytes(b"".join(lines))
    result = verify([log])
    assert not result.ok and result.line == 2 and "canonical" in result.reason


def test_verify_catches_a_deleted_line(log: Path) -> None:
    """Removing line 3 is reported at the line that now follows line 2."""
    _write_events(log, 5)
    lines = _lines(log)
    del lines[2]
    log.write_bytes(b"".join(lines))
    result = verify([log])
    assert not result.ok and result.line == 3
    assert "seq 4 where 3 was expected" in result.reason and "missing" in result.reason


def test_verify_catches_two_swapped_lines(log: Path) -> None:
    """Swapping lines 2 and 3 is reported at line 2."""
    _write_events(log, 5)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.write_bytes(b"".join(lines))
    result = verify([log])
    assert not result.ok and result.line == 2 and "seq 3 where 2 was expected" in result.reason


def test_verify_catches_an_inserted_line(log: Path) -> None:
    """A forged but self-consistent record inserted after line 2 is reported at line 3."""
    _write_events(log, 4)
    lines = _lines(log)
    second = json.loads(lines[1])
    forged = {"event": "credential.revoked", "seq": 3, "prev_hash": second["hash"]}
    forged["hash"] = hashlib.sha256(canonical_json(forged).encode()).hexdigest()
    lines.insert(2, (canonical_json(forged) + "\n").encode())
    log.write_bytes(b"".join(lines))
    result = verify([log])
    assert not result.ok and result.line == 4
    assert "inserted or out of order" in result.reason


def test_verify_catches_a_truncated_last_line(log: Path) -> None:
    """A last line cut short (no newline) is reported as a torn write at that line."""
    _write_events(log, 4)
    data = log.read_bytes()
    log.write_bytes(data[:-20])
    result = verify([log])
    assert not result.ok and result.line == 4 and "torn write" in result.reason
    assert result.last is not None and result.last.seq == 3


def test_verify_reports_an_unreadable_file(tmp_path: Path) -> None:
    """A missing file is a failure naming that file, not a crash."""
    result = verify([tmp_path / "missing.jsonl"])
    assert not result.ok and result.file == tmp_path / "missing.jsonl" and "cannot read" in result.reason


# --- writers -------------------------------------------------------------------


def test_chain_continues_across_reopen(log: Path) -> None:
    """A new AuditFile on the same path continues the seq and hash chain."""
    _write_events(log, 3)
    returned = AuditFile(log).append(_event(3))
    assert returned["seq"] == 4 and returned["prev_hash"] == _records(log)[2]["hash"]
    assert verify([log]).ok


def test_threads_sharing_one_writer_keep_one_chain(log: Path) -> None:
    """Threads appending through one AuditFile never duplicate a seq."""
    audit = AuditFile(log)
    threads = [threading.Thread(target=lambda t=t: [audit.append(_event(t * 100 + i)) for i in range(25)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = verify([log])
    assert result.ok and result.events == 100


def test_two_processes_appending_concurrently_give_one_intact_chain(log: Path) -> None:
    """Two OS processes appending 300 events each produce one gapless chain."""
    writers = [_spawn(log, 300, name) for name in ("a", "b")]
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err.decode()
    result = verify([log])
    assert result.ok and result.events == 600
    records = _records(log)
    assert [r["seq"] for r in records] == list(range(1, 601))
    assert {r["writer"] for r in records} == {"a", "b"}


def test_chain_survives_sigkill_of_a_writer_and_restart(log: Path) -> None:
    """After a SIGKILL mid-stream the file verifies and a restarted writer continues the chain."""
    writer = _spawn(log, -1, "doomed")
    deadline = time.monotonic() + 30
    while (not log.exists() or log.read_bytes().count(b"\n") < 50) and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    before = verify([log])
    assert before.ok and before.events >= 50
    _write_events(log, 5)
    after = verify([log])
    assert after.ok and after.events == before.events + 5


# --- torn tails and seal --------------------------------------------------------


def _tear(path: Path) -> bytes:
    """Leave a partial line at the end, as a crash mid-write would."""
    torn = b'{"event":"credential.revoked","level":"info","prev_h'
    with path.open("ab") as stream:
        stream.write(torn)
    return torn


def test_torn_tail_is_reported_not_chained_over(log: Path) -> None:
    """A writer refuses a file ending in a partial line, at open and at append."""
    audit = _write_events(log, 3)
    _tear(log)
    with pytest.raises(AuditChainError, match="torn write"):
        AuditFile(log)
    with pytest.raises(AuditChainError, match="torn write"):
        audit.append(_event(3))
    result = verify([log])
    assert not result.ok and result.line == 4


def test_garbled_last_line_after_power_loss_is_a_torn_tail(log: Path) -> None:
    """A last line of zero bytes (a block the crash never wrote) is torn: refused, reported and sealable."""
    _write_events(log, 3)
    with log.open("ab") as stream:
        stream.write(b"\0" * 40 + b"\n")
    with pytest.raises(AuditChainError, match="torn write"):
        AuditFile(log)
    result = verify([log])
    assert not result.ok and result.line == 4 and "torn write" in result.reason
    aside = seal(log, clock=FakeClock())
    assert aside is not None and verify([aside, log]).ok


def test_complete_but_altered_last_line_is_not_chained_over(log: Path) -> None:
    """A last line whose hash no longer matches stops the writer too."""
    _write_events(log, 2)
    log.write_bytes(log.read_bytes().replace(b'"i":1', b'"i":7'))
    with pytest.raises(AuditChainError, match="edited"):
        AuditFile(log)


def test_seal_moves_the_torn_file_aside_and_records_the_break(log: Path) -> None:
    """seal keeps the torn file as evidence and starts a new file with audit.chain_broken linked to the last intact line."""
    _write_events(log, 3)
    torn = _tear(log)
    aside = seal(log, clock=FakeClock())
    assert aside is not None and aside.name == "audit.jsonl.broken-20260101T000000Z"
    assert aside.read_bytes().endswith(torn)
    (broken,) = _records(log)
    last_good = json.loads(_lines(aside)[2])
    assert broken["event"] == CHAIN_BROKEN_EVENT
    assert (broken["seq"], broken["prev_hash"]) == (4, last_good["hash"])
    assert broken["torn_line"] == 4 and broken["torn_bytes"] == len(torn)
    assert broken["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    AuditFile(log).append(_event(4))
    both = verify([aside, log])
    assert both.ok and both.events == 5 and any("sealed by audit.chain_broken" in n for n in both.notes)
    assert not verify([aside]).ok
    assert not verify([log]).ok  # strict: the new file alone does not start at genesis
    resumed = verify([log], start=Tip(3, last_good["hash"]))
    assert resumed.ok and resumed.continues_from == 3


def test_verify_rejects_a_torn_file_followed_by_an_unrelated_file(log: Path) -> None:
    """A torn tail is accepted only when the next file opens with the chain_broken naming it."""
    _write_events(log, 3)
    _tear(log)
    aside = seal(log, clock=FakeClock())
    assert aside is not None
    lines = _lines(log)
    record = json.loads(lines[0])
    record["torn_bytes"] += 1
    record["hash"] = hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"}).encode()).hexdigest()
    log.write_bytes((canonical_json(record) + "\n").encode())
    result = verify([aside, log])
    assert not result.ok and (result.file, result.line) == (aside, 4)


def test_seal_refuses_a_file_altered_before_its_end(log: Path) -> None:
    """Damage to a complete line is tampering to investigate, so seal refuses and moves nothing."""
    _write_events(log, 4)
    log.write_bytes(log.read_bytes().replace(b'"i":1', b'"i":5'))
    _tear(log)
    with pytest.raises(AuditChainError, match="not a torn write"):
        seal(log, clock=FakeClock())
    assert log.exists() and len(list(log.parent.iterdir())) == 2  # the file and its sidecar


def test_seal_of_an_intact_file_is_refused(log: Path) -> None:
    """There is nothing to seal on a file that does not end torn."""
    _write_events(log, 2)
    with pytest.raises(AuditChainError, match="nothing to seal"):
        seal(log)


def test_seal_when_the_first_line_is_torn_links_to_the_sidecar_tip(log: Path) -> None:
    """A new file whose only line is torn is sealed from the tip the sidecar held."""
    _write_events(log, 2)
    old = log.with_name("audit.jsonl.1")
    os.rename(log, old)
    _tear(log)
    aside = seal(log, clock=FakeClock())
    assert aside is not None
    AuditFile(log).append(_event(2))
    assert verify([old, aside, log]).ok


# --- logrotate -------------------------------------------------------------------


def test_rotated_file_is_continued_by_the_new_one(log: Path) -> None:
    """After a move-aside rotation the new file continues the chain, in the same writer object."""
    audit = _write_events(log, 4)
    old = log.with_name("audit.jsonl.1")
    os.rename(log, old)
    first_new = audit.append(_event(4))
    AuditFile(log).append(_event(5))
    assert first_new["seq"] == 5 and first_new["prev_hash"] == _records(old)[-1]["hash"]
    both = verify([old, log])
    assert both.ok and both.events == 6 and both.continues_from is None
    alone = verify([log])
    assert not alone.ok and (alone.file, alone.line) == (log, 1) and "genesis" in alone.reason
    last = _records(old)[-1]
    resumed = verify([log], start=Tip(4, str(last["hash"])))
    assert resumed.ok and resumed.continues_from == 4 and resumed.reason == "intact"
    wrong = verify([log], start=Tip(4, "ab" * 32))
    assert not wrong.ok and wrong.line == 1 and "after --from 4:" in wrong.reason


def test_files_given_out_of_order_or_with_a_gap_fail_at_the_file_boundary(log: Path) -> None:
    """The first line of a later file must link to the previous file's last line."""
    audit = _write_events(log, 2)
    first, second = log.with_name("audit.jsonl.2"), log.with_name("audit.jsonl.1")
    os.rename(log, first)
    audit.append(_event(2))
    os.rename(log, second)
    audit.append(_event(3))
    assert verify([first, second, log]).ok
    swapped = verify([second, first, log])
    assert not swapped.ok and (swapped.file, swapped.line) == (second, 1) and "genesis" in swapped.reason
    gap = verify([first, log])
    assert not gap.ok and (gap.file, gap.line) == (log, 1) and "missing" in gap.reason


def _crash_between_line_and_commit(log: Path, *, line_landed: bool) -> Tip:
    """Rewrite the sidecar as a crash right after (or before) writing the next line would leave it."""
    state = read_chain_state(log)
    assert state is not None and state.pending is None
    audit_stat = log.stat()
    record = AuditFile(log).append(_event(99)) if line_landed else None
    if record is None:
        pending = Pending(state.tip.seq + 1, "ab" * 32, audit_stat.st_dev, audit_stat.st_ino, audit_stat.st_size)
    else:
        pending = Pending(record["seq"], record["hash"], audit_stat.st_dev, audit_stat.st_ino, audit_stat.st_size)
    log.with_name(log.name + ".chain").write_bytes(encode_chain_state(ChainState(state.tip, pending, state.chain_id)))
    return Tip(pending.seq, pending.hash) if line_landed else state.tip


@pytest.mark.parametrize("line_landed", [True, False])
def test_interrupted_append_then_rotation_is_resolved_from_the_rotated_file(log: Path, line_landed: bool) -> None:
    """The writer finds the rotated file by inode and continues from what it really holds."""
    _write_events(log, 3)
    expected = _crash_between_line_and_commit(log, line_landed=line_landed)
    old = log.with_name("audit.jsonl-20260101")
    os.rename(log, old)
    record = AuditFile(log).append(_event(4))
    assert (record["seq"], record["prev_hash"]) == (expected.seq + 1, expected.hash)
    assert verify([old, log]).ok


def test_interrupted_append_with_the_rotated_file_gone_needs_seal_previous(log: Path, tmp_path: Path) -> None:
    """If the rotated file left the directory the writer refuses; seal --previous resumes the chain."""
    _write_events(log, 3)
    _crash_between_line_and_commit(log, line_landed=True)
    elsewhere = tmp_path / "archive"
    elsewhere.mkdir()
    old = elsewhere / "audit.jsonl.1"
    old.write_bytes(log.read_bytes())  # a copy (as compression makes): a new inode
    log.unlink()
    with pytest.raises(AuditChainError, match="seal"):
        AuditFile(log)
    assert seal(log, previous=old) is None
    AuditFile(log).append(_event(5))
    assert verify([old, log]).ok


def test_seal_previous_refuses_a_file_that_is_not_the_interrupted_one(log: Path, tmp_path: Path) -> None:
    """seal --previous checks the given file against the interrupted append the sidecar records."""
    _write_events(log, 3)
    _crash_between_line_and_commit(log, line_landed=True)
    wrong = tmp_path / "older.jsonl"
    wrong.write_bytes(b"".join(_lines(log)[:2]))
    log.unlink()
    with pytest.raises(AuditChainError, match="wrong file"):
        seal(log, previous=wrong)


def test_damaged_sidecar_is_refused_and_seal_previous_repairs_it(log: Path) -> None:
    """A new file with a damaged sidecar is not started from a guess; seal --previous resumes from the rotated file."""
    _write_events(log, 3)
    old = log.with_name("audit.jsonl.1")
    os.rename(log, old)
    log.with_name("audit.jsonl.chain").write_bytes(b'{"seq":3,"hash":"00"}')
    with pytest.raises(AuditChainError, match="sidecar is damaged"):
        AuditFile(log)
    seal(log, previous=old)
    AuditFile(log).append(_event(3))
    assert verify([old, log]).ok


# --- the command line's usage errors -----------------------------------------------


@pytest.mark.parametrize(("args", "phrase"), [
    (["--from", "3"], "expected SEQ:HASH"),
    (["--from", "0:" + "a" * 64], "expected SEQ:HASH"),
    (["--from", "3:ABC"], "64 lowercase hex digits"),
    (["--public-key", "PEM"], "give --anchor too"),
])
def test_verify_usage_errors_exit_2_naming_the_option(log: Path, args: list[str], phrase: str) -> None:
    """A malformed --from, or --public-key without --anchor, is a usage error (exit 2), never a verdict."""
    from click.testing import CliRunner

    from rotator.cli import cli

    _write_events(log, 1)
    pem = log.with_name("key.pem")
    pem.write_text("not a key")
    args = [str(pem) if a == "PEM" else a for a in args]
    result = CliRunner().invoke(cli, ["audit", "verify", str(log), *args])
    assert result.exit_code == 2 and phrase in result.output


def test_verify_from_links_a_continued_file_and_rejects_the_wrong_hash(log: Path) -> None:
    """--from SEQ:HASH is the link a rotated-in file must continue; anything else fails at line 1."""
    from click.testing import CliRunner

    from rotator.cli import cli

    audit = _write_events(log, 3)
    old = log.with_name("audit.jsonl-1")
    os.rename(log, old)
    audit.append(_event(3))
    last = _records(old)[-1]
    good = CliRunner().invoke(cli, ["audit", "verify", str(log), "--from", f"3:{last['hash']}"])
    assert good.exit_code == 0 and good.output.startswith("intact: 1 event(s) in 1 file(s), seq 4 to 4")
    bad = CliRunner().invoke(cli, ["audit", "verify", str(log), "--from", f"3:{'0' * 64}"])
    assert bad.exit_code == 1 and bad.output.startswith(f"{log}:1: prev_hash does not match the hash of seq 3 after --from 3:")


def test_verify_anchor_with_vault_down_still_names_the_bad_line_first(log: Path) -> None:
    """The chain's own verdict comes first; an unreachable Vault is exit 1 on stderr only when the chain is intact."""
    from click.testing import CliRunner

    from rotator.cli import cli

    _write_events(log, 3)
    import structlog

    env = {"VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": "t", "ROTATOR_LOG_FORMAT": "json"}
    try:
        intact = CliRunner().invoke(cli, ["audit", "verify", str(log), "--anchor"], env=env)
        log.write_bytes(log.read_bytes().replace(b'"i":1', b'"i":7'))
        broken = CliRunner().invoke(cli, ["audit", "verify", str(log), "--anchor"], env=env)
    finally:
        structlog.reset_defaults()  # the command pointed logging at CliRunner's streams
    assert intact.exit_code == 1 and "cannot read the audit anchor from Vault" in intact.output
    assert broken.exit_code == 1 and broken.output.splitlines()[-1].startswith(f"{log}:2: hash does not match")
