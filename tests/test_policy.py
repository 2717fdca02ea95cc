"""What a credential file may make the rotator do: the API-host rule
(contract §3, §4) and the operator policy (§10), through the real
`python -m rotator validate` and `rotator run` (issue 11 items 1 and 2)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import DaemonProcess, parse_events, run_rotator, write_credential

REPO = Path(__file__).resolve().parent.parent
APP = {"app_id": 1, "installation_id": 41, "private_key": "secret/rotator/payments/github#private_key"}
STRIPE = {"account": "acct_1PaYmEnTs", "management_key": "secret/rotator/payments/stripe#key", "permissions": ["customer_read"]}
WEBHOOK = {"url": "https://hooks.payments.example.com/stripe", "enabled_events": ["invoice.paid"],
           "management_key": "secret/rotator/payments/stripe#key"}
POLICY = {
    "owners": {
        "payments-team": {
            "vault_paths": ["secret/apps/payments/*"],
            "refs": ["secret/rotator/payments/*"],
            "aws_users": ["payments-*"],
            "github_repositories": ["acme/payments-*"],
            "github_installations": ["41"],
            "stripe_accounts": ["acct_1PaYmEnTs"],
            "urls": ["https://hooks.payments.example.com/*"],
        },
        "team-a": {"vault_paths": ["secret/apps/team-a/*"], "aws_users": ["team-a-*"]},
        "quiet-team": {},
    }
}


def validate(config_dir: Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = run_rotator(["validate", "--config-dir", str(config_dir)], env or {}, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr
    return result.returncode, result.stdout.splitlines() + result.stderr.splitlines()


def policy_file(tmp_path: Path, document: Any = POLICY) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def payments(config_dir: Path, stem: str, provider: str, params: dict[str, Any], **extra: Any) -> Path:
    extra.setdefault("owner", "payments-team")
    if provider == "github.app_installation_token":  # tokens live an hour
        extra.setdefault("every", "30m")
        extra.setdefault("grace", "10m")
    extra.setdefault("path", f"payments/{stem}")
    path = extra.pop("path")
    return write_credential(config_dir, stem, provider=provider, params=params, path=f"apps/{path}", **extra)


# -- API hosts (always in force) ---------------------------------------------------------------


ELSEWHERE = {
    "stripe-key-elsewhere": ("stripe.managed_api_key", {**STRIPE, "api_base": "https://collector.attacker.example"}, "params.api_base",
                             "host collector.attacker.example is not in ROTATOR_ALLOWED_API_HOSTS"),
    "app-jwt-elsewhere": ("github.app_installation_token", {**APP, "api_url": "https://collector.attacker.example/api/v3"},
                          "params.api_url", "host collector.attacker.example is not in ROTATOR_ALLOWED_API_HOSTS"),
    "lookalike-github": ("github.deploy_key", {**APP, "repository": "acme/payments-api", "api_url": "https://api.github.com.attacker.example"},
                         "params.api_url", "host api.github.com.attacker.example is not in ROTATOR_ALLOWED_API_HOSTS"),
    "lookalike-stripe": ("stripe.webhook_secret", {**WEBHOOK, "api_base": "https://API.STRIPE.COM.attacker.example"}, "params.api_base",
                         "host api.stripe.com.attacker.example is not in ROTATOR_ALLOWED_API_HOSTS"),
    "loopback-http": ("stripe.managed_api_key", {**STRIPE, "api_base": "http://127.0.0.1:9"}, "params.api_base",
                      "plain http:// needs ROTATOR_ALLOW_LOOPBACK_HTTP"),
    "loopback-https": ("stripe.managed_api_key", {**STRIPE, "api_base": "https://127.0.0.1:9"}, "params.api_base",
                       "host 127.0.0.1 is not in ROTATOR_ALLOWED_API_HOSTS"),
    "user-info": ("stripe.managed_api_key", {**STRIPE, "api_base": "https://api.stripe.com@collector.attacker.example"}, "params.api_base",
                  "is not an API base URL"),
    "plain-webhook": ("stripe.webhook_secret", {**WEBHOOK, "url": "http://hooks.example.com/x"}, "params.url", "https"),
}
NOTIFY_LOOPBACK = [{"webhook": "http://127.0.0.1:9/hook", "signing_key": "secret/rotator/payments/hooks#hmac"}]


def test_api_urls_may_name_only_allowed_hosts(config_dir: Path) -> None:
    """A file that would send the rotator's key, or an App JWT, to another host fails validate naming file, field and host;
    a webhook endpoint may be on any host (contract §4), over https only."""
    for stem, (provider, params, _, _) in ELSEWHERE.items():
        payments(config_dir, stem, provider, params)
    anywhere = payments(config_dir, "webhook-anywhere", "stripe.webhook_secret", {**WEBHOOK, "url": "https://hooks.somewhere.example/x"})
    loopback = payments(config_dir, "notify-loopback", "aws.iam_access_key", {"user_name": "u"}, notify=NOTIFY_LOOPBACK)
    code, lines = validate(config_dir)
    assert code == 2
    for stem, (_, _, field, message) in ELSEWHERE.items():
        mine = [line for line in lines if line.startswith(f"{config_dir / stem}.yaml: ")]
        assert len(mine) == 1 and mine[0].startswith(f"{config_dir / stem}.yaml: {field}: ") and message in mine[0], (stem, lines)
    assert not [line for line in lines if line.startswith(f"{anywhere}: ")]
    assert [line for line in lines if line.startswith(f"{loopback}: ")] == [
        f"{loopback}: notify.0.webhook: plain http:// needs ROTATOR_ALLOW_LOOPBACK_HTTP (local sandboxes and tests); use https://"]


def test_loopback_and_enterprise_hosts_need_the_operator(config_dir: Path) -> None:
    """Loopback http passes only with ROTATOR_ALLOW_LOOPBACK_HTTP; a GitHub Enterprise host only when listed."""
    payments(config_dir, "sandbox", "stripe.managed_api_key", {**STRIPE, "api_base": "http://127.0.0.1:9"})
    payments(config_dir, "ghe", "github.app_installation_token", {**APP, "api_url": "https://github.example.com/api/v3"})
    code, lines = validate(config_dir, {"ROTATOR_ALLOW_LOOPBACK_HTTP": "true"})
    assert code == 2 and len([line for line in lines if "ROTATOR_ALLOWED_API_HOSTS" in line]) == 1, lines
    code, lines = validate(config_dir, {"ROTATOR_ALLOW_LOOPBACK_HTTP": "true",
                                        "ROTATOR_ALLOWED_API_HOSTS": "api.github.com, api.stripe.com, GitHub.Example.com"})
    assert code == 0, lines


def test_a_bad_host_list_is_a_settings_error(config_dir: Path) -> None:
    """A host list entry that is a URL, not a host, is exit 2 naming the variable."""
    code, lines = validate(config_dir, {"ROTATOR_ALLOWED_API_HOSTS": "https://api.github.com/"})
    assert code == 2
    assert any(line.startswith("environment: ROTATOR_ALLOWED_API_HOSTS: ") for line in lines), lines


# -- the operator policy ----------------------------------------------------------------------


ALLOWED = [
    ("stripe.managed_api_key", STRIPE),
    ("stripe.webhook_secret", WEBHOOK),
    ("github.deploy_key", {**APP, "repository": "acme/payments-api"}),
    ("github.app_installation_token", {**APP, "repositories": ["payments-web"]}),
    ("aws.iam_access_key", {"user_name": "payments-ci"}),
]
NOTIFY = [{"webhook": "https://hooks.payments.example.com/rotated", "signing_key": "secret/rotator/payments/hooks#hmac"}]


def test_files_within_the_policy_pass(config_dir: Path, tmp_path: Path) -> None:
    """Each provider's file that names only what its owner is allowed validates."""
    for number, (provider, params) in enumerate(ALLOWED):
        payments(config_dir, f"ok-{number}", provider, params)
    payments(config_dir, "ok-notify", "aws.iam_access_key", {"user_name": "payments-ci"}, notify=NOTIFY)
    code, lines = validate(config_dir, {"ROTATOR_POLICY_FILE": str(policy_file(tmp_path))})
    assert code == 0, lines


