"""The rotator against the raw API calls it needs, side by side (issue 15).

One run starts OpenBao and a moto server the way the tests do
(rotator.sandbox.services) and measures, in ABBA order (raw, minimum,
rotator, rotator, minimum, raw) so that a change of load on the machine hits all alike:

- (a) sequential cost of one rotation with warm clients: the raw loop is
  boto3 + hvac (create a key, verify it with STS as itself, write Vault,
  delete the old key: the issue's loop); the contract's minimum loop makes,
  bare, the calls the contract and crash safety require of one rotation
  (`MinimalLoop.CALLS`, each with the clause that requires it); the rotator
  is `Engine.reconcile` with `--revoke-now` (everything `rotate NAME
  --revoke-now` does after start);
- (b) throughput of a batch at concurrency 16: both loops on 16 threads,
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


class MinimalLoop(RawLoop):
    """The calls the contract requires of one `--revoke-now` rotation of an AWS
    key, made bare with warm clients (no engine, no retries, no audit log):
    the rotator's own overhead is what it costs beyond these."""

    CALLS = [
        ("AWS ListAccessKeys", "the keys before the create: an unmarked key made since is this rotation's (a crash between create and tag, §6.4)"),
        ("Vault write: state record `issuing` (check-and-set)", "the rotation and its lease before the mint (§6.4, §6.5; docs/STATE.md write 1)"),
        ("AWS TagUser (`rotator-issuing:NAME`)", "the rotation that is creating: a key it makes and no mark names yet is its own, the record lost or not (§6.4)"),
        ("AWS CreateAccessKey", "the new key"),
        ("AWS TagUser", "its mark, the issuing tag cleared: a crash or a lost response leaves a key the sweep can find (§6.4, §6.8)"),
        ("Vault write: stash entry (cas=0)", "the new secret kept before it is used (§6.4; docs/STATE.md write 2)"),
        ("AWS GetCallerIdentity as the new key", "verified by using it (§6.2)"),
        ("Vault write: state record `verified`", "a crash after the live write is finished, not redone (docs/STATE.md write 3)"),
        ("Vault write: live path (check-and-set)", "the new version consumers read; nobody else's write overwritten (§4, §5)"),
        ("Vault metadata write: live path's `rotator-key-id`", "which key is live: nothing revokes it (§6.1; docs/STATE.md write 5)"),
        ("Vault read: the old key's stash entry", "its secret: STS must reject the old key itself (§6.3)"),
        ("AWS DeleteAccessKey", "--revoke-now: the old key revoked at once (§2, §6.3)"),
        ("AWS UntagUser", "its mark removed (IAM allows 50 tags per user: without it rotations stop after 50)"),
        ("AWS GetCallerIdentity as the old key", "revoked means the provider rejects it (§6.3)"),
        ("Vault write: state record done (old key revoked, lease released)", "the rotation finished (docs/STATE.md writes 6 and 8)"),
        ("Vault delete: the old key's stash entry", "no dead secret left in Vault (docs/STATE.md write 9)"),
    ]

    def __init__(self, moto_env: dict[str, str], vault_addr: str, token: str) -> None:
        super().__init__(moto_env, vault_addr, token)
        self.state: dict[str, tuple[int, int, int]] = {}  # user -> (record version, live version, rotations)

    def rotate(self, user: str) -> None:
        kv = self._vault().secrets.kv.v2
        record, live, n = self.state.get(user, (0, 0, 0))
        before = self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
        rid = f"r{n + 1}"
        record = kv.create_or_update_secret(path=f"minimal/state/{user}", mount_point="secret", cas=record,
                                            secret={"phase": "issuing", "rotation": rid, "before": [k["AccessKeyId"] for k in before]})["data"]["version"]
        issuing = " ".join([rid, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), *(k["AccessKeyId"] for k in before)])
        self.iam.tag_user(UserName=user, Tags=[{"Key": f"rotator-issuing:{user}", "Value": issuing}])
        new = self.iam.create_access_key(UserName=user)["AccessKey"]
        self.iam.tag_user(UserName=user, Tags=[{"Key": new["AccessKeyId"], "Value": f"rotator:{user}:{rid}"},
                                               {"Key": f"rotator-issuing:{user}", "Value": ""}])
        kv.create_or_update_secret(path=f"minimal/stash/{user}/{rid}", mount_point="secret", cas=0,
                                   secret={"access_key_id": new["AccessKeyId"], "secret_access_key": new["SecretAccessKey"]})
        with self._sts_lock:
            sts = self.session.client("sts", endpoint_url=self.endpoint, aws_access_key_id=new["AccessKeyId"],
                                      aws_secret_access_key=new["SecretAccessKey"])
        sts.get_caller_identity()
        record = kv.create_or_update_secret(path=f"minimal/state/{user}", mount_point="secret", cas=record,
                                            secret={"phase": "verified", "rotation": rid, "key": new["AccessKeyId"]})["data"]["version"]
        live = kv.create_or_update_secret(path=f"minimal/live/{user}", mount_point="secret", cas=live,
                                          secret={"access_key_id": new["AccessKeyId"], "secret_access_key": new["SecretAccessKey"]})["data"]["version"]
        kv.update_metadata(path=f"minimal/live/{user}", mount_point="secret", custom_metadata={"rotator-key-id": new["AccessKeyId"]})
        if n:
            old = kv.read_secret_version(path=f"minimal/stash/{user}/r{n}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
            self.iam.delete_access_key(UserName=user, AccessKeyId=old["access_key_id"])
            self.iam.untag_user(UserName=user, TagKeys=[old["access_key_id"]])
            with self._sts_lock:
                sts = self.session.client("sts", endpoint_url=self.endpoint, aws_access_key_id=old["access_key_id"],
                                          aws_secret_access_key=old["secret_access_key"])
            try:
                sts.get_caller_identity()
                raise RuntimeError("STS still accepts the deleted key")
            except botocore.exceptions.ClientError:
                pass
        record = kv.create_or_update_secret(path=f"minimal/state/{user}", mount_point="secret", cas=record,
                                            secret={"phase": "idle", "current": new["AccessKeyId"]})["data"]["version"]
        if n:
            kv.delete_metadata_and_all_versions(path=f"minimal/stash/{user}/r{n}", mount_point="secret")
        self.state[user] = (record, live, n + 1)


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


ORDER = ("raw", "minimal", "rotator", "rotator", "minimal", "raw")  # ABBA, with the minimum loop between


def sequential(raw: RawLoop, minimal: MinimalLoop, rot: Rotator, users: dict[str, str], n: int) -> dict[str, Any]:
    phases: dict[str, list[float]] = {"raw": [], "minimal": [], "rotator": []}
    sides: dict[str, Callable[[str], None]] = {"raw": raw.rotate, "minimal": minimal.rotate, "rotator": rot.rotate}
    for kind in ORDER:
        rotate, user = sides[kind], users[kind]
        phases[kind].append(timed(lambda: [rotate(user) for _ in range(n)]) / n)
    ms = {k: 1000 * statistics.mean(v) for k, v in phases.items()}
    return {"raw_ms": round(ms["raw"], 1), "minimal_ms": round(ms["minimal"], 1), "rotator_ms": round(ms["rotator"], 1),
            "ratio": round(ms["rotator"] / ms["raw"], 2), "ratio_minimal": round(ms["rotator"] / ms["minimal"], 2),
            "phases_ms": {k: [round(1000 * v, 1) for v in vs] for k, vs in phases.items()}}


def throughput(raw: RawLoop, minimal: MinimalLoop, rot: Rotator, batches: dict[str, list[str]]) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"raw": [], "minimal": [], "rotator": []}
    for kind in ORDER:
        if kind == "rotator":
            def batch() -> None:
                rot.rotate_batch(batches["rotator"])
        else:
            loop = raw if kind == "raw" else minimal

            def batch() -> None:
                with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                    list(pool.map(loop.rotate, batches[kind]))
        rates[kind].append(len(batches[kind]) / timed(batch))
    rate = {k: statistics.mean(v) for k, v in rates.items()}
    return {"raw_per_s": round(rate["raw"], 1), "minimal_per_s": round(rate["minimal"], 1), "rotator_per_s": round(rate["rotator"], 1),
            "ratio": round(rate["rotator"] / rate["raw"], 2), "ratio_minimal": round(rate["rotator"] / rate["minimal"], 2),
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
        minimal = MinimalLoop(env, vault.url, bao.token)
        minimal.rotate(users[2])
        v0, a0 = len(vault.requests()), len(aws.requests())
        minimal.rotate(users[2])
        minimal_counts = (len(vault.requests()) - v0, len(aws.requests()) - a0)
        minimal_actions = [s.action for s in aws.requests()[a0:]]

        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            rot = Rotator(work, users[1:2], vault.url, bao.token)
            rot.rotate(users[1])
            v0, a0 = len(vault.requests()), len(aws.requests())
            rot.rotate(users[1])
            in_process = (len(vault.requests()) - v0, len(aws.requests()) - a0)
            rotator_actions = [s.action for s in aws.requests()[a0:]]
            rotator_vault = [f"{s.method} {s.path.split('/v1/secret/', 1)[-1].split('/')[0]}" for s in vault.requests()[v0:]]
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
            "minimal_vault": minimal_counts[0], "minimal_aws": minimal_counts[1], "minimal_aws_calls": minimal_actions,
            "rotator_vault": in_process[0], "rotator_aws": in_process[1], "rotator_aws_calls": rotator_actions,
            "rotator_vault_calls": rotator_vault,
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
            users = [f"bench-{i:03d}" for i in range(3 * args.batch + 6)]
            for user in users:
                iam.create_user(UserName=user)
            seq = {"raw": users[0], "minimal": users[1], "rotator": users[2]}
            count_users = users[3:6]
            batches = {kind: users[6 + i * args.batch:6 + (i + 1) * args.batch] for i, kind in enumerate(("raw", "minimal", "rotator"))}
            load_before = load_average()
            raw = RawLoop(env, bao.addr, bao.token)
            minimal = MinimalLoop(env, bao.addr, bao.token)
            rot = Rotator(work, [seq["rotator"], *batches["rotator"]], bao.addr, bao.token)
            for user in [seq["raw"], *batches["raw"]]:
                raw.rotate(user)  # warm: every user holds one key, clients made
            for user in [seq["minimal"], *batches["minimal"]]:
                minimal.rotate(user)
            rot.rotate(seq["rotator"])
            rot.rotate_batch(batches["rotator"])
            figures: dict[str, Any] = {
                "sequential": sequential(raw, minimal, rot, seq, args.rotations),
                "throughput": throughput(raw, minimal, rot, batches),
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
        f"(a) one rotation:        rotator {s['rotator_ms']} ms, raw {s['raw_ms']} ms: {s['ratio']}x (target <= 1.5x);"
        f" contract minimum {s['minimal_ms']} ms: {s['ratio_minimal']}x",
        f"(b) batch at {CONCURRENCY}:         rotator {t['rotator_per_s']}/s, raw {t['raw_per_s']}/s: {100 * t['ratio']:.0f}% (target >= 80%);"
        f" contract minimum {t['minimal_per_s']}/s: {100 * t['ratio_minimal']:.0f}%",
        f"(c) requests/rotation:   Vault {r['rotator_vault']} vs {r['raw_vault']} ({r['vault_ratio']}x), AWS {r['rotator_aws']} vs {r['raw_aws']}"
        f" ({r['aws_ratio']}x); contract minimum: Vault {r['minimal_vault']}, AWS {r['minimal_aws']}"
        f"; rotate --revoke-now as a process: Vault {r['cli_vault']} (target <= 10), AWS {r['cli_aws']}",
        f"(d) {c['credentials']:,} credentials: start-up {c['startup_s']} s (target <= 10 s), idle RSS {c['rss_mb']} MB (target <= 150 MB)",
    ])


