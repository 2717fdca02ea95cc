"""The one module that talks to Vault (or OpenBao); nothing else imports hvac.

Invariants:
- every write of a live credential or a state record is a KV v2
  check-and-set write; a lost race raises `CasMismatchError`, never
  overwrites;
- writing live metadata merges only `managed-by` and `rotator-*` keys into
  `custom_metadata` (a JSON merge patch), so an operator's other keys and
  the path's settings (`max_versions`, `cas_required`,
  `delete_version_after`) stay as they were;
- Vault's errors leave this module as `TransientError` (5xx, 429, sealed,
  unreachable), `CasMismatchError`, `NotFoundError` or `PermanentError`;
  messages name paths, never values, tokens or login secrets;
- every request goes through `TokenSession` (rotator.vault.auth): the token
  is renewed or replaced before it expires, and a request refused because
  the token was revoked is retried once after a new login;
- the process reads its own writes, also through a standby of an OpenBao
  cluster that serves reads from its own, lagging copy (Raft, OpenBao >=
  2.5): every request carries the newest `X-Vault-Index` seen with
  `X-Vault-Inconsistent: forward-active-node`, so a standby that has not
  caught up forwards the request to the active node.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import requests

from rotator.config.settings import DEFAULT_AUTH_MOUNTS, VaultConnection
from rotator.core.errors import NotFoundError, PermanentError
from rotator.core.redaction import register_secret
from rotator.core.validators import parse_vault_ref
from rotator.vault.auth import TokenSession, VaultDeniedError, _HvacAuthenticator
from rotator.vault.bulk import BulkReader, parse_kv_read
from rotator.vault.errors import translate
from rotator.vault.session import ConsistencyIndex, _session_for, _ssl_context

T = TypeVar("T")

# KV v2's limits on custom metadata.
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 512

READY_CACHE_SECONDS = 2.0  # /readyz may be probed often: one lookup per window
READY_TIMEOUT_SECONDS = 3.0
METADATA_MEMORY = 1024  # paths whose custom metadata keys a write's answer named, kept for the next merge


@dataclass(frozen=True)
class Versioned:
    """A KV v2 value and the version it was read at (0: the path is empty)."""

    data: dict[str, Any] | None
    version: int


@dataclass(frozen=True)
class LiveMetadata:
    current_version: int
    custom_metadata: dict[str, str]


def check_metadata_merge(mount: str, path: str, updates: Mapping[str, str], known: Callable[[], frozenset[str] | None],
                         read_metadata: Callable[[str, str], LiveMetadata | None]) -> None:
    """KV v2's limits on a metadata merge (key/value sizes, key count), checked by VaultStore and the simulation's
    KV model alike before it is sent. `known`: the keys a write of this path just named, or None: they are read."""
    for key, value in updates.items():
        if len(key.encode()) > MAX_METADATA_KEY_BYTES or len(str(value).encode()) > MAX_METADATA_VALUE_BYTES:
            raise PermanentError(f"custom metadata {key!r} on {mount}/{path} exceeds KV v2's size limits")
    existing = known()
    if existing is None:
        current = read_metadata(mount, path)
        existing = frozenset(current.custom_metadata) if current else frozenset()
    if len(existing | set(updates)) > MAX_METADATA_KEYS:
        raise PermanentError(
            f"{mount}/{path} has {len(existing)} custom metadata keys; adding the rotator's would pass KV v2's limit of {MAX_METADATA_KEYS}"
        )


class FolderAndRefReads:
    """What is built on `list` and `read` alone, shared by VaultStore and the
    simulation's KV model (rotator.testing.sim.kv), so the two cannot differ."""

    def list(self, mount: str, path: str) -> list[str]:
        raise NotImplementedError

    def read(self, mount: str, path: str) -> Versioned:
        raise NotImplementedError

    def walk(self, mount: str, path: str) -> Iterator[str]:
        """Every leaf key below a folder, as paths relative to it."""
        for key in self.list(mount, path):
            if key.endswith("/"):
                for sub in self.walk(mount, f"{path}/{key.rstrip('/')}"):
                    yield f"{key}{sub}"
            else:
                yield key

    def read_ref(self, ref: str) -> str:
        """The value of a `MOUNT/PATH#FIELD` reference (never logged)."""
        mount, path, field = parse_vault_ref(ref)
        current = self.read(mount, path)
        if current.data is None or field not in current.data:
            raise NotFoundError(f"Vault reference {ref} does not exist (no field {field!r} at {mount}/{path})")
        value = current.data[field]
        if not isinstance(value, str) or not value:
            raise PermanentError(f"Vault reference {ref} is not a non-empty string")
        return value


