"""Builders for the objects the extender reads: Node and Pod dicts as the apiserver sends
them, and ExtenderArgs bodies as kube-scheduler sends them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from harbinger import contract
from harbinger.httpserver import serve
from harbinger_dev.localcluster.cluster import free_port

_uids = itertools.count(1)


def node(name: str, bandwidth: str | None = None, *, zone: str | None = None,
         as_annotation: bool = False) -> dict[str, Any]:
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if bandwidth is not None:
        (annotations if as_annotation else labels)[contract.NODE_BANDWIDTH] = bandwidth
    if zone is not None:
        labels[contract.ZONE_LABEL] = zone
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}}


def pod(name: str = "", *, namespace: str = "shop", node_name: str | None = None, ingress: str | None = None,
        egress: str | None = None, warmup: bool = False, service: str | None = None, uid: str | None = None,
        phase: str = "Running", scheduler: str = contract.SCHEDULER_NAME) -> dict[str, Any]:
    """A pod; by default one of the scheduler the extender serves, so that it counts wherever
    it runs (``scheduler="default-scheduler"``: counts only in an opted-in namespace)."""
    annotations: dict[str, str] = {}
    if ingress is not None:
        annotations[contract.INGRESS_BANDWIDTH] = ingress
    if egress is not None:
        annotations[contract.EGRESS_BANDWIDTH] = egress
    if warmup:
        annotations[contract.WARMUP] = "true"
    labels = {contract.APP_NAME_LABEL: service} if service else {}
    number = next(_uids)
    return {
        "metadata": {"name": name or f"pod-{number}", "namespace": namespace, "uid": uid or f"uid-{number}",
                     "labels": labels, "annotations": annotations},
        "spec": {"nodeName": node_name, "schedulerName": scheduler,
                 "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": phase if node_name else "Pending"},
    }


def args(pod_object: dict[str, Any], names: list[str]) -> bytes:
    """An ExtenderArgs body as a nodeCacheCapable kube-scheduler sends it (Nodes null)."""
    return json.dumps({"Pod": pod_object, "Nodes": None, "NodeNames": names}).encode()


# The builders as fixtures, so every test file in this folder shares one definition.
@pytest.fixture(scope="session")
def make_node() -> Callable[..., dict[str, Any]]:
    return node


@pytest.fixture(scope="session")
def make_pod() -> Callable[..., dict[str, Any]]:
    return pod


@pytest.fixture(scope="session")
def extender_args() -> Callable[[dict[str, Any], list[str]], bytes]:
    return args


@contextlib.asynccontextmanager
async def serving(app: web.Application, *, cert_dir: Path | None = None) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 through ``harbinger.httpserver.serve`` (the way the
    command starts it) on a free port; yield the port; stop and drain on exit."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, host="127.0.0.1", port=port, cert_dir=cert_dir,
                                     shutdown_grace_seconds=1, stop=stop))
    try:
        for _ in range(200):
            if task.done():
                task.result()  # raises why it could not start
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
def serve_app() -> Callable[..., contextlib.AbstractAsyncContextManager[int]]:
    return serving
