"""The faults a simulation injects, and how one call meets its fault.

Faults at a call boundary (any Vault call, any provider API call), named by
the call's position within one step (`CallFault`):
- `lost`: the effect is applied, then the response is lost (a timeout, a
  dropped connection, a 5xx after the effect);
- `fail`: the call fails before any effect (connection refused, a 5xx);
- `429`: rate limited before any effect, with a Retry-After;
- `cas`: a state-record write meets a concurrent writer (another process
  wrote the record first; only on writes of the state prefix);
- `crash`: the process's memory is dropped before the call (`SimCrash`, a
  `BaseException`, passes every `except Exception`); a fresh engine starts;
- `crash_after`: the same, right after the call took effect.

Faults between calls are steps of a schedule (see `explorer`): a replica
paused past its lease and resumed, clock skew, a state record lost or
restored from an older version, a foreign write to the live path, config
edits, a concurrent `rotate NAME --revoke-now`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotator.core.errors import TransientError, VaultUnavailableError

CALL_FAULTS = ("lost", "fail", "429", "cas", "crash", "crash_after")
STEP_FAULTS = (
    "pause", "skew", "state_lost", "state_older", "state_soft_deleted", "foreign_garbage", "foreign_restore",
    "edit_rename", "edit_delete", "edit_restore", "edit_path", "edit_params", "revoke_now",
)
ALL_FAULTS = CALL_FAULTS + STEP_FAULTS
# Counted within a kind above: an edit_rename that undid the rename before it (the file's previous name back).
VARIANTS = {"edit_rename": "edit_rename_undone"}


class SimCrash(BaseException):
    """The process died here: nothing after this point runs, memory is gone."""


@dataclass(frozen=True)
class CallFault:
    """Inject `kind` at the `index`-th call (0-based) the acting process makes in one step."""

    index: int
    kind: str
    retry_after: float = 0.0

    def __repr__(self) -> str:
        extra = f", retry_after={self.retry_after:g}" if self.kind == "429" else ""
        return f"CallFault({self.index}, {self.kind!r}{extra})"


def error_for(kind: str, *, vault: bool, op: str, retry_after: float | None = 0.0) -> Exception:
    """The error a caller sees for an injected fault, as each edge translates it
    (`retry_after` None: the edge drops the header, as boto3 does for AWS)."""
    if vault:
        if kind == "429":
            return TransientError(f"Vault error while {op}: rate limited (injected)", retry_after=retry_after)
        return VaultUnavailableError(f"Vault unreachable while {op}: {'ReadTimeout' if kind == 'lost' else 'ConnectionError'} (injected)")
    if kind == "429":
        return TransientError(f"HTTP 429 while {op} (injected)", retry_after=retry_after)
    from rotator.testing.sim.service import ResponseLost

    if kind == "lost":
        return ResponseLost(f"no response while {op} (injected)")
    return TransientError(f"HTTP 503 while {op} (injected)")
