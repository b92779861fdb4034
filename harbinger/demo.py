"""``make demo``: the Harbinger story on a real local control plane.

Run with ``python -m harbinger.demo [--fast]``. Every step prints what it does; the
cluster and every process the demo starts are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubernetes_asyncio import client

from harbinger import contract
from harbinger.kube import api_client
from harbinger.localcluster import LocalCluster

NODES = {"node-a": "10G", "node-b": "1G", "node-c": "100M"}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def create_nodes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for name, bandwidth in NODES.items():
        await core.create_node(client.V1Node(
            metadata=client.V1ObjectMeta(name=name, labels={contract.NODE_BANDWIDTH: bandwidth, "type": "kwok"}),
            status=client.V1NodeStatus(allocatable={"cpu": "16", "memory": "64Gi", "pods": "110"},
                                       capacity={"cpu": "16", "memory": "64Gi", "pods": "110"}),
        ))

    async def ready() -> bool:
        nodes = (await core.list_node()).items
        return len(nodes) == len(NODES) and all(
            any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or []) for n in nodes
        )

    await wait_for(ready, "KWOK to mark the nodes Ready")
    for node in (await core.list_node()).items:
        say(f"  node {node.metadata.name}: Ready, bandwidth {node.metadata.labels[contract.NODE_BANDWIDTH]}")


async def schedule_a_pod(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_pod("default", client.V1Pod(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="hello", image="example.invalid/hello:1")]),
    ))

    async def running() -> bool:
        pod = await core.read_namespaced_pod("hello", "default")
        return bool(pod.status.phase == "Running")

    await wait_for(running, "the pod to run")
    pod = await core.read_namespaced_pod("hello", "default")
    say(f"  pod default/hello: bound by kube-scheduler to {pod.spec.node_name}, Running (KWOK)")


async def story(cluster: LocalCluster) -> None:
    async with api_client(cluster.kubeconfig) as api:
        say("creating three nodes with different network bandwidth")
        await create_nodes(api)
        say("creating a pod; the real scheduler places it")
        await schedule_a_pod(api)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harbinger.demo", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="shorter waits (used by the test of the demo)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where reports are written")
    args = parser.parse_args(argv)
    started = time.monotonic()
    say("starting the local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK")
    with LocalCluster() as cluster:
        say(f"control plane ready at {cluster.server} ({time.monotonic() - started:.1f}s)")
        asyncio.run(story(cluster))
        say("stopping the control plane")
    say(f"done in {time.monotonic() - started:.1f}s; nothing left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
