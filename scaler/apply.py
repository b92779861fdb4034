"""Putting a floor on the cluster: one Deployment, its HPA, its annotations, an Event.

* With an HPA: ``spec.minReplicas`` becomes the floor (never below the minimum the team
  declared, never above ``maxReplicas``). The HPA keeps computing its own desired count
  and takes the larger, so the floor never holds a Deployment below what the HPA wants
  and the HPA stays in charge of surprises. The declared minimum is kept in the
  annotation ``harbinger.io/declared-min-replicas`` on the HPA the first time it is
  raised, and restored exactly (annotation removed) when the floor comes back down.
* Without an HPA: ``spec.replicas`` is raised the same way, and the declared count kept
  in ``harbinger.io/declared-replicas`` on the Deployment.
* Only what the planner set is ever given back: beside the declared value it keeps the
  value it wrote (``harbinger.io/applied-floor``). When the object holds another value, a
  person edited it while the floor was raised: their value is the declared floor from then
  on, and the planner's annotations go. The label ``harbinger.io/floor-raised`` marks every
  object holding a raised floor, so one whose namespace opted out is found and given back.
* The annotations are the tenant's to edit too: a declared value that is not a whole
  number is ignored (the object's own value counts), never an error for the run.
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

from harbinger import contract, events
from harbinger.clock import format_time
from harbinger.kube import KubeObject
from scaler.inputs import Target
from scaler.plan import ServicePlan

log = logging.getLogger(__name__)

# Keys only the planner reads back (restore state); see the report on moving them to contract.py.
DECLARED_MIN_REPLICAS = contract.DECLARED_MIN_REPLICAS
DECLARED_REPLICAS = contract.DECLARED_REPLICAS
APPLIED_FLOOR = contract.APPLIED_FLOOR
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


def _count(value: object) -> int | None:
    """A replica count written in an annotation (by the planner, or edited by anyone); None
    when it is not a non-negative whole number."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    return int(text)


def _held(target: Target) -> tuple[KubeObject, str, int]:
    """The object that carries the floor, its declared-value annotation, and its value now."""
    if target.hpa is not None:
        return target.hpa, DECLARED_MIN_REPLICAS, int((target.hpa.get("spec") or {}).get("minReplicas", 1))
    return target.deployment, DECLARED_REPLICAS, target.replicas


def edited_since_raised(target: Target) -> bool:
    """True when the floor Harbinger raised was changed by someone else since (module docstring)."""
    obj, _, value = _held(target)
    applied = _count((obj["metadata"].get("annotations") or {}).get(APPLIED_FLOOR, ""))
    return applied is not None and applied != value


def declared_floor(target: Target) -> int:
    """The floor the team declared: what was there before Harbinger raised it, or what a person
    set since."""
    obj, annotation, value = _held(target)
    if edited_since_raised(target):
        return value
    declared = _count((obj["metadata"].get("annotations") or {}).get(annotation, value))
    return value if declared is None else declared


def raised_floor(target: Target) -> int | None:
    """The floor Harbinger has on the cluster now, or None when it has raised nothing (or a
    person has changed it since)."""
    obj, annotation, value = _held(target)
    if annotation not in (obj["metadata"].get("annotations") or {}) or edited_since_raised(target):
        return None
    return value


def holds_annotations(target: Target) -> bool:
    """True while the floor's object carries any of the planner's restore state."""
    obj, annotation, _ = _held(target)
    annotations = obj["metadata"].get("annotations") or {}
    labels = obj["metadata"].get("labels") or {}
    return annotation in annotations or APPLIED_FLOOR in annotations or contract.FLOOR_RAISED_LABEL in labels


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
    obj, annotation, _ = _held(target)
    meta = obj["metadata"]
    body: dict[str, Any] = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "annotations": {annotation: None if restoring else str(declared),
                            APPLIED_FLOOR: None if restoring else str(change.after)},
            "labels": {contract.FLOOR_RAISED_LABEL: None if restoring else "true"},
        },
        "spec": {"minReplicas" if target.hpa is not None else "replicas": change.after},
    }
    if target.hpa is not None:
        await client.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
            meta["name"], meta["namespace"], body, field_manager=contract.FIELD_MANAGER)
    else:
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


async def record_event(api: client.ApiClient, deployment: KubeObject, reason: str, message: str, now: datetime,
                       identity: str, *, warning: bool = False, action: str = "Scale") -> None:
    """A Kubernetes Event on the Deployment, so ``kubectl describe`` shows what the planner did
    (or, as a Warning, why it left the Deployment out)."""
    await events.record_event(api, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": deployment["metadata"]},
                              reason, message, now, component=COMPONENT, instance=identity, action=action,
                              warning=warning)
