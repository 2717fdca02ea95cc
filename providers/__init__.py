"""The built-in provider plugins. Each registers under the `rotator.providers`
entry-point group in pyproject.toml, exactly as a third-party plugin would."""
