"""Daemon settings from the environment (contract §3), via pydantic-settings.

Standard Vault variables (`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`,
`VAULT_CACERT`, `VAULT_SKIP_VERIFY`) are read as Vault's own tools read
them; the rotator's own settings start with `ROTATOR_`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rotator.config.policy import DEFAULT_API_HOSTS, ApiHostRule, is_loopback, parse_hosts
from rotator.core.validators import check_api_url, check_vault_path, check_vault_ref

if TYPE_CHECKING:  # hvac loads only for the commands that reach Vault (`validate` must be quick)
    from rotator.config.settings import VaultConnection

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str, name: str) -> bool:
    """Go's strconv.ParseBool, as Vault's tools read their variables; an
    empty value counts as unset (false)."""
    if text == "":
        return False
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"{name} must be one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False")


_REQUIRED_BY_AUTH_METHOD = {
    "approle": ("vault_role_id", "vault_secret_id_file"),
    "kubernetes": ("vault_k8s_role",),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROTATOR_", extra="ignore", populate_by_name=True)

    config_dir: Path = Field(default=Path("/etc/rotator/credentials.d"), description="directory of credential files")
    vault_auth: Literal["token", "approle", "kubernetes"] = Field(default="token", description="how to log in to Vault")
    vault_auth_mount: str | None = Field(default=None, description="mount path of the auth method (default: approle or kubernetes)")
    vault_role_id: str | None = Field(default=None, validate_default=True, repr=False, description="AppRole role id")
    vault_secret_id_file: str | None = Field(default=None, validate_default=True, description="file holding the AppRole secret id")
    vault_k8s_role: str | None = Field(default=None, validate_default=True, description="Vault role for Kubernetes auth")
    vault_k8s_token_file: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token", description="service-account token file"
    )
    state_mount: str = Field(default="secret", description="KV v2 mount of the state records")
    state_prefix: str = Field(default="rotator/state", description="path prefix of the state records")
    stash_prefix: str | None = Field(
        default=None, description="path prefix (under the state mount) of the stash of secrets the records name; default: STATE_PREFIX-stash"
    )
    tick_seconds: float = Field(default=10.0, gt=0, description="how often the daemon looks for due work")
    max_concurrency: int = Field(default=8, ge=1, le=256, description="rotations in flight at once")
    change_poll_seconds: float = Field(default=30.0, gt=0, description="how often the daemon reads the change feed to notice state changes made by others (rotator rotate, other replicas)")
    lease_seconds: float = Field(default=300.0, ge=10, description="how long a credential's lease lasts before another replica may take over")
    clock_skew_allowance_seconds: float = Field(default=120.0, ge=0, le=3600, description="how far the clocks of two hosts running the rotator may differ: a grace or a lease measured on another host's clock ends this much later")
    audit_file: Path | None = Field(default=None, description="also append hash-chained audit events to this file")
    audit_anchor: str | None = Field(default=None, description="KV v2 MOUNT/PREFIX where the audit chain's tip is anchored (default: STATE_MOUNT/STATE_PREFIX/_audit)")
    audit_transit_key: str | None = Field(default=None, description="Transit key (MOUNT/NAME, or NAME on mount transit) that signs each audit anchor (ed25519); docs/AUDIT.md")
    metrics_addr: str | None = Field(default=None, description="host:port for /metrics, /healthz, /readyz")
    # Leak reports from scanners (rotator.daemon.leak_webhook, docs/INCIDENTS.md).
    webhook_addr: str | None = Field(default=None, description="host:port of the listener for leak reports (POST /webhooks/leak)")
    leak_webhook_secret: str | None = Field(default=None, validate_default=True,
                                            description="Vault ref (MOUNT/PATH#FIELD) of the HMAC-SHA256 secret that signs leak reports; required with ROTATOR_WEBHOOK_ADDR")
    log_format: Literal["json", "console"] | None = Field(default=None, description="json or console (default: console on a TTY, else json)")
    # Compliance and alerts (docs/COMPLIANCE.md). Webhook URLs can carry a
    # token in their path (Slack's do), so they are never printed.
    compliance_scan_seconds: float = Field(default=3600.0, gt=0, description="how often each credential is scanned for unused, unmanaged and overdue keys")
    alert_webhook_url: str | None = Field(default=None, repr=False, description="POST each alert as JSON to this URL (https, or http on loopback)")
    alert_slack_webhook_url: str | None = Field(default=None, repr=False, description="Slack incoming-webhook URL for alerts")
    alert_dedup_seconds: float = Field(default=3600.0, ge=0, description="an alert for the same event, credential and key is sent once per this window")
    # What credential files may make the rotator do (rotator.config.policy, docs/POLICY.md).
    allowed_api_hosts: str = Field(default=DEFAULT_API_HOSTS, description="the only hosts an api_url / api_base may name (comma-separated)")
    allow_loopback_http: bool = Field(default=False, description="allow loopback API hosts, over http:// too (sandboxes, tests, the demo)")
    policy_file: Path | None = Field(default=None, description="the operator policy: which owners may name which paths, refs and provider scopes")

    vault_addr: str = Field(default="http://127.0.0.1:8200", validation_alias=AliasChoices("VAULT_ADDR"))
    vault_token: str | None = Field(default=None, validation_alias=AliasChoices("VAULT_TOKEN"), repr=False)
    vault_namespace: str | None = Field(default=None, validation_alias=AliasChoices("VAULT_NAMESPACE"))
    vault_cacert: str | None = Field(default=None, validation_alias=AliasChoices("VAULT_CACERT"))
    vault_skip_verify: bool = Field(default=False, validation_alias=AliasChoices("VAULT_SKIP_VERIFY"))

    @field_validator("state_mount", "state_prefix")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        return check_vault_path(value)

    @field_validator("audit_anchor", "audit_transit_key")
    @classmethod
    def _audit_vault_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            return None
        path = check_vault_path(value.strip().strip("/"))
        if info.field_name == "audit_anchor" and "/" not in path:
            raise ValueError("must be MOUNT/PREFIX (a KV v2 mount, then a path prefix)")
        return path

    @field_validator("stash_prefix")
    @classmethod
    def _safe_stash_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        check_vault_path(value)
        state = str(info.data.get("state_prefix", ""))
        if value == state or value.startswith(state + "/"):
            # Whoever may read the records (the reader policy) would read the stash too.
            raise ValueError("must not lie inside ROTATOR_STATE_PREFIX: readers of the state records must not read the stash")
        return value

    @property
    def effective_stash_prefix(self) -> str:
        return self.stash_prefix or self.state_prefix + "-stash"

    @field_validator("alert_webhook_url", "alert_slack_webhook_url")
    @classmethod
    def _alert_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return check_api_url(value)
        except ValueError:
            # check_api_url quotes the URL; a webhook URL is a secret.
            raise ValueError("must be an https:// URL (plain http:// only for loopback hosts), with no query or user info") from None

    @field_validator("webhook_addr")
    @classmethod
    def _webhook_addr(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        host, sep, port = value.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT (e.g. 127.0.0.1:9102)")
        return value.strip()

    @field_validator("leak_webhook_secret")
    @classmethod
    def _leak_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.strip() == "":
            if info.data.get("webhook_addr"):
                raise ValueError("ROTATOR_LEAK_WEBHOOK_SECRET must be set when ROTATOR_WEBHOOK_ADDR is: leak reports are accepted only signed")
            return None
        return check_vault_ref(value.strip())

    @field_validator("vault_auth_mount")
    @classmethod
    def _auth_mount(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_vault_path(value.strip().strip("/").removeprefix("auth/"))

    @field_validator("vault_role_id", "vault_secret_id_file", "vault_k8s_role")
    @classmethod
    def _required_by_auth_method(cls, value: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("vault_auth")
        if info.field_name in _REQUIRED_BY_AUTH_METHOD.get(str(method), ()) and not (value or "").strip():
            raise ValueError(f"ROTATOR_{str(info.field_name).upper()} must be set when ROTATOR_VAULT_AUTH={method}")
        return value

    @field_validator("vault_skip_verify", mode="before")
    @classmethod
    def _skip_verify(cls, value: object) -> object:
        # Vault reads it with Go's strconv.ParseBool; anything else is an
        # error there, and here (a typo must not silently keep or drop TLS).
        if isinstance(value, str):
            return parse_go_bool(value, "VAULT_SKIP_VERIFY")
        return value

    def audit_anchor_location(self) -> tuple[str, str]:
        """(mount, prefix) of the audit anchors: the first segment is the mount."""
        mount, _, prefix = (self.audit_anchor or f"{self.state_mount}/{self.state_prefix}/_audit").partition("/")
        return mount, prefix

    def audit_transit_location(self) -> tuple[str, str] | None:
        """(mount, key name) of the Transit key that signs anchors, if any."""
        if self.audit_transit_key is None:
            return None
        mount, _, name = self.audit_transit_key.rpartition("/")
        return mount or "transit", name

    @field_validator("allowed_api_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        parse_hosts(value)
        return value

    def api_host_rule(self) -> ApiHostRule:
        return ApiHostRule(parse_hosts(self.allowed_api_hosts), self.allow_loopback_http)

    def is_vault_plain_http_remote(self) -> bool:
        """VAULT_ADDR is http:// to a host other than loopback: the token crosses the network in clear."""
        parts = urlsplit(self.vault_addr)
        return parts.scheme == "http" and not is_loopback((parts.hostname or "").lower())

    def effective_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "console" if sys.stdout.isatty() else "json"

    def vault_connection(self) -> VaultConnection:
        from rotator.config.settings import VaultConnection

        verify: bool | str = True
        if self.vault_skip_verify:
            verify = False
        elif self.vault_cacert:
            verify = self.vault_cacert
        return VaultConnection(
            url=self.vault_addr,
            token=self.vault_token,
            namespace=self.vault_namespace,
            verify=verify,
            auth_method=self.vault_auth,
            auth_mount=self.vault_auth_mount,
            role_id=self.vault_role_id,
            secret_id_file=self.vault_secret_id_file,
            k8s_role=self.vault_k8s_role,
            k8s_token_file=self.vault_k8s_token_file,
        )


DEFAULT_AUTH_MOUNTS = {"approle": "approle", "kubernetes": "kubernetes"}


@dataclass(frozen=True)
class VaultConnection:
    """How to reach Vault and log in. Built from settings by the caller."""

    url: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    verify: bool | str = True  # False, True, or a CA bundle path
    auth_method: str = "token"  # token | approle | kubernetes
    auth_mount: str | None = None  # default: the method's name
    role_id: str | None = field(default=None, repr=False)
    secret_id_file: str | None = None
    k8s_role: str | None = None
    k8s_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    timeout: float = 10.0

    @property
    def effective_auth_mount(self) -> str | None:
        return self.auth_mount or DEFAULT_AUTH_MOUNTS.get(self.auth_method)
