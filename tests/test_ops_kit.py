"""The operations kit in deploy/: Prometheus rules (checked and unit-tested
by promtool), the Grafana dashboard, and the Kubernetes manifests
(kubernetes-validate); every metric they name is one a real daemon exports."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from debian_tool import need
from helpers import DaemonProcess, names, write_credential
from rotator.sandbox.services import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rotator-rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rotator-rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "rotator-dashboard.json"
# Series Prometheus makes itself for each scrape target, not the daemon.
SCRAPE_SERIES = {"up"}
ALERTS = {  # what issue 16 asks the rules to cover
    "RotatorRotationsFailing", "RotatorCredentialOverdue", "RotatorRevocationHeld", "RotatorRevocationPendingTooLong",
    "RotatorDegraded", "RotatorDown", "RotatorAbsent", "RotatorLoopStalled", "RotatorVaultTokenExpiringSoon",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = need("promtool", "prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=RULES.parent)


def test_the_alerting_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    tested = promtool("test", "rules", RULES_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    tested_alerts = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"] for t in case["alert_rule_test"]}
    assert tested_alerts == ALERTS == {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}


def test_promtool_test_rules_fails_when_an_alert_is_broken(tmp_path: Path) -> None:
    """The unit tests can fail: the token alert with its threshold off by a factor fails them."""
    broken = RULES.read_text().replace("- time() < 900", "- time() < 90")
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULES_TEST.name).write_text(RULES_TEST.read_text())
    tool = need("promtool", "prometheus")
    tested = subprocess.run([tool, "test", "rules", RULES_TEST.name], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert tested.returncode != 0 and "RotatorVaultTokenExpiringSoon" in tested.stdout + tested.stderr


def _expressions() -> dict[str, str]:
    """Every PromQL expression in the rules and the dashboard, by where it is."""
    found = {f"rule {r['alert']}": r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "expr" in node:
                found[f"dashboard {where} {node.get('refId', '')}"] = node["expr"]
            for key, value in node.items():
                walk(value, f"{where}/{node.get('title', key)}" if key == "targets" else where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(json.loads(DASHBOARD.read_text()), "")
    return found


def _metric_names(expr: str) -> set[str]:
    """Series names in one expression: rotator_* names, and `up`."""
    return set(re.findall(r"\b(rotator_[a-z0-9_]+|up)\b", expr))


def test_every_metric_the_rules_and_dashboard_name_is_one_a_running_daemon_exports(
    rotator_env: dict[str, str], config_dir: Path, iam_user: str, bao_client: hvac.Client
) -> None:
    """One real `rotator run` (OpenBao and moto), its /metrics read after a
    rotation; its Vault token has a 2 h TTL, so the expiry gauge is real."""
    expressions = _expressions()
    assert len([w for w in expressions if w.startswith("dashboard")]) >= 10
    for where, expr in expressions.items():
        assert _metric_names(expr), f"{where} names no rotator metric: {expr}"
    write_credential(config_dir, iam_user, params={"user_name": iam_user})
    token = bao_client.auth.token.create(policies=["root"], ttl="2h")["auth"]["client_token"]
    port = free_port()
    env = {**rotator_env, "VAULT_TOKEN": token, "ROTATOR_TICK_SECONDS": "0.5", "ROTATOR_METRICS_ADDR": f"127.0.0.1:{port}"}
    daemon = DaemonProcess(env)
    try:
        daemon.wait_for(lambda ev: "rotation.completed" in names(ev), what="a rotation")
        exported, samples = _scrape(port, lambda s: "rotator_rotation_duration_seconds_count" in s)
    finally:
        assert daemon.stop() == 0
    named = set().union(*(_metric_names(e) for e in expressions.values()))
    missing = {name for name in named - SCRAPE_SERIES if name not in exported and f"{name}_bucket" not in exported}
    assert not missing, f"named in deploy/ but not exported by the daemon: {sorted(missing)}"
    # The two gauges the rules added read true values.
    assert abs(samples["rotator_vault_token_expiry_timestamp_seconds"] - (time.time() + 7200)) < 300
    assert 0 <= time.time() - samples["rotator_last_tick_timestamp_seconds"] < 30
    assert token not in daemon.output()


def _scrape(port: int, ready: Any) -> tuple[set[str], dict[str, float]]:
    """Sample names on /metrics (histogram samples as exported: _bucket,
    _count, _sum) and the value of each unlabelled one, once `ready`."""
    deadline = time.monotonic() + 15
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        if ready(body) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    exported: set[str] = set()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            exported.add(sample.name)
            if not sample.labels:
                values[sample.name] = sample.value
    return exported, values


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_alert_says_what_to_do(name: str) -> None:
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r["alert"] == name)
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 40


# -- Kubernetes manifests -------------------------------------------------------

K8S = DEPLOY / "kubernetes"
OLDEST_SCHEMA = "1.25.0"  # the oldest Kubernetes whose schemas kubernetes-validate ships


def _manifests() -> dict[str, dict[str, Any]]:
    """Every resource in deploy/kubernetes, by kind (one resource a file)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml lists every manifest and only those"
    docs = [yaml.safe_load((K8S / name).read_text()) for name in sorted(listed)]
    return {doc["kind"]: doc for doc in docs}


