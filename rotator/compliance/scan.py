"""Compliance findings: unused, unmanaged and overdue keys (docs/COMPLIANCE.md).

`assess` is a pure function of a credential's spec, its state record, what
the provider lists and the current time; `ComplianceScanner` runs it
periodically in the daemon and logs what it finds:

- `credential.unused` (`key_id`, `last_used`): a live, active key, or an
  active key the rotator made, not used for `unused_after` (or never used
  and made longer ago than that);
- `credential.unmanaged` (`key_id`): a key in the credential's scope at the
  provider (the IAM user, the repository) with no rotator mark and unknown
  to the state record;
- `credential.overdue` (extension, docs/CONTRACT-NOTES.md): the credential
  is past its due time by more than one tick.

Invariants:
- an unmanaged key is never touched, only reported;
- `on_unused: disable` never touches the live key (guarantee 1) nor a key
  the record holds, so never one within its grace (guarantee 3): it revokes
  only orphans, keys with this credential's mark that the record does not
  know, unused and made longer than `unused_after` ago, while no rotation
  is in flight and the Vault live path does not name them;
- each finding is logged at most once per key per scan window;
- a scan never raises into the daemon; at most one scan job is in flight,
  so scans take at most one of the daemon's workers.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from rotator.audit.events import get_logger
from rotator.config.spec import CredentialSpec, LoadedCredential
from rotator.core.clock import to_rfc3339
from rotator.core.provider import Provider, ProviderKey
from rotator.core.state import StateRecord
from rotator.core.timetable import due_at
from rotator.core.validators import format_duration
from rotator.engine import retry

if TYPE_CHECKING:
    from rotator.engine.reconcile import Engine
    from rotator.wiring import App

FindingKind = Literal["unused", "unmanaged", "overdue"]
# The first scan waits this long (or one scan interval, if shorter) after
# start-up, so it does not crowd the start-up pass of rotations.
FIRST_SCAN_DELAY = timedelta(seconds=60)
# An unmarked key made this close before a rotation began may be that
# rotation's own, minted but not yet marked (providers whose mark is a second call).
_MARK_SLACK = timedelta(seconds=5)


@dataclass(frozen=True)
class Finding:
    """One thing an auditor should hear about. Never holds a secret."""

    kind: FindingKind
    key_id: str | None
    last_used: datetime | None = None
    created_at: datetime | None = None
    is_live: bool = False
    is_orphan: bool = False  # carries this credential's mark, unknown to the record
    active: bool = True
    due_at: datetime | None = None
    last_rotated_at: datetime | None = None

    @property
    def event(self) -> str:
        return f"credential.{self.kind}"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _known_ids(record: StateRecord | None) -> set[str]:
    return record.managed_key_ids() if record is not None else set()


def _issued_at(key: ProviderKey, record: StateRecord | None) -> datetime | None:
    if key.created_at is not None:
        return _utc(key.created_at)
    if record is None:
        return None
    held = [record.current, *(r.key for r in record.retiring)]
    return next((_utc(k.issued_at) for k in held if k is not None and k.key_id == key.key_id), None)


def is_rotator_made(key: ProviderKey, spec: CredentialSpec, record: StateRecord | None) -> bool:
    return key.key_id in _known_ids(record) or (key.mark is not None and key.mark.credential == spec.name)


def is_unused(key: ProviderKey, issued_at: datetime | None, now: datetime, window: timedelta) -> bool:
    """Not used for `window`; or never used and made longer ago than that."""
    last_used = _utc(key.last_used_at)
    if last_used is not None:
        return now - last_used > window
    return issued_at is not None and now - issued_at > window


def unused_findings(spec: CredentialSpec, record: StateRecord | None, keys: Iterable[ProviderKey], now: datetime) -> list[Finding]:
    """Active keys the rotator made (the live one included) that nobody uses."""
    window = spec.unused_after
    if window is None:
        return []
    live = record.current.key_id if record is not None and record.current is not None else None
    known = _known_ids(record)
    out = []
    for key in keys:
        if not key.active or not is_rotator_made(key, spec, record):
            continue  # an inactive key cannot be used; unmanaged keys are reported as such
        issued_at = _issued_at(key, record)
        if is_unused(key, issued_at, now, window):
            out.append(Finding(
                "unused", key.key_id, last_used=_utc(key.last_used_at), created_at=issued_at,
                is_live=key.key_id == live, is_orphan=key.key_id not in known,
            ))
    return out


def _may_be_pending_own(key: ProviderKey, record: StateRecord | None, *, is_marking_atomic: bool) -> bool:
    """An unmarked key that the rotation in flight may have just made (before marking it)."""
    pending = record.pending if record is not None else None
    if is_marking_atomic or pending is None or key.key_id in pending.preexisting_key_ids:
        return False
    created = _utc(key.created_at)
    return created is None or created >= _utc(pending.started_at) - _MARK_SLACK  # type: ignore[operator]


def unmanaged_findings(
    spec: CredentialSpec, record: StateRecord | None, keys: Iterable[ProviderKey], *, is_marking_atomic: bool = True
) -> list[Finding]:
    """Keys in the credential's scope with no rotator mark and unknown to the record."""
    known = _known_ids(record)
    return [
        Finding("unmanaged", key.key_id, last_used=_utc(key.last_used_at), created_at=_utc(key.created_at), active=key.active)
        for key in keys
        if key.mark is None and key.key_id not in known and not _may_be_pending_own(key, record, is_marking_atomic=is_marking_atomic)
    ]