OVERREACH = {
    "other-teams-live-path": ("aws.iam_access_key", {"user_name": "payments-ci"}, {"path": "team-a/aws"}, "vault.path"),
    "other-teams-user": ("aws.iam_access_key", {"user_name": "team-a-deployer"}, {}, "params.user_name"),
    "other-teams-secret-as-ref": ("stripe.managed_api_key", {**STRIPE, "management_key": "secret/apps/team-a/aws#secret_access_key"}, {},
                                  "params.management_key"),
    "other-account": ("stripe.managed_api_key", {**STRIPE, "account": "acct_SomeoneElse"}, {}, "params.account"),
    "webhook-anywhere": ("stripe.webhook_secret", {**WEBHOOK, "url": "https://collector.attacker.example/all", "enabled_events": ["*"]}, {},
                         "params.url"),
    "webhook-host-in-path": ("stripe.webhook_secret", {**WEBHOOK, "url": "https://collector.attacker.example/.hooks.payments.example.com/x"},
                             {}, "params.url"),
    "other-repo": ("github.deploy_key", {**APP, "repository": "acme/infra"}, {}, "params.repository"),
    "other-installation": ("github.deploy_key", {**APP, "installation_id": 42, "repository": "acme/payments-api"}, {}, "params.installation_id"),
    "token-other-repo": ("github.app_installation_token", {**APP, "repositories": ["payments-web", "infra"]}, {}, "params.repositories.1"),
    "token-every-repo": ("github.app_installation_token", APP, {}, "params.repositories"),
    "notify-elsewhere": ("aws.iam_access_key", {"user_name": "payments-ci"},
                         {"notify": [{"webhook": "https://collector.attacker.example/x", "signing_key": "secret/rotator/payments/hooks#hmac"}]},
                         "notify.0.webhook"),
    "notify-other-teams-key": ("aws.iam_access_key", {"user_name": "payments-ci"},
                               {"notify": [{"webhook": "https://hooks.payments.example.com/r", "signing_key": "secret/rotator/team-a/hooks#hmac"}]},
                               "notify.0.signing_key"),
    "other-teams-app-key": ("github.deploy_key", {**APP, "private_key": "secret/rotator/team-a/github#private_key",
                                                  "repository": "acme/payments-x"}, {}, "params.private_key"),
}


