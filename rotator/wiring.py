"""Wiring: settings, logging, Vault, credential files and the engine, put
together the same way for every command."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from rotator.audit import events as audit
from rotator.config.loader import load_directory
from rotator.config.policy import TrustRules, read_policy
from rotator.config.settings import Settings
from rotator.config.spec import LoadedCredential, LoadResult
from rotator.core.clock import Clock, SystemClock
from rotator.core.errors import ConfigError, ConfigProblem, RotatorError
from rotator.engine.registry import load_providers

if TYPE_CHECKING:  # the engine, hvac and the provider SDKs load only for commands that use Vault:
    # `validate` must answer within a second (issue 11)
    from rotator.audit.anchor import Anchorer
    from rotator.audit.writer import AuditFile
    from rotator.engine.reconcile import Engine
    from rotator.vault.store import VaultStore


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = [
            ConfigProblem("environment", _variable(".".join(str(p) for p in err["loc"])), err["msg"].removeprefix("Value error, "))
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None


def _variable(loc: str) -> str:
    # Vault's own variables (VAULT_ADDR...) are aliases, named as they are.
    return loc if loc.isupper() else "ROTATOR_" + loc.upper()


def configure_logging(settings: Settings, *, stream: TextIO | None = None, with_audit_file: bool = True) -> None:
    """Logging for the process; with an audit file, its tip is first checked
    against the anchor in Vault (AuditChainError: nothing is appended), and
    then anchored while the process runs and when it exits (docs/AUDIT.md)."""
    from rotator.compliance.alerts import install as install_alerts

    alert_sink = install_alerts(settings)

    def setup(sink: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
        audit.configure(fmt=settings.effective_log_format(), stream=stream or sys.stdout, audit_sink=sink, alert_sink=alert_sink)

    if not with_audit_file or settings.audit_file is None:
        setup(None)
        return
    from rotator.audit.anchor import HeldAppends
    from rotator.audit.writer import AuditFile

    writer = AuditFile(settings.audit_file)
    # What the anchor check logs (its Vault login) is held back from the file
    # until the check passes: a refused start appends nothing.
    held = HeldAppends(writer.append)
    setup(_never_blocking(held))
    anchorer = prepare_anchorer(settings, writer)
    held.release()
    anchorer.start()


def prepare_anchorer(settings: Settings, writer: AuditFile) -> Anchorer:
    """The anchorer of this process's audit file, checked against Vault
    before anything is appended (raises AuditChainError when the file is
    behind or off its anchor)."""
    from rotator.audit.anchor import Anchorer, AnchorStore
    from rotator.vault.store import VaultStore

    store = VaultStore(settings.vault_connection())
    try:
        store.login()
    except RotatorError:
        pass  # no usable login now: the check below meets the same error and says so
    anchorer = Anchorer(writer, AnchorStore(store, settings.audit_anchor_location(), transit=settings.audit_transit_location()))
    anchorer.check_at_start()
    return anchorer


def _never_blocking(append: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An audit file that cannot be written (disk full, a torn tail left by
    another process) must not stop rotations half-way: the event still goes
    to stdout, marked with `audit_file_error`, for the log pipeline."""

    def sink(event: dict[str, Any]) -> dict[str, Any]:
        try:
            return append(event)
        except (OSError, RotatorError) as exc:
            return {**event, "audit_file_error": f"{type(exc).__name__}: {exc}"}

    return sink


def load_credentials(settings: Settings, *, keep_last_good_policy: bool = False,
                     on_loaded: Callable[[LoadedCredential], None] | None = None) -> LoadResult:
    """Every credential file under the API-host rule and the operator policy.

    A broken policy file raises `ConfigError` (exit 2), except on a daemon's
    reload (`keep_last_good_policy`), where the last good version stays in
    force and the policy's problems are reported with the files'."""
    policy, policy_problems = read_policy(settings.policy_file, keep_last_good=keep_last_good_policy)
    # A plugin that fails to load is reported in each file that names it.
    result = load_directory(settings.config_dir, load_providers(), state_location=(settings.state_mount, settings.state_prefix, settings.effective_stash_prefix),
                            rules=TrustRules(settings.api_host_rule(), policy), on_loaded=on_loaded)
    result.problems[:0] = policy_problems
    return result


def loaded_names(result: LoadResult) -> Callable[[], frozenset[str] | None]:
    """For `Engine.configured`: the names of the credentials loaded, or None when some file did not load
    (failed, refused by the policy, or clashing: its name is then unknown or unmanaged, so no name can be
    said to have no file)."""
    names = None if result.failed_files or result.problems else frozenset(result.credentials)
    return lambda: names


def build_store(settings: Settings) -> VaultStore:
    from rotator.vault.store import VaultStore

    store = VaultStore(settings.vault_connection())
    store.login()
    return store


@dataclass
class App:
    settings: Settings
    store: VaultStore
    engine: Engine


def build_app(settings: Settings, *, clock: Clock | None = None, shutdown: threading.Event | None = None) -> App:
    from rotator.engine.reconcile import Engine
    from rotator.engine.results import EngineOptions

    store = build_store(settings)
    engine = Engine(
        store,
        options=EngineOptions(
            state_mount=settings.state_mount,
            state_prefix=settings.state_prefix,
            lease_seconds=settings.lease_seconds,
            clock_skew_allowance=settings.clock_skew_allowance_seconds,
            stash_prefix=settings.effective_stash_prefix,
        ),
        clock=clock or SystemClock(),
        shutdown=shutdown,
    )
    return App(settings, store, engine)
