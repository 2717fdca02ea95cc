"""The writer of the tamper-evident audit file (`ROTATOR_AUDIT_FILE`, contract §7).

Invariants this module keeps (the format itself is rotator.audit.chain's):
- Every append is durable before `append` returns (fsync of the file, of the
  directory when the file is new, and of the sidecar).
- Appends are serialised across threads (a lock) and across processes
  (`flock` on the sidecar `FILE.chain`, then on the audit file itself). The
  sidecar lock is the one that orders writers: it is the only lock that
  survives logrotate moving the audit file away.
- A writer never chains over something it cannot vouch for: a torn or
  altered last line, a file whose tip is not the one the sidecar committed
  (its newest lines cut, the file rewritten, lines appended by something
  else), a damaged sidecar, or an interrupted append whose outcome it cannot
  see all raise `AuditChainError`. Recovery is `seal` (rotator.audit.verify),
  which records the break in the chain itself (`audit.chain_broken`).
- The sidecar holds the chain's tip and id, so an empty or new file (after
  logrotate) continues the chain, and its first line carries the chain id.

Verification is rotator.audit.verify, `seal` rotator.audit.seal and anchors
rotator.audit.anchor.
docs/AUDIT.md explains the format, the recovery path and logrotate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator.audit.chain import (
    GENESIS,
    AuditChainError,
    BadLineError,
    ChainState,
    Pending,
    Tip,
    chain_id_of,
    commit,
    find_by_inode,
    flocked,
    is_gap_seal,
    lines_backwards,
    link,
    new_chain_id,
    opened,
    parse_line,
    read_state,
    sidecar_path,
    tip_of_file,
)


@dataclass(frozen=True)
class Position:
    """Where the next append goes: after `tip`, in chain `chain_id`;
    `declare`: the next line carries the chain id (the file's first line)."""

    tip: Tip
    chain_id: str
    declare: bool


@dataclass(frozen=True)
class Located:
    """What the current file holds at one seq: `hash` when the line is there;
    else `where` says why not: `sealed` (in a gap an `audit.chain_broken`
    names), `earlier` (before this file's first line), `missing`."""

    hash: str | None
    where: str


class AuditFile:
    """Appends hash-chained events to one path; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.chain_path = sidecar_path(self.path)
        self._lock = threading.Lock()
        self._fresh_id = new_chain_id()  # used only if the chain has no id yet
        self.position()  # fail at start-up, not at the first rotation, on a bad tail

    def tip(self) -> Tip:
        """The chain's current tip, checked the same way `append` checks it."""
        return self.position().tip

    @property
    def chain_id(self) -> str:
        return self.position().chain_id

    def position(self) -> Position:
        with self._lock, self._locked() as (fd, chain_fd):
            return self._current(fd, chain_fd)

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append `event`; return it with `seq`, `prev_hash` and `hash` added."""
        with self._lock, self._locked() as (fd, chain_fd):
            where = self._current(fd, chain_fd)
            record = link(event, where.tip, chain_id=where.chain_id if where.declare else None)
            commit(fd, chain_fd, self.path.parent, where.tip, record, where.chain_id)
            return record

    def locate(self, seq: int) -> Located:
        """What the current file holds at `seq`, read backwards from its end."""
        with self._lock, self._locked() as (fd, _chain_fd):
            for raw in lines_backwards(fd, os.fstat(fd).st_size):
                try:
                    record = parse_line(raw)
                except BadLineError:
                    return Located(None, "missing")
                if record["seq"] == seq:
                    return Located(record["hash"], "here")
                if is_gap_seal(record) and record["missing_first"] <= seq <= record["missing_last"]:
                    return Located(None, "sealed")
                if record["seq"] < seq:
                    return Located(None, "missing")
            return Located(None, "earlier")

    @contextmanager
    def _locked(self) -> Iterator[tuple[int, int]]:
        # The audit file is opened only once the sidecar lock is held, so a
        # logrotate move in between is seen and the new file used. Reopening
        # per append (instead of caching an fd and a tail position) also means
        # the tail written by another process is always re-read and re-checked.
        with opened(self.chain_path, os.O_RDWR | os.O_CREAT) as chain_fd, flocked(chain_fd):
            with opened(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd, flocked(fd):
                yield fd, chain_fd

    def _current(self, fd: int, chain_fd: int) -> Position:
        file_tip = tip_of_file(fd, self.path)
        state = read_state(chain_fd, self.chain_path)
        known_id = state.chain_id if state is not None else None
        if file_tip is None:
            # A new or emptied file (logrotate): it continues from the sidecar.
            tip = GENESIS if state is None else state.tip if state.pending is None else self._resolve_pending(state, state.pending)
            return Position(tip, known_id or self._fresh_id, True)
        if state is not None:
            self._check_against_sidecar(file_tip, state)
        file_id = known_id or chain_id_of(fd)
        return Position(file_tip, file_id or self._fresh_id, file_id is None)

    def _check_against_sidecar(self, file_tip: Tip, state: ChainState) -> None:
        """The file's last line must be the one the writers last committed (or the one in flight)."""
        pending = state.pending
        if file_tip == state.tip or (pending is not None and file_tip == Tip(pending.seq, pending.hash)):
            return
        committed, chain = state.tip.seq, self.chain_path.name
        if file_tip.seq < committed:
            raise AuditChainError(
                self.path,
                f"ends at seq {file_tip.seq}, but the chain had reached seq {committed} ({chain}): its newest lines "
                f"were cut. Not appending over the lost history: run `rotator audit seal {self.path}` to record the "
                "break (docs/AUDIT.md)",
            )
        if file_tip.seq == committed:
            reason = f"its last line (seq {committed}) is not the line the writers committed ({chain} holds another hash): the file was rewritten"
        else:
            reason = f"ends at seq {file_tip.seq}, past the seq {committed} the writers committed ({chain}): lines were appended by something other than a rotator writer"
        raise AuditChainError(self.path, f"{reason}. Not appending: investigate with `rotator audit verify {self.path} --anchor` (docs/AUDIT.md)")

    def _resolve_pending(self, state: ChainState, pending: Pending) -> Tip:
        """After a crash mid-append and a rotation: did that line land in the old file?"""
        hint = f"run `rotator audit seal {self.path} --previous ROTATED_FILE` (see docs/AUDIT.md)"
        holder = find_by_inode(self.path.parent, pending.dev, pending.ino)
        if holder is None:
            raise AuditChainError(self.path, f"append of seq {pending.seq} was interrupted and its file is gone; {hint}")
        try:
            with opened(holder, os.O_RDONLY) as hfd:
                size, tail = os.fstat(hfd).st_size, tip_of_file(hfd, holder)
        except AuditChainError as exc:
            raise AuditChainError(holder, f"the rotated file's last line is damaged; {hint}") from exc
        if tail == Tip(pending.seq, pending.hash):
            return tail
        # Inode numbers are reused, so the file found must also end where the
        # sidecar says the interrupted append started.
        if size == pending.offset and tail in (None, state.tip):
            return state.tip
        raise AuditChainError(holder, f"is not the file the interrupted append of seq {pending.seq} went to; {hint}")

