"""The provider plugin interface, and how plugins are found.

A provider turns one credential's `params` into calls against one
third-party API: mint a credential, check it works, retire it, and list
what exists there. Providers know nothing of Vault, schedules or logging
set-up. They raise only `TransientError` / `PermanentError` (see
`rotator.core.errors`), never their SDK's own exceptions, and never put a secret
value in a message.

Every provider, built-in or third-party, registers under the
`rotator.providers` entry-point group with its kind as the name, e.g.
`aws.iam_access_key = "rotator_providers.aws_iam:AwsIamAccessKeyProvider"`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from rotator.core.errors import PermanentError
from rotator.core.redaction import register_secret

if TYPE_CHECKING:
    from rotator.core.clock import Clock


@dataclass(frozen=True)
class IssuedCredential:
    """A credential the provider just minted.

    `data` holds the live fields written to Vault (secret). `handle` holds
    what `revoke` needs later; it may hold a secret too (a GitHub token is
    revoked with itself), so it is only ever stored in Vault.
    """

    key_id: str
    data: Mapping[str, str]
    handle: Mapping[str, str]
    expires_at: datetime | None = None

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return f"IssuedCredential(key_id={self.key_id!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class KeyMark:
    """The rotator's mark on a key it made: which credential, which rotation."""

    credential: str
    rotation_id: str


@dataclass(frozen=True)
class IssuingNote:
    """A rotation's note at the provider, set right before a create whose mark
    is a second call (AWS: the `rotator-issuing:CREDENTIAL` user tag before
    `CreateAccessKey`, cleared by the `TagUser` that marks the new key). It
    outlives a crash between the two calls and a lost state record: an
    unmarked key created at about `at`, and not in `before`, is that
    rotation's (rotator.engine.baseline.issued_unmarked)."""

    credential: str
    rotation_id: str
    at: datetime  # when the note was set, by the rotator's clock (to the second)
    before: frozenset[str] = frozenset()  # the keys the rotation listed before its create


@dataclass(frozen=True)
class ProviderKey:
    """One key as the provider lists it. Never holds a secret value."""

    key_id: str
    handle: Mapping[str, str]
    created_at: datetime | None = None
    active: bool = True
    last_used_at: datetime | None = None
    mark: KeyMark | None = None
    # Unmarked keys only: the issuing notes set in the key's scope (an IAM user's), whichever rotation's.
    issuing: tuple[IssuingNote, ...] = ()


@dataclass(frozen=True)
class IssueContext:
    """What a provider may know about the rotation it is issuing for."""

    credential: str
    rotation_id: str
    # Keys the rotator knows it made for this credential and that are still
    # at the provider (live + retiring). A provider must never count them
    # as unmanaged.
    managed_key_ids: frozenset[str] = frozenset()
    # Keys the rotation listed at the provider when it began (non-atomic marks: its IssuingNote names them).
    preexisting_key_ids: frozenset[str] = frozenset()


@dataclass
class ProviderContext:
    """What the core hands a provider: a way to read referenced secrets, a
    clock, the shutdown event every wait should watch, and where to register
    each secret value the moment the provider learns one (a minted key, a
    token it uses itself), so that no output, an error raised a line later
    included, can carry it (contract §6.6)."""

    read_secret: Callable[[str], str]
    clock: Clock
    shutdown: threading.Event = field(default_factory=threading.Event)
    user_agent: str = "rotator"
    register_secret: Callable[..., None] = register_secret


class NoCapacityError(PermanentError):
    """The provider has no room for one more key (e.g. AWS's 2 keys per user).

    `blocking_key_ids` names the keys in the way, so the engine can tell
    whether retiring one of its own (past grace) would make room.
    """

    def __init__(self, message: str, *, blocking_key_ids: frozenset[str]) -> None:
        super().__init__(message)
        self.blocking_key_ids = blocking_key_ids


