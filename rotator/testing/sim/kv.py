"""An in-memory model of OpenBao's KV v2 engine, behind the same methods as
`rotator.vault.store.VaultStore` that the engine, the live path and the change
feed use (`read`, `read_data`, `read_many`, `read_version`, `write`,
`read_metadata`, `merge_custom_metadata`, `destroy`, `list`, `walk`,
`read_ref`; tests/test_sim_kv.py fails when VaultStore gains a method the
model lacks).

What it keeps of KV v2 (tests/test_sim_kv.py runs the same operations
against the real OpenBao and compares, so the model cannot drift):
- versions numbered from 1; `max_versions` (10 by default) old versions
  kept, older ones pruned and unreadable;
- check-and-set: `cas=0` writes only a path that does not exist; otherwise
  `cas` must name the current version, whether or not it is deleted;
- custom metadata: a merge patch of string values, the key and value size
  limits and the 64-key limit; settings untouched;
- soft delete of a version (its data unreadable, its number kept),
  undelete, destroy, and deleting the whole path (metadata and all).

Every call passes through `boundary`, a hook the simulation uses to inject
faults at each call (lost responses, failures, crashes, pauses). By default
it just applies the effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rotator.core.errors import CasMismatchError, NotFoundError
from rotator.vault.store import (
    FolderAndRefReads,
    check_metadata_merge,
    LiveMetadata,
    Versioned,
)

T = TypeVar("T")
DEFAULT_MAX_VERSIONS = 10

# boundary(op, mount, path, effect, mutating) -> effect's result
Boundary = Callable[[str, str, str, Callable[[], Any], bool], Any]


def _apply(op: str, mount: str, path: str, effect: Callable[[], T], mutating: bool) -> T:
    return effect()


@dataclass
class _Version:
    text: str  # the data as JSON, as Vault keeps it: every read returns a fresh copy
    deleted: bool = False
    destroyed: bool = False

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.text)


@dataclass
class _Entry:
    versions: dict[int, _Version] = field(default_factory=dict)
    current_version: int = 0
    custom_metadata: dict[str, str] = field(default_factory=dict)
    max_versions: int = 0  # 0: the mount's default
    cas_required: bool = False


class KvModel(FolderAndRefReads):
    """KV v2 mounts in memory. `boundary` wraps every call (see module doc)."""

    def __init__(self, *, boundary: Boundary | None = None) -> None:
        self._mounts: dict[str, dict[str, _Entry]] = {}
        self._generation = [0]  # bumped by every change; shared with views
        self.boundary: Boundary = boundary or _apply
        self.requests_made = 0
        self._kept_keys: dict[tuple[str, str], frozenset[str]] = {}  # per process, as each VaultStore's own

    def view(self, boundary: Boundary) -> KvModel:
        """The same mounts, seen through another boundary (one per simulated process)."""
        other = object.__new__(KvModel)
        other._mounts, other._generation, other.boundary, other.requests_made = self._mounts, self._generation, boundary, 0
        other._kept_keys = {}
        return other

    @property
    def generation(self) -> int:
        """A number that changes whenever anything stored changes (for caches)."""
        return self._generation[0]

    def _changed(self) -> None:
        self._generation[0] += 1

    # -- plumbing ------------------------------------------------------------

    def _entries(self, mount: str) -> dict[str, _Entry]:
        return self._mounts.setdefault(mount, {})

    def _entry(self, mount: str, path: str) -> _Entry | None:
        return self._entries(mount).get(path.strip("/"))

    def _call(self, op: str, mount: str, path: str, effect: Callable[[], T], *, mutating: bool = False) -> T:
        self.requests_made += 1
        return self.boundary(op, mount, path, effect, mutating)

    # -- the VaultStore surface ------------------------------------------------

    def read(self, mount: str, path: str) -> Versioned:
        return self._call("read", mount, path, lambda: self._read(mount, path))

    def read_data(self, mount: str, path: str) -> dict[str, Any] | None:
        return self._call("read", mount, path, lambda: self._read(mount, path).data)

    def read_many(self, mount: str, paths: list[str], *, workers: int = 8) -> dict[str, Versioned]:
        return {p: self.read(mount, p) for p in paths}

    def read_version(self, mount: str, path: str, version: int) -> dict[str, Any] | None:
        return self._call("read_version", mount, path, lambda: self._read_version(mount, path, version))

    def undelete_version(self, mount: str, path: str, version: int) -> None:
        self._call("undelete", mount, path, lambda: self.undelete(mount, path, [version]), mutating=True)

    def write(self, mount: str, path: str, data: Mapping[str, Any], *, cas: int, keep_metadata: bool = False) -> int:
        text = json.dumps(dict(data))

        def effect() -> tuple[int, frozenset[str]]:
            version = self._write(mount, path, text, cas)
            meta = self._metadata(mount, path)
            return version, frozenset(meta.custom_metadata) if meta else frozenset()

        version, keys = self._call("write", mount, path, effect, mutating=True)
        if keep_metadata:  # as VaultStore: the answer's custom metadata keys, for the merge that follows
            self._kept_keys[(mount, path)] = keys
        return version

    def read_metadata(self, mount: str, path: str) -> LiveMetadata | None:
        return self._call("read_metadata", mount, path, lambda: self._metadata(mount, path))

    def merge_custom_metadata(self, mount: str, path: str, updates: Mapping[str, str]) -> None:
        check_metadata_merge(mount, path, updates, lambda: self._kept_keys.pop((mount, path), None), self.read_metadata)
        patch = {k: str(v) for k, v in updates.items()}
        self._call("merge_metadata", mount, path, lambda: self._merge(mount, path, patch), mutating=True)

    def list(self, mount: str, path: str) -> list[str]:
        return self._call("list", mount, path, lambda: self._list(mount, path))

    # VaultStore's session plumbing, as no-ops.
    def login(self) -> None:
        return None

    def maintain_token(self) -> None:
        return None

    def is_ready(self) -> bool:
        return True

    def token_expires_in(self) -> float | None:
        return None

    # -- operator actions (no VaultStore method: `bao kv delete` and friends) --

    def delete_latest(self, mount: str, path: str) -> None:
        """`bao kv delete`: soft-delete the current version."""
        self._changed()
        entry = self._entry(mount, path)
        if entry is not None and entry.current_version in entry.versions:
            entry.versions[entry.current_version].deleted = True

    def undelete(self, mount: str, path: str, versions: list[int]) -> None:
        self._changed()
        entry = self._entry(mount, path)
        for number in versions:
            if entry is not None and number in entry.versions and not entry.versions[number].destroyed:
                entry.versions[number].deleted = False

    def destroy(self, mount: str, path: str) -> None:
        """Every version of `mount/path` and its metadata, gone for good (absent is done)."""
        self._call("destroy", mount, path, lambda: self.delete_metadata(mount, path), mutating=True)

    def destroy_versions(self, mount: str, path: str, versions: list[int]) -> None:
        """`bao kv destroy -versions=...`."""
        self._changed()
        entry = self._entry(mount, path)
        for number in versions:
            if entry is not None and number in entry.versions:
                entry.versions[number].destroyed = True
                entry.versions[number].text = "{}"

    def delete_metadata(self, mount: str, path: str) -> None:
        """`bao kv metadata delete`: every version and the metadata, gone."""
        self._changed()
        self._entries(mount).pop(path.strip("/"), None)

    def configure(self, mount: str, path: str, *, max_versions: int | None = None, cas_required: bool | None = None) -> None:
        self._changed()
        entry = self._entries(mount).setdefault(path.strip("/"), _Entry())
        if max_versions is not None:
            entry.max_versions = max_versions
            self._prune(entry)
        if cas_required is not None:
            entry.cas_required = cas_required

    def settings(self, mount: str, path: str) -> dict[str, Any] | None:
        entry = self._entry(mount, path)
        return None if entry is None else {"max_versions": entry.max_versions, "cas_required": entry.cas_required}

    def deleted_under(self, mount: str, prefix: str) -> list[str]:
        """(Inspection) Names right under `prefix` whose latest version is deleted or destroyed."""
        return [name for name in self._list(mount, prefix) if not name.endswith("/")
                and self.peek(mount, f"{prefix}/{name}") is None and self.current_version(mount, f"{prefix}/{name}") > 0]

    def versions_of(self, mount: str, path: str) -> list[int]:
        """Version numbers still kept (readable or deleted), oldest first."""
        entry = self._entry(mount, path)
        return sorted(entry.versions) if entry else []

    def peek(self, mount: str, path: str, version: int | None = None) -> dict[str, Any] | None:
        """Read without passing the boundary (for invariants and tests)."""
        entry = self._entry(mount, path)
        if entry is None:
            return None
        number = version or entry.current_version
        held = entry.versions.get(number)
        if held is None or held.deleted or held.destroyed:
            return None
        return held.data

    def peek_text(self, mount: str, path: str) -> str | None:
        entry = self._entry(mount, path)
        held = entry.versions.get(entry.current_version) if entry else None
        return None if held is None or held.deleted or held.destroyed else held.text

    def current_version(self, mount: str, path: str) -> int:
        entry = self._entry(mount, path)
        return entry.current_version if entry else 0

    def peek_metadata(self, mount: str, path: str) -> dict[str, str]:
        entry = self._entry(mount, path)
        return dict(entry.custom_metadata) if entry else {}

    # -- effects -----------------------------------------------------------------

    def _read(self, mount: str, path: str) -> Versioned:
        entry = self._entry(mount, path)
        if entry is None or entry.current_version == 0:
            return Versioned(None, 0)
        held = entry.versions.get(entry.current_version)
        if held is None or held.deleted or held.destroyed:
            return Versioned(None, entry.current_version)
        return Versioned(held.data, entry.current_version)

    def _read_version(self, mount: str, path: str, version: int) -> dict[str, Any] | None:
        entry = self._entry(mount, path)
        if entry is None:
            return None
        held = entry.versions.get(version if version else entry.current_version)
        if held is None or held.deleted or held.destroyed:
            return None
        return held.data

    def bump(self, mount: str, path: str) -> None:
        """Another process wrote the record first (same content, one more version): a check-and-set conflict."""
        current = self.current_version(mount, path)
        data = self.peek(mount, path)
        if data is not None:
            self._write(mount, path, data, current)

    def _write(self, mount: str, path: str, data: dict[str, Any] | str, cas: int) -> int:
        entries = self._entries(mount)
        key = path.strip("/")
        entry = entries.get(key)
        current = entry.current_version if entry else 0
        if cas != current:
            raise CasMismatchError(f"check-and-set lost while writing {mount}/{path}")
        self._changed()
        if entry is None:
            entry = entries[key] = _Entry()
        entry.current_version = current + 1
        entry.versions[entry.current_version] = _Version(data if isinstance(data, str) else json.dumps(data))
        self._prune(entry)
        return entry.current_version

    @staticmethod
    def _prune(entry: _Entry) -> None:
        keep = entry.max_versions or DEFAULT_MAX_VERSIONS
        for number in sorted(entry.versions):
            if number <= entry.current_version - keep:
                del entry.versions[number]

    def _metadata(self, mount: str, path: str) -> LiveMetadata | None:
        entry = self._entry(mount, path)
        if entry is None:
            return None
        return LiveMetadata(entry.current_version, dict(entry.custom_metadata))

    def _merge(self, mount: str, path: str, patch: dict[str, str]) -> None:
        entry = self._entries(mount).get(path.strip("/"))
        if entry is None:
            # OpenBao answers 404 to a metadata patch of a path never written.
            raise NotFoundError(f"not found while updating metadata of {mount}/{path}")
        self._changed()
        entry.custom_metadata.update(patch)

    def _list(self, mount: str, path: str) -> list[str]:
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        found: set[str] = set()
        for key in self._entries(mount):
            if key.startswith(prefix):
                rest = key[len(prefix):]
                head, sep, _ = rest.partition("/")
                found.add(head + "/" if sep else head)
        return sorted(found)
