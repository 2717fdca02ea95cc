"""Start-up: read each credential's state record as soon as its file is
parsed, while the other files are still being parsed (issue 15, (d)).

Parsing 10,000 files is Python's work on one core; reading 10,000 records
is mostly OpenBao's, on the other. Done one after the other, each core
waits for half the start-up; overlapped, the reads are largely done when
the last file is.

What a prefetched read may miss, and why nothing is missed:
- the change feed's baseline (rotator.vault.changes) is read *before* the
  first record, so a change made by anyone after a record was read shows
  up in the daemon's next poll, as it does for records read later;
  the daemon's first poll (in `Daemon.run_forever`, before `preload_state`
  uses the records) reports the changes made since the baseline, and the
  records of those credentials are read again rather than used (`forget`);
  a feed that cannot be read means no prefetch at all;
- a record read for a file that later turns out broken, or whose name
  another file also claims, is simply not used;
- a read that fails is left out and read again, in bulk or one by one, as
  before.
The daemon still says it has loaded its state (`daemon.state_loaded`) only
once every record has been read and remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rotator.config.spec import LoadedCredential
from rotator.core.errors import RotatorError
from rotator.vault.changes import ALL


# More requests in flight than a later bulk read uses (8): OpenBao's share
# of a busy machine grows with its busy goroutines, and the reads have the
# parsing's whole length to finish in (16 vs 8 at load 7: 16.7 s vs 20-22 s).
CONNECTIONS = 16


class StatePrefetch:
    def __init__(self, store: Any, changes: Any, mount: str, state_path: Callable[[str], str], log: Any) -> None:
        self.store = store
        self.changes = changes
        self.mount = mount
        self.state_path = state_path
        self.log = log
        self._reader: Any = None
        self._asked: dict[str, str] = {}  # path -> credential

    def begin(self) -> Callable[[LoadedCredential], None] | None:
        """Take the change feed's baseline and start a reader; the callback
        queues one credential's record. None: no prefetch (read later)."""
        make_reader = getattr(self.store, "bulk_reader", None)
        if make_reader is None:
            return None
        try:
            self.changes.poll()  # the baseline, before any record is read
            self._reader = make_reader(self.mount, workers=CONNECTIONS)
        except RotatorError as exc:
            self.log.warning("state.prefetch_skipped", error=str(exc))
            return None
        if self._reader is None:
            return None

        def queue(cred: LoadedCredential) -> None:
            path = self.state_path(cred.spec.name)
            if path not in self._asked:
                self._asked[path] = cred.spec.name
                self._reader.submit(path)

        return queue

    def forget(self, changed: set[str] | None) -> None:
        """Changed since the baseline (`ALL`: anything may have): read those again."""
        if not self._asked:
            return
        if changed is ALL:
            self._asked.clear()
        else:
            for path in [p for p, name in self._asked.items() if name in changed]:
                del self._asked[path]

    def take(self, paths: list[str]) -> dict[str, Any]:
        """The records at `paths` (path -> Versioned), prefetched where they
        were, the others read now in bulk; paths that fail are left out."""
        found: dict[str, Any] = {}
        if self._reader is not None:
            reader, asked = self._reader, set(self._asked)
            self._reader, self._asked = None, {}
            found = {p: v for p, v in reader.results().items() if p in asked}
        wanted = set(paths)
        found = {p: v for p, v in found.items() if p in wanted}
        rest = [p for p in paths if p not in found]
        if rest:
            found.update(self.store.read_many(self.mount, rest))
        return found
