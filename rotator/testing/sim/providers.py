"""In-memory providers with each built-in provider's real semantics.

Each service (`AwsIam`, `GitHubRepo`, `GitHubApp`, `StripeAccount`) holds
the provider's world in memory; each provider class is a real
`rotator.provider.Provider` that makes the same API calls, in the same
order, as its built-in counterpart in `providers/`, and turns outcomes into
the same errors. Every API call passes through the service's `boundary`,
where the simulation injects faults (see `rotator.testing.sim.faults`).

What each copies from the real thing:
- AWS IAM: two keys per user (LimitExceeded), Active/Inactive, create then
  tag (a second call: the mark is not atomic), last use, STS accepting a
  new key only after it propagated;
- GitHub deploy keys: marked by title in the create call, listed, read,
  deleted (404 counts as done);
- GitHub installation tokens: minted for one hour, cannot be listed,
  revoked with themselves (401: already dead);
- Stripe managed API keys: creates carry an idempotency key (a retry of a
  lost create replays Stripe's stored answer), expiry is recorded at once
  but takes effect at the API a little later;
- Stripe webhook endpoints: marked in description and metadata, replaced,
  deleted; the secret works while the endpoint exists.

The provider classes are bound to one service with `bind(cls, service)`;
the replica making a call is known from its clock (`actor` attribute).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

from providers.aws_iam import AwsIamParams
from providers.github_app import DeployKeyParams, GitHubAppInstallationTokenProvider, InstallationTokenParams
from providers.stripe_api import StripeManagedApiKeyParams, StripeWebhookSecretParams
from rotator.errors import NotFoundError, PermanentError, TransientError
from rotator.provider import IssueContext, IssuedCredential, KeyMark, NoCapacityError, Provider, ProviderKey

T = TypeVar("T")

# boundary(actor, op, target, effect, mutating) -> effect's result
Boundary = Callable[[str, str, str | None, Callable[[], Any], bool], Any]


def _apply(actor: str, op: str, target: str | None, effect: Callable[[], T], mutating: bool) -> T:
    return effect()


class ResponseLost(TransientError):
    """The call got no answer: the service may or may not have acted."""


def mark_text(credential: str, rotation_id: str) -> str:
    return f"rotator:{credential}:{rotation_id}"


def parse_mark(text: str | None) -> KeyMark | None:
    if not text or not text.startswith("rotator:"):
        return None
    credential, _, rotation_id = text.removeprefix("rotator:").rpartition(":")
    return KeyMark(credential, rotation_id) if credential and rotation_id else None


@dataclass
class SimKey:
    """One credential at a service, as the service sees it."""

    key_id: str
    secret: str
    created_at: datetime
    mark: str | None = None  # the rotator's mark, where the service keeps one
    active: bool = True
    deleted_at: datetime | None = None
    dead_at: datetime | None = None  # when the service stops accepting it (expiry)
    last_used_at: datetime | None = None
    minted_by: str = ""  # the replica whose call created it (for invariants)
    extra: dict[str, Any] = field(default_factory=dict)


class Service:
    """A provider's world in memory. `now` is the true time of the simulation."""

    kind: ClassVar[str]
    propagation = timedelta(0)  # how long a new key takes to be accepted
    reports_retry_after = True  # a 429 reaches the engine with its Retry-After

    def __init__(self, now: Callable[[], datetime], *, boundary: Boundary | None = None) -> None:
        self.now = now
        self.boundary: Boundary = boundary or _apply
        self.keys: dict[str, SimKey] = {}
        self._ids = itertools.count(1)
        self.calls = 0

    def call(self, actor: str, op: str, effect: Callable[[], T], *, target: str | None = None, mutating: bool = False) -> T:
        self.calls += 1
        return self.boundary(actor, op, target, effect, mutating)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def existing(self) -> list[SimKey]:
        return [k for k in self.keys.values() if k.deleted_at is None]

    def is_accepted(self, key_id: str, now: datetime | None = None) -> bool:
        """Whether the service accepts the credential now (the consumer's view)."""
        key = self.keys.get(key_id)
        if key is None:
            return False
        moment = now or self.now()
        if key.deleted_at is not None or not key.active:
            return False
        if key.dead_at is not None and moment >= key.dead_at:
            return False
        return moment >= key.created_at + self.propagation

    def expired_naturally(self, key_id: str) -> bool:
        """Dead by the service's own clock (a token's hour), not by anyone's call."""
        key = self.keys.get(key_id)
        return key is not None and key.extra.get("natural_expiry") is not None and self.now() >= key.extra["natural_expiry"]

    def key_of(self, data: Mapping[str, Any] | None) -> str | None:
        """Which key a live path's data holds, or None if it is none of ours."""
        if not data:
            return None
        for key in self.keys.values():
            if data.get(self.secret_field) == key.secret:
                return key.key_id
        return None

    secret_field: ClassVar[str] = "secret"

    def rotator_made(self) -> list[SimKey]:
        return [k for k in self.keys.values() if k.minted_by]


