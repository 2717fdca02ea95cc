"""Who holds a lease, and whether that holder is known to be dead.

A lease names its holder's host, boot, PID namespace, PID and process start
time. Another process that shares the host, boot and PID namespace can tell
for certain whether the holder still runs, so a daemon restarted after a
crash resumes at once instead of waiting out the lease. A holder anywhere
else, or one whose process cannot be seen, is trusted until its lease
expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from functools import lru_cache


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: distinguishes a reused PID."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces; fields after it are plain.
    return stat.rsplit(")", 1)[-1].split()[19]


@dataclass(frozen=True)
class Identity:
    holder: str
    host: str
    boot_id: str | None
    pid_namespace: str | None
    pid: int
    start_ticks: str | None


@lru_cache(maxsize=1)
def current() -> Identity:
    host = socket.gethostname()
    pid = os.getpid()
    return Identity(
        holder=f"{host}:{pid}:{uuid.uuid4().hex[:6]}",
        host=host,
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        pid_namespace=_pid_namespace(),
        pid=pid,
        start_ticks=process_start_ticks(pid),
    )


def is_known_dead(*, host: str | None, boot_id: str | None, pid_namespace: str | None, pid: int | None, start_ticks: str | None) -> bool:
    """True only on positive evidence: the holder shared our host, boot and
    PID namespace, and its PID is gone, or now belongs to a process that
    started at another time. A /proc entry we cannot read (another user's
    process under `ProtectProc=invisible`, or `hidepid`) proves nothing."""
    me = current()
    if None in (host, boot_id, pid_namespace, pid, me.boot_id, me.pid_namespace):
        return False
    if (host, boot_id, pid_namespace) != (me.host, me.boot_id, me.pid_namespace):
        return False
    assert pid is not None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the PID exists
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user's process
    except OSError:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and start_ticks is not None and ticks != start_ticks
