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
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from harbinger import contract
from harbinger.kube import new_api_client
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus

REPO_ROOT = Path(__file__).resolve().parents[1]
INTEGRATION_FIXTURES = {"cluster", "prometheus", "scrape", "kube", "namespace", "make_namespace", "make_nodes"}


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


#: ``async with serve_app(app) as url``: ``app`` served on a loopback port the kernel picks,
#: ``url`` its base (``http://127.0.0.1:PORT``), stopped when the block ends.
ServeApp = Callable[[web.Application], contextlib.AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def _serve_app(app: web.Application) -> AsyncIterator[str]:
    # aiohttp's own test server binds port 0 itself, so no free-port race and no private attributes.
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
def serve_app() -> ServeApp:
    return _serve_app


#: ``scrape(job, render)``: serve ``render()`` (Prometheus text format) on a loopback port that
#: the session's Prometheus scrapes as ``job`` every second, for as long as the block runs.
ScrapeTarget = Callable[[str, Callable[[], bytes]], contextlib.AbstractAsyncContextManager[None]]


@pytest.fixture
def scrape(prometheus: LocalPrometheus) -> ScrapeTarget:
    @contextlib.asynccontextmanager
    async def target(job: str, render: Callable[[], bytes]) -> AsyncIterator[None]:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=render(), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        async with _serve_app(app) as url:
            prometheus.add_target(job, url.removeprefix("http://"))
            try:
                yield
            finally:
                prometheus.remove_job(job)

    return target


@pytest.fixture
async def kube(cluster: LocalCluster) -> AsyncIterator[client.ApiClient]:
    api = await new_api_client(cluster.kubeconfig)
    try:
        yield api
    finally:
        await api.close()


#: ``async with as_account(namespace, name) as api``: an ApiClient holding only that
#: ServiceAccount's token (ten minutes), to prove what its RBAC and admission policies allow.
AsAccount = Callable[[str, str], contextlib.AbstractAsyncContextManager[client.ApiClient]]


@pytest.fixture
def as_account(cluster: LocalCluster, kube: client.ApiClient) -> AsAccount:
    @contextlib.asynccontextmanager
    async def account(namespace: str, name: str) -> AsyncIterator[client.ApiClient]:
        token = await client.CoreV1Api(kube).create_namespaced_service_account_token(
            name, namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)))
        configuration = client.Configuration(host=cluster.server)
        configuration.ssl_ca_cert = str(cluster.ca_cert)
        configuration.api_key = {"BearerToken": token.status.token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        async with client.ApiClient(configuration) as api:
            yield api

    return account


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
    await _delete_all(core.delete_namespace, created)


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


MakeNodes = Callable[..., Awaitable[list[str]]]


def node_body(name: str, spec: dict[str, str], labels: dict[str, str], taint: tuple[str, str] | None) -> dict[str, Any]:
    """A KWOK node: ``spec`` may set cpu, memory, pods, bandwidth (``harbinger.io/bandwidth``) and zone."""
    resources = {"cpu": spec.get("cpu", "8"), "memory": spec.get("memory", "32Gi"), "pods": spec.get("pods", "110")}
    node_labels = {"type": "kwok", **labels}
    if "bandwidth" in spec:
        node_labels[contract.NODE_BANDWIDTH] = spec["bandwidth"]
    if "zone" in spec:
        node_labels[contract.ZONE_LABEL] = spec["zone"]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": node_labels},
                            "status": {"allocatable": resources, "capacity": resources}}
    if taint:
        body["spec"] = {"taints": [{"key": taint[0], "value": taint[1], "effect": "NoSchedule"}]}
    return body


@pytest.fixture
async def make_nodes(kube: client.ApiClient, eventually: Eventually) -> AsyncIterator[MakeNodes]:
    """``await make_nodes({"name": {"cpu": "8", "bandwidth": "1G", ...}}, labels=..., taint=(key, value))``:
    KWOK nodes that are Ready and free of every taint but the test's own (until the node
    lifecycle controller lifts its not-ready taint, the scheduler would skip them), deleted
    after the test. A taint of the test's own keeps other tests' pods off them."""
    core: Any = client.CoreV1Api(kube)  # bodies are the Node's JSON, not model objects
    created: list[str] = []

    async def make(nodes: dict[str, dict[str, str]], *, labels: dict[str, str] | None = None,
                   taint: tuple[str, str] | None = None) -> list[str]:
        for name, spec in nodes.items():
            await core.create_node(node_body(name, spec, labels or {}, taint))
            created.append(name)

        async def ready() -> bool:
            for name in nodes:
                node = await core.read_node(name)
                if not any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                    return False
                if any(taint is None or t.key != taint[0] for t in node.spec.taints or []):
                    return False
            return True

        await eventually(ready, timeout=60, what=f"KWOK to mark {sorted(nodes)} Ready")
        return list(nodes)

    yield make
    await _delete_all(core.delete_node, created)


async def _delete_all(delete: Callable[[str], Awaitable[Any]], names: list[str]) -> None:
    """Delete what a fixture created; one already gone (a test deleted it) is fine."""
    for name in names:
        try:
            await delete(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
