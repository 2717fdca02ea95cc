"""End to end through the real CLI, against OpenBao and the fake GitHub
served over HTTP: installation tokens and deploy keys are minted, verified,
made live, kept for grace and then revoked where GitHub rejects them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from helpers import names
from provider_worlds import (  # noqa: F401 - fixtures
    DEPLOY_KEY,
    GRACE,
    TOKEN,
    DeployKeyWorld,
    TokenWorld,
    fake_github,
    github_clock,
    make_world,
    rotate_ok,
    ssh_fingerprint,
    ssh_public_key,
)

from rotator.core.clock import parse_rfc3339


def test_installation_token_works_and_the_old_one_is_rejected_after_grace(make_world) -> None:  # type: ignore[no-untyped-def]
    """The token in Vault lists repositories (200); the superseded one gets 401 after grace, and at once with --revoke-now."""
    w: TokenWorld = make_world(TOKEN)
    events = rotate_ok(w)
    first, meta = w.live()
    assert first is not None and set(first) == {"token", "expires_at"}
    assert first["token"].startswith("ghs_") and w.status(first) == 200
    custom = meta["custom_metadata"]
    assert custom["rotator-expires-at"] == first["expires_at"], "metadata and data name the same expiry"
    expires = parse_rfc3339(first["expires_at"])
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert custom["rotator-key-id"] == w.key_id(first) == w.state()["current"]["key_id"]
    issued = [e["key_id"] for e in events if e["event"] == "credential.issued"]
    assert issued == [w.key_id(first)] and issued[0].startswith("sha256:") and len(issued[0]) == 7 + 16

    rotate_ok(w)
    second, meta = w.live()
    assert meta["current_version"] == 2, "two rotations, two live versions"
    assert w.status(second) == 200 and w.status(first) == 200, "the old token keeps working during grace"
    time.sleep(GRACE)
    code, events = w.cli("run", "--once")
    assert code == 0 and [e["key_id"] for e in events if e["event"] == "credential.revoked"] == [w.key_id(first)]
    assert w.status(first) == 401 and w.status(second) == 200
    assert w.rotator_keys() == {w.key_id(second)}

    events = rotate_ok(w, "--revoke-now")
    third, meta = w.live()
    assert meta["current_version"] == 3
    assert [e["key_id"] for e in events if e["event"] == "credential.revoked"] == [w.key_id(second)]
    assert w.status(second) == 401 and w.status(third) == 200
    assert w.rotator_keys() == {w.key_id(third)}


def test_deploy_key_is_valid_openssh_and_the_old_key_is_deleted(make_world) -> None:  # type: ignore[no-untyped-def]
    """ssh-keygen derives the registered public key from the private key in Vault; old keys go after grace or --revoke-now."""
    w: DeployKeyWorld = make_world(DEPLOY_KEY)
    rotate_ok(w)
    first, meta = w.live()
    assert first is not None and set(first) == {"private_key", "public_key", "key_id", "fingerprint"}
    assert first["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    derived = ssh_public_key(first["private_key"])
    registered = w.registered()[first["key_id"]]
    assert derived.split()[:2] == registered["key"].split()[:2] == first["public_key"].split()[:2]
    assert derived.startswith("ssh-ed25519 ") and registered["read_only"] is True
    assert registered["title"].startswith(f"rotator:{w.name}:")
    assert first["fingerprint"] == ssh_fingerprint(first["public_key"])
    assert meta["custom_metadata"]["rotator-key-id"] == first["key_id"] == w.state()["current"]["key_id"]

    rotate_ok(w)
    second, meta = w.live()
    assert meta["current_version"] == 2
    assert w.rotator_keys() == {first["key_id"], second["key_id"]}, "the old key stays during grace"
    time.sleep(GRACE)
    code, events = w.cli("run", "--once")
    assert code == 0 and "credential.revoked" in names(events)
    assert w.rotator_keys() == {second["key_id"]} and w.works(second)
    assert w.is_foreign_intact(), "a key added by hand is never touched"

    rotate_ok(w, "--revoke-now")
    third, meta = w.live()
    assert meta["current_version"] == 3
    assert w.rotator_keys() == {third["key_id"]} and w.works(third)
    assert w.management_tokens() == 0, "each process revokes the installation token it minted for itself on exit"


def test_a_rate_limited_burst_is_waited_out(make_world, fake_github) -> None:  # type: ignore[no-untyped-def]
    """429s with retry-after: 1 on the next requests delay the rotation; it still completes."""
    w: TokenWorld = make_world(TOKEN)
    fake_github.inject(None, 429, count=3, headers={"retry-after": "1"})
    before = len(fake_github.requests)
    started = time.monotonic()
    try:
        events = rotate_ok(w)
    finally:
        fake_github.clear_faults()
    assert time.monotonic() - started >= 2.5, "each retry-after must be waited out"
    mints = [r for r in fake_github.requests[before:] if r.path.endswith("/access_tokens")]
    assert len(mints) >= 4, "the mint was retried past the burst"
    assert "rotation.failed" not in names(events)
    data, _ = w.live()
    assert w.works(data)
