"""What the planner plans for, read from files and from the cluster, and checked as a whole
before anything is applied.

* Services: the Deployments in opted-in namespaces, named by :func:`contract.service_of`
  and known by :func:`contract.service_key` (``namespace/service``): two teams may both run
  a ``frontend``.
* Capacity profiles: the service's HarbingerPolicy over its namespace's
  (:mod:`harbinger.policy`), field by field over the ``--profiles`` YAML (by
  ``namespace/service``, else by service name) and the documented defaults of
  :class:`CapacityProfile`. Where no policy applies, the Deployment's
  ``harbinger.io/capacity-profile`` annotation (deprecated) still wins over the YAML.
* The dependency graph: the ``--graph`` YAML, and/or the calls the mesh saw
  (``--graph-from-prometheus``: ``istio_requests_total`` by workload, turned into services by
  :func:`graph_from_mesh` every run); no graph: every service stands alone.
* Scheduled events: the forecaster's ``--events`` YAML, handed to every forecast.

Every Deployment is a tenant's object and is checked on its own: one with a bad profile
annotation, or two in a namespace claiming one service, are skipped (:class:`Skipped`, an
Event on each and a metric) while every other service is planned. The graph only orders the
plans: an edge that names no managed service is left out with a warning, and a graph the
mesh's calls would turn cyclic falls back to the declared one (:func:`resolve_graph`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harbinger import contract
from harbinger.errors import InvalidInput
from harbinger.graph import WORKLOAD_EDGES_QUERY, MeshEdge, ServiceGraph, edges_from_prometheus
from harbinger.kube import KubeObject
from harbinger.policy import PolicyIndex
from harbinger.profile import CapacityProfile, load_profiles, profile_from_annotation
from harbinger.prometheus import PrometheusClient, PrometheusConnection
from harbinger.quantity import parse_nonnegative
from models.events import Event, load_events

log = logging.getLogger(__name__)


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
    def key(self) -> str:
        """``namespace/service``: the service's identity in plans, forecasts and the graph."""
        return contract.service_key(self.namespace, self.service)

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


@dataclass(frozen=True)
class Skipped:
    """A Deployment left out of this run, and why (the planner records an Event on it)."""

    deployment: KubeObject
    reason: str  # an Event reason: InvalidCapacityProfile, AmbiguousService, ...
    message: str

    @property
    def where(self) -> str:
        meta = self.deployment["metadata"]
        return f"{meta['namespace']}/{meta['name']}"


@dataclass(frozen=True)
class Targets:
    """The services to plan by key (``namespace/service``), the Deployments skipped, and
    notices for the operator (a deprecated annotation still in use, one a policy overrides)."""

    by_key: dict[str, Target]
    skipped: list[Skipped] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def profile_for(service: str, namespace: str, profiles: Mapping[str, CapacityProfile]) -> CapacityProfile:
    """The ``--profiles`` YAML's profile: by ``namespace/service``, else by service name, else defaults."""
    return profiles.get(contract.service_key(namespace, service)) or profiles.get(service) or CapacityProfile()


