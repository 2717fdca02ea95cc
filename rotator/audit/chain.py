"""The audit chain's format and its on-disk pieces (`ROTATOR_AUDIT_FILE`, contract §7).

Invariants this module keeps:
- Each line is the canonical JSON of one event plus `seq` (1-based, gapless
  across the whole chain and across rotated files), `prev_hash` (the
  previous line's `hash`; 64 zeros before the first event) and `hash`
  (SHA-256 hex of the canonical JSON of the line without `hash`). The first
  line of every file also carries `chain_id`: the chain's identity, which
  names its anchor in Vault and survives logrotate.
- A line is accepted only byte-exact: canonical, and matching its own hash.
- The sidecar `FILE.chain` is one fixed-size record with a checksum, holding
  the committed tip, the chain id and any append in flight; `commit` writes
  it before the line (pending) and after it (committed), each fsynced.

The writer is rotator.audit.writer, verification and `seal` rotator.audit.verify,
anchors rotator.audit.anchor; docs/AUDIT.md explains the whole.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rotator.core.errors import RotatorError

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = ("seq", "prev_hash", "hash")
CHAIN_ID_FIELD = "chain_id"
CHAIN_BROKEN_EVENT = "audit.chain_broken"
TORN_REASON = "torn write: the last line is incomplete or garbled (an interrupted append)"
_CHUNK = 8192
# One fixed-size record, rewritten in place: a single sector write, and no
# stale bytes left behind when a shorter record replaces a longer one.
_STATE_SIZE = 512
_HEX = frozenset("0123456789abcdef")


class AuditChainError(RotatorError):
    """The audit chain cannot be continued or is broken at `file` (`line`)."""

    def __init__(self, file: Path, reason: str, *, line: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Tip:
    """The last event of a chain: its `seq` and `hash`."""

    seq: int
    hash: str


GENESIS = Tip(0, GENESIS_HASH)


def canonical_json(obj: Mapping[str, Any]) -> str:
    """The one serialisation hashes are computed over (contract §7)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of `record` without its `hash`."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def new_chain_id() -> str:
    """A fresh chain identity: 32 random hex digits."""
    return uuid.uuid4().hex


def link(event: Mapping[str, Any], tip: Tip, *, chain_id: str | None = None) -> dict[str, Any]:
    """The record that follows `tip`: `event` plus `seq`, `prev_hash`, `hash`
    (and `chain_id` when given: on the first line of a file)."""
    clash = sorted(set(event) & {*CHAIN_FIELDS, CHAIN_ID_FIELD})
    if clash:
        raise ValueError(f"an audit event may not carry its own {', '.join(clash)}")
    # Values that are not JSON types (datetime, Path, ...) are stored as str, so
    # the returned record is exactly what the line holds.
    record: dict[str, Any] = json.loads(json.dumps(dict(event), default=str))
    if chain_id is not None:
        record[CHAIN_ID_FIELD] = chain_id
    record["seq"] = tip.seq + 1
    record["prev_hash"] = tip.hash
    record["hash"] = chain_hash(record)
    return record


class BadLineError(ValueError):
    """One line of an audit file is not a well-formed, self-consistent record."""


def parse_line(raw: bytes) -> dict[str, Any]:
    """The record on one raw line (with its newline), checked on its own."""
    if not raw.endswith(b"\n"):
        raise BadLineError(TORN_REASON)
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise BadLineError("not valid JSON (UTF-8)") from exc
    if not isinstance(record, dict):
        raise BadLineError("not a JSON object")
    if not _has_chain_fields(record):
        raise BadLineError("missing or malformed seq / prev_hash / hash")
    # Byte-exact: catches edits that parse to the same dict (spaces, key order,
    # escapes, duplicate keys) as well as changed values.
    if raw[:-1].decode("utf-8") != canonical_json(record):
        raise BadLineError("not in canonical form: the line was edited or reformatted")
    if chain_hash(record) != record["hash"]:
        raise BadLineError("hash does not match the line's content: the line was edited")
    return record


def is_torn(raw: bytes) -> bool:
    """Whether a file's last line looks like an interrupted write, not an edit.

    A crash mid-append leaves a prefix of the line (no newline) or, after a
    power loss, blocks of garbage; an edit leaves well-formed JSON.
    """
    if not raw.endswith(b"\n"):
        return True
    try:
        json.loads(raw.decode("utf-8"))
    except ValueError:
        return True
    return False


def _has_chain_fields(record: Mapping[str, Any]) -> bool:
    seq = record.get("seq")
    hashes = (record.get("prev_hash"), record.get("hash"))
    return (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 1
        and all(isinstance(h, str) and len(h) == 64 and set(h) <= _HEX for h in hashes)
    )


# --- low-level file helpers -------------------------------------------------


@contextmanager
def opened(path: Path, flags: int, mode: int = 0o640) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def flocked(fd: int, kind: int = fcntl.LOCK_EX) -> Iterator[None]:
    fcntl.flock(fd, kind)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def fsync_dir(directory: Path) -> None:
    with opened(directory, os.O_RDONLY) as fd:
        os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_last_line(fd: int, size: int) -> bytes:
    """The bytes after the second-to-last newline, reading backwards in chunks."""
    buf = b""
    pos = size
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 :]
    return buf


