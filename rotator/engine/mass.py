"""`rotator rotate`: rotate many credentials now (contract §2, incident response).

Invariants:
- at most `ROTATOR_MAX_CONCURRENCY` rotations are in flight at once, and each
  takes the credential's lease the way the daemon does (a held lease is
  waited for, up to `--wait` seconds);
- an interrupt (SIGINT, SIGTERM) sets the engine's shutdown event: every
  rotation in flight finishes the step it is in and starts no new one, and
  no further credential is started; the state records let any later run
  (or the daemon) resume them;
- stdout carries only the engine's events; the progress bar (on a terminal)
  and the summary table go to stderr, and hold names, provider kinds, key
  ids and already scrubbed error messages, never a secret value.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from rotator.config.spec import LoadedCredential, LoadResult
from rotator.core import machine
from rotator.core.actions import Request
from rotator.core.errors import RotatorError
from rotator.engine.reconcile import Engine
from rotator.engine.results import ReconcileResult

DONE, FAILED, ROLLED_BACK, NOT_STARTED, INVALID = "done", "failed", "rolled back", "not started", "invalid"
_ORDER = {FAILED: 0, ROLLED_BACK: 1, INVALID: 2, NOT_STARTED: 3, DONE: 4}


class SelectionError(ValueError):
    """The command line selects nothing, or names what is not there (exit 2)."""


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...] = ()
    everything: bool = False
    provider: str | None = None
    owner: str | None = None

    def describe(self) -> str:
        parts = [*self.names]
        if self.everything:
            parts.append("--all")
        if self.provider:
            parts.append(f"--provider {self.provider}")
        if self.owner:
            parts.append(f"--owner {self.owner}")
        return " ".join(parts)


@dataclass(frozen=True)
class Outcome:
    """How one credential's rotation ended, with nothing secret in it."""

    credential: str
    provider: str
    result: str
    key_id: str | None = None  # the live key after the run
    step: str | None = None
    reason: str | None = None

    @property
    def is_ok(self) -> bool:
        return self.result == DONE


def select(loaded: LoadResult, selection: Selection) -> list[LoadedCredential]:
    """The credentials the command line names, in file order; NAMEs are
    exclusive with the other selectors, `--provider` and `--owner` combine."""
    if selection.names and (selection.everything or selection.provider or selection.owner):
        raise SelectionError("give credential NAMEs, or --all / --provider / --owner, not both")
    if selection.names:
        unknown = [n for n in selection.names if n not in loaded.credentials]
        if unknown:
            raise SelectionError(f"no valid credential named {', '.join(repr(n) for n in unknown)}")
        return [loaded.credentials[n] for n in dict.fromkeys(selection.names)]
    if not (selection.everything or selection.provider or selection.owner):
        raise SelectionError("name the credentials to rotate: NAME..., --all, --provider KIND or --owner OWNER")
    chosen = [
        cred for cred in loaded.credentials.values()
        if (selection.provider is None or cred.spec.provider == selection.provider)
        and (selection.owner is None or cred.spec.owner == selection.owner)
    ]
    if not chosen:
        raise SelectionError(f"no valid credential matches {selection.describe()}")
    return chosen


def classify(cred: LoadedCredential, result: ReconcileResult, *, lease_wait: float, interrupted: bool) -> Outcome:
    """A reconcile's result as a summary row."""
    record = result.record
    key_id = record.current.key_id if record is not None and record.current is not None else None
    base = {"credential": cred.spec.name, "provider": cred.spec.provider, "key_id": key_id}
    if result.status == "completed":
        return Outcome(**base, result=DONE)
    if result.status == "locked":
        return Outcome(**base, result=FAILED, step="lock", reason=f"another process held the lease for {lease_wait:.0f}s")
    step = record.last_error_step if record is not None else None
    error = record.last_error if record is not None else None  # scrubbed before it was stored
    if "rotation.rolled_back" in result.events:
        return Outcome(**base, result=ROLLED_BACK, step=step, reason=error or "the new credential failed verification")
    if result.status == "progressed" and interrupted:
        return Outcome(**base, result=NOT_STARTED if not result.events else FAILED, step="interrupted",
                       reason="interrupted: the step in flight finished; the next run resumes from the state record")
    if result.status == "failed" and record is not None and record.pending is None and (left := machine.unrevoked(record)):
        from rotator.audit.events import redact_text

        entry = left[0]  # `--revoke-now` rotated, but a previous key still works (sim F199)
        why = redact_text(entry.last_error) if entry.last_error else "its revoke has not run"
        return Outcome(**base, result=FAILED, step="revoke",
                       reason=f"rotated, but the previous key {entry.key.key_id} still works ({why}); it is retried on its schedule")
    if result.status == "failed":
        return Outcome(**base, result=FAILED, step=step, reason=error or "see the rotation.failed event")
    return Outcome(**base, result=FAILED, step=step, reason=f"the rotation did not complete ({result.status})")


