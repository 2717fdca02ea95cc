"""In-memory providers with each built-in provider's real semantics.

Each service (`AwsIam`, `GitHubRepo`, `GitHubApp`, `StripeAccount`) holds
the provider's world in memory; each provider class is a real
`rotator.core.provider.Provider` that makes the same API calls, in the same
order, as its built-in counterpart in `providers/`, and turns outcomes into
the same errors. Every API call passes through the service's `boundary`,
where the simulation injects faults (see `rotator.testing.sim.faults`).

What each copies from the real thing:
- AWS IAM: two keys per user (LimitExceeded), Active/Inactive, an issuing tag then create then
  tag (a second call: the mark is not atomic), last use, STS accepting a
  new key only after it propagated;
- GitHub deploy keys: marked by title in the create call, listed, read,
  deleted (404 counts as done);
- GitHub installation tokens: minted for one hour, cannot be listed,
  revoked with themselves (401: already dead);
- Stripe managed API keys: creates carry an idempotency key (a retry of a
  lost create replays Stripe's stored answer), expiry is recorded at once
  but takes effect at the API a little later;
- Stripe webhook endpoints: marked in description and metadata, replaced,
  deleted; the secret works while the endpoint exists.

The provider classes are bound to one service with `bind(cls, service)`;
the replica making a call is known from its clock (`actor` attribute).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotator.core.provider import Provider
from rotator.testing.sim.aws import AwsIam, SimAwsIamAccessKeyProvider
from rotator.testing.sim.github import GitHubApp, GitHubRepo, SimGitHubAppInstallationTokenProvider, SimGitHubDeployKeyProvider
from rotator.testing.sim.service import Service
from rotator.testing.sim.stripe import SimStripeManagedApiKeyProvider, SimStripeWebhookSecretProvider, StripeAccount

# -- what a simulation needs to know of each kind ----------------------------------------


@dataclass(frozen=True)
class Kind:
    """One provider kind: its service, its provider class, and example params."""

    name: str
    make_service: Callable[[Callable[[], datetime]], Service]
    provider_cls: type[Provider]
    params: Mapping[str, Any]
    every: str = "1d"
    grace: str = "6h"


KINDS: dict[str, Kind] = {
    "aws": Kind("aws", lambda now: AwsIam(now), SimAwsIamAccessKeyProvider,
                {"user_name": "ci-sim", "delete_after_deactivation": "2h"}),
    "deploy_key": Kind("deploy_key", lambda now: GitHubRepo(now), SimGitHubDeployKeyProvider,
                       {"app_id": 1, "installation_id": 2, "private_key": "secret/sim/app#pem", "repository": "acme/app"}),
    "installation_token": Kind("installation_token", lambda now: GitHubApp(now), SimGitHubAppInstallationTokenProvider,
                               {"app_id": 1, "installation_id": 2, "private_key": "secret/sim/app#pem"}, every="30m", grace="10m"),
    "stripe_key": Kind("stripe_key", lambda now: StripeAccount(now), SimStripeManagedApiKeyProvider,
                       {"account": "acct_sim1", "management_key": "secret/sim/stripe#key", "permissions": ["customer_read"]}),
    "webhook": Kind("webhook", lambda now: StripeAccount(now, secret_field="signing_secret"), SimStripeWebhookSecretProvider,
                    {"url": "https://hooks.example.com/stripe", "enabled_events": ["invoice.paid"], "management_key": "secret/sim/stripe#key"}),
}


def toggled_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A credential file's params after an edit (the simulation's `edit_params`): one field of its kind changed."""
    out = dict(params)
    if kind == "aws":
        out["delete_after_deactivation"] = "1h" if params.get("delete_after_deactivation") == "2h" else "2h"
    elif kind == "deploy_key":
        out["read_only"] = not params.get("read_only", True)
    elif kind == "installation_token":
        out["permissions"] = None if params.get("permissions") else {"contents": "read"}
    elif kind == "stripe_key":
        out["permissions"] = ["customer_read"] if params.get("permissions") != ["customer_read"] else ["customer_read", "charge_read"]
    else:
        out["enabled_events"] = ["invoice.paid"] if params.get("enabled_events") != ["invoice.paid"] else ["invoice.paid", "charge.failed"]
    return out
