"""Credential files: one YAML file per credential in the config directory.

Invariants:
- a file is either fully valid (a `CredentialSpec`) or reported as
  problems `FILE: field.path: message`; one bad file never hides the others;
- unknown keys, duplicate YAML keys, literal values that look like secrets,
  names and paths that would escape or break a Vault path are errors;
- two files that yield one `name`, or one live Vault path, are both errors;
- a file is read under rotator.config.yamlfile's limits (size, depth, no aliases,
  no symbolic link out of the directory) and checked against the API-host
  rule and the operator policy (rotator.config.policy);
- no message quotes a value from the file (it may hold a secret by
  mistake): a message names the field and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from rotator.config.policy import Refusal, TrustRules, check_credential
from rotator.config.spec import CredentialSpec, LoadedCredential, LoadResult
from rotator.config.yamlfile import YamlRefusedError, load_yaml, safe_name
from rotator.core.errors import ConfigProblem
from rotator.core.provider import ProviderFactory, ProviderLoadError
from rotator.core.validators import format_duration, secret_lookalike


def credential_files(config_dir: Path) -> list[Path]:
    # Symbolic links are listed too (even broken ones), so the loader can
    # say why it refuses one instead of skipping it without a word.
    return sorted(
        (p for p in config_dir.iterdir()
         if (p.is_file() or p.is_symlink()) and p.suffix in {".yaml", ".yml"} and not p.name.startswith(".")),
        key=lambda p: p.name,  # one directory: by name, as Path's own order, at a fraction of its cost
    )


def _loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    # Keys come from the file: one that is not shaped like a field name is
    # not printed (a secret pasted as a key).
    parts = [prefix] if prefix else []
    parts += [str(p) if isinstance(p, int) else (safe_name(p) or "?") for p in loc]
    return ".".join(parts)


def _strings(value: Any) -> list[str]:
    """Every string in a parsed YAML value, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def unquote_values(message: str, values: list[str]) -> str:
    """`message` with any of `values` (taken from the file) cut out: a safety
    net under validators, a provider's included, that quote their input."""
    for value in sorted(set(values), key=len, reverse=True):
        if not value:
            continue
        message = message.replace(repr(value), "the value")
        if len(value) >= 6:
            message = message.replace(value, "the value")
    return message


def _problems_from(exc: ValidationError, file: str, prefix: str = "") -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = unquote_values(err["msg"].removeprefix("Value error, "), _strings(err.get("input")))
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        out.append(ConfigProblem(file, _loc(loc, prefix), message))
    return out


_SECRET_ADVICE = "never put a secret in a credential file; store it in Vault and reference it as MOUNT/PATH#FIELD"


def _path_of(steps: tuple[str | int | None, ...]) -> str:
    """A field path for a message, from its steps (a key; a list index; None:
    a key that is not a string): `params.keys.0`. A key not shaped like a
    field name is `?` (it may be a pasted secret)."""
    path = ""
    for step in steps:
        if type(step) is int:
            path = f"{path}.{step}"
        else:
            key = (safe_name(step) if step is not None else None) or "?"
            path = f"{path}.{key}" if path else key
    return path


def _scan_for_secrets(value: Any, steps: tuple[str | int | None, ...], file: str) -> list[ConfigProblem]:
    """Every key and string value that looks like a secret; the path is
    spelled out only for a problem (10,000 files have many keys)."""
    problems: list[ConfigProblem] = []
    if isinstance(value, dict):
        for k, v in value.items():
            step = k if isinstance(k, str) else None
            if step is not None and (what := secret_lookalike(k)):
                problems.append(ConfigProblem(file, _path_of(steps) or "<file>", f"a key looks like {what}: {_SECRET_ADVICE}"))
            if isinstance(v, str):
                if what := secret_lookalike(v):
                    problems.append(ConfigProblem(file, _path_of((*steps, step)), f"looks like {what}: {_SECRET_ADVICE}"))
            elif isinstance(v, dict | list):
                problems += _scan_for_secrets(v, (*steps, step), file)
        return problems
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _scan_for_secrets(v, (*steps, i), file)]
    if isinstance(value, str) and (what := secret_lookalike(value)):
        return [ConfigProblem(file, _path_of(steps), f"looks like {what}: {_SECRET_ADVICE}")]
    return []


