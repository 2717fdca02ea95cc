"""rotator: keeps third-party credentials short-lived.

Layers (checked by tests/test_layers.py): `providers` and the core's pure
modules (`machine`, `schedule`, `fields`, `clock`) know nothing of Vault;
`vault` is the only module that imports hvac; `engine` carries out the
machine's actions; `cli` and `daemon` wire everything together.
"""

__version__ = "0.1.0"
