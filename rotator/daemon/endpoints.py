"""`/metrics`, `/healthz` and `/readyz` (contract §8), served beside the daemon.

`/healthz` is 200 while the daemon loop ticks; `/readyz` is 200 while Vault
is reachable and the token valid; `/metrics` is rotator.daemon.metrics' registry,
its gauges brought up to date at each scrape. Slow clients are bounded
(rotator.daemon.listener).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rotator.daemon.listener import BoundedHTTPServer, QuietHandler, serve
from rotator.daemon.metrics import REGISTRY

if TYPE_CHECKING:
    from rotator.daemon.loop import Daemon

TEXT = "text/plain; charset=utf-8"


def serve_metrics(addr: str, daemon: Daemon) -> BoundedHTTPServer:
    """Serve in a background thread."""
    return serve(addr, _handler(daemon), name="metrics")


def _handler(daemon: Daemon) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.mark_served()
            path = self.path.split("?")[0]
            if path == "/healthz":
                alive = daemon.last_tick_at is not None and time.monotonic() - daemon.last_tick_at < 3 * daemon.app.settings.tick_seconds + 30
                self.send_body(200 if alive and not daemon.shutdown.is_set() else 503, b"ok\n" if alive else b"stalled\n", TEXT)
            elif path == "/readyz":
                ready = daemon.app.store.is_ready()
                self.send_body(200 if ready else 503, b"ready\n" if ready else b"vault unavailable\n", TEXT)
            elif path == "/metrics":
                daemon.update_gauges()
                self.send_body(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self.send_body(404, b"not found\n", TEXT)

    return Handler
