"""What the two outbound webhook senders share: owner notices
(rotator.engine.notify) and alerts (rotator.compliance.alerts).

- An answer's status decides the outcome: 2xx delivered; 5xx and the
  sender's retryable statuses (429, and 408 for notices) a `TransientError`
  carrying the server's `Retry-After`; anything else a `PermanentError`.
- Deliveries run on one background thread per sender from a bounded queue
  (`work_through`); `drain` waits, for at most a deadline, until that queue
  is empty, and `shut_down` delivers what is queued, then ends the thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from rotator.core.errors import PermanentError, TransientError


def retry_after(response: httpx.Response) -> float | None:
    """The answer's `Retry-After` in seconds, if it gives one as a number."""
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def check_status(response: httpx.Response, *, retryable: frozenset[int], label: str = "") -> None:
    """Return on 2xx; raise `TransientError` on 5xx or a `retryable` status, else `PermanentError`."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in retryable:
        raise TransientError(f"{label}HTTP {status}", retry_after=retry_after(response))
    raise PermanentError(f"{label}HTTP {status}")


def drain(work: queue.Queue[Any], timeout: float) -> bool:
    """Wait until every item put on `work` was handled; False when `timeout` passed first."""
    deadline = time.monotonic() + timeout
    with work.all_tasks_done:
        while work.unfinished_tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            work.all_tasks_done.wait(remaining)
    return True


def work_through(work: queue.Queue[Any], deliver: Callable[[Any], None], on_error: Callable[[Any, Exception], None]) -> None:
    """The delivery thread: hand each item to `deliver` until a None arrives.
    An unexpected error goes to `on_error` and the thread goes on: a bug in
    one delivery must not end deliveries for good."""
    while True:
        item = work.get()
        try:
            if item is None:
                return
            deliver(item)
        except Exception as exc:  # noqa: BLE001 - reported by on_error, never raised
            on_error(item, exc)
        finally:
            work.task_done()


def shut_down(work: queue.Queue[Any], stop: threading.Event, thread: threading.Thread, timeout: float) -> None:
    """Deliver what is queued (for at most `timeout` seconds), then end the
    thread: `stop` ends any retry wait at once."""
    drain(work, timeout)
    stop.set()
    try:
        work.put_nowait(None)
    except queue.Full:
        pass
    thread.join(timeout=2.0)
