"""A stateful fake of the parts of the Stripe API the rotator uses, served
over real HTTP on a loopback port, for the tests and `rotator demo`.

    fake = FakeStripe().start()
    app_key = fake.add_account("acct_1Demo")     # a Stripe App installed there
    admin_key = fake.add_secret_key("acct_1Demo")  # the account's own secret key
    ... point api_base at fake.url ...
    fake.stop()

What it models, as Stripe documents it:
- `/v2/iam/api_keys` (create, retrieve, list, expire, rotate) under
  `Stripe-Version: 2026-08-26.preview` or later, callable only by an App key
  with `Stripe-Context` naming an account the App is installed on. A new
  `rk_test_…` key is sealed to the posted RSA public key as a real compact
  JWE (joserfc); `jwe` settings let tests send bad algorithms, seal to
  another key or tamper with it. Like test mode, reads show plaintext tokens
  (`plaintext_tokens_in_reads`).
- `GET /v1/customers`: 200 for a live key, 403 for a restricted key without
  a customer permission, 401 for unknown or expired keys.
- `/v1/webhook_endpoints` (form-encoded create, retrieve, list, delete);
  `secret` only in the create response. `deliver` signs an event for every
  subscribed endpoint, as Stripe does, with one event id across endpoints.
- Idempotency keys on POST: v1 replays the stored response (same key and
  body); v2 does not: a retry of work that succeeded "returns an updated
  response" (the object as it is now, without its secret) and failed work
  is done again. Same key, other body: 400 idempotency_error. Stripe-shaped
  error bodies, `Request-Id` headers, and injected faults (`inject`).
- Keys authenticate `activation_delay` seconds after their create and stop
  `expiry_delay` seconds after their expiry (then 401 `api_key_expired`);
  `rotate` makes the old id 404 at once while its token works on.

Invariants: the fake never logs, and its introspection (`keys`,
`endpoints`, `requests`) never returns a token or a signing secret. Expiry
takes effect after `expiry_delay` seconds of the injected `now` (0 default).

The state and its Python API (set-up, introspection) are
rotator.sandbox.stripe_state; this module serves them over HTTP.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable
from typing import Any

from joserfc import jwe
from joserfc.jwk import RSAKey
from rotator_providers.stripe_permissions import PERMISSIONS

from rotator.sandbox.serving import BackgroundServer
from rotator.sandbox.stripe_state import MIN_PREVIEW, RecordedRequest, StripeState, _Endpoint, _Fault, _Key, _preview_ok, _Principal, _rand
from rotator.sandbox.stripe_wire import (  # noqa: F401 - _Request/_Response are imported by tests
    StripeFakeError,
    _form,
    _handler_for,
    _json,
    _page_params,
    _public_key,
    _Request,
    _Response,
)


class FakeStripe(StripeState):
    """The fake Stripe API server: the state and its Python API (StripeState), served over HTTP."""


    # -- life cycle ------------------------------------------------------------

    def start(self, *, port: int = 0) -> FakeStripe:
        self._server = BackgroundServer(("127.0.0.1", port), _handler_for(self), name="fake-stripe")
        self.url = f"http://127.0.0.1:{self._server.address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


    # -- request handling --------------------------------------------------------

    def handle(self, request: _Request) -> _Response:
        with self._lock:
            response = self._handle(request)
            idem = request.headers.get("idempotency-key")
            self.requests.append(RecordedRequest(
                request.method, request.path, "&".join(f"{k}={v}" for k, v in request.query.items()),
                response.status, idem, request.headers.get("stripe-version"),
                request.headers.get("stripe-context"), response.headers.get("Idempotent-Replayed") == "true",
            ))
            response.headers["Request-Id"] = "req_" + _rand(14)
            return response

    def _handle(self, request: _Request) -> _Response:
        fault = self._take_fault(request)
        if fault is not None and not fault.after:
            return self._fault_response(fault)
        try:
            response = self._authorized(request)
        except StripeFakeError as exc:
            response = _Response(exc.status, exc.body())
        if fault is not None:
            return self._fault_response(fault)
        return response

    def _authorized(self, request: _Request) -> _Response:
        route, params = self._route(request)
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        principal = self._authenticate(token)
        if principal is None:
            known = next((k for k in self._keys.values() if token and k.token == token), None)
            if known is not None and known.expires_at is not None:
                raise StripeFakeError(401, "This API key has expired.", code="api_key_expired")
            raise StripeFakeError(401, "Invalid API Key provided.", code="api_key_invalid")
        request.principal = principal
        request.account = self._account_for(request, principal)
        if request.method == "POST" and "idempotency-key" in request.headers:
            return self._idempotent_call(route, request, params)
        return route(request, **params)

    def _idempotent_call(self, route: Callable[..., _Response], request: _Request, params: dict[str, str]) -> _Response:
        idem = request.headers["idempotency-key"]
        slot = (request.headers.get("authorization", ""), idem)
        fingerprint = hashlib.sha256(f"{request.method} {request.path}\n".encode() + request.body).hexdigest()
        if slot in self._idempotent:
            seen, stored = self._idempotent[slot]
            if seen != fingerprint:
                raise StripeFakeError(400, f"Keys for idempotent requests can only be used with the same parameters "
                                           f"they were first used with. Try using a key other than '{idem}' if you "
                                           "meant to execute a different request.", type_="idempotency_error")
            if not request.path.startswith("/v2/"):
                return _Response(stored.status, stored.body, {**stored.headers, "Idempotent-Replayed": "true"})
            # v2: no replay. A retry of work that succeeded gets an updated
            # response (the object as it is now; a read view, so no secret);
            # a retry of failed work is done again.
            done = self._keys.get(str((stored.body or {}).get("id"))) if 200 <= stored.status < 300 else None
            if done is not None:
                return _Response(200, done.view(now=self.now(), with_token=False), {"Idempotent-Replayed": "true"})
        try:
            response = route(request, **params)
        except StripeFakeError as exc:
            response = _Response(exc.status, exc.body())
        self._idempotent[slot] = (fingerprint, response)
        return response


    def _fault_response(self, fault: _Fault) -> _Response:
        if fault.drop:
            return _Response(0, None, injected=True)
        code = {429: "rate_limit", 409: "idempotency_key_in_use"}.get(fault.status)
        error = StripeFakeError(fault.status, f"Injected fault (HTTP {fault.status}).", code=code)
        return _Response(fault.status, error.body(), dict(fault.headers), injected=True)


    def _account_for(self, request: _Request, principal: _Principal) -> str:
        context = request.headers.get("stripe-context")
        if principal.kind == "app":
            if not context:
                raise StripeFakeError(400, "A Stripe App must name the account it acts on in Stripe-Context.")
            if context not in principal.accounts:
                raise StripeFakeError(403, f"The App is not installed on account '{context}'.", code="account_invalid")
            return context
        (own,) = principal.accounts
        if context and context != own:
            raise StripeFakeError(403, f"This key cannot act on account '{context}'.", code="account_invalid")
        return own

    def _route(self, request: _Request) -> tuple[Callable[..., _Response], dict[str, str]]:
        for method, pattern, route in self._routes():
            match = re.fullmatch(pattern, request.path)
            if match and method == request.method:
                if request.path.startswith("/v2/"):
                    self._check_version(request)
                return route, match.groupdict()
        raise StripeFakeError(404, f"Unrecognized request URL ({request.method}: {request.path}).")

    def _routes(self) -> list[tuple[str, str, Callable[..., _Response]]]:
        key = r"/v2/iam/api_keys/(?P<key_id>[A-Za-z0-9_]+)"
        endpoint = r"/v1/webhook_endpoints/(?P<endpoint_id>[A-Za-z0-9_]+)"
        return [
            ("GET", r"/v1/customers", self._customers),
            ("POST", r"/v2/iam/api_keys", self._create_key),
            ("GET", r"/v2/iam/api_keys", self._list_keys),
            ("GET", key, self._get_key),
            ("POST", key + "/expire", self._expire_key),
            ("POST", key + "/rotate", self._rotate_key),
            ("POST", r"/v1/webhook_endpoints", self._create_endpoint),
            ("GET", r"/v1/webhook_endpoints", self._list_endpoints),
            ("GET", endpoint, self._get_endpoint),
            ("DELETE", endpoint, self._delete_endpoint),
        ]

    def _check_version(self, request: _Request) -> None:
        version = request.headers.get("stripe-version")
        if not _preview_ok(version):
            raise StripeFakeError(400, f"The API version {version!r} does not serve this endpoint: use "
                                       f"{MIN_PREVIEW} or a later preview version.", code="invalid_api_version")

    # -- permissions -------------------------------------------------------------

    def _require(self, request: _Request, *permissions: str) -> None:
        principal = request.principal
        assert principal is not None
        if principal.kind in ("app", "secret"):
            return
        assert principal.key is not None
        if not set(permissions) & set(principal.key.permissions):
            raise StripeFakeError(403, f"The provided key does not have the required permissions for this endpoint "
                                       f"on account '{request.account}'. Having the '{permissions[0]}' permission "
                                       "would allow this request to continue.", code="secret_key_required")

    def _require_app(self, request: _Request) -> None:
        assert request.principal is not None
        if request.principal.kind != "app":
            raise StripeFakeError(403, "Only a Stripe App with the api_key_write permission can manage API keys.")

    # -- /v1/customers -------------------------------------------------------------

    def _customers(self, request: _Request) -> _Response:
        self._require(request, "customer_read", "customer_write")
        return _Response(200, {"object": "list", "data": [], "has_more": False, "url": "/v1/customers"})

    # -- /v2/iam/api_keys ------------------------------------------------------------

    def _create_key(self, request: _Request) -> _Response:
        self._require_app(request)
        body = _json(request)
        unknown = set(body) - {"type", "name", "note", "permissions", "public_key"}
        if unknown:
            raise StripeFakeError(400, f"Received unknown parameter: {sorted(unknown)[0]}", code="parameter_unknown")
        if body.get("type") != "secret_key":
            raise StripeFakeError(400, "type: this fake supports secret_key only.", code="parameter_invalid_string")
        permissions = body.get("permissions")
        if not isinstance(permissions, list) or not permissions or not all(isinstance(p, str) for p in permissions):
            raise StripeFakeError(400, "permissions: give at least one permission.", code="parameter_missing")
        unknown_permissions = sorted(set(permissions) - PERMISSIONS)
        if unknown_permissions:
            # Stripe's create answers 400 api_key_permissions_invalid (spec3 preview, PostV2IamApiKeys).
            raise StripeFakeError(400, f"permissions: unknown permission {unknown_permissions[0]!r}.",
                                  code="api_key_permissions_invalid")
        name = body.get("name") or ""
        if not isinstance(name, str) or len(name) > 100:
            # Assumed limit: Infisical truncates names to 100; the OpenAPI description states none.
            raise StripeFakeError(400, "name: must be at most 100 characters.", code="parameter_invalid_string")
        public_pem, recipient_id = _public_key(body.get("public_key"))
        key = _Key("mk_" + _rand(24), str(request.account), str(body.get("name") or ""), str(body.get("note") or ""),
                   list(permissions), "rk_test_" + _rand(32), self.now())
        self._keys[key.id] = key
        return _Response(200, self._created_view(key, public_pem, recipient_id))

    def _created_view(self, key: _Key, public_pem: str | None, recipient_id: str | None) -> dict[str, Any]:
        view = key.view(now=self.now(), with_token=self.plaintext_token_on_create or public_pem is None
                        or not self.encrypt_secrets)
        if public_pem is not None and self.encrypt_secrets:
            view["secret_key"]["encrypted_secret"] = {
                "ciphertext": self._seal(key.token, public_pem), "format": "jwe_compact",
                "recipient_key_id": self.jwe.recipient_key_id or recipient_id,
            }
        return view

    def _seal(self, token: str, public_pem: str) -> str:
        settings = self.jwe
        recipient = RSAKey.import_key(settings.recipient_pem or public_pem)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RSA1_5 is deprecated; tests use it on purpose
            sealed = jwe.encrypt_compact({"alg": settings.alg, "enc": settings.enc}, token.encode(), recipient,
                                         algorithms=[settings.alg, settings.enc])
        if settings.tamper:
            parts = sealed.split(".")
            parts[3] = ("B" if parts[3][0] == "A" else "A") + parts[3][1:]
            sealed = ".".join(parts)
        return sealed

    def _owned_key(self, request: _Request, key_id: str) -> _Key:
        self._require_app(request)
        key = self._keys.get(key_id)
        if key is None or key.account != request.account or key.hidden:
            raise StripeFakeError(404, f"No such API key: '{key_id}'", code="resource_missing")
        return key

    def _get_key(self, request: _Request, key_id: str) -> _Response:
        key = self._owned_key(request, key_id)
        return _Response(200, key.view(now=self.now(), with_token=self.plaintext_tokens_in_reads))

    def _expire_key(self, request: _Request, key_id: str) -> _Response:
        key = self._owned_key(request, key_id)
        now = self.now()
        key.expires_at = now if key.expires_at is None else min(key.expires_at, now)
        return _Response(200, key.view(now=now, with_token=False))

    def _rotate_key(self, request: _Request, key_id: str) -> _Response:
        old = self._owned_key(request, key_id)
        body = _json(request)
        minutes = body.get("expire_current_key_in_minutes", 0)
        if not isinstance(minutes, int) or not 0 <= minutes <= 10080:
            raise StripeFakeError(400, "expire_current_key_in_minutes: at most 10080 (7 days).")
        public_pem, recipient_id = _public_key(body.get("public_key"))
        now = self.now()
        new = _Key("mk_" + _rand(24), old.account, old.name, old.note, list(old.permissions), "rk_test_" + _rand(32), now)
        self._keys[new.id] = new
        old.expires_at = now + 60 * minutes
        old.hidden = True  # Stripe: "the old id 404s" at once, its token works until it expires
        return _Response(200, self._created_view(new, public_pem, recipient_id))

    def _list_keys(self, request: _Request) -> _Response:
        self._require_app(request)
        limit, offset = _page_params(request.query, default=20, name="page")
        include_expired = request.query.get("include_expired") == "true"
        now = self.now()
        views = [k.view(now=now, with_token=self.plaintext_tokens_in_reads)
                 for k in sorted(self._keys.values(), key=lambda k: -k.created)
                 if k.account == request.account and not k.hidden]
        views = [v for v in views if include_expired or v["status"] != "expired"]
        page = views[offset:offset + limit]
        next_url = None
        if offset + limit < len(views):
            extra = "&include_expired=true" if include_expired else ""
            next_url = f"/v2/iam/api_keys?limit={limit}&page=p{offset + limit}{extra}"
        return _Response(200, {"data": page, "next_page_url": next_url, "previous_page_url": None})

    # -- /v1/webhook_endpoints -------------------------------------------------------

    def _create_endpoint(self, request: _Request) -> _Response:
        self._require(request, "webhook_write")
        form = _form(request.body)
        url = form.pop("url", None)
        events = form.pop("enabled_events", None)
        description = form.pop("description", None)
        metadata = form.pop("metadata", {})
        api_version = form.pop("api_version", None)
        if form:
            raise StripeFakeError(400, f"Received unknown parameter: {sorted(form)[0]}", code="parameter_unknown")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise StripeFakeError(400, "url: Invalid URL: must be an https:// URL.", code="url_invalid")
        if not isinstance(events, list) or not events:
            raise StripeFakeError(400, "Missing required param: enabled_events.", code="parameter_missing")
        endpoint = _Endpoint("we_" + _rand(24), str(request.account), url, events, description, metadata,
                             "whsec_" + _rand(32), api_version, int(self.now()))
        self._endpoints[endpoint.id] = endpoint
        return _Response(200, {**endpoint.view(), "secret": endpoint.secret})

    def _owned_endpoint(self, request: _Request, endpoint_id: str) -> _Endpoint:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None or endpoint.account != request.account:
            raise StripeFakeError(404, f"No such webhook endpoint: '{endpoint_id}'", code="resource_missing")
        return endpoint

    def _get_endpoint(self, request: _Request, endpoint_id: str) -> _Response:
        self._require(request, "webhook_read", "webhook_write")
        return _Response(200, self._owned_endpoint(request, endpoint_id).view())

    def _delete_endpoint(self, request: _Request, endpoint_id: str) -> _Response:
        self._require(request, "webhook_write")
        endpoint = self._owned_endpoint(request, endpoint_id)
        del self._endpoints[endpoint.id]
        return _Response(200, {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True})

    def _list_endpoints(self, request: _Request) -> _Response:
        self._require(request, "webhook_read", "webhook_write")
        limit, _ = _page_params(request.query, default=10, name=None)
        mine = [e for e in sorted(self._endpoints.values(), key=lambda e: -e.created) if e.account == request.account]
        after = request.query.get("starting_after")
        if after:
            ids = [e.id for e in mine]
            if after not in ids:
                raise StripeFakeError(400, f"starting_after: no such object '{after}'.", code="resource_missing")
            mine = mine[ids.index(after) + 1:]
        return _Response(200, {"object": "list", "url": "/v1/webhook_endpoints", "has_more": len(mine) > limit,
                               "data": [e.view() for e in mine[:limit]]})
