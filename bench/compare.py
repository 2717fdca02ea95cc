"""The rotator against the raw API calls it needs, side by side (issue 15).

One run starts OpenBao and a moto server the way the tests do
(rotator.sandbox.services) and measures, in ABBA order (raw, rotator,
rotator, raw) so that a change of load on the machine hits both alike:

- (a) sequential cost of one rotation with warm clients: the raw loop is
  boto3 + hvac (create a key, verify it with STS as itself, write Vault,
  delete the old key); the rotator is `Engine.reconcile` with
  `--revoke-now` (everything `rotate NAME --revoke-now` does after start);
- (b) throughput of a batch at concurrency 16: the raw loop on 16 threads,
  the rotator's own mass rotation (`rotator.engine.mass.rotate_many`);
- (c) requests per rotation to Vault and to AWS, counted by a recording
  proxy in front of each (not during the timed phases);
- (d) start-up with 10,000 credentials and the idle RSS (bench/scale.py).

    python bench/compare.py [--rotations 30] [--batch 64] [--credentials 10000] [--write docs/PERFORMANCE.md]

Prints the figures as JSON; `--write` renders docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import boto3  # noqa: E402
import botocore.exceptions  # noqa: E402
import hvac  # noqa: E402
import yaml  # noqa: E402

import scale  # noqa: E402
from counting_proxy import CountingProxy  # noqa: E402
from rotator.sandbox.services import MotoServer, OpenBaoServer  # noqa: E402

CONCURRENCY = 16
PREFIX = "rotator/bench"


class RawLoop:
    """What a rotation needs, and nothing else: warm clients, no state."""

    def __init__(self, moto_env: dict[str, str], vault_addr: str, token: str) -> None:
        self.session = boto3.session.Session(aws_access_key_id=moto_env["AWS_ACCESS_KEY_ID"],
                                             aws_secret_access_key=moto_env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        self.endpoint = moto_env["AWS_ENDPOINT_URL"]
        self.iam = self.session.client("iam", endpoint_url=self.endpoint)
        self._local = threading.local()
        self.vault_addr, self.token = vault_addr, token
        self._sts_lock = threading.Lock()  # botocore sessions are not safe for concurrent client creation
        self.keys: dict[str, str] = {}

    def _vault(self) -> hvac.Client:
        client = getattr(self._local, "vault", None)
        if client is None:
            client = self._local.vault = hvac.Client(url=self.vault_addr, token=self.token)
        return client

    def rotate(self, user: str) -> None:
        new = self.iam.create_access_key(UserName=user)["AccessKey"]
        with self._sts_lock:
            sts = self.session.client("sts", endpoint_url=self.endpoint, aws_access_key_id=new["AccessKeyId"],
                                      aws_secret_access_key=new["SecretAccessKey"])
        for _ in range(50):  # IAM is eventually consistent; moto is not, but the loop is honest
            try:
                sts.get_caller_identity()
                break
            except botocore.exceptions.ClientError:
                time.sleep(0.1)
        self._vault().secrets.kv.v2.create_or_update_secret(
            path=f"raw/{user}", mount_point="secret",
            secret={"access_key_id": new["AccessKeyId"], "secret_access_key": new["SecretAccessKey"]})
        old = self.keys.get(user)
        if old is not None:
            self.iam.delete_access_key(UserName=user, AccessKeyId=old)
        self.keys[user] = new["AccessKeyId"]


class Rotator:
    """The rotator in this process, as `rotate --revoke-now` runs it (its log to a buffer)."""

    def __init__(self, work: Path, users: list[str], vault_addr: str, token: str) -> None:
        from rotator.audit import events as audit
        from rotator.wiring import build_app, load_credentials
        from rotator.config.settings import Settings

        config = work / f"credentials-{len(list(work.glob('credentials-*')))}.d"
        config.mkdir()
        for user in users:
            (config / f"{user}.yaml").write_text(yaml.safe_dump({
                "provider": "aws.iam_access_key", "owner": "bench", "schedule": {"every": "30d"}, "grace": "1h",
                "vault": {"mount": "secret", "path": f"bench/{user}"},
                "params": {"user_name": user, "delete_after_deactivation": "0s"},
            }))
        self.log = io.StringIO()
        audit.configure(fmt="json", stream=self.log)
        settings = Settings(config_dir=config, state_prefix=PREFIX, vault_addr=vault_addr, vault_token=token,
                            allow_loopback_http=True)
        self.app = build_app(settings)
        loaded = load_credentials(settings)
        assert not loaded.problems, loaded.problems
        self.creds = {c.spec.name: c for c in loaded.credentials.values()}  # the file stem: the user's name

    def rotate(self, user: str) -> None:
        from rotator.core.actions import Request

        result = self.app.engine.reconcile(self.creds[user], request=Request(revoke_now=True))
        if result.status != "completed":
            raise RuntimeError(f"rotation of {user}: {result.status} {result.record.last_error if result.record else ''}")

    def rotate_batch(self, users: list[str]) -> None:
        from rotator.engine.mass import rotate_many

        outcomes = rotate_many(self.app.engine, [self.creds[u] for u in users], revoke_now=True, concurrency=CONCURRENCY,
                               lease_wait=60, stop=threading.Event())
        bad = [o for o in outcomes if not o.is_ok]
        if bad:
            raise RuntimeError(f"{len(bad)} rotations failed, e.g. {bad[0]}")


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def sequential(raw: RawLoop, rot: Rotator, raw_user: str, rot_user: str, n: int) -> dict[str, Any]:
    phases: dict[str, list[float]] = {"raw": [], "rotator": []}
    for kind in ("raw", "rotator", "rotator", "raw"):  # ABBA
        rotate = raw.rotate if kind == "raw" else rot.rotate
        user = raw_user if kind == "raw" else rot_user
        phases[kind].append(timed(lambda: [rotate(user) for _ in range(n)]) / n)
    raw_ms, rot_ms = 1000 * statistics.mean(phases["raw"]), 1000 * statistics.mean(phases["rotator"])
    return {"raw_ms": round(raw_ms, 1), "rotator_ms": round(rot_ms, 1), "ratio": round(rot_ms / raw_ms, 2),
            "phases_ms": {k: [round(1000 * v, 1) for v in vs] for k, vs in phases.items()}}


def throughput(raw: RawLoop, rot: Rotator, raw_users: list[str], rot_users: list[str]) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"raw": [], "rotator": []}
    for kind in ("raw", "rotator", "rotator", "raw"):
        if kind == "raw":
            def batch() -> None:
                with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                    list(pool.map(raw.rotate, raw_users))
        else:
            def batch() -> None:
                rot.rotate_batch(rot_users)
        rates[kind].append(len(raw_users) / timed(batch))
    raw_rate, rot_rate = statistics.mean(rates["raw"]), statistics.mean(rates["rotator"])
    return {"raw_per_s": round(raw_rate, 1), "rotator_per_s": round(rot_rate, 1), "ratio": round(rot_rate / raw_rate, 2),
            "phases_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()}}


def requests(work: Path, moto: MotoServer, bao: OpenBaoServer, users: list[str]) -> dict[str, Any]:
    """One raw rotation and one rotator rotation (in process, and `rotate --revoke-now` as a fresh process), each through proxies."""
    with CountingProxy(bao.addr) as vault, CountingProxy(moto.endpoint) as aws:
        env = {**moto.env(), "AWS_ENDPOINT_URL": aws.url}
        raw = RawLoop(env, vault.url, bao.token)
        raw.rotate(users[0])  # the first key
        v0, a0 = len(vault.requests()), len(aws.requests())
        raw.rotate(users[0])
        raw_counts = (len(vault.requests()) - v0, len(aws.requests()) - a0)

        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            rot = Rotator(work, users[1:2], vault.url, bao.token)
            rot.rotate(users[1])
            v0, a0 = len(vault.requests()), len(aws.requests())
            rot.rotate(users[1])
            in_process = (len(vault.requests()) - v0, len(aws.requests()) - a0)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_", "AWS_"))}
        cli_env = {**base, **env, "VAULT_ADDR": vault.url, "VAULT_TOKEN": bao.token, "ROTATOR_CONFIG_DIR": str(rot.app.settings.config_dir),
                   "ROTATOR_STATE_PREFIX": PREFIX, "ROTATOR_LOG_FORMAT": "json", "ROTATOR_ALLOW_LOOPBACK_HTTP": "true"}
        v0, a0 = len(vault.requests()), len(aws.requests())
        done = subprocess.run([sys.executable, "-m", "rotator", "rotate", users[1], "--revoke-now"], env=cli_env,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rotate --revoke-now failed: {done.stderr[-2000:]}")
        cli = (len(vault.requests()) - v0, len(aws.requests()) - a0)
    return {"raw_vault": raw_counts[0], "raw_aws": raw_counts[1],
            "rotator_vault": in_process[0], "rotator_aws": in_process[1],
            "cli_vault": cli[0], "cli_aws": cli[1],
            "vault_ratio": round(in_process[0] / raw_counts[0], 2), "aws_ratio": round(in_process[1] / raw_counts[1], 2)}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rotator-compare-") as tmp:
        work = Path(tmp)
        bao = OpenBaoServer(work / "openbao").start()
        moto = MotoServer(work / "moto").start()
        try:
            env = moto.env()
            os.environ.update(env)
            iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1",
                               aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
            users = [f"bench-{i:03d}" for i in range(2 * args.batch + 4)]
            for user in users:
                iam.create_user(UserName=user)
            raw_seq, rot_seq, count_users = users[0], users[1], users[2:4]
            raw_batch, rot_batch = users[4:4 + args.batch], users[4 + args.batch:]
            load_before = load_average()
            raw = RawLoop(env, bao.addr, bao.token)
            rot = Rotator(work, [rot_seq, *rot_batch], bao.addr, bao.token)
            for user in [raw_seq, *raw_batch]:
                raw.rotate(user)  # warm: every user holds one key, clients made
            rot.rotate(rot_seq)
            rot.rotate_batch(rot_batch)
            figures: dict[str, Any] = {
                "sequential": sequential(raw, rot, raw_seq, rot_seq, args.rotations),
                "throughput": throughput(raw, rot, raw_batch, rot_batch),
                "requests": requests(work, moto, bao, count_users),
            }
            rot.app.engine.close()
        finally:
            moto.stop()
            bao.stop()
    figures["scale"] = scale.run(args.credentials, args.idle_seconds)
    figures["load_average"] = {"before": load_before, "after": load_average()}
    figures["machine"] = scale.machine()
    figures["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["rotations"], figures["batch"] = args.rotations, args.batch
    return figures


def summary(f: dict[str, Any]) -> str:
    s, t, r, c = f["sequential"], f["throughput"], f["requests"], f["scale"]
    return "\n".join([
        f"(a) one rotation:        rotator {s['rotator_ms']} ms, raw {s['raw_ms']} ms: {s['ratio']}x (target <= 1.5x)",
        f"(b) batch at {CONCURRENCY}:         rotator {t['rotator_per_s']}/s, raw {t['raw_per_s']}/s: {100 * t['ratio']:.0f}% (target >= 80%)",
        f"(c) requests/rotation:   Vault {r['rotator_vault']} vs {r['raw_vault']} ({r['vault_ratio']}x), AWS {r['rotator_aws']} vs {r['raw_aws']}"
        f" ({r['aws_ratio']}x); rotate --revoke-now as a process: Vault {r['cli_vault']} (target <= 10), AWS {r['cli_aws']}",
        f"(d) {c['credentials']:,} credentials: start-up {c['startup_s']} s (target <= 10 s), idle RSS {c['rss_mb']} MB (target <= 150 MB)",
    ])


def render(f: dict[str, Any]) -> str:
    s, t, r, c = f["sequential"], f["throughput"], f["requests"], f["scale"]

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return f"""# Performance

