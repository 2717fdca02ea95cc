"""Against a real three-node OpenBao cluster on Integrated Storage (Raft):
the store reading through a standby (its own writes, a write it could not
confirm), the active node killed mid-rotation with the daemon on a standby,
and three daemons on three different nodes sharing the work. The tests that
start servers are marked slow; the module takes about 100 s."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import hvac
import pytest
import requests

from helpers import DaemonProcess, SecretLedger, names, parse_events, run_rotator, write_credential
from rotator.core.errors import CasMismatchError
from rotator.core.crashpoints import pause_env
from rotator.sandbox.services import MotoServer, RaftCluster, free_port
from rotator.vault.session import ConsistencyIndex, _session_for
from rotator.config.settings import VaultConnection
from rotator.vault.store import VaultStore, Versioned


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
    raft.wait_settled()
    yield raft
    for i in range(len(raft.addrs)):
        if not raft.is_alive(i):
            raft.restart(i)


def standby_store(raft: RaftCluster) -> VaultStore:
    standby = raft.standbys()[0]
    return VaultStore(VaultConnection(url=raft.addrs[standby], token=raft.token))


def test_an_unconfirmed_write_sends_reads_to_the_active_node_until_a_later_write_succeeds() -> None:
    """In doubt, the index named is one no node reaches (so a standby forwards);
    only a write sent after the doubt arose ends it."""
    tracker = ConsistencyIndex()
    tracker.observe(index("c1", 40))
    before = tracker.doubts
    tracker.doubt()  # a write with no answer, or a lost check-and-set
    assert tracker.in_doubt
    sent = json.loads(base64.b64decode(tracker.headers()["X-Vault-Index"]))
    assert sent == {"cluster": "c1", "value": str(ConsistencyIndex.BEYOND_ANY)}
    tracker.confirmed(index("c1", 42), since=before)  # in flight while the doubt arose: may be older than the doubted write
    assert tracker.in_doubt
    tracker.confirmed(index("c1", 43), since=tracker.doubts)
    assert not tracker.in_doubt
    assert tracker.headers()["X-Vault-Index"] == index("c1", 43)


def test_a_write_with_no_answer_leaves_the_store_in_doubt_and_a_read_does_not() -> None:
    """Through the store's real session: a POST that gets no answer (nothing
    listens) may have been applied somewhere; a GET that gets none changed nothing."""
    url = f"http://127.0.0.1:{free_port()}"
    tracker = ConsistencyIndex()
    tracker.observe(index("c1", 7))
    session = _session_for(url, True, tracker)
    with pytest.raises(requests.ConnectionError):
        session.get(f"{url}/v1/secret/data/x", timeout=2)
    assert not tracker.in_doubt
    with pytest.raises(requests.ConnectionError):
        session.post(f"{url}/v1/secret/data/x", json={"data": {}}, timeout=2)
    assert tracker.in_doubt


def test_in_doubt_with_an_index_that_does_not_decode_the_newest_is_sent() -> None:
    tracker = ConsistencyIndex()
    tracker.observe("opaque-1")
    tracker.doubt()
    assert tracker.headers() == {"X-Vault-Index": "opaque-1", "X-Vault-Inconsistent": "forward-active-node"}
    assert ConsistencyIndex().headers() == {}


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
def test_after_a_write_it_could_not_confirm_a_store_reads_the_active_nodes_data(healed: RaftCluster) -> None:
    """A write whose answer was lost (the active node died with it in flight)
    may have been applied; so may a write the store lost a check-and-set to.
    The store's index predates that write, and a lagging standby would answer
    from the old copy: a promotion retried there finds the live path "changed
    by someone else", and a rollback that reads it there revokes the key that
    is live. Until a write of its own succeeds, the store's reads come from
    the active node's data."""
    store = standby_store(healed)
    writer = hvac.Client(url=healed.addrs[healed.wait_for_active()], token=healed.token).secrets.kv.v2
    prefix = f"doubt-{uuid.uuid4().hex[:8]}"
    for i in range(10):
        path = f"{prefix}/{i}"
        assert store.write("secret", path, {"n": "mine"}, cas=0) == 1
        # The write the store never heard back about, made as another client.
        writer.create_or_update_secret(path=path, secret={"n": "applied"}, cas=1, mount_point="secret")
        with pytest.raises(CasMismatchError):
            store.write("secret", path, {"n": "again"}, cas=1)
        meta = store.read_metadata("secret", path)
        assert meta is not None and meta.current_version == 2, f"trial {i}: read the standby's old copy"
        assert store.read("secret", path) == Versioned({"n": "applied"}, 2), f"trial {i}"


