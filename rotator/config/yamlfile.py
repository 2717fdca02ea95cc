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


def check_events(text: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Scan the file's YAML events (no node is built) and refuse what could
    blow up later: aliases, anchors, merge keys, odd tags, deep nesting."""
    # Per open collection: [is_mapping, items seen]; a mapping's even items are keys.
    open_collections: list[list[Any]] = []
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise YamlRefusedError(f"{_where(event)}: YAML aliases (*name) are not allowed; write the value out")
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent) and open_collections:
                open_collections.pop()
            continue
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
            if len(open_collections) > max_depth:
                raise YamlRefusedError(f"{_where(event)}: nested deeper than {max_depth} levels")


def _yaml_message(exc: yaml.YAMLError) -> str:
    """A parser's complaint with its position, without the snippet of the
    file that PyYAML appends (it may show a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"not valid YAML{where}: {problem}"
    return "not valid YAML"


def load_yaml(path: Path, *, root: Path | None = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> YamlDocument:
    """Read and parse one YAML file under the rules of this module."""
    text, warnings = read_text(path, root=root, max_bytes=max_bytes)
    try:
        check_events(text, max_depth=max_depth)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlRefusedError(_yaml_message(exc)) from None
    except RecursionError:  # cannot happen within MAX_DEPTH; never a traceback if it did
        raise YamlRefusedError(f"nested too deeply (at most {max_depth} levels)") from None
    return YamlDocument(data, warnings)
