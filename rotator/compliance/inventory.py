"""What `rotator status` (and the compliance report) show: per credential,
plain non-secret facts gathered from the credential files and the state
records in Vault."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rotator.audit.events import redact_text
from rotator.config.spec import LoadResult
from rotator.core import machine
from rotator.core.clock import to_rfc3339
from rotator.core.state import StateRecord
from rotator.core.timetable import due_at
from rotator.core.validators import format_duration

if TYPE_CHECKING:  # the composition root, above this layer: its type only
    from rotator.wiring import App


def _age(now: datetime, since: datetime | None) -> str | None:
    if since is None:
        return None
    return format_duration(now.replace(microsecond=0) - since.replace(microsecond=0))


def status_row(name: str, record: StateRecord | None, app: App, cred: Any | None, now: datetime) -> dict[str, Any]:
    summary = record.summary() if record else {}
    row: dict[str, Any] = {
        "credential": name,
        "provider": cred.spec.provider if cred else summary.get("provider"),
        "owner": cred.spec.owner if cred else None,
        "phase": summary.get("phase", "unmanaged" if record is None else "idle"),
        "key_id": summary.get("key_id"),
        "last_rotated_at": summary.get("last_rotated_at"),
        "age": _age(now, record.last_rotated_at if record else None),
        "next_due_at": None,
        "pending_revocations": summary.get("pending_revocations", []),
        "attempts": summary.get("attempts", 0),
        "next_attempt_at": summary.get("next_attempt_at"),
        # Scrubbed when stored; again here, with what this process knows.
        "last_error": redact_text(error) if isinstance(error := summary.get("last_error"), str) else None,
        "blocked": summary.get("blocked", False),
        "has_credential_file": cred is not None,
        "moved_to": record.moved_to if record is not None and cred is None else None,  # a renamed file's old record
        "paused": summary.get("paused") if record is not None and machine.is_paused(record, now) else None,
    }
    if record is None:
        row["phase"] = "new"
    if cred is not None:
        policy = app.engine.policy_for(cred)
        row["next_due_at"] = due_at(cred.spec.schedule, record)
        if record is not None and machine.is_blocked(record, policy):
            row["next_due_at"] = None
    return row


def collect_status(app: App, result: LoadResult) -> list[dict[str, Any]]:
    now = app.engine.clock.now()
    names = set(result.credentials)
    prefix = app.settings.state_prefix
    stored = {name for name in app.store.walk(app.settings.state_mount, prefix) if not name.startswith("_")}
    rows = []
    for name in sorted(names | stored):
        record, _ = app.engine.read_record(name) if name in stored else (None, 0)
        rows.append(status_row(name, record, app, result.credentials.get(name), now))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, list):
        return str(len(value))
    return str(value)


def render_status_table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("CREDENTIAL", "credential"), ("PROVIDER", "provider"), ("PHASE", "phase"),
        ("LAST ROTATED", "last_rotated_at"), ("AGE", "age"), ("NEXT DUE", "next_due_at"),
        ("PENDING REVOKE", "pending_revocations"), ("LAST ERROR", "last_error"),
    ]
    table = [[title for title, _ in columns]]
    for row in rows:
        cells = [_cell(row[key]) for _, key in columns]
        if row.get("moved_to"):
            cells[2] += f" (moved to {row['moved_to']})"
        elif not row["has_credential_file"]:
            cells[2] += " (no file)"
        if row.get("paused"):
            cells[2] += " (paused)"
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)
