"""An HTTP server that slow or hostile clients cannot tie up.

Anyone who reaches the metrics port may connect. The standard
`ThreadingHTTPServer` gives each connection a thread and waits on it
forever, so a client that opens connections and sends a byte now and then
(slowloris) can hold every thread and starve `/healthz`, and systemd's or
Kubernetes' probe with it. Here:

- each read and write on a connection times out (`idle_timeout`);
- a connection gets `request_budget` seconds in all; past that it is shut
  down the next time a new connection arrives;
- at most `max_connections` are open at once; at the cap, a new connection
  makes room by shutting down the oldest one that has not yet sent a whole
  request (else the oldest of all), so the newest client, a health probe
  that sends its request at once, is served, and a flood of slow clients
  can only delay it;
- errors on a connection (a client gone, an evicted socket) are dropped
  quietly: stdout is for events and stderr is no place for tracebacks.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 5.0
REQUEST_BUDGET = 15.0


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT,
                 request_budget: float = REQUEST_BUDGET) -> None:
        handler = type(handler.__name__, (handler,), {"timeout": idle_timeout})  # read/write timeout per socket
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.request_budget = request_budget
        self._lock = threading.Lock()
        # Open connections by arrival: socket -> (arrived at, has sent a whole request).
        self._open: dict[Any, list[Any]] = {}
        self.evicted = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        with self._lock:
            for sock, (arrived, _) in list(self._open.items()):
                if now - arrived > self.request_budget:
                    self._evict(sock)
            while len(self._open) >= self.max_connections:
                idle = [s for s, (_, served) in self._open.items() if not served]
                self._evict(idle[0] if idle else next(iter(self._open)))
            self._open[request] = [now, False]
        super().process_request(request, client_address)

    def mark_served(self, request: Any) -> None:
        """The handler read a whole request: evict others first."""
        with self._lock:
            if request in self._open:
                self._open[request][1] = True

    def _evict(self, sock: Any) -> None:
        self._open.pop(sock, None)
        self.evicted += 1
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its handler thread wakes up, fails quietly and ends
        except OSError:
            pass

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that went away, or one we shut down: nothing to report


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers with one whole body and logs nothing
    (stdout is for events)."""

    def mark_served(self) -> None:
        if isinstance(self.server, BoundedHTTPServer):
            self.server.mark_served(self.request)

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's naming
        return


def serve(addr: str, handler: type[BaseHTTPRequestHandler], *, name: str) -> BoundedHTTPServer:
    """Serve `handler` on `addr` (`host:port`, `[v6]:port`; an empty host is every address) in a background thread."""
    host, _, port = addr.rpartition(":")
    server = BoundedHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), handler)  # noqa: S104 - operator's choice
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
