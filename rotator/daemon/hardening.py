"""Process hardening for the commands that hold secrets (`run`, `rotate`).

A core dump of the rotator would hold, in plain memory, the Vault token,
the GitHub App key, Stripe management keys and every credential minted
since start. So those commands turn core dumps off before they read any
secret: the soft and hard `RLIMIT_CORE` become 0 (no core file, also for a
crash handler that honours the limit), and on Linux `PR_SET_DUMPABLE` 0
(no core at all, and no ptrace attach or /proc/PID/mem read by other
processes of the same user). The systemd unit sets `LimitCORE=0` as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def disable_core_dumps() -> list[str]:
    """Turn core dumps off for this process; what could not be done, as
    short reasons (empty: everything held)."""
    failures = []
    try:
        import resource

        # Already 0 (systemd's LimitCORE=0, whose @resources filter may refuse setrlimit): nothing to do.
        if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, OSError, ValueError) as exc:
        failures.append(f"RLIMIT_CORE: {type(exc).__name__}")
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                failures.append(f"PR_SET_DUMPABLE: errno {ctypes.get_errno()}")
        except OSError as exc:
            failures.append(f"PR_SET_DUMPABLE: {type(exc).__name__}")
    return failures


def is_dumpable() -> bool | None:
    """Linux's PR_GET_DUMPABLE for this process (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