def build_targets(deployments: Iterable[KubeObject], hpas: Iterable[KubeObject],
                  profiles: Mapping[str, CapacityProfile], policies: PolicyIndex | None = None) -> Targets:
    """Targets by ``namespace/service``; each Deployment on its own (module docstring)."""
    notices: list[str] = []
    by_deployment = {}
    for hpa in hpas:
        scaled = hpa_target(hpa)
        if scaled:
            by_deployment[scaled] = hpa
    targets: dict[str, Target] = {}
    skipped: list[Skipped] = []
    claims: dict[str, list[KubeObject]] = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        service = contract.service_of(meta.get("labels"), meta.get("annotations"))
        if not service:
            continue
        namespace = str(meta["namespace"])
        claims.setdefault(contract.service_key(namespace, service), []).append(deployment)
    for key, claimants in claims.items():
        namespace, service = contract.split_service_key(key)
        if len(claimants) > 1:
            names = ", ".join(sorted(str(d["metadata"]["name"]) for d in claimants))
            for deployment in claimants:
                skipped.append(Skipped(deployment, "AmbiguousService",
                                       f"service {service!r} is claimed by Deployments {names} in namespace "
                                       f"{namespace}; set the {contract.SERVICE} annotation to tell them apart"))
            continue
        deployment = claimants[0]
        meta = deployment["metadata"]
        where = f"Deployment {namespace}/{meta['name']}"
        annotation = (meta.get("annotations") or {}).get(contract.CAPACITY_PROFILE)
        policy = policies.fields_for(namespace, service) if policies is not None else None
        if policy is not None:
            if annotation is not None:
                notices.append(f"{where}: annotation {contract.CAPACITY_PROFILE} is ignored, a HarbingerPolicy "
                               "applies; remove the annotation")
            base = profile_for(service, namespace, profiles)
            try:
                profile = CapacityProfile.model_validate({**base.model_dump(exclude_unset=True), **policy})
            except ValueError as exc:
                skipped.append(Skipped(deployment, "InvalidCapacityProfile",
                                       f"its HarbingerPolicy over the profiles file: {exc}"))
                continue
        elif annotation is None:
            profile = profile_for(service, namespace, profiles)
        else:
            notices.append(f"{where}: annotation {contract.CAPACITY_PROFILE} is deprecated; write a "
                           "HarbingerPolicy instead (it is checked when applied)")
            try:
                profile = profile_from_annotation(annotation, source=f"annotation {contract.CAPACITY_PROFILE}")
            except InvalidInput as exc:
                skipped.append(Skipped(deployment, "InvalidCapacityProfile", str(exc)))
                continue
            except (RecursionError, ValueError, TypeError) as exc:
                # The profile parser is meant to be total; should it still fail, this one
                # Deployment is skipped, not the run of every team.
                skipped.append(Skipped(deployment, "InvalidCapacityProfile",
                                       f"annotation {contract.CAPACITY_PROFILE} cannot be read: "
                                       f"{type(exc).__name__}"))
                continue
        targets[key] = Target(service, deployment, by_deployment.get((namespace, meta["name"])), profile)
    return Targets(targets, skipped, notices)


def resolve_graph(graph: ServiceGraph, targets: Mapping[str, Target], *, source: str) -> ServiceGraph:
    """``graph`` in service keys (``namespace/service``). A name may be a key or a service
    name that exactly one managed namespace runs; edges naming anything else are left out
    with a warning (the graph orders plans; a missing service is no reason to plan none)."""
    by_service: dict[str, list[str]] = {}
    for key, target in targets.items():
        by_service.setdefault(target.service, []).append(key)

    def key_of(name: str) -> str | None:
        if name in targets:
            return name
        keys = by_service.get(name, [])
        return keys[0] if len(keys) == 1 else None

    pairs = []
    for caller, callees in graph.calls.items():
        for callee in callees:
            ends = key_of(caller), key_of(callee)
            if ends[0] is None or ends[1] is None:
                unknown = caller if ends[0] is None else callee
                many = len(by_service.get(unknown, [])) > 1
                log.warning("%s: edge %s -> %s left out: %s", source, caller, callee,
                            f"{unknown!r} is run in several namespaces; name it namespace/service" if many
                            else f"no Deployment in an opted-in namespace provides {unknown!r}")
                continue
            if ends[0] != ends[1]:
                pairs.append((ends[0], ends[1]))
    names = [k for k in (key_of(n) for n in graph.services) if k is not None]
    return ServiceGraph.build([*names, *sorted({end for pair in pairs for end in pair})], pairs, source=source)


def graph_from_mesh(edges: Iterable[MeshEdge], targets: Mapping[str, Target], scope: Collection[str], *,
                    declared: ServiceGraph, source: str) -> ServiceGraph:
    """The graph the mesh saw, in service keys, merged with the ``declared`` one (already
    resolved by :func:`resolve_graph`).

    An edge counts when both its ends are workloads of managed Deployments in ``scope`` (the
    namespaces the planner manages); the rest (the ingress gateway in ``istio-system``, calls
    into teams that did not opt in, a bare pod) is not the planner's to order. The mesh's
    calls are made by tenants' code: when they would make the graph cyclic, the declared
    graph is used alone (logged), rather than refusing every team's plan.
    """
    by_workload = {(t.namespace, t.name): key for key, t in targets.items()}
    pairs = {(caller, callee) for caller, callees in declared.calls.items() for callee in callees}
    declared_pairs = set(pairs)
    for edge in edges:
        if edge.caller_namespace not in scope or edge.callee_namespace not in scope:
            continue
        caller = by_workload.get((edge.caller_namespace, edge.caller))
        callee = by_workload.get((edge.callee_namespace, edge.callee))
        if caller is None or callee is None or caller == callee:
            continue
        pairs.add((caller, callee))
    names = [*declared.services, *sorted({end for pair in pairs for end in pair})]
    try:
        return ServiceGraph.build(names, sorted(pairs), source=source)
    except InvalidInput as exc:
        log.warning("%s; ordering by the declared graph alone this run", exc)
        return ServiceGraph.build(declared.services, sorted(declared_pairs), source=source)
