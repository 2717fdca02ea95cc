"""The tamper-evident audit file (`ROTATOR_AUDIT_FILE`, contract §7).

Invariants this module keeps:
- The file is append-only JSON lines. Each line is the canonical JSON of one
  event plus `seq` (1-based, gapless across the whole chain and across
  rotated files), `prev_hash` (the previous line's `hash`; 64 zeros before
  the first event) and `hash` (SHA-256 hex of the canonical JSON of the line
  without `hash`). The line itself is that canonical JSON with `hash` added.
- Every append is durable before `append` returns (fsync of the file, of the
  directory when the file is new, and of the sidecar).
- Appends are serialised across threads (a lock) and across processes
  (`flock` on the sidecar `FILE.chain`, then on the audit file itself). The
  sidecar lock is the one that orders writers: it is the only lock that
  survives logrotate moving the audit file away.
- A writer never chains over something it cannot vouch for: a torn or
  altered last line, a damaged sidecar, or an interrupted append whose
  outcome it cannot see all raise `AuditChainError`. Recovery is `seal`,
  which records the break in the chain itself (`audit.chain_broken`).
- The sidecar holds the chain's tip, so an empty or new file (after
  logrotate) continues the chain. It is written *before* each line (marking
  the append as pending) and after it (committed), so a crash between the
  two is visible rather than silently forking the chain.

docs/AUDIT.md explains the format, the recovery path and logrotate.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rotator.clock import Clock, SystemClock, to_rfc3339
from rotator.errors import RotatorError

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = ("seq", "prev_hash", "hash")
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


def link(event: Mapping[str, Any], tip: Tip) -> dict[str, Any]:
    """The record that follows `tip`: `event` plus `seq`, `prev_hash`, `hash`."""
    clash = sorted(set(event) & set(CHAIN_FIELDS))
    if clash:
        raise ValueError(f"an audit event may not carry its own {', '.join(clash)}")
    # Values that are not JSON types (datetime, Path, ...) are stored as str, so
    # the returned record is exactly what the line holds.
    record: dict[str, Any] = json.loads(json.dumps(dict(event), default=str))
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
def _opened(path: Path, flags: int, mode: int = 0o640) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _flocked(fd: int, kind: int = fcntl.LOCK_EX) -> Iterator[None]:
    fcntl.flock(fd, kind)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    with _opened(directory, os.O_RDONLY) as fd:
        os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_last_line(fd: int, size: int) -> bytes:
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


def _tip_of_file(fd: int, path: Path) -> Tip | None:
    """The tip recorded by the file's last line; None for an empty file."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    raw = _read_last_line(fd, size)
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
    """What the sidecar records: the committed tip and any append in flight."""

    tip: Tip
    pending: Pending | None = None


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".chain")


