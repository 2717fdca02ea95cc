"""`rotator plan [--json]`: for each credential, what the next pass would do,
when, and why: `rotate` (with the reason), `revoke KEY_ID`, `wait` (for the
schedule, the window, a retry, a grace period or a held revocation with the
key's last use), `paused`, or `blocked` (with the error).

Invariants:
- it reads the credential files and the state records in Vault, nothing
  else: no provider is called (not even a read: the last use of a held key
  is the one recorded at its last check), and nothing is written;
- the answer comes from the state machine itself (`machine.next_action`,
  `machine.next_wake_at`), so the plan cannot drift from what a pass does.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from rotator.config.spec import LoadedCredential, LoadResult
from rotator.core import machine
from rotator.core.clock import to_rfc3339
from rotator.core.state import Retiring, StateRecord, StateRecordError
from rotator.core.timetable import EPOCH, due_at, scheduled_at


def plan_row(cred: LoadedCredential, record: StateRecord | None, policy: machine.Policy, now: datetime) -> dict[str, Any]:
    """One credential's plan, as plain values."""
    spec = cred.spec
    base = record or StateRecord.new(spec.name, spec.provider)
    paused = base.paused if machine.is_paused(base, now) else None
    row: dict[str, Any] = {
        "credential": spec.name, "provider": spec.provider, "owner": spec.owner,
        "action": "wait", "key_id": None, "at": None, "reason": "",
        "paused": {"reason": paused.reason, "until": paused.until, "by": paused.by, "at": paused.at} if paused else None,
        "window": spec.schedule.window.describe() if spec.schedule.window else None,
        "held": [_held(e) for e in base.retiring if e.held_since is not None],
    }
    action = machine.next_action(base, policy, now)
    if action is not None:
        row.update(_act(action, base, policy, now))
        return row
    if machine.is_blocked(base, policy):
        row.update(action="blocked", reason=f"{base.last_error_step or 'rotation'} failed: {base.last_error or 'unknown error'}"
                   " (until the file changes or someone runs `rotator rotate`)")
        return row
    wake = machine.next_wake_at(base, policy, now)
    row["at"] = wake
    row["reason"] = _why_wait(base, policy, now, wake)
    if paused is not None and not _retirement_first(base, policy, wake, now):
        row["action"] = "paused"
        row["reason"] = f"paused by {paused.by}: {paused.reason}" + (f" (until {to_rfc3339(paused.until)})" if paused.until else "")
    return row


def _act(action: machine.Action, record: StateRecord, policy: machine.Policy, now: datetime) -> dict[str, Any]:
    match action:
        case machine.Deactivate(key_id=key_id) | machine.Revoke(key_id=key_id):
            entry = next(e for e in record.retiring if e.key.key_id == key_id)
            step = "deactivate, then delete later" if isinstance(action, machine.Deactivate) else "revoke"
            reason = f"grace ended {to_rfc3339(entry.revoke_after)}: {step}"
            if entry.stage == "deactivated":
                reason = "deactivated; its deletion is due"
            elif entry.immediate:
                reason = "--revoke-now: revoke at once"
            elif policy.revocation.when_in_use == "wait":
                reason += "; first asks the provider when it was last used (held while in use)"
            return {"action": "revoke", "key_id": key_id, "at": now, "reason": reason}
        case machine.StartRotation():
            if record.last_rotated_at is None:
                why = "never rotated: the first rotation brings it under management"
            else:
                why = f"due since {to_rfc3339(due_at(policy.schedule, record))} ({policy.schedule.describe()})"
            return {"action": "rotate", "at": now, "reason": why}
    pending = record.pending
    phase = pending.phase if pending else "?"
    return {"action": "rotate", "at": now, "reason": f"recovery: finish the rotation {pending.rotation_id if pending else ''} (phase {phase})"}


