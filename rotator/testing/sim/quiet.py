"""Logging off while simulating: thousands of schedules would print
millions of events, and redaction would cost more than the simulation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog

from rotator.audit.events import SECRETS


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    try:
        yield
    finally:
        structlog.configure(**saved)
        with SECRETS._lock:
            SECRETS._values.clear()  # the simulation's made-up secrets only