def load_file(path: Path, providers: Mapping[str, ProviderFactory], *, state_location: tuple[str, ...] | None = None,
              rules: TrustRules | None = None, root: Path | None = None,
              warnings: list[ConfigProblem] | None = None) -> LoadedCredential | list[ConfigProblem]:
    """Parse and validate one credential file. `rules`: the API-host rule and
    the operator policy (default: the contract's default hosts, no policy);
    `root`: the directory a symbolic link must stay in (default: the file's)."""
    file = str(path)
    try:
        document = load_yaml(path, root=root if root is not None else path.parent)
    except YamlRefusedError as exc:
        return [ConfigProblem(file, "", str(exc))]
    if warnings is not None:
        warnings.extend(ConfigProblem(file, "", w) for w in document.warnings)
    raw = document.data
    if not isinstance(raw, dict):
        return [ConfigProblem(file, "", "must be a YAML mapping of keys such as provider, schedule, grace, vault, params")]

    problems = _scan_for_secrets(raw, (), file)
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    try:
        spec = CredentialSpec.model_validate({**raw, "source": file})
    except ValidationError as exc:
        return problems + _problems_from(exc, file)

    problems += _schedule_problems(spec, file, state_location)
    if spec.provider not in providers:
        known = ", ".join(sorted(providers)) or "none installed"
        return problems + [ConfigProblem(file, "provider", f"unknown provider (known: {known})")]
    try:
        provider_cls = providers[spec.provider]
    except ProviderLoadError as exc:
        return problems + [ConfigProblem(file, "provider", f"the {spec.provider} plugin failed to load: {exc}")]
    try:
        params = provider_cls.params_model.model_validate(spec.params)
    except ValidationError as exc:
        return problems + _problems_from(exc, file, "params")
    field_name = "schedule.every" if spec.schedule.every is not None else "schedule.cron"
    values = _strings(spec.params)
    for fld, message in provider_cls.check_policy(params, interval=spec.schedule.gaps()[1], grace=spec.grace):
        problems.append(ConfigProblem(file, fld or field_name, unquote_values(message, values)))
    problems += check_credential(spec, params, provider_cls, rules or TrustRules())
    if problems:
        return problems
    return LoadedCredential(spec, provider_cls, params)


def _schedule_problems(spec: CredentialSpec, file: str, state_location: tuple[str, ...] | None) -> list[ConfigProblem]:
    problems = []
    shortest, _ = spec.schedule.gaps()
    if spec.grace >= shortest:
        problems.append(ConfigProblem(file, "grace", f"{format_duration(spec.grace)} must be shorter than the rotation interval ({format_duration(shortest)})"))
    if spec.schedule.jitter >= shortest:
        problems.append(ConfigProblem(file, "schedule.jitter", f"must be shorter than the rotation interval ({format_duration(shortest)})"))
    if state_location is not None:
        # (mount, the state prefix, then other prefixes of the rotator's own: the stash)
        mount, *prefixes = state_location
        for prefix, what in zip(prefixes, ("state records", "stash"), strict=False):
            if spec.vault.mount == mount and (spec.vault.path == prefix or spec.vault.path.startswith(prefix + "/")):
                problems.append(ConfigProblem(file, "vault.path", f"lies inside the rotator's {what} ({mount}/{prefix})"))
    return problems


def load_directory(config_dir: Path, providers: Mapping[str, ProviderFactory], *, state_location: tuple[str, ...] | None = None,
                   rules: TrustRules | None = None, on_loaded: Callable[[LoadedCredential], None] | None = None) -> LoadResult:
    """Load every credential file; collect every problem; skip only bad files.
    `on_loaded`: called with each valid file as soon as it is read, before
    names and paths are compared across files (a clash drops it later)."""
    result = LoadResult()
    if not config_dir.is_dir():
        result.problems.append(ConfigProblem(str(config_dir), "", "config directory does not exist"))
        return result
    by_name: dict[str, list[LoadedCredential]] = {}
    by_path: dict[tuple[str, str], list[LoadedCredential]] = {}
    for path in credential_files(config_dir):
        loaded = load_file(path, providers, state_location=state_location, rules=rules, root=config_dir, warnings=result.warnings)
        if isinstance(loaded, list):
            result.problems.extend(loaded)
            if not any(isinstance(p, Refusal) for p in loaded):  # a refused file is dropped, never kept as last good
                result.failed_files.add(str(path))
            continue
        if on_loaded is not None:
            on_loaded(loaded)
        by_name.setdefault(loaded.spec.name, []).append(loaded)
        by_path.setdefault((loaded.spec.vault.mount, loaded.spec.vault.path), []).append(loaded)

    clashing: set[str] = set()
    for name, group in by_name.items():
        if len(group) > 1:
            files = ", ".join(c.spec.source for c in group)
            for cred in group:
                result.problems.append(ConfigProblem(cred.spec.source, "name", f"{name!r} is also the name in {files}"))
                clashing.add(cred.spec.source)
    for (mount, vpath), group in by_path.items():
        if len(group) > 1:
            files = ", ".join(c.spec.source for c in group)
            for cred in group:
                result.problems.append(ConfigProblem(cred.spec.source, "vault.path", f"{mount}/{vpath} is also written by {files}"))
                clashing.add(cred.spec.source)
    for name, group in by_name.items():
        for cred in group:
            if cred.spec.source in clashing:
                result.failed_files.add(cred.spec.source)
            else:
                result.credentials[name] = cred
    return result


def json_schema(providers: Mapping[str, ProviderFactory]) -> dict[str, Any]:
    """The JSON Schema of credential files, with each provider's params."""
    schema = CredentialSpec.model_json_schema(mode="validation")
    schema["properties"].pop("source", None)
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema["properties"]["provider"]["enum"] = sorted(providers)
    variants = []
    for kind in sorted(providers):
        try:
            cls = providers[kind]
        except ProviderLoadError:
            continue  # `rotator validate` reports it
        params_schema = cls.params_model.model_json_schema(mode="validation")
        defs = params_schema.pop("$defs", {})
        schema.setdefault("$defs", {}).update(defs)
        variants.append(
            {
                "if": {"properties": {"provider": {"const": kind}}, "required": ["provider"]},
                "then": {"properties": {"params": params_schema}},
            }
        )
    schema["allOf"] = variants
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rotator credential file"
    return schema
