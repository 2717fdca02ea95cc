"""Retries inside one step: the project's tenacity policies, built here only.

Only `TransientError` is retried. Waits are exponential with jitter, a
`retry_after` the error carries (HTTP Retry-After, rate-limit reset) is
honoured, attempts and total time are capped, and every wait ends early
when the shutdown event is set. Across ticks the state machine retries
(see `rotator.core.machine`), with its attempt count persisted in Vault.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity
from tenacity import RetryCallState
from tenacity.stop import stop_base

from rotator.core.clock import Clock, SystemClock
from rotator.core.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    max_seconds: float = 60.0
    initial_wait: float = 0.5
    max_wait: float = 15.0
    # A Retry-After longer than this is not waited out inside the step: the
    # step fails as transient and the state machine tries again later.
    max_retry_after: float = 120.0


# Calls to Vault and to provider APIs inside one step.
API = RetryPolicy()
# Verifying a new credential: AWS takes 5-15 s to propagate a key, so keep
# trying for about half a minute (the provider may ask for longer).
VERIFY = RetryPolicy(max_attempts=30, max_seconds=30.0, initial_wait=0.5, max_wait=5.0)
# Confirming a revocation took effect; a provider's `confirm_budget` caps the
# time (Stripe: minutes), so attempts are bounded by time, not count.
CONFIRM = RetryPolicy(max_attempts=60, max_seconds=30.0, initial_wait=0.5, max_wait=10.0)


def _wait_for(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = tenacity.wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(max(0.0, exc.retry_after), policy.max_retry_after)
        return float(backoff(state))

    return wait


class _StopOnShutdown(stop_base):
    def __init__(self, shutdown: threading.Event | None) -> None:
        self.shutdown = shutdown

    def __call__(self, state: RetryCallState) -> bool:
        return self.shutdown is not None and self.shutdown.is_set()


class _TooLongRetryAfter(stop_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, TransientError) and (exc.retry_after or 0.0) > self.policy.max_retry_after


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = API,
    clock: Clock | None = None,
    shutdown: threading.Event | None = None,
    max_seconds: float | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call `fn`, retrying `TransientError` per `policy`; re-raise the last error.

    Returns what `fn` returned; the number of attempts made is reported to
    `on_retry` before each new attempt.
    """
    clock = clock or SystemClock()
    budget = policy.max_seconds if max_seconds is None else max_seconds

    def sleep(seconds: float) -> None:
        clock.sleep(seconds, until=shutdown)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(state.attempt_number, state.outcome.exception())

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=(
            tenacity.stop_after_attempt(policy.max_attempts)
            | _StopOnShutdown(shutdown)
            | _TooLongRetryAfter(policy)
            | _stop_after_clock(clock, budget)
        ),
        wait=_wait_for(policy),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)


def _stop_after_clock(clock: Clock, budget: float) -> stop_base:
    """Stop once `budget` seconds of the injected clock have passed."""
    start = clock.now()

    class _Stop(stop_base):
        def __call__(self, state: RetryCallState) -> bool:
            return (clock.now() - start).total_seconds() >= budget

    return _Stop()
