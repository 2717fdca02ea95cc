"""Leak response (contract §7) through the real CLI against OpenBao and
moto: `echo -n "$LEAKED" | rotator leaked` finds the credential by SHA-256
(the state keeps hashes, never values), logs credential.leaked, rotates
with revoke-now so the leaked key is rejected at once; no match is exit 3
and changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from aws_world import AwsWorld
from helpers import names, parse_events


def leaked(w: AwsWorld, value: str, *args: str) -> tuple[int, list[dict], str]:
    """`echo -n "$LEAKED" | rotator leaked` in a shell: the value goes by the environment, never on a command line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    result = subprocess.run(["bash", "-c", 'echo -n "$LEAKED" | "$PY" -m rotator leaked "$@"', "leaked", *args],
                            env={**base, **w.env, "LEAKED": value, "PY": sys.executable}, capture_output=True, text=True, timeout=180)
    w.ledger.capture("stdout of rotator leaked", result.stdout)
    w.ledger.capture("stderr of rotator leaked", result.stderr)
    return result.returncode, parse_events(result.stdout), result.stderr


def two_keys(w: AwsWorld) -> tuple[dict[str, str], dict[str, str]]:
    """Rotate twice: (the key in grace, the live key)."""
    assert w.cli("rotate", w.name)[0] == 0
    first, _ = w.live()
    assert w.cli("rotate", w.name)[0] == 0
    second, _ = w.live()
    assert first is not None and second is not None
    return first, second


def test_a_leaked_live_value_rotates_its_credential_and_the_old_key_dies_at_once(aws_world: AwsWorld) -> None:
    """The live secret, piped in: credential.leaked (source cli) first, then a revoke-now rotation;
    the leaked key and the one in grace are rejected by STS at once, the new one works."""
    w = aws_world
    in_grace, live = two_keys(w)
    state = w.state()
    assert state is not None
    assert state["current"]["value_sha256"] == [hashlib.sha256(live["secret_access_key"].encode()).hexdigest()]
    assert live["secret_access_key"] not in json.dumps(state), "the state record holds a secret value"

    code, events, err = leaked(w, live["secret_access_key"])
    assert code == 0, err[-2000:]
    leak_events = [e for e in events if e["event"] == "credential.leaked"]
    assert [(e["key_id"], e["source"], e["credential"]) for e in leak_events] == [(live["access_key_id"], "cli", w.name)]
    seq = names(events)
    assert seq.index("credential.leaked") < seq.index("rotation.started") < seq.index("rotation.completed")
    revoked = {e["key_id"] for e in events if e["event"] == "credential.revoked"}
    assert live["access_key_id"] in revoked and in_grace["access_key_id"] in revoked
    assert not w.works(live), "the leaked key still authenticates"
    assert not w.works(in_grace)
    new, _ = w.live()
    assert new is not None and new["access_key_id"] != live["access_key_id"] and w.works(new)
    assert w.user_keys() == {new["access_key_id"]}


def test_a_leaked_in_grace_value_is_matched_and_revoked(aws_world: AwsWorld) -> None:
    """A value from the credential in its grace period matches too (state 'in grace'), and is revoked at once."""
    w = aws_world
    in_grace, _ = two_keys(w)
    code, events, err = leaked(w, in_grace["secret_access_key"] + "\n")  # a trailing newline (a file, or echo without -n)
    assert code == 0, err[-2000:]
    leak = next(e for e in events if e["event"] == "credential.leaked")
    assert leak["key_id"] == in_grace["access_key_id"] and leak["state"] == "in grace"
    assert not w.works(in_grace)


def test_an_unknown_value_exits_3_and_changes_nothing(aws_world: AwsWorld) -> None:
    """No match: exit 3, no event of a rotation, the record and the live path as they were."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    before, meta = w.live()
    state = w.state()
    code, events, err = leaked(w, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNOTOURSNOTOURS")
    assert code == 3, err[-2000:]
    assert not {"credential.leaked", "rotation.started"} & set(names(events))
    after, meta_after = w.live()
    assert after == before and meta_after["current_version"] == meta["current_version"]
    assert w.state() == state
    assert w.works(before)


def test_a_record_without_hashes_is_matched_from_the_stash(aws_world: AwsWorld) -> None:
    """A key issued before hashes were kept (value_sha256 removed by hand) is still matched, through its stash entry."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    live, _ = w.live()
    assert live is not None
    prefix = w.env["ROTATOR_STATE_PREFIX"]
    state = w.state()
    assert state is not None
    state["current"].pop("value_sha256")
    w.bao.secrets.kv.v2.create_or_update_secret(path=f"{prefix}/{w.name}", mount_point="secret", secret=state)
    code, events, err = leaked(w, live["secret_access_key"])
    assert code == 0, err[-2000:]
    assert any(e["event"] == "credential.leaked" and e["key_id"] == live["access_key_id"] for e in events)
    assert not w.works(live)


def test_sha256_option_and_usage_errors(aws_world: AwsWorld) -> None:
    """--sha256 HEX matches like the value; an empty stdin or a malformed hash is exit 2."""
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    live, _ = w.live()
    assert live is not None
    assert leaked(w, "")[0] == 2
    assert leaked(w, "", "--sha256", "not-hex")[0] == 2
    code, events, err = leaked(w, "", "--sha256", hashlib.sha256(live["secret_access_key"].encode()).hexdigest())
    assert code == 0, err[-2000:]
    assert not w.works(live)


def test_an_unreadable_record_neither_hides_a_match_nor_gives_a_false_no_match(aws_world: AwsWorld) -> None:
    """Another credential's malformed state record: the live value still matches (exit 0);
    an unknown value is exit 1 (the lookup was incomplete), not 3."""
    from pathlib import Path

    from helpers import write_credential

    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    live, _ = w.live()
    assert live is not None
    write_credential(Path(w.env["ROTATOR_CONFIG_DIR"]), "zz-broken", params={"user_name": w.user}, path="apps/zz-broken")
    w.bao.secrets.kv.v2.create_or_update_secret(path=f"{w.env['ROTATOR_STATE_PREFIX']}/zz-broken", mount_point="secret",
                                                secret={"credential": ["not", "a", "name"]})
    code, events, err = leaked(w, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNOTOURSNOTOURS")
    assert code == 1, err[-2000:]
    assert any(e["event"] == "leak.lookup_failed" and e.get("credential") == "zz-broken" for e in events)
    code, events, err = leaked(w, live["secret_access_key"])
    assert code == 0, err[-2000:]
    assert not w.works(live)
