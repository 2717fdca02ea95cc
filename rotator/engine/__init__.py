"""The engine carries the state machine's actions out against Vault and a
provider: one reconcile (reconcile, run) in steps (issue, promote, retire)
with its lease and record writes (persistence); retries within a step
(retry), provider discovery (registry), and the operations built on it
(mass rotation, leak response, adoption, consumer notices)."""
