"""How many Vault requests a rotation makes (issue 15), counted by a
recording proxy in front of the real OpenBao: the counts are deterministic,
so the bounds cannot regress unnoticed. Each bound is what crash safety
needs (docs/STATE.md, "Vault writes of a rotation"); AWS is the real moto
server, through a proxy of its own."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from counting_proxy import CountingProxy, Seen
from helpers import run_rotator, write_credential
from rotator.wiring import App
from rotator.core.clock import FakeClock
from rotator.daemon.loop import Daemon
from rotator.engine.reconcile import Engine
from rotator.engine.results import EngineOptions
from rotator.config.settings import Settings
from rotator.vault.store import VaultStore

SCHEDULED_ROTATION_MAX = 6  # in a running daemon, revocation counted on its own
REVOKE_NOW_RUN_MAX = 10  # a whole `rotate NAME --revoke-now`, as a fresh process


def _listing(seen: list[Seen]) -> str:
    return "\n".join(f"  {s.method} {s.path}" for s in seen)


def test_rotate_revoke_now_as_a_fresh_process_makes_at_most_10_vault_requests(openbao, moto, iam_user, config_dir: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    """`rotate NAME --revoke-now` (login, rotation, revocation, all): ≤ 10 Vault requests."""
    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, grace="1h")
    with CountingProxy(openbao.addr) as vault, CountingProxy(moto.endpoint) as aws:
        env = {**moto.env(), "AWS_ENDPOINT_URL": aws.url, "VAULT_ADDR": vault.url, "VAULT_TOKEN": openbao.token,
               "ROTATOR_STATE_PREFIX": f"rotator-test/{unique}", "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_LOG_FORMAT": "json"}
        assert run_rotator(["rotate", iam_user], env).returncode == 0  # the first key: not what is counted
        before = len(vault.requests())
        result = run_rotator(["rotate", iam_user, "--revoke-now"], env)
        assert result.returncode == 0, result.stderr[-2000:]
        seen = vault.requests()[before:]
    assert '"credential.revoked"' in result.stdout
    assert len(seen) <= REVOKE_NOW_RUN_MAX, f"{len(seen)} Vault requests:\n{_listing(seen)}"
    record = f"/v1/secret/data/rotator-test/{unique}/{iam_user}"
    writes = [s for s in seen if s.method == "POST" and s.path == record]
    assert len(writes) == 3, f"three state record writes (issuing, verified, done):\n{_listing(seen)}"


@pytest.fixture
def daemon_world(openbao, moto, iam_user, config_dir: Path, unique: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "1d"}, every="30d", grace="1h")
    with CountingProxy(openbao.addr) as vault, CountingProxy(moto.endpoint) as aws:
        for key, value in {**moto.env(), "AWS_ENDPOINT_URL": aws.url}.items():
            monkeypatch.setenv(key, value)
        clock = FakeClock(datetime.now(UTC))
        settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=vault.url,
                            vault_token=openbao.token, tick_seconds=10)
        store = VaultStore(settings.vault_connection())
        store.login()
        engine = Engine(store, options=EngineOptions(state_prefix=settings.state_prefix), clock=clock)
        daemon = Daemon(App(settings, store, engine))
        daemon.load()
        daemon.preload_state()
        yield daemon, clock, vault, aws
        daemon.close()


def test_a_scheduled_rotation_in_a_running_daemon_makes_at_most_6_vault_requests(daemon_world) -> None:  # type: ignore[no-untyped-def]
    """A due rotation of a daemon that has read the record before: ≤ 6 Vault requests, and no read."""
    daemon, clock, vault, aws = daemon_world
    assert daemon.run_pass().completed == 1  # the first key
    clock.advance(timedelta(days=31))
    before, aws_before = len(vault.requests()), len(aws.requests())
    summary = daemon.run_pass()
    seen = vault.requests()[before:]
    assert summary.completed == 1
    assert len(seen) <= SCHEDULED_ROTATION_MAX, f"{len(seen)} Vault requests:\n{_listing(seen)}"
    assert [s for s in seen if s.method == "GET"] == [], f"the remembered record needs no read:\n{_listing(seen)}"
    print(f"scheduled rotation: {len(seen)} Vault, {len(aws.requests()) - aws_before} AWS requests", file=sys.stderr)


def test_a_record_changed_behind_the_daemons_back_is_read_again_not_overwritten(daemon_world, bao_client) -> None:  # type: ignore[no-untyped-def]
    """The remembered record is only a guess: another writer's version makes the first write lose its check-and-set, and the record is read again."""
    daemon, clock, vault, _ = daemon_world
    assert daemon.run_pass().completed == 1
    (name,) = daemon.views
    path = daemon.engine.state_path(name)
    current = bao_client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]
    bao_client.secrets.kv.v2.create_or_update_secret(path=path, mount_point="secret", secret={**current["data"], "rotations": 7},
                                                     cas=current["metadata"]["version"])
    clock.advance(timedelta(days=31))
    assert daemon.run_pass().completed == 1
    after = bao_client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    assert after["rotations"] == 8, "the other writer's change is kept: the rotation started from the record read again"
    assert os.environ["AWS_ENDPOINT_URL"]  # the provider went through the proxy


