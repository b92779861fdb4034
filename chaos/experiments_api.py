"""The chaos controller's record on the Kubernetes API: one ``ChaosExperiment``
(harbinger.io/v1alpha1) per rehearsal, in the experiment's namespace, so that
``kubectl get chaosexperiments -A`` shows every rehearsal and its verdict, and what happened
outlives the controller (its HTML reports go to a volume that may not).

Written at the start of a run (``Running``) and at its end (the verdict, each ramp step, the
breach, the rollback and where the report is). A controller that starts finds the runs a dead
one left ``Running`` and marks them ``Interrupted`` (it has swept their faults by then). A
cluster without the CRD is told once in the log; rehearsals go on without the record.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.experiment import Experiment
from chaos.record import RunRecord, RunStatus
from harbinger import contract
from harbinger.clock import format_time
from harbinger.kube import MERGE_PATCH, read_json

log = logging.getLogger(__name__)

PLURAL = "chaosexperiments"
KIND = "ChaosExperiment"
PHASES = {RunStatus.HELD: "Held", RunStatus.BREACHED: "Breached", RunStatus.ABORTED: "Aborted",
          RunStatus.NOT_STEADY: "NotSteady", RunStatus.FAILED: "Failed"}


def object_name(run_id: str) -> str:
    """A run id as an object name (lowercase RFC 1123, at most 253 characters)."""
    return run_id.lower()[:253].rstrip("-.")


def final_status(record: RunRecord, report: Path | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": PHASES[record.status],
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
    if report is not None:
        status["report"] = str(report)[:1024]
    return status


class ExperimentRecords:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom: Any = client.CustomObjectsApi(api)  # bodies are the apiserver's JSON dicts
        self.enabled = True

    async def started(self, experiment: Experiment, run_id: str, now: datetime) -> None:
        body = {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}", "kind": KIND,
            "metadata": {"name": object_name(run_id), "namespace": experiment.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "harbinger"}},
            "spec": {"experiment": experiment.name, "runId": run_id, "target": experiment.target,
                     "kind": experiment.kind.value, "backend": experiment.backend.value,
                     "plannedSteps": len(experiment.steps),
                     **({"caller": experiment.caller} if experiment.caller else {})},
        }
        if await self._write(experiment.namespace, run_id, lambda: self.custom.create_namespaced_custom_object(
                contract.API_GROUP, contract.API_VERSION, experiment.namespace, PLURAL, body)):
            await self._status(experiment.namespace, run_id, {"phase": "Running", "startedAt": format_time(now),
                                                              "stepsRun": 0})

    async def finished(self, record: RunRecord, report: Path | None) -> None:
        await self._status(record.experiment.namespace, record.run_id, final_status(record, report))

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
            await self._status(meta["namespace"], meta["name"], {
                "phase": "Interrupted", "finishedAt": format_time(now),
                "notes": ["the chaos controller stopped during this run; the next one swept its faults"]},
                named=True)
            marked += 1
        return marked

    async def _status(self, namespace: str, run_id: str, status: dict[str, Any], *, named: bool = False) -> None:
        name = run_id if named else object_name(run_id)
        await self._write(namespace, run_id, lambda: self.custom.patch_namespaced_custom_object_status(
            contract.API_GROUP, contract.API_VERSION, namespace, PLURAL, name, {"status": status},
            _content_type=MERGE_PATCH))

    async def _write(self, namespace: str, run_id: str, call: Any) -> bool:
        """One write; a failure is logged (the rehearsal itself goes on): the record is not the run."""
        if not self.enabled:
            return False
        try:
            await call()
        except ApiException as exc:
            self._unavailable(exc)
            if self.enabled:
                log.warning("ChaosExperiment %s/%s: %s %s", namespace, object_name(run_id), exc.status, exc.reason)
            return False
        return True

    def _unavailable(self, exc: ApiException) -> None:
        if exc.status == 404 and self.enabled and "chaosexperiments" not in str(exc.body or ""):
            self.enabled = False
            log.warning("the ChaosExperiment CRD (chaosexperiments.harbinger.io) is not installed: rehearsals go on "
                        "without a record on the API; apply manifests/base/crds and restart")
