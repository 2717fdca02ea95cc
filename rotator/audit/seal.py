"""`seal`: the one way past a break in the audit chain (`rotator audit seal`).

Invariants:
- `seal` changes nothing unless it can name exactly what it seals, and never
  rewrites a line: a torn file is moved aside as evidence, a cut file gets
  one more line (an `audit.chain_broken` naming the break, which
  rotator.audit.verify then accepts).
- What is intact is decided by the same walk `verify` does (`Walk`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rotator.audit.chain import (
    CHAIN_BROKEN_EVENT,
    AuditChainError,
    ChainState,
    Tip,
    commit,
    flocked,
    fsync_dir,
    link,
    new_chain_id,
    opened,
    read_state,
    sidecar_path,
    write_state,
)
from rotator.audit.verify import TornTail, Walk
from rotator.core.clock import Clock, SystemClock, to_rfc3339


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
    walk = Walk(tip=None)
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
