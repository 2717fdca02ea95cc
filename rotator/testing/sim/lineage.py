"""Which credential each rotator-made key belongs to, as `rotate --revoke-now`'s
targets need it (contract §2, §6.9): the credential its key was minted for,
and the renames a process saw and the rotator took over.

A file renamed with the same live path carries the old name's credentials
on (§6.9), so the new name's `--revoke-now` owes them too. A file renamed
and moved to another `vault.path` before any process looked (two edits
between two looks are seen as one) is a removed file and a new one: the old
name's keys are not the new name's to revoke (F47, and helper combo3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rotator.core.state import StateRecord


@dataclass
class Lineage:
    minted_for: dict[str, str] = field(default_factory=dict)  # key id -> the credential it was minted for
    acting_for: dict[str, str] = field(default_factory=dict)  # actor -> the credential it is reconciling
    observed: dict[str, str] = field(default_factory=dict)  # file name -> vault.path, as the last process to look saw them
    renamed_from: dict[str, str] = field(default_factory=dict)  # NEW -> OLD: seen as renamed with the same live path
    described_over: dict[str, set[str]] = field(default_factory=dict)  # actor -> keys it named live over data naming none

    def observe(self, files: Mapping[str, str]) -> None:
        """A process reads the credential files (name -> vault.path): a name
        gone and a new one with its very path is a rename, as far as it can tell."""
        gone = {name: path for name, path in self.observed.items() if name not in files}
        for name, path in files.items():
            if name not in self.observed:
                old = next((o for o, p in gone.items() if p == path), None)
                if old is not None:
                    self.renamed_from[name] = old
        self.observed = dict(files)

    def minted(self, actor: str, key_ids: Iterable[str]) -> None:
        for key_id in key_ids:
            self.minted_for[key_id] = self.acting_for.get(actor, "?")

    def carries_on(self, path: str, key_id: str, records: Mapping[str, StateRecord]) -> bool:
        """A live write at `path` is of the credential `key_id` was minted for, renames the rotator took over
        included (`names`): only such a write supersedes the key live at another path, not a new file's where
        a removed one's key lives on (sim F225). A path no file names, or a key of unknown making, counts."""
        writer = next((name for name, p in self.observed.items() if p == path), None)
        owner = self.minted_for.get(key_id)
        return writer is None or owner is None or owner in self.names(writer, records)

    def names(self, name: str, records: Mapping[str, StateRecord]) -> set[str]:
        """The names whose credentials `name` carries on: each rename a
        process saw that the rotator took over (the old record says
        moved_to, or the new one holds a key minted for another name). A
        rename it could not take over (a crash, then vault.path changed)
        leaves the old name a removed file (§6.9)."""
        out = {name}
        current = name
        for _ in range(len(self.renamed_from) + 1):
            old = self.renamed_from.get(current)
            if old is None or old in out:
                break
            record = records.get(current)
            held = record.managed_key_ids() if record is not None else set()
            # OLD's own record handed over to this name: another record's (a name renamed in whose path this one
            # took over) says nothing of OLD, whose record, never seen at this path, is a removed file's (F230).
            before = records.get(old)
            taken = (before is not None and before.moved_to == current) or any(self.minted_for.get(k) not in (None, current) for k in held)
            if not taken:
                break
            out.add(old)
            current = old
        return out

    def targets(self, asked: frozenset[str], name: str, actor: str, records: Mapping[str, StateRecord], live: set[str]) -> frozenset[str]:
        """What a completed `rotate NAME --revoke-now` (run as `actor`) owes,
        of the keys that existed when it was asked (§2): each previous
        credential of NAME, those it carries on from renames included (§6.9).
        Keys of another credential are not: a removed file's live key is left
        alone and its superseded ones revoked on schedule (§6.9). Nor is the
        key it made live (perhaps another process's pending one it finished):
        the one a live path holds, or, where someone wrote over that data by
        hand before this run finished the promotion, the one its own metadata
        merge named (CONTRACT-NOTES "Issue 10: how the fault simulation reads
        contract §6")."""
        names = self.names(name, records)
        made_live = live | self.described_over.get(actor, set())
        return frozenset(k for k in asked if self.minted_for.get(k, name) in names) - made_live
