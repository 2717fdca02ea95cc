"""The faster start-up reading of credential files refuses and builds exactly
what the reading before it did (issue 15, target (d)).

`rotator.config.yamlfile` now builds a file's data from its checked events
in one parse, and `rotator.config.loader`'s secret-lookalike scan names a
field only when it reports it. Each is compared here, on generated input
(Hypothesis), with a verbatim copy of the code it replaced: same data, or
the same refusal with the same message, or the same exception.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.config import yamlfile
from rotator.config.loader import _scan_for_secrets, load_directory
from rotator.config.yamlfile import YamlRefusedError, parse_text, safe_name
from rotator.core import validators
from rotator.core.errors import ConfigProblem
from rotator.core.validators import secret_lookalike
from rotator.engine.registry import load_providers

REPO = Path(__file__).resolve().parent.parent
# Deterministic in the suite (the same examples every run); run with
# HYPOTHESIS_PROFILE=search (below) to look harder.
settings.register_profile("suite", max_examples=400, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("search", max_examples=20_000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])


def _profile() -> settings:
    import os

    return settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


# -- the code replaced, verbatim -------------------------------------------------------


def _old_check_events(text: str, *, max_depth: int) -> None:
    open_collections: list[list[Any]] = []
    for event in yaml.parse(text, Loader=yamlfile._SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefusedError(f"{yamlfile._where(event)}: YAML aliases (*name) are not allowed; write the value out")
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent) and open_collections:
                open_collections.pop()
            continue
        if event.anchor is not None:
            raise YamlRefusedError(f"{yamlfile._where(event)}: YAML anchors (&name) are not allowed; write each value out")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in yamlfile._PLAIN_TAGS:
            raise YamlRefusedError(f"{yamlfile._where(event)}: YAML tags other than the plain str, int, float, bool, null, seq and map are not allowed")
        is_key = bool(open_collections) and open_collections[-1][0] and open_collections[-1][1] % 2 == 0
        if open_collections:
            open_collections[-1][1] += 1
        if isinstance(event, yaml.ScalarEvent):
            if is_key and event.value == "<<" and not event.style:
                raise YamlRefusedError(f"{yamlfile._where(event)}: YAML merge keys (<<) are not allowed; write the keys out")
        elif isinstance(event, yaml.CollectionStartEvent):
            open_collections.append([isinstance(event, yaml.MappingStartEvent), 0])
            if len(open_collections) > max_depth:
                raise YamlRefusedError(f"{yamlfile._where(event)}: nested deeper than {max_depth} levels")


def _old_parse(text: str, max_depth: int) -> Any:
    try:
        _old_check_events(text, max_depth=max_depth)
        return yaml.load(text, Loader=yamlfile._UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlRefusedError(yamlfile._yaml_message(exc)) from None
    except RecursionError:
        raise YamlRefusedError(f"nested too deeply (at most {max_depth} levels)") from None


_OLD_PATTERNS = validators._SECRET_PATTERNS


def _old_secret_lookalike(text: str) -> str | None:
    for pattern, what in _OLD_PATTERNS:
        if pattern.search(text):
            return what
    for match in validators._AWS_SECRET.finditer(text):
        candidate = match.group(0)
        if re.search(r"[A-Z]", candidate) and re.search(r"[a-z]", candidate) and re.search(r"[0-9]", candidate):
            return "an AWS secret access key"
    return None


_SECRET_ADVICE = "never put a secret in a credential file; store it in Vault and reference it as MOUNT/PATH#FIELD"


def _old_scan_for_secrets(value: Any, path: str, file: str) -> list[ConfigProblem]:
    if isinstance(value, dict):
        problems = []
        for k, v in value.items():
            key = safe_name(k) or "?"
            if isinstance(k, str) and (what := _old_secret_lookalike(k)):
                problems.append(ConfigProblem(file, path or "<file>", f"a key looks like {what}: {_SECRET_ADVICE}"))
            problems += _old_scan_for_secrets(v, f"{path}.{key}" if path else key, file)
        return problems
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _old_scan_for_secrets(v, f"{path}.{i}", file)]
    if isinstance(value, str) and (what := _old_secret_lookalike(value)):
        return [ConfigProblem(file, path, f"looks like {what}: {_SECRET_ADVICE}")]
    return []


# -- comparing outcomes --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """`value` with every type spelled out (1, True and 1.0 differ; NaN equals NaN)."""
    if isinstance(value, dict):
        return ("dict", [(_plain(k), _plain(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_plain(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def _outcome(parse: Any, text: str, max_depth: int) -> tuple[str, Any]:
    try:
        return "data", _plain(parse(text, max_depth))
    except YamlRefusedError as exc:
        return "refused", str(exc)
    except Exception as exc:  # what the old reading let out, the new must too
        return "raised", type(exc).__name__


def _expected(old: tuple[str, Any]) -> Any:
    """What the new reading must give where the old one gave `old`: the
    same, except that a value its type refuses, which crashed the old
    reading (ValueError, KeyError), is now a refusal with a position."""
    if old[0] != "raised":
        return old
    return _Refusal()


class _Refusal:
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, tuple) and other[0] == "refused" and other[1].startswith("not valid YAML at line ")
                and other[1].endswith(yamlfile.UNBUILDABLE))


def _new_parse(text: str, max_depth: int) -> Any:
    return parse_text(text, max_depth=max_depth)


# -- generated YAML ------------------------------------------------------------------------

SCALARS = [
    "a", "key", "user_name", "bench-00001", "<<", "'<<'", '"<<"', "=", "~", "null", "Null", "", "''", "yes", "No", "on", "OFF",
    "true", "False", "0x1F", "0o17", "017", "0b101", "1_000", "1:30", "-.inf", ".NaN", ".inf", "1e3", "3.5", "-2", "+7", "1", "01",
    "1.0", "2026-01-01", "2026-13-45", "2026-01-01 10:00:00", "2026-01-01T10:00:00Z", "!!int abc", "!!int 12", "!!str 12",
    "!!float x", "!!bool maybe", "!!null x", "!!binary aGk=", "!!timestamp 2026-01-01", "!!python/name:os.system", "!custom x",
    "! x", "! <<", "&a x", "*a", "&b", "!!merge <<", "!!map {}", "!!seq []", "!!str", "'quoted'", '"dq\\n"', '"\\x41"',
    "sk_live_abcdefgh1234", "a b", "-", "? x", "|\n  block", ">-\n  folded", "[1, 2]", "{a: 1}", "{}", "[]", "@at", "`tick",
    "'unterminated", "\"also", "a: b: c", "x #c", "#comment", "%TAG", "\t", "\u00e9t\u00e9", "\ufeffbom",
]
SIMPLE_SCALARS = ["a", "b", "'a'", '"b"', "1", "01", "1.0", "~", "", ".nan", "true", "2026-01-01", "x y", "-1", "'<<'"]
SIMPLE_KEYS = ["a", "b", "'a'", '"a"', "1", "01", "1.0", ".nan", "true", "~", "", "2026-01-01"]
KEYS = ["a", "b", "a", "params", "'a'", '"a"', "<<", "'<<'", "1", "01", "1.0", "true", "~", "null", "", ".inf", ".nan", "2026-01-01",
        "[x]", "{k: v}", "? q", "&k a", "*k", "!!str a", "!!int 1", "!x a", "- a", "a b", "sk_live_abcdefgh1234"]


@st.composite
def yaml_nodes(draw: st.DrawFn, depth: int = 0) -> Any:
    choice = draw(st.integers(0, 9 if depth < 6 else 2))
    # Mostly what parses (so that what follows a token is exercised too), sometimes anything.
    scalars = st.one_of(st.sampled_from(SIMPLE_SCALARS), st.sampled_from(SIMPLE_SCALARS), st.sampled_from(SCALARS))
    keys = st.one_of(st.sampled_from(SIMPLE_KEYS), st.sampled_from(SIMPLE_KEYS), st.sampled_from(KEYS))
    if choice <= 4:
        return ("scalar", draw(scalars))
    items = draw(st.integers(0, 4))
    if choice <= 7:
        return ("map", [(draw(keys), draw(yaml_nodes(depth + 1))) for _ in range(items)], draw(st.booleans()))
    return ("seq", [draw(yaml_nodes(depth + 1)) for _ in range(items)], draw(st.booleans()))


def _flow(node: Any) -> str:
    if node[0] == "scalar":
        return node[1]
    if node[0] == "map":
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in node[1]) + "}"
    return "[" + ", ".join(_flow(v) for v in node[1]) + "]"


def _block(node: Any, indent: int) -> str:
    pad = " " * indent
    if node[0] == "scalar" or node[2] or not node[1]:  # flow style
        return pad + _flow(node) + "\n"
    lines = []
    for item in node[1]:
        key, value = item if node[0] == "map" else ("-", item)
        lead = f"{pad}{key}:" if node[0] == "map" else f"{pad}-"
        if value[0] == "scalar" or value[2] or not value[1]:
            lines.append(f"{lead} {_flow(value)}\n")
        else:
            lines.append(f"{lead}\n" + _block(value, indent + 2))
    return "".join(lines)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    text = _block(draw(yaml_nodes()), 0)
    if draw(st.integers(0, 4)) == 0:
        text = draw(st.sampled_from(["---\n", "--- ", "%YAML 1.1\n---\n", "# c\n"])) + text
    if draw(st.integers(0, 4)) == 0:
        text += draw(st.sampled_from(["---\n", "...\n", "---\nb: 2\n", "--- x\n", "... \n---\n"]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a stray character anywhere: parser errors, and what follows them
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(list(":-[]{},&*!|>'\"%@`#?\t\n "))) + text[at:]
    return text


@given(text=yaml_texts(), max_depth=st.sampled_from([2, 3, 32]))
def test_one_pass_reads_what_two_passes_read(text: str, max_depth: int) -> None:
    """On generated YAML (aliases, anchors, merge keys, tags, implicit types,
    duplicate and complex keys, several documents, deep nesting, broken
    syntax), the one-pass reading gives the same data, or refuses with the
    same message, or raises the same exception, as the reading it replaced."""
    assert _outcome(_new_parse, text, max_depth) == _expected(_outcome(_old_parse, text, max_depth)), text


test_one_pass_reads_what_two_passes_read = _profile()(test_one_pass_reads_what_two_passes_read)


@pytest.mark.parametrize("text", [
    "a: 1\nb: {c: [x, 'y', 2026-01-01, ~, .inf, 0x1F, yes]}\n",
    "provider: aws.iam_access_key\nowner: o\nschedule:\n  every: 30d\ngrace: 1h\nvault: {path: a/b}\nparams: {user_name: u}\n",
    "", "# only a comment\n", "---\n", "- 1\n- [2, {x: y}]\n", "plain scalar\n", "? '<<'\n: 1\n",
])
def test_ordinary_files_take_the_one_pass(text: str) -> None:
    """Files without explicit tags, repeated keys or several documents are
    read in the one pass (no second parse), to the data PyYAML builds."""
    assert _plain(yamlfile._single_pass(text, yamlfile.MAX_DEPTH)) == _plain(_old_parse(text, yamlfile.MAX_DEPTH))


@pytest.mark.parametrize("text", [
    "a: !!str 12\n", "a: ! 12\n", "a: !!int 012\n", "a: !!int abc\n", "a: !!float 1\n", "a: !!bool yes\n", "a: !!null x\n",
    "!!map {a: 1}\n", "!!seq [1]\n", "a: !!map {b: 1}\n", "! {a: 1}\n", "a: !!str\n", "!!str a: 1\n", "! a: 1\n",
    ".nan: 1\n.nan: 2\n", ".NaN: 1\n.nan: 2\n", "1: a\n01: b\n1.0: c\n", "true: 1\n1: 2\n", "~: 1\nnull: 2\n''", "'': 1\n\"\": 2\n",
    "[a]: b\n", "{a: 1}: b\n", "? [a]\n: b\n", "a: 2026-13-45\n", "a: 2026-02-30 10:00:00\n", "a: =\n", "a: <<\n", "'<<': 1\n",
    "a: 1\n---\nb: 2\n", "--- 1\n--- 2\n", "a: 1\n...\n", "a: 0b2\n", "a: 1:70\n", "a: -0x_\n", "? ! <<\n: 1\n",
])
def test_unusual_files_read_as_before(text: str) -> None:
    """Each case the one pass leaves to the two-pass reading (explicit tags,
    repeated or complex keys, several documents, values their type refuses)
    comes out as it did."""
    assert _outcome(_new_parse, text, yamlfile.MAX_DEPTH) == _expected(_outcome(_old_parse, text, yamlfile.MAX_DEPTH))


def test_every_shipped_example_takes_the_one_pass() -> None:
    """The shipped examples (config/) are all read in the one pass."""
    files = sorted((REPO / "config").rglob("*.yaml"))
    assert files
    for file in files:
        text = file.read_text()
        assert _plain(yamlfile._single_pass(text, yamlfile.MAX_DEPTH)) == _plain(_old_parse(text, yamlfile.MAX_DEPTH)), file


@pytest.mark.parametrize(("text", "message"), [
    ("a: &x 1\nb: *x\n", "line 1, column 4: YAML anchors (&name) are not allowed"),
    ("a: 1\nb: *x\n", "line 2, column 4: YAML aliases (*name) are not allowed"),
    ("a:\n  <<: {b: 1}\n", "line 2, column 3: YAML merge keys (<<) are not allowed"),
    ("a: !!python/object:os.system {}\n", "line 1, column 4: YAML tags other than"),
    ("a: 1\na: 2\n", "key 'a' appears twice (line 2)"),
    ("a: 1\n'a': 2\n", "key 'a' appears twice (line 2)"),
    ("---\na: 1\n---\nb: 2\n", "line 3, column 1: but found another document"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
    ("a: [1\n", "not valid YAML at line 2, column 1"),
])
def test_each_refusal_is_still_the_same(text: str, message: str) -> None:
    """The refusals a reader sees are unchanged, message included."""
    with pytest.raises(YamlRefusedError) as new:
        parse_text(text)
    with pytest.raises(YamlRefusedError) as old:
        _old_parse(text, yamlfile.MAX_DEPTH)
    assert str(new.value) == str(old.value)
    assert message in str(new.value)


# -- the secret-lookalike scan -------------------------------------------------------------

PIECES = ["sk_live_", "rk_test_", "sk_prod_", "whsec_", "ghp_", "ghs_", "gho_", "github_pat_", "xoxb-", "xoxz-", "hvs.", "hvb.", "s.",
          "eyJ", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----", ".", "-", "_", " ", "/", "+", "=", "a", "Z", "9"]
secret_texts = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(alphabet=string.ascii_letters + string.digits, max_size=45)), max_size=6,
).map("".join)


@given(text=secret_texts)
def test_secret_lookalike_is_unchanged(text: str) -> None:
    """The length cut and the one combined search find what the patterns, tried one by one, found."""
    assert secret_lookalike(text) == _old_secret_lookalike(text), text


test_secret_lookalike_is_unchanged = _profile()(test_secret_lookalike_is_unchanged)


def _shortest_match(pattern: re.Pattern[str]) -> int:
    parser = getattr(re, "_parser", None)
    if parser is None:  # Python < 3.11 named it sre_parse
        import sre_parse as parser  # type: ignore[no-redef]
    return int(parser.parse(pattern.pattern).getwidth()[0])


def test_the_length_cuts_come_from_the_patterns() -> None:
    """No secret pattern can match a text shorter than SHORTEST_SECRET, nor
    the AWS one a text shorter than 40: the cuts skip nothing."""
    assert min(_shortest_match(p) for p, _ in validators._SECRET_PATTERNS) >= validators.SHORTEST_SECRET
    assert _shortest_match(validators._AWS_SECRET) >= 40
    assert min(_shortest_match(p) for p, _ in validators._SECRET_PATTERNS) == validators.SHORTEST_SECRET  # and no looser than needed


KEY_VALUES = st.one_of(st.sampled_from(["params", "user_name", "a", "Bad Key", "x" * 45, "sk_live_abcdefgh1234", "inf", "nan",
                                         "9lives", "true"]), secret_texts, st.integers(-3, 3), st.booleans(), st.none(),
                       st.sampled_from([math.inf, -math.inf, math.nan, 1.5]))
LEAVES = st.one_of(secret_texts, st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
documents = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEY_VALUES, inner, max_size=3)),
                         max_leaves=8)


@given(data=st.dictionaries(KEY_VALUES, documents, max_size=4))
def test_secret_scan_reports_what_it_reported(data: dict[Any, Any]) -> None:
    """The scan that spells a field's path only for a problem reports the
    same problems, same paths, in the same order, as the scan before it."""
    new = [(p.file, p.field, p.message) for p in _scan_for_secrets(data, (), "f.yaml")]
    old = [(p.file, p.field, p.message) for p in _old_scan_for_secrets(data, "", "f.yaml")]
    assert new == old


test_secret_scan_reports_what_it_reported = settings(_profile(), max_examples=_profile().max_examples // 3)(
    test_secret_scan_reports_what_it_reported)


def test_a_directory_reads_as_before(tmp_path: Path) -> None:
    """A whole directory of ordinary and broken files loads to the same
    credentials and the same problems through the real loader."""
    files = {
        "ok.yaml": "provider: aws.iam_access_key\nowner: o\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/ok}\nparams: {user_name: u}\n",
        "dup.yaml": "provider: aws.iam_access_key\nowner: o\nowner: p\n",
        "tag.yaml": "provider: !!binary aGk=\n",
        "secret.yaml": "provider: aws.iam_access_key\nowner: o\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/s}\n"
                       "params: {user_name: u, note: [x, {deep: sk_live_abcdefgh1234}]}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = load_directory(tmp_path, load_providers())
    assert sorted(result.credentials) == ["ok"]
    lines = sorted(str(p) for p in result.problems)
    assert f"{tmp_path / 'dup.yaml'}: <file>: not valid YAML at line 3, column 1: key 'owner' appears twice (line 3)" in lines
    assert any(line.startswith(f"{tmp_path / 'tag.yaml'}: <file>: line 1, column 11: YAML tags") for line in lines)
    assert f"{tmp_path / 'secret.yaml'}: params.note.1.deep: looks like a Stripe secret key: {_SECRET_ADVICE}" in lines


@pytest.mark.parametrize(("stem", "line"), [("tagged-int", "owner: !!int platform\n"), ("no-such-date", "description: 2026-13-45\n"),
                                          ("tagged-bool", "description: !!bool maybe\n")])
def test_a_value_its_type_refuses_is_one_problem_not_a_crash(tmp_path: Path, stem: str, line: str) -> None:
    """A value that a plain tag or an implicit type cannot build (`!!int` on
    text, a date that does not exist) is refused as its file's problem,
    naming neither the value nor anything else from the file, and the other
    files are still read (before: a ValueError or KeyError out of the loader
    stopped `validate` and the daemon's start)."""
    (tmp_path / f"{stem}.yaml").write_text(
        "provider: aws.iam_access_key\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/x}\nparams: {user_name: u}\n" + line)
    (tmp_path / "fine.yaml").write_text(
        "provider: aws.iam_access_key\nowner: o\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/fine}\nparams: {user_name: u}\n")
    result = load_directory(tmp_path, load_providers())
    assert sorted(result.credentials) == ["fine"]
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / stem}.yaml: <file>: not valid YAML at line 6, column {line.index(':') + 3}: "
        "a value cannot be read as its type (an explicit tag on text of another type, or a date that does not exist)"]
