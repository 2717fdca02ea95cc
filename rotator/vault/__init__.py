"""The Vault edge, the only code that talks to Vault (hvac): the KV store
(store), login and token renewal (auth), read-your-writes sessions
(session), Vault's errors as the project's (errors), the live credential
path (livepath), state records (records) and the change feed (changes)."""