def encode_chain_state(state: ChainState) -> bytes:
    """The sidecar's bytes for `state`: canonical JSON with a checksum, padded."""
    p = state.pending
    body: dict[str, Any] = {"seq": state.tip.seq, "hash": state.tip.hash, "pending": p and asdict(p)}
    body["check"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return (canonical_json(body) + "\n").encode().ljust(_STATE_SIZE, b" ")


def _read_state(fd: int, path: Path) -> ChainState | None:
    raw = os.pread(fd, _STATE_SIZE, 0)
    if not raw:
        return None
    try:
        body = json.loads(raw.decode())
        check = body.pop("check")
        if hashlib.sha256(canonical_json(body).encode()).hexdigest() != check:
            raise ValueError("checksum")
        pending = Pending(**body["pending"]) if body["pending"] else None
        return ChainState(Tip(body["seq"], body["hash"]), pending)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuditChainError(path, "chain sidecar is damaged; see docs/AUDIT.md (seal --previous)") from exc


def read_chain_state(path: Path) -> ChainState | None:
    """What the sidecar of audit file `path` records (None if there is none yet)."""
    chain = sidecar_path(Path(path))
    try:
        with _opened(chain, os.O_RDONLY) as fd, _flocked(fd, fcntl.LOCK_SH):
            return _read_state(fd, chain)
    except FileNotFoundError:
        return None


def _write_state(fd: int, state: ChainState, directory: Path) -> None:
    is_new = os.fstat(fd).st_size == 0
    os.pwrite(fd, encode_chain_state(state), 0)
    os.fsync(fd)
    if is_new:
        _fsync_dir(directory)


def _find_by_inode(directory: Path, dev: int, ino: int) -> Path | None:
    for entry in os.scandir(directory):
        st = entry.stat(follow_symlinks=False)
        if (st.st_dev, st.st_ino) == (dev, ino):
            return Path(entry.path)
    return None


def _commit(fd: int, chain_fd: int, directory: Path, tip: Tip, record: Mapping[str, Any]) -> None:
    """Write `record` after `tip`: sidecar pending, line + fsync, sidecar committed."""
    st = os.fstat(fd)
    pending = Pending(record["seq"], record["hash"], st.st_dev, st.st_ino, st.st_size)
    _write_state(chain_fd, ChainState(tip, pending), directory)
    _write_all(fd, (canonical_json(record) + "\n").encode("utf-8"))
    os.fsync(fd)
    if st.st_size == 0:
        _fsync_dir(directory)  # a new file's name must survive a crash too
    _write_state(chain_fd, ChainState(Tip(record["seq"], record["hash"])), directory)


# --- the writer -------------------------------------------------------------


class AuditFile:
    """Appends hash-chained events to one path; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.chain_path = sidecar_path(self.path)
        self._lock = threading.Lock()
        self.tip()  # fail at start-up, not at the first rotation, on a torn tail

    def tip(self) -> Tip:
        """The chain's current tip, checked the same way `append` checks it."""
        with self._lock, self._locked() as (fd, chain_fd):
            return self._current_tip(fd, chain_fd)

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append `event`; return it with `seq`, `prev_hash` and `hash` added."""
        with self._lock, self._locked() as (fd, chain_fd):
            tip = self._current_tip(fd, chain_fd)
            record = link(event, tip)
            _commit(fd, chain_fd, self.path.parent, tip, record)
            return record

    @contextmanager
    def _locked(self) -> Iterator[tuple[int, int]]:
        # The audit file is opened only once the sidecar lock is held, so a
        # logrotate move in between is seen and the new file used. Reopening
        # per append (instead of caching an fd and a tail position) also means
        # the tail written by another process is always re-read and re-checked.
        with _opened(self.chain_path, os.O_RDWR | os.O_CREAT) as chain_fd, _flocked(chain_fd):
            with _opened(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd, _flocked(fd):
                yield fd, chain_fd

    def _current_tip(self, fd: int, chain_fd: int) -> Tip:
        tip = _tip_of_file(fd, self.path)
        if tip is not None:
            return tip  # the file is the authority whenever it has lines
        state = _read_state(chain_fd, self.chain_path)
        if state is None:
            return GENESIS
        if state.pending is None:
            return state.tip
        return self._resolve_pending(state, state.pending)

    def _resolve_pending(self, state: ChainState, pending: Pending) -> Tip:
        """After a crash mid-append and a rotation: did that line land in the old file?"""
        hint = f"run `rotator audit seal {self.path} --previous ROTATED_FILE` (see docs/AUDIT.md)"
        holder = _find_by_inode(self.path.parent, pending.dev, pending.ino)
        if holder is None:
            raise AuditChainError(self.path, f"append of seq {pending.seq} was interrupted and its file is gone; {hint}")
        try:
            with _opened(holder, os.O_RDONLY) as hfd:
                size, tail = os.fstat(hfd).st_size, _tip_of_file(hfd, holder)
        except AuditChainError as exc:
            raise AuditChainError(holder, f"the rotated file's last line is damaged; {hint}") from exc
        if tail == Tip(pending.seq, pending.hash):
            return tail
        # Inode numbers are reused, so the file found must also end where the
        # sidecar says the interrupted append started.
        if size == pending.offset and tail in (None, state.tip):
            return state.tip
        raise AuditChainError(holder, f"is not the file the interrupted append of seq {pending.seq} went to; {hint}")


# --- verification -----------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify`: the first bad line, or that the chain is intact.

    `file`/`line` (1-based) point at the first bad line when `ok` is False.
    `events` counts the lines that checked out before it. `continues_from` is
    the seq the first file links back to (a rotated predecessor not given),
    None when the chain starts at genesis. `last` is the last good tip.
    `notes` are informational (a continuation, a sealed break).
    """

    ok: bool
    file: Path | None
    line: int | None
    reason: str
    events: int
    continues_from: int | None = None
    last: Tip | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TornTail:
    """Bytes after a file's last newline: the remains of an interrupted append."""

    file: Path
    line: int
    raw: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


class _Walk:
    """Checks lines in chain order, remembering the tip and what it noticed."""

    def __init__(self) -> None:
        self.tip: Tip | None = None
        self.events = 0
        self.continues_from: int | None = None
        self.notes: list[str] = []
        self.torn: TornTail | None = None  # a torn tail waiting for its seal
        self.failure: VerifyResult | None = None

    def check_file(self, path: Path) -> None:
        with path.open("rb") as stream:
            for number, raw, is_final in _numbered_lines(stream):
                if is_final and is_torn(raw):
                    self.torn = TornTail(path, number, raw)  # the next file may seal it
                    return
                reason = self._check_line(path, number, raw)
                if reason is not None:
                    self.fail(path, number, reason)
                if self.failure is not None:
                    return

    def _check_line(self, path: Path, number: int, raw: bytes) -> str | None:
        try:
            record = parse_line(raw)
        except BadLineError as exc:
            if self.torn is not None:
                self.fail(self.torn.file, self.torn.line, TORN_REASON)  # the earlier problem
            return str(exc)
        if self.torn is not None and not self._accept_seal(path, record):
            return None  # the failure points at the torn line, already recorded
        reason = self._check_link(path, number, record)
        if reason is None:
            self.tip = Tip(record["seq"], record["hash"])
            self.events += 1
        return reason

    def _check_link(self, path: Path, number: int, record: Mapping[str, Any]) -> str | None:
        seq, prev_hash = record["seq"], record["prev_hash"]
        if self.tip is None:
            return self._check_start(path, seq, prev_hash)
        boundary = " (first line of this file vs. the previous file's last line)" if number == 1 else ""
        expected = self.tip.seq + 1
        if seq > expected:
            return f"seq {seq} where {expected} was expected: events are missing{boundary}"
        if seq < expected:
            return f"seq {seq} where {expected} was expected: events are inserted or out of order{boundary}"
        if prev_hash != self.tip.hash:
            return f"prev_hash does not match the hash of seq {self.tip.seq}: the chain was altered{boundary}"
        return None

    def _check_start(self, path: Path, seq: int, prev_hash: str) -> str | None:
        if prev_hash == GENESIS_HASH:
            return None if seq == 1 else f"seq {seq} on the first event of a chain (expected 1)"
        if seq == 1:
            return "seq 1 must have a prev_hash of 64 zeros"
        self.continues_from = seq - 1
        self.notes.append(f"{path} continues a chain from seq {seq - 1}")
        return None

    def _accept_seal(self, path: Path, record: Mapping[str, Any]) -> bool:
        """A torn tail is acceptable only if the next line is the `audit.chain_broken` naming it."""
        torn, self.torn = self.torn, None
        assert torn is not None
        if (
            record.get("event") == CHAIN_BROKEN_EVENT
            and record.get("torn_sha256") == torn.digest
            and record.get("torn_bytes") == len(torn.raw)
        ):
            self.notes.append(f"{torn.file}:{torn.line}: torn write, sealed by {CHAIN_BROKEN_EVENT} in {path}")
            return True
        self.fail(torn.file, torn.line, TORN_REASON)
        return False

    def fail(self, path: Path, line: int | None, reason: str) -> None:
        if self.failure is None:  # only the first bad line is reported
            self.failure = self._summary(False, path, line, reason)

    def result(self) -> VerifyResult:
        if self.failure is not None:
            return self.failure
        since = self.continues_from
        return self._summary(True, None, None, "intact" if since is None else f"intact; continues a chain from seq {since}")

    def _summary(self, ok: bool, path: Path | None, line: int | None, reason: str) -> VerifyResult:
        return VerifyResult(ok, path, line, reason, self.events, self.continues_from, self.tip, tuple(self.notes))


def _numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based number, raw line, is it the final one) up to the size seen under a shared lock.

    The lock is held only to read the size: a writer holds it exclusively while
    appending, so no half-written line is read, and a long verify never stalls
    the daemon. Bytes appended later are past `size` and not read.
    """
    with _flocked(stream.fileno(), fcntl.LOCK_SH):
        remaining = os.fstat(stream.fileno()).st_size
    number = 0
    while remaining > 0:
        raw = stream.readline(remaining)
        if not raw:
            return  # truncated under us; what was read is all there is
        remaining -= len(raw)
        number += 1
        yield number, raw, remaining == 0


def _walk(paths: Sequence[Path]) -> _Walk:
    walk = _Walk()
    for path in paths:
        try:
            walk.check_file(Path(path))
        except OSError as exc:
            walk.fail(Path(path), None, f"cannot read: {exc.strerror or exc}")
        if walk.failure is not None:
            break
    return walk


def verify(paths: Sequence[Path]) -> VerifyResult:
    """Check one file, or consecutive files in the given order, as one chain."""
    walk = _walk(paths)
    if walk.torn is not None:  # torn, and only empty files followed it
        walk.fail(walk.torn.file, walk.torn.line, TORN_REASON)
    return walk.result()


# --- recovery ---------------------------------------------------------------


def seal(path: Path, *, previous: Path | None = None, clock: Clock | None = None) -> Path | None:
    """Let appends resume after a broken end, recording the break in the chain.

    Without `previous`, `path` must end in a torn tail with every complete line
    intact (anything else is tampering to investigate, not to seal). It is
    moved aside to `PATH.broken-<UTC time>`, kept as evidence, and a new
    `path` starts with an `audit.chain_broken` event linked to the last intact
    line and naming the discarded bytes by length and SHA-256. Returns the
    moved-aside path.

    With `previous` (the rotated file an interrupted append went to, when the
    writer could not find it, or when the sidecar was lost), `path` must be
    empty or absent: the chain resumes from `previous`'s last intact line,
    through an `audit.chain_broken` event if `previous` ends torn. Returns None.
    """
    path, clock = Path(path), clock or SystemClock()
    with _opened(sidecar_path(path), os.O_RDWR | os.O_CREAT) as chain_fd, _flocked(chain_fd):
        if previous is not None:
            _resume_from(path, Path(previous), chain_fd, clock)
            return None
        tip, torn = _intact_part(path)
        if torn is None:
            raise AuditChainError(path, "does not end in a torn write: nothing to seal")
        tip = tip or _tip_before_torn(path, chain_fd)
        aside = path.with_name(f"{path.name}.broken-{clock.now().strftime('%Y%m%dT%H%M%SZ')}")
        if aside.exists():
            raise AuditChainError(aside, "already exists; not overwriting evidence")
        os.rename(path, aside)
        _fsync_dir(path.parent)
        _start_file(path, chain_fd, tip, _broken_event(aside, torn, clock))
        return aside


def _resume_from(path: Path, previous: Path, chain_fd: int, clock: Clock) -> None:
    tip, torn = _intact_part(previous)
    if tip is None:
        raise AuditChainError(previous, "has no intact line to continue from")
    _check_expected(previous, tip, chain_fd, sidecar_path(path))
    if torn is None:
        _start_file(path, chain_fd, tip, None)
    else:
        _start_file(path, chain_fd, tip, _broken_event(previous, torn, clock))


def _check_expected(previous: Path, tip: Tip, chain_fd: int, chain_path: Path) -> None:
    """Guard against resuming from the wrong rotated file when the sidecar can tell."""
    try:
        state = _read_state(chain_fd, chain_path)
    except AuditChainError:
        return  # a damaged sidecar is one reason to resume by hand
    if state is None or state.pending is None:
        return
    expected = (state.tip, Tip(state.pending.seq, state.pending.hash))
    if tip not in expected:
        raise AuditChainError(
            previous, f"ends at seq {tip.seq}, but the interrupted append was seq {state.pending.seq}: wrong file?"
        )


def _intact_part(path: Path) -> tuple[Tip | None, TornTail | None]:
    """The last intact line's tip and the torn tail, refusing any other damage."""
    walk = _Walk()
    walk.check_file(path)
    if walk.failure is not None:
        raise AuditChainError(
            path, f"{walk.failure.reason}: this is not a torn write; investigate, do not seal", line=walk.failure.line
        )
    return walk.tip, walk.torn


def _tip_before_torn(path: Path, chain_fd: int) -> Tip:
    # The torn line was the file's first: the sidecar still holds the tip the
    # interrupted append was linking to.
    state = _read_state(chain_fd, sidecar_path(path))
    if state is None:
        raise AuditChainError(path, "only a torn line and no sidecar: use seal --previous with the file before it")
    return state.tip


def _broken_event(broken: Path, torn: TornTail, clock: Clock) -> dict[str, Any]:
    return {
        "timestamp": to_rfc3339(clock.now()),
        "level": "warning",
        "event": CHAIN_BROKEN_EVENT,
        "broken_file": broken.name,
        "torn_line": torn.line,
        "torn_bytes": len(torn.raw),
        "torn_sha256": torn.digest,
    }


def _start_file(path: Path, chain_fd: int, tip: Tip, event: Mapping[str, Any] | None) -> None:
    """Make `path` (empty) continue from `tip`, optionally writing `event` first."""
    with _opened(path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd, _flocked(fd):
        if os.fstat(fd).st_size:
            raise AuditChainError(path, "already has events; seal only starts an empty file")
        if event is None:
            _write_state(chain_fd, ChainState(tip), path.parent)
        else:
            _commit(fd, chain_fd, path.parent, tip, link(event, tip))
