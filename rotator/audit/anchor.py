"""Anchors: the audit chain's tip, witnessed by Vault (contract §3, §7).

Invariants:
- One KV v2 record per chain, `ANCHOR_MOUNT/ANCHOR_PREFIX/CHAIN_ID`, always
  written with check-and-set. It holds the tip (`seq`, `hash`), the chain id,
  the file, the host, the time and `kv_version`, the version the write
  creates: a record replayed at another version is detected.
- The anchor only moves forward: a process writes a tip only when the
  record's seq is not ahead of the file's and the line at the record's seq
  has the record's hash (or lies in a gap an `audit.chain_broken` names).
  Otherwise the write is refused and logged (`audit.anchor_refused`); at
  start the process refuses to append at all (`AuditChainError`).
- With a Transit key, each record carries an ed25519 signature over its
  canonical JSON (without `signature`): a writer with KV access alone cannot
  forge one.
- Anchoring never blocks or fails a rotation: it runs beside the appends,
  Vault errors are logged (`audit.anchor_failed`) and retried next round.
"""

from __future__ import annotations

import atexit
import base64
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from rotator.audit.chain import GENESIS, AuditChainError, Tip, canonical_json, seq_span
from rotator.audit.writer import AuditFile
from rotator.core.clock import Clock, SystemClock, to_rfc3339
from rotator.core.errors import CasMismatchError, RotatorError

if TYPE_CHECKING:
    from rotator.vault.store import VaultStore  # hvac loads only when an anchor is read or written

ANCHOR_INTERVAL_SECONDS = 30.0  # "at least once a minute while it appends"
SIGNATURE_FIELD = "signature"
_FIELDS = ("chain_id", "seq", "hash", "file", "host", "anchored_at", "kv_version")


class AnchorError(RotatorError):
    """An anchor record that cannot be read as one (named by its path, never its values)."""

    def __init__(self, message: str, *, version: int = 0) -> None:
        super().__init__(message)
        self.version = version  # the KV version of the malformed record, for check-and-set past it


@dataclass(frozen=True)
class AnchorRecord:
    """One chain's anchored tip, as stored in Vault."""

    chain_id: str
    seq: int
    hash: str
    file: str
    host: str
    anchored_at: str
    kv_version: int
    signature: str | None = None

    @property
    def tip(self) -> Tip:
        return Tip(self.seq, self.hash)

    def signed_content(self) -> bytes:
        """What the signature covers: the canonical JSON of the record without it."""
        return canonical_json({k: v for k, v in asdict(self).items() if k != SIGNATURE_FIELD}).encode("utf-8")

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        if self.signature is None:
            del data[SIGNATURE_FIELD]
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any], where: str) -> AnchorRecord:
        types = {"seq": int, "kv_version": int}
        values: dict[str, Any] = {}
        for name in _FIELDS:
            value = data.get(name)
            if not isinstance(value, types.get(name, str)) or isinstance(value, bool):
                raise AnchorError(f"anchor {where}: field {name!r} is missing or malformed")
            values[name] = value
        signature = data.get(SIGNATURE_FIELD)
        if signature is not None and not isinstance(signature, str):
            raise AnchorError(f"anchor {where}: field 'signature' is malformed")
        return cls(**values, signature=signature)


@dataclass(frozen=True)
class Stored:
    """An anchor as read: the record (None when there is none) and its KV version."""

    record: AnchorRecord | None
    version: int


class AnchorStore:
    """Reads and check-and-set writes of anchor records, signed when a Transit key is set."""

    def __init__(self, store: VaultStore, location: tuple[str, str], *, transit: tuple[str, str] | None = None) -> None:
        self.store = store
        self.mount, self.prefix = location
        self.transit = transit

    def path(self, chain_id: str) -> str:
        return f"{self.prefix}/{chain_id}"

    def where(self, chain_id: str) -> str:
        return f"{self.mount}/{self.path(chain_id)}"

    def read(self, chain_id: str) -> Stored:
        current = self.store.read(self.mount, self.path(chain_id))
        if current.data is None:
            return Stored(None, current.version)
        try:
            return Stored(AnchorRecord.from_data(current.data, self.where(chain_id)), current.version)
        except AnchorError as exc:
            raise AnchorError(str(exc), version=current.version) from None

    def write(self, record: AnchorRecord, *, cas: int) -> AnchorRecord:
        """Write `record` over version `cas` (0: none yet); returns it as stored."""
        record = replace(record, kv_version=cas + 1, signature=None)
        if self.transit is not None:
            mount, key = self.transit
            record = replace(record, signature=self.store.transit_sign(mount, key, record.signed_content()))
        self.store.write(self.mount, self.path(record.chain_id), record.to_data(), cas=cas)
        return record


