"""Rehearsals on the Kubernetes API: one ``ChaosExperiment`` (harbinger.io/v1alpha1) per
rehearsal, in the experiment's namespace, so that ``kubectl get chaosexperiments -A`` shows
every rehearsal and its verdict, teams can declare their own, and what happened outlives the
controller.

- A team's object (no ``spec.runId``) waits ``Pending`` for its schedule (:mod:`chaos.declared`),
  or is marked ``Invalid`` (with an ``Accepted`` condition that says why) or ``Expired``.
- A run of the controller's plan is recorded in an object the controller creates.
- Either way the run writes ``Running``, then its verdict, each ramp step, the breach, the
  rollback, and its report: report.json and report.html in a ConfigMap the object owns (so
  the report goes with the object and survives the controller and its volume).
- A controller that starts marks the runs a dead one left ``Running`` as ``Interrupted`` (it
  has swept their faults by then).
- Events on the object say the same to ``kubectl describe``.

A cluster without the CRD is told once in the log; plan rehearsals go on without the record.
One object the controller cannot read is skipped (and marked ``Invalid`` when it can be): it
never stops the others.
"""

from __future__ import annotations

import base64
import gzip
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.optin import require_namespace
from chaos.declared import (
    KIND,
    PLURAL,
    Decision,
    ScheduleType,
    decide,
    declared_experiment,
    is_declared,
    record_spec,
)
from chaos.experiment import Experiment, FaultKind
from chaos.forecasts import forecast_from_capacity_plan
from chaos.record import RunRecord, RunStatus
from chaos.report import REPORT_HTML, REPORT_JSON
from harbinger import contract
from harbinger.clock import format_time
from harbinger.errors import InvalidInput
from harbinger.events import record_event
from harbinger.kube import MERGE_PATCH, condition, read_json
from harbinger.policy import PolicyIndex, PolicyLister
from models.forecast import Forecast

log = logging.getLogger(__name__)

COMPONENT = "harbinger-chaos"
PHASES = {RunStatus.HELD: "Held", RunStatus.BREACHED: "Breached", RunStatus.ABORTED: "Aborted",
          RunStatus.NOT_STEADY: "NotSteady", RunStatus.FAILED: "Failed"}
#: A ConfigMap holds at most 1 MiB; a report's HTML (with its inlined plot) above this is
#: kept gzipped in binaryData instead.
MAX_PLAIN_HTML = 700_000
CAPACITY_PLANS = "capacityplans"


