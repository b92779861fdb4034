"""The optional monitoring component: it builds with the base, every PodMonitor selects a
shipped Deployment's pods by a port they declare, the alerts pass ``promtool check rules``,
and every query of the Grafana dashboard is accepted by a real Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from harbinger_dev.localcluster import LocalCluster, LocalPrometheus

REPO = Path(__file__).resolve().parents[2]
COMPONENT = REPO / "manifests" / "components" / "monitoring"


def built(cluster: LocalCluster) -> list[dict[str, Any]]:
    overlay = REPO / "manifests" / "overlays" / "monitoring"
    return [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(overlay)).stdout) if d]


def test_every_pod_monitor_scrapes_a_port_its_pods_declare(cluster: LocalCluster) -> None:
    docs = built(cluster)
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"harbinger-webhook", "harbinger-planner", "harbinger-chaos"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for monitor in monitors:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (deployment,) = [d for d in deployments
                         if wanted.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, (monitor["metadata"]["name"], ports)
    assert any(d["kind"] == "PrometheusRule" for d in docs)


def test_the_alerts_are_valid_prometheus_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool (Debian's prometheus package, installed by make setup) is missing")
    rule = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_every_dashboard_query_is_accepted_by_prometheus(prometheus: LocalPrometheus) -> None:
    dashboard = json.loads((COMPONENT / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 8
    for query in queries:
        concrete = query.replace("$namespace", ".*").replace("$service", ".*").replace("$__rate_interval", "5m")
        url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': concrete})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["status"] == "success", query


def test_the_install_keeps_the_kube_system_binding_in_kube_system(cluster: LocalCluster) -> None:
    # The scheduler's authentication reader binds a Role that only exists in kube-system;
    # every other namespaced object goes to harbinger-system.
    docs = [d for d in yaml.safe_load_all(cluster.kubectl("kustomize", str(REPO / "manifests")).stdout) if d]
    namespaces = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("namespace") for d in docs}
    assert namespaces[("RoleBinding", "harbinger-scheduler-authentication-reader")] == "kube-system"
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                      "MutatingWebhookConfiguration"}
    # kustomize's schema predates ValidatingAdmissionPolicy and gives it a namespace, which
    # kubectl drops for a cluster-scoped kind.
    unknown_to_kustomize = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for (kind, name), namespace in namespaces.items():
        if kind in unknown_to_kustomize:
            continue
        if kind in cluster_scoped:
            assert namespace is None, (kind, name)
        elif (kind, name) != ("RoleBinding", "harbinger-scheduler-authentication-reader"):
            assert namespace == "harbinger-system", (kind, name, namespace)
