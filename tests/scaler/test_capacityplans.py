"""CapacityPlan (harbinger.io/v1alpha1) on the real apiserver: the planner records every
managed Deployment's plan, ``kubectl get cplan`` shows it in its columns, a Deployment left
out says why in its Planned condition, nothing is rewritten while the plan stands still, and
deleting the Deployment deletes its CapacityPlan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.kube import read_json
from harbinger.profile import CapacityProfile
from harbinger_dev.localcluster import LocalCluster
from scaler.capacityplans import CapacityPlans
from scaler.controller import Planner

REPO = Path(__file__).resolve().parents[2]
NODE_SELECTOR = "harbinger-test=scaler"
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.0, warmup_seconds=60, min_replicas=1, max_replicas=20)


@pytest.fixture(scope="module")
def capacity_plan_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/capacityplans.harbinger.io",
                    "crd/harbingerpolicies.harbinger.io", "crd/clusterharbingerpolicies.harbinger.io")


async def read_plan(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await read_json(client.CustomObjectsApi(kube).get_namespaced_custom_object(
        contract.API_GROUP, contract.API_VERSION, namespace, contract.CAPACITY_PLANS, name, _preload_content=False))


async def test_the_planner_records_each_deployments_plan(
    cluster: LocalCluster, capacity_plan_crd: None, kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any,
    new_service: Any, forecast: Any, scripted: Any, eventually: Any,
) -> None:
    await scaler_nodes(1)
    namespace = await make_namespace(opted_in=True)
    annotations = {contract.CAPACITY_PROFILE: PROFILE.model_dump_json()}
    await new_service(kube, namespace, "checkout", annotations=annotations)
    await new_service(kube, namespace, "search", annotations={contract.CAPACITY_PROFILE: "{not json"})
    shape = [10.0, 10.0, 40.0, 40.0, 10.0, 10.0]
    source = scripted({s: forecast(s, T0, shape, step_seconds=300) for s in ("checkout", "search")})
    records = CapacityPlans(kube)
    clock = ManualClock(T0)
    planner = Planner(kube, forecasts=source, clock=clock, stabilization_seconds=300,
                      namespaces=frozenset({namespace}), node_selector=NODE_SELECTOR, capacity_plans=records)
    apps = client.AppsV1Api(kube)

    async def settled() -> bool:
        return (await apps.read_namespaced_deployment("checkout", namespace)).status.replicas == 1

    await eventually(settled, timeout=60, what="checkout's one replica")
    await planner.run_once()
    early = await read_plan(kube, namespace, "checkout")
    assert early["status"]["plannedReplicas"] == 1 and "lastChange" not in early["status"]
    # Nothing changed: nothing is written again.
    await planner.run_once()
    assert (await read_plan(kube, namespace, "checkout"))["metadata"]["resourceVersion"] == (
        early["metadata"]["resourceVersion"])
    # One warm-up before the peak: the floor goes up, and the record says so.
    await clock.advance(540)
    await planner.run_once()

    plan = await read_plan(kube, namespace, "checkout")
    deployment = await apps.read_namespaced_deployment("checkout", namespace)
    assert plan["spec"] == {"service": "checkout", "deployment": "checkout"}
    (owner,) = plan["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", "checkout", deployment.metadata.uid)
    status = plan["status"]
    assert status["model"] == "scripted" and status["plannedReplicas"] == 4
    assert status["forecast"] == {"start": "2031-03-02T12:00:00Z", "stepSeconds": 300, "p50": [s * 0.8 for s in shape],
                                  "p90": shape}
    assert status["nextPeak"] == {"at": "2031-03-02T12:10:00Z", "p90RequestsPerSecond": 40.0, "replicas": 4}
    assert status["warmup"] == {"from": "2031-03-02T12:09:00Z", "until": "2031-03-02T12:10:00Z"}
    assert status["lastChange"]["reason"] == "FloorRaised" and (
        status["lastChange"]["from"], status["lastChange"]["to"]) == (1, 4)
    (planned,) = status["conditions"]
    assert (planned["type"], planned["status"], planned["reason"]) == ("Planned", "True", "Planned")

    # The Deployment left out says why, on the API.
    (left_out,) = (await read_plan(kube, namespace, "search"))["status"]["conditions"]
    assert (left_out["status"], left_out["reason"]) == ("False", "InvalidCapacityProfile")
    assert "not JSON" in left_out["message"]

    # kubectl get shows the plan in its columns.
    table = cluster.kubectl("get", "cplan", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SERVICE", "MODEL", "NEXT", "PEAK", "PLANNED", "CURRENT", "AGE"]
    row = next(line.split() for line in table if line.startswith("checkout"))
    assert row[:3] == ["checkout", "checkout", "scripted"] and row[-3:-1] == ["4", "1"]

    # Nothing changed: nothing is written again.
    # The Deployment goes, and its CapacityPlan with it (the garbage collector).
    await client.AppsV1Api(kube).delete_namespaced_deployment("checkout", namespace)

    async def gone() -> bool:
        try:
            await read_plan(kube, namespace, "checkout")
        except ApiException as exc:
            return exc.status == 404
        return False

    # The garbage collector picks a new resource up within its 30 s discovery period.
    await eventually(gone, timeout=120, what="the CapacityPlan deleted with its Deployment")


async def test_a_cluster_without_the_crd_is_planned_all_the_same(
    kube: client.ApiClient, make_namespace: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations={contract.CAPACITY_PROFILE: PROFILE.model_dump_json()})
    records = CapacityPlans(kube)
    records.custom = _MissingCrd()
    planner = Planner(kube, forecasts=scripted({"checkout": forecast("checkout", T0, [80.0] * 4)}),
                      clock=ManualClock(T0), namespaces=frozenset({namespace}), capacity_plans=records)
    report = await planner.run_once()
    assert report.outcome == "applied" and not records.enabled


class _MissingCrd:
    """The API answers of a cluster where capacityplans.harbinger.io is not installed."""

    async def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        raise ApiException(status=404, reason="Not Found")

    async def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        raise ApiException(status=404, reason="Not Found")


async def test_a_newly_trained_model_is_an_event_on_the_deployment(
    kube: client.ApiClient, make_namespace: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations={contract.CAPACITY_PROFILE: PROFILE.model_dump_json()})
    source = scripted({"checkout": forecast("checkout", T0, [10.0] * 4)})
    planner = Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({namespace}))
    core = client.CoreV1Api(kube)

    async def model_events() -> list[str]:
        listed = await core.list_namespaced_event(namespace)
        return [e.message for e in listed.items if e.reason == "ModelUpdated" and e.involved_object.name == "checkout"]

    await planner.run_once()
    await planner.run_once()
    assert await model_events() == []  # the first model a planner sees, and the same one again, are not news
    retrained = forecast("checkout", T0, [10.0] * 4)
    source.forecasts_by_service["checkout"] = type(retrained)(
        service="checkout", model_version="m2", start=retrained.start, step_seconds=retrained.step_seconds,
        p50=retrained.p50, p90=retrained.p90)
    await planner.run_once()
    assert await model_events() == ["planning checkout with model m2 (was scripted)"]
