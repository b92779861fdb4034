"""The real kube-scheduler calling the extender, with the extender configuration shipped
in ``manifests/base/extender`` (only ``urlPrefix`` pointed at the test's port).

Every test makes its own KWOK nodes (unique names, a taint only these tests' pods
tolerate, and a pool label the pods select), so nothing here mixes with other tests'
nodes and pods. The scheduler is restored without the extender when the module ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client

from extender.answer import Extender
from extender.server import ClusterWatch, make_app, watching
from extender.state import ClusterState
from harbinger import contract
from harbinger.httpserver import serve
from harbinger.kube import api_client
from harbinger_dev.localcluster import LocalCluster
from harbinger_dev.localcluster.cluster import free_port

CONFIG_MAP = Path(__file__).resolve().parents[2] / "manifests" / "base" / "extender" / "scheduler-config.yaml"
POOL_LABEL = "harbinger-test/extender-pool"
TAINT_KEY = "harbinger-test/extender"


def shipped_extender_config(url: str) -> dict[str, Any]:
    """The ``extenders[0]`` of the KubeSchedulerConfiguration in the ConfigMap we ship."""
    config_map = yaml.safe_load(CONFIG_MAP.read_text())
    config = yaml.safe_load(config_map["data"]["kube-scheduler.yaml"])
    (extender,) = config["extenders"]
    assert extender["nodeCacheCapable"] is True and extender["ignorable"] is True
    return {**extender, "urlPrefix": url}


class Harness:
    """The extender served in-process on a fixed port, stoppable and restartable."""

    def __init__(self, state: ClusterState, watch: ClusterWatch) -> None:
        self.state = state
        self.watch = watch
        self.port = free_port()
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app: web.Application = make_app(Extender(self.state), ready=self.watch.synced)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve(app, host="127.0.0.1", port=self.port, stop=self._stop,
                                               shutdown_grace_seconds=1))
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("the extender did not start listening")

    async def stop(self) -> None:
        if self._stop and self._task:
            self._stop.set()
            await self._task
            self._task = None


@pytest.fixture(scope="module")
async def harness(cluster: LocalCluster) -> AsyncIterator[Harness]:
    # The local cluster's one scheduler calls the extender: its pods are the ones that count.
    state = ClusterState(assumed_placement_seconds=30, scheduler_name="default-scheduler")
    async with api_client(cluster.kubeconfig) as api, watching(state, api) as watch:
        await watch.wait_synced(timeout=30)
        harness = Harness(state, watch)
        await harness.start()
        await asyncio.to_thread(cluster.restart_scheduler, [shipped_extender_config(harness.url)])
        try:
            yield harness
        finally:
            await asyncio.to_thread(cluster.restart_scheduler, [])
            await harness.stop()


MakePool = Callable[[dict[str, dict[str, str]]], Awaitable[str]]


@pytest.fixture
def make_pool(make_nodes: Any) -> MakePool:
    """``pool = await make_pool({"small": {"bandwidth": "1G", "zone": "a", "cpu": "8"}})``:
    Ready KWOK nodes named ``hx-<pool>-<key>`` that only this module's pods tolerate."""

    async def make(specs: dict[str, dict[str, str]]) -> str:
        pool = f"hx-{uuid.uuid4().hex[:6]}"
        await make_nodes({f"{pool}-{key}": spec for key, spec in specs.items()},
                         labels={POOL_LABEL: pool}, taint=(TAINT_KEY, pool))
        return pool

    return make


def pod_body(name: str, pool: str, *, egress: str | None = None, warmup: bool = False, service: str | None = None,
             cpu: str | None = None, memory: str | None = None) -> client.V1Pod:
    annotations: dict[str, str] = {}
    if egress:
        annotations[contract.EGRESS_BANDWIDTH] = egress
    if warmup:
        annotations[contract.WARMUP] = "true"
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations,
                                     labels={contract.APP_NAME_LABEL: service} if service else None),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="app", image="example.invalid/app:1",
                                           resources=client.V1ResourceRequirements(requests=requests or None))],
            node_selector={POOL_LABEL: pool},
            tolerations=[client.V1Toleration(key=TAINT_KEY, operator="Equal", value=pool, effect="NoSchedule")],
            termination_grace_period_seconds=0,
        ),
    )


