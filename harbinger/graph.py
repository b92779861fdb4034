"""The service dependency graph, shared by the planner (bottlenecks first, upstream
before callers) and the chaos controller (blast radius, risk ranking).

An edge ``caller -> callee`` means the caller sends requests to the callee; the
callee is *upstream* of the caller in the request path and must be scaled no later.
YAML form::

    services: [frontend, checkout, payments]
    edges:
      - {from: frontend, to: checkout}
      - {from: checkout, to: payments}

Or observed: :func:`edges_from_prometheus` reads who called whom from the mesh's own
``istio_requests_total`` (the planner's ``--graph-from-prometheus``, ``harbinger chaos generate``'s
``--graph-from-prometheus``); each caller turns the edges into service names its own way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from harbinger.documents import read_document
from harbinger.errors import InvalidInput
from harbinger.prometheus import PrometheusClient


@dataclass(frozen=True)
class ServiceGraph:
    services: tuple[str, ...]
    #: caller -> the services it calls
    calls: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, services: Iterable[str], edges: Iterable[tuple[str, str]], *, source: str = "graph") -> ServiceGraph:
        names = tuple(dict.fromkeys(services))
        known = set(names)
        calls: dict[str, set[str]] = {name: set() for name in names}
        for caller, callee in edges:
            for end in (caller, callee):
                if end not in known:
                    raise InvalidInput(f"edge {caller} -> {callee} names unknown service {end!r}", source=source)
            if caller == callee:
                raise InvalidInput(f"service {caller!r} calls itself", source=source)
            calls[caller].add(callee)
        graph = cls(names, {k: frozenset(v) for k, v in calls.items()})
        try:
            graph.upstream_first()
        except CycleError as exc:
            cycle = " -> ".join(str(n) for n in exc.args[1])
            raise InvalidInput(f"the dependency graph has a cycle: {cycle}", source=source) from exc
        return graph

    @classmethod
    def load(cls, path: Path) -> ServiceGraph:
        source = str(path)
        data = read_document(path, "graph")
        if not isinstance(data, dict) or not isinstance(data.get("services"), list):
            raise InvalidInput("expected a mapping with a 'services' list and an 'edges' list", source=source)
        edges = []
        for i, edge in enumerate(data.get("edges") or []):
            if not isinstance(edge, dict) or not {"from", "to"} <= set(edge):
                raise InvalidInput(f"edges[{i}] must be a mapping with 'from' and 'to'", source=source)
            edges.append((str(edge["from"]), str(edge["to"])))
        return cls.build((str(s) for s in data["services"]), edges, source=source)

    def callees(self, service: str) -> frozenset[str]:
        return self.calls.get(service, frozenset())

    def callers(self, service: str) -> frozenset[str]:
        return frozenset(c for c, callees in self.calls.items() if service in callees)

    def dependents(self, service: str) -> frozenset[str]:
        """Every service whose requests reach ``service``, directly or through others."""
        seen: set[str] = set()
        stack = list(self.callers(service))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.callers(current))
        return frozenset(seen)

    def upstream_first(self) -> list[str]:
        """Services ordered so that each comes after everything it calls (callees first)."""
        return list(TopologicalSorter({s: self.callees(s) for s in self.services}).static_order())


#: Who called whom, by workload (a Deployment's name) and its namespace, over ``{window}``:
#: the callers' sidecars' own reports (``reporter="source"``), so every call is counted once.
WORKLOAD_EDGES_QUERY = (
    "sum by (source_workload, source_workload_namespace, destination_workload, destination_workload_namespace) "
    '(rate(istio_requests_total{reporter="source"}[{window}]))'
)


@dataclass(frozen=True)
class MeshEdge:
    """One caller -> callee pair seen in the mesh's metrics; namespaces are "" when the
    query does not give them."""

    caller: str
    callee: str
    caller_namespace: str = ""
    callee_namespace: str = ""


async def edges_from_prometheus(
    prometheus: PrometheusClient,
    *,
    query: str = WORKLOAD_EDGES_QUERY,
    window: str = "1h",
    source_label: str = "source_workload",
    destination_label: str = "destination_workload",
    source_namespace_label: str | None = "source_workload_namespace",
    destination_namespace_label: str | None = "destination_workload_namespace",
) -> set[MeshEdge]:
    """Caller -> callee pairs with traffic in ``window`` (``{window}`` in ``query`` is filled in).

    Self-calls and Istio's ``unknown`` caller (traffic from outside the mesh) are left out:
    neither orders one service before another. Raises
    :class:`~harbinger.errors.PrometheusUnavailable` or
    :class:`~harbinger.errors.PrometheusQueryError`.
    """
    edges = set()
    for sample in await prometheus.instant(query.replace("{window}", window)):
        labels, rate = sample.labels, sample.value
        caller, callee = labels.get(source_label), labels.get(destination_label)
        if caller and callee and caller != callee and caller != "unknown" and callee != "unknown" and rate > 0:
            edges.add(MeshEdge(
                str(caller), str(callee),
                str(labels.get(source_namespace_label, "")) if source_namespace_label else "",
                str(labels.get(destination_namespace_label, "")) if destination_namespace_label else "",
            ))
    return edges