Measured by `make bench` (`bench/compare.py`, which runs `bench/scale.py`
for the last rows) in one run on {f['date']}:
OpenBao dev server and moto server started as the tests start them
(`rotator/sandbox/services.py`), on loopback.

Machine: {f['machine']}. It is shared by five engineers: load average
{f['load_average']['before']} before the run and {f['load_average']['after']} after. Absolute
times on it are noisy; the ratios come from phases run in ABBA order (raw
loop, rotator, rotator, raw loop) in the same run, so a change of load hits
both alike.

| measure | rotator | raw loop | ratio | target | |
|---|---|---|---|---|---|
| (a) one rotation, sequential, warm clients | {s['rotator_ms']} ms | {s['raw_ms']} ms | {s['ratio']}× | ≤ 1.5× | {met(s['ratio'] <= 1.5)} |
| (b) batch throughput at concurrency {CONCURRENCY} | {t['rotator_per_s']}/s | {t['raw_per_s']}/s | {100 * t['ratio']:.0f} % | ≥ 80 % | {met(t['ratio'] >= 0.8)} |
| (c) Vault requests per rotation (in process) | {r['rotator_vault']} | {r['raw_vault']} | {r['vault_ratio']}× | | |
| (c) AWS requests per rotation (in process) | {r['rotator_aws']} | {r['raw_aws']} | {r['aws_ratio']}× | | |
| (c) Vault requests, `rotate NAME --revoke-now` as a fresh process | {r['cli_vault']} | | | ≤ 10 | {met(r['cli_vault'] <= 10)} |
| (d) start-up, {c['credentials']:,} credentials | {c['startup_s']} s | | | ≤ 10 s | {met(float(c['startup_s']) <= 10)} |
| (d) idle resident memory, {c['credentials']:,} credentials | {c['rss_mb']} MB | | | ≤ 150 MB | {met(float(c['rss_mb']) <= 150)} |