def overdue_finding(spec: CredentialSpec, record: StateRecord | None, now: datetime, *, allowance: timedelta) -> Finding | None:
    """Past its due time by more than `allowance` (one tick). A credential never
    rotated is due at once, not overdue: the next tick brings it under management."""
    if record is None or record.last_rotated_at is None:
        return None
    due = due_at(spec.schedule, record)
    if now <= due + allowance:
        return None
    return Finding(
        "overdue", record.current.key_id if record.current else None,
        due_at=due, last_rotated_at=_utc(record.last_rotated_at), is_live=record.current is not None,
    )


def assess(
    spec: CredentialSpec, record: StateRecord | None, keys: Sequence[ProviderKey] | None, now: datetime, *,
    allowance: timedelta, is_marking_atomic: bool = True, reports_last_use: bool = True,
) -> list[Finding]:
    """Every finding for one credential. `keys` None: the provider cannot list.
    `reports_last_use` False: the provider never says when a key was used, so
    "never used" would be a guess, and no key is called unused."""
    found = []
    overdue = overdue_finding(spec, record, now, allowance=allowance)
    if overdue is not None:
        found.append(overdue)
    if keys is not None:
        if reports_last_use:
            found += unused_findings(spec, record, keys, now)
        found += unmanaged_findings(spec, record, keys, is_marking_atomic=is_marking_atomic)
    return found


def provider_reports_last_use(provider: Provider) -> bool:
    """Whether the provider's listing says when each key was last used.

    Providers declare `reports_last_use = False` where the API has no such
    field (a Stripe webhook endpoint); the default assumes it does."""
    return bool(getattr(provider, "reports_last_use", True))


def orphans_to_disable(
    spec: CredentialSpec, record: StateRecord | None, findings: Iterable[Finding], now: datetime, *, live_key_id: str | None
) -> list[str]:
    """The key ids `on_unused: disable` may revoke now (see the module's invariants)."""
    window = spec.unused_after
    if spec.on_unused != "disable" or window is None:
        return []
    if record is not None and (record.pending is not None or (record.lease is not None and record.lease.expires_at > now)):
        return []  # a rotation may be in flight: its new key would look like an orphan
    known = _known_ids(record)
    return [
        f.key_id for f in findings
        if f.kind == "unused" and f.is_orphan and f.key_id is not None and f.key_id not in known
        and f.key_id != live_key_id and f.created_at is not None and now - f.created_at > window
    ]


def event_fields(finding: Finding, spec: CredentialSpec) -> dict[str, Any]:
    """What a finding's event carries beyond credential and provider."""
    stamp = lambda t: to_rfc3339(t) if t is not None else None  # noqa: E731
    if finding.kind == "unused":
        assert spec.unused_after is not None
        return {"key_id": finding.key_id, "last_used": stamp(finding.last_used), "live": finding.is_live,
                "unused_after": format_duration(spec.unused_after)}
    if finding.kind == "unmanaged":
        return {"key_id": finding.key_id, "created_at": stamp(finding.created_at), "active": finding.active}
    return {"key_id": finding.key_id, "due_at": stamp(finding.due_at), "last_rotated_at": stamp(finding.last_rotated_at)}


