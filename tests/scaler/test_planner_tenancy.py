"""Many teams, one planner, on the real control plane: one tenant's bad objects are skipped
with a Warning Event on each while the other tenant keeps being planned; a profile cannot
claim more than the platform's cap; the planner gives back only the floors it set (a
person's later edit is kept), and gives them back when a service loses its model or its
namespace opts out; leader election survives a lost apiserver and clock skew."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.kube import with_default_timeout
from harbinger.profile import CapacityProfile
from harbinger_dev.localcluster.cluster import free_port
from scaler.apply import APPLIED_FLOOR, DECLARED_MIN_REPLICAS
from scaler.controller import Planner
from scaler.leader import LeaderElector, micro_time
from scaler.tenancy import FloorCaps

NODE_SELECTOR = "harbinger-test=scaler"
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
STEP = 300
PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.0, warmup_seconds=60, min_replicas=1, max_replicas=20)
#: 80 req/s now and for the next steps: a floor of 8 at once.
BUSY = [80.0] * 4
V = TypeVar("V")


def bare(by_key: Mapping[str, V]) -> dict[str, V]:
    return {key.partition("/")[2]: value for key, value in by_key.items()}


def profile(**fields: Any) -> dict[str, str]:
    return {contract.CAPACITY_PROFILE: json.dumps({**PROFILE.model_dump(), **fields})}


async def read_hpa(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    response = await client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(
        name, namespace, _preload_content=False)
    body: dict[str, Any] = json.loads(await response.read())
    return body


async def warnings(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """The planner's Warning Events in ``namespace``: Deployment name -> reason."""
    listed = await client.CoreV1Api(kube).list_namespaced_event(namespace)
    return {e.involved_object.name: e.reason for e in listed.items
            if e.source and e.source.component == "harbinger-planner" and e.type == "Warning"}


async def reasons(kube: client.ApiClient, namespace: str) -> list[str]:
    listed = await client.CoreV1Api(kube).list_namespaced_event(namespace)
    return sorted(e.reason for e in listed.items if e.source and e.source.component == "harbinger-planner")