def test_the_kubernetes_manifests_validate_strictly_against_the_shipped_schemas() -> None:
    """kubernetes-validate ships the schemas: no network (checked once under `unshare -n`, docs/OPERATIONS.md)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra: make install")
    manifests = _manifests()
    assert set(manifests) == {"ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    for version in (kubernetes_validate.latest_version(), OLDEST_SCHEMA):
        for kind, doc in manifests.items():
            kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field
    # ...and it does catch a mistake: a misspelt field, and a wrong type.
    deployment = manifests["Deployment"]
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = json.loads(json.dumps(deployment))
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_is_restricted_probed_replicated_and_authenticates_to_vault_as_its_service_account() -> None:
    m = _manifests()
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] > 1
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROTATOR_METRICS_ADDR"].rpartition(":")[2] == str(port["containerPort"])
    # Pod Security Standards, "restricted" profile.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not any("hostPath" in v for v in pod["volumes"]) and not pod.get("hostNetwork")
    # The Dockerfile's user, so runAsNonRoot can be checked by the kubelet.
    assert f"USER {pod['securityContext']['runAsUser']}:" in (ROOT / "Dockerfile").read_text()
    # Vault's Kubernetes auth with this ServiceAccount's projected token.
    assert pod["serviceAccountName"] == m["ServiceAccount"]["metadata"]["name"]
    assert env["ROTATOR_VAULT_AUTH"] == "kubernetes" and env["ROTATOR_VAULT_K8S_ROLE"]
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    token_dir, _, token_name = env["ROTATOR_VAULT_K8S_TOKEN_FILE"].rpartition("/")
    token_volume = next(v for v in pod["volumes"] if v["name"] == mounts[token_dir])
    assert token_volume["projected"]["sources"][0]["serviceAccountToken"]["path"] == token_name
    # Credential files from the ConfigMap, where the daemon reads them.
    config_volume = next(v for v in pod["volumes"] if v["name"] == mounts[env["ROTATOR_CONFIG_DIR"]])
    assert config_volume["configMap"]["name"] == m["ConfigMap"]["metadata"]["name"]
    # The PDB keeps one replica through a drain; it and the policy select these pods.
    pdb = m["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and 0 < pdb["minAvailable"] < deployment["spec"]["replicas"]
    policy = m["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items() and set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [port["name"]], "ingress to the metrics port only"
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 8200, 443}, "DNS, Vault, provider APIs"
    assert int(env["VAULT_ADDR"].rpartition(":")[2]) == 8200
    public = next(r for r in policy["egress"] if any("ipBlock" in t for t in r["to"]))["to"][0]["ipBlock"]
    assert "169.254.0.0/16" in public["except"], "no cloud metadata endpoint"


def test_the_configmaps_credential_files_validate_as_the_kubelet_mounts_them(tmp_path: Path) -> None:
    """A ConfigMap volume is symbolic links into a hidden, timestamped
    directory (`x.yaml -> ..data/x.yaml`, `..data -> ..2026_…`): the loader
    accepts those links, which stay inside the directory."""
    from helpers import run_rotator

    files = _manifests()["ConfigMap"]["data"]
    mount = tmp_path / "credentials.d"
    stamped = mount / "..2026_12_01_12_00_00.000000001"
    stamped.mkdir(parents=True)
    for name, text in files.items():
        (stamped / name).write_text(text)
        (stamped / name).chmod(0o444)
    (mount / "..data").symlink_to(stamped.name)
    for name in files:
        (mount / name).symlink_to(f"..data/{name}")
    done = run_rotator(["validate"], {"ROTATOR_CONFIG_DIR": str(mount)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(files)} credential file(s) valid" in done.stderr


def test_the_token_expiry_gauge_source_is_inf_for_a_token_that_never_expires_and_counts_down_otherwise(openbao, bao_client: hvac.Client) -> None:  # type: ignore[no-untyped-def]
    """VaultStore.token_expires_in, which the gauge is set from: None before
    the first lookup, inf for the root token (TTL 0), the TTL left for a
    child token; the alert stays quiet on inf (rotator-rules.test.yaml)."""
    from rotator.config.settings import VaultConnection
    from rotator.vault.store import VaultStore

    root = VaultStore(VaultConnection(url=openbao.addr, token=openbao.token))
    assert root.token_expires_in() is None
    root.login()
    assert root.token_expires_in() == float("inf")
    token = bao_client.auth.token.create(policies=["default"], ttl="30m")["auth"]["client_token"]
    child = VaultStore(VaultConnection(url=openbao.addr, token=token))
    child.login()
    left = child.token_expires_in()
    assert left is not None and 1700 < left <= 1800
