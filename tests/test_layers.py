"""Import layers, checked on the source: the seams STYLE.md and the module
docstrings promise (import-linter's job, done with the ast module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def uses(found: set[str], banned: str) -> bool:
    return any(name == banned or name.startswith(banned + ".") for name in found)


RUNTIME = [p for p in modules("rotator") if "sandbox" not in p.parts and "testing" not in p.parts and p.name != "demo.py"]


@pytest.mark.parametrize("path", [*modules("rotator"), *modules("providers")], ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_vault_module_imports_hvac(path: Path) -> None:
    """hvac is wrapped in one typed module; nothing else talks to Vault."""
    if path.relative_to(ROOT).as_posix() == "rotator/vault.py":
        return
    assert not uses(imports_of(path), "hvac")


@pytest.mark.parametrize("path", modules("providers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_providers_know_nothing_of_vault_schedules_or_logging(path: Path) -> None:
    """Providers see only the plugin interface, errors, fields, clock and retry."""
    found = imports_of(path)
    for banned in ("rotator.vault", "rotator.engine", "rotator.daemon", "rotator.audit", "rotator.config",
                   "rotator.machine", "rotator.state", "rotator.cli", "rotator.app", "structlog", "rotator.sandbox"):
        assert not uses(found, banned), f"{path.name} imports {banned}"


@pytest.mark.parametrize("name", ["machine", "timetable", "state", "fields", "clock", "errors"])
def test_the_core_is_pure(name: str) -> None:
    """The state machine and its values do no I/O and know no edge."""
    found = imports_of(ROOT / "rotator" / f"{name}.py")
    for banned in ("rotator.vault", "rotator.engine", "rotator.daemon", "providers", "hvac", "boto3", "httpx", "requests", "structlog", "socket"):
        assert not uses(found, banned), f"rotator/{name}.py imports {banned}"


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_daemon_never_imports_the_sandboxes_or_a_provider_directly(path: Path) -> None:
    """Sandboxes stay out of `rotator run`; providers are found through entry points."""
    found = imports_of(path)
    assert not uses(found, "rotator.sandbox")
    assert not uses(found, "providers")
