"""The local control plane is a real one: the scheduler binds, KWOK runs, the
ReplicaSet and HPA controllers act, exactly as on a cluster."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client

from harbinger_dev.localcluster import LocalCluster

NODE_PREFIX = "fnd-"


def pod_spec() -> client.V1PodSpec:
    # Pinned to this module's nodes (and tolerating their taint), so other tests' nodes
    # and pods never mix with these.
    return client.V1PodSpec(
        containers=[client.V1Container(name="app", image="example.invalid/app:1")],
        node_selector={"harbinger-test": "foundation"},
        tolerations=[client.V1Toleration(key="harbinger-test", operator="Equal", value="foundation",
                                         effect="NoSchedule")],
    )


@pytest.fixture
async def three_nodes(make_nodes: Any) -> list[str]:
    names = {f"{NODE_PREFIX}{uuid.uuid4().hex[:6]}-{i}": {"cpu": "8", "memory": "32Gi"} for i in range(3)}
    result: list[str] = await make_nodes(names, labels={"harbinger-test": "foundation"},
                                         taint=("harbinger-test", "foundation"))
    return result


async def test_versions_are_the_pinned_release(cluster: LocalCluster) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.37.2"' in out


async def test_scheduler_binds_a_pod_and_kwok_runs_it(
    kube: client.ApiClient, namespace: str, three_nodes: list[str], eventually: Any
) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(namespace, client.V1Pod(metadata=client.V1ObjectMeta(name="one"),
                                                             spec=pod_spec()))

    async def running() -> client.V1Pod | None:
        pod = await core.read_namespaced_pod("one", namespace)
        return pod if pod.status.phase == "Running" else None

    pod = await eventually(running, what="the pod to be bound and Running")
    assert pod.spec.node_name in three_nodes


async def test_deployment_gets_replicas_and_hpa_enforces_its_floor(
    kube: client.ApiClient, namespace: str, three_nodes: list[str], eventually: Any
) -> None:
    apps = client.AppsV1Api(kube)
    core = client.CoreV1Api(kube)
    labels = {"app.kubernetes.io/name": "web"}
    await apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=3,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod_spec()),
        ),
    ))

    async def running_pods(count: int) -> bool:
        pods = await core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=web")
        return sum(p.status.phase == "Running" for p in pods.items) == count

    await eventually(lambda: running_pods(3), what="3 Running pods from the ReplicaSet controller")

    await client.AutoscalingV2Api(kube).create_namespaced_horizontal_pod_autoscaler(
        namespace,
        client.V2HorizontalPodAutoscaler(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V2HorizontalPodAutoscalerSpec(
                scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment",
                                                                      name="web"),
                min_replicas=5, max_replicas=10,
                metrics=[client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
                    name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=70)))],
            ),
        ),
    )
    # No metrics server here: the HPA controller still raises replicas to minReplicas.
    await eventually(lambda: running_pods(5), timeout=90, what="the HPA floor of 5 Running pods")
    deployment = await apps.read_namespaced_deployment("web", namespace)
    assert deployment.spec.replicas == 5