def render(f: dict[str, Any]) -> str:
    s, t, r, c = f["sequential"], f["throughput"], f["requests"], f["scale"]

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    calls = "\n".join(f"| {i} | {what} | {why} |" for i, (what, why) in enumerate(MinimalLoop.CALLS, 1))
    minimal_aws = ", ".join(a or "?" for a in r["minimal_aws_calls"])
    rotator_aws = ", ".join(a or "?" for a in r["rotator_aws_calls"])
    rotator_vault = ", ".join(r["rotator_vault_calls"])
    return f"""# Performance

Measured by `make bench` (`bench/compare.py`, which runs `bench/scale.py`
for the last rows) in one run on {f['date']}:
OpenBao dev server and moto server started as the tests start them
(`rotator/sandbox/services.py`), on loopback.

Machine: {f['machine']}. It is shared by five engineers: load average
{f['load_average']['before']} before the run and {f['load_average']['after']} after. Absolute
times on it are noisy; the ratios come from phases run in ABBA order (raw
loop, contract minimum, rotator, rotator, contract minimum, raw loop) in the
same run, so a change of load hits all three alike.

| measure | rotator | raw loop (issue 15) | ratio | target | | contract minimum | ratio |
|---|---|---|---|---|---|---|---|
| (a) one rotation, sequential, warm clients | {s['rotator_ms']} ms | {s['raw_ms']} ms | {s['ratio']}× | ≤ 1.5× | {met(s['ratio'] <= 1.5)} | {s['minimal_ms']} ms | {s['ratio_minimal']}× |
| (b) batch throughput at concurrency {CONCURRENCY} | {t['rotator_per_s']}/s | {t['raw_per_s']}/s | {100 * t['ratio']:.0f} % | ≥ 80 % | {met(t['ratio'] >= 0.8)} | {t['minimal_per_s']}/s | {100 * t['ratio_minimal']:.0f} % |
| (c) Vault requests per rotation (in process) | {r['rotator_vault']} | {r['raw_vault']} | {r['vault_ratio']}× | | | {r['minimal_vault']} | {round(r['rotator_vault'] / r['minimal_vault'], 2)}× |
| (c) AWS requests per rotation (in process) | {r['rotator_aws']} | {r['raw_aws']} | {r['aws_ratio']}× | | | {r['minimal_aws']} | {round(r['rotator_aws'] / r['minimal_aws'], 2)}× |
| (c) Vault requests, `rotate NAME --revoke-now` as a fresh process | {r['cli_vault']} | | | ≤ 10 | {met(r['cli_vault'] <= 10)} | | |
| (d) start-up, {c['credentials']:,} credentials | {c['startup_s']} s | | | ≤ 10 s | {met(float(c['startup_s']) <= 10)} | | |
| (d) idle resident memory, {c['credentials']:,} credentials | {c['rss_mb']} MB | | | ≤ 150 MB | {met(float(c['rss_mb']) <= 150)} | | |

What is compared:
- the raw loop (issue 15's), with warm clients and no state: create an
  access key, verify it with STS as itself, write it to Vault (KV v2),
  delete the old key. It keeps no promise: a crash anywhere in it orphans a
  key or loses one;
- the contract minimum (`MinimalLoop` in bench/compare.py): the same warm
  clients making, bare (no engine, no retries, no audit log, no lease
  logic), exactly the calls the contract and crash safety require of one
  `--revoke-now` rotation, listed below with the clause that requires each.
  The rotator against it is the rotator's own overhead;
- the rotator: `Engine.reconcile` with `--revoke-now` in a warm process (a)
  and the mass rotation of `rotator rotate --revoke-now` at
  `ROTATOR_MAX_CONCURRENCY={CONCURRENCY}` (b), with everything the contract asks for.

The calls the contract requires of one `--revoke-now` rotation of an AWS key:

| # | call | why (contract §, docs/STATE.md) |
|---|---|---|
{calls}

(a) {f['rotations']} rotations per phase, one IAM user for each side; per phase (ms):
raw {s['phases_ms']['raw']}, contract minimum {s['phases_ms']['minimal']}, rotator {s['phases_ms']['rotator']}.
(b) {f['batch']} IAM users per side, each rotated once per phase; per phase (rotations/s):
raw {t['phases_per_s']['raw']}, contract minimum {t['phases_per_s']['minimal']}, rotator {t['phases_per_s']['rotator']}.
(c) counted by a recording proxy in front of OpenBao and of moto (not in
the timed phases): the raw loop's {r['raw_vault']} Vault write and {r['raw_aws']} AWS calls; the
contract minimum's {r['minimal_vault']} Vault requests and {r['minimal_aws']} AWS calls ({minimal_aws});
the rotator's {r['rotator_vault']} Vault requests ({rotator_vault}) and {r['rotator_aws']} AWS calls
({rotator_aws}). Beyond the minimum, the rotator reads its state record
at the start of a reconcile (a warm process, no daemon memory) and lists the
user's keys once after the promotion (issue 10, F50: a key of this
credential that a restored record forgot is retired; one `ListAccessKeys`,
the tags only when it lists a key the record does not know). Before issue
15's third round (main 7b0ac32) the same rotation made 9 Vault requests and
13 AWS calls: a capacity listing before every create, a deactivation before
the deletion, and the F50 listing with tags and a last use per key.
In a running daemon a scheduled rotation
makes 6 Vault requests and its revocation, later, its own; docs/STATE.md
("Vault writes of a rotation") says which crash window each write closes,
and tests/test_vault_requests.py holds the bounds and the AWS call list. `rotate NAME --revoke-now`
as a fresh process: {r['cli_vault']} Vault requests (token lookup and record read included), {r['cli_aws']} AWS calls.
(d) `bench/scale.py`: one `rotator run` with {c['credentials']:,} credential files in steady
state (nothing due): start-up until every state record was read once; resident memory after
{c['idle_seconds']} s idle ({c['idle_ticks']} ticks, {c['vault_requests_idle']} Vault requests: {c['idle_request_paths']});
CPU while idle {c['idle_cpu_percent_of_core']} % of a core. There is no raw counterpart: these are
compared with their targets. Start-up is load-bound on this machine: see
"Start-up" below.

Where the time goes: on moto and a dev OpenBao every request costs about
the same here ({s['raw_ms'] / (r['raw_vault'] + r['raw_aws']):.1f} ms each in the raw loop, {s['minimal_ms'] / (r['minimal_vault'] + r['minimal_aws']):.1f} ms in the contract
minimum, {s['rotator_ms'] / (r['rotator_vault'] + r['rotator_aws']):.1f} ms in the rotator), so a rotation's cost follows its request
count. Any implementation that makes the contract's {r['minimal_vault'] + r['minimal_aws']} requests costs about
{(r['minimal_vault'] + r['minimal_aws']) / (r['raw_vault'] + r['raw_aws']):.1f}× the issue's raw loop of {r['raw_vault'] + r['raw_aws']}: that is why (a) ≤ 1.5× and (b) ≥ 80 %
against that loop are out of reach without dropping a call the contract
requires (the table above names the clause of each). Against the contract
minimum the rotator is at {s['ratio_minimal']}× per rotation and {100 * t['ratio_minimal']:.0f} % of its throughput
(its STS checks are cheaper than the loops' boto3 client per key).

## Start-up

Start-up (d) on this shared machine follows its load. A bisect on
2026-12-01 17:57 UTC (10,000 files as bench/scale.py writes them, one
seeded OpenBao, each tree's `rotator run` started in turn in ABBA order,
load average 5-7), seconds to `daemon.started` (files parsed) and to
`daemon.state_loaded`: 6080e78 (2026-11-28, 5.9 s then, load not recorded,
on kernel 6.18.44-fc-v595: another VM build) 8.4 / 19.8 and 9.3 / 21.1; df7c959 9.0 / 19.6 and
13.8 / 29.5; 7a9f4a7 11.8 / 25.7 and 12.5 / 26.3; main at bd8bb80
13.5 / 27.7 and 13.3 / 27.7 (main measured 18.9 s at load 1-2.5 on
2026-12-01 17:30 UTC, and 17.9 s at load 2-2.7 on 8e92bf5 at 19:38 UTC).
Then the start-up was two halves one after the other: parsing the files
(Python, one core), with the hostile-YAML event scan parsing each file a
second time (a quarter of parsing) and the secret-lookalike scan of every
key and value (a tenth); then reading the 10,000 records, which is mostly
OpenBao's CPU: about 1 ms of it per read with the audit device on (0.7 ms
without), measured from `/proc` at load 6-7, so about 10 s of CPU for the
records alone on a 2-core machine shared with everything else.

Since (issue 15, target (d)), without changing any rule:
- an ordinary credential file is parsed once, its data built from the very
  events the hostile-YAML rules check (rotator/config/yamlfile.py
  `_single_pass`); a file with an explicit tag, a repeated key or several
  documents still takes the scan and PyYAML's loader, so both refuse and
  build the same (tests/test_startup_parsing.py compares them on generated
  YAML, Hypothesis);
- the secret-lookalike scan spells a field's path only when it reports it,
  skips texts shorter than any secret pattern can match (14 characters,
  derived from the patterns in the test) and tries the patterns in one
  search; the policy check remembers which params fields name URLs and
  Vault references per provider model;
- the daemon reads each credential's record as soon as its file is parsed,
  while the other files are still parsed, on 16 connections
  (rotator/daemon/prefetch.py), so OpenBao works on the other core during
  the parsing. The change feed's baseline is read before the first record,
  and the records the daemon's first poll names as changed since are read
  again rather than used: a prefetched record is never staler than one
  read after the parsing (tests/test_startup_reads.py). `daemon.started` is
  still logged after the files, `daemon.state_loaded` only once every
  record was read and remembered; no due time is guessed;
- the reads are plain HTTP/1.1 on keep-alive sockets with a parser of the
  three headers that matter (rotator/vault/bulk.py): 0.18 ms of the
  rotator's CPU per record instead of 0.4 ms through `http.client`; any
  framing it does not expect leaves the record to the ordinary client.

Figures: loading the 10,000 files in process (`load_credentials`, warm,
ABBA at load 2.5-3.3, 20:40 UTC): 8.0 s and 11.5 s before, 4.7 s and 4.5 s
with the parsing changes. The daemon, seconds to `daemon.state_loaded`
(ABBA, one seeded OpenBao, at load 6-7, 21:16 UTC): e023a0e 22.2 s and
24.9 s, with the prefetch on 8 connections 19.1 s and 18.3 s. In process at
load 7-10, to all records remembered: no prefetch 25.5 s and 22.6 s, 8
connections 20-22 s, 16 connections 16.7 s and 19.7 s (OpenBao's share of
a busy machine grows with its busy goroutines). `bench/scale.py` (the
table, ¹) at load 8-10: 16.75 s and 25.42 s against 31.08 s and 27.63 s;
again, 21:51-21:57 UTC at load 8-9 (this tree first): 18.86 s and 21.19 s
against 35.24 s and 31.05 s, resident memory 143.7 and 143.2 MB against
148.1 and 148.2 MB, idle CPU 1.1 and 0.8 % of a core against 3.8 and 4.8 %.
The ≤ 10 s target was not reached in any run of this session: no run was
at low load (the machine ran other sessions' suites throughout), and at
load 7-10 OpenBao's 10,000 reads alone take 10-15 s of wall time. The
remaining Python CPU of a start-up is about 7 s at that load (imports
1.6 s, parsing and validating 4.5 s, the records 1 s); with OpenBao's 10 s
on the other core, an idle 2-core machine could just reach 10 s. On
2026-12-02 (issue 15, session 8; another VM build, 6.18.44-fc-v669, load
1.1-1.6) it did: `bench/scale.py` alone, ABBA, f754d4c against 10e39e9
(a credential's fingerprint computed when first asked, not for every file;
durations parsed once per distinct text; the listing sorted by name):
7.55 s and 6.34 s against 6.55 s and 6.62 s to every record read, the
files parsed at 4.92 s and 3.95 s against 3.08 s and 3.58 s, resident
memory 146.2-146.5 MB against 145.4-145.6 MB. OpenBao's reads bound the
total: the faster parsing moved `daemon.started`, hardly the end.

How the rotator gets there (issue 15): one record write per state
transition that a crash needs, the lease riding on each; no read before a
check-and-set write whose version is known, nor of metadata a write's answer
already gave; a daemon's first write checks its remembered record instead
of reading it; the change feed written only when others must hear of a
change, by one thread per process; no lock held across a request. On AWS:
the create first (the keys listed only after `LimitExceeded`), no
deactivation right before a deletion, the after-promotion listing by ids
only, and each STS check one request signed with the key itself (SigV4)
through a pooled HTTP session, no botocore client per key.
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
