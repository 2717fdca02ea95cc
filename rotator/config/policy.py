"""What a credential file may make the rotator do (contract §3, §4, §10).

Whoever writes a credential file borrows the rotator's powers: its GitHub
App key, its Stripe management keys, its IAM rights, its Vault token. The
operator bounds them here:

- API hosts (always): an `api_url` / `api_base` must be `https://` on a host
  in `ROTATOR_ALLOWED_API_HOSTS`; with `ROTATOR_ALLOW_LOOPBACK_HTTP`, a
  loopback host (localhost, 127.0.0.0/8, ::1) is allowed too, over http or
  https. Other URLs a file names (a Stripe webhook endpoint, notify targets)
  may name any host, but must be `https://` (loopback `http://` only with
  the flag).
- The operator policy (`ROTATOR_POLICY_FILE`, optional): per owner, globs
  for the live paths, Vault refs, AWS users, GitHub repositories and
  installations, Stripe accounts and URLs that owner's files may name. An
  owner not listed, or a kind of entry an owner lacks, allows nothing.

What a file names is found without trusting the provider to say so for
the dangerous kinds: every param typed `ApiUrl` or `VaultRef` (rotator.core.validators)
is checked whether the provider declares it or not. Provider-specific
scopes (users, repositories, accounts, URLs) are declared on the provider
class as `scope_params`.

Globs are shell-style (`fnmatch`, case-sensitive): `*` matches any run of
characters including `/`, `?` one character, `[...]` a set. A URL glob is
matched part by part: scheme and port exactly, host (lower case) and path
each by glob, so `https://*.example.com/*` cannot match a host that only
ends in `.example.com` after a `/`.

Messages never quote a value from a credential file except a host name
(public by nature, and what the operator must see to decide) and an owner
the policy itself lists.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from rotator.config.yamlfile import YamlRefusedError, load_yaml, safe_name
from rotator.core.errors import ConfigError, ConfigProblem
from rotator.core.validators import check_api_url, check_vault_ref, secret_lookalike

if TYPE_CHECKING:
    from rotator.config.spec import CredentialSpec
    from rotator.core.provider import ProviderFactory

DEFAULT_API_HOSTS = "api.github.com,api.stripe.com"
KINDS = ("vault_paths", "refs", "aws_users", "github_repositories", "github_installations", "stripe_accounts", "urls")
# A provider may also declare this kind: repository names without their
# owner (an installation token's `repositories`; the installation fixes the
# owner). Each is matched against the name part of `github_repositories`.
REPOSITORY_NAMES = "github_repository_names"
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def parse_hosts(text: str) -> frozenset[str]:
    """`ROTATOR_ALLOWED_API_HOSTS`: comma-separated host names, any case."""
    hosts = frozenset(h.strip().lower() for h in text.split(",") if h.strip())
    bad = [h for h in hosts if not _HOST.match(h)]
    if bad:
        raise ValueError("each entry must be a host name such as api.github.com or github.example.com (no scheme, port or path)")
    return hosts


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _printable_host(host: str) -> str:
    return host if _HOST.match(host) and len(host) <= 253 and secret_lookalike(host) is None else "(not shown: not a plain host name)"


class Refusal(ConfigProblem):
    """A file that oversteps the API-host rule or the policy. Unlike a broken
    file, its last good version is not kept on reload: the operator may
    have just narrowed the policy."""

    __slots__ = ()


@dataclass(frozen=True)
class ApiHostRule:
    """Contract §3: where API URLs may point."""

    allowed_hosts: frozenset[str] = field(default_factory=lambda: parse_hosts(DEFAULT_API_HOSTS))
    allow_loopback_http: bool = False

    def api_url_problem(self, url: str) -> str | None:
        """Why `url` may not be an API base URL (None: it may)."""
        host, problem = self._host_and_scheme_problem(url)
        if problem or host is None:
            return problem
        if is_loopback(host) and self.allow_loopback_http:
            return None
        if host not in self.allowed_hosts:
            return f"host {_printable_host(host)} is not in ROTATOR_ALLOWED_API_HOSTS"
        return None

    def url_problem(self, url: str) -> str | None:
        """Why `url` may not be a webhook or notify target: any host, https only."""
        return self._host_and_scheme_problem(url)[1]

    def _host_and_scheme_problem(self, url: str) -> tuple[str | None, str | None]:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            return None, "is not a URL such as https://api.example.com"
        if parts.username is not None or parts.password is not None:
            return None, "must not hold user info (user:password@)"
        if not host or not (_HOST.match(host) or _is_ip(host)):
            return None, "has no plain host name"
        if parts.scheme == "https":
            return host, None
        if parts.scheme == "http" and is_loopback(host):
            if self.allow_loopback_http:
                return host, None
            return host, "plain http:// needs ROTATOR_ALLOW_LOOPBACK_HTTP (local sandboxes and tests); use https://"
        return host, "must use https://"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# -- the operator policy file ----------------------------------------------------------------


def _glob(text: str) -> str:
    if not text or len(text) > 500 or any(c.isspace() for c in text):
        raise ValueError("a glob is 1-500 characters without spaces")
    return text


def _url_glob(text: str) -> str:
    _glob(text)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        raise ValueError("a URL glob is https://HOST-GLOB/PATH-GLOB (e.g. https://hooks.example.com/*)")
    return text


_Glob = Annotated[str, AfterValidator(_glob)]
_UrlGlob = Annotated[str, AfterValidator(_url_glob)]


class OwnerRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vault_paths: tuple[_Glob, ...] = Field(default=(), description="live paths, MOUNT/PATH globs")
    refs: tuple[_Glob, ...] = Field(default=(), description="Vault refs the files may read, MOUNT/PATH#FIELD globs")
    aws_users: tuple[_Glob, ...] = Field(default=(), description="IAM user names")
    github_repositories: tuple[_Glob, ...] = Field(default=(), description="OWNER/NAME globs")
    github_installations: tuple[_Glob, ...] = Field(default=(), description="installation ids")
    stripe_accounts: tuple[_Glob, ...] = Field(default=(), description="acct_… ids")
    urls: tuple[_UrlGlob, ...] = Field(default=(), description="webhook endpoint and notify URLs")


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    owners: dict[str, OwnerRules | None] = Field(description="owner name -> what that owner's files may name")


@dataclass(frozen=True)
class OperatorPolicy:
    source: str
    owners: Mapping[str, OwnerRules]


def load_policy(path: Path) -> OperatorPolicy:
    """Read the policy file; a bad one raises `ConfigError` naming its problems."""
    file = str(path)
    try:
        document = load_yaml(path, root=path.parent)
    except YamlRefusedError as exc:
        raise ConfigError([ConfigProblem(file, "", str(exc))]) from None
    if not isinstance(document.data, dict):
        raise ConfigError([ConfigProblem(file, "", "must be a YAML mapping with one key, owners")])
    try:
        parsed = PolicyDocument.model_validate(document.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) if isinstance(p, int) else (safe_name(p) or "?") for p in err["loc"])
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(file, loc, message))
        raise ConfigError(problems) from None
    return OperatorPolicy(file, {name: rules or OwnerRules() for name, rules in parsed.owners.items()})


_last_good: dict[str, OperatorPolicy] = {}
_last_good_lock = threading.Lock()


def read_policy(path: Path | None, *, keep_last_good: bool = False) -> tuple[OperatorPolicy | None, list[ConfigProblem]]:
    """The policy at `path` (None: no policy). A broken file raises
    `ConfigError`, unless `keep_last_good` (a daemon's reload) and this
    process read a good version before: then that version, and the problems."""
    if path is None:
        return None, []
    key = str(path)
    try:
        policy = load_policy(path)
    except ConfigError as exc:
        with _last_good_lock:
            previous = _last_good.get(key)
        if keep_last_good and previous is not None:
            return previous, [*exc.problems, ConfigProblem(key, "", "the last good version of the policy file stays in force")]
        raise
    with _last_good_lock:
        _last_good[key] = policy
    return policy, []


@dataclass(frozen=True)
class TrustRules:
    """Everything that bounds credential files: API hosts and the policy."""

    hosts: ApiHostRule = field(default_factory=ApiHostRule)
    policy: OperatorPolicy | None = None


# -- checking one credential ---------------------------------------------------------------


def _field_kind(info: Any) -> str | None:
    """`api_url` or `refs` for a param typed ApiUrl or VaultRef (also inside a list or optional)."""
    def walk(annotation: Any, metadata: list[Any]) -> Iterator[Any]:
        yield from metadata
        for arg in typing.get_args(annotation):
            yield from getattr(arg, "__metadata__", ())
            yield from walk(arg, [])

    for item in walk(info.annotation, list(info.metadata)):
        func = getattr(item, "func", None)
        if func is check_api_url:
            return "api_url"
        if func is check_vault_ref:
            return "refs"
    return None


@functools.cache
def _field_kinds(model: type[BaseModel]) -> dict[str, str | None]:
    """`_field_kind` of each field of a params model (a class's fields do not change)."""
    return {name: _field_kind(info) for name, info in model.model_fields.items()}


def named_values(params: BaseModel, provider_cls: ProviderFactory) -> Iterator[tuple[str, str, str]]:
    """(kind, field path, value) for everything a credential's params name."""
    declared = dict(getattr(provider_cls, "scope_params", {}))
    for name, field_kind in _field_kinds(type(params)).items():
        kind = field_kind or declared.get(name)
        if kind is None:
            continue
        value = getattr(params, name, None)
        if value is None:
            if kind == REPOSITORY_NAMES:  # no list: a token for every repository of the installation
                yield kind, f"params.{name}", "*"
            continue
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                yield kind, f"params.{name}.{index}", str(item)
        else:
            yield kind, f"params.{name}", str(value)


def _url_matches(url: str, pattern: str) -> bool:
    value, glob = urlsplit(url), urlsplit(pattern)
    if value.scheme != glob.scheme or value.port != glob.port:
        return False
    if not fnmatchcase((value.hostname or "").lower(), (glob.hostname or "").lower()):
        return False
    path = (value.path or "/") + (f"?{value.query}" if value.query else "")
    glob_path = (glob.path or "/") + (f"?{glob.query}" if glob.query else "")
    return fnmatchcase(path, glob_path)


def is_allowed(rules: OwnerRules, kind: str, value: str) -> bool:
    if kind == "urls":
        return any(_url_matches(value, g) for g in rules.urls)
    if kind == REPOSITORY_NAMES:
        return any(fnmatchcase(value.lower(), g.partition("/")[2].lower()) for g in rules.github_repositories)
    if kind == "github_repositories":  # GitHub's names are case-insensitive
        return any(fnmatchcase(value.lower(), g.lower()) for g in rules.github_repositories)
    return any(fnmatchcase(value, g) for g in getattr(rules, kind))


def check_credential(spec: CredentialSpec, params: BaseModel, provider_cls: ProviderFactory, rules: TrustRules) -> list[Refusal]:
    """Every way this credential file oversteps the API-host rule or the policy."""
    file = spec.source
    problems: list[Refusal] = []
    named = list(named_values(params, provider_cls))
    for index, target in enumerate(getattr(spec, "notify", None) or ()):  # consumer notices (contract §4 notify)
        named += [("urls", f"notify.{index}.webhook", target.webhook), ("refs", f"notify.{index}.signing_key", target.signing_key)]
    for kind, path, value in named:
        if kind == "api_url" and (problem := rules.hosts.api_url_problem(value)):
            problems.append(Refusal(file, path, problem))
        elif kind == "urls" and (problem := rules.hosts.url_problem(value)):
            problems.append(Refusal(file, path, problem))
    policy = rules.policy
    if policy is None:
        return problems
    owner_rules = policy.owners.get(spec.owner)
    owner = spec.owner if owner_rules is not None else (safe_name(spec.owner) or "(not listed, name not shown)")
    refused = f"not allowed for owner {owner} by {policy.source}"
    if owner_rules is None:
        return [*problems, Refusal(file, "owner", refused)]
    if not is_allowed(owner_rules, "vault_paths", f"{spec.vault.mount}/{spec.vault.path}"):
        problems.append(Refusal(file, "vault.path", refused))
    for kind, path, value in named:
        if kind != "api_url" and not is_allowed(owner_rules, kind, value):
            problems.append(Refusal(file, path, refused))
    return problems
