"""The wire side of the fake Stripe: request and response values, Stripe's
error shape, body parsing (JSON, Stripe's form encoding, public keys,
paging) and the HTTP handler that serves a `FakeStripe`.

Invariants: nothing here logs; the handler tells `rotator.sandbox.exchanges`
observers about every exchange (bytes as sent, for the tests' OpenAPI
check) and never anyone else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from rotator.sandbox.exchanges import Exchange, notify

if TYPE_CHECKING:
    from rotator.sandbox.stripe import FakeStripe
    from rotator.sandbox.stripe_state import _Principal

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 409: "idempotency_error", 429: "invalid_request_error"}


class StripeFakeError(Exception):
    """A Stripe-shaped error response, raised inside handlers."""

    def __init__(self, status: int, message: str, *, code: str | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.type = type_ or _ERROR_TYPES.get(status, "api_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "code": self.code, "message": self.message}}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    principal: _Principal | None = None
    account: str | None = None


@dataclass
class _Response:
    status: int
    body: dict[str, Any] | None  # None: drop the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    injected: bool = False  # a fault a test injected



# -- request body helpers ----------------------------------------------------------


def _json(request: _Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise StripeFakeError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise StripeFakeError(400, "The request body must be a JSON object.")
    return body


def _form(raw: bytes) -> dict[str, Any]:
    """Stripe's form encoding: `a[]=x`, `a[0]=x`, `m[key]=v`."""
    out: dict[str, Any] = {}
    for name, value in parse_qsl(raw.decode(), keep_blank_values=True):
        listed = re.fullmatch(r"(\w+)\[(\d*)\]", name)
        mapped = re.fullmatch(r"(\w+)\[([^\]]+)\]", name)
        if listed:
            out.setdefault(listed.group(1), []).append(value)
        elif mapped:
            out.setdefault(mapped.group(1), {})[mapped.group(2)] = value
        else:
            out[name] = value
    return out


def _public_key(value: object) -> tuple[str | None, str | None]:
    """(PEM, caller's id) of a posted public_key; None when absent (test mode)."""
    if value is None:
        return None, None
    pem_key = value.get("pem_key") if isinstance(value, dict) else None
    if not isinstance(pem_key, dict) or pem_key.get("algorithm") != "RSA" or not isinstance(pem_key.get("data"), str):
        raise StripeFakeError(400, "public_key.pem_key: give algorithm RSA and a PEM public key.")
    try:
        loaded = load_pem_public_key(pem_key["data"].encode())
    except ValueError:
        raise StripeFakeError(400, "public_key.pem_key.data: not a PEM public key.") from None
    if not isinstance(loaded, rsa.RSAPublicKey) or loaded.key_size < 2048:
        raise StripeFakeError(400, "public_key.pem_key.data: must be an RSA key of at least 2048 bits.")
    key_id = value.get("id") if isinstance(value, dict) else None
    return pem_key["data"], key_id if isinstance(key_id, str) else None


def _page_params(query: dict[str, str], *, default: int, name: str | None) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", default))
    except ValueError:
        raise StripeFakeError(400, "limit: must be an integer.") from None
    if not 1 <= limit <= 100:
        raise StripeFakeError(400, "limit: The maximum page limit is 100")
    token = query.get(name, "p0") if name else "p0"
    return limit, int(token[1:]) if re.fullmatch(r"p\d+", token) else 0


# -- HTTP plumbing ------------------------------------------------------------------


def _handler_for(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass  # the fake never logs: requests carry keys

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = _Request(method, parts.path, dict(parse_qsl(parts.query)),
                               {k.lower(): v for k, v in self.headers.items()}, body)
            response = fake.handle(request)
            payload = b"" if response.body is None else json.dumps(response.body).encode()
            notify(Exchange("stripe", method, parts.path, parts.query, dict(request.headers), body, response.status,
                            {**response.headers, "Content-Type": "application/json"}, payload, response.injected))
            if response.body is None:
                self.close_connection = True
                return
            self.send_response(response.status)
            for name, value in {**response.headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
