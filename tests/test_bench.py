"""The scale benchmark still runs (on a small estate). It asserts behaviour,
never timing: nothing is rotated in steady state, and idle ticks read no
credential's record from Vault (counted by OpenBao's own audit device)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_scale_benchmark_runs_and_idle_ticks_read_no_record(tmp_path: Path) -> None:
    """bench/scale.py on 50 credentials: start-up completes, no rotation, no per-credential idle request."""
    out = tmp_path / "PERFORMANCE.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--credentials", "50", "--idle-seconds", "11", "--write", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["credentials"] == 50 and figures["rotations_started"] == 0
    assert figures["credential_requests_per_idle_tick"] == 0
    assert set(figures["idle_request_paths"].split(", ")) <= {"none", "secret/data/rotator/state/_changes"}
    assert "| start-up" in out.read_text()
