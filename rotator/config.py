"""Credential files: one YAML file per credential in the config directory.

Invariants:
- a file is either fully valid (a `CredentialSpec`) or reported as
  problems `FILE: field.path: message`; one bad file never hides the others;
- unknown keys, duplicate YAML keys, literal values that look like secrets,
  names and paths that would escape or break a Vault path are errors;
- two files that yield one `name`, or one live Vault path, are both errors;
- a file is read under rotator.yamlfile's limits (size, depth, no aliases,
  no symbolic link out of the directory) and checked against the API-host
  rule and the operator policy (rotator.policy);
- no message quotes a value from the file (it may hold a secret by
  mistake): a message names the field and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rotator import window as windows
from rotator.errors import ConfigProblem
from rotator.fields import (
    Duration,
    VaultMount,
    VaultPath,
    VaultRef,
    check_api_url,
    format_duration,
    secret_lookalike,
)
from rotator.policy import Refusal, TrustRules, check_credential
from rotator.provider import ProviderFactory, ProviderLoadError
from rotator.yamlfile import YamlRefusedError, load_yaml, safe_name

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Window(_Strict):
    """When rotations and revocations may start (rotator.window has the rules)."""

    days: list[Day] = Field(default_factory=lambda: list(windows.DAYS), min_length=1, description="weekdays, e.g. [mon, tue, wed]")
    hours: str = Field(default="00:00-24:00", description='local hours, e.g. "09:00-17:00" (an overnight span such as "22:00-04:00" belongs to its first day)')
    timezone: str = Field(default="UTC", description="IANA timezone of days and hours (and of cron), e.g. Europe/Berlin")

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        windows.parse_hours(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        windows.zone(value)
        return value

    @field_validator("days")
    @classmethod
    def _check_days(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a day twice")
        return value

    def is_open(self, at: datetime) -> bool:
        return windows.is_open(self._days(), windows.parse_hours(self.hours), windows.zone(self.timezone), at)

    def next_open(self, at: datetime) -> datetime | None:
        """The earliest moment at or after `at` inside the window (None: never)."""
        return windows.next_open(self._days(), windows.parse_hours(self.hours), windows.zone(self.timezone), at)

    def _days(self) -> frozenset[int]:
        return frozenset(windows.DAYS.index(d) for d in self.days)

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.hours} {self.timezone}"


class Schedule(_Strict):
    """When to rotate: exactly one of `every` or `cron` (5 fields, in the
    window's timezone, UTC without one), optionally within a window."""

    every: Duration | None = Field(default=None, description="rotation interval, e.g. 30d")
    cron: str | None = Field(default=None, description='5-field cron expression in UTC, e.g. "0 3 * * MON"')
    jitter: Duration = Field(default=timedelta(0), description="random delay added to each due time")
    window: Window | None = Field(default=None, description="rotations and revocations start only inside this window")

    @property
    def timezone(self) -> str:
        return self.window.timezone if self.window is not None else "UTC"

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from croniter import croniter  # loaded only for files that name a cron schedule

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError("is not a 5-field cron expression (minute hour day-of-month month day-of-week)")
        return value

    @field_validator("every")
    @classmethod
    def _check_every(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every or cron")
        return self

    def gaps(self) -> tuple[timedelta, timedelta]:
        """(shortest, longest) time between two rotations."""
        if self.every is not None:
            return self.every, self.every
        from croniter import croniter

        itr = croniter(self.cron, datetime(2026, 1, 1, tzinfo=UTC).astimezone(windows.zone(self.timezone)))
        times = [itr.get_next(datetime) for _ in range(400)]
        deltas = [b - a for a, b in zip(times, times[1:], strict=False)]
        return min(deltas), max(deltas)

    def describe(self) -> str:
        text = f"every {format_duration(self.every)}" if self.every is not None else f"cron {self.cron}"
        if self.cron is not None and self.timezone != "UTC":
            text += f" {self.timezone}"
        text += f" (+ up to {format_duration(self.jitter)} jitter)" if self.jitter else ""
        return text + (f" within {self.window.describe()}" if self.window is not None else "")


class Revocation(_Strict):
    """What to do when a superseded credential is still in use (contract §6.10)."""

    when_in_use: Literal["wait", "revoke"] = Field(default="wait", description="wait: hold the revocation while the key is in use; revoke: revoke at the end of grace anyway")
    quiet: Duration = Field(default=timedelta(hours=1), description="a key used within this long (after its successor went live) is in use")
    max_wait: Duration = Field(default=timedelta(days=7), description="after this long past the end of grace, revoke anyway (logged at error level, alerted)")

    @field_validator("quiet", "max_wait")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


def notify_url_rule(text: str) -> str:
    """The shape of a notify URL: https://, or http:// on a loopback host; any
    host (no allowlist). ROTATOR_ALLOW_LOOPBACK_HTTP and the policy file's
    `urls` are checked with the other trust rules (rotator.policy)."""
    return check_api_url(text)


class NotifyTarget(_Strict):
    """A consumer told of each promotion (rotator.notify)."""

    webhook: str = Field(description="URL the notice is POSTed to (https://, or http:// on loopback)")
    signing_key: VaultRef = Field(description="Vault ref of the HMAC-SHA256 key; the hex signature of the body goes in X-Rotator-Signature")

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, value: str) -> str:
        return notify_url_rule(value)


class VaultTarget(_Strict):
    """Where consumers read the live credential (KV v2)."""

    mount: VaultMount = Field(default="secret", description="KV v2 mount")
    path: VaultPath = Field(description="path of the live credential within the mount")


class CredentialSpec(_Strict):
    """One credential file."""

    name: str = Field(pattern=NAME_PATTERN, description="defaults to the file stem")
    provider: str = Field(description="provider kind, e.g. aws.iam_access_key")
    owner: str = Field(min_length=1, max_length=200, description="who answers for this credential")
    description: str = Field(default="", max_length=1000)
    schedule: Schedule
    grace: Duration = Field(description="how long the previous credential stays valid after the new one is live")
    vault: VaultTarget
    params: dict[str, Any] = Field(default_factory=dict, description="validated by the provider")
    # Compliance (docs/COMPLIANCE.md): off unless unused_after is set.
    unused_after: Duration | None = Field(
        default=None, description="report a key the rotator made as unused (credential.unused) when not used for this long"
    )
    on_unused: Literal["report", "disable"] = Field(
        default="report",
        description="report: only report unused keys; disable: also revoke unused orphaned keys of this credential "
        "(never the live key, never a key within its grace)",
    )


    revocation: Revocation | None = Field(
        default=None, description="usage-aware revocation: hold a superseded key's revocation while it is in use (unset: the defaults)"
    )

    notify: list[NotifyTarget] = Field(default_factory=list, max_length=20, description="webhooks told of each promotion (rotator.notify)")

    # Set by the loader, not read from the file.
    source: str = Field(default="", exclude=True)

    @field_validator("unused_after")
    @classmethod
    def _check_unused_after(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @field_validator("on_unused")
    @classmethod
    def _check_on_unused(cls, value: str, info: ValidationInfo) -> str:
        if value == "disable" and info.data.get("unused_after") is None:
            raise ValueError("disable needs unused_after (how long a key must go unused)")
        return value

    def fingerprint(self) -> str:
        """A stable digest of the file's meaning (changes when the file does)."""
        data = self.model_dump(mode="json")
        # Fields added later are left out at their defaults, so the
        # fingerprints of existing files stay what they were.
        defaults = (("unused_after", None), ("on_unused", "report"), ("notify", []),
                    ("revocation", None))
        for key, default in defaults:
            if data.get(key) == default:
                data.pop(key, None)
        if data["schedule"].get("window") is None:
            data["schedule"].pop("window", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class LoadedCredential:
    spec: CredentialSpec
    provider_cls: ProviderFactory
    params: BaseModel
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.fingerprint = self.spec.fingerprint()  # computed once: 10,000 files ask often


@dataclass
class LoadResult:
    credentials: dict[str, LoadedCredential] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)
    # Files that failed, so a reload can keep their last good version.
    failed_files: set[str] = field(default_factory=set)
    # Files that loaded but deserve the operator's eye (group-writable).
    warnings: list[ConfigProblem] = field(default_factory=list)


def credential_files(config_dir: Path) -> list[Path]:
    # Symbolic links are listed too (even broken ones), so the loader can
    # say why it refuses one instead of skipping it without a word.
    return sorted(
        p for p in config_dir.iterdir()
        if (p.is_file() or p.is_symlink()) and p.suffix in {".yaml", ".yml"} and not p.name.startswith(".")
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


def _scan_for_secrets(value: Any, path: str, file: str) -> list[ConfigProblem]:
    if isinstance(value, dict):
        problems = []
        for k, v in value.items():
            key = safe_name(k) or "?"
            if isinstance(k, str) and (what := secret_lookalike(k)):
                problems.append(ConfigProblem(file, path or "<file>", f"a key looks like {what}: {_SECRET_ADVICE}"))
            problems += _scan_for_secrets(v, f"{path}.{key}" if path else key, file)
        return problems
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _scan_for_secrets(v, f"{path}.{i}", file)]
    if isinstance(value, str) and (what := secret_lookalike(value)):
        return [ConfigProblem(file, path, f"looks like {what}: {_SECRET_ADVICE}")]
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

    problems = _scan_for_secrets(raw, "", file)
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
                   rules: TrustRules | None = None) -> LoadResult:
    """Load every credential file; collect every problem; skip only bad files."""
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

