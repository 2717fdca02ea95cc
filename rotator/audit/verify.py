"""Strict verification of an audit chain (`rotator audit verify`); `seal`,
the one way past a break, is rotator.audit.seal.

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

from rotator.audit.chain import (
    CHAIN_BROKEN_EVENT,
    CHAIN_ID_FIELD,
    GENESIS,
    GENESIS_HASH,
    TORN_REASON,
    BadLineError,
    Tip,
    chain_id_of,
    flocked,
    is_gap_seal,
    is_torn,
    opened,
    parse_line,
    seq_span,
)

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
class Walk:
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
    walk = Walk(tip=start or GENESIS, probe_seq=probe, from_given=start is not None)
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


def declared_chain_id(path: Path) -> str | None:
    """The chain id on the first line of `path`, if any (cheap: one line)."""
    with opened(Path(path), os.O_RDONLY) as fd:
        return chain_id_of(fd)
