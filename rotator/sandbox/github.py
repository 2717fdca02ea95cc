"""A stateful fake of the slice of GitHub's REST API the GitHub providers use,
served over real HTTP on a loopback port, for tests and `rotator demo`.

    fake = FakeGitHub().start()
    fake.add_app(123, public_key_pem)
    fake.add_installation(456, 123, repositories=["acme/api"])
    ...  # point api_url at fake.url
    fake.stop()

Endpoints: POST /app/installations/{id}/access_tokens (App JWT);
DELETE /installation/token, GET /installation/repositories,
GET /repos/{owner}/{repo}, and GET/POST /repos/{owner}/{repo}/keys,
GET/DELETE /repos/{owner}/{repo}/keys/{id} (installation token).

Invariants it keeps, as GitHub does:
- A request without `User-Agent` gets 403. Errors are GitHub-shaped:
  `{"message", "documentation_url", "status"}`; validation errors add
  `errors`. Every answer carries `x-ratelimit-*` headers.
- App JWTs are checked: RS256 signature by the registered key, `iss` a
  known App (by App id or by Client ID), `exp` in the future and at most 10
  minutes ahead, `iat` not more than a minute in the future.
- Tokens come in both of GitHub's formats (`token_format`, default "both",
  alternating): classic `ghs_` + 36 characters, and the stateless
  `ghs_APPID_JWT` (about 520 characters); they live one hour by the
  injected clock, and are stored only as SHA-256 hashes: introspection never
  hands a token back. A revoked or expired token gets 401.
- A token reaches only its installation's repositories (or the subset it was
  minted for), and deploy keys need `administration` read/write.
- Deploy-key content is unique per repository (422 otherwise); a title is
  required; `read_only` defaults to false when not sent.
- Writes are timed per App on the injected clock: `min_write_gap` is the
  smallest gap seen (GitHub asks for at least a second).

Simplifications: one rate-limit bucket for all callers; no organisations,
users or webhooks. Nothing in the daemon's path imports this module.
"""

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
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.clock import Clock, SystemClock, to_rfc3339
from rotator.sandbox.github_wire import (  # noqa: F401 - _Answer is imported by tests
    _Answer,
    _error,
    _error_body,
    _Handler,
    _HttpError,
    _parse_json,
    _validation,
)
from rotator.sandbox.serving import BackgroundServer

TOKEN_LIFETIME = timedelta(hours=1)
JWT_MAX_AHEAD = 600  # seconds: GitHub's ceiling on exp
JWT_DRIFT = 60  # seconds of clock drift tolerated on iat
NO_USER_AGENT = (
    "Request forbidden by administrative rules. Please make sure your request has a User-Agent header "
    "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). "
    "Check https://developer.github.com for other possible causes."
)
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


