"""ChaosExperiment on the real apiserver: a rehearsal is recorded when it starts (Running)
and when it ends (its verdict, steps, breach, rollback and report); ``kubectl get
chaosexperiments`` shows it; and the record outlives the controller: a new controller keeps
finished runs as they were and marks the one a dead controller left running Interrupted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.experiments_api import PLURAL, ExperimentRecords, object_name
from chaos.faults import Fault
from chaos.record import BreachRecord, RollbackRecord, RunRecord, RunStatus, StepRecord
from chaos.runner import new_run_id
from harbinger import contract
from harbinger.kube import read_json
from harbinger_dev.localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def experiment_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/chaosexperiments.harbinger.io")


async def read(kube: client.ApiClient, namespace: str, run_id: str) -> dict[str, Any]:
    return await read_json(client.CustomObjectsApi(kube).get_namespaced_custom_object(
        contract.API_GROUP, contract.API_VERSION, namespace, PLURAL, object_name(run_id), _preload_content=False))


def breached_run(experiment: Experiment, run_id: str) -> RunRecord:
    steps = [StepRecord(index=i, fault=f, description=f.describe(), started=T0 + timedelta(seconds=30 * i),
                        ended=T0 + timedelta(seconds=30 * i + 30), outcome="held" if i == 0 else "breached")
             for i, f in enumerate(experiment.steps)]
    return RunRecord(
        run_id=run_id, experiment=experiment, status=RunStatus.BREACHED, started=T0,
        finished=T0 + timedelta(seconds=65), dwell_seconds=30, steps=steps,
        breach=BreachRecord(service="frontend", metric="error_rate", value=0.2, limit=0.05, step_index=1,
                            detected_at=T0 + timedelta(seconds=52)),
        rollback=RollbackRecord(reason="breach", started=T0 + timedelta(seconds=52),
                                finished=T0 + timedelta(seconds=52.01), seconds=0.01, objects_restored=3))


async def test_a_rehearsal_is_recorded_and_its_record_outlives_the_controller(
    cluster: LocalCluster, experiment_crd: None, kube: client.ApiClient, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    experiment = Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", namespace=namespace,
                            backend=BackendKind.ISTIO,
                            steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 25.0)])
    records = ExperimentRecords(kube)
    run_id = new_run_id(experiment, T0)
    await records.started(experiment, run_id, T0)
    started = await read(kube, namespace, run_id)
    assert started["spec"] == {"experiment": "error-payments", "runId": run_id, "target": "payments", "kind": "error",
                               "backend": "istio", "plannedSteps": 2}
    assert started["status"] == {"phase": "Running", "startedAt": "2031-03-02T12:00:00Z", "stepsRun": 0}

    await records.finished(breached_run(experiment, run_id), Path("/var/lib/harbinger/reports") / run_id)
    status = (await read(kube, namespace, run_id))["status"]
    assert (status["phase"], status["stepsRun"], status["finishedAt"]) == ("Breached", 2, "2031-03-02T12:01:05Z")
    assert [s["outcome"] for s in status["steps"]] == ["held", "breached"]
    assert status["breach"] == {"service": "frontend", "metric": "error_rate", "value": 0.2, "limit": 0.05,
                                "step": 1, "detectedAt": "2031-03-02T12:00:52Z"}
    assert status["rollback"]["reason"] == "breach" and status["rollback"]["objectsRestored"] == 3
    assert status["report"].endswith(run_id)
    table = cluster.kubectl("get", "chaosexperiments", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "EXPERIMENT", "TARGET", "KIND", "PHASE", "STEPS", "AGE"]
    assert table[1].split()[1:6] == ["error-payments", "payments", "error", "Breached", "2"]

    # A controller dies during its next run; the one that starts after it (a new process).
    cut_short = new_run_id(experiment, T0 + timedelta(hours=1))
    await records.started(experiment, cut_short, T0 + timedelta(hours=1))
    restarted = ExperimentRecords(kube)
    assert await restarted.mark_interrupted(T0 + timedelta(hours=1, minutes=5)) >= 1
    assert (await read(kube, namespace, cut_short))["status"]["phase"] == "Interrupted"
    assert (await read(kube, namespace, run_id))["status"]["phase"] == "Breached"  # finished runs stay as they were
