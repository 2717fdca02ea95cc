"""`rotator rotate` on the command line (the logic: rotator.engine.mass)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click


@click.command("rotate")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "everything", is_flag=True, help="Every valid credential in the config directory.")
@click.option("--provider", "provider_kind", metavar="KIND", default=None, help="Every credential of this provider (e.g. aws.iam_access_key).")
@click.option("--owner", default=None, metavar="OWNER", help="Every credential of this owner (combines with --provider).")
@click.option("--revoke-now", is_flag=True, help="Revoke each previous credential as soon as its successor is live (incident response).")
@click.option("--wait", "wait_seconds", type=float, default=120.0, show_default=True, help="How long to wait for a credential's lock if another process holds it.")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of credential files (default: $ROTATOR_CONFIG_DIR or /etc/rotator/credentials.d).")
def rotate(names: tuple[str, ...], everything: bool, provider_kind: str | None, owner: str | None, revoke_now: bool,
           wait_seconds: float, config_dir: Path | None) -> None:
    """Rotate credentials now (NAME..., --all, --provider KIND, --owner OWNER),
    taking the same lock the daemon takes, ROTATOR_MAX_CONCURRENCY at a time.

    stdout carries the events; on a terminal a progress bar goes to stderr,
    and a summary table (done / failed / rolled back, with reasons) ends the
    run on stderr. Ctrl-C finishes the steps in flight and starts no new
    one. Exits 0 when every selected credential was rotated, 1 when any
    failed, was rolled back or was not started, 2 when the selection names
    no valid credential."""
    from rotator.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, _configure_logging, _load_credentials, _log, _settings
    from rotator.core.errors import RotatorError
    from rotator.engine import mass
    from rotator.wiring import build_app, loaded_names

    settings = _settings(config_dir)
    err = mass.stderr()
    progress = mass.Progress(0, err, enabled=err.isatty())
    _configure_logging(settings, stream=mass.EventStream(sys.stdout, progress))
    loaded = _load_credentials(settings)
    for problem in loaded.problems:
        click.echo(f"rotator: {problem}", err=True)
    selection = mass.Selection(names=names, everything=everything, provider=provider_kind, owner=owner)
    try:
        creds = mass.select(loaded, selection)
    except mass.SelectionError as exc:
        if names and not (everything or provider_kind or owner):
            missing = [n for n in names if n not in loaded.credentials]
            problems = [str(p) for p in loaded.problems if Path(p.file).stem in missing]
            _log().error("rotate.unknown_credential", credential=", ".join(missing),
                         error="; ".join(problems) or f"{exc} in {settings.config_dir}")
        else:
            click.echo(f"rotator: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    stop = threading.Event()
    _on_interrupt(stop)
    started = time.monotonic()
    try:
        app = build_app(settings, shutdown=stop)
    except RotatorError as exc:
        from rotator.audit.events import redact_text

        _log().error("rotation.failed", credential=creds[0].spec.name if len(creds) == 1 else None, step="start",
                     error=redact_text(str(exc)), will_retry=False, next_attempt_at=None)
        sys.exit(EXIT_FAILED)
    app.engine.configured = loaded_names(loaded)
    progress.total = len(creds)
    outcomes = mass.rotate_many(app.engine, creds, revoke_now=revoke_now, concurrency=settings.max_concurrency,
                                lease_wait=wait_seconds, stop=stop, on_done=progress.add)
    app.engine.close()
    progress.finish()
    if everything:
        outcomes += mass.invalid_outcomes(loaded)
    if len(outcomes) > 1 or not outcomes[0].is_ok:
        from rotator.audit.events import SECRETS

        click.echo(SECRETS.scrub(mass.render_summary(outcomes, elapsed=time.monotonic() - started)), err=True, nl=False)
    sys.exit(EXIT_OK if all(o.is_ok for o in outcomes) else EXIT_FAILED)


def _on_interrupt(stop: threading.Event) -> None:
    """SIGINT and SIGTERM: finish the steps in flight, start no new one."""

    def handler(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            stop.set()
            sys.stderr.write("\nrotator: interrupted: finishing the steps in flight, starting no new one\n")
            sys.stderr.flush()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
