"""An AWS key made and never tagged, with its state record lost too (issue 10, sim F165).

A crash between `CreateAccessKey` and the `TagUser` that marks the key leaves a key no mark names; the
record's `issuing` rotation sweeps it, but a record lost (or restored to an older version) before the next
reconcile said nothing of it any more. The `rotator-issuing:NAME` user tag set right before the create
(`ROTATION_ID AT KEY_ID...`, cleared by the marking call) tells that key from one a person made. Real moto,
real OpenBao, a real process killed between the two calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aws_world import AwsWorld
from rotator.core.crashpoints import crash_env
from rotator.core.provider import IssuingNote, KeyMark, ProviderKey
from rotator.engine.baseline import issued_unmarked
from rotator_providers.aws_tags import ISSUING_PREFIX, parse_issuing


def _tags(w: AwsWorld) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in w.iam.list_user_tags(UserName=w.user)["Tags"]}


def test_a_key_made_untagged_before_the_record_was_lost_is_revoked(aws_world: AwsWorld) -> None:
    w = aws_world
    assert w.cli("rotate", w.name)[0] == 0
    live, _ = w.live()
    assert live is not None
    assert _tags(w)[ISSUING_PREFIX + w.name] == "", "the marking call clears the issuing tag"
    code, _ = w.cli("rotate", w.name, extra_env=crash_env("aws-after-create"))
    assert code == -9
    (orphan,) = w.user_keys() - {live["access_key_id"]}
    tags = _tags(w)
    assert orphan not in tags, "killed before the mark"
    rotation, at, *before = tags[ISSUING_PREFIX + w.name].split()
    assert rotation == w.state()["pending"]["rotation_id"] and before == [live["access_key_id"]]
    assert abs(datetime.fromisoformat(at.replace("Z", "+00:00")) - datetime.now(UTC)) < timedelta(minutes=2)

    # The state record lost: every version deleted by hand.
    w.bao.secrets.kv.v2.delete_metadata_and_all_versions(path=f"{w.env['ROTATOR_STATE_PREFIX']}/{w.name}", mount_point="secret")
    code, events = w.cli("rotate", w.name)
    assert code == 0, events
    revoked = [e.get("key_id") for e in events if e.get("event") == "credential.revoked"]
    assert orphan in revoked, "the key the issuing tag names goes at once: it was never live"
    assert orphan not in w.user_keys()
    data, _ = w.live()
    assert data is not None and w.works(data) and data["access_key_id"] != live["access_key_id"]
    assert w.user_keys() == {live["access_key_id"], data["access_key_id"]}, "the key that was live keeps its grace"
    assert _tags(w)[ISSUING_PREFIX + w.name] == ""


AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOTE = IssuingNote("app", "20261201T115900Z-0a1b2c3d", AT, frozenset({"AKIAOLD"}))


def _key(key_id: str, created: datetime, *notes: IssuingNote, mark: KeyMark | None = None) -> ProviderKey:
    return ProviderKey(key_id=key_id, handle={}, created_at=created, mark=mark, issuing=notes)


def test_only_a_key_made_right_after_the_issuing_tag_is_that_rotations() -> None:
    """Within the clock skew allowance (and one call's time) of the tag, and not among the keys it listed."""
    skew = timedelta(seconds=120)
    assert issued_unmarked(_key("AKIANEW", AT + timedelta(seconds=1), NOTE), skew) == KeyMark("app", NOTE.rotation_id)
    assert issued_unmarked(_key("AKIANEW", AT - timedelta(seconds=100), NOTE), skew) is not None  # AWS's clock behind ours
    assert issued_unmarked(_key("AKIAOLD", AT + timedelta(seconds=1), NOTE), skew) is None  # listed before the create
    assert issued_unmarked(_key("AKIANEW", AT + timedelta(minutes=10), NOTE), skew) is None  # a person's, later
    assert issued_unmarked(_key("AKIANEW", AT - timedelta(minutes=10), NOTE), skew) is None  # a person's, earlier
    assert issued_unmarked(_key("AKIANEW", AT, NOTE, mark=KeyMark("app", "r")), skew) is None  # marked: its mark says
    other = IssuingNote("other", "20261201T115900Z-ffffffff", AT, frozenset())
    assert issued_unmarked(_key("AKIANEW", AT, NOTE, other), skew) is None  # two credentials' tags fit: never a guess


def test_issuing_tags_parse_back_and_malformed_ones_say_nothing() -> None:
    notes = parse_issuing({ISSUING_PREFIX + "app": f"{NOTE.rotation_id} 2026-12-01T12:00:00Z AKIAOLD", "AKIAOLD": "rotator:app:r",
                           ISSUING_PREFIX + "cleared": "", ISSUING_PREFIX + "bad": "r not-a-time", "Team": "x y"})
    assert notes == (NOTE,)
