"""Nothing secret where readers can read (issue 11, item 4): the state record
holds no secret value; the stash holds what finishing and revoking need,
written once per issued credential and destroyed after its revocation;
records of schema version 1 (secrets inline) still load and are migrated.
Real CLI, real OpenBao, the GitHub and Stripe sandboxes."""

from __future__ import annotations

import json
from typing import Any

import hvac
import pytest

from provider_worlds import (  # noqa: F401 - fixtures
    STRIPE_KEY,
    TOKEN,
    fake_github,
    fake_stripe,
    github_clock,
    make_world,
    rotate_ok,
)
from helpers import run_rotator
from rotator.testing.leaks import find_leaks


def _kv(w: Any) -> Any:
    return w.bao.secrets.kv.v2


def raw_record(w: Any) -> tuple[dict[str, Any], int]:
    response = _kv(w).read_secret_version(path=f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}", mount_point="secret",
                                          raise_on_deleted_version=True)["data"]
    return response["data"], int(response["metadata"]["version"])


def stash_entry(w: Any, path: str) -> tuple[dict[str, Any], int] | None:
    try:
        response = _kv(w).read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)["data"]
    except hvac.exceptions.InvalidPath:
        return None
    return response["data"], int(response["metadata"]["version"])


@pytest.mark.parametrize("kind", [TOKEN, STRIPE_KEY])
def test_the_record_holds_no_secret_and_the_stash_is_written_once_and_destroyed_after_revocation(make_world, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Handles that revoke with a secret (a GitHub token, a Stripe key): only the stash has it."""
    w = make_world(kind)
    rotate_ok(w)
    first, _ = w.live()
    record, _ = raw_record(w)
    key = record["current"]
    assert record["schema_version"] == 2
    assert find_leaks(json.dumps(record), w.ledger.values) == [], "the state record must hold no secret value"
    assert key["stash"].startswith(w.env["ROTATOR_STATE_PREFIX"] + "-stash/" + w.name + "/")
    secret_field = "token" if kind == TOKEN else "api_key"
    assert key["stashed_fields"] == [secret_field] and secret_field not in key["handle"]
    entry = stash_entry(w, key["stash"])
    assert entry is not None
    data, version = entry
    assert version == 1, "an entry is written once"
    same = data["handle"][secret_field] == first[secret_field]  # compared outside the assert: pytest would print both
    assert data["key_id"] == key["key_id"] and same, "the entry holds the live credential's secret"

    rotate_ok(w, "--revoke-now")  # the first credential is revoked at once: its entry goes
    second, _ = w.live()
    assert w.is_rejected(first) and w.works(second)
    record, _ = raw_record(w)
    assert find_leaks(json.dumps(record), w.ledger.values) == []
    assert stash_entry(w, key["stash"]) is None, "a revoked credential's stash entry is destroyed"
    with pytest.raises(hvac.exceptions.InvalidPath):
        _kv(w).read_secret_metadata(path=key["stash"], mount_point="secret")
    assert stash_entry(w, record["current"]["stash"]) is not None


def _as_schema_1(w: Any) -> str:
    """Rewrite the record as a version-1 rotator left it: secrets inline, no stash."""
    record, version = raw_record(w)
    live, _ = w.live()
    path = record["current"]["stash"]
    entry, _ = stash_entry(w, path) or ({}, 0)
    current = dict(record["current"], handle=entry["handle"])
    for field in ("stash", "stashed_fields"):
        current.pop(field)
    old = {**record, "schema_version": 1, "current": current}
    _kv(w).create_or_update_secret(path=f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}", mount_point="secret", secret=old, cas=version)
    _kv(w).delete_metadata_and_all_versions(path=path, mount_point="secret")
    assert find_leaks(json.dumps(old), [live["token"]]), "the test's version-1 record holds the token inline"
    return path


def test_a_schema_1_record_with_secrets_inline_loads_and_is_migrated_on_the_next_pass(make_world) -> None:  # type: ignore[no-untyped-def]
    """Upgrade: the first pass moves the secrets to the stash; the moved handle still revokes."""
    w = make_world(TOKEN)
    rotate_ok(w)
    first, _ = w.live()
    path = _as_schema_1(w)
    status = run_rotator(["status", "--json"], w.env)
    w.ledger.capture("status", status.stdout + status.stderr)
    assert status.returncode == 0 and json.loads(status.stdout)[0]["phase"] == "idle", "a version-1 record loads"
    code, events = w.cli("run", "--once")
    assert code == 0 and not [e for e in events if e["event"].startswith("rotation.")], "nothing was due: only the migration"
    record, _ = raw_record(w)
    assert record["schema_version"] == 2 and record["current"]["stash"] == path
    assert find_leaks(json.dumps(record), w.ledger.values) == [], "migrated: no secret left in the record"
    entry = stash_entry(w, path)
    same = entry is not None and entry[0]["handle"]["token"] == first["token"]
    assert same, "the stash entry holds the migrated token"
    rotate_ok(w, "--revoke-now")
    assert w.is_rejected(first), "the handle moved to the stash still revokes the old token"


def test_a_live_path_inside_the_stash_is_refused_by_validate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A credential file cannot make the rotator write its live data into the stash."""
    from helpers import write_credential

    write_credential(tmp_path, "intruder", params={"user_name": "intruder"}, path="rotator/state-stash/victim/r1")
    result = run_rotator(["validate", "--config-dir", str(tmp_path)], {})
    assert result.returncode == 2
    assert "intruder.yaml: vault.path: lies inside the rotator's stash (secret/rotator/state-stash)" in result.stdout
