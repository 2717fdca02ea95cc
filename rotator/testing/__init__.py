"""Test helpers the project ships, for its own suite and for third-party
provider plugins: the provider conformance suite and a secret-leak scanner."""