def test_files_beyond_the_policy_are_refused(config_dir: Path, tmp_path: Path) -> None:
    """Each way of naming another team's path, ref, user, repository, installation, account or URL is one precise
    refusal; an unlisted owner is refused at `owner`; a listed owner without a kind of entry may name none of it."""
    policy = policy_file(tmp_path)
    for stem, (provider, params, extra, _) in OVERREACH.items():
        payments(config_dir, stem, provider, params, **extra)
    stranger = write_credential(config_dir, "stranger", params={"user_name": "payments-ci"}, owner="stranger-team", path="apps/payments/s")
    quiet = write_credential(config_dir, "quiet", params={"user_name": "q"}, owner="quiet-team", path="apps/quiet/q")
    code, lines = validate(config_dir, {"ROTATOR_POLICY_FILE": str(policy)})
    assert code == 2
    for stem, (_, _, _, field) in OVERREACH.items():
        mine = [line for line in lines if line.startswith(f"{config_dir / stem}.yaml: ")]
        assert mine == [f"{config_dir / stem}.yaml: {field}: not allowed for owner payments-team by {policy}"], (stem, lines)
    assert f"{stranger}: owner: not allowed for owner stranger-team by {policy}" in lines
    assert f"{quiet}: vault.path: not allowed for owner quiet-team by {policy}" in lines
    assert f"{quiet}: params.user_name: not allowed for owner quiet-team by {policy}" in lines


def test_the_shipped_example_policy_allows_the_shipped_examples() -> None:
    """config/policy.example.yaml is valid and admits config/credentials.d."""
    code, lines = validate(REPO / "config" / "credentials.d", {"ROTATOR_POLICY_FILE": str(REPO / "config" / "policy.example.yaml")})
    assert code == 0, lines


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"owners": {"a": {"vault_path": ["x"]}, "b": {"urls": ["hooks.example.com/*"]}}}, "owners.a.vault_path: unknown key"),
        ({"owners": {"b": {"urls": ["hooks.example.com/*"]}}}, "owners.b.urls.0: a URL glob is"),
        ("owners: &x {a: {}}\nmore: *x\n", "YAML anchors"),
        (None, "cannot read"),
    ],
    ids=["unknown-kind", "url-glob", "anchors", "missing"],
)
def test_a_bad_policy_file_is_exit_2(config_dir: Path, tmp_path: Path, document: Any, message: str) -> None:
    """A broken policy file is named with what is wrong, and nothing validates under it."""
    write_credential(config_dir, "ok", params={"user_name": "payments-ci"}, owner="payments-team", path="apps/payments/ok")
    policy = tmp_path / "policy.yaml" if document is None else policy_file(tmp_path, document)
    code, lines = validate(config_dir, {"ROTATOR_POLICY_FILE": str(policy)})
    assert code == 2
    assert any(line.startswith(f"{policy}: ") and message in line for line in lines), lines


# -- the daemon ---------------------------------------------------------------------------------