class ComplianceScanner:
    """Scans each credential once per window in the daemon's worker pool."""

    def __init__(self, engine: Engine, *, interval: timedelta, allowance: timedelta) -> None:
        self.engine = engine
        # The daemon's last-read record of a credential, if any: scans that
        # find nothing then cost no Vault request.
        self.remembered: Callable[[str], StateRecord | None] | None = None
        self.interval = interval
        self.allowance = allowance
        self._next_scan_at: dict[str, datetime] = {}
        self._first_scan_at = engine.clock.now() + min(interval, FIRST_SCAN_DELAY)
        self._reported: dict[tuple[str, str, str | None], datetime] = {}
        self._running: Future[None] | None = None
        self._lock = threading.Lock()

    def _spread(self, name: str) -> datetime:
        """A credential's first scan: at a stable offset within the window, so
        thousands of credentials are scanned evenly, not all at once."""
        window = max(1, int(self.interval.total_seconds()))
        offset = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % window
        return self._first_scan_at + timedelta(seconds=offset)

    @classmethod
    def for_app(cls, app: App) -> ComplianceScanner:
        settings = app.settings
        return cls(app.engine, interval=timedelta(seconds=settings.compliance_scan_seconds),
                   allowance=timedelta(seconds=settings.tick_seconds))

    def tick(self, creds: Iterable[LoadedCredential], submit: Callable[[Callable[[], None]], Future[None]]) -> None:
        """Start one background scan of the credentials whose window came round.

        At most one scan job is in flight, so scans take at most one worker
        and never pile up behind a slow provider."""
        try:
            if self._running is not None and not self._running.done():
                return
            now = self.engine.clock.now()
            creds = list(creds)
            self._forget_removed({c.spec.name for c in creds})
            for cred in creds:
                if cred.spec.name not in self._next_scan_at:
                    self._next_scan_at[cred.spec.name] = self._spread(cred.spec.name)
            due = [c for c in creds if self._next_scan_at[c.spec.name] <= now]
            if not due:
                return
            for cred in due:
                self._next_scan_at[cred.spec.name] = now + self.interval
            self._running = submit(lambda: self.scan_all(due))
        except Exception as exc:  # e.g. the pool is shutting down: rotations come first
            get_logger().warning("compliance.scan_failed", error=f"{type(exc).__name__}: {exc}")

    def scan_all(self, creds: Iterable[LoadedCredential]) -> None:
        for cred in creds:
            if self.engine.shutdown.is_set():
                return
            self.scan_safely(cred)

    def scan_safely(self, cred: LoadedCredential) -> list[Finding]:
        try:
            return self.scan(cred)
        except Exception as exc:  # a failing provider is reported, never raised into the daemon
            get_logger(credential=cred.spec.name, provider=cred.spec.provider).warning(
                "compliance.scan_failed", error=f"{type(exc).__name__}: {exc}")
            return []

    def scan(self, cred: LoadedCredential) -> list[Finding]:
        """Assess one credential now and log what was not yet reported in this window."""
        spec, engine = cred.spec, self.engine
        provider = engine.provider_for(cred)
        keys = self._list(provider) if provider.can_list else None
        options = {"allowance": self.allowance, "is_marking_atomic": provider.is_marking_atomic,
                   "reports_last_use": provider_reports_last_use(provider)}
        remembered = self.remembered(spec.name) if self.remembered is not None else None
        if remembered is not None and not assess(spec, remembered, keys, engine.clock.now(), **options):
            # Nothing to report by what the daemon last read: no Vault request.
            # Any finding is confirmed against a fresh read below.
            self._report(cred, [], engine.clock.now())
            return []
        # The record is read after listing: a key a rotation made meanwhile is
        # then either known to it or covered by its pending rotation.
        record, _ = engine.read_record(spec.name)
        now = engine.clock.now()
        findings = assess(spec, record, keys, now, **options)
        self._report(cred, findings, now)
        if keys is not None and spec.on_unused == "disable":
            self._disable_orphans(cred, provider, findings, keys)
        return findings

    def _list(self, provider: Provider) -> list[ProviderKey]:
        return retry.call_with_retry(provider.list_keys, clock=self.engine.clock, shutdown=self.engine.shutdown)

    def _report(self, cred: LoadedCredential, findings: list[Finding], now: datetime) -> None:
        log = get_logger(credential=cred.spec.name, provider=cred.spec.provider)
        current = {(cred.spec.name, f.kind, f.key_id): f for f in findings}
        with self._lock:
            for key in [k for k in self._reported if k[0] == cred.spec.name and k not in current]:
                del self._reported[key]  # resolved: report again at once should it come back
            fresh = [f for k, f in current.items() if k not in self._reported or now - self._reported[k] >= self.interval]
            for finding in fresh:
                self._reported[(cred.spec.name, finding.kind, finding.key_id)] = now
        for finding in fresh:
            log.warning(finding.event, **event_fields(finding, cred.spec))

    def _disable_orphans(self, cred: LoadedCredential, provider: Provider, findings: list[Finding], keys: list[ProviderKey]) -> None:
        engine = self.engine
        record, _ = engine.read_record(cred.spec.name)  # again: a rotation may have started meanwhile
        meta = engine.store.read_metadata(cred.spec.vault.mount, cred.spec.vault.path)
        live = meta.custom_metadata.get("rotator-key-id") if meta is not None else None
        handles = {k.key_id: k.handle for k in keys}
        log = get_logger(credential=cred.spec.name, provider=cred.spec.provider)
        for key_id in orphans_to_disable(cred.spec, record, findings, engine.clock.now(), live_key_id=live):
            retry.call_with_retry(lambda k=key_id: provider.revoke(handles[k]), clock=engine.clock, shutdown=engine.shutdown)
            log.warning("orphan.revoked", key_id=key_id, reason="unused")

    def _forget_removed(self, names: set[str]) -> None:
        with self._lock:
            for name in [n for n in self._next_scan_at if n not in names]:
                del self._next_scan_at[name]
            for key in [k for k in self._reported if k[0] not in names]:
                del self._reported[key]
