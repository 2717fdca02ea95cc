"""The `rotator` command line (contract §2).

Output rules: `run` and `rotate` print only events on stdout (one JSON
object per line in JSON format); other commands print their result on
stdout and problems on stderr. Nothing prints a secret value. Errors exit
with a message, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from rotator import __version__
from rotator.config.settings import Settings
from rotator.config.spec import LoadResult
from rotator.core.clock import to_rfc3339
from rotator.core.errors import ConfigError, RotatorError
from rotator.wiring import App, build_app, configure_logging, load_credentials, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
T = TypeVar("T")


def _configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Logging for `run` and `rotate`; an audit file that cannot be continued
    (a torn or altered tail) is a message and exit 1, never a traceback."""
    try:
        configure_logging(settings, stream=stream)
    except RotatorError as exc:
        click.echo(f"rotator: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if settings.vault_skip_verify:
        _log().warning("vault.tls_verify_disabled", reason="VAULT_SKIP_VERIFY is set")
    if settings.is_vault_plain_http_remote():
        _log().warning("vault.plain_http", reason="VAULT_ADDR is plain http:// to a host other than loopback: the Vault token and every secret cross the network unencrypted")
    from rotator.daemon.hardening import disable_core_dumps

    # `run` and `rotate` (and `pause`/`resume`) come through here before they read any secret.
    for failure in disable_core_dumps():
        _log().warning("process.core_dumps_not_disabled", reason=failure)
    from rotator.core.crashpoints import TEST_MODE_ENV, ignored_hooks

    for variable in ignored_hooks():
        _log().warning("process.test_hook_ignored", variable=variable, reason=f"test hooks act only with {TEST_MODE_ENV}=1")


def _settings(config_dir: Path | None = None) -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_CONFIG)
    if config_dir is not None:
        settings = settings.model_copy(update={"config_dir": config_dir})
    return settings


