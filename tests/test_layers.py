"""The tree shows the architecture (docs/ARCHITECTURE.md): import-linter's
contracts in pyproject.toml hold and can break, the provider entry points
resolve, every package is installed, and no module is past about 400 lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from rotator.core.provider import Provider
from rotator.engine.registry import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 420  # "about 400": a module a reader takes in at one sitting

# `make test` runs lint-imports itself before the suite; a venv made before
# import-linter joined the test extra skips here until `make install`.
needs_import_linter = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed: `make install`")


def lint_imports(cwd: Path, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@needs_import_linter
def test_the_import_contracts_hold() -> None:
    """Every contract in pyproject.toml is kept by the tree as it is."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    assert result.stdout.count(" KEPT") == len(contracts) >= 6


@needs_import_linter
def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The same contracts, on a copy of the tree whose state machine imports the engine and hvac, fail and name both."""
    for package in ("rotator", "providers"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    machine = tmp_path / "rotator" / "core" / "machine.py"
    machine.write_text(machine.read_text() + "\nimport hvac  # forbidden\nimport rotator.engine.reconcile  # forbidden\n")
    result = lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Each layer imports only the layers below it BROKEN" in " ".join(result.stdout.split())
    assert "rotator.core.machine -> rotator.engine.reconcile" in result.stdout
    assert "rotator.core.machine -> hvac" in result.stdout


def test_every_provider_entry_point_resolves() -> None:
    """Each entry point in pyproject.toml is installed and loads the Provider class of that kind."""
    declared = PYPROJECT["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(declared) <= set(installed), "reinstall: `make install`"
    for kind, target in declared.items():
        assert target.startswith("rotator_providers."), f"{kind}: providers are imported as rotator_providers"
        assert installed[kind].value == target, "reinstall: `make install`"
        cls = installed[kind].load()
        assert isinstance(cls, type) and issubclass(cls, Provider), target
        assert cls.kind == kind, f"{target} says its kind is {cls.kind}"


def test_every_package_is_installed() -> None:
    """pyproject.toml lists every package of the tree (a missing one would be absent from the wheel)."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rotator").rglob("__init__.py")}
    assert found | {"rotator_providers"} == listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"rotator_providers": "providers"}


def test_no_module_is_past_about_400_lines() -> None:
    """Large modules are split along their seams (docs/ARCHITECTURE.md)."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for package in ("rotator", "providers") for p in (ROOT / package).rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
