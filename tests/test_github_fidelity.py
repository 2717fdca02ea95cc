"""GitHub as GitHub documents it: free-text deploy-key titles, lost creates
that leave no second key, the stateless installation-token format, client
ids as the JWT issuer, and write requests spaced per App
(docs/providers/github.md, "What was checked")."""

from __future__ import annotations

import time

from helpers import names
from provider_worlds import (  # noqa: F401 - fixtures
    DEPLOY_KEY,
    GRACE,
    DeployKeyWorld,
    fake_github,
    github_clock,
    make_world,
    rotate_ok,
)


def test_free_text_title_prefix_rotates_end_to_end(make_world) -> None:  # type: ignore[no-untyped-def]
    """`title_prefix: "ci deploy/"` validates, titles keys `ci deploy/NAME:ROTATION`, and the old key goes after grace."""
    w: DeployKeyWorld = make_world(DEPLOY_KEY, params={"title_prefix": "ci deploy/"})
    code, events = w.cli("validate")
    assert code == 0, events
    rotate_ok(w)
    first, _ = w.live()
    assert first is not None and w.registered()[first["key_id"]]["title"].startswith(f"ci deploy/{w.name}:")
    rotate_ok(w)
    second, _ = w.live()
    assert second is not None and w.rotator_keys() == {first["key_id"], second["key_id"]}
    time.sleep(GRACE)
    code, events = w.cli("run", "--once")
    assert code == 0 and "credential.revoked" in names(events)
    assert w.rotator_keys() == {second["key_id"]} and w.works(second)
    assert w.is_foreign_intact()


def test_lost_deploy_key_create_leaves_no_second_key(make_world, fake_github) -> None:  # type: ignore[no-untyped-def]
    """GitHub adds the key but the answer is a 502: the retry deletes it (by its title) and registers one key."""
    w: DeployKeyWorld = make_world(DEPLOY_KEY)
    fake_github.inject(r"/keys$", 502, method="POST", after=True)
    try:
        events = rotate_ok(w)
    finally:
        fake_github.clear_faults()
    data, _ = w.live()
    assert data is not None
    key_id = data["key_id"]
    assert w.rotator_keys() == {key_id}, "one rotator key: the one whose answer was lost is gone"
    assert w.works(data) and "credential.issued" in names(events) and w.is_foreign_intact()
