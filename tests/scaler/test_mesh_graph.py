"""The dependency graph from the mesh's ``istio_requests_total``: the shared query (as the
planner and ``harbinger chaos generate`` ask it) against the real Prometheus scraping
served samples, workloads turned into ``namespace/service`` keys; calls of workloads no managed
Deployment runs are left out, and calls that would make the graph cyclic fall back to the
declared graph: the mesh's calls are tenants' doing and never stop every team's plan."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry, Counter, generate_latest

from chaos.graphsource import edges_from_prometheus as chaos_edges
from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.errors import PrometheusQueryError, PrometheusUnavailable
from harbinger.graph import MeshEdge, ServiceGraph, edges_from_prometheus
from harbinger.profile import CapacityProfile
from harbinger.prometheus import PrometheusClient
from harbinger_dev.localcluster import LocalPrometheus
from harbinger_dev.localcluster.cluster import free_port
from scaler.controller import Planner
from scaler.inputs import PrometheusEdges, Target, graph_from_mesh, resolve_graph

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import ScrapeTarget

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.0, warmup_seconds=60)


# --- workloads to services (pure) ------------------------------------------------------------
def target(service: str, deployment: str, namespace: str = "shop") -> Target:
    return Target(service, {"metadata": {"name": deployment, "namespace": namespace}}, None, PROFILE)


TARGETS = {t.key: t for t in (target("frontend", "frontend"), target("checkout", "checkout-v2"),
                              target("payments", "payments"), target("frontend", "frontend", "blog"))}


def test_workloads_become_services_and_calls_outside_the_planners_namespaces_are_left_out() -> None:
    edges = {MeshEdge("frontend", "checkout-v2", "shop", "shop"), MeshEdge("checkout-v2", "payments", "shop", "shop"),
             MeshEdge("istio-ingressgateway", "frontend", "istio-system", "shop"),
             MeshEdge("frontend", "ads", "shop", "marketing"), MeshEdge("frontend", "checkout-v2", "", "")}
    graph = graph_from_mesh(edges, TARGETS, {"shop"}, declared=ServiceGraph(()), source="mesh")
    assert graph.calls == {"shop/frontend": {"shop/checkout"}, "shop/checkout": {"shop/payments"},
                           "shop/payments": frozenset()}


def test_calls_that_would_make_a_cycle_fall_back_to_the_declared_graph(caplog: pytest.LogCaptureFixture) -> None:
    edges = {MeshEdge("frontend", "checkout-v2", "shop", "shop"), MeshEdge("checkout-v2", "payments", "shop", "shop")}
    # The declared graph's calls stay (the mesh cannot see calls outside it) ...
    declared = ServiceGraph.build(["shop/payments", "shop/frontend"], [("shop/payments", "shop/frontend")])
    # ... and here the mesh's calls would close a cycle with them: the declared graph alone orders.
    graph = graph_from_mesh(edges, TARGETS, {"shop"}, declared=declared, source="mesh")
    assert graph.calls == {"shop/payments": {"shop/frontend"}, "shop/frontend": frozenset()}
    assert "mesh: the dependency graph has a cycle" in caplog.text


def test_a_workload_no_managed_deployment_runs_is_left_out() -> None:
    edges = {MeshEdge("nightly-report", "payments", "shop", "shop"), MeshEdge("frontend", "payments", "shop", "shop")}
    graph = graph_from_mesh(edges, TARGETS, {"shop"}, declared=ServiceGraph(()), source="mesh")
    assert graph.calls == {"shop/frontend": {"shop/payments"}, "shop/payments": frozenset()}


def test_a_declared_graph_resolves_to_keys_and_leaves_out_what_it_cannot_name(
        caplog: pytest.LogCaptureFixture) -> None:
    declared = ServiceGraph.build(["frontend", "checkout", "payments", "gone"],
                                  [("checkout", "payments"), ("frontend", "checkout"), ("gone", "payments")])
    graph = resolve_graph(declared, TARGETS, source="graph.yaml")
    # "checkout" and "payments" name one service each; "frontend" is run in two namespaces.
    assert graph.calls == {"shop/checkout": {"shop/payments"}, "shop/payments": frozenset()}
    assert "'frontend' is run in several namespaces" in caplog.text
    assert "no Deployment in an opted-in namespace provides 'gone'" in caplog.text
    keyed = ServiceGraph.build(["shop/frontend", "checkout"], [("shop/frontend", "checkout")])
    assert resolve_graph(keyed, TARGETS, source="graph.yaml").calls["shop/frontend"] == {"shop/checkout"}


# --- the real Prometheus ----------------------------------------------------------------------
LABELS = ("reporter", "source_workload", "source_workload_namespace", "destination_workload",
          "destination_workload_namespace", "source_canonical_service", "destination_canonical_service")


@dataclass
class Mesh:
    """Serves ``istio_requests_total`` for the calls in ``calls``, each growing 10 per scrape."""

    job: str
    counter: Counter
    calls: set[tuple[str, str, str, str]] = field(default_factory=set)

    def call(self, caller_ns: str, caller: str, callee_ns: str, callee: str) -> None:
        self.calls.add((caller_ns, caller, callee_ns, callee))

    def stop(self, caller_ns: str, caller: str, callee_ns: str, callee: str) -> None:
        self.calls.discard((caller_ns, caller, callee_ns, callee))
        self.counter.remove(*self._labels((caller_ns, caller, callee_ns, callee)))

    @staticmethod
    def _labels(call: tuple[str, str, str, str]) -> tuple[str, ...]:
        caller_ns, caller, callee_ns, callee = call
        # Canonical services as chaos reads them: the workload's name without its version.
        return ("source", caller, caller_ns, callee, callee_ns, caller.removesuffix("-v2"), callee.removesuffix("-v2"))


@pytest.fixture
async def mesh(scrape: ScrapeTarget) -> AsyncIterator[Mesh]:
    registry = CollectorRegistry()
    counter = Counter("istio_requests", "requests by caller and callee", LABELS, registry=registry)
    served = Mesh(f"mesh-{uuid.uuid4().hex[:6]}", counter)

    def render() -> bytes:
        for call in served.calls:
            counter.labels(*served._labels(call)).inc(10)
        return generate_latest(registry)

    async with scrape(served.job, render):
        yield served


def in_namespaces(edges: set[MeshEdge], *namespaces: str) -> set[MeshEdge]:
    return {e for e in edges if e.caller_namespace in namespaces or e.callee_namespace in namespaces}


async def test_the_shared_query_reads_calls_by_workload_and_by_canonical_service(
    prometheus: LocalPrometheus, mesh: Mesh, eventually: Any,
) -> None:
    shop = f"shop-{uuid.uuid4().hex[:6]}"
    mesh.call(shop, "frontend", shop, "checkout-v2")
    mesh.call(shop, "checkout-v2", shop, "payments")
    mesh.call(shop, "unknown", shop, "frontend")  # from outside the mesh
    mesh.call(shop, "payments", shop, "payments")  # a self-call orders nothing

    async with PrometheusClient(prometheus.url) as client:
        async def seen() -> set[MeshEdge]:
            return in_namespaces(await edges_from_prometheus(client, window="5s"), shop)

        assert await eventually(seen, timeout=60, what="the calls in Prometheus") == {
            MeshEdge("frontend", "checkout-v2", shop, shop), MeshEdge("checkout-v2", "payments", shop, shop)}
        # harbinger chaos generate --graph-from-prometheus: the same query, by canonical service.
        found = await chaos_edges(client, window="5s")
        assert {("frontend", "checkout"), ("checkout", "payments")} <= found
        assert not any("unknown" in edge for edge in found)
        with pytest.raises(PrometheusQueryError, match="parse error"):
            await edges_from_prometheus(client, query="sum by (x) (rate(istio_requests_total[{window}]")
    async with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_seconds=2) as gone:
        with pytest.raises(PrometheusUnavailable, match="is unavailable"):
            await edges_from_prometheus(gone)


async def read_hpa_spec(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    hpa = await client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(name, namespace)
    return {"min": hpa.spec.min_replicas, "annotations": hpa.metadata.annotations}


async def test_the_planner_orders_by_the_calls_the_mesh_saw_and_a_bad_derived_graph_stops_no_one(
    kube: client.ApiClient, prometheus: LocalPrometheus, mesh: Mesh, make_namespace: Any, new_service: Any,
    forecast: Any, scripted: Any, eventually: Any,
) -> None:
    shop = await make_namespace(opted_in=True)
    elsewhere = await make_namespace()  # not opted in: its workloads are not the planner's
    annotations = {contract.CAPACITY_PROFILE: PROFILE.model_dump_json()}
    await new_service(kube, shop, "frontend", annotations=annotations)
    await new_service(kube, shop, "checkout-v2", annotations={**annotations, contract.SERVICE: "checkout"})
    await new_service(kube, shop, "payments", annotations=annotations)
    mesh.call(shop, "frontend", shop, "checkout-v2")
    mesh.call(shop, "checkout-v2", shop, "payments")
    mesh.call("istio-system", "istio-ingressgateway", shop, "frontend")
    mesh.call(shop, "frontend", elsewhere, "ads")
    edges = PrometheusEdges(prometheus.url, window_seconds=5)

    async def calls(*wanted: tuple[str, str], gone: tuple[str, str] | None = None) -> bool:
        found = {(e.caller, e.callee) for e in in_namespaces(await edges.edges(), shop)}
        return set(wanted) <= found and (gone is None or gone not in found)

    await eventually(lambda: calls(("frontend", "checkout-v2"), ("checkout-v2", "payments"),
                                   ("istio-ingressgateway", "frontend"), ("frontend", "ads")),
                     timeout=60, what="the calls in Prometheus")
    source = scripted({s: forecast(s, T0, [80.0] * 4, step_seconds=300) for s in ("frontend", "checkout", "payments")})
    watching = Planner(kube, forecasts=source, clock=ManualClock(T0), forecast_only=True,
                       namespaces=frozenset({shop}), graph_edges=edges)
    report = await watching.run_once()
    assert report.inputs is not None
    frontend, checkout, payments = (f"{shop}/{s}" for s in ("frontend", "checkout", "payments"))
    assert report.inputs.graph.calls == {frontend: {checkout}, checkout: {payments}, payments: frozenset()}
    assert report.allocation is not None and report.allocation.order == (payments, checkout, frontend)

    # Prometheus gone: the calls it gave last still order the plan.
    watching.graph_edges = PrometheusEdges(f"http://127.0.0.1:{free_port()}", window_seconds=5)
    report = await watching.run_once()
    assert report.inputs is not None and report.inputs.graph.calls[checkout] == {payments}
    # ... but a planner that never had them does not guess.
    blind = Planner(kube, forecasts=source, clock=ManualClock(T0), forecast_only=True,
                    namespaces=frozenset({shop}), graph_edges=watching.graph_edges)
    with pytest.raises(PrometheusUnavailable, match="is unavailable"):
        await blind.run_once()

    # A workload in the planner's namespace that no Deployment with a service runs (a batch
    # job, a bare pod): its calls are left out, and every service is still planned.
    acting = Planner(kube, forecasts=source, clock=ManualClock(T0), namespaces=frozenset({shop}), graph_edges=edges)
    mesh.call(shop, "nightly-report", shop, "payments")
    await eventually(lambda: calls(("nightly-report", "payments")), timeout=60, what="the batch job's calls")
    report = await acting.run_once()
    assert report.outcome == "applied" and report.inputs is not None
    assert report.inputs.graph.calls == {frontend: {checkout}, checkout: {payments}, payments: frozenset()}
    # A cycle the tenants' calls make: ordered without the mesh's calls this run, still planned.
    mesh.stop(shop, "nightly-report", shop, "payments")
    mesh.call(shop, "payments", shop, "frontend")
    await eventually(lambda: calls(("payments", "frontend"), gone=("nightly-report", "payments")), timeout=60,
                     what="the cycle, and the batch job gone")
    report = await acting.run_once()
    assert report.outcome == "applied" and report.inputs is not None
    assert report.inputs.graph.calls == {}
    assert report.floors == {frontend: 8, checkout: 8, payments: 8}
    for name in ("frontend", "checkout-v2", "payments"):
        deployment = await client.AppsV1Api(kube).read_namespaced_deployment(name, shop)
        # No Nodes for them here: the plan is recorded, the allocation grants what fits.
        assert json.loads(deployment.metadata.annotations[contract.PLAN])["peak_tps"] == 80.0
