"""Start-up reads of state records (issue 15, target (d)): the lean bulk
reader (rotator.vault.bulk) and reading records while the files are still
parsed (rotator.daemon.prefetch). Real OpenBao; for the HTTP framings
OpenBao does not produce on demand, a loopback server of the test's own."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest

from helpers import write_credential
from rotator.config.settings import Settings
from rotator.core.clock import FakeClock
from rotator.core.state import KeyRecord, StateRecord
from rotator.daemon.loop import Daemon
from rotator.engine.reconcile import Engine
from rotator.engine.results import EngineOptions
from rotator.sandbox.services import OpenBaoServer
from rotator.vault.bulk import BulkReader, parse_kv_read
from rotator.vault.changes import ChangeFeed
from rotator.vault.store import Versioned, VaultStore
from rotator.wiring import App

BODY = b'{"data":{"data":{"v":"%s"},"metadata":{"version":3}}}'


def _answer(path: str) -> bytes:
    """What the test server says to GET .../data/PATH: one framing per path."""
    name = path.rsplit("/", 1)[-1]
    body = BODY % name.encode()
    if name.startswith("length"):
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if name.startswith("chunked"):
        half = len(body) // 2
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Vault-Index: idx-%s\r\n\r\n" % name.encode()
                + b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nTrailer: x\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
    if name == "missing":
        return b'HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{"errors":[]}'
    if name == "deleted":
        deleted = b'{"data":{"data":null,"metadata":{"version":4}}}'
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(deleted), deleted)
    if name == "error":
        return b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 13\r\n\r\n{"errors":[]}'
    if name == "close":
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if name == "nolength":
        return b"HTTP/1.1 200 OK\r\n\r\n" + body
    if name == "http10":
        return b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    if name == "badchunk":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    if name == "gzip":
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
    if name == "notjson":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{{{"
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1  # type: ignore[attr-defined]
        while True:
            request_line = self.rfile.readline()
            if not request_line:
                return
            headers = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            self.server.seen.append((request_line.decode().split()[1], headers))  # type: ignore[attr-defined]
            answer = _answer(request_line.decode().split()[1])
            self.wfile.write(answer)
            if b"Content-Length" not in answer.split(b"\r\n\r\n")[0] and b"chunked" not in answer or b"HTTP/1.0" in answer \
                    or b"Connection: close" in answer or answer.endswith(b"zz\r\n") or b"gzip" in answer:
                return  # close, as a server sending such an answer would


@pytest.fixture
def framing_server() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.seen, server.connections = [], 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _reader(url: str, observed: list[str | None], workers: int = 1) -> BulkReader:
    def parse(status: int, body: bytes) -> Versioned | None:
        found = parse_kv_read(status, body)
        return Versioned(*found) if found is not None else None

    return BulkReader(url, {"X-Vault-Token": "t0ken", "X-Vault-Namespace": "team"}, "secret", parse=parse, observe=observed.append,
                      timeout=5, context=None, workers=workers)


def test_each_framing_is_read_or_left_out(framing_server: socketserver.ThreadingTCPServer) -> None:
    """Content-Length and chunked answers are read; a missing path is empty
    at version 0; anything else (a deleted latest version, an error status,
    a closing or unframed or HTTP/1.0 answer, a broken or unknown chunking,
    a body that is not JSON) is left out for the ordinary client, and the
    reader goes on with a new connection."""
    host, port = framing_server.server_address
    observed: list[str | None] = []
    reader = _reader(f"http://{host}:{port}", observed)
    names = ["length-1", "chunked-1", "missing", "deleted", "error", "close", "length-2", "nolength", "chunked-2", "http10",
             "badchunk", "length-3", "gzip", "notjson", "length-4"]
    for name in names:
        reader.submit(f"app/{name}")
    assert reader.settled(timeout=30)
    found = reader.results()
    assert found == {
        **{f"app/length-{i}": Versioned({"v": f"length-{i}"}, 3) for i in range(1, 5)},
        **{f"app/chunked-{i}": Versioned({"v": f"chunked-{i}"}, 3) for i in range(1, 3)},
        "app/missing": Versioned(None, 0),
    }
    assert "idx-chunked-1" in observed and "idx-chunked-2" in observed
    paths = [path for path, _ in framing_server.seen]  # type: ignore[attr-defined]
    assert paths == [f"/v1/secret/data/app/{name}" for name in names], "one GET per path, in order, on one worker"
    assert all(h["x-vault-token"] == "t0ken" and h["x-vault-namespace"] == "team" and h["host"] == f"{host}:{port}"
               for _, h in framing_server.seen)  # type: ignore[attr-defined]
    # One connection, and a new one after each of the five answers that
    # closed or broke it (close, nolength, http10, badchunk, gzip); an error
    # status or a body that is not JSON keeps it.
    assert framing_server.connections == 1 + 5  # type: ignore[attr-defined]


def test_a_header_with_a_line_break_is_refused() -> None:
    """No request is ever built from a header value that would split it."""
    with pytest.raises(ValueError, match="line break"):
        BulkReader("http://127.0.0.1:9", {"X-Vault-Token": "a\r\nX-Evil: 1"}, "secret", parse=parse_kv_read, observe=lambda _: None,
                   timeout=1, context=None)


def test_nothing_listening_leaves_every_path_out() -> None:
    """A refused connection is a path left out, never an exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        reader = _reader(f"http://127.0.0.1:{port}", [], workers=2)
        for i in range(5):
            reader.submit(f"app/{i}")
        assert reader.results() == {}


