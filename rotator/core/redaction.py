"""The registry of secret values this process has seen, and the scrubbing
that masks them in any text (contract §6.6).

Whoever learns a secret registers it at once: the engine for values read
from Vault, providers (through `ProviderContext.register_secret`) the moment
an API answers with one, so that an error raised a line later is covered
too. `rotator.audit.events` scrubs every log event with it, and the CLI every line
it prints.

What counts as a copy of a registered secret (docs/SECURITY.md):
- the value itself, its JSON-escaped form, its URL-encoded forms
  (`quote` with and without `/` kept, `quote_plus`), and its base64 forms
  (standard and URL-safe, with and without padding, and the part that is
  the same wherever the value sits inside a longer base64 text: a Basic
  auth header, a JWT);
- a cut-off copy: at least `MIN_FRAGMENT` leading or trailing characters
  of any of those forms (a message truncated inside the value). URLs (an
  alert webhook) are masked whole only: their leading part is a public host.

Values shorter than `MIN_SECRET` are not registered: they would mask
ordinary words. The registry is bounded; the oldest values go first.
Scrubbing costs two dictionary look-ups per character of text, however
many values are registered.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MIN_SECRET = 8
# A cut-off copy keeps at least this many characters of a form to be masked.
# 12 characters of a random token are about 70 bits: a chance match with
# ordinary text does not happen, and a shorter remnant gives away little.
MIN_FRAGMENT = 12


def _base64_forms(raw: bytes) -> list[str]:
    out: list[str] = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        out += [whole, whole.rstrip("=")]
        # Inside a longer text the value starts at byte offset 0, 1 or 2 of
        # a 3-byte group: keep the characters that depend on it alone.
        for offset in (1, 2):
            shifted = encode(b"\0" * offset + raw).decode().rstrip("=")
            start = -(-8 * offset // 6)  # first character free of the prefix bytes
            end = (8 * (offset + len(raw))) // 6  # last character made of its own bits only
            out.append(shifted[start:end])
    return out


def encoded_forms(value: str) -> list[str]:
    """The value and the encoded copies of it that the scrubber masks."""
    forms = [value, value.strip()]
    forms += [json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]]
    forms += [quote(value, safe=""), quote(value), quote_plus(value)]
    forms += _base64_forms(value.encode())
    seen: dict[str, None] = {}
    for form in forms:
        if len(form) >= MIN_SECRET:
            seen.setdefault(form, None)
    return list(seen)


def _is_url(value: str) -> bool:
    return "://" in value[:16]


class SecretRegistry:
    """The secret values this process has seen, indexed for scrubbing.

    Thread-safe: registrations take a lock; a scrub reads the index without
    one (single dictionary reads, safe under concurrent inserts)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._values: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._refs: dict[str, int] = {}
        self._heads: dict[str, tuple[str, ...]] = {}  # first MIN_FRAGMENT chars -> forms
        self._tails: dict[str, tuple[str, ...]] = {}  # last MIN_FRAGMENT chars -> forms
        self._whole: tuple[str, ...] = ()  # forms matched only whole (short ones, URLs)

    def __len__(self) -> int:
        return len(self._values)

    def add(self, value: str | None) -> None:
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET:
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            forms = tuple(encoded_forms(value))
            self._values[value] = forms
            for form in forms:
                self._index(form, whole=_is_url(value), delta=1)
            while len(self._values) > self._limit:
                _, old = self._values.popitem(last=False)
                for form in old:
                    self._index(form, whole=False, delta=-1)

    def _index(self, form: str, *, whole: bool, delta: int) -> None:
        count = self._refs.get(form, 0) + delta
        if count > 0:
            self._refs[form] = count
        else:
            self._refs.pop(form, None)
        if (delta > 0 and count != 1) or (delta < 0 and count > 0):
            return  # indexed already, or still the form of another value
        if delta > 0 and (whole or len(form) < MIN_FRAGMENT):
            self._whole = (*self._whole, form)
            return
        if delta < 0:
            self._whole = tuple(f for f in self._whole if f != form)
        for table, key in ((self._heads, form[:MIN_FRAGMENT]), (self._tails, form[-MIN_FRAGMENT:])):
            entries = table.get(key, ())
            entries = (*entries, form) if delta > 0 else tuple(f for f in entries if f != form)
            if entries:
                table[key] = entries
            else:
                table.pop(key, None)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where copies of registered secrets lie in `text`, merged, in order."""
        found: list[tuple[int, int]] = []
        for form in self._whole:
            start = text.find(form)
            while start >= 0:
                found.append((start, start + len(form)))
                start = text.find(form, start + 1)
        heads, tails, size = self._heads, self._tails, MIN_FRAGMENT
        if heads:
            for i in range(len(text) - size + 1):
                forms = heads.get(text[i:i + size])
                if forms:
                    found.append((i, i + max(_common_prefix(text, i, f) for f in forms)))
            for j in range(size, len(text) + 1):
                forms = tails.get(text[j - size:j])
                if forms:
                    found.append((j - max(_common_suffix(text, j, f) for f in forms), j))
        return _merge(found)

    def scrub(self, text: str) -> str:
        if not self._values or len(text) < MIN_SECRET:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], REDACTED]
            last = end
        out.append(text[last:])
        return "".join(out)


def _common_prefix(text: str, at: int, form: str) -> int:
    n = 0
    limit = min(len(form), len(text) - at)
    while n < limit and text[at + n] == form[n]:
        n += 1
    return n


def _common_suffix(text: str, end: int, form: str) -> int:
    n = 0
    limit = min(len(form), end)
    while n < limit and text[end - 1 - n] == form[-1 - n]:
        n += 1
    return n


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


SECRETS = SecretRegistry()


def register_secret(*values: str | None) -> None:
    """Remember secret values (and their encoded forms) for masking."""
    for value in values:
        SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` with every registered secret, in every form, masked."""
    return SECRETS.scrub(text)
