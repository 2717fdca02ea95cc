"""The newcomer docs stay true to the code: the configuration reference
lists exactly the fields, params and settings the models define, with their
defaults; the shipped schema file is what `rotator schema` prints; examples
validate; commands, variables, links and module paths named in the docs exist."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rotator.cli import cli
from rotator.config.spec import CredentialSpec, LoadedCredential, VaultTarget
from rotator.core.schedule import Schedule
from rotator.config.loader import json_schema, load_file
from rotator.core.validators import format_duration, parse_duration
from rotator.engine.registry import load_providers
from rotator.config.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "CONFIGURATION.md"
NEWCOMER_DOCS = [DOCS / "GETTING_STARTED.md", CONFIGURATION, DOCS / "TROUBLESHOOTING.md"]
MODELINE = "# yaml-language-server: $schema=../credential.schema.json"
# ROTATOR_ variables that are not Settings fields (test hooks, rotator/core/crashpoints.py).
OTHER_VARIABLES = {"ROTATOR_TEST_CRASH_AT", "ROTATOR_TEST_PAUSE_AT", "ROTATOR_TEST_MODE"}


# -- reading the reference's tables -------------------------------------------------------


def _sections(text: str) -> dict[str, list[str]]:
    """Heading text -> the lines under it, up to the next heading."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and re.match(r"^#{1,6} ", line):
            current = sections.setdefault(line.lstrip("#").strip(), [])
            continue
        if current is not None:
            current.append(line)
    return sections


def _table(lines: list[str]) -> dict[str, str]:
    """The first table's rows: first cell's `name` -> second cell."""
    rows: dict[str, str] = {}
    started = False
    for line in lines:
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0])
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is documented twice"
            rows[match.group(1)] = cells[1]
    assert rows, "expected a table"
    return rows


def _expected_default(info: FieldInfo) -> str | None:
    """How the reference writes a field's default; None: free text allowed."""
    if info.is_required():
        return "**required**"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None:
        return None
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value == "":
        return "empty"
    return f"`{json.dumps(value) if isinstance(value, dict | list) else value}`"


def _check_table(rows: dict[str, str], fields: dict[str, FieldInfo], where: str, *, names: dict[str, str] | None = None) -> None:
    names = names or {n: n for n in fields}
    documented, defined = set(rows), set(names.values())
    assert documented - defined == set(), f"{where}: documented but unknown to the code"
    assert defined - documented == set(), f"{where}: defined in the code but not documented"
    for field_name, info in fields.items():
        cell, expected = rows[names[field_name]], _expected_default(info)
        if expected is None:
            assert cell in {"none", "unset"} or "`" not in cell, f"{where}: {names[field_name]} has no default, doc says {cell}"
        elif isinstance(info.default, timedelta):  # 7d and 1w are one default
            assert parse_duration(cell.strip("`")) == info.default, f"{where}: {names[field_name]} default is {expected}, doc says {cell}"
        else:
            assert cell == expected, f"{where}: {names[field_name]} default is {expected}, doc says {cell}"


def _model_fields(model: type[BaseModel], *, skip: frozenset[str] = frozenset()) -> dict[str, FieldInfo]:
    return {n: f for n, f in model.model_fields.items() if n not in skip}


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    return _sections(CONFIGURATION.read_text())


def test_credential_file_fields_are_documented(reference: dict[str, list[str]]) -> None:
    """Every field of a credential file, `schedule` and `vault` is in the reference, with its default."""
    rows = _table(reference["Top-level fields"])
    assert rows.pop("name") == "the file's stem"  # required in the model, filled in by the loader
    _check_table(rows, _model_fields(CredentialSpec, skip=frozenset({"name", "source"})), "top-level fields")
    _check_table(_table(reference["`schedule`"]), _model_fields(Schedule), "schedule")
    _check_table(_table(reference["`vault`"]), _model_fields(VaultTarget), "vault")


@pytest.mark.parametrize("kind", sorted(load_providers()))
def test_provider_params_are_documented(reference: dict[str, list[str]], kind: str) -> None:
    """Each provider's params model matches its table in the reference."""
    assert f"`{kind}`" in reference, f"no section for {kind}"
    _check_table(_table(reference[f"`{kind}`"]), _model_fields(load_providers()[kind].params_model), kind)


def test_no_unknown_provider_is_documented() -> None:
    """The provider section documents the installed providers and no others."""
    text = CONFIGURATION.read_text()
    section = text[text.index("\n## Provider params\n"):text.index("\n## Daemon settings\n")]
    assert set(re.findall(r"^### `([a-z0-9_.]+)`$", section, re.M)) == set(load_providers())