def test_run_once_skips_a_file_that_would_ship_a_secret_elsewhere(vault_env: dict[str, str], config_dir: Path) -> None:
    """`rotator run --once` reports the file as config.invalid (exit 2) and never starts its rotation."""
    file = payments(config_dir, "exfil", "stripe.managed_api_key",
                    {**STRIPE, "api_base": "https://collector.attacker.example", "management_key": "secret/apps/team-a/aws#secret_access_key"})
    result = run_rotator(["run", "--once"], {**vault_env, "ROTATOR_CONFIG_DIR": str(config_dir)}, timeout=60)
    events = parse_events(result.stdout)
    assert result.returncode == 2, result.stderr
    invalid = [e for e in events if e["event"] == "config.invalid"]
    assert invalid == [{**invalid[0], "file": str(file),
                        "error": "params.api_base: host collector.attacker.example is not in ROTATOR_ALLOWED_API_HOSTS"}]
    assert not [e for e in events if e["event"].startswith(("rotation.", "credential."))]


def test_run_refuses_to_start_on_a_broken_policy(vault_env: dict[str, str], config_dir: Path, tmp_path: Path) -> None:
    """A policy file that cannot be read stops the daemon at start with exit 2: nothing runs unbounded."""
    write_credential(config_dir, "ok", params={"user_name": "payments-ci"}, owner="payments-team", path="apps/payments/ok")
    policy = policy_file(tmp_path, "owners: {payments-team: {aws_user: [x]}}\n")
    result = run_rotator(["run", "--once"], {**vault_env, "ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_POLICY_FILE": str(policy)})
    assert result.returncode == 2
    events = parse_events(result.stdout)
    assert [e["file"] for e in events if e["event"] == "config.invalid"] == [str(policy)]
    assert not [e for e in events if e["event"].startswith(("rotation.", "credential."))]


def test_reload_enforces_a_narrowed_policy(rotator_env: dict[str, str], config_dir: Path, tmp_path: Path, iam_user: str) -> None:
    """On SIGHUP a file the new policy refuses is dropped (not kept as last good); a broken policy keeps the last good one."""
    write_credential(config_dir, "ci", params={"user_name": iam_user}, owner="ci-team", path="apps/ci/key", grace="1h")
    policy = policy_file(tmp_path, {"owners": {"ci-team": {"vault_paths": ["secret/apps/ci/*"], "aws_users": ["ci-*"]}}})
    daemon = DaemonProcess({**rotator_env, "ROTATOR_POLICY_FILE": str(policy), "ROTATOR_TICK_SECONDS": "1"})
    try:
        daemon.wait_for(lambda es: any(e["event"] == "rotation.completed" for e in es), what="the first rotation")
        policy.write_text("owners: [broken\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda es: any(e["event"] == "config.invalid" and e["file"] == str(policy) for e in es), what="the broken policy")
        policy.write_text(yaml.safe_dump({"owners": {"ci-team": {"vault_paths": ["secret/apps/ci/*"], "aws_users": ["deploy-*"]}}}))
        daemon.proc.send_signal(signal.SIGHUP)
        refused = daemon.wait_for(lambda es: any(e["event"] == "config.invalid" and "params.user_name: not allowed" in e["error"] for e in es),
                                  what="the refusal")
        assert not [e for e in refused if e["event"] == "config.kept_last_good"]
        assert [e for e in refused if e["event"] == "config.invalid" and e["file"] == str(config_dir / "ci.yaml")] == [
            {**[e for e in refused if e["event"] == "config.invalid" and e["file"].endswith("ci.yaml")][0],
             "error": f"params.user_name: not allowed for owner ci-team by {policy}"}]
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "args",
    [["rotate", "ok"], ["status"], ["plan"], ["report"], ["pause", "ok", "--reason", "r"], ["resume", "ok"], ["adopt", "ok"]],
    ids=lambda a: a[0],
)
def test_every_command_that_reads_files_stops_on_a_broken_policy(config_dir: Path, tmp_path: Path, args: list[str]) -> None:
    """No command acts, or shows files, under a policy it cannot read: exit 2, the policy's problem, no traceback."""
    write_credential(config_dir, "ok", params={"user_name": "payments-ci"}, owner="payments-team", path="apps/payments/ok")
    policy = policy_file(tmp_path, "owners: {payments-team: {aws_user: [x]}}\n")
    # VAULT_ADDR points at a closed loopback port: nothing may get that far.
    env = {"ROTATOR_CONFIG_DIR": str(config_dir), "ROTATOR_POLICY_FILE": str(policy), "VAULT_ADDR": "http://127.0.0.1:9",
           "VAULT_TOKEN": "unused", "ROTATOR_LOG_FORMAT": "json"}
    result = run_rotator(args, env, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert f"{policy}: owners.payments-team.aws_user: unknown key" in output