class VaultStore(FolderAndRefReads):
    """KV v2 reads and check-and-set writes, secret references, health."""

    def __init__(
        self,
        connection: VaultConnection,
        *,
        client: hvac.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        register_secret(connection.token)  # the token must never reach an output
        logs_in = connection.auth_method in DEFAULT_AUTH_MOUNTS
        self.consistency = ConsistencyIndex()
        self._client = client or hvac.Client(
            url=connection.url,
            # "" rather than None: a login method must not pick up ~/.vault-token
            token="" if logs_in else connection.token,
            namespace=connection.namespace,
            verify=connection.verify,
            timeout=connection.timeout,
            session=_session_for(connection.url, connection.verify, self.consistency),
        )
        self._now = monotonic
        self._session = TokenSession(_HvacAuthenticator(self), monotonic=monotonic)
        self._ready_lock = threading.Lock()
        self._ready: tuple[bool, float] | None = None
        self.requests_made = 0  # counted for the idle-tick benchmark and metrics
        self._metadata_keys: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        self._metadata_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------

    def _send(self, what: str, fn: Callable[[], T], *, hide: str | None = None) -> T:
        """One request, its errors translated; `hide`: a login secret no message may carry."""
        self.requests_made += 1
        try:
            return fn()
        except Exception as exc:  # translated below, re-raised as our kinds
            translated = translate(exc, what)
            if translated is exc:
                raise
            if hide and hide in str(translated):
                translated = type(translated)(str(translated).replace(hide, "[REDACTED]"))
            raise translated from None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """A request with a valid token: renewed or replaced first when due,
        and retried once after a new login if Vault rejected a revoked token."""
        self._session.ensure()
        generation = self._session.generation
        try:
            return self._send(what, fn)
        except VaultDeniedError:
            if not self._session.recover(generation):
                raise
        return self._send(what, fn)

    @property
    def _kv(self) -> Any:
        return self._client.secrets.kv.v2

    # -- authentication and health -------------------------------------------

    def login(self) -> None:
        """Log in with the configured method, or check the given token.

        Raises when Vault refuses; an unreachable Vault is only logged, and
        the login is retried on first use."""
        if self.connection.auth_method == "token" and not self._client.token:
            raise PermanentError("VAULT_TOKEN is not set (ROTATOR_VAULT_AUTH=token); set it, or choose approle or kubernetes")
        self._session.start()

    def maintain_token(self) -> None:
        """Renew the token or log in again when due; never raises (call it each tick)."""
        self._session.maintain()

    def token_expires_in(self) -> float | None:
        """Seconds the store's token has left, as last seen (no request; inf: never expires, None: not known yet)."""
        return self._session.expires_in()

    def token_info(self) -> dict[str, Any]:
        """The token's own lookup (ttl, renewable); raises if Vault is unreachable or the token invalid."""
        return self._call("looking up the token", lambda: self._client.auth.token.lookup_self())["data"]

    def is_ready(self) -> bool:
        """Vault reachable and the token valid; cached for READY_CACHE_SECONDS."""
        with self._ready_lock:
            if self._ready is not None and self._now() - self._ready[1] < READY_CACHE_SECONDS:
                return self._ready[0]
            try:
                self._call(
                    "checking readiness",
                    lambda: self._client.adapter.get("/v1/auth/token/lookup-self", timeout=min(self.connection.timeout, READY_TIMEOUT_SECONDS)),
                )
                ready = True
            except Exception:  # readiness is a yes/no
                ready = False
            self._ready = (ready, self._now())
            return ready

    # -- KV v2 -------------------------------------------------------------

    def _read_payload(self, mount: str, path: str, version: int | None = None) -> dict[str, Any] | None:
        """KV v2's `data` of a version (the latest by default), or None when absent or deleted."""
        what = f"reading {mount}/{path}" + (f" version {version}" if version is not None else "")
        try:
            response = self._call(
                what,
                lambda: self._kv.read_secret_version(path=path, mount_point=mount, version=version, raise_on_deleted_version=True),
            )
        except NotFoundError:
            return None
        return dict(response["data"])

    def read(self, mount: str, path: str) -> Versioned:
        """The current version of `mount/path` (data None, version 0 when absent or deleted)."""
        payload = self._read_payload(mount, path)
        if payload is None:
            return self._version_of_missing(mount, path)
        return Versioned(payload.get("data"), int(payload["metadata"]["version"]))

    def _version_of_missing(self, mount: str, path: str) -> Versioned:
        # A deleted latest version still has a version number, which the
        # next check-and-set write must name. Data and metadata are two
        # reads: a write landing between them (through a standby: its copy
        # catching up in between) would pair "no data" with the version that
        # write made, and a check-and-set on it would overwrite data never
        # seen. So read the data again, after the metadata: what it finds is
        # at least as new, and a version older than the truth only loses.
        meta = self.read_metadata(mount, path)
        if meta is None or meta.current_version == 0:
            return Versioned(None, 0)
        payload = self._read_payload(mount, path)
        if payload is not None:
            return Versioned(payload.get("data"), int(payload["metadata"]["version"]))
        return Versioned(None, meta.current_version)

    def read_data(self, mount: str, path: str) -> dict[str, Any] | None:
        """The current data of `mount/path`, or None: one request, no version."""
        payload = self._read_payload(mount, path)
        return payload.get("data") if payload else None

    def read_many(self, mount: str, paths: list[str], *, workers: int = 8) -> dict[str, Versioned]:
        """Read many KV v2 paths at start-up, fast (rotator.vault.bulk). Paths
        that fail are left out: the caller reads those one by one later."""
        reader = self.bulk_reader(mount, workers=workers)
        if reader is None:
            return {}
        for path in paths:
            reader.submit(path)
        return reader.results()

    def bulk_reader(self, mount: str, *, workers: int = 8) -> BulkReader | None:
        """A reader of `mount`'s paths to `submit` now and collect later
        (`results`: path -> Versioned); None through a proxy (the ordinary
        path then reads them)."""
        if requests.utils.get_environ_proxies(self.connection.url):
            return None
        self._session.ensure()
        headers = {"X-Vault-Token": self._client.token or "", **self.consistency.headers()}
        if self.connection.namespace:
            headers["X-Vault-Namespace"] = self.connection.namespace

        def parse(status: int, body: bytes) -> Versioned | None:
            found = parse_kv_read(status, body)
            return Versioned(*found) if found is not None else None

        def count() -> None:
            self.requests_made += 1

        return BulkReader(self.connection.url, headers, mount, parse=parse, observe=self.consistency.observe, timeout=self.connection.timeout,
                          context=_ssl_context(self.connection.verify), workers=workers, on_request=count)

    def read_version(self, mount: str, path: str, version: int) -> dict[str, Any] | None:
        payload = self._read_payload(mount, path, version)
        return payload.get("data") if payload else None

    def write(self, mount: str, path: str, data: Mapping[str, Any], *, cas: int, keep_metadata: bool = False) -> int:
        """Check-and-set write; returns the new version. `cas=0`: only if absent.
        `keep_metadata`: remember the custom metadata keys the answer names,
        for the `merge_custom_metadata` of this path that follows."""
        response = self._call(
            f"writing {mount}/{path}",
            lambda: self._kv.create_or_update_secret(path=path, secret=dict(data), cas=cas, mount_point=mount),
        )
        custom = response["data"].get("custom_metadata", False)
        if keep_metadata and custom is not False:  # KV v2 answers a write with the path's custom metadata too
            with self._metadata_lock:
                self._metadata_keys[(mount, path)] = frozenset(custom or {})
                self._metadata_keys.move_to_end((mount, path))
                while len(self._metadata_keys) > METADATA_MEMORY:
                    self._metadata_keys.popitem(last=False)
        return int(response["data"]["version"])

    def undelete_version(self, mount: str, path: str, version: int) -> None:
        """Undo a soft delete (`bao kv delete`) of one version: its data is
        readable again. A destroyed version stays gone."""
        self._call(f"undeleting {mount}/{path} version {version}",
                   lambda: self._kv.undelete_secret_versions(path=path, versions=[version], mount_point=mount))

    def destroy(self, mount: str, path: str) -> None:
        """Delete every version of `mount/path` and its metadata, for good
        (a stash entry whose credential is revoked). Absent counts as done."""
        try:
            self._call(f"destroying {mount}/{path}", lambda: self._kv.delete_metadata_and_all_versions(path=path, mount_point=mount))
        except NotFoundError:
            return

    def read_metadata(self, mount: str, path: str) -> LiveMetadata | None:
        try:
            response = self._call(
                f"reading metadata of {mount}/{path}",
                lambda: self._kv.read_secret_metadata(path=path, mount_point=mount),
            )
        except NotFoundError:
            return None
        data = response["data"]
        return LiveMetadata(int(data.get("current_version") or 0), dict(data.get("custom_metadata") or {}))

    def merge_custom_metadata(self, mount: str, path: str, updates: Mapping[str, str]) -> None:
        """Merge `updates` into the path's custom metadata and change nothing else."""
        def known_keys() -> frozenset[str] | None:
            with self._metadata_lock:
                return self._metadata_keys.pop((mount, path), None)

        check_metadata_merge(mount, path, updates, known_keys, self.read_metadata)
        self._call(
            f"updating metadata of {mount}/{path}",
            lambda: self._client.adapter.request(
                "PATCH",
                f"/v1/{mount}/metadata/{path}",
                json={"custom_metadata": dict(updates)},
                headers={"Content-Type": "application/merge-patch+json"},
            ),
        )

    def list(self, mount: str, path: str) -> list[str]:
        """Keys under a folder (sub-folders end in '/'); empty when there are none."""
        try:
            response = self._call(f"listing {mount}/{path}", lambda: self._kv.list_secrets(path=path, mount_point=mount))
        except NotFoundError:
            return []
        return list(response["data"]["keys"])


    # -- audit anchors: Transit signatures (rotator.auditanchor) ---------------

    def transit_sign(self, mount: str, key: str, data: bytes) -> str:
        """Transit's signature (`vault:vN:…`) over `data` with key `key`."""
        response = self._call(
            f"signing with transit key {mount}/{key}",
            lambda: self._client.secrets.transit.sign_data(name=key, hash_input=_b64(data), mount_point=mount),
        )
        return str(response["data"]["signature"])

    def transit_verify(self, mount: str, key: str, data: bytes, signature: str) -> bool:
        """Whether Transit key `key` made `signature` over `data`; a malformed signature is False."""
        try:
            response = self._call(
                f"verifying a signature with transit key {mount}/{key}",
                lambda: self._client.secrets.transit.verify_signed_data(
                    name=key, hash_input=_b64(data), signature=signature, mount_point=mount,
                ),
            )
        except PermanentError:
            return False  # Vault answers 400 to a signature it cannot parse
        return bool(response["data"]["valid"])

    def transit_public_keys(self, mount: str, key: str) -> dict[int, str]:
        """The public keys of an asymmetric Transit key, by version (base64, as Transit gives them)."""
        response = self._call(
            f"reading transit key {mount}/{key}", lambda: self._client.secrets.transit.read_key(name=key, mount_point=mount)
        )
        keys = response["data"].get("keys") or {}
        return {int(version): str(entry["public_key"]) for version, entry in keys.items() if isinstance(entry, dict) and entry.get("public_key")}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