def _env_name(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    return f"ROTATOR_{name.upper()}"


def test_daemon_settings_are_documented(reference: dict[str, list[str]]) -> None:
    """Every Settings field is in the reference under its environment variable, with its default."""
    fields = _model_fields(Settings)
    _check_table(_table(reference["Daemon settings"]), fields, "daemon settings",
                 names={n: _env_name(n, f) for n, f in fields.items()})


def test_docs_name_only_known_variables() -> None:
    """Every ROTATOR_ variable the newcomer docs mention is a real setting."""
    known = {_env_name(n, f) for n, f in Settings.model_fields.items()} | OTHER_VARIABLES
    for doc in NEWCOMER_DOCS:
        unknown = set(re.findall(r"\bROTATOR_[A-Z0-9_]+\b", doc.read_text())) - known
        assert unknown == set(), f"{doc.name} names unknown variables"


# -- schema, examples, commands, links ---------------------------------------------------------


def test_shipped_schema_matches_rotator_schema() -> None:
    """config/credential.schema.json is exactly what `rotator schema` prints
    (regenerate: rotator schema > config/credential.schema.json)."""
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    shipped = json.loads((REPO / "config" / "credential.schema.json").read_text())
    assert shipped == json.loads(result.output) == json.loads(json.dumps(json_schema(load_providers())))


def test_examples_cover_every_provider_with_the_modeline() -> None:
    """config/credentials.d has a commented example per provider, each with the schema modeline."""
    examples = sorted((REPO / "config" / "credentials.d").glob("*.yaml"))
    kinds = set()
    for path in examples:
        text = path.read_text()
        assert text.startswith(MODELINE + "\n"), f"{path.name} lacks the modeline"
        assert text.count("\n#") >= 2, f"{path.name} should explain itself in comments"
        kinds.add(re.search(r"^provider: (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert kinds == set(load_providers())


def _code_blocks(text: str, lang: str | None = None) -> list[str]:
    pattern = r"^```" + (re.escape(lang) if lang else r"[a-z]*") + r"\n(.*?)^```"
    return re.findall(pattern, text, re.M | re.S)


@pytest.mark.parametrize("doc", NEWCOMER_DOCS, ids=lambda p: p.name)
def test_yaml_examples_in_docs_validate(doc: Path, tmp_path: Path) -> None:
    """Each credential file shown in the docs loads without a problem."""
    blocks = [b for b in _code_blocks(doc.read_text(), "yaml") if re.search(r"^provider: ", b, re.M)]
    for number, block in enumerate(blocks):
        path = tmp_path / f"example-{number}.yaml"
        path.write_text(block)
        loaded = load_file(path, load_providers())
        assert isinstance(loaded, LoadedCredential), f"{doc.name} example {number}: {[str(p) for p in loaded]}"  # type: ignore[union-attr]


def _commands_named(text: str) -> set[tuple[str, ...]]:
    snippets = _code_blocks(text) + re.findall(r"`([^`\n]+)`", text)
    found = set()
    for snippet in snippets:
        # `rotator` in command position: a line's start, after a prompt, a pipe or `;`, or a path.
        command = r"(?:^\s*(?:\$\s+)?|[;&|(]\s*|\S*/)rotator ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?"
        for match in re.finditer(command, snippet, re.M):
            found.add(tuple(w for w in match.groups() if w))
    return found


@pytest.mark.parametrize("doc", [*NEWCOMER_DOCS, REPO / "README.md"], ids=lambda p: p.name)
def test_docs_name_only_real_commands(doc: Path) -> None:
    """Every `rotator COMMAND` shown in the docs exists (and `rotator demo` is documented)."""
    for words in _commands_named(doc.read_text()):
        command = cli.commands.get(words[0])
        assert command is not None, f"{doc.name}: rotator {words[0]} is not a command"
        subcommands = getattr(command, "commands", None)
        if subcommands is not None and len(words) > 1:
            assert words[1] in subcommands, f"{doc.name}: rotator {' '.join(words)} is not a command"
    if doc.name == "GETTING_STARTED.md":
        assert ("demo",) in _commands_named(doc.read_text())


@pytest.mark.parametrize("doc", NEWCOMER_DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    """Links between the docs and to repository files point at files that exist."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_points_newcomers_at_the_docs() -> None:
    """The README links the three newcomer pages."""
    readme = (REPO / "README.md").read_text()
    for doc in NEWCOMER_DOCS:
        assert f"docs/{doc.name}" in readme


# -- module paths named in the docs ---------------------------------------------------------

# Names of the form rotator.X that are not modules: the entry-point group, and files.
NOT_MODULES = {"rotator.providers"}
FILE_SUFFIXES = (".yaml", ".yml", ".hcl", ".service", ".env", ".json", ".md", ".toml", ".example", ".txt", ".jsonl", ".py", ".sh")
ALL_DOCS = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_name_only_real_modules(doc: Path) -> None:
    """Every source path (`rotator/....py`, `providers/....py`) and `rotator.x.y` module a doc names exists."""
    text = doc.read_text()
    missing = [p for p in re.findall(r"(?<![\w/.-])((?:rotator|providers)/[\w/]+\.py)\b", text) if not (REPO / p).is_file()]
    for span in re.findall(r"`([^`\n]+)`", text):
        for dotted in re.findall(r"(?<![\w./-])(rotator(?:\.\w+)+)", span):
            if dotted in NOT_MODULES or dotted.endswith(FILE_SUFFIXES) or any(dotted.startswith(n + ".") for n in NOT_MODULES):
                continue
            parts = dotted.split(".")
            if not _is_module(".".join(parts[:2])):
                missing.append(dotted)
                continue
            depth = 2
            while depth < len(parts) and _is_module(".".join(parts[: depth + 1])):
                depth += 1
            # past the deepest module, at most an attribute and its member (Engine.reconcile)
            if len(parts) - depth > 2:
                missing.append(dotted)
    assert missing == [], f"{doc.name} names modules that do not exist"
