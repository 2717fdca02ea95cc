"""`rotator validate` on hostile credential files: seconds until exit 2.

Issue 11 asks that an alias bomb, a 1 MiB file and a 1,000-deep nesting each
get exit 2 within a second, with no traceback. Each case is its own config
directory and its own process, timed from process start to exit (interpreter
start included), best and median of --runs runs:

    python bench/hostile_validate.py [--runs 7]

The figures go into docs/SECURITY.md by hand, with the machine's load.
Tests check the behaviour (exit 2, the message, nothing heavy imported:
tests/test_hostile_files.py), never the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD = "provider: aws.iam_access_key\nowner: platform-team\nschedule: {every: 30d}\ngrace: 1h\nvault: {path: apps/hostile}\n"
CASES = {
    "alias bomb (800 bytes, 2**24 strings expanded)": HEAD + "params:\n  user_name: x\n  "
    + "\n  ".join(['l0: &l0 ["lol","lol"]'] + [f"l{i}: &l{i} [*l{i - 1},*l{i - 1}]" for i in range(1, 25)]) + "\n",
    "1 MiB file": HEAD + "params: {user_name: x}\ndescription: " + "x" * (1 << 20) + "\n",
    "1,000-deep nesting": HEAD + "params: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte code cached
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in CASES.items():
            directory = Path(tmp) / str(len(name))
            directory.mkdir()
            (directory / "hostile.yaml").write_text(content)
            seconds = []
            for _ in range(args.runs + 1):  # the first run warms the byte-code cache and is dropped
                started = time.monotonic()
                result = subprocess.run([sys.executable, "-m", "rotator", "validate", "--config-dir", str(directory)],
                                        env=env, capture_output=True, text=True, timeout=60, check=False)
                seconds.append(time.monotonic() - started)
                if result.returncode != 2 or "Traceback" in result.stderr + result.stdout:
                    print(f"{name}: exit {result.returncode}, expected 2 and no traceback")
                    failed = True
                    break
            else:
                runs = seconds[1:]
                print(f"{name:48s} exit 2   best {min(runs):.2f} s   median {statistics.median(runs):.2f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
