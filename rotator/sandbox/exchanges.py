"""What the sandboxes served, for whoever wants to check it (the tests hold
every exchange to the vendors' OpenAPI descriptions, see tests/openapi/).

Invariant: an observer sees bytes as they crossed the loopback socket,
headers included, so it must never log or print them (keys ride in
Authorization headers and bodies). Observers are process-wide and only the
test suite registers any.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Exchange:
    """One request a sandbox answered, and its answer."""

    sandbox: str  # "stripe" or "github"
    method: str
    path: str  # without the query, relative to the API base (a GHES /api/v3 prefix removed)
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int  # 0: the connection was dropped unanswered
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    injected: bool = False  # a fault a test injected, not the sandbox's own answer

    def __repr__(self) -> str:  # headers and bodies may hold keys
        return f"Exchange({self.sandbox} {self.method} {self.path} -> {self.status})"


_observers: list[Callable[[Exchange], None]] = []
_lock = threading.Lock()


def observe(observer: Callable[[Exchange], None]) -> Callable[[], None]:
    """Register `observer`; returns the function that unregisters it."""
    with _lock:
        _observers.append(observer)

    def stop() -> None:
        with _lock:
            if observer in _observers:
                _observers.remove(observer)

    return stop


def notify(exchange: Exchange) -> None:
    with _lock:
        observers = list(_observers)
    for observer in observers:
        observer(exchange)
