"""Simulated GitHub: deploy keys on a repository, and App installation tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import ClassVar

from rotator_providers.github_app import DeployKeyParams, GitHubAppInstallationTokenProvider, InstallationTokenParams

from rotator.core.errors import PermanentError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, KeyMark, ProviderKey
from rotator.testing.sim.service import Service, SimKey, _SimProvider, parse_mark


class GitHubRepo(Service):
    kind = "github.deploy_key"
    secret_field = "private_key"

    def add(self, actor: str, title: str, read_only: bool) -> SimKey:
        key_id = str(next(self._ids) + 1000)
        key = SimKey(key_id, f"ssh-private-{key_id}", self.now(), mark=title, minted_by=actor)
        key.extra.update(public=f"ssh-ed25519 PUB{key_id}", read_only=read_only)
        self.keys[key_id] = key
        return key

    def remove(self, key_id: str) -> None:
        key = self.keys.get(key_id)
        if key is not None and key.deleted_at is None:
            key.deleted_at = self.now()


class SimGitHubDeployKeyProvider(_SimProvider):
    kind = "github.deploy_key"
    params_model = DeployKeyParams
    live_fields = ("private_key", "public_key", "key_id", "fingerprint")
    is_issue_retry_safe = True
    reports_key_use = True
    service: ClassVar[GitHubRepo]

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        title = f"{self.params.title_prefix}:{ctx.credential}:{ctx.rotation_id}"  # type: ignore[attr-defined]
        for listed in self.list_keys():  # a lost create of this rotation left one: delete it first
            if listed.mark == KeyMark(ctx.credential, ctx.rotation_id):
                self.revoke(listed.handle)
        read_only = self.params.read_only  # type: ignore[attr-defined]
        key = self._call("POST keys", lambda: self.service.add(self.actor, title, read_only), mutating=True)
        public = key.extra["public"]
        return IssuedCredential(
            key_id=key.key_id,
            data={"private_key": key.secret, "public_key": public, "key_id": key.key_id, "fingerprint": f"SHA256:{key.key_id}"},
            handle={"repository": self.params.repository, "key_id": key.key_id, "public_key": public},  # type: ignore[attr-defined]
        )

    def verify(self, credential: IssuedCredential) -> None:
        key = self._call("GET key", lambda: self._visible(credential.key_id))
        if key is None:
            raise TransientError(f"deploy key {credential.key_id} is not (yet) listed")
        if key.secret != credential.data["private_key"]:
            raise PermanentError(f"deploy key {credential.key_id} is not the public half of the new private key")
        if key.extra["read_only"] is not self.params.read_only:  # type: ignore[attr-defined]
            raise PermanentError(f"deploy key {credential.key_id} has the wrong read_only")

    def _visible(self, key_id: str) -> SimKey | None:
        key = self.service.keys.get(key_id)
        return key if key is not None and key.deleted_at is None else None

    def revoke(self, handle: Mapping[str, str]) -> None:
        self._call("DELETE key", lambda: self.service.remove(handle["key_id"]), target=handle["key_id"], mutating=True)

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        return self._call("GET key", lambda: self._visible(handle["key_id"])) is None

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        if not key_id:
            return None
        return ProviderKey(key_id=key_id, handle={"repository": self.params.repository, "key_id": key_id,  # type: ignore[attr-defined]
                                                  "public_key": data.get("public_key", "")})

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        key = self._call("GET key", lambda: self._visible(handle["key_id"]))
        return key.last_used_at if key is not None else None

    def list_keys(self) -> list[ProviderKey]:
        prefix = self.params.title_prefix  # type: ignore[attr-defined]
        keys = self._call("GET keys", lambda: [(k.key_id, k.mark, k.created_at, k.last_used_at) for k in self.service.existing()])
        out = []
        for key_id, title, created, used in keys:
            mark = None
            head, _, rest = (title or "").partition(":")
            if head == prefix:
                mark = parse_mark(f"rotator:{rest}")
            out.append(ProviderKey(key_id=key_id, handle={"repository": self.params.repository, "key_id": key_id},  # type: ignore[attr-defined]
                                   created_at=created, last_used_at=used, mark=mark))
        return out


class GitHubApp(Service):
    kind = "github.app_installation_token"
    secret_field = "token"
    LIFETIME = timedelta(hours=1)

    def mint(self, actor: str) -> SimKey:
        token_id = self.new_id("ghs_")
        now = self.now()
        key = SimKey(f"sha256:{token_id}", f"{token_id}-token", now, dead_at=now + self.LIFETIME, minted_by=actor)
        key.extra["natural_expiry"] = now + self.LIFETIME
        self.keys[key.key_id] = key
        return key

    def by_token(self, token: str) -> SimKey | None:
        return next((k for k in self.keys.values() if k.secret == token), None)


class SimGitHubAppInstallationTokenProvider(_SimProvider):
    kind = "github.app_installation_token"
    retires_by_id = False  # DELETE /installation/token authenticates with the token itself
    params_model = InstallationTokenParams
    live_fields = ("token", "expires_at")
    can_list = False
    service: ClassVar[GitHubApp]
    check_policy = GitHubAppInstallationTokenProvider.check_policy

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        key = self._call("POST access_tokens", lambda: self.service.mint(self.actor), mutating=True)
        expires = key.dead_at
        assert expires is not None
        stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        return IssuedCredential(key_id=key.key_id, data={"token": key.secret, "expires_at": stamp},
                                handle={"token": key.secret, "expires_at": stamp}, expires_at=expires)

    def _probe(self, token: str) -> int:
        def probe() -> int:
            key = self.service.by_token(token)
            return 200 if key is not None and self.service.is_accepted(key.key_id) else 401
        return self._call("GET installation/repositories", probe)

    def verify(self, credential: IssuedCredential) -> None:
        if self._probe(credential.data["token"]) == 401:
            raise PermanentError(f"GitHub rejects the new installation token {credential.key_id} (401)")

    def revoke(self, handle: Mapping[str, str]) -> None:
        key = self.service.by_token(handle["token"])

        def delete() -> None:
            if key is not None and key.deleted_at is None:
                key.deleted_at = self.service.now()

        self._call("DELETE installation/token", delete, target=key.key_id if key else None, mutating=True)

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        return self._probe(handle["token"]) == 401

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        # As the real provider: the id is derived from the token itself (no API call).
        key = self.service.by_token(data.get("token", ""))
        if key is None:
            return None
        return ProviderKey(key_id=key.key_id, handle={"token": data["token"], "expires_at": data.get("expires_at", "")})