def signature_problem(
    record: AnchorRecord, version: int, *, store: VaultStore | None, transit: tuple[str, str] | None,
    public_key: bytes | None = None,
) -> str | None:
    """Why `record` (read at KV `version`) is not a genuine signed anchor, or None.

    Checked offline with `public_key` (PEM), else through Transit."""
    if record.signature is None:
        return "the anchor carries no signature, but signing is required: it was written by someone other than a signing rotator"
    if record.kv_version != version:
        return (f"the anchor's signed content is for version {record.kv_version} of the record, but it is version {version}: "
                "an older anchor was written back (rewound through KV)")
    if public_key is not None:
        valid = _verify_offline(public_key, record.signature, record.signed_content())
    elif store is not None and transit is not None:
        valid = store.transit_verify(*transit, record.signed_content(), record.signature)
    else:
        return "no key to check the anchor's signature with"
    return None if valid else "the anchor's signature does not match its content: it was forged or altered through KV"


def _verify_offline(pem: bytes, signature: str, content: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError("the public key file does not hold an ed25519 public key")
    prefix, _, encoded = signature.rpartition(":")
    try:
        key.verify(base64.b64decode(encoded, validate=True), content)
    except (InvalidSignature, ValueError):
        return False
    return prefix.startswith("vault:v")


def public_key_pem(raw_base64: str) -> str:
    """Transit's base64 ed25519 public key as a PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw_base64))
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def problem_with(anchor: AnchorRecord, writer: AuditFile, tip: Tip, where: str) -> tuple[str, str] | None:
    """Why the file cannot be the chain `anchor` witnessed, and what to do; None when the anchor is on it."""
    if anchor.seq > tip.seq:
        return (f"the chain's tip anchored in Vault ({where}) is seq {anchor.seq}, anchored at {anchor.anchored_at} by "
                f"{anchor.host}, but {writer.path} ends at seq {tip.seq}: {seq_span(tip.seq + 1, anchor.seq)} were cut",
                f"run `rotator audit seal {writer.path}` to record the break (docs/AUDIT.md)")
    if anchor.seq == tip.seq and anchor.hash != tip.hash:
        found = None  # the tip itself (perhaps only the sidecar's, in an empty file) is another line
    else:
        found = writer.locate(anchor.seq)
    if found is not None and (found.where in {"sealed", "earlier"} or found.hash == anchor.hash):
        return None
    return (f"{writer.path} holds another line at seq {anchor.seq} than the one anchored in Vault ({where}): the chain was rewritten",
            f"investigate with `rotator audit verify {writer.path} --anchor` (docs/AUDIT.md)")


class Anchorer:
    """Keeps one chain's anchor moving forward for this process."""

    def __init__(
        self, writer: AuditFile, anchors: AnchorStore, *, log: Callable[..., Any] | None = None,
        clock: Clock | None = None, interval: float = ANCHOR_INTERVAL_SECONDS, host: str | None = None,
    ) -> None:
        self.writer = writer
        self.anchors = anchors
        self.clock = clock or SystemClock()
        self.interval = interval
        self.host = host or socket.gethostname()
        self._log = log
        self._known: Stored | None = None  # the record as last read or written by us
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()
        self._last_error: str | None = None
        self._invalid: str | None = None
        self._last_refusal: Tip | None = None
        self._findings_logged = False

    def log(self) -> Any:
        if self._log is not None:
            return self._log()
        from rotator.audit.events import get_logger

        return get_logger()

    def check_at_start(self) -> None:
        """Refuse (AuditChainError) a file whose tip is behind the anchor, or off it.

        Vault unreachable: nothing to compare with now; the next round checks."""
        position = self.writer.position()
        try:
            stored = self._read(position.chain_id)
        except RotatorError as exc:
            self._last_error = f"cannot read the audit anchor at start: {exc}"
            return
        if stored.record is not None:
            problem = problem_with(stored.record, self.writer, position.tip, self.anchors.where(position.chain_id))
            if problem is not None:
                reason, advice = problem
                raise AuditChainError(self.writer.path, f"{reason}. Not appending over it: {advice}")
            self._invalid = self._written_by_someone_else(stored)
        self._known = stored

    def _read(self, chain_id: str) -> Stored:
        """The anchor; a malformed record (not a rotator's) is logged as evidence and written past."""
        try:
            return self.anchors.read(chain_id)
        except AnchorError as exc:
            if str(exc) != self._invalid:
                self._invalid = str(exc)
                if self._findings_logged:  # before that, log_start_findings logs it
                    self.log().error("audit.anchor_invalid", error=str(exc))
            return Stored(None, exc.version)

    def _written_by_someone_else(self, stored: Stored) -> str | None:
        """What shows that the record was not written by a rotator (kept as evidence in the chain)."""
        record = stored.record
        assert record is not None
        if record.kv_version != stored.version:
            return (f"the anchor at {self.anchors.where(record.chain_id)} names version {record.kv_version} but is version "
                    f"{stored.version}: an older record was written back, or the record was written by hand")
        if self.anchors.transit is not None and record.signature is None:
            return f"the anchor at {self.anchors.where(record.chain_id)} is unsigned although anchors are signed"
        return None

    def log_start_findings(self) -> None:
        """Log, into the chain itself, what the start check found but did not stop for."""
        self._findings_logged = True
        if self._last_error is not None:
            self.log().warning("audit.anchor_failed", error=self._last_error, will_retry=True)
        if self._invalid is not None:
            self.log().error("audit.anchor_invalid", error=self._invalid)

    def anchor_round(self) -> AnchorRecord | None:
        """Anchor the tip, log `audit.anchored`, then anchor that line too (quietly). Never raises."""
        with self._round_lock:
            record = self.anchor_once(quiet=False)
            if record is not None:
                self.anchor_once(quiet=True)  # the audit.anchored line is the tip now
            return record

    def anchor_once(self, *, quiet: bool) -> AnchorRecord | None:
        try:
            record = self._write_tip()
        except _Refused:
            return None
        except (RotatorError, OSError) as exc:
            message = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
            if message != self._last_error:  # once per distinct error, not every round
                self._last_error = message
                self.log().warning("audit.anchor_failed", error=message, will_retry=True)
            return None
        if record is not None:
            self._last_error = None
            if not quiet:
                self.log().info("audit.anchored", anchored_seq=record.seq, anchored_hash=record.hash,
                                anchor=self.anchors.where(record.chain_id), kv_version=record.kv_version)
        return record

    def _write_tip(self) -> AnchorRecord | None:
        for _attempt in range(3):  # lost check-and-set races: re-read and try again
            position = self.writer.position()
            if position.tip == GENESIS:
                return None
            if self._known is None or self._known.record is None or self._known.record.chain_id != position.chain_id:
                self._known = self._read(position.chain_id)
                if self._known.record is not None:
                    self._refuse_if_off(self._known.record, position.chain_id)
            known = self._known
            if known.record is not None and known.record.seq >= position.tip.seq:
                if known.record.tip != position.tip:
                    self._refuse_if_off(known.record, position.chain_id)  # the file lost lines while we ran
                return None  # nothing new to anchor
            record = AnchorRecord(position.chain_id, position.tip.seq, position.tip.hash, os.path.abspath(self.writer.path),
                                  self.host, to_rfc3339(self.clock.now()), 0)
            try:
                written = self.anchors.write(record, cas=known.version)
            except CasMismatchError:
                self._known = None
                continue
            self._known = Stored(written, written.kv_version)
            return written
        return None

    def _refuse_if_off(self, anchor: AnchorRecord, chain_id: str) -> None:
        # Read the tip again after the anchor: another process may have
        # appended and anchored since this one last looked.
        problem = problem_with(anchor, self.writer, self.writer.position().tip, self.anchors.where(chain_id))
        if problem is not None:
            self._known = None
            reason, advice = problem
            if anchor.tip != self._last_refusal:  # once per anchor refused, not every round
                self._last_refusal = anchor.tip
                self.log().error("audit.anchor_refused", error=f"{reason}; the anchor is not moved back: {advice}",
                                 anchored_seq=anchor.seq)
            raise _Refused(reason)
        self._last_refusal = None

    # -- the background loop -------------------------------------------------------

    def start(self) -> None:
        """Log what the start check found, anchor every `interval`, and once more at exit."""
        self.log_start_findings()
        self._thread = threading.Thread(target=self._loop, name="audit-anchor", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.anchor_round()

    def stop(self) -> None:
        """Stop the loop and anchor what was appended since the last round."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self.anchor_round()


class _Refused(Exception):  # noqa: N818 - internal control flow, never leaves this module
    """The anchor is off the file's chain: already logged, and the round ends."""


class HeldAppends:
    """An audit sink that holds events in memory until `release` appends
    them (in order) and lets later ones through: what a process logs while
    its start is being checked reaches the file only if the check passes."""

    def __init__(self, append: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._append = append
        self._lock = threading.Lock()
        self._held: list[dict[str, Any]] | None = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._held is not None:
                self._held.append(event)
                return event  # printed without chain fields; appended on release
        return self._append(event)

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held or [], None
            for event in held:
                try:
                    self._append(event)
                except (OSError, RotatorError):
                    pass  # printed already; the next append reports the file's trouble on its event
