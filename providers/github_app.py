"""The GitHub providers: App installation tokens and repository deploy keys.

Both authenticate as a GitHub App (app id, installation id, and the App's
private key read from Vault through `context.read_secret`). See
docs/providers/github.md for what they can and cannot do.

Invariants:
- No retries inside a method: each HTTP call is made once (the engine
  retries, see `rotator_providers.github_http`). Errors leave only as
  `TransientError` / `PermanentError`, and no message holds a secret.
- An installation token's handle carries the token itself: GitHub revokes a
  token only when called with that token, and cannot list tokens.
- A deploy key is marked in the same call that creates it: its title is
  `TITLE_PREFIX:CREDENTIAL:ROTATION_ID` (no ':' after a prefix that ends in
  a separator, e.g. `ci deploy/CREDENTIAL:ROTATION_ID`), so orphans left by
  a crash, or by a create whose response was lost, are found by listing the
  repository's keys.
- The deploy-key provider manages keys with an installation token it mints
  for itself (scoped to the one repository and `administration: write`),
  caches in memory until five minutes before it expires, and revokes on
  `close()`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

import httpx
from pydantic import BaseModel
from rotator_providers.github_http import AppAuth, GitHubHttp, InstallationToken, check_response, json_body, paginate, token_key_id
from rotator_providers.github_params import _TITLE_MARK, DeployKeyParams, GitHubAppParams, InstallationTokenParams, title_joiner

from rotator.core.clock import parse_rfc3339, to_rfc3339
from rotator.core.errors import PermanentError, RotatorError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, KeyMark, Provider, ProviderContext, ProviderKey
from rotator.core.validators import format_duration

TOKEN_LIFETIME = timedelta(hours=1)
# Mint a fresh management token when the cached one has less than this left.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)


class _GitHubAppProvider(Provider):
    """What both providers share: the HTTP transport and App authentication."""

    params_model: ClassVar[type[GitHubAppParams]]

    def __init__(self, params: BaseModel, context: ProviderContext) -> None:
        if not isinstance(params, self.params_model):
            raise TypeError(f"{self.kind} needs {self.params_model.__name__}, not {type(params).__name__}")
        super().__init__(params, context)
        self._app = params
        self._http_client: GitHubHttp | None = None
        # The engine may call one instance from several threads.
        self._state_lock = threading.RLock()

    @property
    def http(self) -> GitHubHttp:
        with self._state_lock:
            if self._http_client is None:
                self._http_client = GitHubHttp(
                    self._app.api_url, app_id=str(self._app.app_id), clock=self.context.clock, user_agent=self.context.user_agent,
                    register_secret=self.context.register_secret,
                )
            return self._http_client

    @property
    def auth(self) -> AppAuth:
        return AppAuth(
            self.http,
            installation_id=self._app.installation_id,
            private_key_ref=self._app.private_key,
            read_secret=self.context.read_secret,
            client_id=self._app.client_id,
        )

    def close(self) -> None:
        with self._state_lock:
            client, self._http_client = self._http_client, None
        if client is not None:
            client.close()


class GitHubAppInstallationTokenProvider(_GitHubAppProvider):
    """Installation access tokens: they live one hour and cannot be listed."""

    kind = "github.app_installation_token"
    retires_by_id = False  # DELETE /installation/token authenticates with the token itself
    params_model = InstallationTokenParams
    scope_params: ClassVar[Mapping[str, str]] = {"installation_id": "github_installations", "repositories": "github_repository_names"}
    live_fields = ("token", "expires_at")
    can_list = False

    def __init__(self, params: BaseModel, context: ProviderContext) -> None:
        super().__init__(params, context)
        self.p = cast(InstallationTokenParams, params)  # checked by the base class

    @classmethod
    def check_policy(cls, params: BaseModel, *, interval: timedelta | None, grace: timedelta) -> list[tuple[str, str]]:
        if interval is None:
            return []
        if interval >= TOKEN_LIFETIME:
            # "" = the schedule's own field (every or cron); the core fills it in.
            return [("", f"installation tokens expire after {format_duration(TOKEN_LIFETIME)}, so rotations must come "
                     f"less than that apart (this schedule leaves up to {format_duration(interval)}); e.g. every: 30m")]
        # The old token must outlive the grace after its successor goes live.
        if interval + grace > TOKEN_LIFETIME:
            return [("grace", f"a token lives {format_duration(TOKEN_LIFETIME)}, so interval + grace must fit in it "
                     f"({format_duration(interval)} + {format_duration(grace)} does not)")]
        return []

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        minted = self.auth.mint(repositories=self.p.repositories, permissions=self.p.permissions)
        expires_at = to_rfc3339(minted.expires_at)
        return IssuedCredential(
            key_id=token_key_id(minted.token),
            data={"token": minted.token, "expires_at": expires_at},
            handle={"token": minted.token, "expires_at": expires_at},
            expires_at=minted.expires_at,
        )

    def verify(self, credential: IssuedCredential) -> None:
        response = self._probe(credential.data["token"])
        if response.status_code == 401:
            raise PermanentError(f"GitHub rejects the new installation token {credential.key_id} (401)")
        check_response(response, clock=self.context.clock, action=f"using installation token {credential.key_id}")

    def revoke(self, handle: Mapping[str, str]) -> None:
        self.auth.revoke(handle["token"])

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        response = self._probe(handle["token"])
        if response.status_code == 401:
            return True
        check_response(response, clock=self.context.clock, action=f"checking installation token {token_key_id(handle['token'])}")
        return False

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        token = data.get("token")
        if not token:
            return None
        handle = {"token": token, "expires_at": data.get("expires_at", "")}
        return ProviderKey(key_id=token_key_id(token), handle=handle)

    def _probe(self, token: str) -> httpx.Response:
        """The cheapest call an installation token can make."""
        return self.http.send("GET", "/installation/repositories", auth=token, params={"per_page": 1})


class GitHubDeployKeyProvider(_GitHubAppProvider):
    """SSH deploy keys of one repository, made and removed through the App."""

    kind = "github.deploy_key"
    params_model = DeployKeyParams
    scope_params: ClassVar[Mapping[str, str]] = {"installation_id": "github_installations", "repository": "github_repositories"}
    live_fields = ("private_key", "public_key", "key_id", "fingerprint")
    # A retried issue first deletes a key a lost create of this rotation left
    # (found by its title), so repeating it never leaves two keys.
    is_issue_retry_safe = True
    page_size: int = 100
    reports_key_use = True

    def __init__(self, params: BaseModel, context: ProviderContext) -> None:
        super().__init__(params, context)
        self.p = cast(DeployKeyParams, params)  # checked by the base class
        self._repo_path = f"/repos/{self.p.repository}"
        self._own_token: InstallationToken | None = None

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        """Add a key titled for this rotation, first deleting one a lost create left.

        GitHub cannot tell us the private half of a key whose create answer
        was lost (the pair was made in memory), so such a key is found by
        its title, deleted, and a new pair is registered: never two keys.
        """
        title = self.title_for(ctx)
        for key in self.list_keys():
            if key.mark == KeyMark(ctx.credential, ctx.rotation_id):
                self.revoke(key.handle)
        private_key, public_key = new_ed25519_pair()
        self.context.register_secret(private_key)
        body = {"title": title, "key": public_key, "read_only": self.p.read_only}
        response = self._send("POST", f"{self._repo_path}/keys", json=body)
        action = f"adding a deploy key to {self.p.repository}"
        check_response(response, clock=self.context.clock, action=action, ok=(201,))
        key_id = str(json_body(response, dict, action=action).get("id") or "")
        if not key_id:
            raise PermanentError(f"{action}: GitHub's answer has no key id")
        return IssuedCredential(
            key_id=key_id,
            data={"private_key": private_key, "public_key": public_key, "key_id": key_id, "fingerprint": openssh_fingerprint(public_key)},
            handle={"repository": self.p.repository, "key_id": key_id, "public_key": public_key},
        )

    def verify(self, credential: IssuedCredential) -> None:
        # GitHub has no HTTPS call that authenticates with a deploy key, so
        # verification proves the registered key is the half of ours.
        response = self._send("GET", f"{self._repo_path}/keys/{credential.key_id}")
        if response.status_code == 404:
            raise TransientError(f"deploy key {credential.key_id} is not (yet) listed on {self.p.repository}")
        action = f"reading deploy key {credential.key_id}"
        check_response(response, clock=self.context.clock, action=action)
        registered = json_body(response, dict, action=action)
        if key_body(registered.get("key", "")) != key_body(public_half(credential.data["private_key"])):
            raise PermanentError(f"deploy key {credential.key_id} on {self.p.repository} is not the public half of the new private key")
        if registered.get("read_only") is not self.p.read_only:
            raise PermanentError(f"deploy key {credential.key_id} has read_only={registered.get('read_only')}, expected {self.p.read_only}")

    def revoke(self, handle: Mapping[str, str]) -> None:
        response = self._send("DELETE", f"/repos/{handle['repository']}/keys/{handle['key_id']}")
        check_response(response, clock=self.context.clock, action=f"deleting deploy key {handle['key_id']}", ok=(204, 404))

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        repo_path = f"/repos/{handle['repository']}"
        response = self._send("GET", f"{repo_path}/keys/{handle['key_id']}")
        if response.status_code != 404:
            check_response(response, clock=self.context.clock, action=f"reading deploy key {handle['key_id']}")
            return False
        # GitHub also answers 404 when the repository is out of our reach;
        # only a visible repository proves the key is gone.
        repo = self._send("GET", repo_path)
        check_response(repo, clock=self.context.clock, action=f"reading repository {handle['repository']}")
        return True

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        if not key_id:
            return None
        return ProviderKey(key_id=key_id, handle={"repository": self.p.repository, "key_id": key_id, "public_key": data.get("public_key", "")})

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        response = self._send("GET", f"/repos/{handle['repository']}/keys/{handle['key_id']}")
        if response.status_code == 404:
            return None  # gone (or out of reach: then deleting it fails and says so)
        action = f"reading deploy key {handle['key_id']}"
        check_response(response, clock=self.context.clock, action=action)
        return _parse_time(json_body(response, dict, action=action).get("last_used"))

    def list_keys(self) -> list[ProviderKey]:
        first = f"{self._repo_path}/keys?per_page={self.page_size}"
        items = paginate(lambda url: self._send("GET", url), first, clock=self.context.clock, action=f"listing deploy keys of {self.p.repository}")
        return [self._provider_key(item) for item in items]

    def close(self) -> None:
        with self._state_lock:
            own, self._own_token = self._own_token, None
        if own is not None:
            self._revoke_quietly(own)
        super().close()

    # -- helpers --------------------------------------------------------------

    def title_for(self, ctx: IssueContext) -> str:
        return f"{self.p.title_prefix}{title_joiner(self.p.title_prefix)}{ctx.credential}:{ctx.rotation_id}"

    def mark_of(self, title: str) -> KeyMark | None:
        head = self.p.title_prefix + title_joiner(self.p.title_prefix)
        match = _TITLE_MARK.fullmatch(title[len(head):]) if title.startswith(head) else None
        return KeyMark(credential=match.group(1), rotation_id=match.group(2)) if match else None

    def _provider_key(self, item: Any) -> ProviderKey:
        if not isinstance(item, dict) or "id" not in item:
            raise PermanentError(f"listing deploy keys of {self.p.repository}: GitHub listed an entry without an id")
        key_id = str(item["id"])
        return ProviderKey(
            key_id=key_id,
            handle={"repository": self.p.repository, "key_id": key_id, "public_key": str(item.get("key", ""))},
            created_at=_parse_time(item.get("created_at")),
            active=item.get("enabled", True) is not False,
            last_used_at=_parse_time(item.get("last_used")),
            mark=self.mark_of(str(item.get("title") or "")),
        )

    def _token(self) -> str:
        """The management token, minted when absent or close to expiry."""
        with self._state_lock:
            return self._fresh_token().token

    def _fresh_token(self) -> InstallationToken:
        now = self.context.clock.now()
        if self._own_token is None or self._own_token.expires_at - now < TOKEN_REFRESH_MARGIN:
            name = self.p.repository.split("/", 1)[1]
            fresh = self.auth.mint(
                repositories=[name],
                permissions={"administration": "write"},
                hint=f"managing deploy keys needs the App installed on {self.p.repository} with administration: write",
            )
            old, self._own_token = self._own_token, fresh
            if old is not None:
                self._revoke_quietly(old)
        return self._own_token

    def _revoke_quietly(self, token: InstallationToken) -> None:
        try:  # best effort: an unrevoked management token dies within its hour anyway
            self.auth.revoke(token.token)
        except RotatorError:
            pass

    def _send(self, method: str, path: str, *, json: Mapping[str, Any] | None = None) -> httpx.Response:
        response = self.http.send(method, path, auth=self._token(), json=json)
        if response.status_code == 401:
            # Our cached token died early (revoked, App key reset): mint anew next time.
            with self._state_lock:
                self._own_token = None
            raise TransientError(f"GitHub rejected the rotator's management token for {self.p.repository}; a new one will be minted")
        return response


def new_ed25519_pair() -> tuple[str, str]:
    """A fresh key pair: (unencrypted OpenSSH private key, OpenSSH public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    return private, _openssh_public(key.public_key())


def public_half(private_key: str) -> str:
    """The OpenSSH public key of an OpenSSH private key."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise PermanentError("the new deploy key's private half cannot be read as an OpenSSH key") from None
    return _openssh_public(key.public_key())  # type: ignore[arg-type]


def _openssh_public(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def key_body(public_key: str) -> str:
    """`TYPE BASE64` of an OpenSSH public key, without any comment."""
    return " ".join(public_key.split()[:2])


def openssh_fingerprint(public_key: str) -> str:
    """`SHA256:...` as `ssh-keygen -l` prints it (unpadded base64)."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None
