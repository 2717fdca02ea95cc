"""Reading a YAML file that whoever wrote it cannot turn against the reader.

Credential files come from many hands (by pull request); the policy file is
the operator's. Both are read here, and:

- a file larger than `MAX_BYTES` is refused before it is parsed;
- anchors, aliases and merge keys are refused while the file is only
  scanned (events, linear in its size), so nothing is ever expanded: an
  alias bomb costs what its bytes cost;
- collections nested deeper than `MAX_DEPTH` are refused during that scan,
  before any recursive step (composition, construction, validation) runs;
- only the plain YAML tags (str, int, float, bool, null, seq, map) are
  accepted; no other constructor ever runs;
- a mapping key given twice is refused;
- a symbolic link is followed only when it stays inside the directory the
  file is read from (a Kubernetes ConfigMap's `..data` links do);
- a file that its group or others may write is read, with a warning.

An ordinary file is parsed once: its data is built from the same events the
rules check, as they come (`_single_pass`). A file with anything that pass
leaves aside (an explicit tag, a key given twice, a collection as a key,
several documents) is scanned and then loaded by PyYAML, as before: the two
refuse and build the same (tests/test_startup_parsing.py).

Every message names what is wrong and where (line, column), never a value
from the file: the file may hold a secret by mistake.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 64 * 1024
MAX_DEPTH = 32

# libyaml's parser when PyYAML was built with it (most wheels are): ten
# times faster on a directory of thousands of files.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map"))
# What a key must look like to be printed: a field name, not a pasted value.
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,39}$")


class YamlRefusedError(Exception):
    """The file cannot be read as a credential (or policy) file. The message
    never holds a value from the file."""


@dataclass
class YamlDocument:
    data: Any
    warnings: list[str] = field(default_factory=list)


def safe_name(text: object) -> str | None:
    """`text` if it is short and shaped like a field name (safe to print), else None."""
    from rotator.core.validators import secret_lookalike

    if isinstance(text, str) and _NAME.match(text) and sum(c.isdigit() for c in text) <= 3 and secret_lookalike(text) is None:
        return text
    return None


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """A YAML loader that rejects a mapping key given twice."""


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                name = safe_name(key_node.value)
                what = f"key {name!r}" if name else "a key"
                raise yaml.constructor.ConstructorError(
                    None, None, f"{what} appears twice (line {key_node.start_mark.line + 1})", key_node.start_mark
                )
            seen.add(key_node.value)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text(path: Path, *, root: Path | None = None, max_bytes: int = MAX_BYTES) -> tuple[str, list[str]]:
    """The file's text and warnings about it; `root`: the directory a symbolic link must stay inside."""
    warnings: list[str] = []
    target = path
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise YamlRefusedError("is a symbolic link to nothing (or a loop of links)") from None
        base = (root if root is not None else path.parent).resolve()
        if not target.is_relative_to(base):
            raise YamlRefusedError("is a symbolic link to a file outside the config directory; copy the file in instead")
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise YamlRefusedError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlRefusedError("is not a regular file")
        if info.st_size > max_bytes:
            raise YamlRefusedError(f"is {info.st_size} bytes; a file may be at most {max_bytes} bytes")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            warnings.append("group or others may write this file, so they decide what the rotator does with it (chmod go-w)")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise YamlRefusedError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        raise YamlRefusedError(f"is more than {max_bytes} bytes; a file may be at most {max_bytes} bytes")
    try:
        return raw.decode("utf-8"), warnings
    except UnicodeDecodeError as exc:
        raise YamlRefusedError(f"is not UTF-8 text (byte {exc.start + 1})") from None


def _where(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


class _Rules:
    """The event rules, one event at a time: aliases, anchors, merge keys,
    odd tags and deep nesting are refused. Both `check_events` and the
    single pass of `load_yaml` run them, so both refuse the same inputs with
    the same message at the same event."""

    __slots__ = ("max_depth", "open_collections")

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        # Per open collection: [is_mapping, items seen]; a mapping's even items are keys.
        self.open_collections: list[list[Any]] = []

    def see(self, event: Any) -> bool:
        """Refuse `event` if it breaks a rule; True when it is a mapping's key."""
        open_collections = self.open_collections
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefusedError(f"{_where(event)}: YAML aliases (*name) are not allowed; write the value out")
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent) and open_collections:
                open_collections.pop()
            return False
        if event.anchor is not None:
            raise YamlRefusedError(f"{_where(event)}: YAML anchors (&name) are not allowed; write each value out")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _PLAIN_TAGS:
            raise YamlRefusedError(f"{_where(event)}: YAML tags other than the plain str, int, float, bool, null, seq and map are not allowed")
        is_key = bool(open_collections) and open_collections[-1][0] and open_collections[-1][1] % 2 == 0
        if open_collections:
            open_collections[-1][1] += 1
        if isinstance(event, yaml.ScalarEvent):
            if is_key and event.value == "<<" and not event.style:  # plain: None (Python parser) or "" (libyaml)
                raise YamlRefusedError(f"{_where(event)}: YAML merge keys (<<) are not allowed; write the keys out")
        elif isinstance(event, yaml.CollectionStartEvent):
            open_collections.append([isinstance(event, yaml.MappingStartEvent), 0])
            if len(open_collections) > self.max_depth:
                raise YamlRefusedError(f"{_where(event)}: nested deeper than {self.max_depth} levels")
        return is_key


