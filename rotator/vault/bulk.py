"""Reading thousands of KV v2 paths at start-up, fast (`VaultStore.read_many`,
rotator.daemon.prefetch).

A few threads, each with one keep-alive connection of its own, send plain
HTTP/1.1 GETs and read the answers themselves: the request is built once
per path from bytes prepared in advance, and the answer's status line and
the three headers that matter (length, chunking, X-Vault-Index) are all
that is parsed. `http.client` costs about three times the CPU per request
(its `email` header parser, its buffered reader), and with 10,000 records
that CPU is taken from the parsing of the credential files beside it.

Paths are queued as they come (`submit`) and read while the caller goes on;
`results` waits for them. Anything unexpected (an error status, a reply in
a framing not handled here, a connection lost, a timeout) leaves that path
out of the results and closes that connection: the caller reads the paths
left out one by one, through the ordinary client, so nothing here decides
what an odd answer means.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

_MAX_HEAD = 64 * 1024  # the status line and headers of one answer
_MAX_BODY = 8 * 1024 * 1024  # a state record is a few KB; KV v2 allows 0.5 MiB by default
_STOP = None


class _Unreadable(Exception):
    """This answer is left to the ordinary client; the connection is dropped."""


class _Connection:
    """One keep-alive HTTP/1.1 connection and its receive buffer."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: Any = context.wrap_socket(sock, server_hostname=host) if context is not None else sock
        self.buffer = bytearray()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Unreadable("the connection was closed")
        self.buffer += chunk

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise _Unreadable("a line too long")
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def get(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one GET; its status, headers (lower-case names) and body."""
        self.sock.sendall(request)
        status_line = self._line()
        version, _, rest = status_line.partition(b" ")
        if version != b"HTTP/1.1" or not rest[:3].isdigit():
            raise _Unreadable("not an HTTP/1.1 answer")
        headers: dict[bytes, bytes] = {}
        while line := self._line():
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Unreadable("a malformed header")
            headers[name.strip().lower()] = value.strip()
        if b"transfer-encoding" in headers:
            if headers[b"transfer-encoding"].lower() != b"chunked":
                raise _Unreadable("an unknown transfer encoding")
            body = self._chunked()
        elif (length := headers.get(b"content-length")) is not None and length.isdigit() and int(length) <= _MAX_BODY:
            body = self._exactly(int(length))
        else:
            raise _Unreadable("an answer without a length")
        if headers.get(b"connection", b"").lower() == b"close":
            raise _Unreadable("the server closes the connection")  # its answer is read again the ordinary way
        return int(rest[:3]), headers, body

    def _chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size_text = self._line().partition(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Unreadable("a malformed chunk") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY:
                raise _Unreadable("an answer too large")
            parts.append(self._exactly(size))
            if self._exactly(2) != b"\r\n":
                raise _Unreadable("a malformed chunk")


class BulkReader:
    """Read KV v2 paths of one mount on `workers` connections; see the module docstring.

    `parse(status, body)` turns one answer into a value, or None to leave the
    path out; `observe(index)` is given each answer's X-Vault-Index."""

    def __init__(self, url: str, headers: dict[str, str], mount: str, *, parse: Callable[[int, bytes], Any],
                 observe: Callable[[str | None], None], timeout: float, context: ssl.SSLContext | None,
                 workers: int = 8, on_request: Callable[[], None] = lambda: None) -> None:
        base = urlsplit(url)
        self._host = base.hostname or ""
        self._port = base.port or (443 if base.scheme == "https" else 80)
        self._timeout = timeout
        self._context = context if base.scheme == "https" else None
        netloc = base.netloc.rpartition("@")[2]
        if any(c in f"{k}{v}" for k, v in headers.items() for c in "\r\n\0"):
            raise ValueError("a header holds a line break")
        head = f"Host: {netloc}\r\nAccept-Encoding: identity\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = (head + "\r\n").encode("latin-1")
        self._prefix = f"{base.path.rstrip('/')}/v1/{quote(mount)}/data/"
        self._parse = parse
        self._observe = observe
        self._on_request = on_request
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._found: dict[str, tuple[int, bytes] | None] = {}
        self._submitted = self._answers = 0
        self._answered = threading.Condition()
        self._threads = [threading.Thread(target=self._work, name=f"vault-read-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, path: str) -> None:
        with self._answered:
            self._submitted += 1
        self._queue.put(path)

    def settled(self, timeout: float) -> bool:
        """Wait until every path submitted so far has its answer (or its failure)."""
        with self._answered:
            return self._answered.wait_for(lambda: self._answers >= self._submitted, timeout=timeout)

    def results(self) -> dict[str, Any]:
        """Wait for every path submitted; what was read (paths left out: not
        read). The answers are kept as bytes until now (a fifth of the
        memory of their parsed form, while the files are still parsed)."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        found, self._found = self._found, {}
        out = {}
        for path, answer in found.items():
            try:
                value = self._parse(*answer) if answer is not None else None
            except Exception:  # a body not shaped as expected: read it the ordinary way
                value = None
            if value is not None:
                out[path] = value
        return out

    def _answer(self, path: str, answer: tuple[int, bytes] | None) -> None:
        with self._answered:
            self._found[path] = answer
            self._answers += 1
            self._answered.notify_all()

    def _work(self) -> None:
        conn: _Connection | None = None
        try:
            while (path := self._queue.get()) is not _STOP:
                self._on_request()
                request = f"GET {self._prefix}{quote(path)} HTTP/1.1\r\n".encode() + self._head
                try:
                    if conn is None:
                        conn = _Connection(self._host, self._port, timeout=self._timeout, context=self._context)
                    status, headers, body = conn.get(request)
                except Exception:  # OSError, _Unreadable, or anything: never a traceback, the path is read again later
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._answer(path, None)
                    continue
                index = headers.get(b"x-vault-index")
                self._observe(index.decode("latin-1") if index is not None else None)
                self._answer(path, (status, body))
        finally:
            if conn is not None:
                conn.close()


def parse_kv_read(status: int, body: bytes) -> tuple[dict[str, Any] | None, int] | None:
    """A KV v2 data read's (data, version): (None, 0) for a path never
    written; None (read it the ordinary way) for anything else, a deleted
    latest version included: its version needs the metadata."""
    if status == 404:
        return (None, 0) if not body or b'"data":null' not in body else None
    if status != 200:
        return None
    payload = json.loads(body)["data"]
    return payload.get("data"), int(payload["metadata"]["version"])