def test_a_large_record_reads_as_a_single_read_does(openbao: OpenBaoServer, bao_client: hvac.Client, unique: str) -> None:
    """OpenBao sends answers over its buffer chunked: the bulk read of a
    40 KB record equals the ordinary read."""
    store = VaultStore(Settings(vault_addr=openbao.addr, vault_token=openbao.token).vault_connection())
    path = f"bulk-large-{unique}/r"
    bao_client.secrets.kv.v2.create_or_update_secret(path=path, secret={"big": "x" * 40_000, "n": 1}, mount_point="secret")
    assert store.read_many("secret", [path]) == {path: store.read("secret", path)}


# -- reading records while the files are parsed --------------------------------------------


def _world(openbao: OpenBaoServer, config_dir: Path, unique: str, names: list[str]) -> tuple[Daemon, VaultStore, Engine]:
    now = datetime.now(UTC)
    settings = Settings(config_dir=config_dir, state_prefix=f"rotator-test/{unique}", vault_addr=openbao.addr, vault_token=openbao.token)
    store = VaultStore(settings.vault_connection())
    engine = Engine(store, options=EngineOptions(state_prefix=settings.state_prefix), clock=FakeClock(now))
    for name in names:
        write_credential(config_dir, name, params={"user_name": name})
        record = StateRecord(credential=name, provider="aws.iam_access_key", last_rotated_at=now - timedelta(days=1), rotations=1,
                             current=KeyRecord(key_id=f"AKIA{name.upper()}", rotation_id="seed", issued_at=now - timedelta(days=1)),
                             live_version=1)
        store.write("secret", engine.state_path(name), record.to_vault(), cas=0)
    return Daemon(App(settings, store, engine)), store, engine


def test_a_record_changed_after_it_was_prefetched_is_read_again(openbao: OpenBaoServer, config_dir: Path, unique: str) -> None:
    """A record read while the files were parsed, then changed by another
    process (which says so on the change feed) before the daemon used it:
    the daemon's first poll hears of it, and the record is read again, not
    the prefetched one used. The unchanged one is used as prefetched."""
    daemon, store, engine = _world(openbao, config_dir, unique, ["changed", "kept"])
    daemon.load(prefetch=True)
    assert daemon.prefetch._reader is not None and daemon.prefetch._reader.settled(timeout=30), "both records were read"
    # Another process rotates `changed` by hand and tells the others.
    record, version = engine.read_record("changed")
    assert record is not None and version == 1
    store.write("secret", engine.state_path("changed"), record.model_copy(update={"rotations": 2}).to_vault(), cas=1)
    ChangeFeed(store, mount="secret", prefix=engine.options.state_prefix, holder="another-process").record("changed")
    before = store.requests_made
    daemon._poll_changes(force=True)  # as run_forever does, before preload_state
    daemon.preload_state()
    assert daemon.views["changed"].version == 2 and daemon.views["changed"].record.rotations == 2  # type: ignore[union-attr]
    assert daemon.views["kept"].version == 1 and daemon.views["kept"].wake_at is not None
    # The feed poll, the listing for file-less records, and one read: `changed`'s; `kept` came prefetched.
    assert store.requests_made - before == 3
    daemon.close()


def test_without_a_readable_change_feed_nothing_is_prefetched(openbao: OpenBaoServer, config_dir: Path, unique: str) -> None:
    """The baseline must come before any read: when the feed cannot be read,
    the records are read later, after the daemon's own first poll."""
    daemon, store, engine = _world(openbao, config_dir, unique, ["one"])

    def unreadable() -> None:
        from rotator.core.errors import TransientError

        raise TransientError("the change feed cannot be read (test)")

    daemon.prefetch.changes.poll = unreadable  # type: ignore[method-assign]
    daemon.load(prefetch=True)
    assert daemon.prefetch._reader is None
    daemon.preload_state()
    assert daemon.views["one"].version == 1
    daemon.close()
