"""The planner controller: one run reads the cluster, plans every service, shares short
capacity bottlenecks first, and (when it leads and may change things) applies the floors.

One run, top to bottom in :meth:`Planner.run_once`:

1. read: opted-in namespaces, their Deployments and HPAs, ready Nodes and their pods, and
   (with ``graph_edges``) the calls the mesh saw;
2. check each Deployment on its own: one with a bad profile annotation, or claiming a
   service another Deployment of its namespace claims, is skipped with a Warning Event on it
   (:func:`scaler.inputs.build_targets`); the graph is resolved to ``namespace/service`` keys
   (:func:`scaler.inputs.resolve_graph`);
3. forecast each service, learn the profile fields it left undeclared
   (:class:`scaler.learn.ProfileLearner`), plan it (:func:`scaler.plan.plan_service`), bound
   the floor by the namespace's cap (:class:`scaler.tenancy.FloorCaps`), hold scale-down
   (:class:`scaler.plan.FloorHold`); a service whose plan fails is skipped alone;
4. allocate the increases within the cluster's free capacity
   (:func:`scaler.allocation.allocate`), callees before callers;
5. apply, in that order: floor, plan annotations, Event -- unless ``forecast_only`` or
   another replica holds the Lease, in which case the plans are only logged and exported.
   A service left without a plan (its model gone) comes back to its declared floor once the
   hold is over; a floor raised for a service that is no longer managed (its namespace
   opted out) is given back at once.

Every service is known by ``namespace/service`` (:func:`harbinger.contract.service_key`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import Clock, format_time
from harbinger.errors import HarbingerError, InvalidInput
from harbinger.graph import MeshEdge
from harbinger.kube import KubeObject, get_or_none, read_json
from harbinger.policy import PolicyIndex, PolicyLister
from harbinger.profile import CapacityProfile
from harbinger.quantity import parse_nonnegative
from models.traffic import HistorySource
from scaler.allocation import Allocation, Capacity, ScaleRequest, allocate
from scaler.apply import (
    Change,
    annotate_plan,
    apply_floor,
    declared_floor,
    holds_annotations,
    planned_change,
    raised_floor,
    record_event,
)
from scaler.capacityplans import CapacityPlans, records_of
from scaler.forecasting import ForecastSource
from scaler.headroom import ShortTermFloors
from scaler.inputs import (
    PlannerInputs,
    Skipped,
    Target,
    Targets,
    build_targets,
    graph_from_mesh,
    hpa_target,
    resolve_graph,
)
from scaler.leader import LeaderElector
from scaler.learn import ProfileLearner, with_learned
from scaler.metrics import (
    ACTUAL_REPLICAS,
    ERRORS,
    FLOOR_CAPPED,
    FLOOR_CHANGES,
    FLOORS_RELEASED,
    PEAK_TPS,
    PLANNED_REPLICAS,
    RUNS,
    SKIPPED,
)
from scaler.plan import FloorHold, ForecastLike, ServicePlan, plan_service
from scaler.tenancy import FloorCaps

log = logging.getLogger(__name__)

#: Listing HarbingerPolicies is tried this many times, a second apart, when the apiserver
#: answers 429 (its storage for a just-installed CRD is still initializing).
#: A write that meets a 409 is decided again on a fresh read this many times in one run.
CONFLICT_ATTEMPTS = 3


class EdgeSource(Protocol):
    """Where the observed dependency graph comes from (:class:`scaler.inputs.PrometheusEdges`)."""

    @property
    def source(self) -> str: ...

    async def edges(self) -> set[MeshEdge]: ...


@dataclass
class RunReport:
    """What one run decided; returned for logs and tests."""

    outcome: str
    plans: dict[str, ServicePlan] = field(default_factory=dict)
    floors: dict[str, int] = field(default_factory=dict)
    allocation: Allocation | None = None
    changes: list[Change] = field(default_factory=list)
    #: Profile values learned this run, by service (fields the operator left undeclared).
    learned: dict[str, dict[str, float]] = field(default_factory=dict)
    inputs: PlannerInputs | None = None
    #: Deployments left out of this run (each with a Warning Event), by ``namespace/name``.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Floors given back (no plan, or no longer managed), by ``namespace/name`` of their object.
    released: list[Change] = field(default_factory=list)


class Planner:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        forecasts: ForecastSource,
        clock: Clock,
        inputs: PlannerInputs | None = None,
        stabilization_seconds: float = 300.0,
        forecast_only: bool = False,
        elector: LeaderElector | None = None,
        identity: str = "harbinger-planner",
        namespaces: frozenset[str] | None = None,
        node_selector: str | None = None,
        history: HistorySource | None = None,
        learner: ProfileLearner | None = None,
        graph_edges: EdgeSource | None = None,
        short_term: ShortTermFloors | None = None,
        floor_caps: FloorCaps | None = None,
        capacity_plans: CapacityPlans | None = None,
    ) -> None:
        self.api = api
        self.forecasts = forecasts
        self.clock = clock
        self.inputs = inputs or PlannerInputs()
        self.stabilization_seconds = stabilization_seconds
        self.forecast_only = forecast_only
        self.elector = elector
        self.identity = identity
        #: Plan only in these namespaces (still only opted-in ones); None: every opted-in namespace.
        self.namespaces = namespaces
        #: Label selector of the Nodes whose free capacity the plans share; None: every Node.
        self.node_selector = node_selector
        #: Learns undeclared profile fields; ``history`` is what it reads traffic from.
        self.learner = learner or ProfileLearner(api, history=history)
        #: The calls the mesh saw, merged into the declared graph every run; None: YAML only.
        self.graph_edges = graph_edges
        #: The short-horizon floor (:mod:`scaler.headroom`): where it gives a plan, it is the
        #: service's plan; else the forecaster's plan (``forecasts``) is.
        self.short_term = short_term
        self.floor_caps = floor_caps or FloorCaps()
        #: Where the leader records each Deployment's plan on the API (CapacityPlan objects).
        self.capacity_plans = capacity_plans
        #: Reasons already recorded as an Event, by Deployment uid: one Event per new problem.
        self._told: dict[str, str] = {}
        #: Deployment uid -> the model version it was last planned with (a change is an Event).
        self._models: dict[str, str] = {}
        self._noticed: set[str] = set()
        self._policy_lister = PolicyLister(api)
        self._last_edges: set[MeshEdge] | None = None
        self.holds: dict[str, FloorHold] = {}
        self.runs = 0
        self._succeeded_at: float | None = None

    # --- one run ---------------------------------------------------------------------
    async def run_once(self) -> RunReport:
        try:
            report = await self._run()
        except InvalidInput as exc:
            RUNS.labels("refused").inc()
            log.error("planner run refused, nothing applied: %s", exc)
            raise
        except Exception:
            RUNS.labels("failed").inc()
            raise
        RUNS.labels(report.outcome).inc()
        self.runs += 1
        self._succeeded_at = time.monotonic()
        return report

    def healthy(self, max_age_seconds: float) -> bool:
        """A run has succeeded within the last ``max_age_seconds`` (wall time): readiness."""
        return self._succeeded_at is not None and time.monotonic() - self._succeeded_at <= max_age_seconds

    async def _run(self) -> RunReport:
        now = self.clock.now()
        found, scope = await self._targets()
        targets = found.by_key
        skipped = {problem.where: problem.message for problem in found.skipped}
        await self._tell(found.skipped, now)
        inputs = await self._inputs(targets, scope)
        forecasts = await self.forecasts.forecasts({k: t.namespace for k, t in targets.items()}, now)

        planned = [k for k in targets if k in forecasts]
        learned = dict(zip(planned, await asyncio.gather(
            *(self.learner.learn(targets[k], forecasts[k], now) for k in planned)), strict=True))
        for key, values in learned.items():
            if values:
                targets[key] = replace(targets[key], profile=with_learned(targets[key].profile, values))

        plans: dict[str, ServicePlan] = {}
        floors: dict[str, int] = {}
        failed: dict[str, Skipped] = {}
        for key in planned:
            made = plan_or_skip(targets[key], forecasts[key], now, self.stabilization_seconds)
            if isinstance(made, Skipped):
                failed[key] = made
            else:
                plans[key] = made
        if self.short_term is not None:
            short = await asyncio.gather(*(self.short_term.plan(
                t.service, t.namespace, t.profile, now, stabilization_seconds=self.stabilization_seconds)
                for t in targets.values()), return_exceptions=True)
            for key, result in zip(targets, short, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    log.warning("%s: no short-horizon floor this run: %s: %s", key, type(result).__name__, result)
                elif result is not None:
                    plans[key] = result.plan
                    learned[key] = {**(learned.get(key) or {}), **result.learned()}
        unplanned = [problem for key, problem in failed.items() if key not in plans]
        await self._tell(unplanned, now)
        skipped.update({problem.where: problem.message for problem in unplanned})
        for key, plan in plans.items():
            target = targets[key]
            floor, capped = self.floor_caps.bound(target.namespace, plan.floor_at(now))
            if capped:
                FLOOR_CAPPED.labels(target.namespace, target.service).inc()
                log.info("%s: planned floor %d cut to namespace %s's cap %d", key, plan.floor_at(now),
                         target.namespace, floor)
            floors[key] = self._hold(target).update(now, floor)
        # Services that hold a raised floor but have no plan this run (no model, no forecast):
        # back to what was declared, once the hold is over.
        for key, target in targets.items():
            if key not in plans and holds_annotations(target):
                floors[key] = self._hold(target).update(now, declared_floor(target))

        allocation = await self._allocate(targets, plans, floors, inputs)
        for key, plan in plans.items():
            target = targets[key]
            labels = (target.namespace, target.service)
            PLANNED_REPLICAS.labels(*labels).set(allocation.granted.get(key, floors[key]))
            ACTUAL_REPLICAS.labels(*labels).set(int((target.deployment.get("status") or {}).get("replicas") or 0))
            peak = plan.next_peak()
            PEAK_TPS.labels(*labels).set(peak.p90_tps if peak else 0.0)
        report = RunReport("forecast_only", plans, floors, allocation, learned=learned, inputs=inputs,
                           skipped=skipped)
        if self.forecast_only:
            self._log_plans(report, "forecast-only")
            return report
        if self.elector is not None and not self.elector.is_leader():
            report.outcome = "follower"
            self._log_plans(report, "not the leader")
            return report

        report.outcome = "applied"
        for key in allocation.order:
            if key in plans:
                change = await self._apply(targets[key], plans[key], allocation.granted[key], now,
                                           learned.get(key) or {})
                if change is not None and change.before != change.after:
                    report.changes.append(change)
        await self._tell_models(targets, plans, now)
        for key, target in targets.items():
            if key not in plans and key in floors:
                released = await self._release(target, floors[key], now, "no plan this run (no model or no "
                                               "forecast)")
                if released is not None:
                    report.released.append(released)
        report.released.extend(await self._release_unmanaged(targets, now))
        if self.capacity_plans is not None:
            changed = {contract.service_key(c.namespace, c.service): (c, *change_reason(c, plans[
                contract.service_key(c.namespace, c.service)])) for c in report.changes}
            await self.capacity_plans.publish(records_of(targets, plans, allocation.granted, changed,
                                                         [*found.skipped, *unplanned], now))
        return report

    async def _tell_models(self, targets: dict[str, Target], plans: dict[str, ServicePlan], now: datetime) -> None:
        """A ``ModelUpdated`` Event when a Deployment's plan comes from a newly trained model:
        the training's effect, on the object it concerns. The first model a planner process
        sees is not news (a restart would otherwise tell every Deployment again)."""
        for key, plan in plans.items():
            target = targets[key]
            uid = str(target.deployment["metadata"].get("uid") or key)
            before = self._models.get(uid)
            self._models[uid] = plan.model_version
            if before is None or before == plan.model_version:
                continue
            try:
                await record_event(self.api, target.deployment, "ModelUpdated",
                                   f"planning {target.service} with model {plan.model_version} (was {before})", now,
                                   self.identity, action="Plan")
            except (ApiException, OSError, TimeoutError) as exc:
                ERRORS.labels("event").inc()
                log.warning("could not record an Event on %s/%s: %s", target.namespace, target.name, exc)

    async def _tell(self, problems: list[Skipped], now: datetime) -> None:
        """Count every skipped Deployment, log it and record a Warning Event on it: once per
        new problem (not every run), so a bad annotation does not flood the namespace."""
        for problem in problems:
            meta = problem.deployment["metadata"]
            SKIPPED.labels(meta["namespace"], problem.reason).inc()
            uid = str(meta.get("uid") or problem.where)
            said = f"{problem.reason}: {problem.message}"
            if self._told.get(uid) == said:
                continue
            log.warning("Deployment %s skipped this run: %s", problem.where, said)
            try:
                await record_event(self.api, problem.deployment, problem.reason,
                                   f"Harbinger's planner leaves this Deployment out: {problem.message}", now,
                                   self.identity, warning=True, action="Plan")
            except (ApiException, OSError, TimeoutError) as exc:
                ERRORS.labels("event").inc()
                log.warning("could not record an Event on %s: %s", problem.where, exc)
                continue
            self._told[uid] = said

    # --- reading the cluster ---------------------------------------------------------
    async def _targets(self) -> tuple[Targets, frozenset[str]]:
        """The services to plan (and the Deployments skipped), and the namespaces they were
        looked for in."""
        core, apps, autoscaling = client.CoreV1Api(self.api), client.AppsV1Api(self.api), client.AutoscalingV2Api(
            self.api)
        namespaces = await _items(core.list_namespace(_preload_content=False))
        opted = {n["metadata"]["name"] for n in namespaces
                 if contract.is_opted_in(n["metadata"]["name"], n["metadata"].get("labels"))
                 and (n.get("status") or {}).get("phase") != "Terminating"
                 and (self.namespaces is None or n["metadata"]["name"] in self.namespaces)}
        deployments = [d for d in await _items(apps.list_deployment_for_all_namespaces(_preload_content=False))
                       if d["metadata"]["namespace"] in opted]
        hpas = [h for h in await _items(
            autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces(_preload_content=False))
            if h["metadata"]["namespace"] in opted]
        # The cluster's policy has no namespace; a namespace's counts only where it opted in.
        policies = PolicyIndex.build(p for p in await self._policy_lister.fetch()
                                     if p["metadata"].get("namespace", "") in opted | {""})
        found = build_targets(deployments, hpas, self.inputs.profiles, policies)
        for notice in [*policies.problems, *found.notices]:
            if notice not in self._noticed:  # once per process: a notice is not news every minute
                self._noticed.add(notice)
                log.warning("%s", notice)
        return found, frozenset(opted)

    async def _inputs(self, targets: Mapping[str, Target], scope: frozenset[str]) -> PlannerInputs:
        """The inputs of this run: the declared ones (the graph in service keys), with the calls
        the mesh saw merged in."""
        declared = resolve_graph(self.inputs.graph, targets, source=self.inputs.graph_source)
        if self.graph_edges is None:
            return replace(self.inputs, graph=declared)
        source = self.graph_edges.source
        if self.inputs.graph.services:
            source = f"{self.inputs.graph_source} merged with the {source}"
        try:
            self._last_edges = await self.graph_edges.edges()
        except HarbingerError as exc:
            if self._last_edges is None:
                raise
            # The calls of the last hour do not change because Prometheus blinked.
            log.warning("%s: %s; planning with the edges it gave last", source, exc)
        graph = graph_from_mesh(self._last_edges, targets, scope, declared=declared, source=source)
        return replace(self.inputs, graph=graph, graph_source=source)

    async def free_capacity(self) -> Capacity:
        """Allocatable CPU, memory and pod slots of Ready, schedulable Nodes, minus what the
        pods bound to them request."""
        core = client.CoreV1Api(self.api)
        listed = await _items(core.list_node(label_selector=self.node_selector or "", _preload_content=False))
        nodes = [n for n in listed if _schedulable(n)]
        pods = await _items(core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed", _preload_content=False))
        cpu = memory = 0.0
        slots = 0
        names = set()
        for node in nodes:
            names.add(node["metadata"]["name"])
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            cpu += float(parse_nonnegative(allocatable.get("cpu", 0), what="node allocatable cpu"))
            memory += float(parse_nonnegative(allocatable.get("memory", 0), what="node allocatable memory"))
            slots += int(parse_nonnegative(allocatable.get("pods", 0), what="node allocatable pods"))
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") not in names:
                continue
            slots -= 1
            for container in pod["spec"].get("containers") or []:
                requests = (container.get("resources") or {}).get("requests") or {}
                cpu -= float(parse_nonnegative(requests.get("cpu", 0), what="pod cpu request"))
                memory -= float(parse_nonnegative(requests.get("memory", 0), what="pod memory request"))
        return Capacity(cpu_cores=max(cpu, 0.0), memory_bytes=max(memory, 0.0), pods=max(slots, 0))

    async def _allocate(self, targets: Mapping[str, Target], plans: Mapping[str, ServicePlan],
                        floors: Mapping[str, int], inputs: PlannerInputs) -> Allocation:
        requests = {}
        for key, plan in plans.items():
            target = targets[key]
            current = max(target.replicas, target.hpa_replicas())
            cpu, memory = target.per_replica_request()
            peak = plan.next_peak()
            serving = max(current, 1) * target.profile.rps_per_replica
            requests[key] = ScaleRequest(key, current, floors[key], cpu, memory,
                                         utilization=(peak.p90_tps if peak else 0.0) / serving)
        increase = any(r.wanted > r.current for r in requests.values())
        # Only an increase can run out of room; skip listing every pod otherwise.
        free = await self.free_capacity() if increase else Capacity(float("inf"), float("inf"), 2**31)
        allocation = allocate(requests, inputs.graph, free)
        # A floor below the current count is a lowering: it needs no room and is not capped.
        granted = {s: (floors[s] if floors[s] <= requests[s].current else allocation.granted[s]) for s in requests}
        if allocation.short:
            log.warning("cluster capacity is short of the plan (free: %s); granted %s, wanted %s",
                        free, granted, dict(floors))
        return Allocation(granted=granted, order=allocation.order, short=allocation.short)

    # --- writing -----------------------------------------------------------------------
    def _hold(self, target: Target) -> FloorHold:
        hold = self.holds.get(target.key)
        if hold is None:
            hold = self.holds[target.key] = FloorHold(self.stabilization_seconds)
            current = raised_floor(target)
            if current is not None:
                # A floor a previous leader raised counts as recommended now, so a failover
                # does not drop it before its stabilization window is over.
                hold.update(self.clock.now(), current)
        return hold

    async def _apply(self, target: Target, plan: ServicePlan, floor: int, now: datetime,
                     learned: Mapping[str, float]) -> Change | None:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await self._apply_to(target, plan, floor, now, learned)
            except ApiException as exc:
                if exc.status == 409 and attempt < CONFLICT_ATTEMPTS:
                    # Another writer (most often the HPA controller updating its status, which
                    # moves the HPA's resourceVersion) came between our read and our write:
                    # read the object again and decide afresh from what is there now, as
                    # client-go's RetryOnConflict does; a person's edit is then respected.
                    ERRORS.labels("conflict").inc()
                    fresh = await self._reread(target)
                    if fresh is None:
                        return None
                    target = fresh
                    continue
                ERRORS.labels("conflict" if exc.status == 409 else "api").inc()
                log.warning("%s/%s: could not apply the floor (%s %s); retrying next run", target.namespace,
                            target.name, exc.status, exc.reason)
                return None
        return None

    async def _reread(self, target: Target) -> Target | None:
        """``target`` with its Deployment and HPA as the apiserver has them now; None if gone."""
        apps = client.AppsV1Api(self.api)
        deployment = await get_or_none(apps.read_namespaced_deployment(
            target.name, target.namespace, _preload_content=False), f"Deployment {target.namespace}/{target.name}")
        if deployment is None:
            return None
        hpa = None
        if target.hpa is not None:
            name = target.hpa["metadata"]["name"]
            hpa = await get_or_none(client.AutoscalingV2Api(self.api).read_namespaced_horizontal_pod_autoscaler(
                name, target.namespace, _preload_content=False), f"HorizontalPodAutoscaler {target.namespace}/{name}")
        return replace(target, deployment=deployment, hpa=hpa)

    async def _apply_to(self, target: Target, plan: ServicePlan, floor: int, now: datetime,
                        learned: Mapping[str, float]) -> Change:
        change = planned_change(target, floor)
        # Back at the declared floor with our annotations still there (or a person changed the
        # floor since we raised it): write to remove them.
        stale = holds_annotations(target) and change.after == declared_floor(target)
        if change.before != change.after or stale:
            await apply_floor(self.api, target, change)
        await annotate_plan(self.api, target, plan, change.after, learned)
        if change.before != change.after:
            FLOOR_CHANGES.labels(target.namespace, target.service, change.direction).inc()
            reason, message = change_reason(change, plan)
            await record_event(self.api, target.deployment, reason, message, now, self.identity)
            log.info("%s/%s: %s", target.namespace, target.name, message)
        return change

    async def _release(self, target: Target, floor: int, now: datetime, why: str) -> Change | None:
        """Bring ``target``'s floor down to ``floor`` (at least its declared one) without a plan,
        and take the planner's annotations off once it is back; None when nothing changed."""
        change = planned_change(target, floor)
        if change.before == change.after and not (change.after == declared_floor(target)
                                                  and holds_annotations(target)):
            return None
        try:
            await apply_floor(self.api, target, change)
        except ApiException as exc:
            ERRORS.labels("conflict" if exc.status == 409 else "api").inc()
            log.warning("%s/%s: could not give the floor back (%s %s); retrying next run", target.namespace,
                        target.name, exc.status, exc.reason)
            return None
        if change.before == change.after:
            return None
        FLOOR_CHANGES.labels(target.namespace, target.service, change.direction).inc()
        message = f"{change.kind} {change.field} {change.before} -> {change.after}: {why}"
        log.info("%s/%s: %s", target.namespace, target.name, message)
        with contextlib.suppress(ApiException, OSError, TimeoutError):
            await record_event(self.api, target.deployment, "FloorReleased", message, now, self.identity)
        return change

    async def release_all(self, now: datetime) -> list[Change]:
        """Give back every floor the planner holds raised (in its namespaces): ``harbinger
        uninstall``."""
        return await self._release_unmanaged({}, now)

    async def _release_unmanaged(self, targets: Mapping[str, Target], now: datetime) -> list[Change]:
        """Give back every floor the planner holds raised on an object it no longer manages
        (its namespace opted out, or its Deployment stopped being a service): found by
        :data:`harbinger.contract.FLOOR_RAISED_LABEL`, restored to the declared floor at once
        when it is still the one the planner set."""
        managed = {(t.namespace, t.name) for t in targets.values()}
        selector = f"{contract.FLOOR_RAISED_LABEL}=true"
        hpas = await _items(client.AutoscalingV2Api(self.api).list_horizontal_pod_autoscaler_for_all_namespaces(
            label_selector=selector, _preload_content=False))
        deployments = await _items(client.AppsV1Api(self.api).list_deployment_for_all_namespaces(
            label_selector=selector, _preload_content=False))
        # A planner given a set of namespaces (--namespace) leaves the others to their own planner.
        if self.namespaces is not None:
            hpas = [h for h in hpas if h["metadata"]["namespace"] in self.namespaces]
            deployments = [d for d in deployments if d["metadata"]["namespace"] in self.namespaces]
        strays: list[Target] = []
        for hpa in hpas:
            key = hpa_target(hpa)
            if key is not None and key not in managed:
                # The Event goes on the Deployment the HPA scales, as for every floor change.
                owner = {"metadata": {"namespace": key[0], "name": key[1]}}
                strays.append(Target(key[1], owner, hpa, CapacityProfile()))
        for deployment in deployments:
            meta = deployment["metadata"]
            if (meta["namespace"], meta["name"]) not in managed:
                strays.append(Target(str(meta["name"]), deployment, None, CapacityProfile()))
        released = []
        for stray in strays:
            change = await self._release(stray, 0, now, "no longer managed by Harbinger (namespace not opted "
                                         "in, or not a service): floor given back")
            if change is not None:
                FLOORS_RELEASED.labels(stray.namespace).inc()
                released.append(change)
        return released

    def _log_plans(self, report: RunReport, why: str) -> None:
        for service, plan in report.plans.items():
            peak = plan.next_peak()
            log.info("%s (%s): floor %d, next peak %s, learned %s", service, why,
                     report.allocation.granted.get(service, report.floors[service]) if report.allocation else 0,
                     json.dumps(plan.annotation(report.floors[service])["next_peak"]) if peak else "none",
                     json.dumps(report.learned.get(service) or {}, sort_keys=True))

    # --- the loop ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, interval_seconds: float) -> None:
        """Run every ``interval_seconds`` until ``stop``; a failed run is logged and retried."""
        while not stop.is_set():
            try:
                await self.run_once()
            except InvalidInput:
                pass  # already logged and counted; the inputs may be fixed before the next run
            except Exception:
                log.exception("planner run failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)


def change_reason(change: Change, plan: ServicePlan) -> tuple[str, str]:
    """The Event reason and message of a floor change."""
    reason = "FloorRaised" if change.direction == "raised" else "FloorLowered"
    peak = plan.next_peak()
    message = (f"{change.kind} {change.field} {change.before} -> {change.after}"
               + (f" for a predicted peak of {peak.p90_tps:.1f} req/s (P90) at "
                  f"{format_time(peak.start)}" if peak else ""))
    return reason, message


def plan_or_skip(target: Target, forecast: ForecastLike, now: datetime,
                 stabilization_seconds: float) -> ServicePlan | Skipped:
    """One service's plan, or why it has none this run: a profile a tenant wrote may hold
    values no plan can be made of (an infinite rate, a floor too large to count), and that
    skips this service alone."""
    try:
        return plan_service(forecast, target.profile, now, stabilization_seconds=stabilization_seconds)
    except (InvalidInput, ValueError, ArithmeticError) as exc:
        return Skipped(target.deployment, "PlanFailed", f"no plan this run: {type(exc).__name__}: {exc}")


def _schedulable(node: KubeObject) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def _items(call: Any) -> list[KubeObject]:
    return list((await read_json(call)).get("items") or [])
