"""Leak response (contract §7): find the credential a leaked value belongs
to, by SHA-256, and rotate it with revoke-now.

Invariants:
- a leaked value is never echoed, logged, stored or put in a message: it is
  registered with the redactor at once and only its SHA-256 is compared;
- only the live and the in-grace credentials of each credential file are
  matched (a credential still being issued is not live yet: it is neither
  leaked from a consumer nor promoted by the response);
- a state record keeps `value_sha256`, the hashes of each key's secret
  values, set when the key is issued; a key without them (issued before
  they were kept, or adopted) is matched by reading what the rotator's own
  Vault policy lets it read anyway: its stash entry, else, for the live key,
  the live path. Readers (the reader policy) never need either;
- `credential.leaked` is logged before the rotation starts, once per
  matched key;
- a record that cannot be read is logged and skipped; if nothing matched
  and any record could not be read, the lookup fails (never a false "no
  match").
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rotator.audit.events import get_logger, redact_text, register_secret
from rotator.config.spec import LoadedCredential
from rotator.core.errors import RotatorError
from rotator.core.state import KeyRecord, StateRecord, sha256_hex
from rotator.engine.mass import Outcome, rotate_one
from rotator.engine.reconcile import Engine
from rotator.vault.livepath import LivePath

MAX_VALUE_BYTES = 64 * 1024
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
Source = str  # "cli" or "webhook"


@dataclass(frozen=True)
class Match:
    """A leaked value's credential: the key it is, and whether live or in grace."""

    cred: LoadedCredential
    key_id: str
    state: str  # "live" or "in grace"


def digests_of(value: str) -> set[str]:
    """The hashes to look for: the value as given, and without a trailing
    newline (a value piped from a file, or `echo` without -n)."""
    variants = {value, value.rstrip("\r\n")}
    register_secret(*variants)
    return {sha256_hex(v) for v in variants if v}


def parse_digest(text: str) -> str:
    """A SHA-256 given as hex (the webhook's `sha256`, `leaked --sha256`)."""
    digest = text.strip().lower()
    if not SHA256_HEX.match(digest):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return digest


def find_matches(engine: Engine, creds: Iterable[LoadedCredential], digests: set[str], *, concurrency: int = 8) -> list[Match]:
    """Every live or in-grace key whose secret values hash to one of `digests`."""
    creds = list(creds)
    if not digests or not creds:
        return []
    errors: list[tuple[str, RotatorError]] = []

    def of(cred: LoadedCredential) -> list[Match]:
        try:
            return _matches_of(engine, cred, digests)
        except RotatorError as exc:  # one unreadable record must not hide a match in the others
            errors.append((cred.spec.name, exc))
            return []

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(creds))), thread_name_prefix="leak") as pool:
        matches = [m for ms in pool.map(of, creds) for m in ms]
    for name, exc in errors:
        get_logger(credential=name).error("leak.lookup_failed", error=redact_text(str(exc)))
    if errors and not matches:
        # "No match" would be a false all-clear: say the lookup failed instead.
        raise errors[0][1]
    return matches


def _matches_of(engine: Engine, cred: LoadedCredential, digests: set[str]) -> list[Match]:
    record, _ = engine.read_record(cred.spec.name)
    if record is None:
        return []
    keys: list[tuple[KeyRecord, str]] = [(e.key, "in grace") for e in record.retiring]
    if record.current is not None:
        keys.insert(0, (record.current, "live"))
    matches = []
    for key, state in keys:
        hashes = set(key.value_sha256) or _hashes_from_vault(engine, cred, record, key, is_live=state == "live")
        if hashes & digests:
            matches.append(Match(cred, key.key_id, state))
    return matches


def _hashes_from_vault(engine: Engine, cred: LoadedCredential, record: StateRecord, key: KeyRecord, *, is_live: bool) -> set[str]:
    """A key issued before hashes were kept: its values from its stash entry
    (or, for the live key, the live path), hashed and forgotten."""
    secret_fields = cred.provider_cls.secret_fields
    values: list[str] = []
    if key.stash:
        data = engine.store.read_data(engine.options.state_mount, key.stash) or {}
        if data.get("key_id") == key.key_id:
            for part in (data.get("data") or {}, data.get("handle") or {}):
                values += [v for k, v in part.items() if k in secret_fields and isinstance(v, str)]
    if not values and is_live:
        content = LivePath(engine.store, cred.spec.vault.mount, cred.spec.vault.path).read()
        if content.data and content.custom_metadata.get("rotator-key-id") in (None, key.key_id):
            values += [v for k, v in content.data.items() if k in secret_fields]
    register_secret(*values)
    return {sha256_hex(v) for v in values}


def announce(matches: list[Match], *, source: Source) -> list[LoadedCredential]:
    """Log `credential.leaked` for each matched key; the credentials to rotate, once each."""
    by_name: dict[str, LoadedCredential] = {}
    for match in matches:
        get_logger(credential=match.cred.spec.name, provider=match.cred.spec.provider).warning(
            "credential.leaked", key_id=match.key_id, source=source, state=match.state)
        by_name.setdefault(match.cred.spec.name, match.cred)
    return list(by_name.values())


def respond(engine: Engine, matches: list[Match], *, source: Source, stop: threading.Event, lease_wait: float = 120.0) -> list[Outcome]:
    """Announce the matches, then rotate each matched credential with
    revoke-now (which also ends every key of it in grace), one by one."""
    return [rotate_one(engine, cred, revoke_now=True, lease_wait=lease_wait, stop=stop, interrupted=stop.is_set)
            for cred in announce(matches, source=source)]
