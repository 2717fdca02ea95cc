"""The daemon loop: every tick, reconcile the credentials that may have work.

Invariants:
- which credentials to look at comes from `next_wake_at`, kept in memory
  from the last record each credential was seen with; an idle tick makes no
  Vault request, and the engine starts from that record: its first write's
  check-and-set confirms it is still Vault's, or it reads it again;
- due times themselves come from Vault (the records), so a restart neither
  skips nor repeats a rotation;
- one broken file or one failing provider never stops the others; the
  daemon reports itself degraded while any credential is failing;
- SIGTERM sets the shutdown event: the step in flight finishes, no new step
  starts, leases are released, exit 0. SIGHUP reloads credential files,
  keeping the last good version of a file that became broken.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import schedule as tick_schedule

from rotator import __version__
from rotator.audit.events import get_logger
from rotator.compliance.scan import ComplianceScanner
from rotator.config.spec import LoadedCredential, LoadResult
from rotator.core import machine
from rotator.core.clock import to_rfc3339
from rotator.core.errors import RotatorError
from rotator.core.state import StateRecord
from rotator.core.timetable import due_at
from rotator.daemon import metrics
from rotator.daemon.fileless_scan import find_fileless
from rotator.daemon.prefetch import StatePrefetch
from rotator.engine.fileless import LOOK_AGAIN, blocked_since, look_due
from rotator.engine.results import ReconcileResult
from rotator.vault.records import has_inline_secrets
from rotator.wiring import App, load_credentials, loaded_names

NEVER = datetime.max.replace(tzinfo=UTC)
# A reconcile Vault failed (read or write): retried one tick later, doubling to this, with jitter, so that a
# recovering Vault is not met by every credential at once (each try already retries inside: engine.retry.API).
VAULT_BACKOFF_CAP = timedelta(minutes=5)


@dataclass
class CredentialView:
    """What the daemon remembers of one credential between ticks.

    The last record read is kept as its JSON (about a fifth of the memory of
    the parsed model: it matters with 10,000 credentials), with the few
    facts each tick and each metrics scrape need kept plainly beside it."""

    cred: LoadedCredential
    record_json: bytes | None = None
    version: int | None = None  # of that record (None: not read yet)
    wake_at: datetime | None = None  # None: unknown, read Vault
    failing: bool = False
    last_result: str | None = None
    due_at: datetime | None = None
    last_rotated_at: datetime | None = None
    pending_revocations: int = 0
    held_revocations: int = 0
    blocked_since: datetime | None = None  # blocked: its next look is LOOK_AGAIN from then (fileless.blocked_since)
    vault_failures: int = 0  # consecutive reconciles that Vault failed (VAULT_BACKOFF_CAP)

    @property
    def record(self) -> StateRecord | None:
        return StateRecord.model_validate_json(self.record_json) if self.record_json is not None else None

    def remember(self, record: StateRecord | None) -> None:
        self.record_json = record.model_dump_json().encode() if record is not None else None
        self.due_at = due_at(self.cred.spec.schedule, record)
        self.last_rotated_at = record.last_rotated_at if record else None
        self.pending_revocations = len(record.retiring) if record else 0
        self.held_revocations = sum(1 for e in record.retiring if e.held_since is not None) if record else 0


@dataclass
class PassSummary:
    completed: int = 0
    failed: int = 0
    locked: int = 0
    results: dict[str, ReconcileResult] = field(default_factory=dict)
    futures: dict[str, Future[ReconcileResult]] = field(default_factory=dict)


class Daemon:
    def __init__(self, app: App, *, notify: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.engine = app.engine
        self.shutdown = app.engine.shutdown
        self.reload_requested = threading.Event()
        self.views: dict[str, CredentialView] = {}
        # Records whose file was removed, with keys still to retire (rotator.engine.fileless).
        self.fileless: dict[str, CredentialView] = {}
        # Those with nothing to do: the record version compared with its live path, and when (fileless_scan).
        self.looked_behind: dict[str, tuple[int, datetime]] = {}
        self.config_problems: list[str] = []
        self.failed_files: set[str] = set()
        self._loaded_once = False
        self._notify = notify or (lambda _msg: None)
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future[ReconcileResult]] = {}
        self._pool = ThreadPoolExecutor(max_workers=app.settings.max_concurrency, thread_name_prefix="rotate")
        self.log = get_logger()
        self.prefetch = StatePrefetch(app.store, app.engine.changes, app.settings.state_mount, app.engine.state_path, self.log)
        self.last_tick_at: float | None = None
        self._last_change_poll: float | None = None
        self._health: tuple[tuple[str, ...], int] = ((), 0)
        self.compliance = ComplianceScanner.for_app(app)  # unused/unmanaged/overdue findings, hourly
        self.compliance.remembered = lambda name: (view.record if (view := self.views.get(name)) else None)

    # -- configuration -----------------------------------------------------------

    def load(self, *, prefetch: bool = False) -> LoadResult:
        """`prefetch` (the daemon's start): read each record while the other files are parsed (rotator.daemon.prefetch)."""
        # At start-up a broken policy file raises (exit 2); on reload its last good version stays.
        on_loaded = self.prefetch.begin() if prefetch and not self._loaded_once else None
        result = load_credentials(self.app.settings, keep_last_good_policy=self._loaded_once, on_loaded=on_loaded)
        self._loaded_once = True
        self.engine.configured = loaded_names(result)
        for problem in result.problems:
            self.log.error("config.invalid", file=problem.file, error=f"{problem.field}: {problem.message}")
        for warning in result.warnings:
            self.log.warning("config.insecure_file", file=warning.file, warning=warning.message)
        self._adopt(result)
        return result

    def _adopt(self, result: LoadResult) -> None:
        with self._lock:
            old = self.views
            new: dict[str, CredentialView] = {}
            for name, cred in result.credentials.items():
                view = old.get(name)
                if view is not None and view.cred.fingerprint == cred.fingerprint:
                    new[name] = view
                else:
                    new[name] = CredentialView(cred)  # new or changed: read its record again
            # A file that became broken keeps its last good version.
            for name, view in old.items():
                if name not in new and view.cred.spec.source in result.failed_files:
                    new[name] = view
                    self.log.warning("config.kept_last_good", file=view.cred.spec.source, credential=name)
            self.views = new
            self.config_problems = [str(p) for p in result.problems]
            self.failed_files = result.failed_files

    def preload_state(self) -> int:
        """Read the state records of every credential not yet known, in bulk
        (start-up, reload); whatever fails is read one by one by the pass."""
        with self._lock:
            unknown = {self.engine.state_path(v.cred.spec.name): v for v in self.views.values() if v.wake_at is None}
        try:
            found = self.prefetch.take(list(unknown))  # read in bulk, or already while the files were parsed
        except RotatorError as exc:
            self.log.warning("state.preload_failed", error=str(exc))
            return 0
        for path, current in found.items():
            try:
                record = StateRecord.from_vault(current.data) if current.data is not None else None
            except ValueError:
                continue  # unreadable here: the engine reports it when it acts
            self._remember(unknown[path], ReconcileResult("idle", record, current.version))
        self.find_fileless()
        return len(found)

    def find_fileless(self) -> None:
        """Records with no credential file and keys still to retire (contract
        §6.9): found at start-up, reload and every LOOK_AGAIN (rotator.daemon.fileless_scan)."""
        found = find_fileless(self)
        if found is not None:
            with self._lock:
                self.fileless = found

    @property
    def is_degraded(self) -> bool:
        return bool(self.config_problems) or any(v.failing for v in self.views.values())

    # -- one pass ------------------------------------------------------------------

    def due_views(self, now: datetime) -> list[CredentialView]:
        with self._lock:
            views = list(self.views.values()) + [v for n, v in self.fileless.items() if n not in self.views]
        return [v for v in views if v.wake_at is None or v.wake_at <= now]

    def request_rotation(self, name: str, request: machine.Request, *, lease_wait: float = 120.0) -> Future[ReconcileResult] | None:
        """A rotation asked for outside the schedule (leak response,
        rotator.daemon.leak_webhook): run after any reconcile of the same credential
        in flight, never beside it. None: no such credential."""
        with self._lock:
            view = self.views.get(name)
            if view is None:
                return None
            before = self._in_flight.get(name)
            # `before` was queued first, so it runs first: waiting on it cannot deadlock the pool.
            future = self._pool.submit(self._requested, view, request, before, lease_wait)
            self._in_flight[name] = future
        return future

    def _requested(self, view: CredentialView, request: machine.Request, before: Future[ReconcileResult] | None,
                   lease_wait: float) -> ReconcileResult:
        if before is not None:
            before.exception()  # waits; its outcome is its own
        deadline = time.monotonic() + lease_wait
        while True:
            result = self._reconcile(view, request=request)
            if result.status != "locked" or time.monotonic() >= deadline or self.shutdown.wait(1.0):
                return result

    def _reconcile(self, view: CredentialView, request: machine.Request | None = None) -> ReconcileResult:
        try:
            # The record remembered is the reconcile's first guess: its first
            # write's check-and-set confirms it (no read), or reads it again.
            known = (view.record, view.version) if view.version is not None and view.wake_at is not None else None
            # A blocked record is compared with its live paths every LOOK_AGAIN, read afresh (sim F223).
            look = request is None and look_due(view.blocked_since, self.engine.clock.now())
            result = self.engine.reconcile(view.cred, request=request, known=None if look else known, look_behind=look)
        except Exception as exc:  # Vault down, or a bug: never stops the others
            # Our errors' messages are safe; anything else is named by type only.
            error = str(exc) if isinstance(exc, RotatorError) else f"unexpected {type(exc).__name__}"
            retry_at = self._vault_failed(view)
            self.log.error("rotation.failed", credential=view.cred.spec.name, provider=view.cred.spec.provider,
                           step="reconcile", error=error, will_retry=True, next_attempt_at=to_rfc3339(retry_at))
            result = ReconcileResult("failed")
        else:
            if result.unsaved:
                self._vault_failed(view)  # logged by the engine (step persist); what it holds is not Vault's
            else:
                self._remember(view, result, looked=look)
        view.last_result = result.status
        if result.status in {"completed", "failed"}:
            metrics.ROTATIONS.labels(view.cred.spec.name, view.cred.spec.provider, result.status).inc()
        if result.duration_seconds is not None:
            metrics.DURATION.labels(view.cred.spec.provider).observe(result.duration_seconds)
        return result

    def update_gauges(self) -> None:
        """Refresh the gauges from what the daemon remembers (no Vault request)."""
        now = self.engine.clock.now()
        allowance = timedelta(seconds=self.app.settings.tick_seconds)
        overdue = 0
        with self._lock:
            views = list(self.views.values())
        for view in views:
            labels = (view.cred.spec.name, view.cred.spec.provider)
            due = view.due_at or due_at(view.cred.spec.schedule, None)
            metrics.NEXT.labels(*labels).set(due.timestamp())
            metrics.PENDING.labels(*labels).set(view.pending_revocations)
            metrics.HELD.labels(*labels).set(view.held_revocations)
            if view.last_rotated_at is not None:
                metrics.AGE.labels(*labels).set((now - view.last_rotated_at).total_seconds())
            overdue += view.last_rotated_at is not None and now > due + allowance
        metrics.OVERDUE.set(overdue)
        metrics.DEGRADED.set(1 if self.is_degraded else 0)
        wall, mono = now.timestamp(), time.monotonic()
        metrics.LAST_TICK.set(math.nan if self.last_tick_at is None else wall - (mono - self.last_tick_at))
        left = self.app.store.token_expires_in()
        metrics.TOKEN_EXPIRY.set(math.nan if left is None else wall + left)

    def _vault_failed(self, view: CredentialView) -> datetime:
        """Vault failed this reconcile: the credential is failing (the daemon is degraded, §6.7) and is read
        again one tick later, doubling with each failure in a row up to VAULT_BACKOFF_CAP, each wait drawn
        from its second half. Returns when."""
        view.vault_failures += 1
        view.failing = True
        view.version = None  # read again: nothing remembered is known to be Vault's
        tick = timedelta(seconds=self.app.settings.tick_seconds)
        delay = min(VAULT_BACKOFF_CAP, tick * 2 ** min(view.vault_failures - 1, 20))
        view.wake_at = self.engine.clock.now() + delay * random.uniform(0.5, 1.0)  # noqa: S311 - spreading, not secrecy
        return view.wake_at

    def _remember(self, view: CredentialView, result: ReconcileResult, *, looked: bool = False) -> None:
        view.vault_failures = 0
        record = result.record
        view.remember(record)
        view.version = result.version
        policy = self.engine.policy_for(view.cred)
        now = self.engine.clock.now()
        # None from the machine means never (blocked, nothing to retire):
        # until the file changes or the change feed says someone acted,
        # or, blocked, its next look (every LOOK_AGAIN: sim F223).
        view.wake_at = machine.next_wake_at(record, policy, now) or NEVER
        if result.status != "locked":
            view.blocked_since = blocked_since(view.blocked_since, record, policy, now, looked=looked)
        if view.blocked_since is not None:
            view.wake_at = min(view.wake_at, view.blocked_since + LOOK_AGAIN)
        if result.status == "locked" or has_inline_secrets(record, view.cred.provider_cls.secret_fields):
            view.wake_at = None  # read it again next tick (a schema 1 record: move its secrets to the stash)
        view.failing = bool(record and (record.attempts > 0 or any(e.attempts > 0 for e in record.retiring)))

    def run_pass(self, *, wait: bool = True) -> PassSummary:
        """Start a reconcile for each credential that may have work."""
        now = self.engine.clock.now()
        started: dict[str, Future[ReconcileResult]] = {}
        for view in self.due_views(now):
            name = view.cred.spec.name
            if self.shutdown.is_set():
                break
            with self._lock:  # request_rotation adds to _in_flight from other threads
                if name in self._in_flight and not self._in_flight[name].done():
                    continue  # still working on it: a slow provider never blocks the others
                future = self._pool.submit(self._reconcile, view)
                self._in_flight[name] = future
            started[name] = future
        summary = PassSummary(futures=started)
        if wait:
            for name, future in started.items():
                result = future.result()
                summary.results[name] = result
                summary.completed += result.status == "completed"
                summary.failed += result.status == "failed"
                summary.locked += result.status == "locked"
        return summary

    # -- the loop --------------------------------------------------------------------

    def run_forever(self) -> None:
        settings = self.app.settings
        self.log.info("daemon.started", version=__version__, credentials=len(self.views))
        self._notify("READY=1")
        jobs = tick_schedule.Scheduler()
        jobs.every(settings.tick_seconds).seconds.do(self._tick)
        jobs.every(int(LOOK_AGAIN.total_seconds())).seconds.do(self.find_fileless)  # idle ones looked at again (F204)
        started = time.monotonic()
        self._poll_changes(force=True)  # the baseline, before any record is read (or, prefetched: what changed since it)
        self.preload_state()
        first = self._tick()
        while not self.shutdown.is_set():
            if first is not None and all(f.done() for f in first.futures.values()):
                # Every credential's state has been read once: from here on,
                # idle ticks need no Vault request.
                self.log.info("daemon.state_loaded", credentials=len(self.views),
                              duration_ms=int((time.monotonic() - started) * 1000))
                first = None
            idle = jobs.idle_seconds
            self.shutdown.wait(timeout=max(0.05, min(idle if idle is not None else 1.0, 1.0)))
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.log.info("config.reload")
                self.load()
                self.preload_state()
            if not self.shutdown.is_set():
                jobs.run_pending()
        self._notify("STOPPING=1")
        self.close()
        self.log.info("daemon.stopped", version=__version__, credentials=len(self.views))

    def _tick(self) -> PassSummary:
        self.last_tick_at = time.monotonic()
        self._notify("WATCHDOG=1")
        self.app.store.maintain_token()  # renew or log in again when due; never raises
        self._poll_changes()
        self._report_health()
        summary = self.run_pass(wait=False)
        self.compliance.tick([v.cred for v in list(self.views.values())], self._pool.submit)
        return summary

    def _report_health(self) -> None:
        """Log and tell systemd whenever what is failing changes."""
        failing = tuple(sorted(name for name, view in list(self.views.items()) if view.failing))
        health = (failing, len(self.config_problems))
        if health == self._health:
            return
        self._health = health
        if failing or self.config_problems:
            self.log.warning("daemon.degraded", failing_credentials=list(failing), config_problems=len(self.config_problems))
            self._notify(f"STATUS=degraded: {len(failing)} credential(s) failing, {len(self.config_problems)} config problem(s)")
        else:
            self.log.info("daemon.recovered")
            self._notify("STATUS=ok")

    def _poll_changes(self, *, force: bool = False) -> None:
        """Forget the wake time of credentials others changed, so the next
        pass reads their records again."""
        now = time.monotonic()
        if not force and self._last_change_poll is not None and now - self._last_change_poll < self.app.settings.change_poll_seconds:
            return
        self._last_change_poll = now
        try:
            changed = self.engine.changes.poll()
        except RotatorError as exc:
            self.log.warning("changes.poll_failed", error=str(exc))
            return
        self.prefetch.forget(changed)  # records read before the change are read again
        with self._lock:
            for name, view in [*self.views.items(), *self.fileless.items()]:
                if changed is None or name in changed:
                    view.wake_at = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.close()
