"""The rotation state record: one per credential, in Vault, at
`ROTATOR_STATE_MOUNT/ROTATOR_STATE_PREFIX/NAME` (schema in docs/STATE.md).

The record is a small frozen value. It is the single source of truth for a
credential's progress: the state machine (`rotator.core.machine`) turns a record
and an outcome into the next record, and the engine writes it back with
check-and-set before and after every side effect, so any replica can resume
any rotation.

The record that readers see (`status`, `plan`, `report`) holds no secret
value. What a crash recovery needs that is secret (the new credential's live
fields, `pending.data`, and the secret parts of revocation handles) lives in
the stash, one entry per issued credential, named by each key's `stash`
field; `rotator.vault.records` splits a record on write and fills it back in on
demand. In memory, during a reconcile, a record may hold those values
inline; schema version 1 records held them in Vault too, and still load.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rotator.core.errors import PermanentError

SCHEMA_VERSION = 2  # 2: secrets moved to the stash (1 still loads, and is migrated on write)

Phase = Literal["intent", "issuing", "issued", "verified", "promoted", "rolling_back"]
Stage = Literal["active", "deactivated"]
Reason = Literal["schedule", "manual", "recovery"]


class StateRecordError(PermanentError, ValueError):
    """A state record that does not parse (edited by hand, or written by a
    rotator that is not compatible)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def __repr__(self) -> str:  # handles and data may hold secrets
        return f"{type(self).__name__}(...)"

    __str__ = __repr__


class KeyRecord(_Frozen):
    """A credential the rotator made."""

    key_id: str
    rotation_id: str
    handle: dict[str, str] = Field(default_factory=dict)  # in Vault: the parts that are no secret
    issued_at: datetime
    expires_at: datetime | None = None
    # Where this key's secrets are stashed (a KV v2 path under the state
    # mount), and which handle fields live only there.
    stash: str | None = None
    stashed_fields: list[str] = Field(default_factory=list)
    # SHA-256 (hex) of each secret value of the credential, set when it is
    # issued, so a leaked value can be matched (`rotator leaked`) without
    # keeping or reading the value itself. Never the values.
    value_sha256: list[str] = Field(default_factory=list)

    def lacks_secrets(self) -> bool:
        """Whether the handle's secret parts are only in the stash (not loaded)."""
        return any(f not in self.handle for f in self.stashed_fields)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def with_value_hashes(record: StateRecord, values: list[str]) -> StateRecord:
    """The record with its pending credential's value hashes set (leak response)."""
    pending = record.pending
    if pending is None or pending.credential is None or not values:
        return record
    hashes = sorted({sha256_hex(v) for v in values})
    credential = pending.credential.model_copy(update={"value_sha256": hashes})
    return record.model_copy(update={"pending": pending.model_copy(update={"credential": credential})})


class Lease(_Frozen):
    """Who may act on the credential, until when (see `rotator.core.holder`)."""

    holder: str
    expires_at: datetime
    host: str | None = None
    boot_id: str | None = None
    pid_namespace: str | None = None
    pid: int | None = None
    start_ticks: str | None = None

    def is_held_by_other(self, holder: str, now: datetime) -> bool:
        from rotator.core.holder import is_known_dead

        if self.holder == holder or self.expires_at <= now:
            return False
        return not is_known_dead(
            host=self.host, boot_id=self.boot_id, pid_namespace=self.pid_namespace, pid=self.pid, start_ticks=self.start_ticks
        )


class Pending(_Frozen):
    """An unfinished rotation."""

    rotation_id: str
    reason: Reason
    started_at: datetime
    phase: Phase = "intent"
    revoke_now: bool = False
    # Keys at the provider when the rotation began: after a crash in
    # `issuing`, an unmarked key not in this list, made since `started_at`,
    # is an orphan of this rotation (providers whose mark is not atomic).
    preexisting_key_ids: list[str] = Field(default_factory=list)
    credential: KeyRecord | None = None
    data: dict[str, str] | None = None  # the live fields: in the stash, inline only in memory (or schema 1)
    verify_attempts: int = 0
    failed_step: str | None = None  # set while rolling back: the step that failed
    failure_permanent: bool = False  # ...and whether retrying would help
    # ...and the file's fingerprint then: the block the rollback leaves holds only while the file is as it was
    # when the rotation failed, not one edited since (sim F222: a `vault.path` moved off the path refused).
    failed_fingerprint: str | None = None
    # `promoted`: the live path holds the new credential at this version
    # since `live_at`; its metadata is still to be written.
    live_version: int | None = None
    live_at: datetime | None = None
    live_clock: str | None = None  # the boot whose clock read `live_at` (see Retiring.clock)
    # MOUNT/PATH this rotation writes (its file's `vault.path`), so that a
    # removed file's unfinished rotation is looked for where it went live.
    target: str | None = None
    # The paths `target` named before `vault.path` moved on (taking the lease points `target` at the file's
    # path), newest first: the rotation may have gone live at one of them before the record said so (sim F132, F133).
    earlier_targets: list[str] = Field(default_factory=list)

    def paths_written(self) -> list[str]:
        """Every path this rotation may have made live (`target`, `earlier_targets`)."""
        return sorted({p for p in (self.target, *self.earlier_targets) if p})