def tip_of_file(fd: int, path: Path) -> Tip | None:
    """The tip recorded by the file's last line; None for an empty file."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    raw = read_last_line(fd, size)
    if is_torn(raw):
        raise AuditChainError(
            path, f"{TORN_REASON}; not chaining over it: run `rotator audit seal {path}` (see docs/AUDIT.md)"
        )
    try:
        record = parse_line(raw)
    except BadLineError as exc:
        raise AuditChainError(
            path, f"last line was altered ({exc}); not chaining over it: investigate with `rotator audit verify`"
        ) from exc
    return Tip(record["seq"], record["hash"])


# --- the sidecar: FILE.chain ------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """An append in flight: the line for `seq` goes to inode (`dev`, `ino`) at `offset`."""

    seq: int
    hash: str
    dev: int
    ino: int
    offset: int


@dataclass(frozen=True)
class ChainState:
    """What the sidecar records: the committed tip, any append in flight, the chain's id."""

    tip: Tip
    pending: Pending | None = None
    chain_id: str | None = None


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".chain")


def encode_chain_state(state: ChainState) -> bytes:
    """The sidecar's bytes for `state`: canonical JSON with a checksum, padded."""
    p = state.pending
    body: dict[str, Any] = {"seq": state.tip.seq, "hash": state.tip.hash, "pending": p and asdict(p), "chain": state.chain_id}
    body["check"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return (canonical_json(body) + "\n").encode().ljust(_STATE_SIZE, b" ")


def read_state(fd: int, path: Path) -> ChainState | None:
    raw = os.pread(fd, _STATE_SIZE, 0)
    if not raw:
        return None
    try:
        body = json.loads(raw.decode())
        check = body.pop("check")
        if hashlib.sha256(canonical_json(body).encode()).hexdigest() != check:
            raise ValueError("checksum")
        pending = Pending(**body["pending"]) if body["pending"] else None
        chain_id = body.get("chain")
        if chain_id is not None and not isinstance(chain_id, str):
            raise ValueError("chain")
        return ChainState(Tip(body["seq"], body["hash"]), pending, chain_id)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuditChainError(path, "chain sidecar is damaged; see docs/AUDIT.md (seal --previous)") from exc


def read_chain_state(path: Path) -> ChainState | None:
    """What the sidecar of audit file `path` records (None if there is none yet)."""
    chain = sidecar_path(Path(path))
    try:
        with opened(chain, os.O_RDONLY) as fd, flocked(fd, fcntl.LOCK_SH):
            return read_state(fd, chain)
    except FileNotFoundError:
        return None


def write_state(fd: int, state: ChainState, directory: Path) -> None:
    is_new = os.fstat(fd).st_size == 0
    os.pwrite(fd, encode_chain_state(state), 0)
    os.fsync(fd)
    if is_new:
        fsync_dir(directory)


def find_by_inode(directory: Path, dev: int, ino: int) -> Path | None:
    for entry in os.scandir(directory):
        st = entry.stat(follow_symlinks=False)
        if (st.st_dev, st.st_ino) == (dev, ino):
            return Path(entry.path)
    return None


def commit(fd: int, chain_fd: int, directory: Path, tip: Tip, record: Mapping[str, Any], chain_id: str | None) -> None:
    """Write `record` after `tip`: sidecar pending, line + fsync, sidecar committed."""
    st = os.fstat(fd)
    pending = Pending(record["seq"], record["hash"], st.st_dev, st.st_ino, st.st_size)
    write_state(chain_fd, ChainState(tip, pending, chain_id), directory)
    _write_all(fd, (canonical_json(record) + "\n").encode("utf-8"))
    os.fsync(fd)
    if st.st_size == 0:
        fsync_dir(directory)  # a new file's name must survive a crash too
    write_state(chain_fd, ChainState(Tip(record["seq"], record["hash"]), None, chain_id), directory)


def read_first_line(fd: int, limit: int = 1 << 20) -> bytes:
    """The file's first line (with its newline), reading forwards in chunks."""
    buf = b""
    while len(buf) < limit:
        chunk = os.pread(fd, _CHUNK, len(buf))
        if not chunk:
            return buf
        buf += chunk
        cut = buf.find(b"\n")
        if cut >= 0:
            return buf[: cut + 1]
    return buf


def lines_backwards(fd: int, size: int) -> Iterator[bytes]:
    """The file's complete lines, newest first, reading backwards in chunks."""
    buf = b""
    pos = size
    while True:
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            yield buf[cut + 1 :]
            buf = buf[: cut + 1]
            continue
        if pos == 0:
            if buf:
                yield buf
            return
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf


def chain_id_of(fd: int) -> str | None:
    """The `chain_id` on the file's first line, if it has one."""
    try:
        record = parse_line(read_first_line(fd))
    except BadLineError:
        return None
    value = record.get(CHAIN_ID_FIELD)
    return value if isinstance(value, str) and value else None


def is_gap_seal(record: Mapping[str, Any]) -> bool:
    """Whether `record` is the `audit.chain_broken` that `seal` writes over cut lines."""
    fields = ("missing_first", "missing_last", "after_seq")
    return record.get("event") == CHAIN_BROKEN_EVENT and all(
        isinstance(record.get(f), int) and not isinstance(record.get(f), bool) for f in fields
    ) and isinstance(record.get("after_hash"), str)


def seq_span(first: int, last: int) -> str:
    """`seq 7`, or `seq 5 to 7`: a range of lines for messages."""
    return f"seq {first}" if first == last else f"seq {first} to {last}"
