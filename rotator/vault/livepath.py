"""The live path: where consumers read a credential (KV v2 `MOUNT/PATH`).

Invariants:
- one completed rotation adds exactly one version, written with
  check-and-set against the version the rotator last wrote; anyone else's
  write since is detected and never overwritten (a `PermanentError`);
- a write that already happened (a crash right after it) is recognised by
  comparing the latest version with the stashed data, so it is never made
  twice;
- metadata changes only `managed-by` and `rotator-*` keys, and is trusted
  to name the live key only where the data names none (it is merged
  without check-and-set);
- a path holding data the rotator did not write for this credential (no
  `managed-by: rotator`, or another credential's name) is never written
  over: `rotator adopt NAME` first accepts it (contract §5).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from rotator.core.clock import to_rfc3339
from rotator.core.errors import CasMismatchError, PermanentError
from rotator.core.state import sha256_hex
from rotator.vault.store import VaultStore

ADOPT_HINT = "run `rotator adopt {name}` to accept what it holds (docs/GETTING_STARTED.md)"


@dataclass(frozen=True)
class LiveContent:
    """What the live path holds now: its latest version, data and metadata."""

    version: int  # 0: never written
    data: dict[str, str] | None  # None: empty, or the latest version deleted
    custom_metadata: dict[str, str]

    def owner(self) -> str | None:
        """The credential whose data this is, by the rotator's metadata."""
        if self.custom_metadata.get("managed-by") != "rotator":
            return None
        return self.custom_metadata.get("rotator-credential") or None

    def is_writable_by(self, credential: str) -> bool:
        """Empty, or written by the rotator for `credential`."""
        return self.data is None or self.owner() == credential


