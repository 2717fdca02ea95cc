"""Receiving a new Stripe API key sealed to us: an ephemeral RSA key pair
per create, and strict decryption of the compact JWE Stripe returns.

Invariants:
- The private key lives in memory only, in one `EphemeralKeyPair`, and is
  never serialised, logged or put in a repr.
- Only `alg` RSA-OAEP or RSA-OAEP-256 with `enc` A256GCM and no compression
  are accepted; anything else is refused by name before any decryption
  (no downgrade to RSA1_5 or CBC modes). All crypto is joserfc's.
- Every failure raises `JweError` with a message that holds no plaintext
  and no ciphertext.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # joserfc loads on first use: `rotator validate` needs none of it
    from joserfc.jwk import RSAKey

ALLOWED_ALGS = frozenset({"RSA-OAEP", "RSA-OAEP-256"})
ALLOWED_ENC = "A256GCM"
RSA_BITS = 2048
# What a Stripe API key looks like once decrypted: no prefix check (Stripe
# may add prefixes), just a single printable token of sane length.
_TOKEN = re.compile(r"[A-Za-z0-9_]{16,512}")


class JweError(Exception):
    """The sealed key could not be opened or is not a key."""


class EphemeralKeyPair:
    """A fresh RSA-2048 key pair for one create; the private half never leaves."""

    __slots__ = ("_key", "public_pem", "key_id")

    def __init__(self) -> None:
        from joserfc.jwk import RSAKey

        self._key = RSAKey.generate_key(RSA_BITS, private=True)
        self.public_pem: str = self._key.as_pem(private=False).decode("ascii")
        # Sent as public_key.id and echoed by Stripe as recipient_key_id.
        self.key_id: str = "rotator-" + self._key.thumbprint()[:22]

    def __repr__(self) -> str:
        return f"EphemeralKeyPair(key_id={self.key_id!r})"

    def decrypt(self, compact: str) -> str:
        """Open a compact JWE sealed to this key pair; the plaintext API key."""
        return decrypt_api_key(compact, self._key)


def protected_header(compact: str) -> dict[str, object]:
    """The JWE's protected header, parsed without decrypting anything."""
    if not isinstance(compact, str) or compact.count(".") != 4:
        raise JweError("the encrypted secret is not a compact JWE (expected five dot-separated parts)")
    segment = compact.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError):
        raise JweError("the encrypted secret's JWE header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise JweError("the encrypted secret's JWE header is not a JSON object")
    return header


def decrypt_api_key(compact: str, key: RSAKey) -> str:
    """Check the header strictly, decrypt with joserfc, check the result is a key."""
    from joserfc import jwe
    from joserfc.errors import JoseError

    header = protected_header(compact)
    alg, enc = header.get("alg"), header.get("enc")
    if alg not in ALLOWED_ALGS:
        raise JweError(f"the encrypted secret uses JWE alg {alg!r}; only RSA-OAEP and RSA-OAEP-256 are accepted")
    if enc != ALLOWED_ENC:
        raise JweError(f"the encrypted secret uses JWE enc {enc!r}; only A256GCM is accepted")
    if "zip" in header:
        raise JweError("the encrypted secret is compressed (zip); that is not accepted")
    try:
        result = jwe.decrypt_compact(compact, key, algorithms=[*sorted(ALLOWED_ALGS), ALLOWED_ENC])
    except (JoseError, ValueError, TypeError, KeyError):
        # Which step failed is not said: it would help an attacker, not an operator.
        raise JweError("the encrypted secret could not be decrypted with this rotation's key pair") from None
    try:
        token = (result.plaintext or b"").decode("ascii")
    except UnicodeDecodeError:
        raise JweError("the decrypted secret is not an API key") from None
    if not _TOKEN.fullmatch(token):
        raise JweError("the decrypted secret is not an API key")
    return token


def open_created_secret(key: Mapping[str, Any], pair: EphemeralKeyPair | None) -> str:
    """The new key from a create response: the JWE when present (never falling
    back to a plaintext token beside it), else a test-mode plaintext token."""
    secret = key.get("secret_key") if isinstance(key.get("secret_key"), dict) else {}
    sealed = secret.get("encrypted_secret") if isinstance(secret.get("encrypted_secret"), dict) else {}
    if sealed.get("ciphertext"):
        if sealed.get("format") not in (None, "jwe_compact"):
            raise JweError(f"the encrypted secret has format {sealed.get('format')!r}, not jwe_compact")
        if pair is None or sealed.get("recipient_key_id") not in (None, pair.key_id):
            raise JweError("the encrypted secret was sealed to another public key")
        return pair.decrypt(str(sealed["ciphertext"]))
    token = secret.get("token")
    if isinstance(token, str) and _TOKEN.fullmatch(token):
        return token
    raise JweError("Stripe returned neither an encrypted secret nor a test-mode token")