What is compared:
- the raw loop, with warm clients and no state: create an access key,
  verify it with STS as itself, write it to Vault (KV v2), delete the old
  key. It is what a rotation cannot do without, and it keeps no promise:
  a crash anywhere in it orphans a key or loses one;
- the rotator: `Engine.reconcile` with `--revoke-now` in a warm process (a)
  and the mass rotation of `rotator rotate --revoke-now` at
  `ROTATOR_MAX_CONCURRENCY={CONCURRENCY}` (b), with everything the contract asks for:
  the state record written with check-and-set before and after each side
  effect, the stash, the mark on the key, the live path's metadata, the old
  key deactivated, deleted and confirmed rejected by STS, the audit log.

(a) {f['rotations']} rotations per phase, one IAM user for each side; per phase (ms):
raw {s['phases_ms']['raw']}, rotator {s['phases_ms']['rotator']}.
(b) {f['batch']} IAM users per side, each rotated once per phase; per phase (rotations/s):
raw {t['phases_per_s']['raw']}, rotator {t['phases_per_s']['rotator']}.
(c) counted by a recording proxy in front of OpenBao and of moto (not in
the timed phases): the raw loop's one Vault write and {r['raw_aws']} AWS calls, against
the rotator's {r['rotator_vault']} Vault requests (no token lookup and one record read, in a
warm process) and {r['rotator_aws']} AWS calls (the key's mark, the usage check before
revoking, deactivation, deletion, untagging and the STS confirmation that the
old key is rejected, beside create and verify). In a running daemon a scheduled rotation
makes 6 Vault requests and its revocation, later, its own; docs/STATE.md
("Vault writes of a rotation") says which crash window each write closes,
and tests/test_vault_requests.py holds the bounds. `rotate NAME --revoke-now`
as a fresh process: {r['cli_vault']} Vault requests (token lookup and record read included), {r['cli_aws']} AWS calls.
(d) `bench/scale.py`: one `rotator run` with {c['credentials']:,} credential files in steady
state (nothing due): start-up until every state record was read once; resident memory after
{c['idle_seconds']} s idle ({c['idle_ticks']} ticks, {c['vault_requests_idle']} Vault requests: {c['idle_request_paths']});
CPU while idle {c['idle_cpu_percent_of_core']} % of a core. There is no raw counterpart: these are
compared with their targets.

