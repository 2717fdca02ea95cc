"""The audit trail: structured events and their redaction (events), the
hash chain's format (chain), the writer (writer), verification (verify),
recovery (seal) and anchors in Vault (anchor). docs/AUDIT.md explains it."""
