"""rotator.vault.history, the parts the forgotten-key proof (rotator/engine/forgotten.py, sim F117, F131) and the
restore's lineage (sim F150) read: a record's recent versions, the paths a rotation can have written, and the
versions from a restore's copy on."""

from __future__ import annotations

from datetime import UTC, datetime

from rotator.core.state import KeyRecord, Pending, Retiring, StateRecord
from rotator.testing.sim.kv import KvModel
from rotator.vault.history import recent_versions, restore_split, rotation_paths
from helpers import write_versions

PATH = "rotator/state/app"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _key(key_id: str, rotation: str) -> KeyRecord:
    return KeyRecord(key_id=key_id, rotation_id=rotation, issued_at=T0)


def _idle(rotation: str, path: str) -> StateRecord:
    return StateRecord(credential="app", provider="test.fake", current=_key("k-" + rotation, rotation), live_path=path,
                       live_version=1)


def _rotating(before: StateRecord, rotation: str, target: str, earlier: tuple[str, ...] = ()) -> StateRecord:
    pending = Pending(rotation_id=rotation, reason="schedule", started_at=T0, target=target, earlier_targets=list(earlier))
    return before.model_copy(update={"pending": pending})


def _write(kv: KvModel, *records: StateRecord, restores: bool = True) -> int:
    return write_versions(kv, PATH, *records, restores=restores)


def test_a_rotation_is_placed_by_the_versions_that_had_it_in_flight_or_current() -> None:
    """The path the first rotation held live, the one the second was writing and the one it wrote before
    `vault.path` moved on; a rotation only a retiring entry names is not placed (where it went live is unknown)."""
    kv = KvModel()
    first = _idle("r1", "secret/apps/old")
    second = _rotating(first, "r2", "secret/apps/new", earlier=("secret/apps/mid",))
    done = StateRecord(credential="app", provider="test.fake", current=_key("k-r2", "r2"), live_path="secret/apps/new",
                       retiring=[Retiring(key=_key("k-r0", "r0"), superseded_by="r1", revoke_after=T0)])
    version = _write(kv, first, second, done)
    history = recent_versions(kv, "secret", PATH, version=version, record=done)
    assert len(history) == 3
    assert "secret/apps/old" in (rotation_paths(history, "r1") or [])  # (with the target of a version that had it current)
    assert set(rotation_paths(history, "r2") or []) == {"secret/apps/old", "secret/apps/new", "secret/apps/mid"}
    assert rotation_paths(history, "r0") is None  # only retiring: where its successor went live, not where it did
    assert rotation_paths(history, "r9") is None


def test_recent_versions_reads_at_most_back_versions_and_passes_over_deleted_ones() -> None:
    kv = KvModel()
    records = [_idle(f"r{n}", "secret/apps/app") for n in range(1, 15)]
    version = _write(kv, *records)
    history = recent_versions(kv, "secret", PATH, version=version, record=records[-1], back=10)
    assert [r.current.rotation_id for r in history if r.current] == [f"r{n}" for n in range(14, 4, -1)]
    kv.destroy_versions("secret", PATH, [13])
    history = recent_versions(kv, "secret", PATH, version=version, record=records[-1], back=10)
    assert "r13" not in {r.current.rotation_id for r in history if r.current}


def test_the_versions_from_a_restores_copy_on_are_told_from_those_it_undid() -> None:
    """Restored to the first version, then written once more (a lease): the copy and what came after it are
    the record's own lineage (sim F150); the version between is what the restore undid."""
    kv = KvModel()
    first, later = _idle("r1", "secret/apps/old"), _idle("r2", "secret/apps/new")
    leased = first.model_copy(update={"last_error": "a write since"})
    version = _write(kv, first, later, first, leased)
    since, undone = restore_split(kv, "secret", PATH, version=version, record=leased)
    assert [r.current.rotation_id for r in undone if r.current] == ["r2"]
    assert [r.model_copy(update={"write_id": None}) for r in since] == [leased, first]
    plain = KvModel()
    assert restore_split(plain, "secret", PATH, version=_write(plain, first, later), record=later) == ([], [])
