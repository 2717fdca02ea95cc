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
  messages name paths, never values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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

T = TypeVar("T")

# KV v2's limits on custom metadata.
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 512


@dataclass(frozen=True)
class VaultConnection:
    """How to reach Vault and log in. Built from settings by the caller."""

    url: str
    token: str | None = None
    namespace: str | None = None
    verify: bool | str = True  # False, True, or a CA bundle path
    auth_method: str = "token"  # token | approle | kubernetes
    role_id: str | None = None
    secret_id_file: str | None = None
    k8s_role: str | None = None
    k8s_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    timeout: float = 10.0


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
        return PermanentError(f"Vault denied {what} (403): check the rotator's policy")
    if isinstance(exc, hvac_errors.Unauthorized):
        return PermanentError(f"Vault rejected the token while {what} (401)")
    if isinstance(exc, hvac_errors.VaultError):
        return PermanentError(f"Vault refused {what}: {_message(exc)}")
    return exc


class VaultStore:
    """KV v2 reads and check-and-set writes, secret references, health."""

    def __init__(self, connection: VaultConnection, *, client: hvac.Client | None = None) -> None:
        self.connection = connection
        self._client = client or hvac.Client(
            url=connection.url,
            token=connection.token,
            namespace=connection.namespace,
            verify=connection.verify,
            timeout=connection.timeout,
        )
        self._login_lock = threading.Lock()
        self.requests_made = 0  # counted for the idle-tick benchmark and metrics

    # -- plumbing ----------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        self.requests_made += 1
        try:
            return fn()
        except Exception as exc:  # translated below, re-raised as our kinds
            translated = _translate(exc, what)
            if translated is exc:
                raise
            raise translated from None

    @property
    def _kv(self) -> Any:
        return self._client.secrets.kv.v2

    def login(self) -> None:
        """Log in with the configured method (token: nothing to do)."""
        conn = self.connection
        with self._login_lock:
            if conn.auth_method == "approle":
                secret_id = _read_file(conn.secret_id_file, "ROTATOR_VAULT_SECRET_ID_FILE")
                self._call("logging in with AppRole", lambda: self._client.auth.approle.login(role_id=conn.role_id, secret_id=secret_id))
            elif conn.auth_method == "kubernetes":
                jwt = _read_file(conn.k8s_token_file, "the service-account token file")
                self._call("logging in with Kubernetes auth", lambda: self._client.auth.kubernetes.login(role=conn.k8s_role, jwt=jwt))

    def token_info(self) -> dict[str, Any]:
        """The token's own lookup (ttl, renewable); raises if Vault is unreachable or the token invalid."""
        return self._call("looking up the token", lambda: self._client.auth.token.lookup_self())["data"]

    def renew_token(self, increment: int | None = None) -> dict[str, Any]:
        return self._call("renewing the token", lambda: self._client.auth.token.renew_self(increment=increment))["auth"]

    def is_ready(self) -> bool:
        try:
            self.token_info()
            return True
        except Exception:  # readiness is a yes/no
            return False

    # -- KV v2 -------------------------------------------------------------

    def read(self, mount: str, path: str) -> Versioned:
        """The current version of `mount/path` (data None, version 0 when absent or deleted)."""
        try:
            response = self._call(
                f"reading {mount}/{path}",
                lambda: self._kv.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True),
            )
        except NotFoundError:
            return self._version_of_missing(mount, path)
        payload = response["data"]
        return Versioned(payload.get("data"), int(payload["metadata"]["version"]))

    def _version_of_missing(self, mount: str, path: str) -> Versioned:
        # A deleted latest version still has a version number, which the
        # next check-and-set write must name.
        meta = self.read_metadata(mount, path)
        return Versioned(None, meta.current_version if meta else 0)

    def read_version(self, mount: str, path: str, version: int) -> dict[str, Any] | None:
        try:
            response = self._call(
                f"reading {mount}/{path} version {version}",
                lambda: self._kv.read_secret_version(path=path, mount_point=mount, version=version, raise_on_deleted_version=True),
            )
        except NotFoundError:
            return None
        return response["data"].get("data")

    def write(self, mount: str, path: str, data: Mapping[str, Any], *, cas: int) -> int:
        """Check-and-set write; returns the new version. `cas=0`: only if absent."""
        response = self._call(
            f"writing {mount}/{path}",
            lambda: self._kv.create_or_update_secret(path=path, secret=dict(data), cas=cas, mount_point=mount),
        )
        return int(response["data"]["version"])

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
        current = self.read_metadata(mount, path)
        existing = set(current.custom_metadata) if current else set()
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


def _read_file(path: str | None, what: str) -> str:
    if not path:
        raise PermanentError(f"{what} is not set")
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise PermanentError(f"cannot read {what} {path}: {exc.strerror}") from None
