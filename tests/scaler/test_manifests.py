"""``manifests/base/scaler`` builds, the apiserver accepts it, and its RBAC is enough for a
full planner run (Lease, reads, floor, annotations, Event) and no more; its
ValidatingAdmissionPolicy lets the planner's token change replica floors and harbinger.io/
metadata only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.profile import CapacityProfile
from harbinger_dev.localcluster import LocalCluster

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import AsAccount
from scaler.capacityplans import CapacityPlans
from scaler.controller import Planner
from scaler.leader import LeaderElector

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests" / "base" / "scaler"
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)


def built(cluster: LocalCluster) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout) if doc]


async def test_the_kustomization_builds_and_the_apiserver_accepts_it(cluster: LocalCluster, namespace: str) -> None:
    docs = built(cluster)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "harbinger-planner") in kinds
    assert ("ClusterRole", "harbinger-planner") in kinds
    assert ("Role", "harbinger-planner-lease") in kinds
    assert not any(d["kind"] == "Namespace" for d in docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    text = yaml.safe_dump_all(docs).replace("harbinger-system", namespace)
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    assert "deployment.apps/harbinger-planner created (server dry run)" in result.stdout


async def test_the_planners_rbac_is_enough_and_no_more(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any,
    forecast: Any, scripted: Any, as_account: AsAccount,
) -> None:
    cluster.kubectl("apply", "-k", str(MANIFESTS.parent / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/capacityplans.harbinger.io",
                    "crd/harbingerpolicies.harbinger.io", "crd/clusterharbingerpolicies.harbinger.io")
    system = await make_namespace()  # stands in for harbinger-system
    workloads = await make_namespace(opted_in=True)
    await scaler_nodes(1)
    profile = CapacityProfile(rps_per_replica=10, headroom=0, warmup_seconds=60)
    await new_service(kube, workloads, "checkout",
                      annotations={contract.CAPACITY_PROFILE: profile.model_dump_json()})
    wanted = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
              "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    docs = [d for d in built(cluster) if d["kind"] in wanted]
    assert len(docs) == 7
    policy = "harbinger-planner-changes-floors-only"
    text = yaml.safe_dump_all(docs).replace("harbinger-system", system).replace(
        "name: harbinger-planner\n", f"name: harbinger-planner-{system}\n").replace(
        f":{system}:harbinger-planner'", f":{system}:harbinger-planner-{system}'").replace(policy, f"{policy}-{system}")
    assert f"system:serviceaccount:{system}:harbinger-planner-{system}'" in text
    cluster.kubectl("apply", "-f", "-", input=text)
    try:
        who = f"system:serviceaccount:{system}:harbinger-planner-{system}"
        for verb, resource in (("patch", "horizontalpodautoscalers.autoscaling"), ("patch", "deployments.apps"),
                               ("list", "nodes"), ("create", "events")):
            assert cluster.kubectl("auth", "can-i", verb, resource, "-n", workloads, f"--as={who}",
                                   check=False).stdout.strip() == "yes", (verb, resource)
        for verb, resource in (("get", "secrets"), ("delete", "deployments.apps"), ("patch", "pods"),
                               ("create", "leases.coordination.k8s.io")):
            assert cluster.kubectl("auth", "can-i", verb, resource, "-n", workloads, f"--as={who}",
                                   check=False).stdout.strip() == "no", (verb, resource)

        async with as_account(system, f"harbinger-planner-{system}") as as_planner:
            clock = ManualClock(T0)
            # The Role grants get/update on the Lease named harbinger-planner only.
            elector = LeaderElector(as_planner, name="harbinger-planner", namespace=system, identity="p-0",
                                    duration_seconds=15, clock=clock)
            assert await elector.try_acquire_or_renew()
            assert await elector.try_acquire_or_renew()  # renewing needs get + update
            records = CapacityPlans(as_planner)
            planner = Planner(as_planner, forecasts=scripted({"checkout": forecast("checkout", T0, [50.0] * 4)}),
                              clock=clock, elector=elector, namespaces=frozenset({workloads}),
                              node_selector="harbinger-test=scaler", capacity_plans=records)
            report = await planner.run_once()
            assert report.outcome == "applied"
            assert [(c.service, c.after) for c in report.changes] == [("checkout", 5)]
            # ... and its record of the plan (the CapacityPlan and its status) was written.
            assert records.enabled
            record = await client.CustomObjectsApi(kube).get_namespaced_custom_object_status(
                contract.API_GROUP, contract.API_VERSION, workloads, contract.CAPACITY_PLANS, "checkout")
            assert record["status"]["plannedReplicas"] == 5
            await only_floors_may_change(as_planner, kube, workloads, make_namespace, new_service)
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=text)


async def only_floors_may_change(as_planner: client.ApiClient, kube: client.ApiClient, workloads: str,
                                 make_namespace: Any, new_service: Any) -> None:
    """With the planner's own token: the floor and harbinger.io/ metadata may change; a pod
    template, an HPA's maximum, another team's annotation may not; outside opted-in namespaces
    only a floor given back may."""
    apps, autoscaling = client.AppsV1Api(as_planner), client.AutoscalingV2Api(as_planner)

    async def refused(call: Any, message: str) -> None:
        with pytest.raises(ApiException) as caught:
            await call
        assert caught.value.status in (403, 422) and message in str(caught.value.body), caught.value.body

    # The apiserver loads a new policy within a moment: wait until it refuses a foreign annotation.
    for attempt in range(100):
        try:
            await apps.patch_namespaced_deployment("checkout", workloads, {"metadata": {"annotations": {
                "probe.example/attempt": str(attempt)}}})
        except ApiException as exc:
            assert "only harbinger.io/ labels and annotations" in str(exc.body)
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the planner's admission policy never took effect")
    await apps.patch_namespaced_deployment("checkout", workloads, {"spec": {"replicas": 3}})
    await apps.patch_namespaced_deployment("checkout", workloads, {"metadata": {"annotations": {
        contract.PLAN: "{}"}}})
    template = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil.invalid/x:1"}]}}}}
    await refused(apps.patch_namespaced_deployment("checkout", workloads, template),
                  "may change only the replica floor")
    await refused(autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "checkout", workloads, {"spec": {"maxReplicas": 500}}), "may change only the replica floor")
    await refused(apps.patch_namespaced_deployment("checkout", workloads, {"metadata": {"annotations": {
        "team.example/owner": "someone-else"}}}), "only harbinger.io/ labels and annotations")

    # A namespace that is not opted in: raising is refused, giving a floor back is not.
    outside = await make_namespace()
    await new_service(kube, outside, "ledger", min_replicas=4)
    raise_it = {"metadata": {"labels": {contract.FLOOR_RAISED_LABEL: "true"}}, "spec": {"minReplicas": 6}}
    await refused(autoscaling.patch_namespaced_horizontal_pod_autoscaler("ledger", outside, raise_it),
                  "may only give a raised floor back")
    await autoscaling.patch_namespaced_horizontal_pod_autoscaler("ledger", outside, {"spec": {"minReplicas": 2}})