@pytest.mark.slow
def test_the_cluster_fixture_is_three_voters_with_one_active(healed: RaftCluster, tmp_path: Path) -> None:
    """The fixture itself: one active node, two standbys, all three voters."""
    assert healed.active() is not None
    assert len(healed.standbys()) == 2
    assert healed.voters() == 3


# -- the rotator against the cluster -------------------------------------------


def rotator_env(raft: RaftCluster, node: int, moto: MotoServer, config_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "VAULT_ADDR": raft.addrs[node],
        "VAULT_TOKEN": raft.token,
        "ROTATOR_STATE_MOUNT": "secret",
        "ROTATOR_STATE_PREFIX": prefix,
        "ROTATOR_LOG_FORMAT": "json",
        "ROTATOR_CONFIG_DIR": str(config_dir),
        **moto.env(),
        **extra,
    }


def kv(raft: RaftCluster) -> Any:
    """KV v2 through the active node (never a lagging copy), as root."""
    return hvac.Client(url=raft.addrs[raft.wait_for_active()], token=raft.token).secrets.kv.v2


def live_of(raft: RaftCluster, path: str) -> tuple[dict[str, str] | None, dict[str, Any]]:
    try:
        data = kv(raft).read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    except hvac.exceptions.InvalidPath:
        return None, {}
    return data, kv(raft).read_secret_metadata(path=path, mount_point="secret")["data"]


