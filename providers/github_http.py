"""GitHub's REST API as the GitHub providers need it: App JWTs, installation
tokens, one HTTP attempt per call, and the mapping of GitHub's answers to the
project's two error kinds.

Invariants:
- Every request carries `User-Agent`, `Accept: application/vnd.github+json`
  and `X-GitHub-Api-Version`; GitHub refuses requests without a user agent.
- Writes as one App go one at a time and at least a second apart (GitHub's
  best practices), waited out on the injected clock.
- One attempt per call: retrying is the engine's job (`rotator.engine.retry`).
  Rate limits, 5xx, timeouts and connection errors become `TransientError`
  (with `retry_after` where GitHub says how long to wait); other 4xx become
  `PermanentError`.
- Mutating requests (POST, PUT, PATCH, DELETE) to one App go one at a time
  in this process: GitHub's secondary rate limits punish concurrent writes.
- No token, JWT or private key reaches a message, a repr or a log. GitHub's
  own error messages are quoted only when they look like no secret.
- Requests only ever go to the configured API origin: a pagination link that
  points elsewhere is refused, so a token never leaves for another host.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rotator.core.clock import Clock, parse_rfc3339
from rotator.core.errors import PermanentError, TransientError
from rotator.core.validators import secret_lookalike

API_VERSION = "2022-11-28"
DEFAULT_API_URL = "https://api.github.com"
# GitHub rejects an App JWT whose exp is more than 10 minutes ahead; stay
# under it, and backdate iat a minute, as GitHub advises, for clock drift.
JWT_BACKDATE = timedelta(seconds=60)
JWT_LIFETIME = timedelta(minutes=9)
# GitHub's advice when a secondary rate limit comes without a retry-after.
SECONDARY_LIMIT_WAIT = 60.0
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# GitHub's REST best practices: "wait at least one second between each"
# POST, PATCH, PUT or DELETE request for one user or client id.
WRITE_SPACING = timedelta(seconds=1)

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()
# When the last write as each App went out (under that App's lock), per
# clock: times from another clock (a test's fake one) are not comparable.
_last_write: dict[tuple[str, str, int], datetime] = {}


def app_lock(api_url: str, app_id: str) -> threading.Lock:
    """The process-wide lock that serialises writes made as one App."""
    with _locks_guard:
        return _locks.setdefault((api_url, app_id), threading.Lock())


def token_key_id(token: str) -> str:
    """The non-secret identifier of an installation token (contract §7)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def app_jwt(issuer: str, private_key: rsa.RSAPrivateKey, *, now: datetime) -> str:
    """An RS256 JWT that authenticates as the App for about nine minutes.

    `issuer` is the App's Client ID (GitHub's recommendation) or its App id.
    """
    claims = {
        "iat": int((now - JWT_BACKDATE).timestamp()),
        "exp": int((now + JWT_LIFETIME).timestamp()),
        "iss": issuer,
    }
    import jwt  # PyJWT loads on first use: `rotator validate` needs none of it

    return jwt.encode(claims, private_key, algorithm="RS256")


@functools.lru_cache(maxsize=16)
def _parse_pem(pem: str) -> object:
    # Parsing validates the RSA key, ~40 ms; a JWT is made for every mint.
    return serialization.load_pem_private_key(pem.encode(), password=None)


