"""Strict verification of an audit chain, and `seal`, the one way past a break.

Invariants:
- `verify` starts at the chain's genesis (seq 1, `prev_hash` of 64 zeros)
  unless told where the files continue from (`start`, the `--from SEQ:HASH`
  of the rotated-out file before them); a file that starts anywhere else is
  reported at its line 1. Only the first bad line is reported.
- A break is accepted only where the chain itself records it: a torn tail
  followed by the `audit.chain_broken` naming its bytes, or cut lines
  followed by the `audit.chain_broken` naming the missing range and the
  last line before it. Each is noted; neither is ever silent.
- `seal` changes nothing unless it can name exactly what it seals, and never
  rewrites a line: a torn file is moved aside as evidence, a cut file gets
  one more line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rotator.auditchain import (
    CHAIN_BROKEN_EVENT,
    CHAIN_ID_FIELD,
    GENESIS,
    GENESIS_HASH,
    TORN_REASON,
    AuditChainError,
    BadLineError,
    ChainState,
    Tip,
    chain_id_of,
    commit,
    flocked,
    fsync_dir,
    is_gap_seal,
    is_torn,
    link,
    new_chain_id,
    opened,
    parse_line,
    read_state,
    seq_span,
    sidecar_path,
    write_state,
)
from rotator.clock import Clock, SystemClock, to_rfc3339

GENESIS_EXPECTED = (
    "where the chain's genesis (seq 1, prev_hash of 64 zeros) was expected: its oldest lines were cut, or it "
    "continues a rotated-out file (verify that file too, oldest first, or give --from SEQ:HASH)"
)


@dataclass(frozen=True)
class Probe:
    """Where the walk found one seq: the file, the line and its hash."""

    file: Path
    line: int
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify`: the first bad line, or that the chain is intact.

    `file`/`line` (1-based) point at the first bad line when `ok` is False.
    `events` counts the lines that checked out before it. `continues_from` is
    the seq the files link back to (`start`), None from genesis. `last` is
    the last good tip. `notes` are informational (a sealed break). `gaps`:
    seq ranges that `audit.chain_broken` events record as cut. `chain_id`:
    the id the chain's lines declare. `probe`: where the seq asked for was.
    """

    ok: bool
    file: Path | None
    line: int | None
    reason: str
    events: int
    continues_from: int | None = None
    last: Tip | None = None
    notes: tuple[str, ...] = ()
    gaps: tuple[tuple[int, int], ...] = ()
    chain_id: str | None = None
    probe: Probe | None = None
    first: int | None = None  # the first seq checked


@dataclass(frozen=True)
class TornTail:
    """Bytes after a file's last newline: the remains of an interrupted append."""

    file: Path
    line: int
    raw: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


@dataclass
class _Walk:
    """Checks lines in chain order, remembering the tip and what it noticed.

    `tip` is what the first line must follow (GENESIS, or `--from`); None
    accepts any first line (`seal` checks one file of a longer chain)."""

    tip: Tip | None = GENESIS
    probe_seq: int | None = None
    from_given: bool = False
    events: int = 0
    first: int | None = None
    chain_id: str | None = None
    notes: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    torn: TornTail | None = None  # a torn tail waiting for its seal
    failure: VerifyResult | None = None
    probe: Probe | None = None

    def __post_init__(self) -> None:
        self.start = self.tip

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
        reason = self._check_link(path, number, record) or self._check_chain_id(record)
        if reason is None:
            self.tip = Tip(record["seq"], record["hash"])
            self.events += 1
            self.first = self.first or record["seq"]
            if record["seq"] == self.probe_seq:
                self.probe = Probe(path, number, record["hash"])
        return reason

    def _check_chain_id(self, record: Mapping[str, Any]) -> str | None:
        declared = record.get(CHAIN_ID_FIELD)
        if declared is None:
            return None
        if self.chain_id is not None and declared != self.chain_id:
            return f"chain_id {declared} differs from the chain's {self.chain_id}: lines of another chain"
        self.chain_id = declared
        return None

    def _check_link(self, path: Path, number: int, record: Mapping[str, Any]) -> str | None:
        seq, prev_hash = record["seq"], record["prev_hash"]
        if self.tip is None:
            return None  # any start: the caller checks one file of a longer chain
        boundary = " (first line of this file vs. the previous file's last line)" if number == 1 and self.events else ""
        expected = self.tip.seq + 1
        if self.events == 0 and self.tip == GENESIS and not self.from_given and (seq, prev_hash) != (1, GENESIS_HASH):
            return f"seq {seq} (prev_hash {prev_hash[:12]}…) on the first line, {GENESIS_EXPECTED}"
        if seq > expected and self._accept_gap(path, number, record):
            return None
        after = f" after --from {self.tip.seq}:{self.tip.hash[:12]}…" if self.events == 0 and self.from_given else ""
        if seq > expected:
            return f"seq {seq} where {expected} was expected{after}: events are missing{boundary}"
        if seq < expected:
            return f"seq {seq} where {expected} was expected{after}: events are inserted or out of order{boundary}"
        if prev_hash != self.tip.hash:
            return f"prev_hash does not match the hash of seq {self.tip.seq}{after}: the chain was altered{boundary}"
        return None

    def _accept_gap(self, path: Path, number: int, record: Mapping[str, Any]) -> bool:
        """Cut lines are acceptable only behind the `audit.chain_broken` that names them exactly."""
        assert self.tip is not None
        if not (
            is_gap_seal(record)
            and record["after_seq"] == self.tip.seq
            and record["after_hash"] == self.tip.hash
            and record["missing_first"] == self.tip.seq + 1
            and record["missing_last"] == record["seq"] - 1
        ):
            return False
        first, last = record["missing_first"], record["missing_last"]
        self.gaps.append((first, last))
        self.notes.append(f"{path}:{number}: {seq_span(first, last)} missing (cut), sealed by {CHAIN_BROKEN_EVENT}")
        return True

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
        if self.events == 0 and self.start is not None:
            return self._summary(False, None, None, "no events: nothing to verify")
        return self._summary(True, None, None, "intact")

    def _summary(self, ok: bool, path: Path | None, line: int | None, reason: str) -> VerifyResult:
        since = self.start.seq if self.from_given and self.start is not None else None
        return VerifyResult(ok, path, line, reason, self.events, since, self.tip, tuple(self.notes), tuple(self.gaps),
                            self.chain_id, self.probe, self.first)


