"""Credentials whose file was removed (contract §6.9): built back from
their state record, so their superseded keys are still retired on schedule.

Invariants:
- a removed file's live key is left alone (the machine never starts a
  rotation without a file, and `current` is never retired);
- its superseded keys are deactivated and revoked on their schedule, with
  the provider params its file had at its last reconcile (kept in the
  record: refs only, never a secret value);
- a rotation it left unfinished is undone (the new key revoked) unless it
  already reached the live path, where it is finished;
- a record moved to a renamed file's record, or with nothing left to do,
  is not reconciled at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from rotator.config.spec import CredentialSpec, LoadedCredential
from rotator.core import machine
from rotator.core.provider import ProviderFactory, ProviderLoadError
from rotator.core.state import StateRecord

# A removed file's idle record is compared with its live paths again this often, a new version of it or
# not: a path written over by hand since the last look may leave a key it forgot live nowhere (sim F204).
LOOK_AGAIN = timedelta(hours=6)


def looked_lately(seen: tuple[int, datetime] | None, version: int, now: datetime) -> bool:
    """`seen` (the record version last compared with its live paths, and when) is this version, less than
    LOOK_AGAIN ago: the daemon's scan and the simulation's replicas skip such a record."""
    return seen is not None and seen[0] == version and now < seen[1] + LOOK_AGAIN


def blocked_since(seen: datetime | None, record: StateRecord | None, policy: machine.Policy, now: datetime, *,
                  looked: bool) -> datetime | None:
    """What a daemon counts a blocked record's next look from (`Engine.reconcile(look_behind=True)`, every
    LOOK_AGAIN): when it first saw the record blocked, then each look; None while it is not blocked. Blocked,
    a record costs no request until its file changes or someone runs `rotator rotate NAME`, so a record
    restored to its block would never learn of the rotation a `rotate` made past it (sim F223)."""
    if record is None or not machine.is_blocked(record, policy):
        return None
    return now if looked or seen is None else seen


def look_due(since: datetime | None, now: datetime) -> bool:
    """A blocked record's look is due (`blocked_since`)."""
    return since is not None and now >= since + LOOK_AGAIN


@dataclass
class FilelessCredential(LoadedCredential):
    """A credential known only from its state record."""


def has_work(record: StateRecord) -> bool:
    return record.moved_to is None and (record.pending is not None or bool(record.retiring))


def fileless_credential(record: StateRecord, providers: Mapping[str, ProviderFactory]) -> FilelessCredential | None:
    """The credential to retire `record`'s keys with, or None when the
    record lacks what that takes (written by a rotator before this one)."""
    if record.params is None or record.live_path is None or "/" not in record.live_path:
        return None
    try:
        provider_cls = providers[record.provider]
    except (KeyError, ProviderLoadError):
        return None
    # An unfinished rotation is finished (or undone) where it was writing.
    target = record.pending.target if record.pending is not None and record.pending.target else record.live_path
    if "/" not in target:
        return None
    mount, path = target.split("/", 1)
    grace = timedelta(seconds=record.grace_seconds) if record.grace_seconds else "1s"  # "1s": records from before it was kept
    try:
        params = provider_cls.params_model.model_validate(record.params)
        spec = CredentialSpec.model_validate({
            "name": record.credential, "provider": record.provider, "owner": "(no file)",
            "description": "its credential file was removed", "schedule": {"every": "3650d"}, "grace": grace,
            "vault": {"mount": mount, "path": path}, "params": record.params,
        })
    except ValidationError:
        return None
    return FilelessCredential(spec, provider_cls, params)
