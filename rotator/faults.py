"""Test-only crash points: with `ROTATOR_TEST_CRASH_AT=NAME[,NAME...]` in the
environment, the process kills itself with SIGKILL when it reaches a named
step boundary, so tests can prove that a restart converges.

Unset in production, this costs one environment lookup per step boundary.
"""

from __future__ import annotations

import os
import signal

ENV = "ROTATOR_TEST_CRASH_AT"


def crashpoint(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