def _numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based number, raw line, is it the final one) up to the size seen under a shared lock.

    The lock is held only to read the size: a writer holds it exclusively while
    appending, so no half-written line is read, and a long verify never stalls
    the daemon. Bytes appended later are past `size` and not read.
    """
    with flocked(stream.fileno(), fcntl.LOCK_SH):
        remaining = os.fstat(stream.fileno()).st_size
    number = 0
    while remaining > 0:
        raw = stream.readline(remaining)
        if not raw:
            return  # truncated under us; what was read is all there is
        remaining -= len(raw)
        number += 1
        yield number, raw, remaining == 0


def verify(paths: Sequence[Path], *, start: Tip | None = None, probe: int | None = None) -> VerifyResult:
    """Check one file, or consecutive files in the given order, as one chain.

    From genesis, or after `start` (the rotated-out file's last seq and
    hash); `probe`: a seq whose line to report (the anchored one)."""
    walk = _Walk(tip=start or GENESIS, probe_seq=probe, from_given=start is not None)
    for path in paths:
        try:
            walk.check_file(Path(path))
        except OSError as exc:
            walk.fail(Path(path), None, f"cannot read: {exc.strerror or exc}")
        if walk.failure is not None:
            break
    if walk.torn is not None:  # torn, and only empty files followed it
        walk.fail(walk.torn.file, walk.torn.line, TORN_REASON)
    return walk.result()


def parse_from(text: str) -> Tip:
    """`SEQ:HASH` (as `--from` takes it) as a Tip; ValueError naming what is wrong."""
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1:
        raise ValueError("expected SEQ:HASH, with SEQ the rotated-out file's last seq (1 or more)")
    if len(digest) != 64 or set(digest) - set("0123456789abcdef"):
        raise ValueError("HASH must be 64 lowercase hex digits (the rotated-out file's last hash)")
    return Tip(int(seq), digest)


# --- recovery ---------------------------------------------------------------


def seal(
    path: Path, *, previous: Path | None = None, anchor: Tip | None = None, clock: Clock | None = None,
) -> Path | None:
    """Let appends resume after a broken end, recording the break in the chain.

    A file ending in a torn tail, every complete line intact: it is moved
    aside to `PATH.broken-<UTC time>`, kept as evidence, and a new `path`
    starts with an `audit.chain_broken` event linked to the last intact line
    and naming the discarded bytes by length and SHA-256. Returns the
    moved-aside path.

    A file whose newest lines were cut (its tip is behind the sidecar's, or
    behind `anchor`, the tip anchored in Vault): one `audit.chain_broken`
    line is appended, naming the missing range and the last line before it,
    and linked to the lost tip, so seq and the anchor only move forward.
    Returns None.

    With `previous` (the rotated file an interrupted append went to, when the
    writer could not find it, or when the sidecar was lost), `path` must be
    empty or absent: the chain resumes from `previous`'s last intact line,
    through an `audit.chain_broken` event if `previous` ends torn. Returns None.
    """
    path, clock = Path(path), clock or SystemClock()
    with opened(sidecar_path(path), os.O_RDWR | os.O_CREAT) as chain_fd, flocked(chain_fd):
        if previous is not None:
            _resume_from(path, Path(previous), chain_fd, clock)
            return None
        try:
            state = read_state(chain_fd, sidecar_path(path))
        except AuditChainError:
            state = None  # damaged: a torn file can still be sealed from its own lines
        tip, torn, declared = _intact_part(path) if path.exists() else (None, None, None)
        chain_id = (state.chain_id if state else None) or declared
        if torn is None:
            _seal_cut(path, chain_fd, tip or (state.tip if state else None), state, anchor, chain_id, clock)
            return None
        tip = tip or _tip_before_torn(path, state)
        aside = path.with_name(f"{path.name}.broken-{clock.now().strftime('%Y%m%dT%H%M%SZ')}")
        if aside.exists():
            raise AuditChainError(aside, "already exists; not overwriting evidence")
        os.rename(path, aside)
        fsync_dir(path.parent)
        _start_file(path, chain_fd, tip, _broken_event(aside, torn, clock), chain_id)
        return aside


def _seal_cut(
    path: Path, chain_fd: int, tip: Tip | None, state: ChainState | None, anchor: Tip | None, chain_id: str | None,
    clock: Clock,
) -> None:
    """Append the `audit.chain_broken` naming lines cut from the end."""
    known = [t for t in (state.tip if state else None, anchor) if t is not None]
    lost = max(known, key=lambda t: t.seq, default=None)
    if tip is None or lost is None or lost.seq <= tip.seq:
        if tip is not None and lost is not None and lost.seq == tip.seq and lost.hash != tip.hash:
            raise AuditChainError(path, f"its line at seq {tip.seq} has another hash than the one recorded: rewritten, not cut; investigate, do not seal")
        raise AuditChainError(path, "does not end in a torn write, and no newer line is recorded (sidecar, anchor): nothing to seal")
    if anchor is not None and state is not None and anchor.seq == state.tip.seq and anchor.hash != state.tip.hash:
        raise AuditChainError(path, f"the sidecar and the anchor disagree about seq {anchor.seq}: investigate, do not seal")
    event = {
        "timestamp": to_rfc3339(clock.now()),
        "level": "warning",
        "event": CHAIN_BROKEN_EVENT,
        "missing_first": tip.seq + 1,
        "missing_last": lost.seq,
        "after_seq": tip.seq,
        "after_hash": tip.hash,
        "recorded_by": "anchor" if anchor is not None and lost == anchor else "sidecar",
    }
    with opened(path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd, flocked(fd):
        declare = os.fstat(fd).st_size == 0
        chain_id = chain_id or new_chain_id()
        commit(fd, chain_fd, path.parent, lost, link(event, lost, chain_id=chain_id if declare else None), chain_id)


def _resume_from(path: Path, previous: Path, chain_fd: int, clock: Clock) -> None:
    tip, torn, declared = _intact_part(previous)
    if tip is None:
        raise AuditChainError(previous, "has no intact line to continue from")
    state = _check_expected(previous, tip, chain_fd, sidecar_path(path))
    chain_id = declared or (state.chain_id if state else None)
    if torn is None:
        _start_file(path, chain_fd, tip, None, chain_id)
    else:
        _start_file(path, chain_fd, tip, _broken_event(previous, torn, clock), chain_id)


def _check_expected(previous: Path, tip: Tip, chain_fd: int, chain_path: Path) -> ChainState | None:
    """Guard against resuming from the wrong rotated file when the sidecar can tell."""
    try:
        state = read_state(chain_fd, chain_path)
    except AuditChainError:
        return None  # a damaged sidecar is one reason to resume by hand
    if state is None or state.pending is None:
        return state
    expected = (state.tip, Tip(state.pending.seq, state.pending.hash))
    if tip not in expected:
        raise AuditChainError(
            previous, f"ends at seq {tip.seq}, but the interrupted append was seq {state.pending.seq}: wrong file?"
        )
    return state


def _intact_part(path: Path) -> tuple[Tip | None, TornTail | None, str | None]:
    """The last intact line's tip, the torn tail and the declared chain id, refusing any other damage."""
    walk = _Walk(tip=None)
    walk.check_file(path)
    if walk.failure is not None:
        raise AuditChainError(
            path, f"{walk.failure.reason}: this is not a torn write; investigate, do not seal", line=walk.failure.line
        )
    return walk.tip, walk.torn, walk.chain_id


def _tip_before_torn(path: Path, state: ChainState | None) -> Tip:
    # The torn line was the file's first: the sidecar still holds the tip the
    # interrupted append was linking to.
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


def _start_file(path: Path, chain_fd: int, tip: Tip, event: Mapping[str, Any] | None, chain_id: str | None) -> None:
    """Make `path` (empty) continue from `tip`, optionally writing `event` first."""
    chain_id = chain_id or new_chain_id()
    with opened(path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd, flocked(fd):
        if os.fstat(fd).st_size:
            raise AuditChainError(path, "already has events; seal only starts an empty file")
        if event is None:
            write_state(chain_fd, ChainState(tip, None, chain_id), path.parent)
        else:
            commit(fd, chain_fd, path.parent, tip, link(event, tip, chain_id=chain_id), chain_id)


def declared_chain_id(path: Path) -> str | None:
    """The chain id on the first line of `path`, if any (cheap: one line)."""
    with opened(Path(path), os.O_RDONLY) as fd:
        return chain_id_of(fd)
