"""Harbinger installed the way a platform team installs it: its images built here without
Docker and loaded into a real node, ``kubectl apply -k manifests/`` exactly as shipped, and
a three-service application in an opted-in namespace. Then, through the cluster alone:

- every component comes up (the certificate Job, the webhook behind its Service, the
  scheduler with its extender, the planner, the chaos controller);
- the training CronJob trains a model for each service from Prometheus history (reached as
  ``prometheus.monitoring.svc``, by name through the cluster DNS);
- the webhook, called by the apiserver through its Service, stamps the forecast onto new
  pods and injects the slim chaos sidecar; warm-up pods are placed by ``harbinger-scheduler``
  on the node with bandwidth for them, not on the roomier node the default scheduler prefers;
- the planner writes a CapacityPlan for each Deployment and raises the HPAs' floors;
- the application is a real chain (frontend -> checkout -> payments, Services by name, every
  hop through its sidecar): a declared rehearsal injects errors into payments while a load
  generator sends real requests, breaches the frontend's SLO, rolls back, and the requests
  succeed again;
- ``harbinger uninstall`` gives every floor back and leaves no webhook configuration, and
  ``kubectl delete -k manifests/`` removes the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harbinger import contract
from harbinger_dev.chaosdemo import LoadGenerator
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus
from harbinger_dev.localcluster.addons import ready_for_manifests
from harbinger_dev.localcluster.imagebuild import SIDECAR_IMAGE, installable_images, unpacked_size
from harbinger_dev.localcluster.node import HELLO_IMAGE
from harbinger_dev.traces import load_trace

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHOP = "shop"
#: The application: three services with weeks of history (the nasa trace, scaled, so each
#: has its own level), and the Prometheus series the manifests' default query reads.
SERVICES = {"frontend": 1.0, "checkout": 0.5, "payments": 0.25}
#: Who calls whom: each service's pods call the next one's Service, through its sidecar.
CHAIN = {"frontend": "checkout", "checkout": "payments"}
#: Where the injected sidecar listens (its Service's targetPort) and serves its metrics.
SIDECAR_PORT, SIDECAR_METRICS_PORT = 15080, 15081
HISTORY_DAYS = 29
#: The history runs on past the fixture's start, standing in for the scrapes that would go on
#: in a cluster (the planner's short-horizon floor reads the last minutes' rate).
AHEAD = timedelta(hours=3)


def history(now: datetime) -> str:
    """OpenMetrics for ``istio_requests_total`` of each service: a counter every minute for
    the last ``HISTORY_DAYS`` days and the next ``AHEAD``, its rate the nasa trace's (moved by
    whole weeks to end after that, so weekdays stay weekdays)."""
    trace = load_trace("nasa", step_seconds=60).fillna(0.0)
    end = now.replace(second=0, microsecond=0) + AHEAD
    weeks = (end - trace.index[-1].to_pydatetime()) // timedelta(weeks=1) + 1
    shifted = trace.copy()
    shifted.index = shifted.index + timedelta(weeks=weeks) - timedelta(weeks=1)
    shifted = shifted[shifted.index > end - timedelta(days=HISTORY_DAYS)]
    shifted = shifted[shifted.index <= end]
    lines = ["# HELP istio_requests_total Requests.", "# TYPE istio_requests counter"]
    for service, scale in SERVICES.items():
        labels = (f'destination_workload="{service}",destination_workload_namespace="{SHOP}",'
                  'reporter="destination"')
        total = 0.0
        for stamp, tps in shifted.items():
            total += float(tps) * scale * 60.0
            lines.append(f"istio_requests_total{{{labels}}} {total:.1f} {int(stamp.timestamp())}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@dataclass
class Installed:
    cluster: LocalCluster
    prometheus: LocalPrometheus
    node: str
    image_sizes: dict[str, int]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait(self, what: str, check: Any, timeout: float = 180.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as error:
                last = error
            else:
                if last:
                    return last
            time.sleep(1.0)
        pytest.fail(f"{what} within {timeout:.0f}s (last: {last!r})\n{self.diagnose()}")

    def diagnose(self) -> str:
        """What went on, for a failure: pods, Events, each pod's last log lines (whole logs in
        ``$INSTALL_TEST_LOGS`` when set: a directory to write them to)."""
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout
        keep = os.environ.get("INSTALL_TEST_LOGS")
        logs = []
        for namespace in ("harbinger-system", SHOP):
            for pod in self.get("pods", "-n", namespace)["items"]:
                name = pod["metadata"]["name"]
                out = self.kubectl("logs", "-n", namespace, name, "--all-containers", check=False)
                if keep:
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    (Path(keep) / f"{namespace}_{name}.log").write_text(out.stdout + out.stderr)
                tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
                logs.append(f"--- {namespace}/{name}\n{tail}")
        return f"{pods}\n{events[-6000:]}\n" + "\n".join(logs)[-12000:]


def harbinger_cli(installed: Installed, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARBINGER_")}
    argv = [sys.executable, "-m", "harbinger.cli", *args, f"--kubeconfig={installed.cluster.kubeconfig}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


def application(name: str, *, annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Deployment, its HPA and its Service (to the sidecar's port, as a team that opts
    into chaos points it)."""
    labels = {contract.APP_NAME_LABEL: name}
    env = [{"name": "UPSTREAM", "value": f"http://{CHAIN[name]}.{SHOP}.svc/"}] if name in CHAIN else []
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": SHOP, "labels": labels, "annotations": annotations or {}},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "app", "image": HELLO_IMAGE, "imagePullPolicy": "Never", "env": env,
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    }
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": SHOP},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1, "maxReplicas": 6,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": SHOP},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": SIDECAR_PORT}]}}
    return [deployment, hpa, service]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("install")
    now = datetime.now(UTC)
    with LocalPrometheus(retention="60d", openmetrics=history(now)) as prometheus, \
            LocalCluster(real_nodes=1, hpa_sync_seconds=2) as cluster:
        node = cluster.real_nodes[0]
        assert cluster.binaries is not None
        images = installable_images(work / "images", Path(cluster.binaries["kube-scheduler"]))
        ready_for_manifests(cluster, prometheus, images)
        result = cluster.kubectl("apply", "-k", str(REPO / "manifests"), check=False)
        assert result.returncode == 0, result.stderr
        yield Installed(cluster, prometheus, node.name, {image.name: unpacked_size(image) for image in images})


