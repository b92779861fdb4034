"""The path of one pod (decode, decide, patch, encode) against hand-filled caches."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from harbinger import contract, sidecar
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from harbinger.quantity import parse_quantity
from webhooks.mutate import Bounds

if TYPE_CHECKING:
    from conftest import World


def annotations(pod: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = pod["metadata"].get("annotations") or {}
    return result


async def test_opted_in_pod_of_a_deployment_gets_forecast_requests_and_bandwidth(world: World) -> None:
    profile = {"cpu_per_rps": 0.01, "cpu_base_cores": 0.1, "memory_per_rps_bytes": 2_000_000,
               "memory_base_bytes": 100 * 2**20, "bytes_per_request": 50_000}
    world.namespace()
    world.deployments.put(world.deployment(annotations={
        contract.RESOURCES: contract.RESOURCES_FORECAST,
        contract.CAPACITY_PROFILE: json.dumps(profile),
        contract.PLAN: json.dumps({"replicas": 4}),
    }, replicas=2))
    world.forecasts.put(world.forecast("web", [100, 400, 200]))
    pod = world.pod(owner_rs="web-6d5f8c7b9", annotations={"team": "a"})

    answer = await world.review(pod)
    stamped = world.apply(pod, answer)

    tps = 400 / 4  # peak P90 over the horizon, per planned replica (the plan wins over spec.replicas)
    stamps = annotations(stamped)
    assert stamps["team"] == "a"
    assert stamps[contract.PREDICTED_TPS] == "100.00"
    assert stamps[contract.MODEL_VERSION] == "v-test"
    model = CapacityProfile(**profile)
    bits = parse_quantity(stamps[contract.EGRESS_BANDWIDTH])
    assert bits >= Decimal(model.bandwidth_bits_for(tps)) > bits * Decimal("0.9")
    assert stamps[contract.INGRESS_BANDWIDTH] == stamps[contract.EGRESS_BANDWIDTH]
    requests = stamped["spec"]["containers"][0]["resources"]["requests"]
    assert parse_quantity(requests["cpu"]) == Decimal(str(model.cpu_cores_for(tps)))  # 1.1 cores
    assert parse_quantity(requests["memory"]) >= Decimal(model.memory_bytes_for(tps))
    assert contract.WARMUP not in stamps
    assert len(stamped["spec"]["containers"]) == 1  # no chaos opt-in, no sidecar


async def test_spec_replicas_divide_the_forecast_when_there_is_no_plan(world: World) -> None:
    world.namespace()
    world.deployments.put(world.deployment(replicas=5))
    world.forecasts.put(world.forecast("web", [50, 250]))
    stamped = world.apply(pod := world.pod(owner_rs="web-77f9d"), await world.review(pod))
    assert annotations(stamped)[contract.PREDICTED_TPS] == "50.00"
    assert "resources" not in stamped["spec"]["containers"][0]  # no harbinger.io/resources: forecast


async def test_a_bare_pod_is_its_own_single_replica(world: World) -> None:
    world.namespace()
    world.forecasts.put(world.forecast("web", [30]))
    stamped = world.apply(pod := world.pod(), await world.review(pod))
    assert annotations(stamped)[contract.PREDICTED_TPS] == "30.00"


async def test_the_horizon_already_past_does_not_count(world: World) -> None:
    world.namespace()
    world.forecasts.put(world.forecast("web", [900, 100, 60], start=world.now - timedelta(minutes=20)))
    stamped = world.apply(pod := world.pod(), await world.review(pod))
    assert annotations(stamped)[contract.PREDICTED_TPS] == "100.00"  # step 0 ended 5 minutes ago
    world.now += timedelta(hours=1)  # past the whole horizon: a stale forecast says nothing
    assert world.patch_of(await world.review(pod)) == []


async def test_requests_are_bounded_and_never_above_a_limit(world: World) -> None:
    world.mutator.bounds = Bounds(min_cpu_cores=0.05, max_cpu_cores=2, min_memory_bytes=64 * 2**20,
                                  max_memory_bytes=2**30)
    world.namespace()
    huge = {"cpu_per_rps": 1.0, "memory_per_rps_bytes": 2**30}
    world.deployments.put(world.deployment(replicas=1, annotations={
        contract.RESOURCES: contract.RESOURCES_FORECAST, contract.CAPACITY_PROFILE: json.dumps(huge)}))
    world.forecasts.put(world.forecast("web", [10]))
    pod = world.pod(owner_rs="web-5c4b3", containers=[
        {"name": "app", "image": "a"},
        {"name": "capped", "image": "b", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                                                      "requests": {"cpu": "500m", "memory": "256Mi"}}},
    ])
    stamped = world.apply(pod, await world.review(pod))
    free, capped = (c["resources"]["requests"] for c in stamped["spec"]["containers"])
    assert parse_quantity(free["cpu"]) == 2 and parse_quantity(free["memory"]) == 2**30  # the maximums
    assert capped == {"cpu": "500m", "memory": "256Mi"}  # the limits

    world.forecasts.put(world.forecast("web", [0]))
    world.deployments.put(world.deployment(replicas=1, annotations={contract.RESOURCES: "forecast"}))
    stamped = world.apply(pod, await world.review(pod))
    floor = stamped["spec"]["containers"][0]["resources"]["requests"]
    assert parse_quantity(floor["cpu"]) == Decimal("0.05")  # the profile's base 0.05 = min
    assert parse_quantity(floor["memory"]) == 64 * 2**20


async def test_bandwidth_is_kept_within_what_the_kubelet_accepts_and_a_declared_one_is_kept(world: World) -> None:
    world.namespace()
    world.forecasts.put(world.forecast("web", [0]))
    pod = world.pod(annotations={contract.INGRESS_BANDWIDTH: "5M"})
    stamps = annotations(world.apply(pod, await world.review(pod)))
    assert stamps[contract.EGRESS_BANDWIDTH] == "1000"  # 0 bits/s would be refused: 1k is the floor
    assert stamps[contract.INGRESS_BANDWIDTH] == "5M"


async def test_warmup_mark_inside_the_planner_window_only(world: World) -> None:
    world.namespace()
    world.deployments.put(world.deployment(annotations=world.warmup_window(world.now, before=60, after=600)))
    pod = world.pod(owner_rs="web-8f7e6")
    assert annotations(world.apply(pod, await world.review(pod))) == {contract.WARMUP: "true"}
    world.deployments.put(world.deployment(annotations=world.warmup_window(world.now, before=-60, after=600)))
    assert world.patch_of(await world.review(pod)) == []  # the window opens in a minute


async def test_warmup_pods_go_to_the_harbinger_scheduler_when_configured(world: World) -> None:
    world.mutator.scheduler_name = contract.SCHEDULER_NAME
    world.namespace()
    world.deployments.put(world.deployment(annotations=world.warmup_window(world.now, before=60, after=600)))
    pod = world.pod(owner_rs="web-8f7e6")
    stamped = world.apply(pod, await world.review(pod))
    assert stamped["spec"]["schedulerName"] == contract.SCHEDULER_NAME
    assert world.patch_of(await world.review(stamped)) == []  # idempotent
    own = world.pod(owner_rs="web-8f7e6")
    own["spec"]["schedulerName"] = "team-scheduler"  # a pod's own choice of scheduler is kept
    assert "schedulerName" not in json.dumps(world.patch_of(await world.review(own)))
    plain = world.pod(name="web-zz", annotations={})
    world.deployments.put(world.deployment())  # no warm-up window: the default scheduler stays
    assert "schedulerName" not in json.dumps(world.patch_of(await world.review(plain)))


async def test_chaos_opt_in_adds_the_sidecar_once(world: World) -> None:
    world.namespace(chaos=True)
    pod = world.pod(annotations={})
    first = world.apply(pod, await world.review(pod))
    containers = first["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", contract.CHAOS_SIDECAR_NAME]
    assert containers[1] == sidecar.sidecar_container("harbinger:test", 9000)  # the app's declared port
    assert first["spec"]["volumes"] == [sidecar.podinfo_volume()]
    assert annotations(first) == {contract.CHAOS_SIDECAR_IMAGE: "harbinger:test", contract.CHAOS_UPSTREAM_PORT: "9000",
                                  contract.CHAOS: contract.CHAOS_ENABLED}
    # reinvocation (reinvocationPolicy: IfNeeded) on our own output changes nothing
    assert world.patch_of(await world.review(first)) == []


async def test_chaos_by_workload_annotation_with_existing_volumes(world: World) -> None:
    world.namespace()
    world.deployments.put(world.deployment(annotations={contract.CHAOS: contract.CHAOS_ENABLED}))
    pod = world.pod(owner_rs="web-1a2b3")
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    stamped = world.apply(pod, await world.review(pod))
    assert [v["name"] for v in stamped["spec"]["volumes"]] == ["data", sidecar.PODINFO_VOLUME]


async def test_everything_at_once_is_idempotent(world: World) -> None:
    world.namespace(chaos=True)
    world.deployments.put(world.deployment(annotations={
        contract.RESOURCES: "forecast", **world.warmup_window(world.now, before=1, after=1)}))
    world.forecasts.put(world.forecast("web", [120]))
    pod = world.pod(owner_rs="web-9z8y7", annotations={"a~b/c": "x"})
    first = world.apply(pod, await world.review(pod))
    assert annotations(first)["a~b/c"] == "x"
    assert world.patch_of(await world.review(first)) == []


@pytest.mark.parametrize("case", ["not-opted-in", "kube-system", "harbinger-system", "inject-false-pod",
                                  "inject-false-deployment", "no-model"])
async def test_left_unchanged(world: World, case: str) -> None:
    world.forecasts.put(world.forecast("web", [100]))
    namespace = {"kube-system": "kube-system", "harbinger-system": "harbinger-system"}.get(case, "shop")
    world.namespace(namespace, opted_in=case != "not-opted-in", chaos=True)
    pod = world.pod(namespace=namespace, owner_rs="web-4d3c2",
                    annotations={contract.INJECT: "false"} if case == "inject-false-pod" else None)
    if case == "inject-false-deployment":
        world.deployments.put(world.deployment(annotations={contract.INJECT: "false"}))
    if case == "no-model":
        world.namespace(chaos=False)
        pod["metadata"]["labels"][contract.APP_NAME_LABEL] = "unknown-service"
    answer = await world.review(pod, namespace=namespace)
    assert world.patch_of(answer) == []
    assert "patchType" not in world.response_of(answer)


async def test_a_namespace_not_yet_in_the_cache_is_trusted_from_the_selector(world: World) -> None:
    world.forecasts.put(world.forecast("web", [10]))
    stamped = world.apply(pod := world.pod(namespace="fresh"), await world.review(pod, namespace="fresh"))
    assert annotations(stamped)[contract.PREDICTED_TPS] == "10.00"


@pytest.mark.parametrize("annotation, value, expected", [
    (contract.CAPACITY_PROFILE, "{not json", "capacity-profile"),
    (contract.CAPACITY_PROFILE, '{"rps_per_replica": -1}', "rps_per_replica"),
    (contract.PLAN, '{"replicas": "many"}', contract.PLAN),
    (contract.WARMUP_UNTIL, "tomorrow", contract.WARMUP_UNTIL),
])
async def test_a_bad_workload_annotation_is_a_warning_not_a_failure(
    world: World, annotation: str, value: str, expected: str
) -> None:
    world.namespace()
    world.deployments.put(world.deployment(annotations={annotation: value, contract.RESOURCES: "forecast"}))
    world.forecasts.put(world.forecast("web", [10]))
    response = world.response_of(answer := await world.review(world.pod(owner_rs="web-5f5f5")))
    assert any(expected in warning and "deployment shop/web" in warning for warning in response["warnings"])
    assert annotations(world.apply(world.pod(owner_rs="web-5f5f5"), answer))[contract.PREDICTED_TPS]


async def test_other_kinds_and_operations_are_allowed_unchanged(world: World) -> None:
    world.namespace(chaos=True)
    pod = world.pod()
    for kwargs in ({"operation": "UPDATE"}, {"operation": "DELETE"},
                   {"kind": "Deployment", "resource": "deployments", "group": "apps"}):
        answer = await world.review(pod, **kwargs)
        assert world.patch_of(answer) == []
    # a subresource (pods/ephemeralcontainers) is not a pod creation
    body = json.loads(world.body(pod))
    body["request"]["subResource"] = "ephemeralcontainers"
    assert world.patch_of(await world.mutator.review(json.dumps(body).encode())) == []


async def test_the_uid_is_echoed_and_dry_run_gets_the_same_answer(world: World) -> None:
    world.namespace()
    world.forecasts.put(world.forecast("web", [10]))
    pod = world.pod()
    real = await world.review(pod, uid="u-1")
    dry = await world.review(pod, uid="u-1", dry_run=True)
    assert world.response_of(real)["uid"] == "u-1"
    assert real == dry


@pytest.mark.parametrize("body, message", [
    (b"{nope", "not valid JSON"),
    (b"[]", "AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}', "apiVersion"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request: Field required"),
])
async def test_malformed_bodies_raise_invalid_input_naming_the_field(world: World, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await world.mutator.review(body)


async def test_a_pod_review_with_a_broken_pod_names_the_field(world: World) -> None:
    pod = world.pod()
    pod["spec"]["containers"] = [{"image": "no-name"}]
    with pytest.raises(InvalidInput, match=r"request\.object\.spec\.containers\.0\.name"):
        await world.review(pod)
    with pytest.raises(InvalidInput, match=r"request\.object"):
        await world.review(None)


async def test_the_sidecar_gets_the_platforms_fault_limits_as_flags(world: World) -> None:
    world.mutator.sidecar_limits = sidecar.SidecarLimits(max_cpu_cores=1.0, max_fault_seconds=300.0)
    world.namespace(chaos=True)
    pod = world.pod(annotations={})
    containers = world.apply(pod, await world.review(pod))["spec"]["containers"]
    args = containers[1]["args"]
    assert "--max-cpu=1" in args and "--max-fault-seconds=300" in args


def test_the_sidecars_limits_cover_the_stress_a_fault_may_ask() -> None:
    default = sidecar.sidecar_container("img")["resources"]["limits"]
    assert default == {"cpu": "2250m", "memory": "128Mi"}  # 2 cores and 64 MiB of stress, plus the proxy
    wider = sidecar.sidecar_container("img", limits=sidecar.SidecarLimits(max_cpu_cores=4, max_memory_bytes=2**30))
    assert wider["resources"]["limits"] == {"cpu": "4250m", "memory": "1088Mi"}


async def test_a_harbingerpolicy_sizes_the_pod_over_the_old_annotation(world: World) -> None:
    world.namespace("shop")
    world.forecasts.put(world.forecast("web", [100]))
    world.mutator.view.policies.on_event("ADDED", {"metadata": {"namespace": "shop", "name": "defaults"},
                                                   "spec": {"capacity": {"cpuPerRps": 0.01, "cpuBaseCores": 0}}})
    old = json.dumps({"cpu_per_rps": 0.5})
    pod = world.pod(annotations={contract.RESOURCES: contract.RESOURCES_FORECAST, contract.CAPACITY_PROFILE: old})
    answer = await world.review(pod)
    requests = world.apply(pod, answer)["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "1000m"  # 100 req/s x 0.01 cores: the policy's, not the annotation's 0.5
    assert any("is ignored: a HarbingerPolicy applies" in w for w in world.response_of(answer)["warnings"])
    # The policy goes: the annotation sizes the pod again (upgrade path).
    world.mutator.view.policies.on_event("DELETED", {"metadata": {"namespace": "shop", "name": "defaults"}})
    pod = world.pod(annotations={contract.RESOURCES: contract.RESOURCES_FORECAST, contract.CAPACITY_PROFILE: old})
    requests = world.apply(pod, await world.review(pod))["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "8000m"  # 0.05 + 100 x 0.5 = 50 cores, held at the webhook's 8-core bound
