"""rotator.vault.history: the versions a restore of a state record undid, found from the record's versions."""

from __future__ import annotations

from rotator.core.state import StateRecord
from rotator.testing.sim.kv import KvModel
from rotator.vault.history import undone_versions
from helpers import write_versions

PATH = "rotator/state/app"


def _record(rotations: int, *, lease: str | None = None) -> StateRecord:
    record = StateRecord(credential="app", provider="test.fake", rotations=rotations)
    return record.model_copy(update={"last_error": lease}) if lease else record


def _write(kv: KvModel, *records: StateRecord, restores: bool = True) -> int:
    return write_versions(kv, PATH, *records, restores=restores)


def _undone(kv: KvModel, version: int) -> list[int]:
    latest = StateRecord.from_vault(kv.read_version("secret", PATH, version))
    return [r.rotations for r in undone_versions(kv, "secret", PATH, version=version, record=latest)]


def test_a_copy_of_an_older_version_undoes_the_versions_between() -> None:
    kv = KvModel()
    assert _undone(kv, _write(kv, _record(1), _record(2), _record(3), _record(1))) == [3, 2]


def test_writes_since_the_copy_do_not_hide_it() -> None:
    """The rotator wrote since the restore (a lease taken): the copy is still found (sim F181)."""
    kv = KvModel()
    assert _undone(kv, _write(kv, _record(1), _record(2), _record(1), _record(1, lease="taken"))) == [2]


def test_the_same_content_written_again_is_no_restore() -> None:
    """A rotation that writes what it wrote two versions before (`issuing`, back to `intent`, `issuing` again in one
    lease) writes a new `write_id`: no version is taken for a copy (sim F186)."""
    kv = KvModel()
    assert _undone(kv, _write(kv, _record(1), _record(2), _record(1), restores=False)) == []
    assert StateRecord.from_vault(kv.read_version("secret", PATH, 1)) != StateRecord.from_vault(kv.read_version("secret", PATH, 3))


def test_a_write_repeated_is_no_restore() -> None:
    """Two equal versions with nothing between (a write made again) say nothing; an older copy is still found."""
    kv = KvModel()
    assert _undone(kv, _write(kv, _record(1), _record(2))) == []
    twice = KvModel()
    assert _undone(twice, _write(twice, _record(1), _record(1))) == []
    again = KvModel()
    assert _undone(again, _write(again, _record(1), _record(2), _record(1), _record(5), _record(5))) == [2]
