# Least-privilege Vault/OpenBao policy for the rotator (KV v2 mount "secret").
#   bao policy write rotator config/rotator.hcl     (or: vault policy write ...)
# Adjust "secret/" and the paths below to ROTATOR_STATE_MOUNT/PREFIX and to
# the vault.mount/vault.path of your credential files. Nothing here allows
# deleting or destroying a version, or any sys/ call, except destroying the
# rotator's own stash entries once their credential is revoked.

# Rotation state records (ROTATOR_STATE_PREFIX=rotator/state): check-and-set
# writes, reads, and listing them for status, report and recovery. These
# records also carry the replicas' check-and-set leases, and, under
# rotator/state/_audit/, the audit chain's anchors (ROTATOR_AUDIT_ANCHOR's
# default; docs/AUDIT.md section 8). Grant nobody delete or destroy there.
path "secret/data/rotator/state/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/rotator/state/*" {
  capabilities = ["read", "list"]
}
# Undoing a `bao kv delete` of a state record (the rotator never deletes
# one): only the record knows what a rotation in flight minted
# (docs/STATE.md). This restores a version; it cannot delete one.
path "secret/undelete/rotator/state/*" {
  capabilities = ["update"]
}

# The stash (ROTATOR_STASH_PREFIX, default rotator/state-stash): one entry
# per issued credential holding what recovery and revocation need (its live
# fields, a token that revokes itself). Written once (check-and-set create),
# read back after a crash or to revoke, destroyed once the credential is
# revoked. The reader policy (config/rotator-reader.hcl) has none of this.
path "secret/data/rotator/state-stash/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/rotator/state-stash/*" {
  capabilities = ["read", "delete"]
}

# Live credentials. EXAMPLE: narrow "apps/*" to the vault.path values of your
# credential files. Each rotation adds one version (check-and-set) and merges
# the rotator's keys into custom_metadata with a JSON merge PATCH, which needs
# "patch" on the metadata path; it never rewrites max_versions,
# cas_required or delete_version_after, so it has no "update" there.
path "secret/data/apps/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/apps/*" {
  capabilities = ["read", "patch"]
}

# Management secrets that credential files reference as MOUNT/PATH#FIELD
# (a GitHub App private key, a Stripe management key): read only. Metadata
# read lets a missing reference be reported as missing rather than denied.
path "secret/data/rotator/refs/*" {
  capabilities = ["read"]
}
path "secret/metadata/rotator/refs/*" {
  capabilities = ["read"]
}

# The token's own health (/readyz) and renewal.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Signed audit anchors (ROTATOR_AUDIT_TRANSIT_KEY=transit/rotator-audit, an
# ed25519 key; docs/AUDIT.md section 9). Only the rotator may sign; auditors
# get transit/verify/rotator-audit ("update") and transit/keys/rotator-audit
# ("read") instead. Remove this block if anchors are not signed.
path "transit/sign/rotator-audit" {
  capabilities = ["update"]
}