class Retiring(_Frozen):
    """A superseded credential on its way out: grace, (deactivate,) revoke."""

    key: KeyRecord
    superseded_by: str  # the rotation id that replaced it
    revoke_after: datetime  # end of grace
    # The boot (holder.Identity.boot_id) whose clock measured `revoke_after`:
    # read by a process on another clock, the grace ends the clock skew
    # allowance later (rotator.core.machine.grace_ends). None: unknown.
    clock: str | None = None
    stage: Stage = "active"
    immediate: bool = False  # `--revoke-now`: no grace, no deactivation delay
    delete_after: datetime | None = None  # set on deactivation
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    superseded_at: datetime | None = None  # when its successor went live
    # A key the record forgot, retired once shown live nowhere: the paths it can have gone live at (its
    # rotation's, rotator.engine.forgotten), read again before it is revoked (sim F152).
    paths: list[str] = Field(default_factory=list)
    # Usage-aware revocation (contract §6.10): set while the provider reports
    # the key used after its successor went live; no secret values.
    held_since: datetime | None = None  # the first check that found it in use
    last_used_at: datetime | None = None  # as the provider reported at the last check
    recheck_at: datetime | None = None  # the next usage check
    checks: int = 0  # usage checks that held it


class Pause(_Frozen):
    """`rotator pause NAME`: no scheduled rotation until resumed or `until`."""

    reason: str
    by: str
    at: datetime
    until: datetime | None = None

    def is_active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


class StateRecord(_Frozen):
    """Everything the rotator knows about one credential."""

    schema_version: int = SCHEMA_VERSION
    credential: str
    provider: str
    current: KeyRecord | None = None  # the credential the live path holds
    live_version: int | None = None  # the live path's version we last wrote (or adopted)
    live_path: str | None = None  # MOUNT/PATH that version is of (None: records from before; the file's path)
    last_rotated_at: datetime | None = None
    jitter_seconds: float = 0.0  # drawn once per completed rotation
    rotations: int = 0
    pending: Pending | None = None
    retiring: list[Retiring] = Field(default_factory=list)
    attempts: int = 0  # consecutive failed attempts of the current rotation
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    last_error_step: str | None = None
    last_error_at: datetime | None = None
    # A permanent failure stops retries until the credential file changes
    # (its fingerprint differs) or someone runs `rotator rotate NAME`.
    blocked_fingerprint: str | None = None
    lease: Lease | None = None
    paused: Pause | None = None
    moved_to: str | None = None  # the file was renamed: this name's keys now live in that record
    # The file's provider params at the last reconcile (refs, never secret
    # values), so a removed file's superseded keys can still be retired.
    params: dict[str, Any] | None = None
    source: str | None = None  # the credential file it was last reconciled from
    grace_seconds: float | None = None  # the file's grace then: a removed file's promotion still gets it
    # Random, new at every write (`to_vault`): only a copy of a version (a restore) equals it, so the
    # versions a restore undid are told from a rotation that wrote the same content again (sim F186).
    write_id: str | None = None

    @classmethod
    def new(cls, credential: str, provider: str) -> StateRecord:
        return cls(credential=credential, provider=provider)

    def to_vault(self) -> dict[str, Any]:
        """The record as written to Vault, with a new `write_id`."""
        return self.model_copy(update={"write_id": secrets.token_hex(8)}).model_dump(mode="json")

    @classmethod
    def from_vault(cls, data: dict[str, Any], *, where: str = "a state record") -> StateRecord:
        """Parse a record; a malformed one is a `StateRecordError` naming the
        record and the bad fields, never quoting a value (it may be a secret)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['type']}" for err in exc.errors(include_url=False)[:5]
            )
            raise StateRecordError(f"{where} is malformed ({fields}); fix or delete it in Vault") from None

    def managed_key_ids(self) -> set[str]:
        ids = {r.key.key_id for r in self.retiring}
        if self.current is not None:
            ids.add(self.current.key_id)
        if self.pending is not None and self.pending.credential is not None:
            ids.add(self.pending.credential.key_id)
        return ids

    def summary(self) -> dict[str, Any]:
        """A view with no secret values, for status, reports and logs."""
        return {
            "credential": self.credential,
            "provider": self.provider,
            "key_id": self.current.key_id if self.current else None,
            "phase": self.pending.phase if self.pending else "idle",
            "rotation_id": self.pending.rotation_id if self.pending else None,
            "last_rotated_at": self.last_rotated_at,
            "rotations": self.rotations,
            "expires_at": self.current.expires_at if self.current else None,
            "pending_revocations": [
                {"key_id": r.key.key_id, "stage": r.stage, "revoke_after": r.revoke_after, "delete_after": r.delete_after,
                 "held_since": r.held_since, "last_used_at": r.last_used_at, "recheck_at": r.recheck_at}
                for r in self.retiring
            ],
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "last_error_step": self.last_error_step,
            "blocked": self.blocked_fingerprint is not None,
            "lease_holder": self.lease.holder if self.lease else None,
            "paused": self.paused.model_dump(mode="python") if self.paused else None,
        }
