"""`rotator demo`: the real daemon against local, throw-away services.

It starts an OpenBao dev server and a moto server (child processes, each in
its own process group) and the GitHub and Stripe sandboxes (threads in this
process), seeds what the five built-in providers need, writes one credential
file per provider with schedules of tens of seconds, and runs `rotator run`
as a child process whose stdout is the real event stream.

Invariants:
- no secret value is printed: only addresses, ids, Vault paths and the dev
  server's root token, which guards nothing but this throw-away server;
- everything started is stopped on Ctrl-C, SIGTERM, after `--duration`, or
  when start-up fails half-way: the daemon first (it may be mid-step against
  the sandboxes), then the sandboxes and the servers;
- a work directory is cleared only if an earlier demo made it (marker file),
  so a mistyped `--workdir` never deletes anyone's files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import boto3
import yaml

from rotator.config.loader import json_schema
from rotator.config.settings import VaultConnection
from rotator.core.validators import format_duration, parse_duration
from rotator.engine.registry import load_providers
from rotator.sandbox.github import FakeGitHub
from rotator.sandbox.services import MotoServer, OpenBaoServer, free_port
from rotator.sandbox.stripe import FakeStripe
from rotator.vault.store import VaultStore

MARKER = ".rotator-demo"
CONFIG_SUBDIR = "credentials.d"
AUDIT_FILE = "audit.jsonl"
DAEMON_STOP_SECONDS = 30.0

IAM_USER = "ci-deployer"
GITHUB_APP_ID = 123456
GITHUB_INSTALLATION_ID = 98765432
GITHUB_REPOS = ("acme/api", "acme/web")
STRIPE_ACCOUNT = "acct_1RotatorDemo"
GITHUB_REF = "secret/rotator/refs/github-app#private_key"
STRIPE_APP_REF = "secret/rotator/refs/stripe#app_key"
STRIPE_WEBHOOK_REF = "secret/rotator/refs/stripe#webhook_key"


class DemoError(Exception):
    """The demo cannot start (a missing binary, a work directory it does not own)."""


@dataclass
class World:
    """The running local services and where things are."""

    workdir: Path
    openbao: OpenBaoServer
    moto: MotoServer
    github: FakeGitHub
    stripe: FakeStripe
    metrics_addr: str

    @property
    def config_dir(self) -> Path:
        return self.workdir / CONFIG_SUBDIR

    @property
    def audit_file(self) -> Path:
        return self.workdir / AUDIT_FILE


# -- the work directory ----------------------------------------------------------


def prepare_workdir(workdir: Path) -> Path:
    """Create the work directory, or clear one an earlier demo left."""
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise DemoError(f"{workdir} is not empty and was not made by `rotator demo`: give --workdir an empty or new directory")
    if workdir.exists():
        for child in workdir.iterdir():
            if child.name != MARKER:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `rotator demo`; the next demo run clears this directory\n")
    return workdir


# -- seeding -----------------------------------------------------------------------


def seed(world: World) -> None:
    """Give each provider what it needs: an IAM user, a GitHub App, a Stripe account,
    and the management secrets in OpenBao under secret/rotator/refs/."""
    env = world.moto.env()
    iam = boto3.client(
        "iam", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName=IAM_USER, Path="/rotated/")  # the path config/iam-policy.json covers
    app_pem = world.github.create_app(GITHUB_APP_ID, GITHUB_INSTALLATION_ID, repositories=GITHUB_REPOS)
    app_key = world.stripe.add_account(STRIPE_ACCOUNT)
    account_key = world.stripe.add_secret_key(STRIPE_ACCOUNT)
    store = VaultStore(VaultConnection(url=world.openbao.addr, token=world.openbao.token))
    store.write("secret", "rotator/refs/github-app", {"private_key": app_pem}, cas=0)
    store.write("secret", "rotator/refs/stripe", {"app_key": app_key, "webhook_key": account_key}, cas=0)


def credential_documents(github_url: str, stripe_url: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """One credential file per provider: file stem -> (comment, document)."""
    gh, st = github_url, stripe_url
    return {
        "ci-deployer": ("AWS IAM access key of user ci-deployer (moto)", {
            "provider": "aws.iam_access_key", "owner": "platform-team", "description": "key used by the CI deploy job",
            "schedule": {"every": "30s"}, "grace": "10s", "vault": {"mount": "secret", "path": "apps/ci/aws"},
            "params": {"user_name": IAM_USER, "delete_after_deactivation": "0s"},
        }),
        "ci-github-token": ("GitHub App installation token (sandbox)", {
            "provider": "github.app_installation_token", "owner": "platform-team",
            "description": "token the CI release job uses", "schedule": {"every": "30s"}, "grace": "10s",
            "vault": {"mount": "secret", "path": "apps/ci/github-token"},
            "params": {"app_id": GITHUB_APP_ID, "installation_id": GITHUB_INSTALLATION_ID, "private_key": GITHUB_REF,
                       "repositories": ["api"], "permissions": {"contents": "read", "metadata": "read"}, "api_url": gh},
        }),
        "deploy-acme-api": ("GitHub deploy key on acme/api (sandbox)", {
            "provider": "github.deploy_key", "owner": "platform-team",
            "description": "read-only SSH key the deploy host uses to fetch acme/api", "schedule": {"every": "40s"},
            "grace": "10s", "vault": {"mount": "secret", "path": "apps/deploy/acme-api-ssh"},
            "params": {"repository": "acme/api", "read_only": True, "app_id": GITHUB_APP_ID,
                       "installation_id": GITHUB_INSTALLATION_ID, "private_key": GITHUB_REF, "api_url": gh},
        }),
        "payments-api-key": ("Stripe restricted key minted through managed API keys (sandbox)", {
            "provider": "stripe.managed_api_key", "owner": "payments-team",
            "description": "restricted key the checkout service uses", "schedule": {"every": "35s"}, "grace": "10s",
            "vault": {"mount": "secret", "path": "apps/checkout/stripe"},
            "params": {"account": STRIPE_ACCOUNT, "management_key": STRIPE_APP_REF,
                       "permissions": ["customer_read"], "api_base": st},
        }),
        "billing-webhook": ("Stripe webhook signing secret, rotated by endpoint replacement (sandbox)", {
            "provider": "stripe.webhook_secret", "owner": "billing-team",
            "description": "signing secret the billing service checks webhooks with", "schedule": {"every": "35s"},
            "grace": "15s", "vault": {"mount": "secret", "path": "apps/billing/stripe-webhook"},
            "params": {"url": "https://billing.example.com/stripe/webhook", "enabled_events": ["invoice.paid"],
                       "management_key": STRIPE_WEBHOOK_REF, "api_base": st},
        }),
    }


def write_credential_files(config_dir: Path, documents: dict[str, tuple[str, dict[str, Any]]]) -> list[Path]:
    """Write the credential files, and beside them the JSON Schema their modeline names."""
    config_dir.mkdir(parents=True, exist_ok=True)
    schema = json_schema(load_providers())
    (config_dir.parent / "credential.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    written = []
    for stem, (comment, doc) in documents.items():
        path = config_dir / f"{stem}.yaml"
        header = f"# yaml-language-server: $schema=../credential.schema.json\n# {comment}. Written by `rotator demo`.\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    return written


# -- the daemon --------------------------------------------------------------------


def daemon_env(world: World) -> dict[str, str]:
    """The environment of `rotator run`: nothing from the caller's Vault or AWS set-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "AWS_", "ROTATOR_"))}
    env.update(world.moto.env())
    env.update({
        "VAULT_ADDR": world.openbao.addr,
        "VAULT_TOKEN": world.openbao.token,
        "ROTATOR_CONFIG_DIR": str(world.config_dir),
        "ROTATOR_TICK_SECONDS": "2",
        "ROTATOR_AUDIT_FILE": str(world.audit_file),
        "ROTATOR_METRICS_ADDR": world.metrics_addr,
        # The sandboxes listen on plain http on loopback; production never needs this.
        "ROTATOR_ALLOW_LOOPBACK_HTTP": "true",
        # Readable events by default; ROTATOR_LOG_FORMAT=json still wins (tests, jq).
        "ROTATOR_LOG_FORMAT": os.environ.get("ROTATOR_LOG_FORMAT", "console"),
    })
    return env


