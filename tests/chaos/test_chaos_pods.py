"""The sidecar backend on the real apiserver: a fault is annotations on the target's pods
(only those that opted in, only as many as the blast radius allows), removed exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from chaos.backends.base import ORIGINAL_ANNOTATION
from chaos.backends.pods import PodAnnotationBackend, sweep_pods
from chaos.experiment import Experiment, FaultKind
from chaos.faults import Fault, fault_from_annotations
from harbinger import contract
from harbinger.errors import HarbingerError


async def _pod(core: client.CoreV1Api, namespace: str, name: str, service: str,
               annotations: dict[str, str] | None = None) -> None:
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {contract.APP_NAME_LABEL: service}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    await core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]  # the API takes plain dicts too


async def _annotations(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    pod = await core.read_namespaced_pod(name, namespace)
    return dict(pod.metadata.annotations or {})


def _experiment(namespace: str, pods: int | None) -> Experiment:
    return Experiment(name="cpu-payments", kind=FaultKind.CPU, target="payments", namespace=namespace,
                      steps=[Fault(cpu_cores=0.25), Fault(cpu_cores=0.5)], pods=pods)


async def test_faults_go_on_the_chosen_pods_and_come_off_exactly(kube: client.ApiClient, make_namespace: Any) -> None:
    core = client.CoreV1Api(kube)
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    # payments-a already carries a chaos-experiment annotation from elsewhere: it must come back.
    await _pod(core, namespace, "payments-a", "payments", {contract.CHAOS_EXPERIMENT: "team-drill", "keep": "me"})
    await _pod(core, namespace, "payments-b", "payments")
    await _pod(core, namespace, "checkout-a", "checkout")
    before = {n: await _annotations(core, namespace, n) for n in ("payments-a", "payments-b", "checkout-a")}

    backend = PodAnnotationBackend(_experiment(namespace, pods=1), kube)
    for step in (Fault(cpu_cores=0.25), Fault(cpu_cores=0.5)):
        await backend.apply(step, datetime.now(UTC) + timedelta(seconds=60))
        annotations = await _annotations(core, namespace, "payments-a")
        active = fault_from_annotations(annotations, source="test")
        assert active is not None and active.fault == step and active.experiment == "cpu-payments"
        assert json.loads(annotations[ORIGINAL_ANNOTATION])[contract.CHAOS_EXPERIMENT] == "team-drill"
    assert backend.describe_targets() == [f"pod {namespace}/payments-a"]
    assert await _annotations(core, namespace, "payments-b") == before["payments-b"]
    assert await _annotations(core, namespace, "checkout-a") == before["checkout-a"]

    assert await backend.remove_all() == 1
    assert await _annotations(core, namespace, "payments-a") == before["payments-a"]
    pod = await core.read_namespaced_pod("payments-a", namespace)
    assert contract.CHAOS_OWNED_LABEL not in (pod.metadata.labels or {})


async def test_expired_pod_faults_are_swept(kube: client.ApiClient, make_namespace: Any) -> None:
    core = client.CoreV1Api(kube)
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    await _pod(core, namespace, "payments-a", "payments")
    backend = PodAnnotationBackend(_experiment(namespace, pods=None), kube)
    await backend.apply(Fault(cpu_cores=0.25), datetime.now(UTC) - timedelta(seconds=1))
    assert await sweep_pods(kube, everything=False) >= 1
    assert await _annotations(core, namespace, "payments-a") == {}


async def test_pods_without_chaos_opt_in_are_refused(kube: client.ApiClient, make_namespace: Any) -> None:
    core = client.CoreV1Api(kube)
    namespace = await make_namespace(opted_in=True)  # harbinger on, chaos not
    await _pod(core, namespace, "payments-a", "payments")
    backend = PodAnnotationBackend(_experiment(namespace, pods=None), kube)
    with pytest.raises(HarbingerError, match="opted into chaos"):
        await backend.apply(Fault(cpu_cores=0.25), datetime.now(UTC) + timedelta(seconds=60))
    assert await _annotations(core, namespace, "payments-a") == {}
