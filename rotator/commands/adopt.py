"""`rotator adopt NAME` on the command line (the logic: rotator.engine.adoption)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("adopt")
@click.argument("name")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of credential files (default: $ROTATOR_CONFIG_DIR or /etc/rotator/credentials.d).")
def adopt(name: str, config_dir: Path | None) -> None:
    """Accept what NAME's live path holds now as its baseline.

    Needed before a first rotation onto a path holding data the rotator did
    not write, and after someone else wrote the live path. Where the
    provider can name the key in that data (AWS access_key_id, Stripe
    key_id, deploy key key_id), that key becomes the current key, and the
    next rotation retires it after grace. Logs credential.adopted. Exits 0
    when adopted, 1 on a Vault or provider error (or while a rotation holds
    the lease), 2 when NAME is not a valid credential."""
    from rotator.cli import EXIT_CONFIG, EXIT_FAILED, _configure_logging, _load_credentials, _log, _settings
    from rotator.core.errors import RotatorError
    from rotator.engine.adoption import adopt as adopt_live
    from rotator.wiring import build_app

    settings = _settings(config_dir)
    _configure_logging(settings)
    result = _load_credentials(settings)  # a broken policy file: its problems and exit 2
    cred = result.credentials.get(name)
    if cred is None:
        problems = [str(p) for p in result.problems if Path(p.file).stem == name]
        _log().error("adopt.unknown_credential", credential=name,
                     error="; ".join(problems) or f"no valid credential named {name!r} in {settings.config_dir}")
        sys.exit(EXIT_CONFIG)
    try:
        app = build_app(settings)
        adopted = adopt_live(app.engine, cred)
        app.engine.close()
    except RotatorError as exc:
        _log().error("adopt.failed", credential=name, provider=cred.spec.provider, error=str(exc))
        sys.exit(EXIT_FAILED)
    if adopted.note:
        click.echo(f"rotator: {name}: {adopted.note}", err=True)
