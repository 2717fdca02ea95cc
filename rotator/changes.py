"""The change feed: how a daemon learns that someone else changed a
credential's state record (`rotator rotate` run by hand, another replica)
without reading every record on every tick.

One small KV v2 record, `ROTATOR_STATE_PREFIX/_changes`, holds a generation
counter and the last few hundred (generation, credential, holder) entries.
Every process that changes a state record appends to it with check-and-set;
a daemon reads it every `ROTATOR_CHANGE_POLL_SECONDS` and re-reads only the
records others changed, or all of them when it fell too far behind.

The feed is a hint, never the truth: a lost append (a crash, Vault down) at
worst delays when a daemon notices a change until that credential's next
wake; the state records decide everything.
"""

from __future__ import annotations

from typing import Any

from rotator.audit import get_logger
from rotator.errors import CasMismatchError, RotatorError
from rotator.vault import VaultStore

FEED_NAME = "_changes"  # never a credential name: those start with [a-z0-9]
KEEP = 500
ALL = None  # poll(): re-read every record


class ChangeFeed:
    def __init__(self, store: VaultStore, *, mount: str, prefix: str, holder: str) -> None:
        self.store = store
        self.mount = mount
        self.path = f"{prefix}/{FEED_NAME}"
        self.holder = holder
        self._seen: int | None = None

    def _read(self) -> tuple[dict[str, Any], int]:
        current = self.store.read(self.mount, self.path)
        return current.data or {"generation": 0, "recent": []}, current.version

    def record(self, credential: str) -> None:
        """Tell other processes that `credential`'s record changed (best effort)."""
        for _ in range(5):
            try:
                data, version = self._read()
                generation = int(data.get("generation", 0)) + 1
                recent = [*data.get("recent", []), [generation, credential, self.holder]][-KEEP:]
                self.store.write(self.mount, self.path, {"generation": generation, "recent": recent}, cas=version)
                return
            except CasMismatchError:
                continue  # another writer appended first: read again
            except RotatorError as exc:
                get_logger(credential=credential).warning("changes.append_failed", error=str(exc))
                return
        get_logger(credential=credential).warning("changes.append_failed", error="too much contention on the change feed")

    def poll(self) -> set[str] | None:
        """Credentials others changed since the last poll; `ALL` when entries
        were missed (or at the first poll, which only sets the baseline)."""
        data = self.store.read_data(self.mount, self.path) or {"generation": 0, "recent": []}
        generation = int(data.get("generation", 0))
        seen, self._seen = self._seen, generation
        if seen is None or generation == seen:
            return set()
        recent = data.get("recent", [])
        if generation < seen or not recent or int(recent[0][0]) > seen + 1:
            return ALL
        return {name for gen, name, holder in recent if int(gen) > seen and holder != self.holder}
