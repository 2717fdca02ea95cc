"""The live path: where consumers read a credential (KV v2 `MOUNT/PATH`).

Invariants:
- one completed rotation adds exactly one version, written with
  check-and-set against the version the rotator last wrote; anyone else's
  write since is detected and never overwritten (a `PermanentError`);
- a write that already happened (a crash right after it) is recognised by
  comparing the latest version with the stashed data, so it is never made
  twice;
- metadata changes only `managed-by` and `rotator-*` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rotator.clock import to_rfc3339
from rotator.errors import CasMismatchError, PermanentError
from rotator.vault import VaultStore


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

    def write(self, data: Mapping[str, str], *, last_written: int | None) -> int:
        """Add one version holding `data`; `last_written`: the version the
        rotator wrote last (None on the first rotation, which adopts the path)."""
        done = self.version_holding(data)
        if done is not None:
            return done
        meta = self.store.read_metadata(self.mount, self.path)
        current = meta.current_version if meta else 0
        if last_written is not None and current != last_written:
            raise PermanentError(
                f"{self} is at version {current} but the rotator last wrote version {last_written}: "
                "someone else wrote the live path; the rotator will not overwrite it"
            )
        try:
            return self.store.write(self.mount, self.path, data, cas=current)
        except CasMismatchError:
            raise PermanentError(f"{self} changed while the rotator was writing it (check-and-set lost)") from None

    def describe(self, *, credential: str, provider: str, key_id: str, rotation_id: str,
                 rotated_at: datetime, expires_at: datetime | None) -> None:
        """Merge the rotator's facts into the path's custom metadata."""
        metadata = {
            "managed-by": "rotator",
            "rotator-credential": credential,
            "rotator-provider": provider,
            "rotator-key-id": key_id,
            "rotator-rotated-at": to_rfc3339(rotated_at),
            "rotator-rotation-id": rotation_id,
        }
        if expires_at is not None:
            metadata["rotator-expires-at"] = to_rfc3339(expires_at)
        self.store.merge_custom_metadata(self.mount, self.path, metadata)

    def names_as_live(self, key_id: str) -> bool:
        """Whether the path says `key_id` is the live credential: its metadata
        names it, or its latest data holds it (an id field such as
        `access_key_id`, also before the metadata caught up)."""
        meta = self.store.read_metadata(self.mount, self.path)
        if meta is None:
            return False
        if meta.custom_metadata.get("rotator-key-id") == key_id:
            return True
        if meta.current_version == 0:
            return False
        live = self.store.read_version(self.mount, self.path, meta.current_version) or {}
        return key_id in live.values()
