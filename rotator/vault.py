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
- every request goes through `TokenSession` (rotator.vault_auth): the token
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
import binascii
import http.client
import json
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import hvac
import hvac.exceptions as hvac_errors
import requests

from rotator.errors import (
    CasMismatchError,
    NotFoundError,
    PermanentError,
    TransientError,
    VaultUnavailableError,
)
from rotator.fields import parse_vault_ref
from rotator.redaction import register_secret
from rotator.vault_auth import TokenLease, TokenSession, VaultDeniedError

T = TypeVar("T")

# KV v2's limits on custom metadata.
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 512

DEFAULT_AUTH_MOUNTS = {"approle": "approle", "kubernetes": "kubernetes"}
INDEX_HEADER = "X-Vault-Index"
INCONSISTENT_HEADER = "X-Vault-Inconsistent"
READY_CACHE_SECONDS = 2.0  # /readyz may be probed often: one lookup per window
READY_TIMEOUT_SECONDS = 3.0
POOL_SIZE = 64  # keep-alive connections to Vault, across all threads
METADATA_MEMORY = 1024  # paths whose custom metadata keys a write's answer named, kept for the next merge


@dataclass(frozen=True)
class VaultConnection:
    """How to reach Vault and log in. Built from settings by the caller."""

    url: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    verify: bool | str = True  # False, True, or a CA bundle path
    auth_method: str = "token"  # token | approle | kubernetes
    auth_mount: str | None = None  # default: the method's name
    role_id: str | None = field(default=None, repr=False)
    secret_id_file: str | None = None
    k8s_role: str | None = None
    k8s_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    timeout: float = 10.0

    @property
    def effective_auth_mount(self) -> str | None:
        return self.auth_mount or DEFAULT_AUTH_MOUNTS.get(self.auth_method)


@dataclass(frozen=True)
class Versioned:
    """A KV v2 value and the version it was read at (0: the path is empty)."""

    data: dict[str, Any] | None
    version: int


@dataclass(frozen=True)
class LiveMetadata:
    current_version: int
    custom_metadata: dict[str, str]


