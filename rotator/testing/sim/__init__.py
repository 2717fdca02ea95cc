"""A deterministic simulation of the whole rotation loop (issue 10).

The real state machine, engine and live-path logic run against an
in-memory KV v2 model (`kv`), in-memory providers with each built-in
provider's semantics (`providers`), and a true clock that only steps move;
faults are injected at every call boundary and between steps (`faults`);
contract §6's guarantees are checked after every step and at quiescence
(`invariants`); `explorer` makes seeded schedules, runs them, and shrinks a
failure to a replay that becomes a regression test.

    python -m rotator.testing.sim --schedules 100000

Third-party providers can run it too: give a `Kind` (a `Service` holding
the provider's world and a `Provider` subclass calling it through
`Service.call`) in `providers.KINDS`.
"""

from __future__ import annotations

from rotator.testing.sim.explorer import Schedule, generate, replay, run, shrink
from rotator.testing.sim.faults import ALL_FAULTS, CALL_FAULTS, STEP_FAULTS, CallFault, SimCrash
from rotator.testing.sim.sweep import sweep

__all__ = ["ALL_FAULTS", "CALL_FAULTS", "STEP_FAULTS", "CallFault", "Schedule", "SimCrash", "generate", "replay", "run", "shrink", "sweep"]
