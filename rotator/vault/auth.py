"""Keeping the store's Vault token alive: log in, renew, log in again.

Invariants:
- a token is renewed at 2/3 of its TTL; when a renewal no longer grants
  the full TTL (its max TTL is near) or the token cannot be renewed, the
  `approle` and `kubernetes` methods log in again, while the `token` method,
  which cannot, logs `vault.token_expiring` once;
- after a 403, a new login happens only if the token itself was rejected
  (its own lookup fails too), and at most once per token however many
  threads saw the 403: each login bumps `generation`, and a caller whose
  request used an older generation just retries with the new token;
- one lock serialises logins and renewals; a renewal that is due never
  blocks a request while the current token is still valid;
- token values stay inside the transport: nothing here sees, logs or
  formats one, and every event carries only method, mount, TTLs and reasons.

This module does no I/O itself; `rotator.vault.store` implements `Authenticator`
with hvac, and tests drive `TokenSession` with a fake one and a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rotator.audit.events import get_logger
from rotator.config.settings import DEFAULT_AUTH_MOUNTS
from rotator.core.errors import PermanentError, RotatorError
from rotator.core.redaction import register_secret

if TYPE_CHECKING:
    from rotator.vault.store import VaultStore

RENEW_AT_FRACTION = 2 / 3
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 5.0


class VaultDeniedError(PermanentError):
    """Vault answered 401/403: the token is invalid or its policy does not allow the request."""


@dataclass(frozen=True)
class TokenLease:
    """What Vault said about a token: seconds left (0: never expires), and
    the TTL a renewal grants when the token is still far from its max TTL."""

    ttl: int
    renewable: bool
    full_ttl: int

    @classmethod
    def from_auth(cls, auth: dict[str, Any]) -> TokenLease:
        """From the `auth` block of a login or renew-self response."""
        ttl = int(auth.get("lease_duration") or 0)
        return cls(ttl, bool(auth.get("renewable")), ttl)

    @classmethod
    def from_lookup(cls, data: dict[str, Any]) -> TokenLease:
        """From the `data` block of a lookup-self response."""
        ttl = int(data.get("ttl") or 0)
        return cls(ttl, bool(data.get("renewable")), int(data.get("creation_ttl") or ttl))


class Authenticator(Protocol):
    """The Vault calls a session needs; errors arrive as the project's kinds."""

    method: str
    mount: str | None

    @property
    def can_log_in(self) -> bool: ...

    def log_in(self) -> TokenLease: ...

    def look_up(self) -> TokenLease: ...

    def renew(self) -> TokenLease: ...


def renew_due_at(lease: TokenLease, obtained_at: float) -> float | None:
    """When to act on a token obtained at `obtained_at` (None: it never expires)."""
    return None if lease.ttl <= 0 else obtained_at + lease.ttl * RENEW_AT_FRACTION


def is_capped(renewed: TokenLease, granted: TokenLease) -> bool:
    """True when a renewal granted less than the token's full TTL: its max TTL is near."""
    return renewed.ttl < granted.full_ttl


def retry_delay(seconds_left: float) -> float:
    """How long to wait before trying a failed renewal or login again."""
    return min(RETRY_MAX_SECONDS, max(RETRY_MIN_SECONDS, seconds_left / 3))