def start_daemon(world: World) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rotator", "run"], env=daemon_env(world), start_new_session=True,
    )


def stop_daemon(proc: subprocess.Popen[bytes], out: TextIO) -> None:
    """SIGTERM (finish the step in flight, exit 0); SIGKILL if it does not stop."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=DAEMON_STOP_SECONDS)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        print(f"rotator demo: the daemon did not stop within {DAEMON_STOP_SECONDS:.0f}s; killing it", file=out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def watch(proc: subprocess.Popen[bytes], duration: float | None) -> int:
    """Wait for the end of `duration` (or for ever); 1 if the daemon died by itself."""
    deadline = None if duration is None else time.monotonic() + duration
    while True:
        timeout = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            continue
        return 1


# -- what to tell the newcomer -----------------------------------------------------


def _command(name: str) -> str:
    """`name` if the shell finds this installation's copy, else its full path."""
    beside = Path(sys.executable).parent / name
    found = shutil.which(name)
    if beside.exists() and (found is None or Path(found).resolve() != beside.resolve()):
        return str(beside)
    return name


def _schedules(world: World) -> str:
    docs = [doc for _, doc in credential_documents(world.github.url, world.stripe.url).values()]
    every = sorted(parse_duration(d["schedule"]["every"]) for d in docs)
    grace = sorted(parse_duration(d["grace"]) for d in docs)
    return (f"rotated every {format_duration(every[0])}-{format_duration(every[-1])}, "
            f"old one revoked {format_duration(grace[0])}-{format_duration(grace[-1])} later")


