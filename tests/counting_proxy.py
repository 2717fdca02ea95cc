"""A recording HTTP proxy for tests: put it between the rotator and a real
service (OpenBao, moto) and read back every request that passed, with its
method, path and, for AWS query APIs, the `Action`. It proves what a
command did NOT do (no Vault write, no provider mutation)."""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    action: str | None  # AWS query API action (form body or query string)


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.seen: list[Seen] = []
        self.down = False  # set: every request is answered 503 (Vault sealed or unreachable behind a balancer)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                form = parse_qs(body.decode("utf-8", "replace")) if b"Action=" in body else {}
                action = (form.get("Action") or query.get("Action") or [None])[0]
                proxy._record(Seen(self.command, urlsplit(self.path).path, action))
                if proxy.down:
                    self._answer(503, b'{"errors":["Vault is sealed"]}')
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                # The client's own Host: AWS signatures (SigV4) cover it.
                headers["Host"] = self.headers.get("Host") or f"{proxy.upstream_host}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_LIST = _forward  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler


READ_ONLY_AWS = ("Get", "List")


def vault_writes(seen: list[Seen]) -> list[Seen]:
    """Requests that change something in Vault (anything but reads and a token lookup)."""
    return [s for s in seen if s.method not in {"GET", "HEAD", "LIST"} and s.path != "/v1/auth/token/lookup-self"]


def aws_mutations(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if not (s.action or "").startswith(READ_ONLY_AWS)]
