"""The pure core: the rotation state machine (machine, actions), the state
record (state), when rotations are due (timetable, window, schedule), the
provider interface (provider), and the values every layer shares (clock,
errors, validators, redaction). Nothing here talks to Vault, a provider's
API or the network, and nothing logs: import-linter's contracts
(pyproject.toml, docs/ARCHITECTURE.md) keep it so."""