config_dir_option = click.option(
    "--config-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    help="Directory of credential files (default: $ROTATOR_CONFIG_DIR or /etc/rotator/credentials.d).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rotator")
def cli() -> None:
    """rotator keeps third-party credentials short-lived: on each credential's
    schedule it mints a new one, verifies it, writes it to Vault, keeps the
    previous one for a grace period, then revokes it, and logs every step as
    an audit event."""


@cli.command()
@config_dir_option
def validate(config_dir: Path | None) -> None:
    """Check every credential file without touching Vault or providers.

    Prints one line per problem, `FILE: field.path: message`; exits 0 when
    all files are valid, 2 otherwise."""
    settings = _settings(config_dir)
    result = _load_credentials(settings, problems_to_stdout=True)
    for problem in result.problems:
        click.echo(str(problem))
    from rotator.engine.registry import load_provider_errors

    for kind, error in load_provider_errors().items():  # unused by these files: a warning, not a problem
        click.echo(f"rotator: warning: the {kind} plugin fails to load: {error}", err=True)
    if result.problems:
        sys.exit(EXIT_CONFIG)
    click.echo(f"{len(result.credentials)} credential file(s) valid in {settings.config_dir}", err=True)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of credential files (for editors and CI)."""
    from rotator.config.loader import json_schema
    from rotator.engine.registry import load_providers

    click.echo(json.dumps(json_schema(load_providers()), indent=2))


@cli.command()
@config_dir_option
@click.option("--once", is_flag=True, help="One reconcile pass (rotate what is due, revoke what is past grace, resume unfinished work), then exit.")
def run(config_dir: Path | None, once: bool) -> None:
    """Run the daemon (or one pass with --once).

    Exit codes with --once: 0 ok, 1 a rotation failed, 2 a credential file
    or setting is invalid (the valid ones are still processed)."""
    from rotator.daemon.loop import Daemon
    from rotator.daemon.systemd import notify

    settings = _settings(config_dir)
    _configure_logging(settings)
    shutdown = threading.Event()
    try:
        app = build_app(settings, shutdown=shutdown)
    except RotatorError as exc:
        _log().error("daemon.failed", error=str(exc))
        sys.exit(EXIT_FAILED)
    daemon = Daemon(app, notify=notify)
    try:
        result = daemon.load(prefetch=not once)  # the daemon reads state records while files are parsed
    except ConfigError as exc:  # the policy file is broken: nothing may run unbounded
        for problem in exc.problems:
            _log().error("config.invalid", file=problem.file, error=f"{problem.field}: {problem.message}")
        sys.exit(EXIT_CONFIG)
    if not settings.config_dir.is_dir():
        sys.exit(EXIT_CONFIG)
    if once:
        daemon.preload_state()
        summary = daemon.run_pass(wait=True)
        daemon.close()
        sys.exit(EXIT_FAILED if summary.failed else EXIT_CONFIG if result.problems else EXIT_OK)

    def on_term(signum: int, _frame: Any) -> None:
        shutdown.set()

    def on_hup(signum: int, _frame: Any) -> None:
        daemon.reload_requested.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    from rotator.daemon.endpoints import serve_metrics

    server = serve_metrics(settings.metrics_addr, daemon) if settings.metrics_addr else None
    leak_hook = _serve_leak_webhook(settings, daemon)
    try:
        daemon.run_forever()
    finally:
        for listener in (server, leak_hook):
            if listener is not None:
                listener.shutdown()
    sys.exit(EXIT_OK)


def _serve_leak_webhook(settings: Settings, daemon: Any) -> Any:
    """`POST /webhooks/leak` (rotator.daemon.leak_webhook); an unreadable signing secret is exit 1."""
    if not settings.webhook_addr or not settings.leak_webhook_secret:
        return None
    from rotator.audit.events import redact_text
    from rotator.daemon.leak_webhook import serve_leak_webhook

    try:
        return serve_leak_webhook(settings.webhook_addr, daemon, settings.leak_webhook_secret)
    except (RotatorError, OSError) as exc:
        _log().error("daemon.failed", error=f"leak webhook on {settings.webhook_addr}: {redact_text(str(exc))}")
        sys.exit(EXIT_FAILED)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_dir_option
def status(as_json: bool, config_dir: Path | None) -> None:
    """Show each credential's provider, phase, last rotation, next due time,
    age, pending revocations and last error. Never prints secret values.
    Exits 1 when Vault is unreachable."""
    from rotator.audit.events import SECRETS
    from rotator.compliance.inventory import collect_status, render_status_table

    rows = _read_state(config_dir, collect_status)
    text = json.dumps(rows, indent=2, default=_json_default) if as_json else render_status_table(rows)
    click.echo(SECRETS.scrub(text))  # a safety net, as for report


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "markdown", "html"]), default="markdown", show_default=True)
@click.option("--audit-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="html: the audit file to draw and verify (default: $ROTATOR_AUDIT_FILE).")
@config_dir_option
def report(fmt: str, audit_file: Path | None, config_dir: Path | None) -> None:
    """Compliance inventory: every credential with owner, policy (interval or
    cron, grace), last rotated, age, next due, overdue, last error, pending
    revocations, and the unused and unmanaged keys found at the provider.
    `--format html` is one self-contained page for auditors: the inventory,
    a timeline per credential from the audit file, and the audit chain's
    verification. Never prints secret values. Exits 1 only when Vault is
    unreachable."""
    from rotator.audit.events import SECRETS
    from rotator.compliance.report import build_report, render

    report_rows = _read_state(config_dir, build_report)
    audit_file = audit_file or _settings(config_dir).audit_file
    click.echo(SECRETS.scrub(render(report_rows, fmt, audit_file=audit_file)))  # a safety net: no value the process read can pass


@cli.group()
def audit() -> None:
    """Work with audit files."""


def _register_audit_commands() -> None:
    from rotator.commands.audit import public_key_command, seal_command, verify_command

    for command in (verify_command, seal_command, public_key_command):
        audit.add_command(command)


_register_audit_commands()


@cli.command()
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after N seconds (default: run until Ctrl-C).")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path(".demo"), show_default=True,
              help="Where the credential files, audit file and server logs go (cleared at each demo run).")
def demo(duration: float | None, workdir: Path) -> None:
    """Watch real rotations: start local OpenBao, moto (AWS), GitHub and Stripe
    sandboxes, write one credential file per provider with short schedules,
    and run the daemon against them. Ctrl-C stops everything it started."""
    from rotator.demo import run_demo

    sys.exit(run_demo(workdir=workdir, duration=duration))


def _register_commands() -> None:
    """Commands implemented in their own modules."""
    from rotator.commands.leak import leaked
    from rotator.commands.pause import pause_command, resume_command
    from rotator.commands.plan import plan_command
    from rotator.commands.rotate import rotate

    for command in (rotate, leaked, plan_command, pause_command, resume_command):
        cli.add_command(command)


_register_commands()


def _read_state(config_dir: Path | None, collect: Callable[[App, LoadResult], T]) -> T:
    """What `status` and `report` share: files, then Vault; problems with the
    files go to stderr, an unreachable Vault is exit 1."""
    settings = _settings(config_dir)
    configure_logging(settings, stream=sys.stderr, with_audit_file=False)
    result = _load_credentials(settings)
    for problem in result.problems:
        click.echo(str(problem), err=True)
    try:
        return collect(build_app(settings), result)
    except RotatorError as exc:
        from rotator.audit.events import redact_text

        click.echo(f"rotator: cannot read state from Vault at {settings.vault_addr}: {redact_text(str(exc))}", err=True)
        sys.exit(EXIT_FAILED)


def _load_credentials(settings: Settings, *, problems_to_stdout: bool = False) -> LoadResult:
    """The credential files, with warnings on stderr; a broken policy file
    is its problems (stdout for `validate`, else stderr) and exit 2."""
    try:
        result = load_credentials(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=not problems_to_stdout)
        sys.exit(EXIT_CONFIG)
    for warning in result.warnings:
        click.echo(f"rotator: warning: {warning}", err=True)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _log() -> Any:
    from rotator.audit.events import get_logger

    return get_logger()


from rotator.commands.adopt import adopt as _adopt  # noqa: E402 - registered after the group exists

cli.add_command(_adopt)


def main() -> None:
    cli(prog_name="rotator")


if __name__ == "__main__":
    main()