def bind(cls: type[Provider], service: Service) -> type[Provider]:
    """A subclass of `cls` whose instances talk to `service`."""
    return type(cls.__name__, (cls,), {"service": service, "__module__": __name__})


class _SimProvider(Provider):
    service: ClassVar[Service]

    @property
    def actor(self) -> str:
        return str(getattr(self.context.clock, "actor", "?"))

    def _call(self, op: str, effect: Callable[[], T], *, target: str | None = None, mutating: bool = False) -> T:
        return self.service.call(self.actor, op, effect, target=target, mutating=mutating)


# -- AWS IAM ---------------------------------------------------------------------


class AwsIam(Service):
    kind = "aws.iam_access_key"
    # providers/aws_iam.py `_translate`: a throttled call is a TransientError with no
    # Retry-After (boto3 retries on its own), so the engine never repeats a create for it.
    reports_retry_after = False
    propagation = timedelta(seconds=8)
    secret_field = "secret_access_key"
    LIMIT = 2
    DELETE_LAG = timedelta(seconds=5)  # a deleted or deactivated key works this long at STS

    def __init__(self, now: Callable[[], datetime], *, boundary: Boundary | None = None) -> None:
        super().__init__(now, boundary=boundary)
        self.tags: dict[str, str] = {}  # the user's tags: access key id -> mark

    def user_keys(self) -> list[SimKey]:
        return self.existing()

    def create(self, actor: str) -> SimKey:
        if len(self.user_keys()) >= self.LIMIT:
            raise PermanentError("AWS LimitExceeded while creating an access key")
        key_id = self.new_id("AKIASIM")
        key = SimKey(key_id, f"aws-secret-{key_id}", self.now(), minted_by=actor)
        self.keys[key_id] = key
        assert len(self.user_keys()) <= self.LIMIT
        return key

    def delete(self, key_id: str) -> None:
        key = self.keys.get(key_id)
        if key is None or key.deleted_at is not None:
            raise NotFoundError(f"AWS NoSuchEntity while deleting {key_id}")
        key.deleted_at = self.now()

    def sts_accepts(self, key_id: str, secret: str) -> bool:
        """STS's view: eventually consistent both ways (new keys late, removed keys late)."""
        key = self.keys.get(key_id)
        if key is None or key.secret != secret:
            return False
        now = self.now()
        if now < key.created_at + self.propagation:
            return False
        ended = key.deleted_at or key.extra.get("inactive_at")
        return ended is None or now < ended + self.DELETE_LAG


