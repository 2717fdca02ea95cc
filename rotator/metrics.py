"""`/metrics`, `/healthz` and `/readyz` (contract §8), with prometheus-client.

`/healthz` is 200 while the daemon loop ticks; `/readyz` is 200 while Vault
is reachable and the token valid. Metrics never carry secret values: labels
are credential names and provider kinds only.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rotator.listener import BoundedHTTPServer

if TYPE_CHECKING:
    from rotator.daemon import Daemon

REGISTRY = CollectorRegistry()
ROTATIONS = Counter("rotator_rotations_total", "Rotations by outcome", ["credential", "provider", "outcome"], registry=REGISTRY)
DURATION = Histogram("rotator_rotation_duration_seconds", "Duration of completed rotations", ["provider"], registry=REGISTRY,
                     buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
AGE = Gauge("rotator_credential_age_seconds", "Age of the live credential", ["credential", "provider"], registry=REGISTRY)
NEXT = Gauge("rotator_next_rotation_timestamp_seconds", "When the next rotation is due (Unix time)", ["credential", "provider"], registry=REGISTRY)
PENDING = Gauge("rotator_pending_revocations", "Superseded credentials not yet revoked", ["credential", "provider"], registry=REGISTRY)
HELD = Gauge("rotator_revocations_held", "Superseded credentials whose revocation is held because they are still in use",
             ["credential", "provider"], registry=REGISTRY)
OVERDUE = Gauge("rotator_overdue_credentials", "Credentials past their due time by more than a tick", registry=REGISTRY)
DEGRADED = Gauge("rotator_degraded", "1 while any credential or file is failing", registry=REGISTRY)
LAST_TICK = Gauge("rotator_last_tick_timestamp_seconds", "When the daemon loop last ticked (Unix time; NaN before the first tick)",
                  registry=REGISTRY)
TOKEN_EXPIRY = Gauge("rotator_vault_token_expiry_timestamp_seconds",
                     "When the daemon's Vault token expires (Unix time; +Inf: it never expires; NaN: not known yet)", registry=REGISTRY)


def serve_metrics(addr: str, daemon: Daemon) -> ThreadingHTTPServer:
    """Serve in a background thread; slow clients are bounded (rotator.listener)."""
    host, _, port = addr.rpartition(":")
    handler = _handler(daemon)
    server = BoundedHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)  # noqa: S104 - operator's choice
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _handler(daemon: Daemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if isinstance(self.server, BoundedHTTPServer):
                self.server.mark_served(self.request)
            path = self.path.split("?")[0]
            if path == "/healthz":
                alive = daemon.last_tick_at is not None and time.monotonic() - daemon.last_tick_at < 3 * daemon.app.settings.tick_seconds + 30
                self._send(200 if alive and not daemon.shutdown.is_set() else 503, b"ok\n" if alive else b"stalled\n")
            elif path == "/readyz":
                ready = daemon.app.store.is_ready()
                self._send(200 if ready else 503, b"ready\n" if ready else b"vault unavailable\n")
            elif path == "/metrics":
                daemon.update_gauges()
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: stdout is for events
            return

    return Handler