def _message(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or []
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return text or type(exc).__name__


def _translate(exc: Exception, what: str) -> Exception:
    """Map an hvac/requests error to the project's kinds."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return VaultUnavailableError(f"Vault unreachable while {what}: {type(exc).__name__}")
    if isinstance(exc, hvac_errors.InvalidRequest) and "check-and-set" in _message(exc):
        return CasMismatchError(f"check-and-set lost while {what}")
    if isinstance(exc, hvac_errors.InvalidPath):
        return NotFoundError(f"not found while {what}")
    if isinstance(exc, (hvac_errors.RateLimitExceeded, hvac_errors.InternalServerError, hvac_errors.BadGateway)):
        return TransientError(f"Vault error while {what}: {_message(exc)}")
    if isinstance(exc, (hvac_errors.VaultDown, hvac_errors.VaultNotInitialized)):
        return VaultUnavailableError(f"Vault sealed or down while {what}")
    if isinstance(exc, hvac_errors.Forbidden):
        return VaultDeniedError(f"Vault denied {what} (403): check the rotator's policy, and that its token is still valid")
    if isinstance(exc, hvac_errors.Unauthorized):
        return VaultDeniedError(f"Vault rejected the token while {what} (401)")
    if isinstance(exc, hvac_errors.VaultError):
        return PermanentError(f"Vault refused {what}: {_message(exc)}")
    return exc


class VaultStore:
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
            translated = _translate(exc, what)
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
        """Read many KV v2 paths at start-up, fast: a thread pool of plain
        keep-alive HTTP connections, without requests' per-call overhead
        (a millisecond of CPU each; 10,000 records felt it). Paths that fail
        are left out: the caller reads those one by one later."""
        self._session.ensure()
        headers = {"X-Vault-Token": self._client.token or "", **self.consistency.headers()}
        if self.connection.namespace:
            headers["X-Vault-Namespace"] = self.connection.namespace
        base = urlsplit(self.connection.url)
        if requests.utils.get_environ_proxies(self.connection.url):
            return {}  # through a proxy: leave it to the ordinary path
        local = threading.local()

        def connection() -> http.client.HTTPConnection:
            conn = getattr(local, "conn", None)
            if conn is None:
                port = base.port
                if base.scheme == "https":
                    conn = http.client.HTTPSConnection(base.hostname or "", port, timeout=self.connection.timeout, context=_ssl_context(self.connection.verify))
                else:
                    conn = http.client.HTTPConnection(base.hostname or "", port, timeout=self.connection.timeout)
                local.conn = conn
            return conn

        prefix = base.path.rstrip("/")

        def read_one(path: str) -> tuple[str, Versioned | None]:
            self.requests_made += 1
            try:
                conn = connection()
                conn.request("GET", f"{prefix}/v1/{mount}/data/{quote(path)}", headers=headers)
                response = conn.getresponse()
                body = response.read()
                self.consistency.observe(response.getheader(INDEX_HEADER))
            except (OSError, http.client.HTTPException):
                local.conn = None
                return path, None
            if response.status == 404:
                return path, Versioned(None, 0) if not body or b'"data":null' not in body else None
            if response.status != 200:
                return path, None
            payload = json.loads(body)["data"]
            return path, Versioned(payload.get("data"), int(payload["metadata"]["version"]))

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vault-read") as pool:
            found = dict(pool.map(read_one, paths))
        return {path: value for path, value in found.items() if value is not None}

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
        for key, value in updates.items():
            if len(key.encode()) > MAX_METADATA_KEY_BYTES or len(str(value).encode()) > MAX_METADATA_VALUE_BYTES:
                raise PermanentError(f"custom metadata {key!r} on {mount}/{path} exceeds KV v2's size limits")
        # The keys a write of this path just named (its answer carries them)
        # spare a read; otherwise the metadata is read first.
        with self._metadata_lock:
            existing = self._metadata_keys.pop((mount, path), None)
        if existing is None:
            current = self.read_metadata(mount, path)
            existing = frozenset(current.custom_metadata) if current else frozenset()
        if len(existing | set(updates)) > MAX_METADATA_KEYS:
            raise PermanentError(
                f"{mount}/{path} has {len(existing)} custom metadata keys; adding the rotator's would pass KV v2's limit of {MAX_METADATA_KEYS}"
            )
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

    def walk(self, mount: str, path: str) -> Iterator[str]:
        """Every leaf key below a folder, as paths relative to it."""
        for key in self.list(mount, path):
            if key.endswith("/"):
                for sub in self.walk(mount, f"{path}/{key.rstrip('/')}"):
                    yield f"{key}{sub}"
            else:
                yield key

    # -- references ----------------------------------------------------------

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


class _HvacAuthenticator:
    """`Authenticator` for `TokenSession`, over the store's hvac client.

    Login secrets are read from their files at each login (so a rotated
    secret id or a refreshed service-account token is picked up) and
    never kept."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store
        self.method = store.connection.auth_method
        self.mount = store.connection.effective_auth_mount

    @property
    def can_log_in(self) -> bool:
        return self.method in DEFAULT_AUTH_MOUNTS

    def log_in(self) -> TokenLease:
        conn, client, mount = self._store.connection, self._store._client, self.mount
        if self.method == "approle":
            secret_id = _read_file(conn.secret_id_file, "ROTATOR_VAULT_SECRET_ID_FILE")
            register_secret(secret_id)
            response = self._store._send(
                f"logging in with AppRole at auth/{mount}",
                lambda: client.auth.approle.login(role_id=conn.role_id, secret_id=secret_id, mount_point=mount),
                hide=secret_id,
            )
        elif self.method == "kubernetes":
            jwt = _read_file(conn.k8s_token_file, "the service-account token file")
            register_secret(jwt)
            response = self._store._send(
                f"logging in with Kubernetes auth at auth/{mount} as role {conn.k8s_role}",
                lambda: client.auth.kubernetes.login(role=conn.k8s_role, jwt=jwt, mount_point=mount),
                hide=jwt,
            )
        else:
            raise PermanentError(f"the {self.method!r} auth method cannot log in again: give a new VAULT_TOKEN")
        register_secret(response["auth"].get("client_token"))
        return TokenLease.from_auth(response["auth"])

    def look_up(self) -> TokenLease:
        client = self._store._client
        return TokenLease.from_lookup(self._store._send("looking up the token", lambda: client.auth.token.lookup_self())["data"])

    def renew(self) -> TokenLease:
        client = self._store._client
        return TokenLease.from_auth(self._store._send("renewing the token", lambda: client.auth.token.renew_self())["auth"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


class ConsistencyIndex:
    """The newest storage index this process has seen from the cluster.

    OpenBao's standbys answer reads from their own copy of the data, which
    lags the active node: a read right after a write, through the same
    standby, can miss it. Every response names the storage index it
    reflects (`X-Vault-Index`); a request that carries the newest one, with
    `X-Vault-Inconsistent: forward-active-node`, is answered locally only if
    the standby has caught up, and is forwarded to the active node otherwise.
    A server without the header (a single node, a dev server) never sends
    one, and then nothing is added.

    The value is opaque to clients; where it decodes as OpenBao's
    `{"cluster": ..., "value": N}`, a lower index of the same cluster never
    replaces a higher one (responses of parallel requests arrive in any
    order); otherwise the latest wins. An index of another cluster is
    ignored by the server, so a changed address costs nothing.

    A write the store could not confirm (no answer: the active node died
    with it in flight; an error, such as a lost check-and-set, which shows
    that someone else's write is newer than anything the store has seen)
    leaves the store in doubt: its newest index may predate data that
    exists. Until a write of its own succeeds, its requests name an index no
    node has reached, so that every read is forwarded to, and answered from,
    the active node's data (where a standby cannot forward, as during an
    election, the read fails as transient instead of answering from a copy
    that may be old). This needs the decoded form; with an index that does
    not decode, the newest one is sent as usual.
    """

    BEYOND_ANY = 2**62  # an index value no node reaches

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None
        self._rank: tuple[str, int] | None = None
        self._doubt = False
        self.doubts = 0  # how many writes were not confirmed (a generation, too)

    @staticmethod
    def _parse(value: str) -> tuple[str, int] | None:
        try:
            raw = value.translate(str.maketrans("-_", "+/"))  # either alphabet
            decoded = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
            return str(decoded["cluster"]), int(decoded["value"])
        except (binascii.Error, ValueError, TypeError, KeyError):
            return None

    def observe(self, value: str | None) -> None:
        if not value:
            return
        rank = self._parse(value)
        with self._lock:
            if rank is not None and self._rank is not None and rank[0] == self._rank[0] and rank[1] <= self._rank[1]:
                return
            self._value, self._rank = value, rank

    def doubt(self) -> None:
        """A write was not confirmed: read the active node's data until one is."""
        with self._lock:
            self._doubt = True
            self.doubts += 1

    def confirmed(self, value: str, *, since: int) -> None:
        """A write succeeded and named its index. It covers every write the
        store doubted before it was sent (`since`: `doubts` then), not one
        doubted while it was in flight, which may be applied after it."""
        self.observe(value)
        with self._lock:
            if self.doubts == since:
                self._doubt = False

    @property
    def in_doubt(self) -> bool:
        return self._doubt

    def headers(self) -> dict[str, str]:
        with self._lock:
            value, rank, doubt = self._value, self._rank, self._doubt
        if doubt and rank is not None:
            beyond = json.dumps({"cluster": rank[0], "value": str(self.BEYOND_ANY)}, separators=(",", ":"))
            value = base64.b64encode(beyond.encode()).decode()
        return {INDEX_HEADER: value, INCONSISTENT_HEADER: "forward-active-node"} if value else {}


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _IndexedSession(requests.Session):
    """A requests session that carries the consistency index both ways."""

    def __init__(self, index: ConsistencyIndex) -> None:
        super().__init__()
        self.index = index

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        since = self.index.doubts
        extra = self.index.headers()
        if extra:
            kwargs["headers"] = {**extra, **(kwargs.get("headers") or {})}
        is_write = (method.decode() if isinstance(method, bytes) else method).upper() in _WRITES
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException:
            if is_write:
                self.index.doubt()
            raise
        value = response.headers.get(INDEX_HEADER)
        if is_write and response.status_code >= 400:
            self.index.doubt()
        elif is_write and value:
            self.index.confirmed(value, since=since)
        else:
            self.index.observe(value)
        return response


def _session_for(url: str, verify: bool | str, index: ConsistencyIndex | None = None) -> requests.Session:
    """A session that reads proxy settings (HTTPS_PROXY, NO_PROXY) once, not
    on every request: requests' per-request environment scan cost half a
    millisecond of CPU per Vault call, which 10,000 credentials feel. It
    carries `index` on every request and response (see ConsistencyIndex)."""
    session = _IndexedSession(index or ConsistencyIndex())
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(url)
    # hvac prefers a given session's own verify over its argument.
    session.verify = verify
    # Every rotation thread keeps its connection: requests' default pool of
    # 10 would drop and reopen connections at ROTATOR_MAX_CONCURRENCY 16.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _read_file(path: str | None, what: str) -> str:
    if not path:
        raise PermanentError(f"{what} is not set")
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise PermanentError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not value:
        raise PermanentError(f"{what} {path} is empty")
    return value
