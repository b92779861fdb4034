"""The Istio backend on the real apiserver: Istio's VirtualService CRD from manifests/crds,
a fault on the VirtualService at every step, and the original restored exactly."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from chaos.backends.base import ORIGINAL_ANNOTATION
from chaos.backends.istio import GROUP, PLURAL, VERSION, IstioBackend, sweep_virtual_services
from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.faults import Fault
from chaos.graphsource import edges_from_virtual_services
from harbinger import contract
from harbinger.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
CHAOS_ON = {contract.CHAOS: contract.CHAOS_ENABLED}

ORIGINAL_SPEC: dict[str, Any] = {
    "hosts": ["payments"],
    "gateways": ["mesh"],
    "http": [
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
         "route": [{"destination": {"host": "payments", "subset": "v2"}}], "timeout": "3s"},
        {"name": "primary", "route": [{"destination": {"host": "payments", "subset": "v1"}, "weight": 100}],
         "retries": {"attempts": 2, "perTryTimeout": "1s"}},
    ],
}


async def _get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    response = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                         _preload_content=False)
    return dict(json.loads(await response.read()))


async def _create(custom: client.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any],
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = labels
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService", "metadata": metadata, "spec": spec}
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return await _get(custom, namespace, name)


def _experiment(namespace: str, kind: FaultKind, steps: list[Fault], caller: str | None = None) -> Experiment:
    return Experiment(name=f"{kind.value}-payments", kind=kind, target="payments", caller=caller,
                      namespace=namespace, backend=BackendKind.ISTIO, steps=steps)


def custom_api(custom: client.CustomObjectsApi) -> client.ApiClient:
    """The ApiClient behind ``custom`` (the backends take a client, the tests read through the API)."""
    api: client.ApiClient = getattr(custom, "api_client")  # noqa: B009 - untyped attribute of the generated API
    return api


def _expires() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=60)


async def test_each_step_sets_the_fault_and_the_original_comes_back_exactly(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    before = await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC), labels={"team": "pay"})
    steps = [Fault(abort_status=503, abort_percent=p) for p in (1.0, 5.0, 25.0)]
    backend = IstioBackend(_experiment(namespace, FaultKind.ERROR, steps), custom_api(custom))

    for step in steps:
        await backend.apply(step, _expires())
        vs = await _get(custom, namespace, "payments")
        faults = [route.get("fault") for route in vs["spec"]["http"]]
        assert faults == [{"abort": {"httpStatus": 503, "percentage": {"value": step.abort_percent}}}] * 2
        assert vs["metadata"]["labels"] == {"team": "pay", contract.CHAOS_OWNED_LABEL: "patched"}
        stash = json.loads(vs["metadata"]["annotations"][ORIGINAL_ANNOTATION])
        # The stash holds what chaos changed (each route's fault before it: none), not the spec.
        assert [(r["name"], r["fault"]) for r in stash["routes"]] == [("canary", None), ("primary", None)]
        # Everything Harbinger did not write survives each step untouched.
        assert vs["spec"]["http"][1]["retries"] == ORIGINAL_SPEC["http"][1]["retries"]

    assert await backend.remove_all() == 1
    after = await _get(custom, namespace, "payments")
    assert after["spec"] == before["spec"] == ORIGINAL_SPEC
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert await backend.remove_all() == 0  # idempotent


async def test_a_delay_on_one_call_is_scoped_to_the_caller(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
    step = Fault(delay_ms=250, delay_percent=50)
    backend = IstioBackend(_experiment(namespace, FaultKind.LATENCY, [step], caller="checkout"), custom_api(custom))
    await backend.apply(step, _expires())
    routes = (await _get(custom, namespace, "payments"))["spec"]["http"]
    assert [r["name"] for r in routes] == ["canary-harbinger-chaos", "canary", "primary-harbinger-chaos", "primary"]
    scoped = routes[0]
    assert scoped["match"] == [{"headers": {"x-canary": {"exact": "1"}},
                                "sourceLabels": {contract.APP_NAME_LABEL: "checkout"}}]
    assert scoped["fault"] == {"delay": {"fixedDelay": "0.25s", "percentage": {"value": 50.0}}}
    assert "fault" not in routes[1] and "fault" not in routes[3]
    services, edges = edges_from_virtual_services([await _get(custom, namespace, "payments")])
    assert ("checkout", "payments") in edges and "payments" in services
    await backend.remove_all()
    after = await _get(custom, namespace, "payments")
    assert after["spec"] == ORIGINAL_SPEC
    assert "labels" not in after["metadata"] and "annotations" not in after["metadata"]


async def test_without_a_virtual_service_one_is_created_and_then_deleted(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    steps = [Fault(delay_ms=100), Fault(delay_ms=500)]
    backend = IstioBackend(_experiment(namespace, FaultKind.LATENCY, steps), custom_api(custom))
    for step in steps:
        await backend.apply(step, _expires())
        vs = await _get(custom, namespace, "harbinger-chaos-payments")
        assert vs["metadata"]["labels"][contract.CHAOS_OWNED_LABEL] == "created"
        assert vs["spec"]["http"][0]["fault"]["delay"]["fixedDelay"] == f"{(step.delay_ms or 0) / 1000:g}s"
    await backend.remove_all()
    listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert listed["items"] == []


async def test_a_restarted_controller_sweeps_expired_faults_and_restores_the_original(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
    crashed = IstioBackend(_experiment(namespace, FaultKind.ERROR, [Fault(abort_status=500)]), custom_api(custom))
    await crashed.apply(Fault(abort_status=500), datetime.now(UTC) - timedelta(seconds=1))  # already expired
    other = await make_namespace(opted_in=True, labels=CHAOS_ON)
    await _create(custom, other, "payments", copy.deepcopy(ORIGINAL_SPEC))
    live = IstioBackend(_experiment(other, FaultKind.ERROR, [Fault(abort_status=500)]), custom_api(custom))
    await live.apply(Fault(abort_status=500), _expires())

    assert await sweep_virtual_services(custom_api(custom), everything=False) >= 1
    assert (await _get(custom, namespace, "payments"))["spec"] == ORIGINAL_SPEC
    assert "fault" in (await _get(custom, other, "payments"))["spec"]["http"][0]  # not expired: kept
    await sweep_virtual_services(custom_api(custom), everything=True)  # the controller's start-up sweep
    assert (await _get(custom, other, "payments"))["spec"] == ORIGINAL_SPEC


async def test_the_crd_refuses_a_malformed_fault(custom: client.CustomObjectsApi, make_namespace: Any) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    spec = {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "x"}}],
                                      "fault": {"abort": {"httpStatus": "five hundred"}}}]}
    with pytest.raises(client.ApiException) as caught:
        await _create(custom, namespace, "bad", spec)
    assert caught.value.status == 422


async def test_a_namespace_without_chaos_opt_in_is_never_touched(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    no_labels: dict[str, str] = {}
    for labels in (no_labels, None):
        namespace = await make_namespace(opted_in=labels is not None, labels=labels)
        await _create(custom, namespace, "payments", copy.deepcopy(ORIGINAL_SPEC))
        backend = IstioBackend(_experiment(namespace, FaultKind.ERROR, [Fault(abort_status=500)]), custom_api(custom))
        with pytest.raises(InvalidInput, match="opted"):
            await backend.apply(Fault(abort_status=500), _expires())
        assert (await _get(custom, namespace, "payments"))["spec"] == ORIGINAL_SPEC


async def test_a_new_run_adopts_the_virtual_service_a_dead_run_created(
    custom: client.CustomObjectsApi, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels=CHAOS_ON)
    dead = IstioBackend(_experiment(namespace, FaultKind.LATENCY, [Fault(delay_ms=100)]), custom_api(custom))
    await dead.apply(Fault(delay_ms=100), _expires())
    fresh = IstioBackend(_experiment(namespace, FaultKind.LATENCY, [Fault(delay_ms=300)]), custom_api(custom))
    await fresh.apply(Fault(delay_ms=300), _expires())
    vs = await _get(custom, namespace, "harbinger-chaos-payments")
    assert vs["spec"]["http"][0]["fault"]["delay"]["fixedDelay"] == "0.3s"
    assert await fresh.remove_all() == 1
    assert (await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))["items"] == []
