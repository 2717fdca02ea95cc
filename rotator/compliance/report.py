"""`rotator report`: the compliance inventory (docs/COMPLIANCE.md).

One row per credential (every credential file, and every state record
left without one): owner, description, provider, policy, last rotation,
age, next due time, overdue, last error, pending revocations, and the
unused and unmanaged keys found by listing the provider.

Invariants:
- it only reads: Vault state records (through `rotator.compliance.inventory`) and
  provider listings; it never changes a key or a record;
- no secret value: rows are built from `StateRecord.summary()` (records
  hold none, see `rotator.vault.records`), key ids and error messages, scrubbed
  (`rotator.audit.events.redact_text`); an unexpected exception is named by its
  type only;
- a provider that cannot list says so ("not listable"); one that fails to
  list says why, and the other rows are unaffected.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator.audit.events import redact_text
from rotator.compliance.inventory import collect_status
from rotator.compliance.scan import Finding, assess, provider_reports_last_use
from rotator.config.spec import LoadedCredential, LoadResult
from rotator.core.clock import to_rfc3339
from rotator.core.errors import RotatorError
from rotator.core.provider import Provider
from rotator.core.timetable import EPOCH
from rotator.core.validators import format_duration
from rotator.engine import retry

if TYPE_CHECKING:  # the composition root, above this layer: its type only
    from rotator.wiring import App

FORMATS = ("json", "csv", "markdown", "html")
NOT_LISTABLE = "not listable"
NO_FILE = "no credential file"


def build_report(app: App, result: LoadResult) -> dict[str, Any]:
    """The whole report as plain values (datetimes left as datetimes)."""
    now = app.engine.clock.now()
    allowance = timedelta(seconds=app.settings.tick_seconds)
    rows: list[dict[str, Any]] = []
    opened: list[Provider] = []
    try:
        for status in collect_status(app, result):
            rows.append(_row(app, status, result.credentials.get(status["credential"]), now, allowance, opened))
    finally:
        for provider in opened:
            provider.close()  # e.g. revokes the GitHub provider's management token
    return {"generated_at": now, "credentials": rows, "summary": _summary(rows)}


def _row(
    app: App, status: dict[str, Any], cred: LoadedCredential | None, now: datetime, allowance: timedelta, opened: list[Provider]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "credential": status["credential"],
        "owner": status["owner"],
        "description": cred.spec.description if cred else None,
        "provider": status["provider"],
        **_policy(cred),
        "phase": status["phase"],
        "last_rotated_at": status["last_rotated_at"],
        "age": status["age"],
        "next_due_at": status["next_due_at"],
        "overdue": None,
        "last_error": status["last_error"],
        "paused": status.get("paused"),
        "pending_revocations": [
            {"key_id": p["key_id"], "stage": p["stage"], "revoke_after": p["revoke_after"],
             "held_since": p.get("held_since"), "last_used_at": p.get("last_used_at")} for p in status["pending_revocations"]
        ],
        "keys": NO_FILE,
        "unused_keys": None,
        "unmanaged_keys": None,
    }
    if cred is not None:
        row.update(_compliance(app, cred, now, allowance, opened))
    return row


def _policy(cred: LoadedCredential | None) -> dict[str, Any]:
    if cred is None:
        return {"schedule": None, "interval": None, "cron": None, "grace": None, "unused_after": None, "on_unused": None}
    spec = cred.spec
    return {
        "schedule": spec.schedule.describe(),
        "interval": format_duration(spec.schedule.every) if spec.schedule.every is not None else None,
        "cron": spec.schedule.cron,
        "grace": format_duration(spec.grace),
        "unused_after": format_duration(spec.unused_after) if spec.unused_after is not None else None,
        "on_unused": spec.on_unused,
    }


def _compliance(app: App, cred: LoadedCredential, now: datetime, allowance: timedelta, opened: list[Provider]) -> dict[str, Any]:
    engine = app.engine
    provider = engine.provider_for(cred)
    opened.append(provider)
    keys, listing = None, NOT_LISTABLE
    if provider.can_list:
        try:
            keys = retry.call_with_retry(provider.list_keys, clock=engine.clock, shutdown=engine.shutdown)
            listing = "listed"
        except RotatorError as exc:
            listing = f"error: {redact_text(str(exc))}"
        except Exception as exc:  # a provider bug must not cost the other rows
            listing = f"error: unexpected {type(exc).__name__}"  # its message may quote a value: the type only
    record, _ = engine.read_record(cred.spec.name)
    findings = assess(cred.spec, record, keys, now, allowance=allowance, is_marking_atomic=provider.is_marking_atomic,
                      reports_last_use=provider_reports_last_use(provider))
    listed = keys is not None
    return {
        "overdue": any(f.kind == "overdue" for f in findings),
        "keys": listing,
        "unused_keys": [_unused(f) for f in findings if f.kind == "unused"] if listed else None,
        "unmanaged_keys": [_unmanaged(f) for f in findings if f.kind == "unmanaged"] if listed else None,
    }


def _unused(f: Finding) -> dict[str, Any]:
    return {"key_id": f.key_id, "last_used": f.last_used, "created_at": f.created_at, "live": f.is_live}


def _unmanaged(f: Finding) -> dict[str, Any]:
    return {"key_id": f.key_id, "created_at": f.created_at, "last_used": f.last_used, "active": f.active}


def _summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "credentials": len(rows),
        "overdue": sum(1 for r in rows if r["overdue"]),
        "paused": sum(1 for r in rows if r.get("paused")),
        "failing": sum(1 for r in rows if r["last_error"]),
        "unused_keys": sum(len(r["unused_keys"] or []) for r in rows),
        "unmanaged_keys": sum(len(r["unmanaged_keys"] or []) for r in rows),
        "not_listable": sum(1 for r in rows if r["keys"] == NOT_LISTABLE),
    }


# -- rendering ----------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def render(report: dict[str, Any], fmt: str, *, audit_file: Path | None = None) -> str:
    """The report in `fmt`; html also draws and verifies `audit_file` (rotator.compliance.report_html)."""
    if fmt == "html":
        from rotator.compliance.report_html import render_html

        return render_html(report, audit_file)
    if fmt == "json":
        return json.dumps(report, indent=2, default=_json_default)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "markdown":
        return render_markdown(report)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return to_rfc3339(value)
    return str(value)


def _keys_cell(row: dict[str, Any], field: str) -> str:
    entries = row[field]
    if entries is None:
        return row["keys"]  # not listable, no credential file, or the listing error
    if field == "unused_keys":
        return "; ".join(
            f"{e['key_id']} ({'live, ' if e['live'] else ''}{'last used ' + _text(e['last_used']) if e['last_used'] else 'never used'})"
            for e in entries
        )
    return "; ".join(f"{e['key_id']}{'' if e['active'] else ' (inactive)'}" for e in entries)


def _pending_cell(row: dict[str, Any]) -> str:
    return "; ".join(
        f"{p['key_id']} ({p['stage']}, revoke after {_text(p['revoke_after'])}"
        + (f"; held: in use, last used {_text(p.get('last_used_at'))}" if p.get("held_since") else "") + ")"
        for p in row["pending_revocations"]
    )


def _paused_cell(row: dict[str, Any]) -> str:
    paused = row.get("paused")
    if not paused:
        return "no"
    until = f", until {_text(paused.get('until'))}" if paused.get("until") else ""
    return f"yes: {paused.get('reason')} (by {paused.get('by')}{until})"


COLUMNS: tuple[tuple[str, str], ...] = (
    ("credential", "Credential"), ("owner", "Owner"), ("description", "Description"), ("provider", "Provider"),
    ("schedule", "Schedule"), ("grace", "Grace"), ("last_rotated_at", "Last rotated"), ("age", "Age"),
    ("next_due_at", "Next due"), ("overdue", "Overdue"), ("paused", "Paused"), ("last_error", "Last error"),
    ("pending_revocations", "Pending revocations"), ("unused_keys", "Unused keys"), ("unmanaged_keys", "Unmanaged keys"),
)


def _cells(row: dict[str, Any]) -> list[str]:
    out = []
    for field, _ in COLUMNS:
        if field in {"unused_keys", "unmanaged_keys"}:
            out.append(_keys_cell(row, field))
        elif field == "pending_revocations":
            out.append(_pending_cell(row))
        elif field == "paused":
            out.append(_paused_cell(row))
        elif field == "next_due_at" and row[field] == EPOCH:
            out.append("now (never rotated)")
        else:
            out.append(_text(row[field]))
    return out


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([field for field, _ in COLUMNS])
    for row in report["credentials"]:
        writer.writerow(_cells(row))
    return buffer.getvalue().rstrip("\n")


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or "-"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# rotator compliance report",
        "",
        f"Generated {_text(report['generated_at'])}: {s['credentials']} credential(s), {s['overdue']} overdue, "
        f"{s['failing']} failing, {s['unused_keys']} unused key(s), {s['unmanaged_keys']} unmanaged key(s), "
        f"{s['not_listable']} not listable, {s['paused']} paused.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in report["credentials"]:
        lines.append("| " + " | ".join(_md(c) for c in _cells(row)) + " |")
    return "\n".join(lines)
