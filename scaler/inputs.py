"""What the planner plans for, read from files and from the cluster, and checked as a whole
before anything is applied.

* Services: the Deployments in opted-in namespaces, named by :func:`contract.service_of`.
* Capacity profiles: the Deployment's ``harbinger.io/capacity-profile`` annotation wins,
  then the ``--profiles`` YAML, then the documented defaults of :class:`CapacityProfile`.
* The dependency graph: the ``--graph`` YAML, and/or the calls the mesh saw
  (``--graph-from-prometheus``: ``istio_requests_total`` by workload, turned into services by
  :func:`graph_from_mesh` every run); no graph: every service stands alone.
* Scheduled events: the forecaster's ``--events`` YAML, handed to every forecast.

:func:`check_inputs` refuses the whole set when any piece is bad (a profile with min above
max, a graph with a cycle or naming a service that does not exist, two Deployments
claiming one service), so a run either applies everything it planned or nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harbinger import contract
from harbinger.errors import InvalidInput
from harbinger.graph import WORKLOAD_EDGES_QUERY, MeshEdge, ServiceGraph, edges_from_prometheus
from harbinger.kube import KubeObject
from harbinger.profile import CapacityProfile, load_profiles, profile_from_annotation
from harbinger.prometheus import PrometheusClient, PrometheusConnection
from harbinger.quantity import parse_nonnegative
from models.events import Event, load_events


@dataclass(frozen=True)
class PlannerInputs:
    profiles: dict[str, CapacityProfile] = field(default_factory=dict)
    graph: ServiceGraph = field(default_factory=lambda: ServiceGraph(()))
    events: tuple[Event, ...] = ()
    #: Where the graph came from, named when it is refused.
    graph_source: str = "graph"


@dataclass(frozen=True)
class PrometheusEdges:
    """The calls the mesh saw in the last ``window_seconds``, by workload and namespace
    (``istio_requests_total``; any query giving the same four labels will do)."""

    url: str
    query: str = WORKLOAD_EDGES_QUERY
    window_seconds: float = 3600.0
    connection: PrometheusConnection | None = None

    @property
    def source(self) -> str:
        return f"graph from istio_requests_total at {self.url}"

    async def edges(self) -> set[MeshEdge]:
        async with PrometheusClient(self.url, self.connection) as prometheus:
            return await edges_from_prometheus(prometheus, query=self.query,
                                               window=f"{max(1, round(self.window_seconds))}s")


def load_inputs(profiles: Path | None = None, graph: Path | None = None, events: Path | None = None) -> PlannerInputs:
    """Read the YAML files the planner was started with (each refused with its path and reason)."""
    return PlannerInputs(
        profiles=load_profiles(profiles) if profiles else {},
        graph=ServiceGraph.load(graph) if graph else ServiceGraph(()),
        events=tuple(load_events(events)) if events else (),
        graph_source=str(graph) if graph else "graph",
    )


@dataclass(frozen=True)
class Target:
    """One Deployment the planner manages, with its HPA when one scales it."""

    service: str
    deployment: KubeObject
    hpa: KubeObject | None
    profile: CapacityProfile

    @property
    def namespace(self) -> str:
        return str(self.deployment["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.deployment["metadata"]["name"])

    @property
    def replicas(self) -> int:
        return int((self.deployment.get("spec") or {}).get("replicas", 1))

    def hpa_replicas(self) -> int:
        """What the HPA itself wants (status.desiredReplicas, else currentReplicas); 0 without one."""
        status = (self.hpa or {}).get("status") or {}
        return int(status.get("desiredReplicas") or status.get("currentReplicas") or 0)

    def per_replica_request(self) -> tuple[float, float]:
        """CPU cores and memory bytes one pod requests (its containers' requests; the profile's
        sizing at ``rps_per_replica`` where the template requests nothing)."""
        template = ((self.deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        cpu = memory = 0.0
        where = f"Deployment {self.namespace}/{self.name}"
        for container in template.get("containers") or []:
            requests = (container.get("resources") or {}).get("requests") or {}
            if "cpu" in requests:
                cpu += float(parse_nonnegative(requests["cpu"], what=f"{where} cpu request"))
            if "memory" in requests:
                memory += float(parse_nonnegative(requests["memory"], what=f"{where} memory request"))
        rps = self.profile.rps_per_replica
        return (cpu or self.profile.cpu_cores_for(rps), memory or self.profile.memory_bytes_for(rps))


def hpa_target(hpa: KubeObject) -> tuple[str, str] | None:
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if ref.get("kind") != "Deployment" or not ref.get("name"):
        return None
    return str(hpa["metadata"]["namespace"]), str(ref["name"])


def build_targets(deployments: Iterable[KubeObject], hpas: Iterable[KubeObject],
                  profiles: Mapping[str, CapacityProfile]) -> dict[str, Target]:
    """Targets by service; a bad profile annotation or a service claimed twice is refused."""
    by_deployment = {}
    for hpa in hpas:
        key = hpa_target(hpa)
        if key:
            by_deployment[key] = hpa
    targets: dict[str, Target] = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        service = contract.service_of(meta.get("labels"), meta.get("annotations"))
        if not service:
            continue
        where = f"Deployment {meta['namespace']}/{meta['name']}"
        annotation = (meta.get("annotations") or {}).get(contract.CAPACITY_PROFILE)
        if annotation is not None:
            profile = profile_from_annotation(annotation, source=f"{where} annotation {contract.CAPACITY_PROFILE}")
        else:
            profile = profiles.get(service, CapacityProfile())
        if service in targets:
            other = targets[service]
            raise InvalidInput(f"service {service!r} is claimed by both Deployment {other.namespace}/{other.name} "
                               f"and {where}; set {contract.SERVICE} to tell them apart", source="services")
        targets[service] = Target(service, deployment, by_deployment.get((meta["namespace"], meta["name"])), profile)
    return targets


def check_inputs(targets: Mapping[str, Target], inputs: PlannerInputs) -> None:
    """Every service the graph names must exist on the cluster (profiles may come early)."""
    known = set(targets)
    for service in inputs.graph.services:
        if service not in known:
            raise InvalidInput(f"the graph names service {service!r}, which no Deployment in an opted-in "
                               "namespace provides", source=inputs.graph_source)


def graph_from_mesh(edges: Iterable[MeshEdge], targets: Mapping[str, Target], scope: Collection[str], *,
                    declared: ServiceGraph, source: str) -> ServiceGraph:
    """The graph the mesh saw, in service names, merged with the ``declared`` one.

    An edge counts when both its ends are in ``scope`` (the namespaces the planner manages);
    the rest (the ingress gateway in ``istio-system``, calls into teams that did not opt
    in) is not the planner's to order. A workload in scope is named by the service of its
    Deployment; one that no managed Deployment runs keeps the name ``namespace/workload``, so
    :func:`check_inputs` refuses it exactly as it refuses an unknown service in a YAML graph.
    A cycle is refused by :meth:`ServiceGraph.build`.
    """
    by_workload = {(t.namespace, t.name): service for service, t in targets.items()}
    pairs = {(caller, callee) for caller, callees in declared.calls.items() for callee in callees}
    for edge in edges:
        if edge.caller_namespace not in scope or edge.callee_namespace not in scope:
            continue
        caller = by_workload.get((edge.caller_namespace, edge.caller), f"{edge.caller_namespace}/{edge.caller}")
        callee = by_workload.get((edge.callee_namespace, edge.callee), f"{edge.callee_namespace}/{edge.callee}")
        pairs.add((caller, callee))
    names = [*declared.services, *sorted({end for pair in pairs for end in pair})]
    return ServiceGraph.build(names, sorted(pairs), source=source)

