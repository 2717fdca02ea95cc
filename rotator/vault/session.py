"""Vault's HTTP session: TLS verification, and read-your-writes across a Raft cluster's nodes
(X-Vault-Index: a write's index is sent with the reads after it; an inconsistent answer is retried).
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import threading
from typing import Any

import requests

POOL_SIZE = 64  # keep-alive connections to Vault, across all threads
INDEX_HEADER = "X-Vault-Index"


INCONSISTENT_HEADER = "X-Vault-Inconsistent"


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


class ConsistencyIndex:
    """The newest storage index this process has seen from the cluster.

    OpenBao's standbys answer reads from their own copy of the data, which
    lags the active node: a read right after a write, through the same
    standby, can miss it. Every response names the storage index it
    reflects (`X-Vault-Index`); a request that carries the newest one, with
    `X-Vault-Inconsistent: forward-active-node`, is answered locally only if
    the standby has caught up, and is forwarded to the active node otherwise.
    A server without the header (a single node, a dev server) never sends
    one, and then nothing is added.

    The value is opaque to clients; where it decodes as OpenBao's
    `{"cluster": ..., "value": N}`, a lower index of the same cluster never
    replaces a higher one (responses of parallel requests arrive in any
    order); otherwise the latest wins. An index of another cluster is
    ignored by the server, so a changed address costs nothing.

    A write the store could not confirm (no answer: the active node died
    with it in flight; an error, such as a lost check-and-set, which shows
    that someone else's write is newer than anything the store has seen)
    leaves the store in doubt: its newest index may predate data that
    exists. Until a write of its own succeeds, its requests name an index no
    node has reached, so that every read is forwarded to, and answered from,
    the active node's data (where a standby cannot forward, as during an
    election, the read fails as transient instead of answering from a copy
    that may be old). This needs the decoded form; with an index that does
    not decode, the newest one is sent as usual.
    """

    BEYOND_ANY = 2**62  # an index value no node reaches

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None
        self._rank: tuple[str, int] | None = None
        self._doubt = False
        self.doubts = 0  # how many writes were not confirmed (a generation, too)

    @staticmethod
    def _parse(value: str) -> tuple[str, int] | None:
        try:
            raw = value.translate(str.maketrans("-_", "+/"))  # either alphabet
            decoded = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
            return str(decoded["cluster"]), int(decoded["value"])
        except (binascii.Error, ValueError, TypeError, KeyError):
            return None

    def observe(self, value: str | None) -> None:
        if not value:
            return
        rank = self._parse(value)
        with self._lock:
            if rank is not None and self._rank is not None and rank[0] == self._rank[0] and rank[1] <= self._rank[1]:
                return
            self._value, self._rank = value, rank

    def doubt(self) -> None:
        """A write was not confirmed: read the active node's data until one is."""
        with self._lock:
            self._doubt = True
            self.doubts += 1

    def confirmed(self, value: str, *, since: int) -> None:
        """A write succeeded and named its index. It covers every write the
        store doubted before it was sent (`since`: `doubts` then), not one
        doubted while it was in flight, which may be applied after it."""
        self.observe(value)
        with self._lock:
            if self.doubts == since:
                self._doubt = False

    @property
    def in_doubt(self) -> bool:
        return self._doubt

    def headers(self) -> dict[str, str]:
        with self._lock:
            value, rank, doubt = self._value, self._rank, self._doubt
        if doubt and rank is not None:
            beyond = json.dumps({"cluster": rank[0], "value": str(self.BEYOND_ANY)}, separators=(",", ":"))
            value = base64.b64encode(beyond.encode()).decode()
        return {INDEX_HEADER: value, INCONSISTENT_HEADER: "forward-active-node"} if value else {}


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _IndexedSession(requests.Session):
    """A requests session that carries the consistency index both ways."""

    def __init__(self, index: ConsistencyIndex) -> None:
        super().__init__()
        self.index = index

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        since = self.index.doubts
        extra = self.index.headers()
        if extra:
            kwargs["headers"] = {**extra, **(kwargs.get("headers") or {})}
        is_write = (method.decode() if isinstance(method, bytes) else method).upper() in _WRITES
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException:
            if is_write:
                self.index.doubt()
            raise
        value = response.headers.get(INDEX_HEADER)
        if is_write and response.status_code >= 400:
            self.index.doubt()
        elif is_write and value:
            self.index.confirmed(value, since=since)
        else:
            self.index.observe(value)
        return response


def _session_for(url: str, verify: bool | str, index: ConsistencyIndex | None = None) -> requests.Session:
    """A session that reads proxy settings (HTTPS_PROXY, NO_PROXY) once, not
    on every request: requests' per-request environment scan cost half a
    millisecond of CPU per Vault call, which 10,000 credentials feel. It
    carries `index` on every request and response (see ConsistencyIndex)."""
    session = _IndexedSession(index or ConsistencyIndex())
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(url)
    # hvac prefers a given session's own verify over its argument.
    session.verify = verify
    # Every rotation thread keeps its connection: requests' default pool of
    # 10 would drop and reopen connections at ROTATOR_MAX_CONCURRENCY 16.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
