"""The metrics and health port under slow clients (issue 11 item 7): real
`rotator run`, real sockets. A slowloris cannot keep `/healthz` from
answering; idle connections are closed; no more than the cap stay open."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import httpx

from helpers import DaemonProcess
from rotator.daemon.listener import IDLE_TIMEOUT, MAX_CONNECTIONS
from rotator.sandbox.services import free_port

SLOW = MAX_CONNECTIONS + 8


def _healthz(port: int, *, timeout: float) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout).status_code


def _is_closed_by_server(sock: socket.socket, *, within: float) -> bool:
    """Whether the server closes (or resets) this connection within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the server


def test_slow_clients_do_not_block_healthz(vault_env: dict[str, str], config_dir: Path) -> None:
    """More slow connections than the cap, each holding half a request: /healthz still answers at once, the
    overflow is closed to make room, and the rest are closed by the idle timeout."""
    port = free_port()
    daemon = DaemonProcess({**vault_env, "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_METRICS_ADDR": f"127.0.0.1:{port}",
                            "ROTATOR_TICK_SECONDS": "1"})
    slow: list[socket.socket] = []
    try:
        daemon.wait_for(lambda es: any(e["event"] == "daemon.started" for e in es), what="daemon.started")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _healthz(port, timeout=2) == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
            slow.append(sock)
        started = time.monotonic()
        assert _healthz(port, timeout=IDLE_TIMEOUT) == 200
        answered_in = time.monotonic() - started
        readable, _, _ = select.select(slow, [], [], 1.0)  # those the server closed to make room
        evicted = [s for s in readable if _is_closed_by_server(s, within=0.1)]
        assert len(evicted) >= SLOW - MAX_CONNECTIONS, "connections past the cap make room"
        rest = [s for s in slow if s not in evicted]
        assert all(_is_closed_by_server(s, within=IDLE_TIMEOUT + 10) for s in rest), "idle connections are closed"
        assert _healthz(port, timeout=5) == 200
        print(f"/healthz answered in {answered_in:.3f}s with {SLOW} slow connections open; {len(evicted)} evicted at once")
    finally:
        for sock in slow:
            sock.close()
        daemon.stop()
    assert "Traceback" not in daemon.output()