def banner(world: World, duration: float | None) -> str:
    rotator, bao = _command("rotator"), _command("bao")
    exports = f"export VAULT_ADDR={world.openbao.addr} VAULT_TOKEN={world.openbao.token} ROTATOR_CONFIG_DIR={world.config_dir} ROTATOR_ALLOW_LOOPBACK_HTTP=true"
    stop = f"It stops by itself after {duration:g}s, or on Ctrl-C." if duration is not None else "Stop it with Ctrl-C."
    return "\n".join([
        "rotator demo: the real daemon, rotating five credentials against local throw-away services.",
        f"  OpenBao dev server  {world.openbao.addr}  (root token {world.openbao.token!r}; dev mode, in memory)",
        f"  AWS IAM (moto)      {world.moto.endpoint}  user {IAM_USER}",
        f"  GitHub sandbox      {world.github.url}  App {GITHUB_APP_ID}, installation {GITHUB_INSTALLATION_ID}, repos {', '.join(GITHUB_REPOS)}",
        f"  Stripe sandbox      {world.stripe.url}  account {STRIPE_ACCOUNT}",
        f"  credential files    {world.config_dir}/  (one per provider; {_schedules(world)})",
        f"  audit file          {world.audit_file}",
        "",
        "In another terminal:",
        f"  {exports}",
        f"  {rotator} status                                   # phase, last rotated, next due, errors",
        f"  {bao} kv get -address={world.openbao.addr} secret/apps/ci/aws   # the live credential (prints it!)",
        f"  {bao} kv metadata get -address={world.openbao.addr} secret/apps/ci/aws",
        f"  {rotator} audit verify {world.audit_file}",
        f"  curl -s http://{world.metrics_addr}/metrics | grep '^rotator_'",
        "",
        f"{stop} The events below are the daemon's own output (`rotator run`).",
        "",
    ])


def write_manifest(world: World, daemon_pid: int) -> None:
    """demo.json: where everything listens (no secrets), for scripts and tests."""
    manifest = {
        "openbao_addr": world.openbao.addr, "moto_endpoint": world.moto.endpoint,
        "github_url": world.github.url, "stripe_url": world.stripe.url, "metrics_addr": world.metrics_addr,
        "config_dir": str(world.config_dir), "audit_file": str(world.audit_file), "daemon_pid": daemon_pid,
    }
    (world.workdir / "demo.json").write_text(json.dumps(manifest, indent=2) + "\n")


# -- the whole run -------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def start_world(stack: ExitStack, workdir: Path) -> World:
    """Start every service, registering its stop on `stack` as soon as it runs."""
    openbao = OpenBaoServer(workdir / "openbao")
    stack.callback(openbao.stop)
    openbao.start()
    moto = MotoServer(workdir / "moto")
    stack.callback(moto.stop)
    moto.start()
    github = FakeGitHub().start()
    stack.callback(github.stop)
    stripe = FakeStripe().start()
    stack.callback(stripe.stop)
    return World(workdir, openbao, moto, github, stripe, metrics_addr=f"127.0.0.1:{free_port()}")


def run_demo(*, workdir: Path, duration: float | None = None, out: TextIO | None = None) -> int:
    """Run the demo until `duration` seconds pass or Ctrl-C; returns the exit code."""
    out = out or sys.stderr
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, _interrupt) for s in signals}
    daemons: list[subprocess.Popen[bytes]] = []  # registered before it starts: Ctrl-C may come at any moment
    try:
        with ExitStack() as stack:
            try:
                workdir = prepare_workdir(workdir)
                print("rotator demo: starting OpenBao, moto and the GitHub and Stripe sandboxes ...", file=out, flush=True)
                world = start_world(stack, workdir)
                seed(world)
                write_credential_files(world.config_dir, credential_documents(world.github.url, world.stripe.url))
                print(banner(world, duration), file=out, flush=True)
                stack.callback(lambda: [stop_daemon(p, out) for p in daemons])
                daemons.append(start_daemon(world))
                write_manifest(world, daemons[0].pid)
                code = watch(daemons[0], duration)
                if code:
                    print(f"rotator demo: the daemon exited by itself with code {daemons[0].returncode}", file=out)
            except KeyboardInterrupt:
                code = 0
            except (DemoError, RuntimeError) as exc:  # RuntimeError: a server that did not start
                print(f"rotator demo: {exc}", file=out)
                code = 1
            finally:
                # Clean-up must run to its end: a second Ctrl-C does not cut it short.
                for sig in signals:
                    signal.signal(sig, signal.SIG_IGN)
                print("rotator demo: stopping what it started ...", file=out, flush=True)
        print("rotator demo: stopped; nothing is left running.", file=out, flush=True)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
