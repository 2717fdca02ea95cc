"""Every exchange a sandbox serves, held to the vendors' OpenAPI descriptions
(tests/openapi/*.yaml) with openapi-core.

- A request the rotator sent (its User-Agent starts with "rotator"; tests'
  own hand-made requests use other agents) must be
  one of the described operations and valid for it: a provider that sends
  an unknown field, a missing header or a call to an undescribed path fails.
- Every answer the sandbox itself gave (not a fault a test injected) to a
  described operation must be valid for it: a sandbox that drifts from the
  vendor's shapes fails, whoever sent the request.
Problems name the operation and the schema path, never a header or body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from rotator.sandbox.exchanges import Exchange

SPECS = Path(__file__).resolve().parent / "openapi"
HOSTS = {"stripe": "https://api.stripe.com", "github": "https://api.github.com"}


@cache
def spec(sandbox: str) -> OpenAPI:
    return OpenAPI.from_file_path(str(SPECS / f"{sandbox}.yaml"))


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None

    @property
    def full_url_pattern(self) -> str:
        return self.host_url + self.path


@dataclass
class _Response:
    status_code: int
    content_type: str
    headers: Headers
    data: bytes


def _request(exchange: Exchange) -> _Request:
    headers = Headers(list(exchange.request_headers.items()))
    params = RequestParameters(query=ImmutableMultiDict(parse_qsl(exchange.query, keep_blank_values=True)), header=headers)
    content_type = (headers.get("content-type") or "").split(";")[0].strip()
    body = exchange.request_body or None
    if body and content_type == "application/x-www-form-urlencoded":
        # Stripe's array notation `a[]=x` (its curl examples) is form style
        # with explode (`a=x&a=y`) to openapi-core; nothing else changes.
        pairs = [(re.sub(r"\[\d*\]$", "", k), v) for k, v in parse_qsl(body.decode(), keep_blank_values=True)]
        body = urlencode(pairs).encode()
    return _Request(HOSTS[exchange.sandbox], exchange.path, exchange.method.lower(), params, content_type, body)


def _response(exchange: Exchange) -> _Response:
    headers = Headers(list(exchange.response_headers.items()))
    content_type = (headers.get("content-type") or "application/json").split(";")[0].strip()
    return _Response(exchange.status, content_type, headers, exchange.response_body)


def _why(exc: Exception) -> str:
    """The validator's reason, reduced to schema paths (values may be secrets)."""
    causes = []
    for error in getattr(exc, "schema_errors", None) or getattr(getattr(exc, "__cause__", None), "schema_errors", None) or []:
        where = "/".join(str(p) for p in getattr(error, "absolute_path", [])) or "(body)"
        causes.append(f"{where}: {getattr(error, 'validator', 'schema')}")
    return f"{type(exc).__name__}" + (f" ({'; '.join(causes)})" if causes else "")


def is_described(exchange: Exchange) -> bool:
    try:
        spec(exchange.sandbox).validate_request(_request(exchange))
    except Exception as exc:  # noqa: BLE001 - only "no such path/operation" matters here
        return not type(exc).__name__.startswith(("PathNotFound", "OperationNotFound", "ServerNotFound"))
    return True


def problems(exchange: Exchange) -> list[str]:
    """What is wrong with one exchange, judged as the module docstring says."""
    out = []
    where = f"{exchange.sandbox} {exchange.method} {exchange.path}"
    from_rotator = exchange.request_headers.get("user-agent", "").startswith("rotator")
    if from_rotator:
        try:
            spec(exchange.sandbox).validate_request(_request(exchange))
        except Exception as exc:  # noqa: BLE001 - every validation error is reported
            out.append(f"request {where}: {_why(exc)}")
    if exchange.status and not exchange.injected and (from_rotator or is_described(exchange)) and not out:
        try:
            spec(exchange.sandbox).validate_response(_request(exchange), _response(exchange))
        except Exception as exc:  # noqa: BLE001
            out.append(f"response {where} -> {exchange.status}: {_why(exc)}")
    return out