@dataclass(frozen=True)
class ObjectRef:
    """The ChaosExperiment a run is recorded in."""

    namespace: str
    name: str
    uid: str

    def involved(self) -> dict[str, Any]:
        return {"apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}}


@dataclass(frozen=True)
class DueExperiment:
    experiment: Experiment
    ref: ObjectRef


def object_name(run_id: str) -> str:
    """A run id as an object name (lowercase RFC 1123, at most 253 characters)."""
    return run_id.lower()[:253].rstrip("-.")


def report_name(ref: ObjectRef) -> str:
    return f"{ref.name[:246].rstrip('-.')}-report"


def final_status(record: RunRecord, report: dict[str, str] | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": PHASES[record.status],
        "runId": record.run_id,
        "startedAt": format_time(record.started),
        "stepsRun": len(record.steps),
        "steps": [{"index": s.index, "description": s.description[:512], "startedAt": format_time(s.started),
                   **({"endedAt": format_time(s.ended)} if s.ended else {}), "outcome": s.outcome[:63]}
                  for s in record.steps[:20]],
        "notes": [note[:1024] for note in record.notes[:20]],
    }
    if record.finished:
        status["finishedAt"] = format_time(record.finished)
    if record.breach:
        b = record.breach
        status["breach"] = {"service": b.service, "metric": b.metric, "value": b.value, "limit": b.limit,
                            "step": b.step_index, "detectedAt": format_time(b.detected_at)}
    if record.rollback:
        r = record.rollback
        status["rollback"] = {"reason": r.reason, "startedAt": format_time(r.started),
                              "finishedAt": format_time(r.finished), "seconds": r.seconds,
                              "objectsRestored": r.objects_restored, **({"error": r.error[:1024]} if r.error else {})}
    if report:
        status["report"] = report
    return status


def _verdict_event(record: RunRecord) -> tuple[str, str, bool]:
    """(reason, message, warning) of the Event a finished run leaves on its object."""
    steps = f"{len(record.steps)} of {len(record.experiment.steps)} step(s)"
    rollback = record.rollback
    undone = f"; faults removed in {rollback.seconds:.3f} s" if rollback else ""
    if record.status is RunStatus.BREACHED and record.breach:
        b = record.breach
        return ("Breached", f"{b.service} left its steady state at step {b.step_index + 1} ({b.metric} "
                f"{b.value:.4g} beyond {b.limit:.4g}){undone}", True)
    if record.status is RunStatus.HELD:
        return "Held", f"every watched service held through {steps}{undone}", False
    if record.status is RunStatus.NOT_STEADY:
        return "NotSteady", "nothing injected: " + "; ".join(record.notes[:3]), True
    return (PHASES[record.status], f"{record.status.value} after {steps}{undone}: "
            + "; ".join(record.notes[-2:]), True)


def report_config_map(ref: ObjectRef, run_id: str, report_dir: Path) -> dict[str, Any]:
    """The report's ConfigMap, owned by the experiment (deleted with it)."""
    html = (report_dir / REPORT_HTML).read_text()
    data = {REPORT_JSON: (report_dir / REPORT_JSON).read_text()}
    binary: dict[str, str] = {}
    if len(html.encode()) <= MAX_PLAIN_HTML:
        data[REPORT_HTML] = html
    else:
        binary[f"{REPORT_HTML}.gz"] = base64.b64encode(gzip.compress(html.encode())).decode()
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": report_name(ref), "namespace": ref.namespace,
            "labels": {"app.kubernetes.io/managed-by": "harbinger", contract.CHAOS_REPORT_LABEL: "true"},
            "annotations": {contract.CHAOS_EXPERIMENT: run_id[:253]},
            "ownerReferences": [{"apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": KIND,
                                 "name": ref.name, "uid": ref.uid, "controller": True}],
        },
        "data": data, **({"binaryData": binary} if binary else {}),
    }


