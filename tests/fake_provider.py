"""An in-process provider with a real provider's semantics, for the
regression tests of the engine under faults (tests/test_regressions.py).

`KeyWorld` is the provider's side: keys with secrets, marks, creation times
and a per-scope limit (AWS allows 2 keys per user). `FakeProvider` talks to
it exactly as a plugin talks to an API, and each call can be made to fail
*before* its effect or *after* it (the response lost: a timeout, a dropped
connection, a 5xx after the effect), which is what the engine must survive.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from rotator.core.clock import Clock
from rotator.core.errors import PermanentError, TransientError
from rotator.core.provider import IssueContext, IssuedCredential, KeyMark, NoCapacityError, Provider, ProviderKey

WORLDS: dict[str, KeyWorld] = {}


@dataclass
class Key:
    key_id: str
    secret: str
    created_at: datetime
    mark: KeyMark | None
    active: bool = True


@dataclass
class KeyWorld:
    """The provider's side of the wire."""

    clock: Clock
    limit: int = 2
    keys: dict[str, Key] = field(default_factory=dict)
    # op -> list of "before" / "after" / "permanent": how the next calls of `op` fail.
    faults: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (op, key id)
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)  # run once, at the next call of op
    counter: int = 0
    # Called before each call's effect: the tests' invariant checks.
    before_effect: Callable[[str, str], None] | None = None

    def fail(self, op: str, *modes: str) -> None:
        self.faults.setdefault(op, []).extend(modes)

    def _fault(self, op: str) -> str | None:
        queue = self.faults.get(op)
        return queue.pop(0) if queue else None

    def call(self, op: str, key_id: str, effect):  # type: ignore[no-untyped-def]
        hook = self.hooks.pop(op, None)
        if hook is not None:
            hook()
        if self.before_effect is not None:
            self.before_effect(op, key_id)
        mode = self._fault(op)
        if mode == "before":
            raise TransientError(f"injected: {op} failed before its effect")
        if mode == "permanent":
            raise PermanentError(f"injected: {op} refused")
        self.calls.append((op, key_id))
        result = effect()
        if mode == "after":
            raise TransientError(f"injected: {op} response lost after its effect")
        return result

    def accepts(self, key_id: str, secret: str) -> bool:
        key = self.keys.get(key_id)
        return key is not None and key.active and key.secret == secret

    def add_static(self, mark: KeyMark | None = None) -> Key:
        """A key someone made by hand (or the rotator, with `mark`)."""
        self.counter += 1
        key = Key(f"STATIC{self.counter}", secrets.token_hex(8), self.clock.now(), mark)
        self.keys[key.key_id] = key
        return key


class FakeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    world: str
    retire_delay_seconds: float | None = None


class FakeProvider(Provider):
    """AWS-like: a limit of keys, a non-idempotent create, a deactivated stage when asked."""

    kind: ClassVar[str] = "test.fake"
    params_model: ClassVar[type[BaseModel]] = FakeParams
    live_fields: ClassVar[tuple[str, ...]] = ("key_id", "secret")
    verify_budget: ClassVar[timedelta] = timedelta(seconds=5)
    params: FakeParams

    @property
    def world(self) -> KeyWorld:
        return WORLDS[self.params.world]

    def issue(self, ctx: IssueContext) -> IssuedCredential:
        world = self.world
        if len(world.keys) >= world.limit:
            raise NoCapacityError(f"already {world.limit} keys", blocking_key_ids=frozenset(world.keys))

        def create() -> Key:
            world.counter += 1
            key = Key(f"K{world.counter}", secrets.token_hex(8), world.clock.now(), KeyMark(ctx.credential, ctx.rotation_id))
            world.keys[key.key_id] = key
            return key

        key = world.call("issue", "", create)
        return IssuedCredential(key_id=key.key_id, data={"key_id": key.key_id, "secret": key.secret}, handle={"key_id": key.key_id})

    def verify(self, credential: IssuedCredential) -> None:
        if not self.world.call("verify", credential.key_id, lambda: self.world.accepts(credential.key_id, credential.data["secret"])):
            raise TransientError(f"{credential.key_id} is not accepted")

    def retire_delay(self) -> timedelta | None:
        seconds = self.params.retire_delay_seconds
        return None if seconds is None else timedelta(seconds=seconds)

    def deactivate(self, handle: Mapping[str, str]) -> None:
        key_id = handle["key_id"]

        def effect() -> None:
            if key_id in self.world.keys:
                self.world.keys[key_id].active = False

        self.world.call("deactivate", key_id, effect)

    def revoke(self, handle: Mapping[str, str]) -> None:
        key_id = handle["key_id"]
        self.world.call("revoke", key_id, lambda: self.world.keys.pop(key_id, None))

    def is_revoked(self, handle: Mapping[str, str]) -> bool:
        return handle["key_id"] not in self.world.keys

    def list_keys(self) -> list[ProviderKey]:
        return self.world.call("list", "", lambda: [
            ProviderKey(key_id=k.key_id, handle={"key_id": k.key_id}, created_at=k.created_at, active=k.active, mark=k.mark)
            for k in self.world.keys.values()
        ])

    def live_key(self, data: Mapping[str, str]) -> ProviderKey | None:
        key_id = data.get("key_id")
        return ProviderKey(key_id=key_id, handle={"key_id": key_id}) if key_id else None