class SimAwsIamAccessKeyProvider(_SimProvider):
    kind: ClassVar[str] = "aws.iam_access_key"
    params_model: ClassVar[type[BaseModel]] = AwsIamParams
    live_fields: ClassVar[tuple[str, ...]] = ("access_key_id", "secret_access_key")
    verify_budget: ClassVar[timedelta] = timedelta(seconds=45)
    is_marking_atomic: ClassVar[bool] = False
    reports_key_use: ClassVar[bool] = True
    service: ClassVar[AwsIam]
    params: AwsIamParams

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        iam = self.service
        keys = self._call("list_access_keys", lambda: [k.key_id for k in iam.user_keys()])
        if len(keys) >= 2:
            ids = frozenset(keys)
            raise NoCapacityError(f"IAM user {self.params.user_name} already has 2 access keys (AWS's limit)", blocking_key_ids=ids)
        key = self._call("create_access_key", lambda: iam.create(self.actor), mutating=True)
        mark = mark_text(ctx.credential, ctx.rotation_id)
        try:
            self._call("tag_user", lambda: iam.tags.__setitem__(key.key_id, mark), target=key.key_id, mutating=True)
        except (TransientError, PermanentError):
            self._call("delete_access_key", lambda: iam.delete(key.key_id), target=key.key_id, mutating=True)
            raise
        return IssuedCredential(
            key_id=key.key_id,
            data={"access_key_id": key.key_id, "secret_access_key": key.secret},
            handle={"user_name": self.params.user_name, "access_key_id": key.key_id, "secret_access_key": key.secret},
        )

    def verify(self, credential: IssuedCredential) -> None:
        accepted = self._call("sts_get_caller_identity",
                              lambda: self.service.sts_accepts(credential.key_id, credential.data["secret_access_key"]))
        if not accepted:
            raise TransientError(f"STS does not accept key {credential.key_id} yet (InvalidClientTokenId)")

    def retire_delay(self) -> timedelta | None:
        return self.params.delete_after_deactivation

    def deactivate(self, handle: Mapping[str, str]) -> None:
        key_id = handle["access_key_id"]
        iam = self.service

        def update() -> None:
            key = iam.keys.get(key_id)
            if key is None or key.deleted_at is not None:
                raise NotFoundError(f"AWS NoSuchEntity while deactivating {key_id}")
            if key.active:
                key.active = False
                key.extra["inactive_at"] = iam.now()

        try:
            self._call("update_access_key", update, target=key_id, mutating=True)
        except NotFoundError:
            return

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id = handle["access_key_id"]
        iam = self.service
        try:
            self._call("delete_access_key", lambda: iam.delete(key_id), target=key_id, mutating=True)
        except NotFoundError:
            pass
        try:
            self._call("untag_user", lambda: iam.tags.pop(key_id, None), target=key_id, mutating=True)
        except NotFoundError:
            pass

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        key_id, secret = handle["access_key_id"], handle.get("secret_access_key")
        if secret:  # revoked means STS rejects the old key itself
            return not self._call("sts_get_caller_identity", lambda: self.service.sts_accepts(key_id, secret))
        keys = self._call("list_access_keys", lambda: [k.key_id for k in self.service.user_keys()])
        return key_id not in keys

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("access_key_id")
        return ProviderKey(key_id=key_id, handle={"user_name": self.params.user_name, "access_key_id": key_id}) if key_id else None

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        key = self.service.keys.get(handle["access_key_id"])
        return self._call("get_access_key_last_used", lambda: key.last_used_at if key is not None and key.deleted_at is None else None)

    def list_keys(self) -> list[ProviderKey]:
        iam = self.service
        user = self.params.user_name
        keys = self._call("list_access_keys", lambda: [(k.key_id, k.created_at, k.active) for k in iam.user_keys()])
        tags = self._call("list_user_tags", lambda: dict(iam.tags))
        out = []
        for key_id, created, active in keys:
            used = self._call("get_access_key_last_used", lambda k=key_id: iam.keys[k].last_used_at)
            out.append(ProviderKey(key_id=key_id, handle={"user_name": user, "access_key_id": key_id}, created_at=created,
                                   active=active, last_used_at=used, mark=parse_mark(tags.get(key_id))))
        return out


# -- GitHub deploy keys ----------------------------------------------------------------


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


# -- GitHub App installation tokens --------------------------------------------------


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


# -- Stripe --------------------------------------------------------------------------


class StripeAccount(Service):
    """One Stripe account: restricted keys or webhook endpoints, with idempotency."""

    kind = "stripe"
    EXPIRY_LAG = timedelta(seconds=20)  # an expired key keeps working this long at the API

    def __init__(self, now: Callable[[], datetime], *, boundary: Boundary | None = None, secret_field: str = "api_key") -> None:
        super().__init__(now, boundary=boundary)
        self.secret_field = secret_field  # type: ignore[misc]
        self.idempotent: dict[str, str] = {}  # Idempotency-Key -> the key id its create made

    def create(self, actor: str, idempotency_key: str, prefix: str, mark: str, extra: dict[str, Any]) -> SimKey:
        if idempotency_key in self.idempotent:
            return self.keys[self.idempotent[idempotency_key]]  # Stripe replays its stored answer
        key_id = self.new_id(prefix)
        secret_prefix = "rk_test_" if prefix.startswith("rk") else "whsec_"
        key = SimKey(key_id, f"{secret_prefix}{key_id}", self.now(), mark=mark, minted_by=actor, extra=dict(extra))
        self.keys[key_id] = key
        self.idempotent[idempotency_key] = key_id
        return key

    def visible(self, key_id: str) -> SimKey | None:
        key = self.keys.get(key_id)
        return key if key is not None and key.deleted_at is None else None


