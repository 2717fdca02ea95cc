"""Against a real three-node OpenBao cluster on Integrated Storage (Raft):
the rotator pointed at a standby, the active node killed mid-rotation, and
three daemons on three different nodes sharing the work."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.sandbox.services import RaftCluster
from rotator.vault import ConsistencyIndex, VaultConnection, VaultStore, Versioned


def index(cluster: str, value: int) -> str:
    """An `X-Vault-Index` as OpenBao 2.7 writes it."""
    return base64.b64encode(json.dumps({"cluster": cluster, "value": str(value)}).encode()).decode()


def test_the_consistency_index_keeps_the_newest_and_asks_a_lagging_standby_to_forward() -> None:
    """Responses of parallel requests arrive in any order: a lower index of the same cluster never replaces a higher one."""
    tracker = ConsistencyIndex()
    assert tracker.headers() == {}
    tracker.observe(None)
    assert tracker.headers() == {}
    tracker.observe(index("c1", 40))
    tracker.observe(index("c1", 39))
    assert tracker.headers() == {"X-Vault-Index": index("c1", 40), "X-Vault-Inconsistent": "forward-active-node"}
    tracker.observe(index("c1", 41))
    assert tracker.headers()["X-Vault-Index"] == index("c1", 41)


def test_an_index_of_another_cluster_or_an_unknown_form_replaces_the_last() -> None:
    """The header is opaque: what does not decode as OpenBao's form is simply the latest."""
    tracker = ConsistencyIndex()
    tracker.observe(index("c1", 40))
    tracker.observe(index("c2", 3))  # another cluster at the same address (rebuilt)
    assert tracker.headers()["X-Vault-Index"] == index("c2", 3)
    tracker.observe("not-base64-json")
    assert tracker.headers()["X-Vault-Index"] == "not-base64-json"
    tracker.observe(index("c2", 1))
    assert tracker.headers()["X-Vault-Index"] == index("c2", 1)


@pytest.fixture(scope="module")
def raft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    cluster = RaftCluster(tmp_path_factory.mktemp("raft")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def healed(raft: RaftCluster) -> Iterator[RaftCluster]:
    """The cluster with all three nodes up, before and after the test."""
    for i in range(len(raft.addrs)):
        if not raft.is_alive(i):
            raft.restart(i)
    raft.wait_for_active()
    yield raft
    for i in range(len(raft.addrs)):
        if not raft.is_alive(i):
            raft.restart(i)


def standby_store(raft: RaftCluster) -> VaultStore:
    standby = raft.standbys()[0]
    return VaultStore(VaultConnection(url=raft.addrs[standby], token=raft.token))


@pytest.mark.slow
def test_a_store_pointed_at_a_standby_reads_its_own_writes(healed: RaftCluster) -> None:
    """A standby serves reads from its own copy, which lags the active node by
    milliseconds: without the index headers, a read right after a write finds
    the path absent or at the previous version."""
    store = standby_store(healed)
    prefix = f"ryw-{uuid.uuid4().hex[:8]}"
    for i in range(10):
        path = f"{prefix}/{i}"
        first = store.write("secret", path, {"n": "one"}, cas=0)
        assert store.read("secret", path) == Versioned({"n": "one"}, first)
        second = store.write("secret", path, {"n": "two"}, cas=first)
        meta = store.read_metadata("secret", path)
        assert meta is not None and meta.current_version == second
        assert store.read_data("secret", path) == {"n": "two"}


@pytest.mark.slow
def test_the_cluster_fixture_is_three_voters_with_one_active(healed: RaftCluster, tmp_path: Path) -> None:
    """The fixture itself: one active node, two standbys, all three voters."""
    assert healed.active() is not None
    assert len(healed.standbys()) == 2
    assert healed.voters() == 3
