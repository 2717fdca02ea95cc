"""Test-only fault points at step boundaries.

- `ROTATOR_TEST_CRASH_AT=NAME[,NAME...]`: the process kills itself with
  SIGKILL when it reaches a named boundary, so tests can prove that a
  restart converges;
- `ROTATOR_TEST_PAUSE_AT=NAME:SECONDS[,...]`: it sleeps there, so tests can
  signal it mid-rotation (SIGTERM drains the step in flight).

Both act only when `ROTATOR_TEST_MODE=1` is set as well: one stray variable
in a production environment must not be able to kill or stall the daemon
mid-rotation. Tests build the environment with `crash_env` / `pause_env`.

Unset in production, this costs a few environment lookups per boundary.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "ROTATOR_TEST_CRASH_AT"
PAUSE_ENV = "ROTATOR_TEST_PAUSE_AT"
TEST_MODE_ENV = "ROTATOR_TEST_MODE"


def crash_env(points: str) -> dict[str, str]:
    """The environment that makes a rotator process crash at `points`."""
    return {TEST_MODE_ENV: "1", ENV: points}


def pause_env(pauses: str) -> dict[str, str]:
    """The environment that makes a rotator process pause at `pauses` (NAME:SECONDS,...)."""
    return {TEST_MODE_ENV: "1", PAUSE_ENV: pauses}


def is_test_mode() -> bool:
    return os.environ.get(TEST_MODE_ENV) == "1"


def ignored_hooks() -> list[str]:
    """Hook variables set without test mode (they do nothing; worth a warning)."""
    return [] if is_test_mode() else [name for name in (ENV, PAUSE_ENV) if os.environ.get(name)]


def crashpoint(name: str) -> None:
    wanted = os.environ.get(ENV)
    pauses = os.environ.get(PAUSE_ENV)
    if not (wanted or pauses) or not is_test_mode():
        return
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    if pauses:
        for item in pauses.split(","):
            point, _, seconds = item.partition(":")
            if point == name:
                time.sleep(float(seconds or "1"))