def test_vault_down_makes_the_daemon_degraded_and_backs_off_then_it_recovers(daemon_world) -> None:  # type: ignore[no-untyped-def]
    """Vault answering 503 (sealed, or every node down behind the balancer): the daemon says it is degraded
    (contract §6.7: operators are paged) and backs off per credential instead of retrying every tick, so a
    recovering Vault is not met by every credential at once; once Vault answers, the rotation goes on."""
    daemon, clock, vault, _ = daemon_world
    assert daemon.run_pass().completed == 1
    assert not daemon.is_degraded
    clock.advance(timedelta(days=31))
    vault.down = True
    before, passes, tick = len(vault.requests()), 0, timedelta(seconds=daemon.app.settings.tick_seconds)
    started = clock.now()
    while clock.now() < started + timedelta(minutes=10):
        passes += 1
        assert daemon.run_pass().completed == 0
        assert daemon.is_degraded, "Vault unreachable: the daemon must report itself degraded"
        clock.advance(tick)
    seen = vault.requests()[before:]
    reads = [s for s in seen if s.method == "GET"]
    # One read a try (a sealed Vault's 503 is not retried inside it). Every tick would be one try a tick; doubling
    # from one tick to 5 minutes, each wait drawn from its second half, leaves at most 8 tries in 10 minutes.
    assert passes >= 50 and len(reads) <= 8, f"{len(reads)} Vault reads in {passes} ticks while Vault was down"
    vault.down = False
    completed = 0
    for _ in range(40):  # at most the 5-minute cap, in ticks
        clock.advance(tick)
        completed += daemon.run_pass().completed
        if completed:
            break
    assert completed == 1, "once Vault answers, the due rotation runs"
    assert not daemon.is_degraded


# The AWS calls of one `rotate NAME --revoke-now` after the first key, and the contract clause each one serves
# (docs/PERFORMANCE.md lists them with the bench's "contract minimum" loop).
REVOKE_NOW_AWS_CALLS = [
    "ListAccessKeys",     # the keys before this rotation: an unmarked key made since is its own (crash between create and tag, §6.4)
    "TagUser",            # rotator-issuing:NAME: a key the create makes and no mark names yet is this rotation's, record lost or not (§6.4)
    "CreateAccessKey",    # the new key (LimitExceeded alone would make it list the keys in the way)
    "TagUser",            # its mark, and the issuing tag cleared: a crash or a lost response leaves a key the sweep can find (§6.4, §6.8)
    "GetCallerIdentity",  # verified as itself before it goes live (§6.2)
    "ListAccessKeys",     # after the promotion: no key of this credential the record forgot (F50); all known, no tags read
    "DeleteAccessKey",    # --revoke-now: the old key goes at once; no deactivation first, which a zero delay makes pointless
    "UntagUser",          # its mark goes with it
    "GetCallerIdentity",  # revoked means the provider rejects it: STS, with the old key itself (§6.3)
]


def test_rotate_revoke_now_makes_only_the_aws_calls_the_contract_needs(openbao, moto, iam_user, config_dir: Path, unique: str) -> None:  # type: ignore[no-untyped-def]
    """`rotate NAME --revoke-now` of an AWS key: exactly REVOKE_NOW_AWS_CALLS, in order (issue 15)."""
    write_credential(config_dir, iam_user, params={"user_name": iam_user, "delete_after_deactivation": "0s"}, grace="1h")
    with CountingProxy(openbao.addr) as vault, CountingProxy(moto.endpoint) as aws:
        env = {**moto.env(), "AWS_ENDPOINT_URL": aws.url, "VAULT_ADDR": vault.url, "VAULT_TOKEN": openbao.token,
               "ROTATOR_STATE_PREFIX": f"rotator-test/{unique}", "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_LOG_FORMAT": "json"}
        assert run_rotator(["rotate", iam_user], env).returncode == 0  # the first key: not what is counted
        before = len(aws.requests())
        result = run_rotator(["rotate", iam_user, "--revoke-now"], env)
        assert result.returncode == 0, result.stderr[-2000:]
        calls = [s.action for s in aws.requests()[before:]]
    assert '"credential.revoked"' in result.stdout and '"credential.deactivated"' not in result.stdout
    assert calls == REVOKE_NOW_AWS_CALLS
