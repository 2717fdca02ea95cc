"""The credential file's model (CredentialSpec and its parts) and what loading yields (LoadedCredential,
LoadResult). Reading and checking the files is rotator.config.loader.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from rotator.core.errors import ConfigProblem
from rotator.core.provider import ProviderFactory
from rotator.core.schedule import Revocation, Schedule, _Strict
from rotator.core.validators import Duration, VaultMount, VaultPath, VaultRef, check_api_url

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


_NAME = re.compile(NAME_PATTERN)


def notify_url_rule(text: str) -> str:
    """The shape of a notify URL: https://, or http:// on a loopback host; any
    host (no allowlist). ROTATOR_ALLOW_LOOPBACK_HTTP and the policy file's
    `urls` are checked with the other trust rules (rotator.config.policy)."""
    return check_api_url(text)


class NotifyTarget(_Strict):
    """A consumer told of each promotion (rotator.engine.notify)."""

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

    notify: list[NotifyTarget] = Field(default_factory=list, max_length=20, description="webhooks told of each promotion (rotator.engine.notify)")

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

    @cached_property
    def fingerprint(self) -> str:
        """Computed once, when first asked (a reload, a reconcile): not for each of 10,000 files at start-up."""
        return self.spec.fingerprint()


@dataclass
class LoadResult:
    credentials: dict[str, LoadedCredential] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)
    # Files that failed, so a reload can keep their last good version.
    failed_files: set[str] = field(default_factory=set)
    # Files that loaded but deserve the operator's eye (group-writable).
    warnings: list[ConfigProblem] = field(default_factory=list)
