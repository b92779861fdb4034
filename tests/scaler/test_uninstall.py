"""``harbinger uninstall`` on the real apiserver gives back what Harbinger changed: the webhook
configuration goes, pods waiting for Harbinger's scheduler are made again, Harbinger's own
Deployments stop, every raised floor returns to the declared one, and every chaos fault is
removed; the team's own objects are left as they were."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from chaos.faults import FAULT_KEYS, ActiveFault, Fault
from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.profile import CapacityProfile
from harbinger_dev.localcluster import LocalCluster
from scaler.controller import Planner
from tests.scaler.conftest import NODE_SELECTOR, deployment_body

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.0, warmup_seconds=60, min_replicas=1, max_replicas=20)


async def test_uninstall_gives_back_what_harbinger_changed(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, new_service: Any, forecast: Any,
    scripted: Any, scaler_nodes: Any,
) -> None:
    await scaler_nodes(1)
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    mark = f"harbinger-test-uninstall={uuid.uuid4().hex[:8]}"
    key, value = mark.split("=")
    apps: Any = client.AppsV1Api(kube)
    core: Any = client.CoreV1Api(kube)
    admission: Any = client.AdmissionregistrationV1Api(kube)
    autoscaling = client.AutoscalingV2Api(kube)

    # A floor the planner raised (checkout: 80 req/s at 10 a replica), and a team's own HPA.
    await new_service(kube, namespace, "checkout", annotations={contract.CAPACITY_PROFILE: PROFILE.model_dump_json()})
    await new_service(kube, namespace, "search", min_replicas=2)
    planner = Planner(kube, forecasts=scripted({"checkout": forecast("checkout", T0, [80.0] * 4)}),
                      clock=ManualClock(T0), namespaces=frozenset({namespace}), node_selector=NODE_SELECTOR)
    await planner.run_once()
    assert (await autoscaling.read_namespaced_horizontal_pod_autoscaler("checkout", namespace)).spec.min_replicas == 8

    # A fault the chaos controller left on a pod.
    fault = ActiveFault(Fault(abort_status=503), datetime.now(UTC) + timedelta(hours=1), "left").annotations()
    fault[contract.CHAOS_ORIGINAL] = json.dumps({k: None for k in FAULT_KEYS})
    await core.create_namespaced_pod(namespace, {
        "metadata": {"name": "payments-0", "annotations": fault,
                     "labels": {contract.APP_NAME_LABEL: "payments", contract.CHAOS_OWNED_LABEL: "patched"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}],
                 "nodeSelector": {"harbinger-test": "nowhere"}}})
    # The webhook's configuration (one that stamps nothing), a "Harbinger component", and a pod
    # the webhook sent to Harbinger's scheduler, still waiting for it.
    await admission.create_mutating_webhook_configuration({
        "metadata": {"name": f"uninstall-{value}", "labels": {key: value}},
        "webhooks": [{"name": "pods.uninstall.harbinger.io", "admissionReviewVersions": ["v1"],
                      "sideEffects": "None", "failurePolicy": "Ignore",
                      "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
                      "namespaceSelector": {"matchLabels": {key: value}},
                      "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"]}]}]})
    component = deployment_body("harbinger-component")
    component["metadata"]["labels"][key] = value
    component["spec"]["template"]["metadata"]["labels"][key] = value
    await apps.create_namespaced_deployment(namespace, component)
    waiting = deployment_body("warm")
    waiting["spec"]["template"]["spec"]["schedulerName"] = contract.SCHEDULER_NAME
    await apps.create_namespaced_deployment(namespace, waiting)

    async def pods_of(app: str) -> list[str]:
        listed = await core.list_namespaced_pod(namespace, label_selector=f"{contract.APP_NAME_LABEL}={app}")
        return [p.metadata.name for p in listed.items if not p.metadata.deletion_timestamp]

    for _ in range(100):
        if await pods_of("warm"):
            break
        await asyncio.sleep(0.1)
    (stuck,) = await pods_of("warm")

    result = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "harbinger.cli", "uninstall", f"--kubeconfig={cluster.kubeconfig}",
        f"--selector={mark}", f"--namespace={namespace}", "--json"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout.splitlines()[-1])
    assert said["failed"] == []
    assert f"MutatingWebhookConfiguration uninstall-{value} deleted" in said["given_back"]
    assert f"Deployment {namespace}/harbinger-component scaled to 0" in said["given_back"]
    assert (f"HorizontalPodAutoscaler {namespace}/checkout spec.minReplicas 8 -> 1 (floor given back)"
            in said["given_back"])

    checkout = await autoscaling.read_namespaced_horizontal_pod_autoscaler("checkout", namespace)
    assert checkout.spec.min_replicas == 1
    assert not {contract.DECLARED_MIN_REPLICAS, contract.APPLIED_FLOOR} & set(checkout.metadata.annotations or {})
    assert contract.FLOOR_RAISED_LABEL not in (checkout.metadata.labels or {})
    assert (await autoscaling.read_namespaced_horizontal_pod_autoscaler("search", namespace)).spec.min_replicas == 2
    pod = await core.read_namespaced_pod("payments-0", namespace)
    assert not set(FAULT_KEYS) & set(pod.metadata.annotations or {})
    assert not [c for c in (await admission.list_mutating_webhook_configuration(label_selector=mark)).items]
    assert (await apps.read_namespaced_deployment("harbinger-component", namespace)).spec.replicas == 0
    assert stuck not in await pods_of("warm")  # made again by its ReplicaSet

    # Run again: nothing left to give back, and saying so is a success.
    again = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "harbinger.cli", "uninstall", f"--kubeconfig={cluster.kubeconfig}",
        f"--selector={mark}", f"--namespace={namespace}"], capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "nothing left to give back" in again.stdout, again.stdout + again.stderr
