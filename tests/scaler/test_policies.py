"""HarbingerPolicy on the real apiserver: a bad one is refused when applied, with the field
named; the planner plans with a service's policy over its namespace's, ignoring (and saying
so) a capacity-profile annotation a policy overrides; a service configured by the annotation
alone, as before policies existed, is still planned from it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.profile import CapacityProfile
from harbinger_dev.localcluster import LocalCluster
from scaler.controller import Planner

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/capacityplans.harbinger.io",
                    "crd/harbingerpolicies.harbinger.io", "crd/clusterharbingerpolicies.harbinger.io")


def policy(name: str, namespace: str, capacity: dict[str, Any], service: str | None = None) -> str:
    spec: dict[str, Any] = {"capacity": capacity}
    if service:
        spec["service"] = service
    return yaml.safe_dump({"apiVersion": "harbinger.io/v1alpha1", "kind": "HarbingerPolicy",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


@pytest.mark.parametrize("capacity, message", [
    ({"minReplicas": 9, "maxReplicas": 3}, "spec.capacity.minReplicas: Invalid value"),
    ({"rpsPerReplica": -1}, "spec.capacity.rpsPerReplica: Invalid value: -1: spec.capacity.rpsPerReplica in body "
                            "should be greater than 0"),
    ({"planQuantile": "p99"}, 'spec.capacity.planQuantile: Unsupported value: "p99"'),
    ({"headroom": 11}, "spec.capacity.headroom: Invalid value: 11"),
    ({"rpsPerReplika": 5}, 'unknown field "spec.capacity.rpsPerReplika"'),
])
async def test_a_bad_policy_is_refused_when_applied_naming_the_field(
    cluster: LocalCluster, policy_crd: None, make_namespace: Any, capacity: dict[str, Any], message: str,
) -> None:
    namespace = await make_namespace(opted_in=True)
    result = cluster.kubectl("apply", "-f", "-", input=policy("bad", namespace, capacity), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize("chaos, message", [
    ({"kinds": ["gremlins"]}, 'spec.chaos.kinds[0]: Unsupported value: "gremlins"'),
    ({"maxRequestPercent": 150}, "spec.chaos.maxRequestPercent: Invalid value: 150"),
    ({"maxPods": 0}, "spec.chaos.maxPods: Invalid value: 0"),
    ({"enabled": "yes"}, "spec.chaos.enabled: Invalid value"),
])
async def test_bad_chaos_limits_are_refused_when_applied_naming_the_field(
    cluster: LocalCluster, policy_crd: None, make_namespace: Any, chaos: dict[str, Any], message: str,
) -> None:
    namespace = await make_namespace(opted_in=True)
    body = yaml.safe_dump({"apiVersion": "harbinger.io/v1alpha1", "kind": "HarbingerPolicy",
                           "metadata": {"name": "bad", "namespace": namespace}, "spec": {"chaos": chaos}})
    result = cluster.kubectl("apply", "-f", "-", input=body, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


async def test_the_planner_plans_with_policies_and_still_with_the_old_annotation(
    cluster: LocalCluster, policy_crd: None, kube: client.ApiClient, make_namespace: Any, new_service: Any,
    forecast: Any, scripted: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    namespace = await make_namespace(opted_in=True)
    legacy = CapacityProfile(rps_per_replica=20, headroom=0.0)
    # checkout also carries an annotation, which its policy overrides; search has only the annotation.
    await new_service(kube, namespace, "checkout", annotations={contract.CAPACITY_PROFILE: legacy.model_dump_json()})
    await new_service(kube, namespace, "search", annotations={contract.CAPACITY_PROFILE: legacy.model_dump_json()})
    await new_service(kube, namespace, "catalog")
    cluster.kubectl("apply", "-f", "-", input=policy("defaults", namespace, {"rpsPerReplica": 10, "headroom": 0}))
    cluster.kubectl("apply", "-f", "-", input=policy("checkout", namespace, {"rpsPerReplica": 5}, service="checkout"))
    source = scripted({s: forecast(s, T0, [80.0] * 4) for s in ("checkout", "search", "catalog")})
    planner = Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({namespace}),
                      forecast_only=True)
    report = await planner.run_once()
    floors = {key.partition("/")[2]: floor for key, floor in report.floors.items()}
    # checkout: its policy (5 req/s) over the namespace's (headroom 0); catalog: the namespace's
    # (10 req/s); search: a policy for the namespace exists, so its annotation no longer applies either.
    assert floors == {"checkout": 16, "catalog": 8, "search": 8}
    assert f"Deployment {namespace}/checkout: annotation {contract.CAPACITY_PROFILE} is ignored" in caplog.text

    # The platform's defaults sit under the namespace's: catalog's rate is the namespace's 10,
    # and the cluster's headroom applies where the namespace sets none.
    cluster_policy = {"apiVersion": "harbinger.io/v1alpha1", "kind": "ClusterHarbingerPolicy",
                      "metadata": {"name": f"platform-{namespace}"},
                      "spec": {"capacity": {"rpsPerReplica": 1, "minReplicas": 3}}}
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(cluster_policy))
    try:
        fresh = Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({namespace}),
                        forecast_only=True)
        report = await fresh.run_once()
        floors = {key.partition("/")[2]: floor for key, floor in report.floors.items()}
        assert floors == {"checkout": 16, "catalog": 8, "search": 8}  # the namespace's fields win
        cluster.kubectl("delete", "harbingerpolicies", "defaults", "-n", namespace)
        report = await Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({namespace}),
                               forecast_only=True).run_once()
        floors = {key.partition("/")[2]: floor for key, floor in report.floors.items()}
        # Without the namespace's defaults: the cluster's 1 req/s (x 1.2 headroom, the default).
        assert floors["catalog"] == 96 and floors["search"] == 96
    finally:
        cluster.kubectl("delete", "clusterharbingerpolicies", f"platform-{namespace}")

    # Before any policy (an upgrade from annotations): the annotation still plans the service.
    cluster.kubectl("delete", "harbingerpolicies", "--all", "-n", namespace)
    fresh = Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({namespace}),
                    forecast_only=True)  # a new planner: no floor held from the run above
    report = await fresh.run_once()
    floors = {key.partition("/")[2]: floor for key, floor in report.floors.items()}
    assert floors == {"checkout": 4, "search": 4, "catalog": 2}  # 20 req/s (annotation); 50 x (1 + 0.2) default
    assert f"Deployment {namespace}/search: annotation {contract.CAPACITY_PROFILE} is deprecated" in caplog.text
