"""Fixtures every test folder shares: the real local control plane, a real Prometheus,
an API client, throwaway namespaces and the shipped traffic traces.

The control plane and Prometheus are session-scoped: started once (about 15 s),
stopped at the end of the run, whatever happened in between. A test that uses either
is marked ``integration`` automatically.
"""

from __future__ import annotations

import os

# scikit-learn and onnxruntime spread over every core by default; on a 2-core CI machine
# that is slower than one thread, and it starves the control plane the same tests use.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from harbinger import contract
from harbinger.kube import new_api_client
from harbinger.localcluster import LocalCluster, LocalPrometheus

REPO_ROOT = Path(__file__).resolve().parents[1]
INTEGRATION_FIXTURES = {"cluster", "prometheus", "kube", "namespace", "make_namespace"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    """The real traces in ``../shared/data/traces`` (or ``$HARBINGER_TRACES_DIR``)."""
    path = Path(os.environ.get("HARBINGER_TRACES_DIR", REPO_ROOT.parent / "shared" / "data" / "traces"))
    if not (path / "nasa.csv").exists():
        pytest.fail(f"the shared traces are not at {path}; set HARBINGER_TRACES_DIR to their directory")
    return path


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + KWOK on 127.0.0.1.

    The HPA controller syncs every 2 s here (15 s in production) so tests see floors applied quickly.
    """
    with LocalCluster(hpa_sync_seconds=2) as local:
        yield local


@pytest.fixture(scope="session")
def prometheus() -> Iterator[LocalPrometheus]:
    with LocalPrometheus(scrape_interval="1s") as local:
        yield local


@pytest.fixture
async def kube(cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield api
    finally:
        await api.close()


MakeNamespace = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_namespace(kube: client.ApiClient) -> AsyncIterator[MakeNamespace]:
    """``await make_namespace(opted_in=True, labels={...})`` -> a fresh namespace name,
    deleted after the test."""
    core = client.CoreV1Api(kube)
    created: list[str] = []

    async def make(*, opted_in: bool = False, labels: dict[str, str] | None = None, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        all_labels = dict(labels or {})
        if opted_in:
            all_labels[contract.ENABLED_LABEL] = contract.ENABLED_VALUE
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=all_labels)))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            await core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
async def namespace(make_namespace: MakeNamespace) -> str:
    """A fresh namespace that is not opted in."""
    return await make_namespace()


Eventually = Callable[..., Awaitable[Any]]


async def _eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 60, interval: float = 0.25, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns a truthy value, and return that value; fail naming
    ``what`` (and the last value seen) after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(async_check, timeout=60, what="pods Running")``: the one polling
    helper for tests that wait on controllers."""
    return _eventually