class FakeGitHub:
    """The fake: a Python API for set-up and introspection, plus an HTTP server."""

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

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FakeGitHub:
        self._server = BackgroundServer((self._host, self._port), _Handler, name="fake-github", fake=self)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API base URL to configure as `api_url`."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.address
        return f"http://{host}:{port}{self.path_prefix}"

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

    # -- HTTP ----------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], raw_body: bytes) -> _Answer:
        """Answer one request (called by the HTTP handler; usable directly)."""
        parts = urlsplit(raw_path)
        path = parts.path
        if self.path_prefix and path.startswith(self.path_prefix):
            path = path[len(self.path_prefix):]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not headers.get("user-agent"):
            return self._with_rate_headers(_error(403, NO_USER_AGENT), spend=False)
        body = _parse_json(raw_body)
        auth = headers.get("authorization", "")
        self._record(method, path, body, auth)
        fault = self._take_fault(method, path)
        if fault is not None and fault.after:
            try:
                self._route(method, path, query, auth, body)
            except _HttpError:
                pass
        if fault is not None:
            answer = _Answer(fault.status, fault.body if fault.body is not None else _error_body(fault.status), {}, True)
            answer = self._with_rate_headers(answer, spend=True)
            answer.headers.update(fault.headers)
            return answer
        if self._is_rate_limited():
            limited = _error(403, "API rate limit exceeded. Check out the documentation for more details.")
            return self._with_rate_headers(limited, spend=False)
        try:
            answer = self._route(method, path, query, auth, body)
        except _HttpError as exc:
            answer = _Answer(exc.status, _error_body(exc.status, exc.message, exc.errors))
        return self._with_rate_headers(answer, spend=True)

    def _route(self, method: str, path: str, query: dict[str, str], auth: str, body: Any) -> _Answer:
        for route_method, pattern, kind, handler in _ROUTES:
            match = pattern.match(path)
            if match is None or route_method != method:
                continue
            if kind == "jwt":
                app_id = self._check_jwt(auth)
                return self._guarded_write(method, app_id, lambda: handler(self, app_id, match, query, body))
            token = self._check_token(auth)
            return self._guarded_write(method, token.app_id, lambda: handler(self, token, match, query, body))
        raise _HttpError(404, "Not Found")

    def _guarded_write(self, method: str, app_id: str, call: Callable[[], _Answer]) -> _Answer:
        """Run a handler, counting concurrent writes per App (GitHub's secondary limits)."""
        is_write = method in {"POST", "DELETE", "PUT", "PATCH"}
        if is_write:
            with self._lock:
                now = self.clock.now()
                last = self._last_write_at.get(app_id)
                if last is not None:
                    gap = (now - last).total_seconds()
                    self.min_write_gap[app_id] = min(self.min_write_gap.get(app_id, gap), gap)
                self._last_write_at[app_id] = now
                now_in_flight = self._writes_in_flight.get(app_id, 0) + 1
                self._writes_in_flight[app_id] = now_in_flight
                self.max_concurrent_writes[app_id] = max(self.max_concurrent_writes.get(app_id, 0), now_in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)  # simulated network/server time, not a test wait
            with self._lock:
                return call()
        finally:
            if is_write:
                with self._lock:
                    self._writes_in_flight[app_id] -= 1

    def _record(self, method: str, path: str, body: Any, auth: str) -> None:
        credential = auth.split(" ", 1)[-1] if auth else ""
        kind = "none" if not credential else ("jwt" if credential.count(".") == 2 else "token")
        with self._lock:
            self._requests.append(RecordedRequest(method, path, body, kind))

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

    def _with_rate_headers(self, answer: _Answer, *, spend: bool) -> _Answer:
        with self._lock:
            if spend and self._remaining > 0:
                self._remaining -= 1
            answer.headers.update({
                "x-ratelimit-limit": str(self._rate_limit),
                "x-ratelimit-remaining": str(self._remaining),
                "x-ratelimit-used": str(self._rate_limit - self._remaining),
                "x-ratelimit-reset": str(int(self._reset_at.timestamp())),
                "x-ratelimit-resource": "core",
            })
        return answer

    # -- authentication ------------------------------------------------------

    def _check_jwt(self, auth: str) -> str:
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() != "bearer" or credential.count(".") != 2:
            raise _HttpError(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(credential, options={"verify_signature": False})
            app_key = self._apps.get(str(claims.get("iss")))
            if app_key is None or jwt.get_unverified_header(credential).get("alg") != "RS256":
                raise _HttpError(401, "A JSON web token could not be decoded")
            claims = jwt.decode(
                credential, app_key, algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            raise _HttpError(401, "A JSON web token could not be decoded") from None
        self._check_jwt_times(claims)
        return self._client_ids.get(str(claims["iss"]), str(claims["iss"]))

    def _check_jwt_times(self, claims: Mapping[str, Any]) -> None:
        now = self.clock.now().timestamp()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp <= now:
            raise _HttpError(401, "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")
        if exp > now + JWT_MAX_AHEAD:
            raise _HttpError(401, "'Expiration time' claim ('exp') is too far in the future")
        if not isinstance(iat, int | float) or iat > now + JWT_DRIFT:
            raise _HttpError(401, "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued")

    def _check_token(self, auth: str) -> _Token:
        scheme, _, credential = auth.partition(" ")
        if not credential:
            raise _HttpError(401, "Requires authentication")
        if scheme.lower() not in {"bearer", "token"}:
            raise _HttpError(401, "Bad credentials")
        if credential.count(".") == 2 and not credential.startswith("ghs_"):  # an App JWT cannot act as an installation
            raise _HttpError(403, "Resource not accessible by integration")
        token = self._tokens.get(_hash(credential))
        if token is None or token.revoked or token.expires_at <= self.clock.now():
            raise _HttpError(401, "Bad credentials")
        return token

    # -- handlers ------------------------------------------------------------

    def mint_token(self, app_id: str, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        installation = self._installations.get(int(match["id"]))
        if installation is None or installation.app_id != app_id:
            raise _HttpError(404, "Not Found")
        body = body if isinstance(body, dict) else {}
        repos = self._granted_repos(installation, body.get("repositories"))
        permissions = self._granted_permissions(installation, body.get("permissions"))
        expires_at = self.clock.now() + TOKEN_LIFETIME
        token = self._new_token(app_id, installation.installation_id, expires_at)
        self._forget_dead_tokens()
        self._tokens[_hash(token)] = _Token(installation.installation_id, app_id, expires_at, repos, permissions)
        answer: dict[str, Any] = {
            "token": token,
            "expires_at": to_rfc3339(expires_at),
            "permissions": permissions,
            "repository_selection": "selected",
        }
        if body.get("repositories"):
            answer["repositories"] = [self._repo_json(r) for r in repos]
        return _Answer(201, answer)

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

    def revoke_token(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        token.revoked = True
        return _Answer(204)

    def list_installation_repos(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        page, per_page = _paging(query)
        chunk = token.repositories[(page - 1) * per_page: page * per_page]
        answer = {"total_count": len(token.repositories), "repository_selection": "selected",
                  "repositories": [self._repo_json(r) for r in chunk]}
        return _Answer(200, answer, self._link("/installation/repositories", page, per_page, len(token.repositories)))

    def get_repo(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        return _Answer(200, self._repo_json(self._reachable_repo(token, match)))

    def list_keys(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        repo = self._reachable_repo(token, match, need="read")
        keys = sorted(self._keys[repo].values(), key=lambda k: k.id)
        page, per_page = _paging(query)
        chunk = keys[(page - 1) * per_page: page * per_page]
        return _Answer(200, [self._key_json(repo, k) for k in chunk], self._link(f"/repos/{repo}/keys", page, per_page, len(keys)))

    def add_key(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        repo = self._reachable_repo(token, match, need="write")
        body = body if isinstance(body, dict) else {}
        title, key, read_only = body.get("title"), body.get("key"), body.get("read_only", False)
        if not isinstance(title, str) or not title.strip():
            raise _validation("missing_field", "title")
        if not isinstance(key, str) or not key.strip():
            raise _validation("missing_field", "key")
        if not isinstance(read_only, bool):
            raise _HttpError(422, "Invalid request.\n\nFor 'properties/read_only', is not a boolean.")
        try:
            serialization.load_ssh_public_key(key.encode())
        except (ValueError, TypeError, IndexError):
            raise _validation("custom", "key", "key is invalid. You must supply a key in OpenSSH public key format") from None
        if any(k.key == _key_body(key) for k in self._keys[repo].values()):
            raise _validation("custom", "key", "key is already in use")
        record = _DeployKey(next(self._key_ids), _key_body(key), title, read_only, self.clock.now())
        self._keys[repo][record.id] = record
        return _Answer(201, self._key_json(repo, record))

    def get_key(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        repo = self._reachable_repo(token, match, need="read")
        key = self._keys[repo].get(int(match["key_id"]))
        if key is None:
            raise _HttpError(404, "Not Found")
        return _Answer(200, self._key_json(repo, key))

    def delete_key(self, token: _Token, match: re.Match[str], query: dict[str, str], body: Any) -> _Answer:
        repo = self._reachable_repo(token, match, need="write")
        if self._keys[repo].pop(int(match["key_id"]), None) is None:
            raise _HttpError(404, "Not Found")
        return _Answer(204)

    def _reachable_repo(self, token: _Token, match: re.Match[str], *, need: str | None = None) -> str:
        """The repo's canonical name if the token reaches it, with `administration` >= need."""
        wanted = f"{match['owner']}/{match['repo']}".lower()
        repo = next((r for r in token.repositories if r.lower() == wanted), None)
        if repo is None:
            raise _HttpError(404, "Not Found")
        if need and _LEVELS.get(token.permissions.get("administration", ""), 0) < _LEVELS[need]:
            raise _HttpError(403, "Resource not accessible by integration")
        return repo

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

    def _link(self, path: str, page: int, per_page: int, total: int) -> dict[str, str]:
        last = max(1, -(-total // per_page))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?{urlencode({"per_page": per_page, "page": page + 1})}>; rel="next"')
            links.append(f'<{self.url}{path}?{urlencode({"per_page": per_page, "page": last})}>; rel="last"')
        return {"link": ", ".join(links)} if links else {}


_ROUTES: list[tuple[str, re.Pattern[str], str, Callable[..., _Answer]]] = [
    ("POST", re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$"), "jwt", FakeGitHub.mint_token),
    ("DELETE", re.compile(r"^/installation/token$"), "token", FakeGitHub.revoke_token),
    ("GET", re.compile(r"^/installation/repositories$"), "token", FakeGitHub.list_installation_repos),
    ("GET", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)$"), "token", FakeGitHub.get_repo),
    ("GET", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/keys$"), "token", FakeGitHub.list_keys),
    ("POST", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/keys$"), "token", FakeGitHub.add_key),
    ("GET", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/keys/(?P<key_id>\d+)$"), "token", FakeGitHub.get_key),
    ("DELETE", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/keys/(?P<key_id>\d+)$"), "token", FakeGitHub.delete_key),
]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_body(public_key: str) -> str:
    return " ".join(public_key.split()[:2])


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        page = max(1, int(query.get("page", "1")))
        per_page = min(100, max(1, int(query.get("per_page", "30"))))
    except ValueError:
        raise _HttpError(422, "Invalid request.") from None
    return page, per_page
