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

The state and its Python API (set-up, introspection) are
rotator.sandbox.github_state; this module serves them over HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization

from rotator.core.clock import to_rfc3339
from rotator.sandbox.github_state import _LEVELS, TOKEN_LIFETIME, GitHubState, RecordedRequest, _DeployKey, _hash, _key_body, _Token
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

JWT_MAX_AHEAD = 600  # seconds: GitHub's ceiling on exp
JWT_DRIFT = 60  # seconds of clock drift tolerated on iat
NO_USER_AGENT = (
    "Request forbidden by administrative rules. Please make sure your request has a User-Agent header "
    "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). "
    "Check https://developer.github.com for other possible causes."
)


class FakeGitHub(GitHubState):
    """The fake: the state and its Python API (GitHubState), served over HTTP."""

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


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        page = max(1, int(query.get("page", "1")))
        per_page = min(100, max(1, int(query.get("per_page", "30"))))
    except ValueError:
        raise _HttpError(422, "Invalid request.") from None
    return page, per_page
