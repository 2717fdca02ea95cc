"""`rotator leaked` on the command line (the logic: rotator.engine.leak)."""

from __future__ import annotations

import getpass
import sys
import threading
from pathlib import Path

import click

EXIT_NO_MATCH = 3


@click.command("leaked")
@click.option("--sha256", "digest", metavar="HEX", default=None, help="Match this SHA-256 (hex) instead of reading a value on stdin.")
@click.option("--wait", "wait_seconds", type=float, default=120.0, show_default=True, help="How long to wait for a credential's lock if another process holds it.")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of credential files (default: $ROTATOR_CONFIG_DIR or /etc/rotator/credentials.d).")
def leaked(digest: str | None, wait_seconds: float, config_dir: Path | None) -> None:
    """Leak response: read a leaked value on stdin (never echoed; on a
    terminal it is asked for without echo), find the credential whose live
    or in-grace credential it is by SHA-256, log credential.leaked and
    rotate it with --revoke-now.

    Exits 0 when the matching credential was rotated, 1 when that failed,
    2 on a usage error (nothing on stdin), 3 when the value matches nothing
    the rotator manages."""
    from rotator.audit.events import redact_text
    from rotator.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, _configure_logging, _load_credentials, _log, _settings
    from rotator.core.errors import RotatorError
    from rotator.engine import leak
    from rotator.wiring import build_app, loaded_names

    settings = _settings(config_dir)
    if digest is not None:
        try:
            digests = {leak.parse_digest(digest)}
        except ValueError as exc:
            click.echo(f"rotator: --sha256: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
    else:
        value = _read_value()
        if value is None:
            click.echo(f"rotator: give the leaked value on stdin (at most {leak.MAX_VALUE_BYTES} bytes), or --sha256 HEX", err=True)
            sys.exit(EXIT_CONFIG)
        digests = leak.digests_of(value)
        del value
    _configure_logging(settings)
    loaded = _load_credentials(settings)
    for problem in loaded.problems:
        click.echo(f"rotator: {problem}", err=True)
    stop = threading.Event()
    from rotator.commands.rotate import _on_interrupt

    _on_interrupt(stop)
    try:
        app = build_app(settings, shutdown=stop)
        app.engine.configured = loaded_names(loaded)
        matches = leak.find_matches(app.engine, loaded.credentials.values(), digests, concurrency=settings.max_concurrency)
    except RotatorError as exc:
        _log().error("leak.lookup_failed", error=redact_text(str(exc)))
        sys.exit(EXIT_FAILED)
    if not matches:
        click.echo("rotator: the value matches no live or in-grace credential the rotator manages", err=True)
        app.engine.close()
        sys.exit(EXIT_NO_MATCH)
    outcomes = leak.respond(app.engine, matches, source="cli", stop=stop, lease_wait=wait_seconds)
    app.engine.close()
    for outcome in outcomes:
        verdict = "rotated, the leaked key revoked" if outcome.is_ok else f"{outcome.result}: {outcome.reason or '-'}"
        click.echo(redact_text(f"rotator: {outcome.credential}: {verdict}"), err=True)
    sys.exit(EXIT_OK if all(o.is_ok for o in outcomes) else EXIT_FAILED)


def _read_value() -> str | None:
    from rotator.engine.leak import MAX_VALUE_BYTES

    if sys.stdin is None:
        return None
    if sys.stdin.isatty():
        value = getpass.getpass("leaked value (not echoed): ", stream=sys.stderr)
    else:
        raw = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
        if len(raw) > MAX_VALUE_BYTES:
            return None
        value = raw.decode("utf-8", errors="replace")  # a value that is not UTF-8 matches nothing stored
    return value if value.strip() else None
