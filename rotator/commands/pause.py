"""`rotator pause NAME --reason TEXT [--until WHEN]` and `rotator resume NAME`.

The pause lives in the credential's state record (`paused`: reason, until,
by, at), so every replica obeys it; the state machine's gate
(`machine.is_paused`) stops scheduled rotations only: revocations already
due still happen, and `rotate NAME` still works.

Invariants:
- the record is changed with check-and-set, and never while another
  process holds its lease (the change would cost that process its lease
  mid-step): the command waits for the lease like `rotate` does;
- the change is appended to the change feed, so running daemons re-read the
  record at their next poll;
- `rotation.paused` / `rotation.resumed` are logged as audit events.
"""

from __future__ import annotations

import getpass
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from rotator.core.clock import parse_rfc3339, to_rfc3339
from rotator.core.errors import CasMismatchError, RotatorError
from rotator.core.state import Pause, StateRecord
from rotator.core.validators import parse_duration, secret_lookalike

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_REASON = 500


def parse_until(text: str, now: datetime) -> datetime:
    """WHEN: RFC 3339 (`2026-12-24T18:00:00Z`) or a duration from now (`2h`)."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        moment = parse_rfc3339(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an RFC 3339 time (2026-12-24T18:00:00Z) nor a duration (2h, 3d)") from None
    if text.strip()[-1:] not in {"Z", "z"} and "+" not in text[10:] and "-" not in text[10:]:
        raise ValueError(f"{text!r} has no UTC offset: end it with Z or +HH:MM")
    return moment


def check_reason(text: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise ValueError("a reason is required (who should know why rotations stopped?)")
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    if what := secret_lookalike(reason):
        raise ValueError(f"the reason looks like {what}: never put a secret in it")
    return reason


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def change_pause(engine, name: str, provider: str, pause: Pause | None, *, wait_seconds: float) -> StateRecord | None:  # type: ignore[no-untyped-def]
    """Write `pause` (None: resume) into NAME's record; returns the record as
    it was before. Waits for a lease held by another process."""
    deadline = time.monotonic() + wait_seconds
    while True:
        record, version = engine.read_record(name)
        base = record or StateRecord.new(name, provider)
        now = engine.clock.now()
        if base.lease is not None and engine.lease_held_by_other(base.lease, now):
            if time.monotonic() >= deadline:
                raise RotatorError(f"{name}: another process held the lease for {wait_seconds:.0f}s; nothing changed")
            time.sleep(0.5)
            continue
        try:
            engine.store.write(engine.options.state_mount, engine.state_path(name), base.model_copy(update={"paused": pause}).to_vault(), cas=version)
        except CasMismatchError:
            continue  # someone wrote in between: read again
        engine.changes.record(name)
        return record


def _event_fields(pause: Pause) -> dict[str, object]:
    return {"reason": pause.reason, "until": to_rfc3339(pause.until) if pause.until else None, "by": pause.by}


def _load(name: str, config_dir: Path | None):  # type: ignore[no-untyped-def]
    from rotator.cli import _configure_logging, _load_credentials, _log, _settings
    from rotator.wiring import build_app

    settings = _settings(config_dir)
    _configure_logging(settings)
    cred = _load_credentials(settings).credentials.get(name)
    if cred is None:
        _log().error("pause.unknown_credential", credential=name, error=f"no valid credential named {name!r} in {settings.config_dir}")
        sys.exit(EXIT_USAGE)
    try:
        app = build_app(settings)
    except RotatorError as exc:
        _log().error("pause.failed", credential=name, error=str(exc))
        sys.exit(EXIT_FAILED)
    return cred, app, _log()


_config_dir = click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                           help="Directory of credential files (default: $ROTATOR_CONFIG_DIR).")
_wait = click.option("--wait", "wait_seconds", type=float, default=120.0, show_default=True,
                     help="How long to wait if another process holds the credential's lease.")


@click.command("pause")
@click.argument("name")
@click.option("--reason", default="", help="Why (required): shown by status, plan and report, and audited.")
@click.option("--until", "until_text", default=None, help="When the pause ends by itself: RFC 3339 (2026-12-24T18:00:00Z) or a duration (2h, 3d).")
@click.option("--by", "actor", default=None, help="Who pauses (default: USER@HOST).")
@_wait
@_config_dir
def pause_command(name: str, reason: str, until_text: str | None, actor: str | None, wait_seconds: float, config_dir: Path | None) -> None:
    """Stop scheduled rotations of one credential (revocations already due
    still happen, and `rotate NAME` still works). Kept in the state record,
    so every replica obeys it. Exits 0 when paused, 1 on a Vault error, 2
    for an unknown NAME, a missing reason or a bad --until."""
    try:
        text = check_reason(reason)
    except ValueError as exc:
        click.echo(f"rotator: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    cred, app, log = _load(name, config_dir)
    now = app.engine.clock.now()
    try:
        until = parse_until(until_text, now) if until_text else None
    except ValueError as exc:
        click.echo(f"rotator: --until: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if until is not None and until <= now:
        click.echo("rotator: --until: that moment has passed", err=True)
        sys.exit(EXIT_USAGE)
    pause = Pause(reason=text, by=actor or default_actor(), at=now, until=until)
    try:
        change_pause(app.engine, name, cred.spec.provider, pause, wait_seconds=wait_seconds)
    except RotatorError as exc:
        log.error("pause.failed", credential=name, provider=cred.spec.provider, error=str(exc))
        sys.exit(EXIT_FAILED)
    log.info("rotation.paused", credential=name, provider=cred.spec.provider, **_event_fields(pause))
    click.echo(f"paused {name}" + (f" until {to_rfc3339(until)}" if until else " until resumed"), err=True)


@click.command("resume")
@click.argument("name")
@click.option("--by", "actor", default=None, help="Who resumes (default: USER@HOST).")
@_wait
@_config_dir
def resume_command(name: str, actor: str | None, wait_seconds: float, config_dir: Path | None) -> None:
    """Restart scheduled rotations of a paused credential (a rotation that
    fell due meanwhile starts at the next pass). Exits 0, 1 on a Vault
    error, 2 for an unknown NAME."""
    cred, app, log = _load(name, config_dir)
    try:
        record, _ = app.engine.read_record(name)
        if record is None or record.paused is None:
            click.echo(f"{name} is not paused", err=True)
            return
        before = change_pause(app.engine, name, cred.spec.provider, None, wait_seconds=wait_seconds)
    except RotatorError as exc:
        log.error("pause.failed", credential=name, provider=cred.spec.provider, error=str(exc))
        sys.exit(EXIT_FAILED)
    old = before.paused if before is not None else None
    if old is None:
        click.echo(f"{name} is not paused", err=True)
        return
    fields = _event_fields(old)
    log.info("rotation.resumed", credential=name, provider=cred.spec.provider, reason=fields["reason"], until=fields["until"],
             by=actor or default_actor(), paused_by=old.by)
    click.echo(f"resumed {name}", err=True)
