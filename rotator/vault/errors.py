"""Vault's answers as the project's errors: hvac's exceptions mapped by status to NotFoundError, CasMismatchError,
a denial, a TransientError (5xx, 429, the network: retried) or a PermanentError; a message never carries a
token or a secret value.
"""

from __future__ import annotations

import hvac.exceptions as hvac_errors
import requests

from rotator.core.errors import CasMismatchError, NotFoundError, PermanentError, TransientError, VaultUnavailableError
from rotator.vault.auth import VaultDeniedError


def _message(exc: hvac_errors.VaultError) -> str:
    errors = getattr(exc, "errors", None) or []
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return text or type(exc).__name__


def translate(exc: Exception, what: str) -> Exception:
    """Map an hvac/requests error to the project's kinds."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return VaultUnavailableError(f"Vault unreachable while {what}: {type(exc).__name__}")
    if isinstance(exc, hvac_errors.InvalidRequest) and "check-and-set" in _message(exc):
        return CasMismatchError(f"check-and-set lost while {what}")
    if isinstance(exc, hvac_errors.InvalidPath):
        return NotFoundError(f"not found while {what}")
    if isinstance(exc, (hvac_errors.RateLimitExceeded, hvac_errors.InternalServerError, hvac_errors.BadGateway)):
        return TransientError(f"Vault error while {what}: {_message(exc)}")
    if isinstance(exc, (hvac_errors.VaultDown, hvac_errors.VaultNotInitialized)):
        return VaultUnavailableError(f"Vault sealed or down while {what}")
    if isinstance(exc, hvac_errors.Forbidden):
        return VaultDeniedError(f"Vault denied {what} (403): check the rotator's policy, and that its token is still valid")
    if isinstance(exc, hvac_errors.Unauthorized):
        return VaultDeniedError(f"Vault rejected the token while {what} (401)")
    if isinstance(exc, hvac_errors.VaultError):
        return PermanentError(f"Vault refused {what}: {_message(exc)}")
    return exc
