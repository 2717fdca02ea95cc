"""Test-only fault points at step boundaries.

- `ROTATOR_TEST_CRASH_AT=NAME[,NAME...]`: the process kills itself with
  SIGKILL when it reaches a named boundary, so tests can prove that a
  restart converges;
- `ROTATOR_TEST_PAUSE_AT=NAME:SECONDS[,...]`: it sleeps there, so tests can
  signal it mid-rotation (SIGTERM drains the step in flight).

Unset in production, this costs two environment lookups per boundary.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "ROTATOR_TEST_CRASH_AT"
PAUSE_ENV = "ROTATOR_TEST_PAUSE_AT"


def crashpoint(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    pauses = os.environ.get(PAUSE_ENV)
    if pauses:
        for item in pauses.split(","):
            point, _, seconds = item.partition(":")
            if point == name:
                time.sleep(float(seconds or "1"))