def check_events(text: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Scan the file's YAML events (no node is built) and refuse what could
    blow up later: aliases, anchors, merge keys, odd tags, deep nesting."""
    rules = _Rules(max_depth)
    for event in yaml.parse(text, Loader=_SafeLoader):
        rules.see(event)


class _Unusual(Exception):
    """Something the single pass leaves to the two-pass reading: an explicit
    tag, a key given twice, a collection as a key, several documents, a
    scalar its constructor refuses."""


_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()  # the resolver class every PyYAML loader uses
# The first characters of the implicit types (int, float, bool, null,
# timestamp, merge, value; the empty string is null). A plain scalar that
# starts otherwise, or a quoted one, is a string, unless a resolver for any
# first character (None) or a path resolver was added: then all go to
# `resolve`.
_IMPLICIT_FIRST = frozenset(_RESOLVER.yaml_implicit_resolvers)
_SHORTCUT = None not in _IMPLICIT_FIRST and not _RESOLVER.yaml_path_resolvers
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
# The implicit scalar types of YAML 1.1 that SafeLoader builds (a plain
# `<<` or `=` resolves to merge or value: left to the two-pass reading).
_SCALARS: dict[str, Any] = {
    f"tag:yaml.org,2002:{kind}": getattr(_CONSTRUCTOR, f"construct_yaml_{kind}")
    for kind in ("null", "bool", "int", "float", "timestamp")
}


def _single_pass(text: str, max_depth: int) -> Any:
    """The file's data, built from its events in one parse, under the event
    rules (`_Rules`). Raises `YamlRefusedError` or `yaml.YAMLError` exactly
    where `check_events` would, and `_Unusual` wherever what the two-pass
    reading (`check_events`, then `yaml.load`) builds or refuses is not
    plainly the same: the caller then does that instead."""
    rules = _Rules(max_depth)
    see = rules.see
    loader = _SafeLoader(text)
    # Per open collection: [the list, None], or [the dict, the raw text of
    # the keys seen, the pending key (`no_key` when none)].
    stack: list[Any] = []
    no_key: list[Any] = []
    root: Any = None
    documents = 0
    try:
        get_event = loader.get_event
        while True:
            event = get_event()
            is_key = see(event)
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.tag is not None:
                    raise _Unusual
                text_value = event.value
                # What `Resolver.resolve` does, without the call for a value
                # no implicit type starts with (most keys and values).
                if _SHORTCUT and (not event.implicit[0] or (text_value and text_value[0] not in _IMPLICIT_FIRST)):
                    tag = _STR_TAG
                else:
                    tag = _RESOLVER.resolve(yaml.ScalarNode, text_value, event.implicit)
                if tag == _STR_TAG:
                    value = event.value
                else:
                    construct = _SCALARS.get(tag)
                    if construct is None:
                        raise _Unusual
                    try:
                        value = construct(yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style))
                    except Exception:  # the two-pass reading says what, after its scan
                        raise _Unusual from None
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if event.tag is not None or is_key:
                    raise _Unusual
                value = {} if kind is yaml.MappingStartEvent else []
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                stack.pop()
                continue
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Unusual
                continue
            elif kind is yaml.StreamEndEvent:
                return root
            else:  # stream start, document end
                continue
            if not stack:
                root = value
            else:
                top = stack[-1]
                if top[1] is None:
                    top[0].append(value)
                elif is_key:
                    if event.value in top[1]:
                        raise _Unusual  # a key given twice: `_construct_mapping` names it
                    top[1].add(event.value)
                    top[2] = value
                else:
                    top[0][top[2]] = value
                    top[2] = no_key
            if kind is not yaml.ScalarEvent:
                stack.append([value, None] if kind is yaml.SequenceStartEvent else [value, set(), no_key])
    finally:
        loader.dispose()


def _yaml_message(exc: yaml.YAMLError) -> str:
    """A parser's complaint with its position, without the snippet of the
    file that PyYAML appends (it may show a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"not valid YAML{where}: {problem}"
    return "not valid YAML"


UNBUILDABLE = "a value cannot be read as its type (an explicit tag on text of another type, or a date that does not exist)"


def _unbuildable_at(text: str) -> str:
    """Where the first scalar (in the file's order) is that its type's
    constructor refuses, as `_where` says it; the text has passed the rules."""
    loader = _SafeLoader(text)
    try:
        while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
            if not isinstance(event, yaml.ScalarEvent):
                continue
            tag = event.tag if event.tag not in (None, "!") else _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
            construct = _UniqueKeyLoader.yaml_constructors.get(tag)
            if construct is None:
                continue
            try:
                construct(_CONSTRUCTOR, yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style))
            except yaml.YAMLError:
                continue
            except Exception:
                return _where(event)
    finally:
        loader.dispose()
    return "somewhere"


def parse_text(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """A file's text, parsed under the rules of this module: one parse that
    builds the data from the checked events, or, for what it leaves aside
    (`_Unusual`), the event scan and then PyYAML's loader."""
    try:
        try:
            return _single_pass(text, max_depth)
        except _Unusual:
            check_events(text, max_depth=max_depth)
            return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlRefusedError(_yaml_message(exc)) from None
    except RecursionError:  # cannot happen within MAX_DEPTH; never a traceback if it did
        raise YamlRefusedError(f"nested too deeply (at most {max_depth} levels)") from None
    except (ValueError, KeyError, TypeError, OverflowError):  # PyYAML's constructors let these out (`!!int text`, 2026-13-45)
        raise YamlRefusedError(f"not valid YAML at {_unbuildable_at(text)}: {UNBUILDABLE}") from None


def load_yaml(path: Path, *, root: Path | None = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> YamlDocument:
    """Read and parse one YAML file under the rules of this module."""
    text, warnings = read_text(path, root=root, max_bytes=max_bytes)
    return YamlDocument(parse_text(text, max_depth=max_depth), warnings)
