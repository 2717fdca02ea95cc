"""Reusable validated field types for credential files and provider params.

Durations (`30d`, `1h30m`), Vault secret references (`MOUNT/PATH#FIELD`),
Vault paths that cannot escape their mount, API base URLs (https, or http on
loopback only), and a guard that rejects literal values that look like
secrets, since a credential file must never hold one.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | timedelta) -> timedelta:
    """`1h30m` -> 5400 s. Units s, m, h, d, w; each at most once, largest first."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError("a duration is a string such as 30s, 15m, 24h, 30d or 1h30m")
    return _parse_compact(text.strip())


@lru_cache(maxsize=256)
def _parse_compact(compact: str) -> timedelta:
    """`parse_duration` of a stripped text, remembered: 10,000 files repeat a few durations."""
    if not _DURATION.match(compact):
        raise ValueError("is not a duration: use an integer and a unit s, m, h, d or w, e.g. 30d or 1h30m")
    parts = _DURATION_PART.findall(compact)
    units = [u for _, u in parts]
    order = "wdhms"
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise ValueError("is not a duration: give each unit once, largest first (e.g. 1d12h)")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_duration(delta: timedelta) -> str:
    """The inverse of `parse_duration` (largest units first)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit in "wdhms":
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["30d", "1h30m"]}),
]

# Segments of a Vault path: no empty segment, no `.`/`..`, nothing that
# Vault or a URL would read differently (spaces, `?`, `#`, `%`, `\`).
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.+@=-]*"
_PATH = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")
_MOUNT = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")
_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_vault_path(text: str) -> str:
    if not isinstance(text, str) or not _PATH.match(text) or any(s in {".", ".."} for s in text.split("/")):
        raise ValueError(
            "is not a safe Vault path: use segments of letters, digits and _ . + @ = -, "
            "separated by single slashes, with no leading or trailing slash and no '..'"
        )
    return text


VaultPath = Annotated[str, AfterValidator(check_vault_path)]
VaultMount = Annotated[str, AfterValidator(check_vault_path)]


def parse_vault_ref(text: str) -> tuple[str, str, str]:
    """`secret/github/app#private_key` -> (mount, path, field). The mount is the
    first segment (nested mounts are not supported in references)."""
    if not isinstance(text, str) or text.count("#") != 1:
        raise ValueError("is not a Vault reference: write MOUNT/PATH#FIELD, e.g. secret/github/app#private_key")
    location, fld = text.split("#")
    if "/" not in location:
        raise ValueError("is not a Vault reference: write MOUNT/PATH#FIELD (a path after the mount is required)")
    mount, path = location.split("/", 1)
    try:
        check_vault_path(mount)
        check_vault_path(path)
    except ValueError:
        raise ValueError("is not a Vault reference: MOUNT and PATH must be safe Vault paths (letters, digits and _ . + @ = -, no '..')") from None
    if not _FIELD.match(fld):
        raise ValueError("is not a Vault reference: the field after '#' must be letters, digits, _ . -")
    return mount, path, fld


def check_vault_ref(text: str) -> str:
    parse_vault_ref(text)
    return text


VaultRef = Annotated[
    str,
    AfterValidator(check_vault_ref),
    WithJsonSchema({"type": "string", "pattern": r"^[^#/]+/[^#]+#[A-Za-z0-9_.-]+$", "examples": ["secret/github/app#private_key"]}),
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(text: str) -> str:
    parts = urlsplit(text) if isinstance(text, str) else None
    if parts is None or not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("is not an API base URL such as https://api.example.com (no user info, query or fragment)")
    if parts.scheme == "https":
        return text.rstrip("/")
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return text.rstrip("/")
    raise ValueError("must use https:// (plain http:// is allowed only for loopback hosts such as http://127.0.0.1:PORT, with ROTATOR_ALLOW_LOOPBACK_HTTP)")


ApiUrl = Annotated[str, AfterValidator(check_api_url), WithJsonSchema({"type": "string", "format": "uri"})]

# Literal values that look like secrets. A credential file that holds one is
# rejected: secrets belong in Vault and are referenced as MOUNT/PATH#FIELD.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"), "a Stripe secret key"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), "a Stripe webhook secret"),
    # Classic tokens are 36 alphanumerics after the prefix; the stateless
    # installation tokens (2026) are `ghs_APPID_` and a JWT, ~520 characters
    # with dots, underscores and dashes.
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_.-]{20,}"), "a GitHub token"),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "a GitHub token"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\b(?:hvs|hvb|s)\.[A-Za-z0-9]{24,}"), "a Vault token"),
    (re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."), "a JSON web token"),
)


# 40 characters of base64 with upper case, lower case and digits mixed: an
# AWS secret access key. (A hex digest, also 40 long, has no upper case.)
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])")


# Each of the patterns above needs at least this many characters (the
# Stripe webhook secret's `whsec_` and 8 more is the shortest; the AWS key is
# 40): a shorter text, as most field values are, matches none of them.
# tests/test_secret_lookalike.py derives it from the patterns themselves.
SHORTEST_SECRET = 14
# One search instead of one per pattern, for the common case of no match.
_ANY_SECRET = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _SECRET_PATTERNS))


def secret_lookalike(text: str) -> str | None:
    """What kind of secret `text` looks like, or None."""
    if len(text) < SHORTEST_SECRET:
        return None
    if _ANY_SECRET.search(text):
        for pattern, what in _SECRET_PATTERNS:
            if pattern.search(text):
                return what
    if len(text) < 40:
        return None
    for match in _AWS_SECRET.finditer(text):
        candidate = match.group(0)
        if re.search(r"[A-Z]", candidate) and re.search(r"[a-z]", candidate) and re.search(r"[0-9]", candidate):
            return "an AWS secret access key"
    return None
