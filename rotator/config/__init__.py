"""Configuration: credential files (spec, loader), process settings
(settings), the trust policy (policy) and the hardened YAML reader
(yamlfile). Reads files and the environment; never Vault."""