class _SimStripeProvider(_SimProvider):
    service: ClassVar[StripeAccount]
    _prefix: ClassVar[str]
    is_issue_retry_safe: ClassVar[bool] = True

    def __init__(self, params: BaseModel, context: Any) -> None:
        super().__init__(params, context)
        self._nonces: dict[str, str] = {}  # rotation id -> nonce of a create whose answer was lost
        self._counter = itertools.count(1)

    def _create(self, ctx: IssueContext, extra: dict[str, Any]) -> SimKey:
        nonce = self._nonces.get(ctx.rotation_id) or f"n{next(self._counter)}"
        self._nonces[ctx.rotation_id] = nonce
        idem = f"rotator-{ctx.rotation_id}-{nonce}-{id(self)}"
        mark = mark_text(ctx.credential, ctx.rotation_id)
        try:
            key = self._call("POST create", lambda: self.service.create(self.actor, idem, self._prefix, mark, extra), mutating=True)
        except ResponseLost:
            raise  # a retry replays this very request
        except BaseException:
            self._nonces.pop(ctx.rotation_id, None)
            raise
        self._nonces.pop(ctx.rotation_id, None)
        return key

    def list_keys(self) -> list[ProviderKey]:
        keys = self._call("GET list", lambda: [(k.key_id, k.mark, k.created_at, k.extra.get("expired_at") is None)
                                               for k in self.service.existing()])
        return [ProviderKey(key_id=key_id, handle={self._handle_field: key_id}, created_at=created, active=active, mark=parse_mark(mark))
                for key_id, mark, created, active in keys]

    _handle_field: ClassVar[str]


class SimStripeManagedApiKeyProvider(_SimStripeProvider):
    """v2 API keys: no replay of a lost create (a fresh idempotency key each
    attempt), so a key a lost create of this rotation left is expired first."""

    kind = "stripe.managed_api_key"
    params_model = StripeManagedApiKeyParams
    live_fields = ("api_key", "key_id")
    confirm_budget = timedelta(minutes=4)
    reports_key_use = True
    _prefix = "rk_"
    _handle_field = "key_id"

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        mark = mark_text(ctx.credential, ctx.rotation_id)
        listed = self._call("GET list", lambda: [(k.key_id, k.mark, k.extra.get("expired_at")) for k in self.service.existing()])
        for key_id, key_mark, expired in listed:
            if expired is None and key_mark == mark:
                self.revoke({"key_id": key_id})
        fresh = f"rotator-{ctx.rotation_id}-{next(self._counter)}-{id(self)}"
        key = self._call("POST create", lambda: self.service.create(self.actor, fresh, self._prefix, mark, {}), mutating=True)
        return IssuedCredential(key_id=key.key_id, data={"api_key": key.secret, "key_id": key.key_id},
                                handle={"key_id": key.key_id, "api_key": key.secret})

    def _probe(self, api_key: str) -> int:
        def probe() -> int:
            key = next((k for k in self.service.keys.values() if k.secret == api_key), None)
            return 200 if key is not None and self.service.is_accepted(key.key_id) else 401
        return self._call("GET customers", probe)

    def verify(self, credential: IssuedCredential) -> None:
        if self._probe(credential.data["api_key"]) == 401:  # "not live yet" as often as "bad"
            raise TransientError(f"Stripe does not accept the new key {credential.key_id} yet (HTTP 401)")

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id = handle["key_id"]

        def expire() -> None:
            key = self.service.visible(key_id)
            if key is None:
                raise NotFoundError(f"no Stripe key {key_id}")
            if key.extra.get("expired_at") is None:
                key.extra["expired_at"] = self.service.now()
                key.dead_at = self.service.now() + StripeAccount.EXPIRY_LAG

        try:
            self._call("POST expire", expire, target=key_id, mutating=True)
        except NotFoundError:
            return
        except (TransientError, PermanentError):
            if self._is_expired_at_stripe(key_id):
                return
            raise

    def _status(self, key_id: str) -> str:
        key = self.service.visible(key_id)
        if key is None:
            raise NotFoundError(f"no Stripe key {key_id}")
        return "expired" if key.extra.get("expired_at") else "active"

    def _is_expired_at_stripe(self, key_id: str) -> bool:
        try:
            return self._call("GET key", lambda: self._status(key_id)) == "expired"
        except NotFoundError:
            return True
        except (TransientError, PermanentError):
            return False

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        if handle.get("api_key"):  # revoked means Stripe rejects the key itself
            return self._probe(handle["api_key"]) == 401
        try:
            return self._call("GET key", lambda: self._status(handle["key_id"])) == "expired"
        except NotFoundError:
            return True

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        if not key_id:
            return None
        handle = {"key_id": key_id}
        if data.get("api_key"):
            handle["api_key"] = data["api_key"]
        return ProviderKey(key_id=key_id, handle=handle)

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        key = self._call("GET key", lambda: self.service.visible(handle["key_id"]))
        return key.last_used_at if key is not None else None


