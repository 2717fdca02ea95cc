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

One process appends for all its threads: a thread whose append finds
another in flight leaves its name for that one to carry, and returns at
once (a mass rotation at concurrency 16 makes one appender, not 16 that
race each other's check-and-set). No lock is held across a request. The
feed as last read or written is kept, so an uncontended append is one
write, with no read before it.
"""

from __future__ import annotations

import threading
from typing import Any

from rotator.audit.events import get_logger
from rotator.core.errors import CasMismatchError, RotatorError
from rotator.vault.store import VaultStore

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
        self._lock = threading.Lock()  # guards the fields below, never held across a request
        self._waiting: list[str] = []
        self._appending = False
        self._known: tuple[dict[str, Any], int] | None = None  # the feed as last read or written

    def _read(self) -> tuple[dict[str, Any], int]:
        current = self.store.read(self.mount, self.path)
        return current.data or {"generation": 0, "recent": []}, current.version

    def record(self, credential: str) -> None:
        """Tell other processes that `credential`'s record changed (best effort)."""
        with self._lock:
            if credential not in self._waiting:
                self._waiting.append(credential)
            if self._appending:
                return  # the append in flight goes round again for it
            self._appending = True
        try:
            while True:
                with self._lock:
                    names, self._waiting = self._waiting, []
                    if not names:
                        self._appending = False
                        return
                self._append(names)
        except BaseException:
            with self._lock:
                self._appending = False
            raise

    def _append(self, names: list[str]) -> None:
        for _ in range(8):
            with self._lock:
                known = self._known
            try:
                data, version = known if known is not None else self._read()
                generation = int(data.get("generation", 0))
                entries = [[generation + i, name, self.holder] for i, name in enumerate(names, start=1)]
                feed = {"generation": generation + len(names), "recent": [*data.get("recent", []), *entries][-KEEP:]}
                written = self.store.write(self.mount, self.path, feed, cas=version)
            except CasMismatchError:
                with self._lock:
                    self._known = None  # another process appended first: read again
                continue
            except RotatorError as exc:
                with self._lock:
                    self._known = None
                get_logger(credentials=names).warning("changes.append_failed", error=str(exc))
                return
            with self._lock:
                self._known = (feed, written)
            return
        get_logger(credentials=names).warning("changes.append_failed", error="too much contention on the change feed")

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