def skipped_count(namespace: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("harbinger_planner_skipped_total", {"namespace": namespace, "reason": reason})
    return value or 0.0


async def test_one_tenants_bad_objects_skip_only_themselves(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    await scaler_nodes(2)
    good = await make_namespace(opted_in=True)
    bad = await make_namespace(opted_in=True)
    await new_service(kube, good, "checkout", annotations=profile())
    await new_service(kube, good, "frontend", annotations=profile())
    # The adversarial tenant: a profile with min above max, one nested 100,000 deep (the JSON
    # parser's recursion limit), one claiming 5,000 replicas, two Deployments claiming one
    # service, a non-number in the planner's own HPA annotation, and a "frontend" of its own.
    await new_service(kube, bad, "minmax", annotations=profile(min_replicas=9, max_replicas=3))
    await new_service(kube, bad, "nested", annotations={contract.CAPACITY_PROFILE: "[" * 100_000 + "]" * 100_000})
    await new_service(kube, bad, "greedy", annotations=profile(min_replicas=5000, max_replicas=5000))
    await new_service(kube, bad, "twin-a", annotations={**profile(), contract.SERVICE: "twin"})
    await new_service(kube, bad, "twin-b", annotations={**profile(), contract.SERVICE: "twin"})
    await new_service(kube, bad, "frontend", annotations=profile())
    await new_service(kube, bad, "wordy", annotations=profile())
    await client.AutoscalingV2Api(kube).patch_namespaced_horizontal_pod_autoscaler(
        "wordy", bad, {"metadata": {"annotations": {DECLARED_MIN_REPLICAS: "two"}}})
    names = ("checkout", "frontend", "minmax", "nested", "greedy", "twin", "wordy")
    source = scripted({s: forecast(s, T0, BUSY, step_seconds=STEP) for s in names})
    before = {reason: skipped_count(bad, reason) for reason in ("InvalidCapacityProfile", "AmbiguousService")}
    planner = Planner(kube, forecasts=source, clock=ManualClock(T0), stabilization_seconds=300,
                      namespaces=frozenset({good, bad}), node_selector=NODE_SELECTOR,
                      floor_caps=FloorCaps(default=None, per_namespace={bad: 5}))

    report = await planner.run_once()
    assert report.outcome == "applied"
    # The good tenant is planned, and its "frontend" is not the other tenant's.
    assert report.floors[f"{good}/checkout"] == 8 and report.floors[f"{good}/frontend"] == 8
    for name in ("checkout", "frontend"):
        assert (await read_hpa(kube, good, name))["spec"]["minReplicas"] == 8
    assert await warnings(kube, good) == {}
    # The bad tenant's sound services are planned too; "greedy" only up to its namespace's cap;
    # "wordy"'s unreadable annotation counts as absent (its own minReplicas is the declared floor).
    assert report.floors[f"{bad}/frontend"] == 5 and report.floors[f"{bad}/greedy"] == 5
    assert report.floors[f"{bad}/wordy"] == 5
    wordy = await read_hpa(kube, bad, "wordy")
    assert wordy["spec"]["minReplicas"] == 5 and wordy["metadata"]["annotations"][DECLARED_MIN_REPLICAS] == "1"
    # The rest are skipped, each with a Warning Event that says why, and counted.
    assert set(report.skipped) == {f"{bad}/{n}" for n in ("minmax", "nested", "twin-a", "twin-b")}
    assert "min_replicas (9) is above max_replicas (3)" in report.skipped[f"{bad}/minmax"]
    assert "twin-a, twin-b" in report.skipped[f"{bad}/twin-a"]
    assert await warnings(kube, bad) == {"minmax": "InvalidCapacityProfile", "nested": "InvalidCapacityProfile",
                                         "twin-a": "AmbiguousService", "twin-b": "AmbiguousService"}
    assert skipped_count(bad, "InvalidCapacityProfile") == before["InvalidCapacityProfile"] + 2
    assert skipped_count(bad, "AmbiguousService") == before["AmbiguousService"] + 2
    for name in ("minmax", "nested", "twin-a", "twin-b"):
        hpa = await read_hpa(kube, bad, name)
        assert hpa["spec"]["minReplicas"] == 1 and DECLARED_MIN_REPLICAS not in (hpa["metadata"].get("annotations")
                                                                                 or {})

    # The next run says nothing new: one Event per problem, not one per run.
    await planner.run_once()
    listed = await client.CoreV1Api(kube).list_namespaced_event(bad)
    assert sum(1 for e in listed.items if e.type == "Warning" and e.source.component == "harbinger-planner") == 4


async def test_a_persons_edit_of_a_raised_floor_is_kept(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    await scaler_nodes(2)
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile())
    source = scripted({"checkout": forecast("checkout", T0, BUSY, step_seconds=STEP)})
    clock = ManualClock(T0)
    planner = Planner(kube, forecasts=source, clock=clock, stabilization_seconds=300,
                      namespaces=frozenset({namespace}), node_selector=NODE_SELECTOR)
    await planner.run_once()
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 8 and hpa["metadata"]["annotations"][APPLIED_FLOOR] == "8"
    assert hpa["metadata"]["labels"][contract.FLOOR_RAISED_LABEL] == "true"

    # While the floor is raised, the team sets its own minimum of 6.
    await client.AutoscalingV2Api(kube).patch_namespaced_horizontal_pod_autoscaler(
        "checkout", namespace, {"spec": {"minReplicas": 6}})
    # The peak passes and the hold is over: the planner does not put back the stale 1.
    source.forecasts_by_service["checkout"] = forecast("checkout", T0, [10.0] * 12, step_seconds=STEP)
    await clock.advance(301)
    report = await planner.run_once()
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 6 and bare(report.floors) == {"checkout": 1}
    assert not {DECLARED_MIN_REPLICAS, APPLIED_FLOOR} & set(hpa["metadata"].get("annotations") or {})
    assert contract.FLOOR_RAISED_LABEL not in (hpa["metadata"].get("labels") or {})


async def test_floors_are_given_back_when_the_model_is_gone_or_the_namespace_opts_out(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    await scaler_nodes(2)
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile())
    await new_service(kube, namespace, "catalog", annotations=profile(), with_hpa=False)
    source = scripted({s: forecast(s, T0, BUSY, step_seconds=STEP) for s in ("checkout", "catalog")})
    clock = ManualClock(T0)
    planner = Planner(kube, forecasts=source, clock=clock, stabilization_seconds=300,
                      namespaces=frozenset({namespace}), node_selector=NODE_SELECTOR)
    await planner.run_once()
    assert (await read_hpa(kube, namespace, "checkout"))["spec"]["minReplicas"] == 8

    # checkout's model is gone: no plan, so its floor comes back to the declared 1 once the
    # hold is over (not at once: a model being replaced must not drop a peak's floor).
    del source.forecasts_by_service["checkout"]
    await clock.advance(60)
    report = await planner.run_once()
    assert (await read_hpa(kube, namespace, "checkout"))["spec"]["minReplicas"] == 8 and not report.released
    await clock.advance(300)
    report = await planner.run_once()
    assert [(c.service, c.before, c.after) for c in report.released] == [("checkout", 8, 1)]
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 1 and DECLARED_MIN_REPLICAS not in (hpa["metadata"].get("annotations") or {})

    # The namespace opts out: catalog's raised replicas are given back at once.
    apps = client.AppsV1Api(kube)
    assert (await apps.read_namespaced_deployment("catalog", namespace)).spec.replicas == 8
    await client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {contract.ENABLED_LABEL: None}}})
    report = await planner.run_once()
    assert report.plans == {} and [(c.deployment, c.after) for c in report.released] == [("catalog", 1)]
    catalog = await apps.read_namespaced_deployment("catalog", namespace)
    assert catalog.spec.replicas == 1 and contract.FLOOR_RAISED_LABEL not in (catalog.metadata.labels or {})
    assert (await reasons(kube, namespace)).count("FloorReleased") == 2


