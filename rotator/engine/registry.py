"""Finding provider plugins: every provider, built-in or third-party, registers under the
`rotator.providers` entry-point group with its kind as the name (contract §4). A plugin that fails to
load is reported by kind, never fatal to the others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from rotator.core.provider import Provider, ProviderFactory, ProviderLoadError

ENTRY_POINT_GROUP = "rotator.providers"


class ProviderRegistry(Mapping[str, ProviderFactory]):
    """Every provider registered under the entry-point group, by kind.

    Lazy: a plugin is imported the first time a credential names it, so a
    daemon that manages only AWS keys never imports the HTTP, JWT and JOSE
    libraries of the others. A plugin that fails to import raises
    `ProviderLoadError` for the credentials that name it and never stops
    the others.
    """

    def __init__(self) -> None:
        self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        self._loaded: dict[str, ProviderFactory] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entry_points))

    def __len__(self) -> int:
        return len(self._entry_points)

    def __contains__(self, kind: object) -> bool:
        return kind in self._entry_points

    def __getitem__(self, kind: str) -> ProviderFactory:
        with self._lock:
            if kind in self._loaded:
                return self._loaded[kind]
            if kind in self._errors:
                raise ProviderLoadError(self._errors[kind])
            ep = self._entry_points[kind]  # KeyError: not registered
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plugin must not stop the others
                self._errors[kind] = f"{type(exc).__name__}: {exc}"
                raise ProviderLoadError(self._errors[kind]) from None
            if not (isinstance(cls, type) and issubclass(cls, Provider)):
                self._errors[kind] = f"{ep.value} is not a rotator.core.provider.Provider"
                raise ProviderLoadError(self._errors[kind])
            self._loaded[kind] = cls
            return cls

    def errors(self, *, load_all: bool = False) -> dict[str, str]:
        """Plugins that failed to load (trying every one with `load_all`)."""
        if load_all:
            for kind in list(self._entry_points):
                try:
                    self[kind]
                except ProviderLoadError:
                    pass
        return dict(self._errors)


_registry: ProviderRegistry | None = None


def load_providers() -> ProviderRegistry:
    """The process-wide registry of providers (see `ProviderRegistry`)."""
    global _registry
    if _registry is None:
        _registry = ProviderRegistry()
    return _registry


def load_provider_errors() -> dict[str, str]:
    """Every plugin that fails to load, by kind, with the reason."""
    return load_providers().errors(load_all=True)