class TokenSession:
    """One Vault token shared by every thread of a store, kept valid."""

    def __init__(self, auth: Authenticator, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._auth = auth
        self._now = monotonic
        self._lock = threading.Lock()
        self._lease: TokenLease | None = None
        self._obtained_at = 0.0
        self._due_at: float | None = None  # next renewal, login or check; None: nothing to do
        self._expiring_reported = False
        self.generation = 0

    @property
    def log(self) -> Any:
        # Looked up at each use, so logging configured after the store exists applies.
        return get_logger()

    # -- what the store calls ------------------------------------------------

    def start(self) -> None:
        """Log in (or look the given token up). Raises on a refusal; an
        unreachable Vault is logged and retried on first use."""
        with self._lock:
            try:
                if self._auth.can_log_in:
                    self._log_in("start")
                else:
                    self._adopt(self._auth.look_up(), self._now())
                    self._log_login("start")
            except VaultDeniedError:
                if self._auth.can_log_in:
                    raise
                raise PermanentError(
                    "Vault rejected VAULT_TOKEN (403): it is invalid, expired or revoked, or its policy lacks auth/token/lookup-self"
                ) from None
            except PermanentError:
                raise
            except RotatorError as exc:
                self.log.warning("vault.login_failed", method=self._auth.method, error=str(exc), will_retry=True)
                self._due_at = self._now() + retry_delay(0)

    def ensure(self) -> None:
        """Before a request: log in if there is no valid token; renew if due,
        unless another thread is already at it."""
        if self._needs_login():
            with self._lock:
                if self._needs_login():
                    self._log_in("expired" if self._lease else "start")
            return
        due = self._due_at
        if due is not None and self._now() >= due and self._lock.acquire(blocking=False):
            try:
                self._act()
            finally:
                self._lock.release()

    def maintain(self) -> None:
        """Renew or log in again if due; never raises (the daemon calls it each tick)."""
        with self._lock:
            try:
                if self._needs_login():
                    self._try_log_in("expired" if self._lease else "start")
                elif self._due_at is not None and self._now() >= self._due_at:
                    self._act()
            except Exception as exc:  # a surprise here must not stop the daemon's loop
                self.log.error("vault.token_renewal_failed", method=self._auth.method, error=f"unexpected {type(exc).__name__}")
                self._due_at = self._now() + RETRY_MAX_SECONDS

    def expires_in(self) -> float | None:
        """Seconds the current token has left (inf: it never expires; None: no token yet)."""
        lease = self._lease
        if lease is None:
            return None
        return float("inf") if lease.ttl <= 0 else self._seconds_left()

    def recover(self, generation: int) -> bool:
        """After a 403 on a request made with token `generation`: True if the
        request is worth one retry with a new token."""
        with self._lock:
            if generation != self.generation:
                return True  # another thread logged in meanwhile
            if not self._auth.can_log_in:
                return False
            try:
                self._auth.look_up()
                return False  # the token is fine: the policy denies the request
            except VaultDeniedError:
                pass
            except RotatorError:
                return False
            self._log_in("token_rejected")
            return True

    # -- inside the lock -------------------------------------------------------

    def _needs_login(self) -> bool:
        if not self._auth.can_log_in:
            return False
        lease = self._lease
        if lease is None:
            return True
        return lease.ttl > 0 and self._now() >= self._obtained_at + lease.ttl

    def _log_in(self, reason: str) -> None:
        obtained_at = self._now()
        lease = self._auth.log_in()
        self.generation += 1
        self._adopt(lease, obtained_at)
        self._log_login(reason)

    def _try_log_in(self, reason: str) -> None:
        try:
            self._log_in(reason)
        except RotatorError as exc:
            self.log.error("vault.login_failed", method=self._auth.method, error=str(exc), will_retry=True)
            self._due_at = self._now() + retry_delay(self._seconds_left())

    def _log_login(self, reason: str) -> None:
        lease = self._lease
        assert lease is not None
        self.log.info("vault.login", method=self._auth.method, auth_mount=self._auth.mount, reason=reason,
                      ttl_seconds=lease.ttl, renewable=lease.renewable)

    def _adopt(self, lease: TokenLease, obtained_at: float) -> None:
        self._lease = lease
        self._obtained_at = obtained_at
        self._due_at = renew_due_at(lease, obtained_at)
        self._expiring_reported = False

    def _seconds_left(self) -> float:
        lease = self._lease
        if lease is None or lease.ttl <= 0:
            return 0.0
        return max(0.0, self._obtained_at + lease.ttl - self._now())

    def _act(self) -> None:
        """The due step: look up, renew, log in again, or report expiry."""
        lease = self._lease
        now = self._now()
        try:
            if lease is None:
                self._adopt(self._auth.look_up(), now)
                self._log_login("start")
            elif lease.renewable:
                self._renew(lease, now)
            elif self._auth.can_log_in:
                self._log_in("not_renewable")
            else:
                self._report_expiring("not_renewable")
        except VaultDeniedError as exc:
            if self._auth.can_log_in:
                self._try_log_in("renewal_denied")
            else:
                self.log.error("vault.token_rejected", method=self._auth.method, error=str(exc))
                self._report_expiring("renewal_denied")
        except RotatorError as exc:
            self.log.warning("vault.token_renewal_failed", method=self._auth.method, error=str(exc), will_retry=True)
            self._due_at = now + retry_delay(self._seconds_left())

    def _renew(self, lease: TokenLease, now: float) -> None:
        renewed = self._auth.renew()
        if not is_capped(renewed, lease):
            self._adopt(TokenLease(renewed.ttl, renewed.renewable, lease.full_ttl), now)
            self.log.info("vault.token_renewed", method=self._auth.method, ttl_seconds=renewed.ttl)
        elif self._auth.can_log_in:
            self._log_in("max_ttl")
        else:
            self._lease = TokenLease(renewed.ttl, renewed.renewable, lease.full_ttl)
            self._obtained_at = now
            self._report_expiring("max_ttl")

    def _report_expiring(self, reason: str) -> None:
        self._due_at = None  # nothing more can be done for this token
        if not self._expiring_reported:
            self._expiring_reported = True
            self.log.warning("vault.token_expiring", method=self._auth.method, reason=reason,
                             expires_in_seconds=round(self._seconds_left()))


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
