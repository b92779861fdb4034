"""Putting a floor on the cluster: one Deployment, its HPA, its annotations, an Event.

* With an HPA: ``spec.minReplicas`` becomes the floor (never below the minimum the team
  declared, never above ``maxReplicas``). The HPA keeps computing its own desired count
  and takes the larger, so the floor never holds a Deployment below what the HPA wants
  and the HPA stays in charge of surprises. The declared minimum is kept in the
  annotation ``harbinger.io/declared-min-replicas`` on the HPA the first time it is
  raised, and restored exactly (annotation removed) when the floor comes back down.
* Without an HPA: ``spec.replicas`` is raised the same way, and the declared count kept
  in ``harbinger.io/declared-replicas`` on the Deployment.
* The Deployment is annotated with the plan for the webhook: ``harbinger.io/plan``
  (JSON, with the profile values the planner learned under ``learned``),
  ``harbinger.io/next-peak`` and the warm-up window ``harbinger.io/warmup-from`` /
  ``harbinger.io/warmup-until`` (RFC 3339).

Writes carry the ``resourceVersion`` that was read, so a concurrent edit makes this run
skip the object (409) instead of overwriting it; the next run reads it afresh.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from harbinger import contract
from harbinger.clock import format_time
from scaler.inputs import Target
from scaler.plan import ServicePlan

log = logging.getLogger(__name__)

# Keys only the planner reads back (restore state); see the report on moving them to contract.py.
DECLARED_MIN_REPLICAS = contract.DECLARED_MIN_REPLICAS
DECLARED_REPLICAS = contract.DECLARED_REPLICAS
COMPONENT = "harbinger-planner"


@dataclass(frozen=True)
class Change:
    """What one apply did (or would do) to one Deployment."""

    service: str
    namespace: str
    deployment: str
    kind: str  # "HorizontalPodAutoscaler" or "Deployment"
    field: str  # "spec.minReplicas" or "spec.replicas"
    before: int
    after: int

    @property
    def direction(self) -> str:
        return "raised" if self.after > self.before else "lowered" if self.after < self.before else "kept"


def declared_floor(target: Target) -> int:
    """The floor the team declared: what was there before Harbinger raised it."""
    if target.hpa is not None:
        annotations = target.hpa["metadata"].get("annotations") or {}
        spec_min = int((target.hpa.get("spec") or {}).get("minReplicas", 1))
        return int(annotations.get(DECLARED_MIN_REPLICAS, spec_min))
    annotations = target.deployment["metadata"].get("annotations") or {}
    return int(annotations.get(DECLARED_REPLICAS, target.replicas))


def raised_floor(target: Target) -> int | None:
    """The floor Harbinger has on the cluster now, or None when it has raised nothing."""
    if target.hpa is not None:
        if DECLARED_MIN_REPLICAS in (target.hpa["metadata"].get("annotations") or {}):
            return int((target.hpa.get("spec") or {}).get("minReplicas", 1))
        return None
    if DECLARED_REPLICAS in (target.deployment["metadata"].get("annotations") or {}):
        return target.replicas
    return None


def planned_change(target: Target, floor: int) -> Change:
    """The change that puts ``floor`` on ``target`` (pure; ``before == after`` when none is needed)."""
    declared = declared_floor(target)
    if target.hpa is not None:
        spec = target.hpa.get("spec") or {}
        maximum = int(spec.get("maxReplicas", floor))
        after = min(maximum, max(floor, declared))
        return Change(target.service, target.namespace, target.name, "HorizontalPodAutoscaler",
                      "spec.minReplicas", int(spec.get("minReplicas", 1)), after)
    after = max(floor, declared)
    return Change(target.service, target.namespace, target.name, "Deployment", "spec.replicas",
                  target.replicas, after)


async def apply_floor(api: client.ApiClient, target: Target, change: Change) -> None:
    """Write ``change`` to the HPA or the Deployment (see the module docstring)."""
    declared = declared_floor(target)
    restoring = change.after <= declared
    if target.hpa is not None:
        meta = target.hpa["metadata"]
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": meta["resourceVersion"],
                         "annotations": {DECLARED_MIN_REPLICAS: None if restoring else str(declared)}},
            "spec": {"minReplicas": change.after},
        }
        await client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
            meta["name"], meta["namespace"], body, field_manager=contract.FIELD_MANAGER)
    else:
        meta = target.deployment["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"],
                         "annotations": {DECLARED_REPLICAS: None if restoring else str(declared)}},
            "spec": {"replicas": change.after},
        }
        await client.AppsV1Api(api).patch_namespaced_deployment(
            meta["name"], meta["namespace"], body, field_manager=contract.FIELD_MANAGER)


def plan_annotations(plan: ServicePlan, floor: int,
                     learned: Mapping[str, float] | None = None) -> dict[str, str | None]:
    """``learned``: the profile values learned for this plan, shown in the plan's JSON."""
    peak = plan.next_peak()
    window = plan.warmup_window()
    return {
        contract.PLAN: json.dumps({**plan.annotation(floor), "learned": dict(learned or {})}, sort_keys=True),
        contract.NEXT_PEAK: format_time(peak.start) if peak else None,
        contract.WARMUP_FROM: format_time(window[0]) if window else None,
        contract.WARMUP_UNTIL: format_time(window[1]) if window else None,
    }


async def annotate_plan(api: client.ApiClient, target: Target, plan: ServicePlan, floor: int,
                        learned: Mapping[str, float] | None = None) -> None:
    body = {"metadata": {"annotations": plan_annotations(plan, floor, learned)}}
    await client.AppsV1Api(api).patch_namespaced_deployment(
        target.name, target.namespace, body, field_manager=contract.FIELD_MANAGER)


async def record_event(api: client.ApiClient, target: Target, change: Change, reason: str, message: str,
                       now: datetime, identity: str) -> None:
    """A Kubernetes Event on the Deployment, so ``kubectl describe`` shows what the planner did."""
    meta = target.deployment["metadata"]
    stamp = format_time(now)
    body = {
        "metadata": {"generateName": f"{meta['name']}.harbinger-", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": identity,
        "action": "Scale",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    core: Any = client.CoreV1Api(api)  # the body is the Event's JSON, not a model object
    await core.create_namespaced_event(meta["namespace"], body)