async def bound_node(core: client.CoreV1Api, namespace: str, name: str, eventually: Any) -> str:
    async def node() -> str | None:
        pod = await core.read_namespaced_pod(name, namespace)
        return pod.spec.node_name or None

    return str(await eventually(node, timeout=60, what=f"pod {name} to be bound"))


async def test_warmup_pods_land_only_where_the_headroom_is(
    harness: Harness, make_pool: MakePool, kube: client.ApiClient, namespace: str, eventually: Any
) -> None:
    """Three nodes, only one with the bandwidth: a burst of warm-up pods all lands there
    until it is full; the next one stays Pending with the extender's reason, until room
    is made."""
    pool = await make_pool({"tiny": {"bandwidth": "50M"}, "small": {"bandwidth": "50M"},
                             "big": {"bandwidth": "500M"}})
    core = client.CoreV1Api(kube)
    # Created back to back: the scheduler places them faster than the watch reports the
    # bindings, so only the assumed placements keep the big node from being overfilled.
    for i in range(5):
        await core.create_namespaced_pod(namespace, pod_body(f"warm-{i}", pool, egress="100M", warmup=True))
    placed = [await bound_node(core, namespace, f"warm-{i}", eventually) for i in range(5)]
    assert placed == [f"{pool}-big"] * 5

    await core.create_namespaced_pod(namespace, pod_body("one-too-many", pool, egress="100M", warmup=True))

    async def unschedulable() -> str | None:
        pod = await core.read_namespaced_pod("one-too-many", namespace)
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.message:
                return str(condition.message)
        return None

    message = await eventually(unschedulable, timeout=60, what="one-too-many to be reported unschedulable")
    assert "needs 100M egress bandwidth, 0 free of 500M" in message
    assert "needs 100M egress bandwidth, 50M free of 50M" in message
    pod = await core.read_namespaced_pod("one-too-many", namespace)
    assert pod.spec.node_name is None

    async def event_with_reason() -> str | None:
        events = await core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=one-too-many,reason=FailedScheduling")
        return next((e.message for e in events.items if "egress bandwidth" in (e.message or "")), None)

    assert await eventually(event_with_reason, timeout=60, what="a FailedScheduling event with the reason")

    # A warm-up pod goes away: the watch frees its bandwidth and the waiting pod fits. Waited for
    # in two steps, so that a failure says which side was late: the extender's watch, or the
    # scheduler's retry of a pod every extender rejected. The first asks about warm-0 itself: the
    # number of pods counted dips for a moment only, since the scheduler retries one-too-many on
    # the same deletion and the watch counts it as soon as it is bound.
    warm0 = await core.read_namespaced_pod("warm-0", namespace)
    assert harness.state.bound_node(warm0.metadata.uid) == f"{pool}-big"
    await core.delete_namespaced_pod("warm-0", namespace, grace_period_seconds=0)

    async def deletion_seen() -> bool:
        return harness.state.bound_node(warm0.metadata.uid) is None

    await eventually(deletion_seen, timeout=60, what="the extender's watch to see warm-0 deleted")
    # The scheduler retries one-too-many on the deletion itself. Where that retry came before the
    # watch had seen it (a loaded machine), the extender said no again, and the scheduler waits
    # for its next cluster event (or its 5-minute flush of unschedulable pods): one is made
    # here, a label on the big node, once the watch has seen the deletion.
    nudged = {"metadata": {"labels": {"harbinger-test/retry": uuid.uuid4().hex[:8]}}}
    await core.patch_node(f"{pool}-big", nudged)
    assert await bound_node(core, namespace, "one-too-many", eventually) == f"{pool}-big"


