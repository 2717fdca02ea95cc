"""The wire side of the fake GitHub: answers and errors in GitHub's shape,
body parsing, and the HTTP handler that serves a `FakeGitHub`.

Invariants: nothing here logs; the handler tells `rotator.sandbox.exchanges`
observers about every exchange (bytes as sent, for the tests' OpenAPI
check) and never anyone else.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rotator.sandbox.exchanges import Exchange, notify

if TYPE_CHECKING:
    from rotator.sandbox.github import FakeGitHub

DOCS = "https://docs.github.com/rest"


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


@dataclass
class _Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    injected: bool = False  # a fault a test injected


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _HttpError(400, "Problems parsing JSON") from None


def _error_body(status: int, message: str | None = None, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    if message is None:
        message = "Server Error" if status >= 500 else HTTPStatus(status).phrase
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS, "status": str(status)}
    if errors:
        body["errors"] = errors
    return body


def _error(status: int, message: str) -> _Answer:
    return _Answer(status, _error_body(status, message))


def _validation(code: str, field_name: str, message: str | None = None) -> _HttpError:
    error = {"resource": "PublicKey", "code": code, "field": field_name}
    if message:
        error["message"] = message
    return _HttpError(422, "Validation Failed", errors=[error])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeGitHub"
    timeout = 30  # idle keep-alive connections are dropped
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms stalls

    def _serve(self) -> None:
        fake: FakeGitHub = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            answer = fake.handle(self.command, self.path, headers, raw)
        except _HttpError as exc:  # a body that is not JSON
            answer = fake._with_rate_headers(_Answer(exc.status, _error_body(exc.status, exc.message)), spend=True)
        except Exception:  # a bug in the fake answers like GitHub's own bugs do
            answer = _Answer(500, _error_body(500))
        if answer.status == 204 or answer.body is None:
            payload = b""
        elif isinstance(answer.body, bytes):  # an injected non-JSON body (a proxy's error page)
            payload = answer.body
        else:
            payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        if payload:
            self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-github-request-id", secrets.token_hex(8).upper())
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        parts = urlsplit(self.path)
        path = parts.path
        if fake.path_prefix and path.startswith(fake.path_prefix):
            path = path[len(fake.path_prefix):]
        sent = {**answer.headers, **({"content-type": "application/json; charset=utf-8"} if payload else {})}
        notify(Exchange("github", self.command, path, parts.query, headers, raw, answer.status, sent, payload, answer.injected))

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: request lines are not worth the noise (and headers never logged)."""
