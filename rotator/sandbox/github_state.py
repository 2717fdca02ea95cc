"""The fake GitHub's state and its Python API: Apps, installations, tokens (as
SHA-256 hashes only), deploy keys, rate limit and injected faults; set-up and
introspection for tests. The HTTP side is rotator.sandbox.github."""

from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import re
import secrets
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.core.clock import Clock, SystemClock, to_rfc3339
from rotator.sandbox.github_wire import _error_body, _HttpError
from rotator.sandbox.serving import BackgroundServer

TOKEN_LIFETIME = timedelta(hours=1)
SECONDARY_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID."
)


_LEVELS = {"read": 1, "write": 2, "admin": 3}


_ALPHABET = string.ascii_letters + string.digits


DEFAULT_PERMISSIONS = {"administration": "write", "contents": "read", "metadata": "read"}


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake saw it. Holds no credential: only how it authenticated."""

    method: str
    path: str
    body: Any
    auth: str  # "jwt", "token", "none"


@dataclass
class _Installation:
    installation_id: int
    app_id: str
    repositories: list[str]
    permissions: dict[str, str]


@dataclass
class _Token:
    installation_id: int
    app_id: str
    expires_at: datetime
    repositories: list[str]
    permissions: dict[str, str]
    revoked: bool = False


@dataclass
class _DeployKey:
    id: int
    key: str
    title: str
    read_only: bool
    created_at: datetime
    last_used: datetime | None = None


@dataclass
class _Fault:
    pattern: re.Pattern[str] | None
    method: str | None
    status: int
    remaining: int | None
    headers: dict[str, str]
    body: Any
    after: bool = False


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_body(public_key: str) -> str:
    return " ".join(public_key.split()[:2])


class GitHubState:
    """The fake GitHub's state and its Python API: Apps, installations, tokens (as"""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        path_prefix: str = "",
        rate_limit: int = 5000,
        latency: float = 0.0,
        token_format: str = "both",
    ) -> None:
        self.clock = clock or SystemClock()
        self.path_prefix = path_prefix.rstrip("/")  # "/api/v3" imitates GitHub Enterprise Server
        self.latency = latency  # real seconds each answer is held back (demo realism, overlap tests)
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._apps: dict[str, Any] = {}
        self._installations: dict[int, _Installation] = {}
        self._tokens: dict[str, _Token] = {}  # by SHA-256 hex of the token
        self._keys: dict[str, dict[int, _DeployKey]] = {}
        self._repo_ids: dict[str, int] = {}
        self._faults: list[_Fault] = []
        self._requests: collections.deque[RecordedRequest] = collections.deque(maxlen=10_000)
        self._key_ids = itertools.count(70_000_001)
        self._rate_limit = rate_limit
        self._remaining = rate_limit
        self._reset_at = self.clock.now() + timedelta(hours=1)
        self._writes_in_flight: dict[str, int] = {}
        self.max_concurrent_writes: dict[str, int] = {}
        # The smallest gap between two writes as one App, on the fake's clock.
        self.min_write_gap: dict[str, float] = {}
        self._last_write_at: dict[str, datetime] = {}
        self._client_ids: dict[str, str] = {}
        # "classic" (ghs_ + 36), "stateless" (ghs_APPID_JWT, about 520 characters)
        # or "both": alternate, as during GitHub's staged rollout.
        self.token_format = token_format
        self._minted = 0
        self._server: BackgroundServer | None = None

    # -- set-up --------------------------------------------------------------

    def add_app(self, app_id: int | str, public_key_pem: str | bytes, *, client_id: str | None = None) -> None:
        """Register an App's public key; JWTs may name it by App id or, if given, by Client ID."""
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        with self._lock:
            self._apps[str(app_id)] = serialization.load_pem_public_key(pem)
            if client_id:
                self._apps[client_id] = self._apps[str(app_id)]
                self._client_ids[client_id] = str(app_id)

    def create_app(
        self,
        app_id: int | str,
        installation_id: int,
        *,
        repositories: Iterable[str] = (),
        permissions: Mapping[str, str] | None = None,
    ) -> str:
        """Register an App with a fresh key and one installation; return the
        App's private key PEM (to store in Vault for the rotator to read)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.add_app(app_id, public)
        self.add_installation(installation_id, app_id, repositories=repositories, permissions=permissions)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def add_installation(
        self,
        installation_id: int,
        app_id: int | str,
        *,
        repositories: Iterable[str] = (),
        permissions: Mapping[str, str] | None = None,
    ) -> None:
        """An installation of a registered App on `OWNER/NAME` repositories."""
        with self._lock:
            if str(app_id) not in self._apps:
                raise ValueError(f"add_app({app_id}, ...) first")
            repos = list(repositories)
            for repo in repos:
                self._repo_ids.setdefault(repo, 500_000 + len(self._repo_ids))
                self._keys.setdefault(repo, {})
            self._installations[int(installation_id)] = _Installation(
                int(installation_id), str(app_id), repos, dict(permissions or DEFAULT_PERMISSIONS)
            )

    def add_deploy_key(self, repo: str, public_key: str, *, title: str, read_only: bool = True) -> int:
        """A key someone else added (by hand, another tool)."""
        with self._lock:
            key = _DeployKey(next(self._key_ids), _key_body(public_key), title, read_only, self.clock.now())
            self._keys.setdefault(repo, {})[key.id] = key
            return key.id

    def use_deploy_key(self, repo: str, key_id: int | str, *, at: datetime | None = None) -> None:
        """Record an SSH use of a deploy key (sets `last_used`)."""
        with self._lock:
            self._keys[repo][int(key_id)].last_used = at or self.clock.now()

    def inject(
        self,
        path_regex: str | None = None,
        status: int = 503,
        *,
        count: int | None = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        method: str | None = None,
        after: bool = False,
    ) -> None:
        """The next `count` matching requests (None: until `clear_faults`) get
        `status`. `body` defaults to a GitHub-shaped error. `after`: carry the
        request out first, then answer with the fault (a response lost after
        the effect)."""
        with self._lock:
            pattern = re.compile(path_regex) if path_regex else None
            self._faults.append(_Fault(pattern, method, status, count, dict(headers or {}), body, after))

    def inject_secondary_rate_limit(self, *, count: int | None = 1, status: int = 403, retry_after: int | None = None) -> None:
        headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
        self.inject(None, status, count=count, headers=headers, body=_error_body(status, SECONDARY_LIMIT))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def exhaust_rate_limit(self, *, reset_in: float = 60.0) -> None:
        """Spend the primary rate limit; it comes back `reset_in` seconds later."""
        with self._lock:
            self._remaining = 0
            self._reset_at = self.clock.now() + timedelta(seconds=reset_in)

    # -- introspection -------------------------------------------------------

    def active_tokens(self) -> int:
        with self._lock:
            return len(self.active_token_hashes())

    def active_token_hashes(self) -> set[str]:
        """SHA-256 hex digests of the tokens that still work."""
        now = self.clock.now()
        with self._lock:
            return {h for h, t in self._tokens.items() if not t.revoked and t.expires_at > now}

    def token_grant(self, token_hash: str) -> tuple[list[str], dict[str, str]]:
        """(repositories, permissions) a token was minted with, by its hash."""
        with self._lock:
            token = self._tokens[token_hash]
            return list(token.repositories), dict(token.permissions)

    def deploy_keys(self, repo: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._key_json(repo, k) for k in self._keys.get(repo, {}).values()]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    # -- JSON shapes ---------------------------------------------------------

    def _repo_json(self, repo: str) -> dict[str, Any]:
        owner, name = repo.split("/", 1)
        return {"id": self._repo_ids[repo], "name": name, "full_name": repo, "private": True,
                "owner": {"login": owner}, "url": f"{self.url}/repos/{repo}"}

    def _key_json(self, repo: str, key: _DeployKey) -> dict[str, Any]:
        return {
            "id": key.id, "key": key.key, "url": f"{self.url}/repos/{repo}/keys/{key.id}", "title": key.title,
            "verified": True, "created_at": to_rfc3339(key.created_at), "read_only": key.read_only,
            "added_by": "rotator-fake[bot]", "last_used": to_rfc3339(key.last_used) if key.last_used else None,
            "enabled": True,
        }


    # -- the rules GitHub applies, as state ----------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method) or (fault.pattern is not None and not fault.pattern.search(path)):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
            return None

    def _is_rate_limited(self) -> bool:
        with self._lock:
            if self.clock.now() >= self._reset_at:
                self._remaining = self._rate_limit
                self._reset_at = self.clock.now() + timedelta(hours=1)
            return self._remaining <= 0

    def _new_token(self, app_id: str, installation_id: int, expires_at: datetime) -> str:
        """A token in the classic or the stateless format (`token_format`)."""
        self._minted += 1
        stateless = self.token_format == "stateless" or (self.token_format == "both" and self._minted % 2 == 0)
        if not stateless:
            return "ghs_" + "".join(secrets.choice(_ALPHABET) for _ in range(36))
        # "ghs_APPID_JWT" (GitHub's description of the access_tokens call): a
        # JWT-like body whose claims and signature we only imitate.
        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = part(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        claims = part(json.dumps({"iid": installation_id, "exp": int(expires_at.timestamp()),
                                  "jti": secrets.token_hex(16), "rid": secrets.token_hex(24)}).encode())
        return f"ghs_{app_id}_{header}.{claims}.{part(secrets.token_bytes(256))}"

    def _forget_dead_tokens(self) -> None:
        """Drop tokens dead for a day, so a long demo does not grow without end."""
        horizon = self.clock.now() - timedelta(days=1)
        for digest in [h for h, t in self._tokens.items() if t.expires_at < horizon]:
            del self._tokens[digest]

    def _granted_repos(self, installation: _Installation, names: Any) -> list[str]:
        if names is None:
            return list(installation.repositories)
        by_name = {r.split("/", 1)[1]: r for r in installation.repositories}
        if not isinstance(names, list) or not all(isinstance(n, str) and n in by_name for n in names):
            raise _HttpError(422, "There is at least one repository that does not exist or is not accessible to the parent installation.")
        return [by_name[n] for n in names]

    def _granted_permissions(self, installation: _Installation, wanted: Any) -> dict[str, str]:
        if wanted is None:
            return dict(installation.permissions)
        if not isinstance(wanted, dict):
            raise _HttpError(422, "Invalid request.")
        for name, level in wanted.items():
            have = _LEVELS.get(installation.permissions.get(name, ""), 0)
            if level not in _LEVELS or _LEVELS[level] > have:
                raise _HttpError(422, "The permissions requested are not granted to this installation.")
        return dict(wanted)
