"""Import layers: import-linter's contracts in pyproject.toml hold
(docs/ARCHITECTURE.md), they can break, and the provider entry points
resolve to the classes they name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from rotator.provider import ENTRY_POINT_GROUP, Provider

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# The fix helpers' older venvs may lack import-linter until they reinstall
# (`make install` does, from the test extra); `make test` always has it.
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
    assert result.stdout.count(" KEPT") == len(contracts) >= 5


@needs_import_linter
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path) -> None:
    """The same contracts, on a copy of the tree whose state machine imports hvac, fail and name it."""
    for package in ("rotator", "providers"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    machine = tmp_path / "rotator" / "machine.py"
    machine.write_text(machine.read_text() + "\nimport hvac  # a forbidden import\n")
    result = lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert "rotator.machine -> hvac" in result.stdout


def test_every_provider_entry_point_resolves() -> None:
    """Each entry point in pyproject.toml is installed and loads the Provider class of that kind."""
    declared = PYPROJECT["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(declared) <= set(installed), "reinstall: `make install`"
    for kind, target in declared.items():
        assert installed[kind].value == target
        cls = installed[kind].load()
        assert isinstance(cls, type) and issubclass(cls, Provider), target
        assert cls.kind == kind, f"{target} says its kind is {cls.kind}"
