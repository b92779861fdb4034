"""The planner's record on the Kubernetes API: one ``CapacityPlan`` (harbinger.io/v1alpha1) per
managed Deployment, named after it and owned by it, so that ``kubectl get cplan`` shows what
the planner intends (the forecast it planned on, the next peak, the floor and its warm-up
window) and what it did (the last change and why), and a Deployment left out of a run says
why in its ``Planned`` condition.

Written by the replica that applies (the leader), after the floors: its status only changes
when the plan does (or every :data:`REFRESH_SECONDS`, to keep ``observedAt`` current), so a
quiet cluster costs no writes. A cluster without the CRD (an install from before it) is told
once in the log, and planning goes on without the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.clock import format_time
from harbinger.kube import MERGE_PATCH, KubeObject, condition
from scaler.apply import Change
from scaler.inputs import Skipped, Target
from scaler.metrics import ERRORS
from scaler.plan import ServicePlan

log = logging.getLogger(__name__)

#: A status that has not changed is written again after this long (``observedAt``).
REFRESH_SECONDS = 600.0
#: The forecast is recorded at most this many steps ahead (a week at five minutes).
MAX_STEPS = 2016


@dataclass(frozen=True)
class Record:
    """What one run says about one Deployment."""

    deployment: KubeObject
    service: str
    status: dict[str, Any]


def planned_status(target: Target, plan: ServicePlan, granted: int, now: datetime,
                   change: Change | None, change_reason: str, change_message: str) -> dict[str, Any]:
    """The status of a Deployment planned this run (``granted``: its floor after sharing)."""
    steps = plan.steps[:MAX_STEPS]
    peak = plan.next_peak()
    window = plan.warmup_window()
    status: dict[str, Any] = {
        "observedAt": format_time(now),
        "model": plan.model_version,
        "forecast": {"start": format_time(steps[0].start) if steps else format_time(now),
                     "stepSeconds": plan.step_seconds,
                     "p50": [round(s.p50_tps, 4) for s in steps], "p90": [round(s.p90_tps, 4) for s in steps]},
        "plannedReplicas": granted,
        "currentReplicas": int((target.deployment.get("status") or {}).get("replicas") or 0),
        "conditions": [condition("Planned", True, "Planned", f"floor {granted} for service {target.service}",
                                 now)],
    }
    if peak is not None:
        status["nextPeak"] = {"at": format_time(peak.start), "p90RequestsPerSecond": round(peak.p90_tps, 4),
                              "replicas": peak.replicas}
    if window is not None:
        status["warmup"] = {"from": format_time(window[0]), "until": format_time(window[1])}
    if change is not None and change.before != change.after:
        status["lastChange"] = {"at": format_time(now), "kind": change.kind, "field": change.field,
                                "from": change.before, "to": change.after, "reason": change_reason,
                                "message": change_message[:1024]}
    return status


def skipped_status(problem: Skipped, now: datetime) -> dict[str, Any]:
    return {"observedAt": format_time(now),
            "conditions": [condition("Planned", False, problem.reason, problem.message, now)]}


class CapacityPlans:
    """Creates and keeps current the CapacityPlan of each Deployment the planner looked at."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom: Any = client.CustomObjectsApi(api)  # bodies are the apiserver's JSON dicts
        self.enabled = True
        self._written: dict[str, tuple[str, float, str]] = {}  # uid -> (digest, monotonic, condition)
        self._transitions: dict[str, str] = {}  # uid -> lastTransitionTime of the current condition

    async def publish(self, records: list[Record]) -> int:
        """Write the records whose status changed; returns how many were written."""
        written = 0
        for record in records:
            if not self.enabled:
                break
            try:
                written += await self._one(record)
            except _CrdMissing:
                self.enabled = False
                log.warning("the CapacityPlan CRD (capacityplans.harbinger.io) is not installed: planning goes "
                            "on without recording plans on the API; apply manifests/base/crds and restart")
                break
            except ApiException as exc:
                ERRORS.labels("capacityplan").inc()
                meta = record.deployment["metadata"]
                log.warning("CapacityPlan %s/%s: %s %s", meta["namespace"], meta["name"], exc.status, exc.reason)
        return written

    async def _one(self, record: Record) -> int:
        meta = record.deployment["metadata"]
        uid = str(meta.get("uid") or f"{meta['namespace']}/{meta['name']}")
        status = dict(record.status)
        # The condition's lastTransitionTime moves only when its status or reason does.
        (current,) = status["conditions"]
        state = f"{current['status']}/{current['reason']}"
        previous = self._written.get(uid)
        if previous is not None and previous[2] == state and uid in self._transitions:
            current = {**current, "lastTransitionTime": self._transitions[uid]}
            status["conditions"] = [current]
        self._transitions[uid] = current["lastTransitionTime"]
        digest = hashlib.sha256(json.dumps({k: v for k, v in status.items() if k != "observedAt"},
                                           sort_keys=True).encode()).hexdigest()
        if previous is not None and previous[0] == digest and time.monotonic() - previous[1] < REFRESH_SECONDS:
            return 0
        await self._ensure(record)
        await self.custom.patch_namespaced_custom_object_status(
            contract.API_GROUP, contract.API_VERSION, meta["namespace"], contract.CAPACITY_PLANS, meta["name"],
            {"status": status}, field_manager=contract.FIELD_MANAGER, _content_type=MERGE_PATCH)
        self._written[uid] = (digest, time.monotonic(), state)
        return 1

    async def _ensure(self, record: Record) -> None:
        """Create the CapacityPlan, owned by its Deployment, unless it exists."""
        meta = record.deployment["metadata"]
        body = {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": contract.CAPACITY_PLAN_KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": {"app.kubernetes.io/managed-by": "harbinger"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                              "uid": meta.get("uid"), "controller": True,
                                              "blockOwnerDeletion": False}]},
            "spec": {"service": record.service, "deployment": meta["name"]},
        }
        try:
            await self.custom.create_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, meta["namespace"], contract.CAPACITY_PLANS, body,
                field_manager=contract.FIELD_MANAGER)
        except ApiException as exc:
            if exc.status == 404:  # the Deployment's namespace exists: the resource does not
                raise _CrdMissing from exc
            if exc.status != 409:  # 409: it exists already
                raise


class _CrdMissing(Exception):
    pass


def records_of(targets: Mapping[str, Target], plans: Mapping[str, ServicePlan], granted: Mapping[str, int],
               changes: Mapping[str, tuple[Change, str, str]], skipped: list[Skipped], now: datetime) -> list[Record]:
    """One record per planned target and per skipped Deployment."""
    records = [Record(targets[key].deployment, targets[key].service,
                      planned_status(targets[key], plan, granted.get(key, 0), now, *changes.get(key, (None, "", ""))))
               for key, plan in plans.items()]
    for problem in skipped:
        meta = problem.deployment["metadata"]
        service = contract.service_of(meta.get("labels"), meta.get("annotations")) or str(meta["name"])
        records.append(Record(problem.deployment, service, skipped_status(problem, now)))
    return records