Where the time goes (cProfile of 10 warm in-process rotations): about 70 %
in botocore calls to moto and 20 % in Vault requests, so the ratio follows
the request counts. The AWS calls beyond the raw loop's three are what the
contract asks for: listing the key ids at the start (crash sweep), the
capacity check before the create, the key's mark and its removal, the
deactivation before the deletion, the STS confirmation that the old key is
rejected, and (issue 10, F50) listing the keys again after the promotion
(3 calls with one key's last use). The targets (a) and (b) are not reached
with these calls; start-up (d) was 5.9 s on 2026-11-28 with the same
script and has not been bisected since.

How the rotator gets there (issue 15): one botocore session for every STS
client (no model re-read from disk per key); one record write per state
transition that a crash needs, the lease riding on each; no read before a
check-and-set write whose version is known, nor of metadata a write's answer
already gave; a daemon's first write checks its remembered record instead
of reading it; the change feed written only when others must hear of a
change, by one thread per process; no lock held across a request.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=30, help="sequential rotations per phase")
    parser.add_argument("--batch", type=int, default=64, help="credentials per side in the concurrency phases")
    parser.add_argument("--credentials", type=int, default=10_000, help="credentials for the start-up and memory figures")
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--write", type=Path, help="write the figures to this Markdown file")
    args = parser.parse_args()
    figures = run(args)
    print(json.dumps(figures, indent=2))
    print(summary(figures), file=sys.stderr)
    if args.write:
        args.write.write_text(render(figures))


if __name__ == "__main__":
    main()
