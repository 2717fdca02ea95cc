"""A run's lease and record writes: every write of the state record is check-and-set, and the lease is
renewed or taken (on positive evidence only) before any side effect.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from rotator.audit.events import redact_text
from rotator.core.errors import CasMismatchError, LeaseLostError, RotatorError
from rotator.core.state import Lease, Pending, StateRecord
from rotator.engine.results import _StaleRecordError


class Persistence:
    """A run's lease and record writes: every write of the state record is check-and-set, and the lease is
    renewed or taken (on positive evidence only) before any side effect.

    A part of _Run (rotator.engine.run): it uses the run's attributes and methods.
    """

    def _write(self, record: StateRecord) -> None:
        # rotator.vault.records: new secrets go to the stash first, then the record.
        try:
            self.record, self.version = self.engine.records.save(
                record, cas=self.version, previous=self._persisted, secret_fields=self.provider.secret_fields, scrub=redact_text,
            )
        except CasMismatchError:
            if self._from_memory and not self._wrote:
                raise _StaleRecordError() from None
            raise
        self._persisted, self._dirty, self._wrote = self.record, False, True
        ours = record.lease is not None and record.lease.holder == self.engine.holder
        self._lease_until = record.lease.expires_at if ours and record.lease is not None else None
        self._released = record.lease is None
        durable, self._durable = self._durable, []
        for announce in durable:
            announce()

    def ensure_lease(self) -> None:
        """Before a side effect: a process that was paused (or slow) may have
        outlived its lease; renew it first (check-and-set), or stop."""
        margin = timedelta(seconds=min(60.0, self.engine.options.lease_seconds / 5))
        if self._lease_until is None or self.engine.clock.now() >= self._lease_until - margin:
            self.persist(self.record)

    def _lease(self) -> Lease:
        me = self.engine.identity
        return Lease(
            holder=self.engine.holder,
            expires_at=self.engine.clock.now() + timedelta(seconds=self.engine.options.lease_seconds),
            host=me.host, boot_id=me.boot_id, pid_namespace=me.pid_namespace, pid=me.pid, start_ticks=me.start_ticks,
        )

    def take_lease(self, *, defer: bool = False) -> None:
        update: dict[str, Any] = {"lease": self._lease()}
        if self.policy.has_file:
            # What a removed file's keys need to be retired (rotator.engine.fileless).
            update["params"] = json.loads(json.dumps(self.cred.spec.params, default=str))  # plain JSON, whatever YAML made
            update["source"] = self.cred.spec.source or None
            update["grace_seconds"] = self.cred.spec.grace.total_seconds()
            if self.record.live_path is None or self.record.live_version is None:
                # A record from before live_path was kept, or one that has not written its path yet: the
                # file's path, so that a first rotation whose file is removed is still undone (sim F51).
                update["live_path"] = str(self._live)
            pending = self.record.pending
            if pending is not None and pending.target != str(self._live):
                # Where the rotation writes, known before it writes: a removed
                # file's rotation is finished (or undone) where it went live.
                update["pending"] = self._retargeted(pending)
        if defer:
            self._defer(self.record.model_copy(update=update))
            return
        self._write(self.record.model_copy(update=update))

    def _retargeted(self, pending: Pending) -> Pending:
        """`pending` writing the file's path from now on; the path it wrote before joins its earlier targets
        (at most 4): it may have gone live there, a crash after that write and before the record said so,
        and only the record remembers the path (sim F132, F133)."""
        here = str(self._live)
        earlier = [p for p in dict.fromkeys((pending.target, *pending.earlier_targets)) if p and p != here]
        return pending.model_copy(update={"target": here, "earlier_targets": earlier[:4]})

    def persist(self, record: StateRecord) -> None:
        """Write the record back, renewing the lease; a lost CAS means the lease is gone."""
        try:
            self._write(record.model_copy(update={"lease": self._lease()}))
        except CasMismatchError:
            raise LeaseLostError(f"{record.credential}: another process took the lease") from None

    def release(self) -> None:
        if self._released and not self._dirty:
            return  # the last write released it already
        if not self._wrote:
            # Nothing of this run reached Vault (its lease was only deferred, its first write failed): there is
            # nothing to release, and writing the record back would make one that knows nothing (a lost record's
            # baseline refused, sim F187), announcing what it never held.
            self._durable = []
            return
        try:
            self._write(self.record.model_copy(update={"lease": None}))
        except RotatorError as exc:  # it expires by itself
            self.log.warning("lease.release_failed", error=str(exc))

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        self.events.append(event)
        getattr(self.log, level)(event, **fields)
