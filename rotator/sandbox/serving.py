"""Serving a sandbox over real HTTP on a loopback port, in a background
thread: what the GitHub and Stripe fakes share."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundServer:
    """A ThreadingHTTPServer running in a daemon thread until `stop()`."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, name: str, **attributes: object) -> None:
        self.server = ThreadingHTTPServer(address, handler)
        self.server.daemon_threads = True
        for key, value in attributes.items():  # what handlers read from their server, set before serving
            setattr(self.server, key, value)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