def _why_wait(record: StateRecord, policy: machine.Policy, now: datetime, wake: datetime | None) -> str:
    if wake is None:
        return "nothing scheduled"
    reasons: list[str] = []
    for entry in record.retiring:
        if entry.held_since is not None:
            used = to_rfc3339(entry.last_used_at) if entry.last_used_at else "unknown"
            reasons.append(f"held revocation of {entry.key.key_id}: in use, last used {used}; next check "
                           f"{to_rfc3339(entry.recheck_at) if entry.recheck_at else 'at the next pass'}")
        elif entry.next_attempt_at is not None and entry.next_attempt_at > now:
            reasons.append(f"retry of the {'deletion' if entry.stage == 'deactivated' else 'revocation'} of {entry.key.key_id}"
                           f" after: {entry.last_error}")
        elif entry.stage == "active" and entry.revoke_after > now:
            reasons.append(f"grace of {entry.key.key_id} until {to_rfc3339(entry.revoke_after)}")
        elif entry.stage == "deactivated" and entry.delete_after and entry.delete_after > now:
            reasons.append(f"{entry.key.key_id} deactivated; deleted from {to_rfc3339(entry.delete_after)}")
        elif not entry.immediate and not machine.is_in_window(policy, now):
            reasons.append(f"window for the revocation of {entry.key.key_id}")
    if record.pending is not None and record.next_attempt_at is not None:
        reasons.append(f"retry of the rotation after: {record.last_error}")
    elif record.pending is None and record.next_attempt_at is not None and record.next_attempt_at > now:
        reasons.append(f"retry after {record.last_error_step} failed: {record.last_error}")
    elif record.pending is None and not machine.is_paused(record, now):
        due, scheduled = due_at(policy.schedule, record), scheduled_at(policy.schedule, record)
        window = policy.schedule.window.describe() if policy.schedule.window else ""
        since = to_rfc3339(scheduled) if scheduled > EPOCH else "the start"
        if due <= now and not machine.is_in_window(policy, now):
            reasons.append(f"window ({window}) for the rotation due since {since}")
        elif scheduled < due:
            reasons.append(f"schedule: due {since}, starts when the window ({window}) opens at {to_rfc3339(due)}")
        else:
            reasons.append(f"schedule: next rotation due {to_rfc3339(due)}")
    return "; ".join(reasons) or "nothing due"


def _retirement_first(record: StateRecord, policy: machine.Policy, wake: datetime | None, now: datetime) -> bool:
    """Whether the next wake-up is for a retirement (a paused credential still revokes)."""
    if wake is None:
        return False
    alone = record.model_copy(update={"retiring": []})
    return machine.next_wake_at(alone, policy, now) != wake


def _held(entry: Retiring) -> dict[str, Any]:
    return {"key_id": entry.key.key_id, "held_since": entry.held_since, "last_used_at": entry.last_used_at,
            "recheck_at": entry.recheck_at, "checks": entry.checks}


def collect_plan(app: Any, result: LoadResult) -> list[dict[str, Any]]:
    """Every valid credential file's plan, reading its record from Vault."""
    now = app.engine.clock.now()
    rows = []
    for name in sorted(result.credentials):
        cred = result.credentials[name]
        try:
            record, _ = app.engine.read_record(name)
        except StateRecordError as exc:  # one bad record never hides the others' plans
            rows.append(_unreadable(cred, str(exc)))
            continue
        rows.append(plan_row(cred, record, app.engine.policy_for(cred), now))
    return rows


def _unreadable(cred: LoadedCredential, error: str) -> dict[str, Any]:
    spec = cred.spec
    return {"credential": spec.name, "provider": spec.provider, "owner": spec.owner, "action": "blocked", "key_id": None,
            "at": None, "reason": error, "paused": None, "window": spec.schedule.window.describe() if spec.schedule.window else None,
            "held": []}


def render_table(rows: list[dict[str, Any]]) -> str:
    table = [["CREDENTIAL", "ACTION", "WHEN", "WHY"]]
    for row in rows:
        action = f"{row['action']} {row['key_id']}" if row["key_id"] else row["action"]
        when = "now" if row["action"] in {"rotate", "revoke"} else (to_rfc3339(row["at"]) if row["at"] else "-")
        table.append([row["credential"], action, when, row["reason"]])
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]).rstrip() for r in table)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


@click.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of credential files (default: $ROTATOR_CONFIG_DIR).")
def plan_command(as_json: bool, config_dir: Path | None) -> None:
    """Show what the next pass would do for each credential, when and why:
    rotate, revoke KEY_ID, wait (schedule, window, grace, retry or a held
    revocation with the key's last use), paused or blocked. Reads Vault
    only: never calls a provider and never writes. Exits 1 when Vault is
    unreachable."""
    from rotator.audit.events import SECRETS, redact_text
    from rotator.cli import _read_state

    rows = _read_state(config_dir, collect_plan)
    for row in rows:  # a reason may quote a last error: scrubbed when stored, and again here
        row["reason"] = redact_text(row["reason"])
    text = json.dumps(rows, indent=2, default=_json_default) if as_json else render_table(rows)
    click.echo(SECRETS.scrub(text))
    sys.stdout.flush()
