"""Every kind of tampering with the audit trail, each detected through the
command line against a real OpenBao, with its exit code and message; the
table in docs/AUDIT.md is this test's output (UPDATE_AUDIT_DOCS=1 rewrites it)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
import structlog
from click.testing import CliRunner

from rotator.audit.anchor import Anchorer, AnchorStore
from rotator.audit.chain import ChainState, Tip, canonical_json, encode_chain_state, link, read_chain_state
from rotator.audit.writer import AuditFile
from rotator.cli import cli
from rotator.core.clock import FakeClock
from rotator.sandbox.services import OpenBaoServer
from rotator.config.settings import VaultConnection
from rotator.vault.store import VaultStore

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "AUDIT.md"
START, END = "<!-- tampering-table:start -->", "<!-- tampering-table:end -->"
WRITE_DOCS = os.environ.get("UPDATE_AUDIT_DOCS") == "1"  # read at import: the fixtures clear ROTATOR_*


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """In-process commands configure structlog onto CliRunner's streams: undo that afterwards."""
    yield
    structlog.reset_defaults()


@dataclass
class World:
    """An audit file anchored in the test OpenBao, and the environment of a process that checks it."""

    dir: Path
    env: dict[str, str]
    store: VaultStore
    bao: hvac.Client
    prefix: str
    transit: tuple[str, str] | None = None

    @property
    def path(self) -> Path:
        return self.dir / "audit.jsonl"

    def write(self, count: int, *, anchor: bool = True) -> AuditFile:
        writer = AuditFile(self.path)
        for i in range(count):
            writer.append({"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "test.tick", "i": i})
        if anchor:
            self.anchorer(writer).anchor_round()
        return writer

    def anchorer(self, writer: AuditFile) -> Anchorer:
        anchors = AnchorStore(self.store, ("secret", self.prefix), transit=self.transit)
        return Anchorer(writer, anchors, log=lambda: _Log(writer), clock=FakeClock(), host="test-host")

    def lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines(keepends=True)

    def put(self, lines: list[bytes]) -> None:
        self.path.write_bytes(b"".join(lines))

    def anchor_path(self, writer: AuditFile) -> str:
        return f"{self.prefix}/{writer.chain_id}"


class _Log:
    def __init__(self, writer: AuditFile) -> None:
        self.writer = writer

    def info(self, event: str, **fields: Any) -> None:
        self.writer.append({"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": event, **fields})

    warning = error = info


def _rotator(world: World, *args: str, real: bool = False, extra: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI: `real` as a separate `python -m rotator` process, else in-process (same click commands)."""
    env = {**world.env, **(extra or {})}
    if real:
        from helpers import run_rotator

        done = run_rotator(list(args), env)
        return done.returncode, done.stdout + done.stderr
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def _rehash(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    record["hash"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    return (canonical_json(record) + "\n").encode()


def _rewrite_chain(world: World, change: Callable[[dict[str, Any]], None], *, chain_id: str | None) -> None:
    """What the file's writer can do: rebuild every line and the sidecar, with valid hashes."""
    tip, out = Tip(0, "0" * 64), []
    for number, raw in enumerate(world.lines()):
        event = {k: v for k, v in json.loads(raw).items() if k not in {"seq", "prev_hash", "hash", "chain_id"}}
        change(event)
        record = link(event, tip, chain_id=(chain_id if number == 0 else None))
        out.append((canonical_json(record) + "\n").encode())
        tip = Tip(record["seq"], record["hash"])
    world.put(out)
    state = read_chain_state(world.path)
    assert state is not None
    world.path.with_name("audit.jsonl.chain").write_bytes(encode_chain_state(ChainState(tip, None, chain_id or state.chain_id)))


def _fix_sidecar(world: World) -> None:
    last = json.loads(world.lines()[-1])
    state = read_chain_state(world.path)
    assert state is not None
    world.path.with_name("audit.jsonl.chain").write_bytes(encode_chain_state(ChainState(Tip(last["seq"], last["hash"]), None, state.chain_id)))


# --- the tampering kinds: each returns (kind, command, exit code, output) ---------------------

Row = tuple[str, str, int, str]


def edit(world: World) -> list[Row]:
    world.write(6)
    lines = world.lines()
    lines[2] = lines[2].replace(b'"i":2', b'"i":9')
    world.put(lines)
    return [("edit a value", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]


def delete(world: World) -> list[Row]:
    world.write(6)
    lines = world.lines()
    del lines[2]
    world.put(lines)
    return [("delete a line", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]


def insert(world: World) -> list[Row]:
    world.write(6)
    lines = world.lines()
    second = json.loads(lines[1])
    lines.insert(2, _rehash({"event": "credential.revoked", "level": "info", "seq": 3, "prev_hash": second["hash"]}))
    world.put(lines)
    return [("insert a forged line", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]


def reorder(world: World) -> list[Row]:
    world.write(6)
    lines = world.lines()
    lines[1], lines[2] = lines[2], lines[1]
    world.put(lines)
    return [("swap two lines", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]


def head_cut(world: World) -> list[Row]:
    world.write(6)
    world.put(world.lines()[2:])
    return [("cut the oldest lines", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]


def tail_cut(world: World) -> list[Row]:
    world.write(6)
    size = sum(len(line) for line in world.lines()[:-1])
    subprocess.run(["truncate", "-s", str(size), str(world.path)], check=True)
    return [
        ("cut the newest line (`truncate`)", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path))),
        ("cut the newest line (`truncate`)", "audit verify FILE --anchor", *_rotator(world, "audit", "verify", str(world.path), "--anchor", real=True)),
        ("cut the newest line (`truncate`)", "run / rotate (start)", *_run_once(world)),
    ]


def tail_cut_sidecar_fixed(world: World) -> list[Row]:
    world.write(6)
    world.put(world.lines()[:-2])
    _fix_sidecar(world)
    return [("cut the newest lines, sidecar rewritten to match", "run / rotate (start)", *_run_once(world))]


def full_rewrite(world: World) -> list[Row]:
    writer = world.write(6)
    _rewrite_chain(world, lambda e: e.update(i=e.get("i", 0) + 100) if e["event"] == "test.tick" else None, chain_id=writer.chain_id)
    rows = [("rewrite the whole chain (same chain id)", "audit verify FILE", *_rotator(world, "audit", "verify", str(world.path)))]
    rows.append(("rewrite the whole chain (same chain id)", "audit verify FILE --anchor",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor", real=True)))
    _rewrite_chain(world, lambda e: None, chain_id="f" * 32)
    rows.append(("rewrite the whole chain (as a new chain)", "audit verify FILE --anchor",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor")))
    return rows


def foreign_append(world: World) -> list[Row]:
    world.write(6)
    last = json.loads(world.lines()[-1])
    world.put([*world.lines(), _rehash({"event": "credential.revoked", "level": "info", "seq": last["seq"] + 1, "prev_hash": last["hash"]})])
    return [
        ("a second process appends past the writers' lock", "run / rotate (start)", *_run_once(world)),
        ("a second process appends past the writers' lock", "audit verify FILE --anchor",
         *_rotator(world, "audit", "verify", str(world.path), "--anchor")),
    ]


def anchor_rewind_unsigned(world: World) -> list[Row]:
    writer = world.write(3)
    old = world.bao.secrets.kv.v2.read_secret_version(path=world.anchor_path(writer), mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    for i in range(3):
        writer.append({"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "test.tick", "i": 10 + i})
    world.anchorer(writer).anchor_round()
    world.put(world.lines()[:-3])
    _fix_sidecar(world)
    kv = world.bao.secrets.kv.v2
    kv.create_or_update_secret(path=world.anchor_path(writer), secret=old, mount_point="secret")
    rows = [("cut lines and rewind the anchor through KV (signing off)", "audit verify FILE --anchor",
             *_rotator(world, "audit", "verify", str(world.path), "--anchor"))]
    version = kv.read_secret_metadata(path=world.anchor_path(writer), mount_point="secret")["data"]["current_version"]
    kv.create_or_update_secret(path=world.anchor_path(writer), secret={**old, "kv_version": version + 1}, mount_point="secret")
    rows.append(("cut lines, rewind the anchor and fix its kv_version (signing off)", "audit verify FILE --anchor",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor")))
    return rows


def anchor_rewind_signed(world: World) -> list[Row]:
    writer = world.write(3)
    old = world.bao.secrets.kv.v2.read_secret_version(path=world.anchor_path(writer), mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    for i in range(3):
        writer.append({"timestamp": "2026-01-01T00:00:00Z", "level": "info", "event": "test.tick", "i": 10 + i})
    world.anchorer(writer).anchor_round()
    good = _rotator(world, "audit", "verify", str(world.path), "--anchor")
    assert good[0] == 0 and "signature valid" in good[1], good
    world.put(world.lines()[:-3])
    _fix_sidecar(world)
    kv = world.bao.secrets.kv.v2
    kv.create_or_update_secret(path=world.anchor_path(writer), secret=old, mount_point="secret")
    rows = [("cut lines and rewind the anchor through KV (signing on)", "audit verify FILE --anchor",
             *_rotator(world, "audit", "verify", str(world.path), "--anchor", real=True))]
    last = json.loads(world.lines()[-1])
    version = kv.read_secret_metadata(path=world.anchor_path(writer), mount_point="secret")["data"]["current_version"]
    forged = {**old, "seq": last["seq"], "hash": last["hash"], "kv_version": version + 1}  # all but a valid signature
    kv.create_or_update_secret(path=world.anchor_path(writer), secret=forged, mount_point="secret")
    rows.append(("cut lines and forge a new anchor through KV (signing on)", "audit verify FILE --anchor",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor")))
    pem = world.dir / "anchor-key.pem"
    code, out = _rotator(world, "audit", "public-key")
    assert code == 0 and "-----BEGIN PUBLIC KEY-----" in out, out
    pem.write_text(out[out.index("-----BEGIN PUBLIC KEY-----") :])
    offline = {**world.env}
    offline.pop("ROTATOR_AUDIT_TRANSIT_KEY")
    world.env = offline
    rows.append(("cut lines and forge a new anchor through KV (signing on)", "audit verify FILE --anchor --public-key PEM",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor", "--public-key", str(pem))))
    unsigned = {k: v for k, v in forged.items() if k != "signature"}
    kv.create_or_update_secret(path=world.anchor_path(writer), secret=unsigned, mount_point="secret")
    rows.append(("cut lines and write an unsigned anchor through KV (signing on)", "audit verify FILE --anchor --public-key PEM",
                 *_rotator(world, "audit", "verify", str(world.path), "--anchor", "--public-key", str(pem))))
    return rows


def _run_once(world: World) -> tuple[int, str]:
    """`rotator run --once` with the audit file (no credentials): what any appending process does at start."""
    before = world.path.read_bytes()
    code, out = _rotator(world, "run", "--once", real=True, extra={"ROTATOR_AUDIT_FILE": str(world.path)})
    assert code == 0 or world.path.read_bytes() == before, "a refused start appends nothing"
    return code, out


KINDS = [edit, delete, insert, reorder, head_cut, tail_cut, tail_cut_sidecar_fixed, full_rewrite, foreign_append, anchor_rewind_unsigned]


def _normalise(world: World, output: str) -> str:
    """The first line of the output, with what differs between runs (paths, hashes, ids, times, hosts) masked."""
    first = next((line for line in output.splitlines() if not line.startswith("{")), "")
    first = first.replace(str(world.dir) + os.sep, "").replace(world.prefix, "rotator/state/_audit")
    first = re.sub(r"\b[0-9a-f]{32}\b", "CHAIN", first)
    first = re.sub(r"\b[0-9a-f]{12}…", "…", first)
    first = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "TIME", first)
    first = first.replace(socket.gethostname(), "HOST").replace("test-host", "HOST")
    if world.transit:
        first = first.replace(world.transit[0], "transit")
    return first.replace("|", "\\|")


def render(rows: list[tuple[str, str, int, str]]) -> str:
    out = ["| tampering | detected by `rotator …` | exit | first line of the output |", "|---|---|---|---|"]
    out += [f"| {kind} | `{command}` | {code} | {message} |" for kind, command, code, message in rows]
    return "\n".join(out)


EXPECTED = {  # (kind, command) -> exit code and a phrase of the message, the behaviour this test pins
    ("edit a value", "audit verify FILE"): (1, "audit.jsonl:3: hash does not match"),
    ("delete a line", "audit verify FILE"): (1, "audit.jsonl:3: seq 4 where 3 was expected: events are missing"),
    ("insert a forged line", "audit verify FILE"): (1, "audit.jsonl:4: seq 3 where 4 was expected: events are inserted"),
    ("swap two lines", "audit verify FILE"): (1, "audit.jsonl:2: seq 3 where 2 was expected"),
    ("cut the oldest lines", "audit verify FILE"): (1, "audit.jsonl:1: seq 3 "),
    ("cut the newest line (`truncate`)", "audit verify FILE"): (0, "intact"),
    ("cut the newest line (`truncate`)", "audit verify FILE --anchor"): (1, "missing (cut"),
    ("cut the newest line (`truncate`)", "run / rotate (start)"): (1, "its newest lines were cut"),
    ("cut the newest lines, sidecar rewritten to match", "run / rotate (start)"): (1, "were cut. Not appending over it"),
    ("rewrite the whole chain (same chain id)", "audit verify FILE"): (0, "intact"),
    ("rewrite the whole chain (same chain id)", "audit verify FILE --anchor"): (1, "has another hash than the anchor"),
    ("rewrite the whole chain (as a new chain)", "audit verify FILE --anchor"): (1, "no anchor in Vault for chain"),
    ("a second process appends past the writers' lock", "run / rotate (start)"): (1, "appended by something other than a rotator writer"),
    ("a second process appends past the writers' lock", "audit verify FILE --anchor"): (0, "intact"),
    ("cut lines and rewind the anchor through KV (signing off)", "audit verify FILE --anchor"): (1, "rewound through KV"),
    ("cut lines, rewind the anchor and fix its kv_version (signing off)", "audit verify FILE --anchor"): (0, "intact"),
    ("cut lines and rewind the anchor through KV (signing on)", "audit verify FILE --anchor"): (1, "rewound through KV"),
    ("cut lines and forge a new anchor through KV (signing on)", "audit verify FILE --anchor"): (1, "forged or altered through KV"),
    ("cut lines and forge a new anchor through KV (signing on)", "audit verify FILE --anchor --public-key PEM"): (1, "forged or altered through KV"),
    ("cut lines and write an unsigned anchor through KV (signing on)", "audit verify FILE --anchor --public-key PEM"): (1, "carries no signature"),
}


def test_every_tampering_kind_is_detected_as_the_table_in_docs_says(
    tmp_path: Path, openbao: OpenBaoServer, bao_client: hvac.Client, config_dir: Path,
) -> None:
    """Each kind gets its own file and anchor; the exit codes and messages match EXPECTED and docs/AUDIT.md."""
    rows: list[tuple[str, str, int, str]] = []
    for number, kind in enumerate([*KINDS, anchor_rewind_signed]):
        place = tmp_path / kind.__name__
        place.mkdir()
        world = _world(place, openbao, bao_client, f"{number}{os.urandom(4).hex()}", config_dir)
        if kind is anchor_rewind_signed:
            _sign(world)
        began = time.monotonic()
        for name, command, code, output in kind(world):
            rows.append((name, command, code, _normalise(world, output)))
        print(f"{kind.__name__}: {time.monotonic() - began:.1f}s")
    for name, command, code, message in rows:
        expected_code, phrase = EXPECTED[(name, command)]
        assert (code, phrase in message) == (expected_code, True), (name, command, code, message)
    assert len(rows) == len(EXPECTED)
    table = render(rows)
    text = DOC.read_text(encoding="utf-8")
    head, current, tail = text[: text.index(START) + len(START)], text[text.index(START) + len(START) : text.index(END)], text[text.index(END) :]
    if WRITE_DOCS:
        DOC.write_text(f"{head}\n{table}\n{tail}", encoding="utf-8")
    else:
        assert current.strip() == table, "docs/AUDIT.md's table is stale: run this test with UPDATE_AUDIT_DOCS=1"


def _world(place: Path, openbao: OpenBaoServer, bao: hvac.Client, unique: str, config_dir: Path) -> World:
    store = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    store.login()
    prefix = f"rotator-test/{unique}/_audit"
    env = {
        "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.token, "ROTATOR_LOG_FORMAT": "json",
        "ROTATOR_STATE_PREFIX": f"rotator-test/{unique}", "ROTATOR_CONFIG_DIR": str(config_dir),
    }
    return World(place, env, store, bao, prefix)


def _sign(world: World) -> None:
    mount = f"transit-{world.prefix.split('/')[1]}"
    world.bao.sys.enable_secrets_engine("transit", path=mount)
    world.bao.secrets.transit.create_key(name="rotator-audit", key_type="ed25519", mount_point=mount)
    world.transit = (mount, "rotator-audit")
    world.env["ROTATOR_AUDIT_TRANSIT_KEY"] = f"{mount}/rotator-audit"
