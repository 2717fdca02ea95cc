"""Helpers for the test suite: credential files, running the real CLI in a
subprocess, parsing its event stream, and collecting secrets to scan output
for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from rotator.testing.leaks import assert_no_leaks


def write_credential(config_dir: Path, stem: str, *, provider: str = "aws.iam_access_key", params: dict[str, Any] | None = None,
                     every: str = "30d", grace: str = "1h", path: str | None = None, **extra: Any) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "provider": provider,
        "owner": "platform-team",
        "description": f"test credential {stem}",
        "schedule": {"every": every},
        "grace": grace,
        "vault": {"mount": "secret", "path": path or f"apps/{stem}"},
        "params": params or {},
    }
    doc.update(extra)
    file = config_dir / f"{stem}.yaml"
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return file


def run_rotator(args: list[str], env: dict[str, str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m rotator ARGS` with only the given environment on top of a clean one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "rotator", *args],
        env={**base, **env}, capture_output=True, text=True, timeout=timeout, check=False,
    )


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON event (contract §7)."""
    out = []
    for number, line in enumerate(stdout.splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"stdout line {number} is not a JSON event: {line[:120]!r}") from None
        assert {"timestamp", "level", "event"} <= set(event), f"line {number} lacks timestamp/level/event"
        assert event["timestamp"].endswith("Z")
        out.append(event)
    return out


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


class SecretLedger:
    """Every secret value a test saw minted, to scan all captured output for."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.outputs: list[tuple[str, str]] = []

    def add(self, *values: str | None) -> None:
        self.values.update(v for v in values if v)

    def add_mapping(self, data: dict[str, Any] | None, fields: tuple[str, ...]) -> None:
        for field in fields:
            if data and isinstance(data.get(field), str):
                self.add(data[field])

    def capture(self, where: str, text: str) -> None:
        self.outputs.append((where, text))

    def assert_clean(self) -> None:
        for where, text in self.outputs:
            assert_no_leaks(text, self.values, where=where)


class DaemonProcess:
    """`rotator run` in the background, its stdout events collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        import threading

        base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "run", *args], env={**base, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    def events(self) -> list[dict[str, Any]]:
        return parse_events("".join(list(self.lines)))

    def wait_for(self, predicate: Any, *, timeout: float = 60.0, what: str = "an event") -> list[dict[str, Any]]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            if predicate(events):
                return events
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; stderr: {''.join(self.err)[-1500:]}")

    def stop(self, sig: int | None = None, timeout: float = 60.0) -> int:
        import signal as signals

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signals.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def output(self) -> str:
        return "".join(self.lines) + "".join(self.err)


def write_versions(kv: Any, path: str, *records: Any, restores: bool = True) -> int:
    """Each state record written at `path` of `kv` (mount `secret`), in order; the last version. With
    `restores`, one equal to a record written before is written back as a copy of that version's data (a
    restore: the same `write_id`), else written anew (a new `write_id`, as every rotator write)."""
    version, written = 0, {}
    for record in records:
        key = record.model_dump_json()
        data = written[key] if restores and key in written else record.to_vault()
        written.setdefault(key, data)
        version = kv.write("secret", path, data, cas=version)
    return version