def test_every_component_comes_up(installed: Installed) -> None:
    def job_done() -> bool:
        status = installed.get("job", "harbinger-webhook-certs", "-n", "harbinger-system")["status"]
        return bool(status.get("succeeded"))

    installed.wait("the certificate Job completed", job_done)
    for name in ("harbinger-webhook", "harbinger-scheduler", "harbinger-planner", "harbinger-chaos"):
        installed.wait(f"Deployment {name} available", lambda name=name: installed.get(
            "deployment", name, "-n", "harbinger-system")["status"].get("availableReplicas", 0) >= 1)
    webhook = installed.get("mutatingwebhookconfiguration", "harbinger-webhook")
    assert all(hook["clientConfig"].get("caBundle") for hook in webhook["webhooks"])
    # The sidecar image carries none of the training and plotting libraries.
    assert installed.image_sizes[SIDECAR_IMAGE] < installed.image_sizes[
        f"ghcr.io/harbinger-io/harbinger:{SIDECAR_IMAGE.rsplit(':', 1)[1]}"] / 3


def test_the_application_is_trained_inside_the_cluster(installed: Installed) -> None:
    installed.kubectl("create", "namespace", SHOP)
    installed.kubectl("label", "namespace", SHOP, f"{contract.ENABLED_LABEL}={contract.ENABLED_VALUE}",
                      f"{contract.CHAOS}={contract.CHAOS_ENABLED}")
    # The platform team's policy for the namespace: at least two replicas of everything (the
    # HPAs, as the teams wrote them, say one), at most four.
    policy = {"apiVersion": "harbinger.io/v1alpha1", "kind": "HarbingerPolicy",
              "metadata": {"name": "shop", "namespace": SHOP},
              "spec": {"capacity": {"rpsPerReplica": 5, "minReplicas": 2, "maxReplicas": 4}}}
    objects = [policy, *(obj for name in SERVICES for obj in application(name))]
    installed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    installed.kubectl("create", "job", "train-now", "--from=cronjob/harbinger-train", "-n", "harbinger-system")
    installed.wait("the training Job completed", lambda: installed.get(
        "job", "train-now", "-n", "harbinger-system")["status"].get("succeeded"), timeout=300)
    for service in SERVICES:
        stored = installed.get("configmap", f"model-{SHOP}-{service}", "-n", "harbinger-system")
        assert stored["metadata"]["annotations"][contract.MODEL_FOR] == f"{SHOP}/{service}"


