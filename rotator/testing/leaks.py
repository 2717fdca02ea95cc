"""A scanner for secret values in captured output: tests record every secret
they see minted and assert that none appears in stdout, stderr, logs or
audit files, neither as itself nor encoded (JSON, URL, base64) nor cut off.

The encodings are computed here independently of `rotator.core.redaction`, so a
test does not grade the scrubber with the scrubber's own idea of a copy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

# A cut-off copy is found when it keeps this many leading or trailing
# characters (the scrubber's documented minimum, docs/SECURITY.md).
FRAGMENT = 12


def leak_forms(secret: str, *, fragments: bool = False) -> dict[str, str]:
    """The copies of `secret` a leak scan looks for, by the name of their form."""
    raw = secret.encode()
    forms = {
        "itself": secret,
        "json-escaped": json.dumps(secret)[1:-1],
        "url-encoded": quote(secret, safe=""),
        "url-encoded (plus)": quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64url unpadded": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    if fragments and len(secret) >= 2 * FRAGMENT:
        forms["leading fragment"] = secret[:FRAGMENT]
        forms["trailing fragment"] = secret[-FRAGMENT:]
    return forms


def find_leaks(text: str, secrets: Iterable[str], *, fragments: bool = False) -> list[str]:
    """Which of `secrets` occur in `text`, in which form (reported by length
    and form only, never by value)."""
    found = []
    for secret in secrets:
        if not secret or len(secret) < 8:
            continue
        for name, form in leak_forms(secret, fragments=fragments).items():
            if len(form) >= 8 and form in text:
                found.append(f"<secret of {len(secret)} chars, {name}>")
                break
    return found


def assert_no_leaks(text: str, secrets: Iterable[str], *, where: str = "output", fragments: bool = False) -> None:
    leaks = find_leaks(text, list(secrets), fragments=fragments)
    assert not leaks, f"{len(leaks)} secret value(s) appeared in {where}: {leaks}"