async def test_the_lease_outlives_a_lost_apiserver_and_ignores_clock_skew(
    kube: client.ApiClient, make_namespace: Any,
) -> None:
    namespace = await make_namespace()
    lease = f"planner-{uuid.uuid4().hex[:6]}"
    clock = ManualClock(T0)
    leader = LeaderElector(kube, name=lease, namespace=namespace, identity="a", duration_seconds=15, clock=clock)
    assert await leader.try_acquire_or_renew()

    # The apiserver cannot be reached: no exception; it leads until its last renewal's deadline.
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    gone = with_default_timeout(client.ApiClient(configuration=configuration), 5)
    try:
        reachable, leader.coordination = leader.coordination, client.CoordinationV1Api(gone)
        assert await leader.try_acquire_or_renew()
        await clock.advance(12.5)
        assert not await leader.try_acquire_or_renew() and not leader.is_leader()
    finally:
        await gone.close()
    leader.coordination = reachable

    # A holder whose clock is an hour behind writes renewTimes an hour old; it is still renewing.
    coordination = client.CoordinationV1Api(kube)

    async def renew_from_the_past() -> None:
        response = await coordination.read_namespaced_lease(lease, namespace, _preload_content=False)
        body = json.loads(await response.read())
        body["spec"].update(holderIdentity="skewed", renewTime=micro_time(clock.now() - timedelta(hours=1)))
        await coordination.replace_namespaced_lease(lease, namespace, body)

    challenger = LeaderElector(kube, name=lease, namespace=namespace, identity="b", duration_seconds=15, clock=clock)
    await renew_from_the_past()
    assert not await challenger.try_acquire_or_renew()  # an hour-old renewTime is not an expired Lease
    await clock.advance(10)
    await renew_from_the_past()
    await clock.advance(10)
    assert not await challenger.try_acquire_or_renew()  # it changed within the duration: still held
    # The holder stops: after a whole duration of the same record, the challenger takes over.
    await clock.advance(15)
    assert await challenger.try_acquire_or_renew()
    assert (await coordination.read_namespaced_lease(lease, namespace)).spec.holder_identity == "b"
