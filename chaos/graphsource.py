"""The dependency graph when no one wrote it down: from the mesh's own metrics (who called
whom, ``istio_requests_total``) and from VirtualServices (which hosts exist, and calls
pinned to a caller with ``sourceLabels``)."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from chaos.backends.istio import CALLER_LABEL, GROUP, PLURAL, VERSION
from harbinger import graph
from harbinger.graph import ServiceGraph
from harbinger.kube import read_json
from harbinger.prometheus import PrometheusClient

#: Chaos names services by Istio's canonical service, not by workload as the planner does.
EDGES_QUERY = ('sum by (source_canonical_service, destination_canonical_service) '
               '(rate(istio_requests_total{reporter="source"}[{window}]))')


async def edges_from_prometheus(prometheus: PrometheusClient, *, window: str = "1h", query: str | None = None,
                                source_label: str = "source_canonical_service",
                                destination_label: str = "destination_canonical_service") -> set[tuple[str, str]]:
    """Caller -> callee pairs with traffic in ``window`` (the shared
    :func:`harbinger.graph.edges_from_prometheus`, by canonical service)."""
    edges = await graph.edges_from_prometheus(
        prometheus, query=query or EDGES_QUERY, window=window, source_label=source_label,
        destination_label=destination_label, source_namespace_label=None, destination_namespace_label=None)
    return {(edge.caller, edge.callee) for edge in edges}


def _short(host: str) -> str:
    return host.split(".", 1)[0]


def edges_from_virtual_services(items: list[dict[str, Any]]) -> tuple[set[str], set[tuple[str, str]]]:
    """Services (each VirtualService's hosts and route destinations) and the calls its
    ``sourceLabels`` matches pin to a caller."""
    services: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for vs in items:
        spec = vs.get("spec") or {}
        hosts = {_short(h) for h in spec.get("hosts") or [] if "*" not in h}
        services |= hosts
        for route in spec.get("http") or []:
            destinations = {_short(d["destination"]["host"]) for d in route.get("route") or []
                            if (d.get("destination") or {}).get("host")}
            services |= destinations
            for match in route.get("match") or []:
                caller = (match.get("sourceLabels") or {}).get(CALLER_LABEL)
                if caller:
                    services.add(caller)
                    edges |= {(caller, d) for d in destinations | hosts if d != caller}
    return services, edges


async def virtual_services(api: client.ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api)
    call = (custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _preload_content=False)
            if namespace else custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False))
    return list((await read_json(call)).get("items") or [])


def merge(services: set[str], edges: set[tuple[str, str]], *, source: str) -> ServiceGraph:
    names = sorted(services | {end for edge in edges for end in edge})
    return ServiceGraph.build(names, sorted(edges), source=source)