async def test_other_pods_are_placed_as_without_the_extender(
    harness: Harness, make_pool: MakePool, kube: client.ApiClient, namespace: str, eventually: Any
) -> None:
    """The roomiest node by CPU and memory has almost no bandwidth: a plain pod goes there
    (the default scoring's choice, the extender has no say), a warm-up pod does not."""
    pool = await make_pool({"cpu2": {"bandwidth": "10G", "cpu": "2", "memory": "8Gi"},
                             "cpu4": {"bandwidth": "10G", "cpu": "4", "memory": "16Gi"},
                             "cpu8": {"bandwidth": "1M", "cpu": "8", "memory": "32Gi"}})
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(namespace, pod_body("plain", pool, cpu="1", memory="1Gi"))
    assert await bound_node(core, namespace, "plain", eventually) == f"{pool}-cpu8"

    await core.create_namespaced_pod(namespace, pod_body("warm", pool, cpu="1", memory="1Gi", egress="10M",
                                                         warmup=True))
    assert await bound_node(core, namespace, "warm", eventually) != f"{pool}-cpu8"


async def test_one_services_warmup_replicas_spread_over_zones(
    harness: Harness, make_pool: MakePool, kube: client.ApiClient, namespace: str, eventually: Any
) -> None:
    pool = await make_pool({"a1": {"bandwidth": "10G", "zone": "a"}, "a2": {"bandwidth": "10G", "zone": "a"},
                             "b1": {"bandwidth": "10G", "zone": "b"}, "c1": {"bandwidth": "10G", "zone": "c"}})
    core = client.CoreV1Api(kube)
    for i in range(3):
        await core.create_namespaced_pod(namespace, pod_body(f"cart-{i}", pool, egress="10M", warmup=True,
                                                             service="cart"))
    placed = {await bound_node(core, namespace, f"cart-{i}", eventually) for i in range(3)}
    zones = {name.rsplit("-", 1)[1][0] for name in placed}
    assert zones == {"a", "b", "c"}


async def test_a_stopped_extender_does_not_stop_scheduling(
    harness: Harness, make_pool: MakePool, kube: client.ApiClient, namespace: str, eventually: Any
) -> None:
    pool = await make_pool({"only": {"bandwidth": "1M"}})
    core = client.CoreV1Api(kube)
    await harness.stop()
    try:
        # The extender would turn this pod down everywhere; with it gone (ignorable: true)
        # the scheduler places it as if it had never been configured.
        await core.create_namespaced_pod(namespace, pod_body("unchecked", pool, egress="5G", warmup=True))
        assert await bound_node(core, namespace, "unchecked", eventually) == f"{pool}-only"
    finally:
        await harness.start()


async def test_another_tenants_pods_cannot_fill_or_break_the_nodes(
    harness: Harness, make_pool: MakePool, kube: client.ApiClient, make_namespace: Any, eventually: Any
) -> None:
    """An adversarial tenant binds pods of its own scheduler onto every node, annotated ``1P``
    (in a namespace that did not opt in) and ``10E`` (in one that did): the first count for
    nothing, the second only up to its node's capacity, the extender keeps answering, and the
    other tenant's warm-up pod is still placed where the headroom is."""
    pool = await make_pool({"a": {"bandwidth": "1G"}, "b": {"bandwidth": "1G"}})
    outsider = await make_namespace()
    adversary = await make_namespace(opted_in=True)
    tenant = await make_namespace(opted_in=True)
    core = client.CoreV1Api(kube)

    def bound(name: str, node: str, egress: str) -> client.V1Pod:
        body = pod_body(name, pool, egress=egress)
        body.spec.node_name = f"{pool}-{node}"  # bound directly: no scheduler asked
        body.spec.scheduler_name = "someone-elses-scheduler"
        return body

    for node in ("a", "b"):
        await core.create_namespaced_pod(outsider, bound(f"huge-{node}", node, "1P"))
    await core.create_namespaced_pod(adversary, bound("overflow", "a", "10E"))
    await eventually(lambda: asyncio.sleep(0, result=harness.state.tracked_pods >= 1), timeout=30,
                     what="the bound pods in the extender's cache")
    assert harness.watch.synced()
    # 'a' is full (the 10E pod is clamped to its 1G), 'b' is free (the 1P pods do not count).
    await core.create_namespaced_pod(tenant, pod_body("warm", pool, egress="100M", warmup=True))
    assert await bound_node(core, tenant, "warm", eventually) == f"{pool}-b"
    slot = harness.state.slots[f"{pool}-a"]
    assert int(harness.state.used_egress[slot]) == 10**9
