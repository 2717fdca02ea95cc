"""The daemon's scan for records whose credential file was removed (contract
§6.9), at start-up and on each reload: those with keys still to retire are
reconciled for retirement only (rotator.engine.fileless).

Invariants:
- a record whose latest version was deleted by hand is written back from
  its newest readable version first (nothing else names the keys it retires);
- a record of a file that is only broken, or of another deployment's file
  (another config directory sharing the state prefix), is left alone;
- a record with nothing pending or retiring is compared with its live path
  once per version of the record, and again every `LOOK_AGAIN` (a path
  written over by hand since; the daemon scans that often), by the engine's
  clock (`Engine.reconcile(look_behind=True)`):
  restored to an older version, it learns of the rotations since and
  retires the keys they left (and, a full grace later, those of a
  rotation since that never went live, where no path they can have
  reached holds them: rotator.engine.forgotten); up to date, it costs
  those reads and a key listing, and no write.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rotator.core.errors import RotatorError
from rotator.core.state import StateRecord
from rotator.engine.fileless import fileless_credential, has_work, looked_lately
from rotator.engine.registry import load_providers
from rotator.engine.results import ReconcileResult

if TYPE_CHECKING:
    from rotator.daemon.loop import CredentialView, Daemon


def was_removed_here(source: str | None, config_dir: Path) -> bool:
    """The record came from a file in this daemon's config directory, now gone."""
    if not source:
        return False
    path = Path(source)
    try:
        return path.parent.resolve() == config_dir.resolve() and not path.exists()
    except OSError:
        return False


def find_fileless(daemon: Daemon) -> dict[str, CredentialView] | None:
    """The file-less credentials with keys to retire, each with the record it
    was seen with; None when the scan failed (the last one stays)."""
    from rotator.daemon.loop import CredentialView

    app, engine, log = daemon.app, daemon.engine, daemon.log
    settings = app.settings
    with daemon._lock:
        known = set(daemon.views)
        failed = set(daemon.failed_files)
        previous = dict(daemon.fileless)
    try:
        names = [n for n in app.store.walk(settings.state_mount, settings.state_prefix)
                 if not n.startswith("_") and "/" not in n and n not in known]
        found = app.store.read_many(settings.state_mount, [engine.state_path(n) for n in names])
    except RotatorError as exc:
        log.warning("state.fileless_scan_failed", error=str(exc))
        return None
    for name in names:
        path = engine.state_path(name)
        if path in found and found[path].data is not None:
            continue
        # Listed but unreadable: its latest version deleted by hand. With no
        # file, nothing else names the keys it retires (contract §6.9).
        try:
            revived = engine.records.revive(name)
        except (RotatorError, ValueError) as exc:
            log.warning("state.revive_failed", credential=name, error=str(exc))
            continue
        if revived is not None:
            log.warning("state.record_revived", credential=name, vault_version=revived.version)
            found[path] = revived
    stems = {Path(f).stem for f in failed}
    fileless: dict[str, CredentialView] = {}
    for current in found.values():
        try:
            record = StateRecord.from_vault(current.data) if current.data is not None else None
        except ValueError:
            continue
        if record is None or record.credential in stems or (record.source or "") in failed:
            continue  # nothing to do, or its file is only broken (its last good version is unknown here)
        idle = not has_work(record)
        if idle and (record.moved_to is not None
                     or looked_lately(daemon.looked_behind.get(record.credential), current.version, engine.clock.now())):
            continue  # handed its keys on, or compared with its live path at this version lately
        if not was_removed_here(record.source, settings.config_dir):
            continue  # another deployment's credential sharing the state prefix: not ours to undo
        cred = fileless_credential(record, load_providers())
        if cred is None:
            if not idle:
                log.warning("state.fileless_unretirable", credential=record.credential,
                            error="its file was removed and its record lacks the provider params to retire its keys")
            continue
        result = ReconcileResult("idle", record, current.version)
        if idle:
            result = engine.reconcile(cred, known=(record, current.version), look_behind=True)
            if result.status == "idle":
                daemon.looked_behind[record.credential] = (current.version, engine.clock.now())
            if result.record is None or not has_work(result.record):
                continue
        view = previous.get(record.credential)
        if view is None or view.cred.fingerprint != cred.fingerprint:
            view = CredentialView(cred)
        daemon._remember(view, result)
        fileless[record.credential] = view
    return fileless