@dataclass(frozen=True)
class LivePath:
    store: VaultStore
    mount: str
    path: str

    def __str__(self) -> str:
        return f"{self.mount}/{self.path}"

    def version_holding(self, data: Mapping[str, str] | None) -> int | None:
        """The latest version, if it holds exactly `data` (the write already happened)."""
        meta = self.store.read_metadata(self.mount, self.path)
        if data is None or meta is None or meta.current_version == 0:
            return None
        live = self.store.read_version(self.mount, self.path, meta.current_version)
        return meta.current_version if live == dict(data) else None

    def held_before(self, data: Mapping[str, str] | None, *, since: int) -> bool:
        """Whether a version after `since`, older than the latest, held
        exactly `data`: it went live there and was superseded since."""
        meta = self.store.read_metadata(self.mount, self.path)
        if data is None or meta is None:
            return False
        for version in range(meta.current_version - 1, max(since, meta.current_version - 10), -1):
            if self.store.read_version(self.mount, self.path, version) == dict(data):
                return True
        return False

    def read(self) -> LiveContent:
        meta = self.store.read_metadata(self.mount, self.path)
        if meta is None or meta.current_version == 0:
            return LiveContent(0, None, dict(meta.custom_metadata) if meta else {})
        data = self.store.read_version(self.mount, self.path, meta.current_version)
        return LiveContent(meta.current_version, {k: str(v) for k, v in data.items()} if data else None, dict(meta.custom_metadata))

    def write(self, data: Mapping[str, str], *, last_written: int | None, credential: str,
              before_write: Callable[[], None] | None = None) -> int:
        """Add one version holding `data`. `last_written`: the version the
        rotator wrote (or adopted) last on this path; None when it has none
        here, and then the path must be empty or hold `credential`'s data.
        One read decides, and the write is check-and-set against the version
        read: a writer stalled in between (past its lease) cannot add a
        second version, nor write over anyone's. `before_write` (the lease
        check) runs after that read: a writer stalled before the read would
        otherwise take another holder's write of this credential, just made,
        for one of its own to replace (sim F109).

        With `last_written` known, the write goes first, with check-and-set
        on it: a path nobody wrote since takes it in one request, and only a
        lost check-and-set reads the path (this very write, made before a
        crash or a lost answer, or someone else's)."""
        if last_written is not None:
            try:
                return self.store.write(self.mount, self.path, data, cas=last_written, keep_metadata=True)
            except CasMismatchError:
                pass
        content = self.read()
        if content.data is not None and content.data == {k: str(v) for k, v in data.items()}:
            return content.version  # the write already happened
        if last_written is None:
            if not content.is_writable_by(credential):
                raise PermanentError(
                    f"{self} holds data the rotator did not write for {credential}; it will not overwrite it: "
                    + ADOPT_HINT.format(name=credential)
                )
        elif content.version != last_written:
            raise PermanentError(
                f"{self} is at version {content.version} but the rotator last wrote version {last_written}: "
                "someone else wrote the live path; the rotator will not overwrite it: " + ADOPT_HINT.format(name=credential)
            )
        if before_write is not None:
            before_write()
        try:
            return self.store.write(self.mount, self.path, data, cas=content.version, keep_metadata=True)
        except CasMismatchError:
            raise PermanentError(f"{self} changed while the rotator was writing it (check-and-set lost)") from None

    def describe(self, *, credential: str, provider: str, key_id: str, rotation_id: str,
                 rotated_at: datetime, expires_at: datetime | None, revoke_now: bool = False) -> None:
        """Merge the rotator's facts into the path's custom metadata. `rotator-revoke-now`: the rotation
        was asked with `--revoke-now`, so every key of this credential made before it is to be revoked at
        once (a record lost meanwhile is rebuilt knowing it, rotator.engine.baseline)."""
        metadata = {
            "managed-by": "rotator",
            "rotator-credential": credential,
            "rotator-provider": provider,
            "rotator-key-id": key_id,
            "rotator-rotated-at": to_rfc3339(rotated_at),
            "rotator-rotation-id": rotation_id,
            "rotator-revoke-now": "true" if revoke_now else "false",
        }
        if expires_at is not None:
            metadata["rotator-expires-at"] = to_rfc3339(expires_at)
        self.store.merge_custom_metadata(self.mount, self.path, metadata)

    def names_as_live(self, key_id: str, *, key_in: Callable[[Mapping[str, str]], str | None] | None = None,
                      value_sha256: Collection[str] = (), secrets: Collection[str] = (), read: LiveContent | None = None) -> bool:
        """Whether the path says `key_id` is the live credential. Its latest
        data is the truth wherever it names a key (an id field such as
        `access_key_id`; or, with `key_in`, the id the provider derives from
        the data, e.g. a token's hash); the metadata's `rotator-key-id`
        counts only where the data names none (deleted, or not a credential
        the provider can name). Metadata is merged without check-and-set,
        so a writer that stalled past its lease may have left it naming a
        key the data no longer holds: consumers read the data.

        Data that names no key (written over by hand) still holds `key_id`
        when one of its values is the id itself or one of the key's secret
        values, by `value_sha256` (the record's hashes) or found in it
        (`secrets`, the values themselves, never logged). Otherwise, with
        `key_in` (the provider names keys in its data), the data holds no
        credential and so not this one, whatever the metadata says; the
        metadata decides only for providers that cannot name keys in data,
        and where the data is deleted. `read`: what `read()` just returned, used instead of reading again."""
        if read is not None:
            live, custom = read.data, read.custom_metadata
        else:
            meta = self.store.read_metadata(self.mount, self.path)
            if meta is None:
                return False
            live = self.store.read_version(self.mount, self.path, meta.current_version) if meta.current_version else None
            custom = meta.custom_metadata
        if live:
            values = {k: str(v) for k, v in live.items()}
            if key_id in values.values():
                return True
            named = key_in(values) if key_in is not None else None
            if named is not None:
                return named == key_id  # the data names its key
            if value_sha256 or secrets:
                return any(sha256_hex(v) in value_sha256 or any(x and x in v for x in secrets) for v in values.values())
            if key_in is not None:
                return False  # the provider names keys in data, and this data (written by hand) names none
        return custom.get("rotator-key-id") == key_id
