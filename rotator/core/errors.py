"""The project's error classes.

Every edge (Vault, each provider) turns its SDK's errors into one of two
kinds before they leave it: `TransientError` (worth retrying, maybe after
`retry_after` seconds) or `PermanentError` (retrying will not help until a
person changes something). Messages never carry secret values.
"""

from __future__ import annotations


class RotatorError(Exception):
    """Base class of every error this project raises on purpose."""


class TransientError(RotatorError):
    """A failure that may go away by itself: retry, with backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(RotatorError):
    """A failure that retrying will not fix (bad input, denied, state problem)."""


class NotFoundError(PermanentError):
    """The thing asked for does not exist."""


class ConfigError(RotatorError):
    """A credential file or setting is invalid; `problems` lists each one."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class ConfigProblem:
    """One problem in one file, printed as `FILE: field.path: message`."""

    __slots__ = ("file", "field", "message")

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.file}: {self.field or '<file>'}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({str(self)!r})"


class CasMismatchError(RotatorError):
    """A check-and-set write lost: someone else wrote the record first."""


class LeaseHeldError(RotatorError):
    """Another process holds the credential's lease."""


class LeaseLostError(RotatorError):
    """Our lease was taken over (our CAS write lost); stop without side effects."""


class VaultUnavailableError(TransientError):
    """Vault cannot be reached, is sealed, or is overloaded."""
