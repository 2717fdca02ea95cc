"""`rotator adopt NAME` end to end (contract §2, §5; GETTING_STARTED's
"Already have a static key?"): the real CLI against OpenBao and moto."""

from __future__ import annotations

import time

from aws_world import AwsWorld
from helpers import names


def test_a_static_aws_key_is_adopted_then_retired_after_grace(aws_world: AwsWorld) -> None:
    """A static key at the live path blocks the first rotation; `adopt` takes
    it on; the next rotation replaces it and it is deleted after grace."""
    w = aws_world
    static = w.iam.create_access_key(UserName=w.user)["AccessKey"]
    data = {"access_key_id": static["AccessKeyId"], "secret_access_key": static["SecretAccessKey"]}
    w.ledger.add(static["SecretAccessKey"])
    w.bao.secrets.kv.v2.create_or_update_secret(path=w.live_path, secret=data, mount_point="secret")

    code, events = w.cli("run", "--once")
    assert code == 1
    failed = next(e for e in events if e["event"] == "rotation.failed")
    assert f"rotator adopt {w.name}" in failed["error"] and failed["will_retry"] is False
    assert w.live()[0] == data, "the static key was written over"
    assert w.user_keys() == {static["AccessKeyId"]}, "nothing may be minted for a path the rotator will not write"

    code, events = w.cli("adopt", w.name)
    assert code == 0, events
    adopted = next(e for e in events if e["event"] == "credential.adopted")
    assert adopted["key_id"] == static["AccessKeyId"] and adopted["vault_version"] == 1 and adopted["credential"] == w.name
    _, meta = w.live()
    assert meta["custom_metadata"]["managed-by"] == "rotator"
    assert meta["custom_metadata"]["rotator-key-id"] == static["AccessKeyId"]

    code, events = w.cli("run", "--once")
    assert code == 0 and "rotation.completed" in names(events), events
    new, _ = w.live()
    assert new["access_key_id"] != static["AccessKeyId"] and w.works(new)
    assert w.state()["retiring"][0]["key"]["key_id"] == static["AccessKeyId"]
    time.sleep(2.2)  # the fixture's grace is 2 s
    code, events = w.cli("run", "--once")
    assert code == 0
    assert w.user_keys() == {new["access_key_id"]}, "the adopted static key must be retired after grace"
    assert not w.works(data)


def test_adopt_an_unknown_name_exits_2(aws_world: AwsWorld) -> None:
    code, _ = aws_world.cli("adopt", "no-such-credential")
    assert code == 2


def test_adopt_an_empty_live_path_exits_1(aws_world: AwsWorld) -> None:
    """Nothing to accept: the first rotation writes the path without adopt."""
    code, events = aws_world.cli("adopt", aws_world.name)
    assert code == 1
    assert any(e["event"] == "adopt.failed" and "no data to adopt" in e["error"] for e in events)