def test_the_webhook_stamps_new_pods_through_its_service(installed: Installed) -> None:
    def stamped() -> dict[str, Any] | None:
        # A live pod admitted after the webhook's mirror had the model; else new pods, and look again.
        for pod in installed.get("pods", "-n", SHOP, "-l", f"{contract.APP_NAME_LABEL}=frontend")["items"]:
            if contract.MODEL_VERSION in pod["metadata"].get("annotations", {}) \
                    and not pod["metadata"].get("deletionTimestamp"):
                return pod
        installed.kubectl("delete", "pods", "-n", SHOP, "-l", f"{contract.APP_NAME_LABEL}=frontend", "--wait=false")
        time.sleep(3)
        return None

    pod = installed.wait("a frontend pod stamped with its forecast", stamped, timeout=180)
    annotations = pod["metadata"]["annotations"]
    assert float(annotations[contract.PREDICTED_TPS]) > 0
    sidecars = [c for c in pod["spec"]["containers"] if c["name"] == contract.CHAOS_SIDECAR_NAME]
    assert sidecars and sidecars[0]["image"] == SIDECAR_IMAGE
    name = pod["metadata"]["name"]
    installed.wait(f"pod {name} with its chaos sidecar Ready", lambda: all(
        c.get("ready") for c in installed.get("pod", name, "-n", SHOP)["status"].get("containerStatuses", [])))