class ExperimentRecords:
    def __init__(self, api: client.ApiClient, *, instance: str = "chaos-controller", history_limit: int = 5) -> None:
        self.api = api
        self.history_limit = history_limit
        self.custom: Any = client.CustomObjectsApi(api)  # bodies are the apiserver's JSON dicts
        self.core: Any = client.CoreV1Api(api)
        self._policy_lister = PolicyLister(api)
        self.instance = instance
        self.enabled = True
        #: (namespace, name) -> the decision last written, so a waiting object costs no writes.
        self._told: dict[tuple[str, str], tuple[str, str]] = {}
        #: Declared objects this controller has run: run once even if a status write was lost.
        self._ran: set[tuple[str, str, str]] = set()

    # --- declared experiments ------------------------------------------------------------------
    async def due(self, now: datetime, needed_seconds: Callable[[Experiment], float],
                  default_dwell_seconds: float = 30.0) -> list[DueExperiment]:
        """The declared experiments whose schedule says run now, oldest first; every other
        declared one gets its status (Pending, Invalid, Expired) written when it changes."""
        if not self.enabled:
            return []
        try:
            listed = await read_json(self.custom.list_cluster_custom_object(
                contract.API_GROUP, contract.API_VERSION, PLURAL, _preload_content=False))
        except ApiException as exc:
            self._unavailable(exc)
            return []
        waiting = [item for item in listed.get("items") or []
                   if is_declared(item) and (item.get("status") or {}).get("phase") in (None, "Pending")]
        waiting.sort(key=lambda item: (item["metadata"].get("creationTimestamp") or "", item["metadata"]["name"]))
        due: list[DueExperiment] = []
        forecasts: dict[str, dict[str, Forecast]] = {}  # namespace -> service -> forecast, read once a cycle
        policies = await self.policies() if waiting else PolicyIndex({}, [])
        for item in waiting:
            meta = item["metadata"]
            ref = ObjectRef(meta["namespace"], meta["name"], meta.get("uid", ""))
            if (ref.namespace, ref.name, ref.uid) in self._ran:
                continue
            try:
                experiment, schedule = declared_experiment(item)
                await require_namespace(self.core, ref.namespace, allow_pod_opt_in=True)
                refused = refusal(experiment, policies, default_dwell_seconds)
                if refused:
                    raise InvalidInput(refused, source=f"{KIND} {ref.namespace}/{ref.name}")
            except InvalidInput as exc:
                await self._invalid(ref, str(exc), now)
                continue
            except ApiException as exc:  # the namespace unreadable for a moment: next cycle
                log.warning("%s %s/%s: %s %s", KIND, ref.namespace, ref.name, exc.status, exc.reason)
                continue
            forecast = None
            if schedule.type is ScheduleType.BEFORE_PEAK:
                if ref.namespace not in forecasts:
                    forecasts[ref.namespace] = await self.forecasts(ref.namespace)
                forecast = forecasts[ref.namespace].get(experiment.target)
            decision = decide(experiment, schedule, now=now, needed_seconds=needed_seconds(experiment),
                              forecast=forecast)
            if decision.state == "Due":
                due.append(DueExperiment(experiment, ref))
            elif decision.state == "Expired":
                await self._expired(ref, decision, now)
            else:
                await self._pending(ref, decision, now)
        return due

    async def policies(self) -> PolicyIndex:
        """Every HarbingerPolicy and ClusterHarbingerPolicy, for their chaos limits; a kind that
        cannot be read is left out this cycle (and said), the other still applies."""
        return PolicyIndex.build(await self._policy_lister.fetch(tolerant=True))

    async def refused(self, experiment: Experiment, default_dwell_seconds: float) -> str | None:
        """Why the policies' chaos limits forbid a planned experiment, or None."""
        return refusal(experiment, await self.policies(), default_dwell_seconds) if self.enabled else None

    async def forecasts(self, namespace: str) -> dict[str, Forecast]:
        """The forecasts the planner recorded in the namespace's CapacityPlans, by service."""
        try:
            listed = await read_json(self.custom.list_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, namespace, CAPACITY_PLANS, _preload_content=False))
        except ApiException as exc:
            log.warning("CapacityPlans in %s unreadable (%s %s): no forecasts for its rehearsals this cycle",
                        namespace, exc.status, exc.reason)
            return {}
        found: dict[str, Forecast] = {}
        for item in listed.get("items") or []:
            forecast = forecast_from_capacity_plan(item)
            if forecast is not None:
                found.setdefault(forecast.service, forecast)
        return found

    async def _pending(self, ref: ObjectRef, decision: Decision, now: datetime) -> None:
        if self._told.get((ref.namespace, ref.name)) == (decision.reason, decision.message):
            return
        status: dict[str, Any] = {"phase": "Pending", "conditions": [
            condition("Scheduled", decision.window is not None, decision.reason, decision.message, now)]}
        if decision.window is not None:
            w = decision.window
            status["scheduledFor"] = {"start": format_time(w.start), "end": format_time(w.end), "reason": w.reason,
                                      **({"peak": format_time(w.peak)} if w.peak else {})}
        if await self._patch_status(ref, status):
            first = (ref.namespace, ref.name) not in self._told
            self._told[(ref.namespace, ref.name)] = (decision.reason, decision.message)
            if first or decision.window is not None:
                await self._event(ref, "Scheduled" if decision.window else "Waiting", decision.message, now)

    async def _invalid(self, ref: ObjectRef, message: str, now: datetime) -> None:
        log.warning("%s", message)
        if await self._patch_status(ref, {"phase": "Invalid", "finishedAt": format_time(now), "conditions": [
                condition("Accepted", False, "Invalid", message, now)]}):
            await self._event(ref, "Invalid", message, now, warning=True)

    async def _expired(self, ref: ObjectRef, decision: Decision, now: datetime) -> None:
        if await self._patch_status(ref, {"phase": "Expired", "finishedAt": format_time(now), "conditions": [
                condition("Scheduled", False, decision.reason, decision.message, now)]}):
            await self._event(ref, "Expired", decision.message, now, warning=True)

    # --- every run --------------------------------------------------------------------------------
    async def started(self, experiment: Experiment, run_id: str, now: datetime,
                      declared: ObjectRef | None = None) -> ObjectRef | None:
        """``Running`` on the declared object, or on a new record of a plan's run; the object, or
        None when there is no record (no CRD, or the apiserver refused)."""
        ref = declared
        if ref is not None:
            self._ran.add((ref.namespace, ref.name, ref.uid))
        else:
            body = {
                "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": KIND,
                "metadata": {"name": object_name(run_id), "namespace": experiment.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "harbinger"}},
                "spec": record_spec(experiment, run_id),
            }
            created = await self._call(experiment.namespace, object_name(run_id),
                                       lambda: read_json(self.custom.create_namespaced_custom_object(
                                           contract.API_GROUP, contract.API_VERSION, experiment.namespace, PLURAL,
                                           body, _preload_content=False)))
            if created is None:
                return None
            ref = ObjectRef(experiment.namespace, created["metadata"]["name"], created["metadata"].get("uid", ""))
        self._told.pop((ref.namespace, ref.name), None)
        if await self._patch_status(ref, {"phase": "Running", "runId": run_id, "startedAt": format_time(now),
                                          "stepsRun": 0}):
            await self._event(ref, "Started", f"run {run_id}: {len(experiment.steps)} step(s) of "
                              f"{experiment.kind.value} in {experiment.target}", now)
        return ref

    async def finished(self, ref: ObjectRef, record: RunRecord, report_dir: Path | None, now: datetime) -> None:
        """The verdict; the report into a ConfigMap the object owns (a report that cannot be
        stored is said in the status' notes: the verdict is written regardless)."""
        report: dict[str, str] = {}
        if report_dir is not None:
            report["path"] = str(report_dir)[:1024]
            stored = await self._store_report(ref, record.run_id, report_dir)
            if stored:
                report["configMap"] = stored
            else:
                record = record.model_copy(update={"notes": [
                    *record.notes, "the report could not be stored in a ConfigMap; see the controller's log"]})
        if await self._patch_status(ref, final_status(record, report)):
            reason, message, warning = _verdict_event(record)
            await self._event(ref, reason, message, now, warning=warning)
        if (ref.namespace, ref.name, ref.uid) not in self._ran:  # a record of the plan's, not a team's object
            await self._prune(ref.namespace, record.experiment.name)

    async def _prune(self, namespace: str, experiment: str) -> int:
        """Delete the oldest finished records of a planned experiment beyond ``history_limit``
        (their reports go with them): one record per run would otherwise grow without end."""
        try:
            listed = await read_json(self.custom.list_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, namespace, PLURAL, _preload_content=False))
        except ApiException as exc:
            log.warning("records in %s unreadable (%s %s): not pruned this time", namespace, exc.status, exc.reason)
            return 0
        finished = [item for item in listed.get("items") or []
                    if (item.get("spec") or {}).get("experiment") == experiment and not is_declared(item)
                    and (item.get("status") or {}).get("phase") not in (None, "Pending", "Running")]
        finished.sort(key=lambda item: (item["metadata"].get("creationTimestamp") or "", item["metadata"]["name"]))
        deleted = 0
        for item in finished[:max(0, len(finished) - self.history_limit)]:
            try:
                await self.custom.delete_namespaced_custom_object(contract.API_GROUP, contract.API_VERSION, namespace,
                                                                  PLURAL, item["metadata"]["name"])
                deleted += 1
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("record %s/%s not pruned: %s %s", namespace, item["metadata"]["name"], exc.status,
                                exc.reason)
        return deleted

    async def failed(self, ref: ObjectRef, run_id: str, message: str, now: datetime) -> None:
        """A run that could not even produce a record (its faults are rolled back by then)."""
        if await self._patch_status(ref, {"phase": "Failed", "runId": run_id, "finishedAt": format_time(now),
                                          "notes": [message[:1024]]}):
            await self._event(ref, "Failed", message, now, warning=True)

    async def _store_report(self, ref: ObjectRef, run_id: str, report_dir: Path) -> str | None:
        try:
            body = report_config_map(ref, run_id, report_dir)
        except OSError as exc:
            log.warning("report of %s unreadable: %s", run_id, exc)
            return None
        try:
            await self.core.create_namespaced_config_map(ref.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: written before a restart; it is the same report
                log.warning("report ConfigMap %s/%s: %s %s", ref.namespace, body["metadata"]["name"], exc.status,
                            exc.reason)
                return None
        name: str = body["metadata"]["name"]
        return name

    async def mark_interrupted(self, now: datetime) -> int:
        """Runs a dead controller left ``Running``: ``Interrupted`` (their faults are swept)."""
        if not self.enabled:
            return 0
        try:
            listed = await read_json(self.custom.list_cluster_custom_object(
                contract.API_GROUP, contract.API_VERSION, PLURAL, _preload_content=False))
        except ApiException as exc:
            self._unavailable(exc)
            return 0
        marked = 0
        for item in listed.get("items") or []:
            if (item.get("status") or {}).get("phase") != "Running":
                continue
            meta = item["metadata"]
            ref = ObjectRef(meta["namespace"], meta["name"], meta.get("uid", ""))
            message = "the chaos controller stopped during this run; the next one swept its faults"
            if await self._patch_status(ref, {"phase": "Interrupted", "finishedAt": format_time(now),
                                              "notes": [message]}):
                await self._event(ref, "Interrupted", message, now, warning=True)
                marked += 1
        return marked

    # --- writing ------------------------------------------------------------------------------------
    async def _patch_status(self, ref: ObjectRef, status: dict[str, Any]) -> bool:
        done = await self._call(ref.namespace, ref.name, lambda: self.custom.patch_namespaced_custom_object_status(
            contract.API_GROUP, contract.API_VERSION, ref.namespace, PLURAL, ref.name, {"status": status},
            _content_type=MERGE_PATCH))
        return done is not None

    async def _event(self, ref: ObjectRef, reason: str, message: str, now: datetime, *, warning: bool = False) -> None:
        try:
            await record_event(self.api, ref.involved(), reason, message, now, component=COMPONENT,
                               instance=self.instance, action="Rehearse", warning=warning)
        except ApiException as exc:  # an Event is a courtesy: never fails the run
            log.warning("Event %s on %s/%s: %s %s", reason, ref.namespace, ref.name, exc.status, exc.reason)

    async def _call(self, namespace: str, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One write; a failure is logged (the rehearsal itself goes on): the record is not the
        run. None when it failed."""
        if not self.enabled:
            return None
        try:
            result = await call()
        except ApiException as exc:
            self._unavailable(exc)
            if self.enabled:
                log.warning("%s %s/%s: %s %s", KIND, namespace, name, exc.status, exc.reason)
            return None
        return result if result is not None else True

    def _unavailable(self, exc: ApiException) -> None:
        if exc.status == 404 and self.enabled and PLURAL not in str(exc.body or ""):
            self.enabled = False
            log.warning("the ChaosExperiment CRD (chaosexperiments.harbinger.io) is not installed: rehearsals go on "
                        "without a record on the API; apply manifests/base/crds and restart")


def refusal(experiment: Experiment, policies: PolicyIndex, default_dwell_seconds: float) -> str | None:
    """Why the chaos limits of the policies in force forbid the experiment, or None."""
    limits, sources = policies.chaos_for(experiment.namespace, experiment.target)
    # A dependency failure aborts every request of the pods it picks: its bound is on pods.
    dependency = experiment.kind is FaultKind.DEPENDENCY_FAILURE
    percents = [] if dependency else [s.delay_percent for s in experiment.steps if s.delay_ms is not None]
    percents += [] if dependency else [s.abort_percent for s in experiment.steps if s.abort_status is not None]
    pod_faults = not experiment.kind.request_level or dependency
    found = limits.refusals(kind=experiment.kind.value, request_percents=percents,
                            dwell_seconds=experiment.dwell_seconds or default_dwell_seconds, pods=experiment.pods,
                            pod_faults=pod_faults)
    if not found:
        return None
    return f"beyond the chaos limits of {' and '.join(sources)}: {'; '.join(found)}"
