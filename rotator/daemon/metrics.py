"""The daemon's Prometheus metrics (contract §8), with prometheus-client.

The daemon sets them (rotator.daemon.loop); rotator.daemon.endpoints serves them with
`/healthz` and `/readyz`. This module knows neither. Metrics never carry
secret values: labels are credential names and provider kinds only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
ROTATIONS = Counter("rotator_rotations_total", "Rotations by outcome", ["credential", "provider", "outcome"], registry=REGISTRY)
DURATION = Histogram("rotator_rotation_duration_seconds", "Duration of completed rotations", ["provider"], registry=REGISTRY,
                     buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
AGE = Gauge("rotator_credential_age_seconds", "Age of the live credential", ["credential", "provider"], registry=REGISTRY)
NEXT = Gauge("rotator_next_rotation_timestamp_seconds", "When the next rotation is due (Unix time)", ["credential", "provider"], registry=REGISTRY)
PENDING = Gauge("rotator_pending_revocations", "Superseded credentials not yet revoked", ["credential", "provider"], registry=REGISTRY)
HELD = Gauge("rotator_revocations_held", "Superseded credentials whose revocation is held because they are still in use",
             ["credential", "provider"], registry=REGISTRY)
OVERDUE = Gauge("rotator_overdue_credentials", "Credentials past their due time by more than a tick", registry=REGISTRY)
DEGRADED = Gauge("rotator_degraded", "1 while any credential or file is failing", registry=REGISTRY)
LAST_TICK = Gauge("rotator_last_tick_timestamp_seconds", "When the daemon loop last ticked (Unix time; NaN before the first tick)",
                  registry=REGISTRY)
TOKEN_EXPIRY = Gauge("rotator_vault_token_expiry_timestamp_seconds",
                     "When the daemon's Vault token expires (Unix time; +Inf: it never expires; NaN: not known yet)", registry=REGISTRY)
