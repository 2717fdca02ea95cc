"""Simulated AWS IAM access keys (two per user, deactivate before delete).

The provider makes the calls providers/aws_iam.py makes, in its order (the
named replays in tests/test_sim.py point at calls by index): the issuing tag
(`rotator-issuing:CREDENTIAL`, a TagUser) then the create, the keys listed
only when AWS refused it (LimitExceeded); the mark and the issuing tag
cleared in one TagUser; ids alone where the engine asks for ids; no last use
where it asks for none.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel
from rotator_providers.aws_iam import AwsIamParams
from rotator_providers.aws_tags import issuing_cleared, issuing_tag, parse_issuing

from rotator.core.errors import NotFoundError, PermanentError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, NoCapacityError, ProviderKey
from rotator.testing.sim.service import Boundary, Service, SimKey, _SimProvider, mark_text, parse_mark


class LimitExceeded(PermanentError):
    """AWS refused a create before acting: the user has its 2 keys."""


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
        self.tags: dict[str, str] = {}  # the user's tags: access key id -> mark, rotator-issuing:NAME -> note

    def user_keys(self) -> list[SimKey]:
        return self.existing()

    def create(self, actor: str) -> SimKey:
        if len(self.user_keys()) >= self.LIMIT:
            raise LimitExceeded("AWS LimitExceeded while creating an access key")
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
        note = issuing_tag(ctx, self.context.clock.now())
        self._call("tag_user", lambda: iam.tags.__setitem__(note["Key"], note["Value"]), mutating=True)
        try:
            key = self._call("create_access_key", lambda: iam.create(self.actor), mutating=True)
        except LimitExceeded:
            keys = self._call("list_access_keys", lambda: [k.key_id for k in iam.user_keys()])
            if len(keys) < 2:
                raise PermanentError(f"AWS LimitExceeded while creating an access key for {self.params.user_name}") from None
            raise NoCapacityError(f"IAM user {self.params.user_name} already has 2 access keys (AWS's limit)",
                                  blocking_key_ids=frozenset(keys)) from None
        tags = {key.key_id: mark_text(ctx.credential, ctx.rotation_id), issuing_cleared(ctx.credential)["Key"]: ""}
        try:
            self._call("tag_user", lambda: iam.tags.update(tags), target=key.key_id, mutating=True)
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

    def list_key_ids(self) -> list[str]:
        return self._call("list_access_keys", lambda: [k.key_id for k in self.service.user_keys()])

    def list_keys_without_use(self) -> list[ProviderKey]:
        iam = self.service
        user = self.params.user_name
        keys = self._call("list_access_keys", lambda: [(k.key_id, k.created_at, k.active) for k in iam.user_keys()])
        tags = self._call("list_user_tags", lambda: dict(iam.tags))
        notes = parse_issuing(tags)
        return [ProviderKey(key_id=key_id, handle={"user_name": user, "access_key_id": key_id}, created_at=created,
                            active=active, mark=parse_mark(tags.get(key_id)), issuing=() if parse_mark(tags.get(key_id)) else notes)
                for key_id, created, active in keys]

    def list_keys(self) -> list[ProviderKey]:
        iam = self.service
        out = []
        for key in self.list_keys_without_use():
            used = self._call("get_access_key_last_used", lambda k=key.key_id: iam.keys[k].last_used_at)
            out.append(dataclasses.replace(key, last_used_at=used))
        return out