def test_warmup_pods_are_placed_by_harbinger_scheduler_where_the_bandwidth_is(installed: Installed) -> None:
    # The real node has the bandwidth; a (KWOK) node with far more CPU and memory, which the
    # default scheduler prefers, has almost none.
    installed.kubectl("label", "node", installed.node, f"{contract.NODE_BANDWIDTH}=10G", "--overwrite")
    roomy = {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": "roomy", "labels": {contract.NODE_BANDWIDTH: "1", "type": "kwok",
                                                      "kubernetes.io/hostname": "roomy"}},
             "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}}
    installed.kubectl("apply", "-f", "-", input=json.dumps(roomy))
    try:
        installed.wait("the roomy node Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in installed.get("node", "roomy")["status"].get("conditions", [])))
        # A pod of no service, for the default scheduler: it goes to the roomy node.
        plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "default"},
                 "spec": {"containers": [{"name": "c", "image": HELLO_IMAGE, "imagePullPolicy": "Never"}]}}
        installed.kubectl("apply", "-f", "-", input=json.dumps(plain))
        assert installed.wait("the plain pod bound", lambda: installed.get("pod", "plain", "-n", "default")[
            "spec"].get("nodeName")) == "roomy"
        installed.kubectl("delete", "pod", "plain", "-n", "default", "--wait=false")

        # frontend's pods enter a warm-up window (as the planner writes it before a peak): the
        # rollout's new pods are stamped for harbinger-scheduler, whose extender filters out the
        # node without bandwidth for them.
        now = datetime.now(UTC)
        window = {contract.WARMUP_FROM: (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  contract.WARMUP_UNTIL: (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        installed.kubectl("patch", "deployment", "frontend", "-n", SHOP, "--type=merge", "-p",
                          json.dumps({"spec": {"template": {"metadata": {"annotations": window}}}}))

        def placed() -> dict[str, Any] | None:
            for pod in installed.get("pods", "-n", SHOP, "-l", f"{contract.APP_NAME_LABEL}=frontend")["items"]:
                annotations = pod["metadata"].get("annotations", {})
                if annotations.get(contract.WARMUP) == "true" and pod["spec"].get("nodeName"):
                    return pod
            return None

        pod = installed.wait("a warm-up pod of frontend bound", placed)
        assert pod["spec"]["schedulerName"] == "harbinger-scheduler"
        assert pod["spec"]["nodeName"] == installed.node
        assert pod["metadata"]["annotations"][contract.EGRESS_BANDWIDTH]
        events = installed.get("events", "-n", SHOP, "--field-selector",
                               f"involvedObject.name={pod['metadata']['name']}")
        assert any(e["reason"] == "Scheduled" and (e.get("reportingComponent") or e["source"].get("component"))
                   == "harbinger-scheduler" for e in events["items"]), events
    finally:
        installed.kubectl("delete", "node", "roomy", "--ignore-not-found")
        installed.kubectl("delete", "pod", "plain", "-n", "default", "--ignore-not-found", "--wait=false")


def test_the_planner_plans_every_deployment_and_raises_its_floor(installed: Installed) -> None:
    def planned() -> list[dict[str, Any]] | None:
        plans = installed.get("capacityplans.harbinger.io", "-n", SHOP)["items"]
        ready = [p for p in plans if p["metadata"]["name"] in SERVICES and p.get("status", {}).get("forecast")
                 and p["status"].get("plannedReplicas")]
        return ready if len(ready) == len(SERVICES) else None

    plans = installed.wait("a CapacityPlan with a forecast and a floor for every service", planned, timeout=240)
    raised = {p["metadata"]["name"]: p["status"]["plannedReplicas"] for p in plans}
    # Whether the short-horizon forecast adds replicas depends on the hour; the policy's floor does not.
    assert min(raised.values()) >= 2, json.dumps([p["status"] for p in plans])[:3000]

    def applied() -> bool:
        return all(installed.get("hpa", name, "-n", SHOP)["spec"]["minReplicas"] == max(1, floor)
                   for name, floor in raised.items())

    installed.wait(f"the HPAs' floors raised to the plans' {raised}", applied, timeout=120)


async def test_a_rehearsal_fails_real_requests_through_the_sidecars_and_rolls_back(installed: Installed) -> None:
    pods = {name: await asyncio.to_thread(installed.wait, f"{name}'s pods Ready with their sidecars",
                                           lambda name=name: ready_pods(installed, name))
            for name in SERVICES}
    # The test's Prometheus scrapes every sidecar (the host routes to the node's pods), one job
    # per service: what the chaos controller's steady-state queries select by default.
    for name, found in pods.items():
        for pod in found:
            installed.prometheus.add_target(name, f"{pod['status']['podIP']}:{SIDECAR_METRICS_PORT}")
    entry = f"http://{pods['frontend'][0]['status']['podIP']}:{SIDECAR_PORT}/"
    experiment = {
        "apiVersion": "harbinger.io/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "error-payments", "namespace": SHOP},
        "spec": {"target": "payments", "kind": "error", "watch": ["checkout", "frontend"], "dwellSeconds": 30,
                 "steps": [{"abortStatus": 503, "abortPercent": 1}, {"abortStatus": 503, "abortPercent": 60}],
                 "slo": {"maxErrorRate": 0.10, "maxP99Seconds": 2.0, "minThroughputRatio": 0.3,
                         "breachSamples": 2}}}

    def finished() -> dict[str, Any] | None:
        status = installed.get("chaosexperiments.harbinger.io", "error-payments", "-n", SHOP).get("status", {})
        ended = {"Held", "Breached", "Aborted", "NotSteady", "Failed", "Interrupted", "Invalid", "Expired"}
        return status if status.get("phase") in ended else None

    async with LoadGenerator(entry, rate=10, max_seconds=400) as during:
        await asyncio.sleep(20)  # steady traffic first: the controller measures its baseline after this
        assert during.stats.by_status.get(200, 0) > 100, during.stats
        await asyncio.to_thread(installed.kubectl, "apply", "-f", "-", input=json.dumps(experiment))
        status = await asyncio.to_thread(installed.wait, "the rehearsal finished", finished, 400)
    assert status["phase"] == "Breached", status
    assert status["breach"]["service"] in {"checkout", "frontend"} and status["rollback"]["reason"] == "breach"
    # The load generator saw the injected errors, passed on by checkout and frontend as 502s ...
    assert during.stats.by_status.get(502, 0) > 10, during.stats
    # ... and, once rolled back, every request succeeds again.
    for pod in pods["payments"]:
        assert not any(key.startswith(contract.CHAOS_PREFIX + "fault") for key in installed.get(
            "pod", pod["metadata"]["name"], "-n", SHOP)["metadata"].get("annotations", {}))
    # The sidecars see the fault gone at the kubelet's next sync of their pods (downward API).
    for _ in range(10):
        async with LoadGenerator(entry, rate=10, max_seconds=6) as after:
            await asyncio.sleep(5)
        if after.stats.by_status and set(after.stats.by_status) == {200}:
            break
    else:
        pytest.fail(f"requests still failed a minute after the rollback: {after.stats}")


def ready_pods(installed: Installed, name: str) -> list[dict[str, Any]] | None:
    found = installed.get("pods", "-n", SHOP, "-l", f"{contract.APP_NAME_LABEL}={name}")["items"]
    ready = [p for p in found if p["metadata"].get("deletionTimestamp") is None and p["status"].get("podIP")
             and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
             and any(c["name"] == contract.CHAOS_SIDECAR_NAME for c in p["spec"]["containers"])]
    return ready if ready and len(ready) == len([p for p in found if p["metadata"].get("deletionTimestamp") is None]) \
        else None


def test_uninstall_gives_everything_back(installed: Installed) -> None:
    result = harbinger_cli(installed, "uninstall")
    assert result.returncode == 0, result.stdout + result.stderr
    for service in SERVICES:
        hpa = installed.get("hpa", service, "-n", SHOP)
        assert hpa["spec"]["minReplicas"] == 1
        assert not any(key.startswith(contract.PREFIX) for key in hpa["metadata"].get("annotations", {}))
    assert installed.kubectl("get", "mutatingwebhookconfiguration", "harbinger-webhook",
                             check=False).returncode != 0
    # The webhook configuration is already gone: the documented command ignores what is.
    deleted = installed.kubectl("delete", "-k", str(REPO / "manifests"), "--ignore-not-found", "--wait=true",
                                "--timeout=180s", check=False)
    assert deleted.returncode == 0, deleted.stderr
    assert installed.kubectl("get", "namespace", "harbinger-system", check=False).returncode != 0
    assert installed.kubectl("get", "crd", "capacityplans.harbinger.io", check=False).returncode != 0
