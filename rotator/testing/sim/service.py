"""What every simulated vendor shares: keys as the vendor holds them, a service whose every call is a
scheduling boundary (a fault may land before or after its effect), and the base of the simulated providers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from rotator.core.errors import TransientError
from rotator.core.provider import KeyMark, Provider

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