class SimStripeWebhookSecretProvider(_SimStripeProvider):
    kind = "stripe.webhook_secret"
    params_model = StripeWebhookSecretParams
    live_fields = ("signing_secret", "endpoint_id")
    reports_last_use = False
    _prefix = "we_"
    _handle_field = "endpoint_id"

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        params = self.params
        key = self._create(ctx, {"url": params.url, "enabled_events": list(params.enabled_events)})  # type: ignore[attr-defined]
        return IssuedCredential(key_id=key.key_id, data={"signing_secret": key.secret, "endpoint_id": key.key_id},
                                handle={"endpoint_id": key.key_id})

    def verify(self, credential: IssuedCredential) -> None:
        key = self._call("GET endpoint", lambda: self.service.visible(credential.key_id))
        if key is None:
            raise PermanentError(f"Stripe webhook endpoint {credential.key_id} does not exist")
        if key.extra.get("url") != self.params.url:  # type: ignore[attr-defined]
            raise PermanentError(f"Stripe webhook endpoint {credential.key_id} is not as configured: its url differs")

    def revoke(self, handle: Mapping[str, str]) -> None:
        endpoint_id = handle["endpoint_id"]

        def delete() -> None:
            if self.service.visible(endpoint_id) is None:
                raise NotFoundError(f"no endpoint {endpoint_id}")
            self.service.keys[endpoint_id].deleted_at = self.service.now()

        try:
            self._call("DELETE endpoint", delete, target=endpoint_id, mutating=True)
        except NotFoundError:
            return
        except (TransientError, PermanentError):
            if self._is_revoked_quietly(endpoint_id):
                return
            raise

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        return self._call("GET endpoint", lambda: self.service.visible(handle["endpoint_id"])) is None

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        endpoint_id = data.get("endpoint_id")
        return ProviderKey(key_id=endpoint_id, handle={"endpoint_id": endpoint_id}) if endpoint_id else None

    def _is_revoked_quietly(self, endpoint_id: str) -> bool:
        try:
            return self.is_revoked({"endpoint_id": endpoint_id})
        except (TransientError, PermanentError):
            return False

    def list_keys(self) -> list[ProviderKey]:
        url = self.params.url  # type: ignore[attr-defined]
        keys = self._call("GET list", lambda: [(k.key_id, k.mark, k.created_at, k.extra.get("url")) for k in self.service.existing()])
        return [ProviderKey(key_id=key_id, handle={"endpoint_id": key_id}, created_at=created, mark=parse_mark(mark))
                for key_id, mark, created, key_url in keys if parse_mark(mark) is not None or key_url == url]


# -- what a simulation needs to know of each kind ----------------------------------------


@dataclass(frozen=True)
class Kind:
    """One provider kind: its service, its provider class, and example params."""

    name: str
    make_service: Callable[[Callable[[], datetime]], Service]
    provider_cls: type[Provider]
    params: Mapping[str, Any]
    every: str = "1d"
    grace: str = "6h"


KINDS: dict[str, Kind] = {
    "aws": Kind("aws", lambda now: AwsIam(now), SimAwsIamAccessKeyProvider,
                {"user_name": "ci-sim", "delete_after_deactivation": "2h"}),
    "deploy_key": Kind("deploy_key", lambda now: GitHubRepo(now), SimGitHubDeployKeyProvider,
                       {"app_id": 1, "installation_id": 2, "private_key": "secret/sim/app#pem", "repository": "acme/app"}),
    "installation_token": Kind("installation_token", lambda now: GitHubApp(now), SimGitHubAppInstallationTokenProvider,
                               {"app_id": 1, "installation_id": 2, "private_key": "secret/sim/app#pem"}, every="30m", grace="10m"),
    "stripe_key": Kind("stripe_key", lambda now: StripeAccount(now), SimStripeManagedApiKeyProvider,
                       {"account": "acct_sim1", "management_key": "secret/sim/stripe#key", "permissions": ["customer_read"]}),
    "webhook": Kind("webhook", lambda now: StripeAccount(now, secret_field="signing_secret"), SimStripeWebhookSecretProvider,
                    {"url": "https://hooks.example.com/stripe", "enabled_events": ["invoice.paid"], "management_key": "secret/sim/stripe#key"}),
}
