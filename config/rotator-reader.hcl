# Reader policy for people and tools that run `rotator status`, `plan` and
# `report` (KV v2 mount "secret"): they read the state records and nothing
# else. No live credential (secret/data/apps/...), no stash of minted
# secrets (ROTATOR_STASH_PREFIX, default rotator/state-stash), no management
# secret (rotator/refs).
#   bao policy write rotator-reader config/rotator-reader.hcl
# Adjust "secret/" and "rotator/state" to ROTATOR_STATE_MOUNT/PREFIX. Keep
# the stash OUTSIDE the state prefix: a glob such as "rotator/state*" would
# match "rotator/state-stash/" too.
#
# With this policy `report` cannot read a GitHub App key or a Stripe
# management key, so it cannot list those providers' keys: its keys column
# says the reference was denied. AWS keys are listed with the reader's own
# AWS identity (the IAM read actions of config/iam-policy.json).

# The state records (no secret value: see docs/STATE.md), the audit anchor
# and the change feed under the same prefix, and their listing.
path "secret/data/rotator/state/*" {
  capabilities = ["read"]
}
path "secret/metadata/rotator/state/*" {
  capabilities = ["read", "list"]
}

# The token's own health.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Signed audit anchors (ROTATOR_AUDIT_TRANSIT_KEY=transit/rotator-audit;
# docs/AUDIT.md section 9): `rotator audit verify FILE --anchor` checks the
# signature through Transit, `rotator audit public-key` exports the public
# key. Neither can sign. Remove this block if anchors are not signed.
path "transit/verify/rotator-audit" {
  capabilities = ["update"]
}
path "transit/keys/rotator-audit" {
  capabilities = ["read"]
}
