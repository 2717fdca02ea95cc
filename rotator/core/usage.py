"""Usage-aware revocation (contract §6.10): is a superseded key still in use?

Pure: the engine asks the provider when the key was last used (AWS
`GetAccessKeyLastUsed`, a deploy key's `last_used`), then `decide` says
whether to retire it now, hold it, or retire it anyway because `max_wait`
has passed; `held` returns the record with the hold written down.

Rules:
- a key is in use when the provider reports a use after its successor went
  live and less than `revocation.quiet` ago;
- a held key is checked again with backoff, never sooner than it could go
  quiet (`last_used + quiet`), and never later than `max_wait_until`;
- `max_wait_until` is the end of grace plus `revocation.max_wait`: past it
  the key is retired whatever it reports (logged at error level, alerted);
- `--revoke-now` (an `immediate` entry) and `when_in_use: revoke` never
  ask; a deactivated key (AWS) is unusable already and is not asked about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from rotator.core.schedule import Revocation
from rotator.core.state import Retiring, StateRecord

RECHECK_BASE = timedelta(minutes=1)
RECHECK_CAP = timedelta(hours=1)


@dataclass(frozen=True)
class Decision:
    verdict: Literal["quiet", "held", "forced"]
    last_used: datetime | None
    max_wait_until: datetime
    retry_at: datetime | None = None  # when held


def should_check(entry: Retiring, revocation: Revocation, *, reports_use: bool) -> bool:
    """Whether to ask the provider before retiring this entry."""
    return reports_use and revocation.when_in_use == "wait" and not entry.immediate and entry.stage == "active"


def live_since(entry: Retiring, grace: timedelta) -> datetime:
    """When the key's successor went live."""
    return entry.superseded_at if entry.superseded_at is not None else entry.revoke_after - grace


def max_wait_until(entry: Retiring, revocation: Revocation) -> datetime:
    return entry.revoke_after + revocation.max_wait


def is_in_use(last_used: datetime | None, *, since: datetime, quiet: timedelta, now: datetime) -> bool:
    return last_used is not None and last_used >= since and now - last_used < quiet


def decide(entry: Retiring, last_used: datetime | None, revocation: Revocation, *, grace: timedelta, now: datetime) -> Decision:
    deadline = max_wait_until(entry, revocation)
    if not is_in_use(last_used, since=live_since(entry, grace), quiet=revocation.quiet, now=now):
        return Decision("quiet", last_used, deadline)
    if now >= deadline:
        return Decision("forced", last_used, deadline)
    assert last_used is not None
    step = min(RECHECK_BASE * (2 ** entry.checks), RECHECK_CAP, revocation.quiet)
    retry_at = min(deadline, max(last_used + revocation.quiet, now + step))
    return Decision("held", last_used, deadline, retry_at)


def held(record: StateRecord, key_id: str, decision: Decision, now: datetime) -> StateRecord:
    """The record with `key_id`'s hold written down."""
    def change(e: Retiring) -> Retiring:
        if e.key.key_id != key_id:
            return e
        return e.model_copy(update={
            "held_since": e.held_since or now, "last_used_at": decision.last_used,
            "recheck_at": decision.retry_at, "checks": e.checks + 1,
        })

    return record.model_copy(update={"retiring": [change(e) for e in record.retiring]})