class Provider(ABC):
    """Base class of every provider plugin."""

    kind: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]
    # Fields that land in the live Vault path (contract §4).
    live_fields: ClassVar[tuple[str, ...]]
    # Names (in live data and in handles) whose values are secret. The core
    # masks these values wherever they might appear in output.
    secret_fields: ClassVar[frozenset[str]] = frozenset(
        {"secret_access_key", "token", "private_key", "api_key", "signing_secret", "secret", "password"}
    )
    # How long verification may keep retrying before the new credential is
    # judged bad (AWS keys take seconds to propagate).
    verify_budget: ClassVar[timedelta] = timedelta(seconds=30)
    # How long one revocation step keeps asking `is_revoked` before it fails
    # as transient (and the state machine asks again at a later tick). Keep
    # it well under the engine's lease (5 min).
    confirm_budget: ClassVar[timedelta] = timedelta(seconds=30)
    # False where the API cannot list credentials (GitHub installation tokens).
    can_list: ClassVar[bool] = True
    # True where `revoke`, `deactivate` and `is_revoked` work from the handle's
    # non-secret fields alone (ids), when its stashed secret parts are lost.
    # False where they need the secret (an installation token revokes itself):
    # such a key is then done with once it has expired by itself.
    retires_by_id: ClassVar[bool] = True
    # True where the mark is set in the same call that creates the key (a
    # title, a name). False where it is a second call (AWS user tags): then a
    # crash between the two leaves an unmarked key, found by creation time,
    # and by the IssuingNote the provider set before the create (`issuing`
    # on the keys it lists), which outlives a lost state record.
    is_marking_atomic: ClassVar[bool] = True
    # True where repeating a create whose response was lost makes no second
    # credential (Stripe replays an idempotency key). Otherwise the engine
    # makes a create once per step, and a lost response is cleaned up by the
    # orphan sweep before the next create.
    is_issue_retry_safe: ClassVar[bool] = False
    # False where the API says nothing of when a key was last used (Stripe
    # webhook endpoints): compliance then never calls such a key unused.
    reports_last_use: ClassVar[bool] = True
    # Which params name something the operator policy bounds (rotator.config.policy):
    # param name -> aws_users, github_repositories, github_repository_names,
    # github_installations, stripe_accounts or urls. Params typed ApiUrl or
    # VaultRef are found by their type and need no entry here.
    scope_params: ClassVar[Mapping[str, str]] = {}

    # True where the API says when one key was last used (AWS
    # GetAccessKeyLastUsed, a deploy key's last_used): before retiring a
    # superseded key the engine asks `last_used`, and holds the revocation
    # while the key is in use (contract §6.10, rotator.core.usage).
    reports_key_use: ClassVar[bool] = False

    def __init__(self, params: BaseModel, context: ProviderContext) -> None:
        self.params = params
        self.context = context

    @classmethod
    def check_policy(cls, params: BaseModel, *, interval: timedelta | None, grace: timedelta) -> list[tuple[str, str]]:
        """Cross-field checks of a credential file: (field path, message) pairs."""
        return []

    @abstractmethod
    def issue(self, ctx: IssueContext) -> IssuedCredential:
        """Mint one new credential, marked with `ctx.credential`/`ctx.rotation_id`."""

    @abstractmethod
    def verify(self, credential: IssuedCredential) -> None:
        """One attempt to use the new credential itself against the provider.

        Raise `TransientError` while it is not (yet) accepted, `PermanentError`
        when it can never be right. The engine retries within `verify_budget`.
        """

    def retire_delay(self) -> timedelta | None:
        """Time between deactivation and revocation, or None where the provider
        has no deactivated stage (revocation happens at the end of grace)."""
        return None

    def deactivate(self, handle: Mapping[str, str]) -> None:
        """Make the credential unusable but recoverable. Idempotent."""
        raise NotImplementedError(f"{self.kind} has no deactivated stage")

    @abstractmethod
    def revoke(self, handle: Mapping[str, str]) -> None:
        """Revoke for good. Idempotent: already gone counts as done."""

    @abstractmethod
    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        """Whether the provider now rejects the credential (confirmation)."""

    def last_used(self, handle: Mapping[str, str]) -> datetime | None:
        """When the provider last saw this key used (None: never, or gone). A read only."""
        raise NotImplementedError(f"{self.kind} does not report when a key was last used")

    def list_keys(self) -> list[ProviderKey]:
        """Every key in this credential's scope at the provider (user, repo, account)."""
        raise NotImplementedError(f"{self.kind} cannot list its credentials")

    def list_keys_without_use(self) -> list[ProviderKey]:
        """`list_keys` where `last_used_at` may be left None: what the engine's
        inventories read (ids, marks, creation times, `active`), not the usage
        checks. Override it where last use costs a call per key (AWS
        GetAccessKeyLastUsed); by default it is `list_keys`."""
        return self.list_keys()

    def list_key_ids(self) -> list[str]:
        """The ids of `list_keys`, only (a provider may get them with fewer calls)."""
        return [key.key_id for key in self.list_keys()]

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        """The key that live data (as written to Vault) holds, with the handle
        that revokes it, where the data names one (`rotator adopt`, a lost
        record). None where it cannot be told (installation tokens)."""
        return None

    def secret_values(self, *mappings: Mapping[str, str]) -> list[str]:
        """The secret values in live data or handles, by `secret_fields`."""
        return [v for m in mappings for k, v in m.items() if k in self.secret_fields and isinstance(v, str)]

    def close(self) -> None:
        """Release network resources."""


ProviderFactory = type[Provider]


class ProviderLoadError(Exception):
    """A registered plugin failed to import."""
