"""The dependency graph when no one wrote it down: from the mesh's own metrics (who called
whom, ``istio_requests_total``) and from VirtualServices (which hosts exist, and calls
pinned to a caller with ``sourceLabels``)."""

from __future__ import annotations

from typing import Any

import aiohttp
from kubernetes_asyncio import client

from chaos.backends.istio import CALLER_LABEL, GROUP, PLURAL, VERSION
from harbinger.errors import HarbingerError
from harbinger.graph import ServiceGraph
from harbinger.kube import read_json

EDGES_QUERY = ('sum by (source_canonical_service, destination_canonical_service) '
               '(rate(istio_requests_total{{reporter="source"}}[{window}]))')


async def edges_from_prometheus(url: str, *, window: str = "1h", query: str | None = None,
                                source_label: str = "source_canonical_service",
                                destination_label: str = "destination_canonical_service") -> set[tuple[str, str]]:
    """Caller -> callee pairs with traffic in ``window``."""
    promql = (query or EDGES_QUERY).format(window=window)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            async with session.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql}) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HarbingerError(f"prometheus at {url} is unreachable: {exc}") from exc
    if body.get("status") != "success":
        raise HarbingerError(f"prometheus refused {promql!r}: {body.get('error')}")
    edges = set()
    for series in body["data"]["result"]:
        labels = series.get("metric") or {}
        caller, callee = labels.get(source_label), labels.get(destination_label)
        if caller and callee and caller != callee and caller != "unknown" and float(series["value"][1]) > 0:
            edges.add((caller, callee))
    return edges


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
