"""The GitHub providers' params (contract §4): App auth, repositories, permissions, titles.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt
from rotator_providers.github_http import DEFAULT_API_URL

from rotator.core.validators import ApiUrl, VaultRef

_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


_PERMISSION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


# Client IDs: `Iv1.` and 16 hex digits (older Apps) or `Iv23` and 16 letters and digits.
_CLIENT_ID = re.compile(r"^Iv[A-Za-z0-9.]{4,40}$")


# GitHub takes any text as a deploy key's title; the prefix is free text too,
# short enough that prefix + credential + rotation id stays readable.
_TITLE_PREFIX_MAX = 60


# The mark after the prefix: credential names (contract §4) and engine rotation ids.
_TITLE_MARK = re.compile(r"([a-z0-9][a-z0-9._-]{0,62}):([A-Za-z0-9_-]{1,64})")


def _check_repo_name(text: str) -> str:
    if "/" in text:
        raise ValueError(f"{text!r}: give the repository name without its owner (the installation's account owns it)")
    if not _REPO_NAME.match(text) or text in {".", ".."}:
        raise ValueError(f"{text!r} is not a repository name (letters, digits, '.', '_' and '-')")
    return text


def _check_repository(text: str) -> str:
    owner, _, name = text.partition("/")
    if not _OWNER.match(owner) or not _REPO_NAME.match(name) or name in {".", ".."}:
        raise ValueError(f"{text!r} is not a repository: write OWNER/NAME, e.g. acme/deploy-tools")
    return text


def _check_permission_name(text: str) -> str:
    if not _PERMISSION.match(text):
        raise ValueError(f"{text!r} is not a GitHub App permission name (e.g. contents, pull_requests)")
    return text


def _check_title_prefix(text: str) -> str:
    if not text.strip() or len(text) > _TITLE_PREFIX_MAX or not text.isprintable() or text != text.lstrip():
        raise ValueError(f"use 1-{_TITLE_PREFIX_MAX} printable characters (free text, e.g. \"ci deploy/\"), not starting with a space")
    return text


def title_joiner(prefix: str) -> str:
    """What goes between the prefix and the mark: nothing after a separator ("ci deploy/"), else ':'."""
    return "" if prefix[-1] in "/:-_. " else ":"


def _check_client_id(text: str) -> str:
    if not _CLIENT_ID.match(text):
        raise ValueError(f"{text!r} is not a GitHub App Client ID (it starts with Iv, e.g. Iv23liabcdefghijklmn)")
    return text


ClientId = Annotated[str, AfterValidator(_check_client_id)]


RepoName = Annotated[str, AfterValidator(_check_repo_name)]


Repository = Annotated[str, AfterValidator(_check_repository)]


PermissionName = Annotated[str, AfterValidator(_check_permission_name)]


TitlePrefix = Annotated[str, AfterValidator(_check_title_prefix)]


class GitHubAppParams(BaseModel):
    """How to authenticate as the App installation."""

    model_config = ConfigDict(extra="forbid")

    app_id: PositiveInt
    installation_id: PositiveInt
    private_key: VaultRef
    api_url: ApiUrl = DEFAULT_API_URL
    client_id: ClientId | None = Field(
        default=None,
        description="The App's Client ID (Iv…): the JWT issuer GitHub now recommends; without it the App id is the issuer (GHES).",
    )


class InstallationTokenParams(GitHubAppParams):
    repositories: list[RepoName] | None = Field(default=None, min_length=1, max_length=500)
    permissions: dict[PermissionName, Literal["read", "write", "admin"]] | None = Field(default=None, min_length=1)


class DeployKeyParams(GitHubAppParams):
    repository: Repository
    read_only: bool = True
    title_prefix: TitlePrefix = "rotator"
