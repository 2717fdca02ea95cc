"""A scanner for secret values in captured output: tests record every secret
they see minted and assert that none appears in stdout, stderr, logs or
audit files."""

from __future__ import annotations

from collections.abc import Iterable


def find_leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """Which of `secrets` occur in `text` (reported by length only, never value)."""
    found = []
    for secret in secrets:
        if secret and len(secret) >= 8 and secret in text:
            found.append(f"<secret of {len(secret)} chars>")
    return found


def assert_no_leaks(text: str, secrets: Iterable[str], *, where: str = "output") -> None:
    leaks = find_leaks(text, list(secrets))
    assert not leaks, f"{len(leaks)} secret value(s) appeared in {where}: {leaks}"