def rotate_one(engine: Engine, cred: LoadedCredential, *, revoke_now: bool, lease_wait: float, stop: threading.Event,
               interrupted: Callable[[], bool]) -> Outcome:
    """One credential, waiting for its lease while another process holds it."""
    deadline = time.monotonic() + lease_wait
    try:
        while True:
            result = engine.reconcile(cred, request=Request(revoke_now=revoke_now))
            if result.status != "locked" or time.monotonic() >= deadline or stop.wait(1.0):
                break
    except RotatorError as exc:
        from rotator.audit.events import get_logger, redact_text

        error = redact_text(str(exc))
        get_logger().error("rotation.failed", credential=cred.spec.name, provider=cred.spec.provider, step="start", error=error,
                           will_retry=False, next_attempt_at=None)
        return Outcome(cred.spec.name, cred.spec.provider, FAILED, step="start", reason=error)
    return classify(cred, result, lease_wait=lease_wait, interrupted=interrupted())


def rotate_many(
    engine: Engine, creds: list[LoadedCredential], *, revoke_now: bool, concurrency: int, lease_wait: float,
    stop: threading.Event, on_done: Callable[[Outcome], None] = lambda _: None,
) -> list[Outcome]:
    """Rotate each credential once, `concurrency` at a time; once `stop` is
    set, the rest are reported as not started. Outcomes in the input order."""
    outcomes: dict[str, Outcome] = {}
    queue = iter(creds)
    in_flight: dict[Future[Outcome], LoadedCredential] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="rotate") as pool:
        while True:
            while len(in_flight) < concurrency and not stop.is_set():
                cred = next(queue, None)
                if cred is None:
                    break
                in_flight[pool.submit(rotate_one, engine, cred, revoke_now=revoke_now, lease_wait=lease_wait, stop=stop,
                                      interrupted=stop.is_set)] = cred
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                cred = in_flight.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # a bug: never a traceback, never a value
                    outcome = Outcome(cred.spec.name, cred.spec.provider, FAILED, step="start", reason=f"{type(exc).__name__} (a bug?)")
                outcomes[cred.spec.name] = outcome
                on_done(outcome)
    for cred in queue:  # interrupted before these started
        outcome = Outcome(cred.spec.name, cred.spec.provider, NOT_STARTED, reason="interrupted before it started")
        outcomes[cred.spec.name] = outcome
        on_done(outcome)
    return [outcomes[c.spec.name] for c in creds]


# -- the terminal ----------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, redrawn after each result, with
    event lines (when stdout is the same terminal) printed above it."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._drawn = False

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self.counts[outcome.result] = self.counts.get(outcome.result, 0) + 1
            self._draw()

    def line(self) -> str:
        finished = sum(self.counts.values())
        filled = self.WIDTH * finished // max(1, self.total)
        elapsed = time.monotonic() - self.started
        rate = finished / elapsed if elapsed > 0 else 0.0
        tally = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in (DONE, FAILED, ROLLED_BACK) if self.counts.get(k) or k == DONE)
        return f"rotate [{'#' * filled}{'.' * (self.WIDTH - filled)}] {finished}/{self.total} ({tally}) {rate:.1f}/s"

    def _draw(self) -> None:
        if not self.enabled:
            return
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self._drawn = True

    def write_above(self, write: Callable[[str], Any], text: str) -> None:
        """Print `text` (an event line) above the bar, then redraw it."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            write(text)
            self._draw()

    def finish(self) -> None:
        with self._lock:
            if self.enabled and self._drawn:
                self.stream.write("\n")
                self.stream.flush()


class EventStream:
    """stdout for the logger: each event line goes above the progress bar
    when both share one terminal (otherwise written as it is)."""

    def __init__(self, out: TextIO, progress: Progress) -> None:
        self.out = out
        self.progress = progress
        self._shared = progress.enabled and _same_terminal(out, progress.stream)

    def write(self, text: str) -> int:
        if self._shared:
            self.progress.write_above(self._write, text)
        else:
            self._write(text)
        return len(text)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()

    def fileno(self) -> int:
        return self.out.fileno()


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    try:
        return a.isatty() and b.isatty()
    except (AttributeError, ValueError):
        return False


def render_summary(outcomes: Iterable[Outcome], *, elapsed: float) -> str:
    """The table printed at the end: the rows that need a look first, then the totals."""
    rows = sorted(outcomes, key=lambda o: (_ORDER.get(o.result, 0), o.credential))
    header = ("CREDENTIAL", "PROVIDER", "RESULT", "KEY ID", "STEP", "REASON")
    table = [header, *((o.credential, o.provider, o.result, o.key_id or "-", o.step or "-", _one_line(o.reason or "-")) for o in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in table]
    counts = {k: sum(1 for o in rows if o.result == k) for k in (DONE, FAILED, ROLLED_BACK, NOT_STARTED, INVALID)}
    totals = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k in (DONE, FAILED, ROLLED_BACK))
    lines.append(f"rotate: {len(rows)} credential(s) in {elapsed:.1f}s: {totals}")
    return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def invalid_outcomes(loaded: LoadResult) -> list[Outcome]:
    """`--all`: the files that did not load are credentials not rotated."""
    from pathlib import Path

    seen: dict[str, Outcome] = {}
    for problem in loaded.problems:
        stem = Path(problem.file).stem
        if stem not in seen and problem.file != "environment":
            seen[stem] = Outcome(stem, "-", INVALID, step="validate", reason=f"{problem.field}: {problem.message}")
    return list(seen.values())


def stderr() -> TextIO:
    return sys.stderr