def state_of(raft: RaftCluster, prefix: str, name: str) -> dict[str, Any]:
    return kv(raft).read_secret_version(path=f"{prefix}/{name}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]


def works_at_moto(moto: MotoServer, data: dict[str, str]) -> bool:
    sts = boto3.client("sts", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id=data["access_key_id"], aws_secret_access_key=data["secret_access_key"])
    try:
        sts.get_caller_identity()
    except botocore.exceptions.ClientError:
        return False
    return True


def keys_at_moto(iam_admin: Any, user: str) -> set[str]:
    return {k["AccessKeyId"] for k in iam_admin.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def wait_until(predicate: Any, *, timeout: float, what: str) -> float:
    """Poll (bounded); returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


FAILOVER_POINTS = {
    # boundary to hold the rotation at -> how the test sees it got there
    "after-stash": "the new key stashed, before verify and promotion",
    "after-live-write": "the live path written, before its metadata and the record's promotion",
}


@pytest.mark.slow
@pytest.mark.parametrize("boundary", list(FAILOVER_POINTS))
def test_killing_the_active_node_mid_rotation_loses_nothing(
    healed: RaftCluster, moto: MotoServer, iam_admin: Any, iam_user: str, config_dir: Path, unique: str, boundary: str,
) -> None:
    """The daemon on a standby; the active node SIGKILLed while the rotation
    is held at a boundary: after re-election the rotation completes, the live
    path holds a key that works, the state names the same key as the live
    metadata, and moto holds that key only."""
    raft = healed
    prefix = f"rotator-test/{unique}"
    live_path = f"apps/{iam_user}"
    write_credential(config_dir, iam_user, params={"user_name": iam_user}, path=live_path)
    active, standby = raft.active(), raft.standbys()[0]
    assert active is not None
    env = rotator_env(raft, standby, moto, config_dir, prefix, ROTATOR_TICK_SECONDS="0.5", **pause_env(f"{boundary}:0.5"))
    daemon = DaemonProcess(env)
    try:
        if boundary == "after-stash":
            daemon.wait_for(lambda ev: "credential.issued" in names(ev), what="credential.issued")
        else:
            wait_until(lambda: live_of(raft, live_path)[0] is not None, timeout=60, what="the live write")
        raft.kill(active)
        killed_at = time.monotonic()
        assert "rotation.completed" not in names(daemon.events()), "the kill must fall mid-rotation"
        new_active = raft.wait_for_active(timeout=30)
        reelected = time.monotonic() - killed_at
        events = daemon.wait_for(lambda ev: "rotation.completed" in names(ev), timeout=90, what="rotation.completed")
        completed_after = time.monotonic() - killed_at
    finally:
        code = daemon.stop()
    assert code == 0
    events = daemon.events()
    # Failures the daemon logged on its way (in-step retries absorb some).
    failures = [e for e in events if e["event"] in {"rotation.failed", "vault.metadata_failed", "lease.release_failed"}]
    print(f"\nRAFT failover at {boundary}: node{active} killed, node{new_active} active after {reelected:.2f}s; "
          f"rotation completed {completed_after:.2f}s after the kill; daemon on node{standby} logged {len(failures)} failure(s): "
          f"{sorted({e.get('step') or e['event'] for e in failures})}")
    assert names(events).count("rotation.completed") == 1

    data, meta = live_of(raft, live_path)
    assert data is not None and meta["current_version"] == 1, "exactly one version on the live path"
    assert works_at_moto(moto, data)
    state = state_of(raft, prefix, iam_user)
    assert state["pending"] is None and state["rotations"] == 1
    assert state["current"]["key_id"] == data["access_key_id"] == meta["custom_metadata"]["rotator-key-id"]
    assert keys_at_moto(iam_admin, iam_user) == {data["access_key_id"]}, "no orphan key at moto"
    ledger = SecretLedger()
    ledger.add(data["secret_access_key"])
    ledger.capture("daemon output", daemon.output())
    ledger.assert_clean()


@pytest.mark.slow
def test_three_daemons_on_three_nodes_rotate_each_of_30_credentials_exactly_once(
    healed: RaftCluster, moto: MotoServer, iam_admin: Any, config_dir: Path, unique: str,
) -> None:
    """`rotator run --once` three times at once, each on a different node (the
    active and both standbys): every credential is rotated by exactly one of
    them — one version on each live path, one key at moto, one rotation in
    each record."""
    raft = healed
    prefix = f"rotator-test/{unique}"
    users = [f"rr-{unique}-{i:02d}" for i in range(30)]
    for user in users:
        iam_admin.create_user(UserName=user)
        write_credential(config_dir, user, params={"user_name": user})
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    started = time.monotonic()
    runs = [
        subprocess.Popen([sys.executable, "-m", "rotator", "run", "--once"], env={**base, **rotator_env(raft, node, moto, config_dir, prefix)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for node in range(len(raft.addrs))
    ]
    outputs = [run.communicate(timeout=240) for run in runs]
    took = time.monotonic() - started
    # On a failure, what each run logged as failed or warned (events carry no secret value: the rotator scrubs them).
    bad = [[e for e in parse_events(out) if e.get("level") in ("error", "warning") or "failed" in e["event"]] for out, _ in outputs]
    assert [run.returncode for run in runs] == [0, 0, 0], [[(e["event"], e.get("step"), str(e.get("error") or "")[:300]) for e in b] for b in bad]
    per_node = [[e["credential"] for e in parse_events(out) if e["event"] == "rotation.completed"] for out, _ in outputs]
    lost = [sum(1 for e in parse_events(out) if e["event"] == "lease.lost") for out, _ in outputs]
    print(f"\nRAFT 3 daemons x 30 credentials: {took:.1f}s; completions per node {[len(done) for done in per_node]}, lease.lost {lost}")
    counts = {user: sum(done.count(user) for done in per_node) for user in users}
    assert counts == {user: 1 for user in users}
    # Without faults nobody may take a lease another still holds (it did,
    # through a record read as missing at the version another had just made).
    assert lost == [0, 0, 0]
    ledger = SecretLedger()
    for user in users:
        data, meta = live_of(raft, f"apps/{user}")
        assert data is not None and meta["current_version"] == 1, user
        ledger.add(data["secret_access_key"])
        assert keys_at_moto(iam_admin, user) == {data["access_key_id"]} == {meta["custom_metadata"]["rotator-key-id"]}, user
        state = state_of(raft, prefix, user)
        assert state["rotations"] == 1 and state["pending"] is None and state["current"]["key_id"] == data["access_key_id"], user
    for out, err in outputs:
        ledger.capture("rotator run --once output", out + err)
    ledger.assert_clean()


@pytest.mark.slow
def test_a_write_landing_between_the_data_read_and_the_metadata_read_is_not_read_as_missing(openbao, bao_client, unique: str) -> None:  # type: ignore[no-untyped-def]
    """The same interleaving made certain on one server: the other process's
    write is made right before the metadata read. The record must come back
    as written (or as missing at version 0), never as missing at version 1."""
    store = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    path = f"race/{unique}"
    real = store.read_metadata
    writes: list[int] = []

    def another_process_writes_first(mount: str, at: str):  # type: ignore[no-untyped-def]
        if not writes:
            writes.append(bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"holder": "other"}, cas=0, mount_point="secret")["data"]["version"])
        return real(mount, at)

    store.read_metadata = another_process_writes_first  # type: ignore[method-assign]
    assert store.read("secret", path) == Versioned({"holder": "other"}, 1)
    assert writes == [1]


@pytest.mark.slow
def test_rotate_caught_without_a_leader_fails_and_run_again_finishes_the_same_rotation(
    healed: RaftCluster, moto: MotoServer, iam_admin: Any, iam_user: str, config_dir: Path, unique: str,
) -> None:
    """`rotator rotate` on a standby; once the new key is stashed, the active
    node and the other standby are killed, so no leader can be elected until
    one comes back. The command cannot write the record and exits 1, its
    lease left behind. With a leader again, `rotate` run again sees the
    holder is gone, resumes the same rotation and completes it: one key
    minted live, one live version, no orphan. (The record says `issued` only
    with `verified`, docs/STATE.md: the key stashed before the outage is
    found by its stash entry and revoked, then a new one is minted.)"""
    raft = healed
    prefix = f"rotator-test/{unique}"
    live_path = f"apps/{iam_user}"
    write_credential(config_dir, iam_user, params={"user_name": iam_user}, path=live_path)
    active, standby = raft.active(), raft.standbys()[0]
    assert active is not None
    other = next(i for i in range(len(raft.addrs)) if i not in (active, standby))
    env = rotator_env(raft, standby, moto, config_dir, prefix)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    first = subprocess.Popen([sys.executable, "-m", "rotator", "rotate", iam_user], env={**base, **env, **pause_env("after-stash:0.5")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stdout is not None
    lines = []
    for line in first.stdout:  # ends when the process does
        lines.append(line)
        if '"credential.issued"' in line:
            raft.kill(active)
            raft.kill(other)  # one node of three: no quorum, no leader
            break
    killed_at = time.monotonic()
    out, err = first.communicate(timeout=120)
    failed_after = time.monotonic() - killed_at
    first_events = parse_events("".join(lines) + out)
    assert first.returncode == 1, err[-1500:]
    assert "rotation.completed" not in names(first_events)
    raft.restart(other)
    raft.wait_for_active(timeout=30)
    state = state_of(raft, prefix, iam_user)
    assert state["pending"]["phase"] == "issuing" and state["lease"] is not None
    stashed_key = next(e["key_id"] for e in parse_events("".join(lines)) if e["event"] == "credential.issued")
    rerun_at = time.monotonic()
    again = run_rotator(["rotate", iam_user], env)
    print(f"\nRAFT rotate without a leader: exit {first.returncode} {failed_after:.1f}s after the kill "
          f"({sorted({e.get('step') or e['event'] for e in first_events if 'failed' in e['event']})}); "
          f"run again: exit {again.returncode} in {time.monotonic() - rerun_at:.1f}s")
    assert again.returncode == 0, again.stderr[-1500:]
    events = parse_events(again.stdout)
    assert [e["reason"] for e in events if e["event"] == "rotation.started"] == ["recovery"]
    assert names(events).count("rotation.completed") == 1
    data, meta = live_of(raft, live_path)
    assert data is not None and meta["current_version"] == 1
    assert works_at_moto(moto, data)
    state = state_of(raft, prefix, iam_user)
    assert state["pending"] is None and state["rotations"] == 1 and state["current"]["key_id"] == data["access_key_id"]
    assert keys_at_moto(iam_admin, iam_user) == {data["access_key_id"]} == {meta["custom_metadata"]["rotator-key-id"]}
    assert [e["key_id"] for e in events if e["event"] == "orphan.revoked"] == [stashed_key] != [data["access_key_id"]]
    ledger = SecretLedger()
    ledger.add(data["secret_access_key"])
    ledger.capture("first rotate", "".join(lines) + out + err)
    ledger.capture("second rotate", again.stdout + again.stderr)
    ledger.assert_clean()