def load_app_key(pem: str, *, where: str) -> rsa.RSAPrivateKey:
    """Parse the App's PEM; the error names where it came from, never its content."""
    try:
        key = _parse_pem(pem)
    except (ValueError, TypeError, AttributeError):
        raise PermanentError(f"the GitHub App private key at {where} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentError(f"the GitHub App private key at {where} is not an RSA key (GitHub Apps sign with RS256)")
    return key


@dataclass(frozen=True)
class InstallationToken:
    """A minted installation token. The token itself never shows in repr."""

    token: str
    expires_at: datetime
    expires_at_text: str

    def __repr__(self) -> str:
        return f"InstallationToken(key_id={token_key_id(self.token)!r}, expires_at={self.expires_at_text!r})"


def github_message(response: httpx.Response) -> str:
    """GitHub's error message, shortened, or a placeholder if it looks secret."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        return response.reason_phrase or "no message"
    if secret_lookalike(message):
        return "<message withheld: it looks like it holds a secret>"
    return message[:200]


def json_body(response: httpx.Response, shape: type[dict[str, Any]] | type[list[Any]], *, action: str) -> Any:
    """A success answer's JSON, of the expected shape.

    A body that does not parse (cut short, a proxy's HTML page) is
    transient; valid JSON of the wrong shape is GitHub changing under us."""
    try:
        body = response.json()
    except ValueError:
        raise TransientError(f"{action}: GitHub's answer is not JSON") from None
    if not isinstance(body, shape):
        raise PermanentError(f"{action}: GitHub answered with a JSON {type(body).__name__}, expected a {shape.__name__}")
    return body


def _header_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def transient_error(response: httpx.Response, *, clock: Clock, action: str) -> TransientError | None:
    """The TransientError this answer calls for, or None if it is not transient.

    Follows GitHub's rate-limit guidance: honour `retry-after`; else, with
    `x-ratelimit-remaining: 0`, wait until `x-ratelimit-reset`; else a
    secondary limit waits a minute.
    """
    status = response.status_code
    headers = response.headers
    retry_after = _header_seconds(headers.get("retry-after"))
    if status >= 500:
        return TransientError(f"{action}: GitHub answered {status}: {github_message(response)}", retry_after=retry_after)
    if status not in (403, 429):
        return None
    message = github_message(response)
    if retry_after is not None:
        return TransientError(f"{action}: rate limited by GitHub ({status}: {message})", retry_after=retry_after)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = _header_seconds(headers.get("x-ratelimit-reset"))
        wait = None if reset is None else max(0.0, reset - clock.now().timestamp())
        return TransientError(f"{action}: GitHub rate limit exhausted ({status}: {message})", retry_after=wait)
    if status == 429 or "secondary rate limit" in message.lower():
        return TransientError(f"{action}: GitHub secondary rate limit ({status}: {message})", retry_after=SECONDARY_LIMIT_WAIT)
    return None


def check_response(response: httpx.Response, *, clock: Clock, action: str, ok: tuple[int, ...] = (200,)) -> None:
    """Return if `response.status_code` is in `ok`, else raise the fitting error."""
    if response.status_code in ok:
        return
    transient = transient_error(response, clock=clock, action=action)
    if transient is not None:
        raise transient
    if response.is_redirect:  # GitHub redirects renamed or transferred repositories
        raise PermanentError(f"{action}: GitHub answered {response.status_code}: it moved; update the credential file")
    raise PermanentError(f"{action}: GitHub answered {response.status_code}: {github_message(response)}")


class GitHubHttp:
    """A thin httpx transport bound to one API base URL and one App."""

    def __init__(
        self, api_url: str, *, app_id: str, clock: Clock, user_agent: str, timeout: float = 15.0,
        register_secret: Callable[..., None] = lambda *_: None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        # Every bearer this transport sends (JWTs, installation tokens) and
        # every token GitHub answers with is registered for masking.
        self.register_secret = register_secret
        self.app_id = app_id
        self.clock = clock
        self._origin = _origin(self.api_url)
        self._lock = app_lock(self.api_url, app_id)
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,  # a redirect must not carry our Authorization elsewhere
            headers={
                "User-Agent": user_agent,
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
            },
        )

    def send(
        self,
        method: str,
        path_or_url: str,
        *,
        auth: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> httpx.Response:
        """One request; transport failures become TransientError."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.api_url + path_or_url
        if _origin(url) != self._origin:
            scheme, host, port = _origin(url)
            raise PermanentError(f"GitHub pointed to {scheme}://{host}:{port}, outside the configured api_url; refusing to follow")
        self.register_secret(auth)
        headers = {"Authorization": f"Bearer {auth}"}
        what = f"{method} {urlsplit(url).path}"
        try:
            if method in _MUTATING:
                with self._lock:
                    self._space_write()
                    try:
                        return self._client.request(method, url, headers=headers, json=json, params=params)
                    finally:
                        _last_write[(self.api_url, self.app_id, id(self.clock))] = self.clock.now()
            return self._client.request(method, url, headers=headers, json=json, params=params)
        except httpx.TimeoutException:
            raise TransientError(f"{what}: GitHub did not answer in time") from None
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: cannot reach GitHub ({type(exc).__name__})") from None

    def _space_write(self) -> None:
        """Wait (on the injected clock) until a second has passed since this App's last write."""
        last = _last_write.get((self.api_url, self.app_id, id(self.clock)))
        if last is not None:
            wait = min((last + WRITE_SPACING - self.clock.now()).total_seconds(), WRITE_SPACING.total_seconds())
            if wait > 0:
                self.clock.sleep(wait)

    def close(self) -> None:
        self._client.close()


def paginate(fetch: Callable[[str], httpx.Response], first: str, *, clock: Clock, action: str) -> Iterator[Any]:
    """Each item of a paginated list, following `Link: rel="next"` with `fetch`."""
    response = fetch(first)
    while True:
        check_response(response, clock=clock, action=action)
        yield from json_body(response, list, action=action)
        next_url = response.links.get("next", {}).get("url")
        if not next_url:
            return
        response = fetch(next_url)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname or "", parts.port)


class AppAuth:
    """Authenticates as one App installation: JWTs and installation tokens.

    The App's private key is read through `read_secret` each time a JWT is
    needed, so a key rotated in Vault is used at once. (Parsed keys are
    cached by content, because parsing checks the RSA key and is slow.)
    """

    def __init__(
        self,
        http: GitHubHttp,
        *,
        installation_id: int,
        private_key_ref: str,
        read_secret: Callable[[str], str],
        client_id: str | None = None,
    ) -> None:
        self.http = http
        self.client_id = client_id
        self.installation_id = installation_id
        self.private_key_ref = private_key_ref
        self._read_secret = read_secret

    def jwt(self) -> str:
        key = load_app_key(self._read_secret(self.private_key_ref), where=self.private_key_ref)
        # GitHub now recommends the Client ID as the issuer; GHES versions
        # without it keep the App id.
        token = app_jwt(self.client_id or self.http.app_id, key, now=self.http.clock.now())
        self.http.register_secret(token)
        return token

    def mint(
        self,
        *,
        repositories: list[str] | None = None,
        permissions: Mapping[str, str] | None = None,
        hint: str = "",
    ) -> InstallationToken:
        """POST /app/installations/{id}/access_tokens, one attempt. `hint` is
        added to a 422 (repositories or permissions the installation lacks)."""
        body: dict[str, Any] = {}
        if repositories:
            body["repositories"] = list(repositories)
        if permissions:
            body["permissions"] = dict(permissions)
        path = f"/app/installations/{self.installation_id}/access_tokens"
        response = self.http.send("POST", path, auth=self.jwt(), json=body or None)
        self._check_mint(response, hint=hint)
        data = json_body(response, dict, action=f"minting an installation token (installation {self.installation_id})")
        token, expires = data.get("token"), data.get("expires_at")
        if isinstance(token, str):
            self.http.register_secret(token)  # before anything below can raise
        if not isinstance(token, str) or not token or not isinstance(expires, str):
            raise PermanentError(f"GitHub's access token answer for installation {self.installation_id} lacks token or expires_at")
        try:
            expires_at = parse_rfc3339(expires)
        except ValueError:
            raise PermanentError(f"GitHub's access token answer has an unreadable expires_at {expires[:40]!r}") from None
        return InstallationToken(token=token, expires_at=expires_at, expires_at_text=expires)

    def _check_mint(self, response: httpx.Response, *, hint: str) -> None:
        status = response.status_code
        action = f"minting an installation token (app_id {self.http.app_id}, installation {self.installation_id})"
        if status == 201:
            return
        transient = transient_error(response, clock=self.http.clock, action=action)
        if transient is not None:
            raise transient
        message = github_message(response)
        if status == 401:
            raise PermanentError(
                f"GitHub rejected the JWT of app_id {self.http.app_id} ({message}): check app_id and that "
                f"{self.private_key_ref} holds the App's current private key"
            )
        if status == 404:
            raise PermanentError(f"GitHub knows no installation {self.installation_id} of app_id {self.http.app_id} ({message})")
        if status == 422 and hint:
            message = f"{message} ({hint})"
        raise PermanentError(f"{action}: GitHub answered {status}: {message}")

    def revoke(self, token: str) -> None:
        """DELETE /installation/token with the token itself; 401 = already dead."""
        response = self.http.send("DELETE", "/installation/token", auth=token)
        check_response(response, clock=self.http.clock, action="revoking an installation token", ok=(204, 401))
