"""ChaosExperiment on the real apiserver.

- A run of the plan is recorded when it starts (Running) and when it ends (its verdict,
  steps, breach, rollback, and its report in a ConfigMap the object owns); ``kubectl get``
  shows it; the record outlives the controller: a new controller keeps finished runs as they
  were and marks the one a dead controller left running Interrupted.
- A team declares one: the apiserver refuses a bad one at apply time naming the field; the
  controller runs a good one through its phases against the real sidecars and Prometheus, and
  a restarted controller leaves its verdict alone; deleting it deletes its report.
- Schedules: BeforePeak waits for the window before the peak the target's CapacityPlan
  forecasts; what cannot run (a namespace not opted in, a quantity that is not one, a window
  that passed) is marked so, and never stops the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.files import AnnotationsFileBackend
from chaos.controller import run_controller
from chaos.declared import PLURAL
from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.experiments_api import ExperimentRecords, ObjectRef, object_name
from chaos.faults import Fault
from chaos.monitor import Monitor, Queries
from chaos.record import BreachRecord, RollbackRecord, RunRecord, RunStatus, StepRecord
from chaos.report import write_report
from chaos.runner import RunConfig, new_run_id
from harbinger import contract
from harbinger.kube import read_json
from harbinger.prometheus import PrometheusClient
from harbinger_dev.chaosdemo import LoadGenerator
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
GROUP, VERSION = contract.API_GROUP, contract.API_VERSION


@pytest.fixture(scope="module")
def experiment_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "base" / "crds"))
    for crd in ("chaosexperiments", "capacityplans"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.harbinger.io")


async def read(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await read_json(client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))


async def create(kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    custom: Any = client.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosExperiment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return await read_json(custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                                  _preload_content=False))


async def delete_all(kube: client.ApiClient, *namespaces: str) -> None:
    """Declared experiments go at once, not with their namespace's slow deletion: a controller
    in a later test must not find them due."""
    custom: Any = client.CustomObjectsApi(kube)
    for namespace in namespaces:
        await custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)


async def events(kube: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    listed = await client.CoreV1Api(kube).list_namespaced_event(namespace)
    return [(e.reason, e.type) for e in listed.items if e.involved_object.name == name]


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


async def test_a_plan_run_is_recorded_with_its_report_and_its_record_outlives_the_controller(
    cluster: LocalCluster, experiment_crd: None, kube: client.ApiClient, make_namespace: Any, tmp_path: Path,
) -> None:
    namespace = await make_namespace(opted_in=True)
    experiment = Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", namespace=namespace,
                            backend=BackendKind.ISTIO,
                            steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 25.0)])
    records = ExperimentRecords(kube)
    run_id = new_run_id(experiment, T0)
    ref = await records.started(experiment, run_id, T0)
    assert ref is not None and ref.name == object_name(run_id) and ref.uid
    started = await read(kube, namespace, ref.name)
    assert started["spec"] == {
        "experiment": "error-payments", "runId": run_id, "plannedSteps": 2, "target": "payments", "kind": "error",
        "backend": "istio",
        "steps": [{"abortStatus": 503, "abortPercent": 1}, {"abortStatus": 503, "abortPercent": 25}],
        "slo": {"maxErrorRate": 0.01, "maxP99Seconds": 1.0, "minThroughputRatio": 0.5, "breachSamples": 2}}
    assert started["status"] == {"phase": "Running", "runId": run_id, "startedAt": "2031-03-02T12:00:00Z",
                                 "stepsRun": 0}

    record = breached_run(experiment, run_id)
    write_report(record, tmp_path / run_id)
    await records.finished(ref, record, tmp_path / run_id, T0 + timedelta(seconds=66))
    status = (await read(kube, namespace, ref.name))["status"]
    assert (status["phase"], status["stepsRun"], status["finishedAt"]) == ("Breached", 2, "2031-03-02T12:01:05Z")
    assert [s["outcome"] for s in status["steps"]] == ["held", "breached"]
    assert status["breach"] == {"service": "frontend", "metric": "error_rate", "value": 0.2, "limit": 0.05,
                                "step": 1, "detectedAt": "2031-03-02T12:00:52Z"}
    assert status["rollback"]["reason"] == "breach" and status["rollback"]["objectsRestored"] == 3
    # The report is kept by the apiserver, owned by the record.
    assert status["report"] == {"path": str(tmp_path / run_id), "configMap": f"{ref.name}-report"}
    kept = await client.CoreV1Api(kube).read_namespaced_config_map(f"{ref.name}-report", namespace)
    assert json.loads(kept.data["report.json"])["breach"]["service"] == "frontend"
    assert "data:image/png" not in kept.data["report.html"] or len(kept.data["report.html"]) < 700_000
    assert [(o.kind, o.uid) for o in kept.metadata.owner_references] == [("ChaosExperiment", ref.uid)]
    assert kept.metadata.labels[contract.CHAOS_REPORT_LABEL] == "true"
    assert {("Started", "Normal"), ("Breached", "Warning")} <= set(await events(kube, namespace, ref.name))

    table = cluster.kubectl("get", "chaosexperiments", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "TARGET", "KIND", "PHASE", "STEPS", "STARTED", "AGE"]
    assert table[1].split()[:5] == [ref.name, "payments", "error", "Breached", "2"]

    # A controller dies during its next run; the one that starts after it (a new process).
    cut_short = new_run_id(experiment, T0 + timedelta(hours=1))
    short_ref = await records.started(experiment, cut_short, T0 + timedelta(hours=1))
    assert short_ref is not None
    restarted = ExperimentRecords(kube)
    assert await restarted.mark_interrupted(T0 + timedelta(hours=1, minutes=5)) >= 1
    assert (await read(kube, namespace, short_ref.name))["status"]["phase"] == "Interrupted"
    assert (await read(kube, namespace, ref.name))["status"]["phase"] == "Breached"  # finished runs stay as they were


ERROR_STEPS = [{"abortStatus": 503, "abortPercent": 1}, {"abortStatus": 503, "abortPercent": 25}]


@pytest.mark.parametrize(("spec", "message"), [
    ({"target": "payments", "kind": "error"}, "a declared experiment needs spec.steps"),
    ({"target": "payments", "kind": "latency", "steps": ERROR_STEPS}, "every step must carry the kind's fault"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503, "abortPercent": 150}]},
     "spec.steps[0].abortPercent"),
    ({"target": "payments", "kind": "error", "steps": [{"abortPercent": 5}]}, "a step needs at least one of"),
    ({"target": "payments", "kind": "gremlins", "steps": ERROR_STEPS}, "spec.kind"),
    ({"target": "Payments!", "kind": "error", "steps": ERROR_STEPS}, "spec.target"),
    ({"target": "payments", "caller": "checkout", "kind": "error", "steps": ERROR_STEPS},
     "a fault on one call (caller) needs the istio backend"),
    ({"target": "payments", "kind": "cpu", "backend": "istio", "steps": [{"cpuCores": 1}]},
     "the istio backend injects only delays and aborts"),
    ({"target": "payments", "kind": "dependency-failure", "steps": [{"abortStatus": 503, "abortPercent": 50}]},
     "aborts 100% of requests"),
    ({"target": "payments", "kind": "error", "steps": ERROR_STEPS,
      "schedule": {"type": "Window", "start": "2031-03-02T13:00:00Z", "end": "2031-03-02T12:00:00Z"}},
     "a Window schedule needs start and end, end after start"),
    ({"target": "payments", "kind": "error", "steps": ERROR_STEPS, "schedule": {"type": "Soon"}},
     "spec.schedule.type"),
    ({"target": "payments", "kind": "error", "steps": ERROR_STEPS, "blastRadius": 1},
     'unknown field "spec.blastRadius"'),
])
async def test_the_apiserver_refuses_a_bad_declared_experiment_naming_the_field(
    experiment_crd: None, kube: client.ApiClient, make_namespace: Any, spec: dict[str, Any], message: str,
) -> None:
    namespace = await make_namespace(opted_in=True)
    custom: Any = client.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ChaosExperiment",
            "metadata": {"name": "bad", "namespace": namespace}, "spec": spec}
    with pytest.raises(ApiException) as refused:
        # fieldValidation=Strict: what kubectl apply does, so an unknown field is refused, not dropped
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                     field_validation="Strict")
    assert refused.value.status in (400, 422), refused.value.body  # 400: strict decoding
    assert message in json.loads(refused.value.body)["message"], refused.value.body


async def test_a_declared_experiment_cannot_change_once_written(
    experiment_crd: None, kube: client.ApiClient, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await create(kube, namespace, "error-payments", {"target": "payments", "kind": "error", "steps": ERROR_STEPS})
    custom: Any = client.CustomObjectsApi(kube)
    with pytest.raises(ApiException) as refused:
        await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "error-payments",
                                                    {"spec": {"dwellSeconds": 5}},
                                                    _content_type="application/merge-patch+json")
    assert "spec cannot change" in json.loads(refused.value.body)["message"]
    await delete_all(kube, namespace)


async def test_a_declared_experiment_goes_through_its_phases_and_a_restart_leaves_its_verdict(
    experiment_crd: None, kube: client.ApiClient, make_namespace: Any, tmp_path: Path, eventually: Any,
    prometheus: LocalPrometheus, topology: Any, queries: Queries, fast_config: RunConfig, window_seconds: float,
    annotation_paths: dict[str, list[Path]],
) -> None:
    """The shared local system (three services behind chaos sidecars, scraped by the real
    Prometheus): 1 % and 25 % errors in payments with checkout and frontend watched at a 10 %
    error SLO; 25 % must break it, at step 2."""
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    created = await create(kube, namespace, "error-payments", {
        "target": "payments", "kind": "error", "watch": ["checkout", "frontend"],
        "steps": [{"abortStatus": 503, "abortPercent": 1}, {"abortStatus": 503, "abortPercent": 30}],
        "slo": {"maxErrorRate": 0.10, "maxP99Seconds": 2.0, "minThroughputRatio": 0.3, "breachSamples": 2}})
    # The planner's forecast of frontend, around now: the report shows its band.
    custom: Any = client.CustomObjectsApi(kube)
    body, plan_status = capacity_plan(namespace, "frontend", datetime.now(UTC) - timedelta(minutes=5), [50.0] * 6)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "capacityplans", body)
    await custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "capacityplans", "frontend",
                                                       plan_status, _content_type="application/merge-patch+json")

    async def controller(prom: PrometheusClient) -> list[RunRecord]:
        def monitor(experiment: Experiment) -> Monitor:
            return Monitor(prom, namespace=experiment.namespace, window_seconds=window_seconds, queries=queries)

        async def no_sweep(_everything: bool) -> int:
            return 0

        return await run_controller(
            None, config=fast_config, reports_dir=tmp_path / "reports", interval_seconds=0.1,
            make_backend=lambda exp: AnnotationsFileBackend(exp, annotation_paths), make_monitor=monitor,
            sweep=no_sweep, once=True, experiment_records=ExperimentRecords(kube))

    async with PrometheusClient(prometheus.url) as prom, \
            LoadGenerator(topology.entry_url, rate=40, max_seconds=120):
        await asyncio.sleep(window_seconds)  # let the rate window fill with steady traffic
        runs = await controller(prom)
        assert [r.status for r in runs] == [RunStatus.BREACHED], [r.notes for r in runs]
        status = (await read(kube, namespace, "error-payments"))["status"]
        assert status["phase"] == "Breached" and status["runId"] == runs[0].run_id
        assert [s["outcome"] for s in status["steps"]] == ["held", "breached"]
        assert status["breach"]["service"] in {"checkout", "frontend"} and status["breach"]["step"] == 1
        assert status["rollback"]["reason"] == "breach"
        assert not any(state["active"] for state in (await topology.fault_states()).values())
        kept = await client.CoreV1Api(kube).read_namespaced_config_map("error-payments-report", namespace)
        report = json.loads(kept.data["report.json"])
        assert report["breach"]["step"] == 2
        bands = {s["service"]: s["forecast"] for s in report["services"]}
        assert bands["frontend"]["p90_max"] == 50.0 and bands["frontend"]["actual_mean"] > 0
        assert bands["checkout"] is None  # no CapacityPlan, no band
        assert "Forecast against actual" in kept.data["report.html"]
        reasons = [r for r, _ in await events(kube, namespace, "error-payments")]
        assert "Started" in reasons and "Breached" in reasons

        # A restarted controller: the declared experiment ran once; its verdict stays.
        assert await controller(prom) == []
    after = await read(kube, namespace, "error-payments")
    assert after["status"] == status

    # Deleting the experiment deletes its report (the garbage collector follows the owner).
    await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "error-payments")

    async def report_gone() -> bool:
        try:
            await client.CoreV1Api(kube).read_namespaced_config_map("error-payments-report", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(report_gone, timeout=60, what="the report ConfigMap garbage-collected")
    del created


def capacity_plan(namespace: str, service: str, start: datetime, p90: list[float]) -> tuple[dict[str, Any], dict]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CapacityPlan",
            "metadata": {"name": service, "namespace": namespace}, "spec": {"service": service, "deployment": service}}
    status = {"status": {"observedAt": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "model": "m1", "forecast": {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "stepSeconds": 300, "p50": [v * 0.8 for v in p90],
        "p90": p90}}}
    return body, status


async def test_schedules_and_what_cannot_run_each_get_their_own_status(
    experiment_crd: None, kube: client.ApiClient, make_namespace: Any,
) -> None:
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    closed = await make_namespace(opted_in=False)
    custom: Any = client.CustomObjectsApi(kube)
    # payments' forecast: flat, then one peak at T0 + 3 h (step 36 of 5 minutes).
    p90 = [10.0] * 72
    p90[36] = 100.0
    body, status = capacity_plan(namespace, "payments", T0, p90)
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "capacityplans", body)
    await custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "capacityplans", "payments", status,
                                                       _content_type="application/merge-patch+json")
    before_peak = {"type": "BeforePeak", "leadSeconds": 600, "windowSeconds": 3600}
    await create(kube, namespace, "a-before-peak", {"target": "payments", "kind": "error", "steps": ERROR_STEPS,
                                                    "schedule": before_peak})
    await create(kube, namespace, "b-no-forecast", {"target": "ghost", "kind": "error", "steps": ERROR_STEPS,
                                                    "schedule": before_peak})
    await create(kube, namespace, "c-not-a-quantity", {"target": "payments", "kind": "memory",
                                                       "steps": [{"memoryBytes": "lots"}]})
    await create(kube, namespace, "d-window-passed", {"target": "payments", "kind": "error", "steps": ERROR_STEPS,
                                                      "schedule": {"type": "Window", "start": "2031-03-02T10:00:00Z",
                                                                   "end": "2031-03-02T11:00:00Z"}})
    await create(kube, namespace, "e-now", {"target": "payments", "kind": "error", "steps": ERROR_STEPS})
    await create(kube, closed, "f-closed-namespace", {"target": "payments", "kind": "error", "steps": ERROR_STEPS})
    # The team's policy allows only latency, on at most 10 % of requests, for search.
    policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "HarbingerPolicy",
              "metadata": {"name": "limits", "namespace": namespace},
              "spec": {"service": "search", "chaos": {"kinds": ["latency"], "maxRequestPercent": 10}}}
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "harbingerpolicies", policy)
    await create(kube, namespace, "g-beyond-the-policy", {"target": "search", "kind": "latency",
                                                          "steps": [{"delayMs": 100, "delayPercent": 50}]})
    await create(kube, namespace, "h-within-the-policy", {"target": "search", "kind": "latency",
                                                          "steps": [{"delayMs": 100, "delayPercent": 10}]})
    await create(kube, namespace, "i-other-service", {"target": "checkout", "kind": "error", "steps": ERROR_STEPS})

    records = ExperimentRecords(kube)
    needed: Callable[[Experiment], float] = lambda _e: 120.0  # noqa: E731
    due = await records.due(T0, needed)
    ours = [d.ref for d in due if d.ref.namespace in (namespace, closed)]
    assert [r.name for r in ours] == ["e-now", "h-within-the-policy", "i-other-service"]

    async def phase(ns: str, name: str) -> tuple[str, dict[str, Any]]:
        found = (await read(kube, ns, name))["status"]
        return found["phase"], found

    state, waiting = await phase(namespace, "a-before-peak")
    assert state == "Pending"
    assert waiting["scheduledFor"] == {"start": "2031-03-02T13:50:00Z", "end": "2031-03-02T14:50:00Z",
                                       "reason": "before-peak", "peak": "2031-03-02T15:00:00Z"}
    assert waiting["conditions"][0]["reason"] == "WaitingForWindow"
    state, no_forecast = await phase(namespace, "b-no-forecast")
    assert state == "Pending" and no_forecast["conditions"][0]["reason"] == "NoForecast"
    assert "no CapacityPlan" in no_forecast["conditions"][0]["message"]
    state, invalid = await phase(namespace, "c-not-a-quantity")
    assert state == "Invalid" and "spec.steps[0].memoryBytes" in invalid["conditions"][0]["message"]
    assert (await phase(namespace, "d-window-passed"))[0] == "Expired"
    state, closed_status = await phase(closed, "f-closed-namespace")
    assert state == "Invalid" and "is not opted in" in closed_status["conditions"][0]["message"]
    assert ("Invalid", "Warning") in await events(kube, namespace, "c-not-a-quantity")
    state, beyond = await phase(namespace, "g-beyond-the-policy")
    assert state == "Invalid"
    assert beyond["conditions"][0]["message"].endswith(
        f"beyond the chaos limits of HarbingerPolicy {namespace}/limits: a step touches 50% of requests, above "
        "spec.chaos.maxRequestPercent 10")

    # Inside the window before the peak, it is due (still with e-now, which nothing ran).
    due = await records.due(T0 + timedelta(hours=2), needed)
    assert [d.ref.name for d in due if d.ref.namespace == namespace] == [
        "a-before-peak", "e-now", "h-within-the-policy", "i-other-service"]
    assert all(isinstance(d.ref, ObjectRef) and d.ref.uid for d in due)
    await delete_all(kube, namespace, closed)


async def test_only_the_last_records_of_a_planned_experiment_are_kept(
    experiment_crd: None, kube: client.ApiClient, make_namespace: Any, tmp_path: Path,
) -> None:
    namespace = await make_namespace(opted_in=True)
    experiment = Experiment(name="error-payments", kind=FaultKind.ERROR, target="payments", namespace=namespace,
                            steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 25.0)])
    records = ExperimentRecords(kube, history_limit=2)
    later = {"type": "Window", "start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}
    declared = await create(kube, namespace, "teams-own", {"target": "payments", "kind": "error",
                                                           "steps": ERROR_STEPS, "schedule": later})
    names = []
    for hour in range(3):
        run_id = new_run_id(experiment, T0 + timedelta(hours=hour))
        ref = await records.started(experiment, run_id, T0 + timedelta(hours=hour))
        assert ref is not None
        names.append(ref.name)
        await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution: keep the runs in order
        await records.finished(ref, breached_run(experiment, run_id), None, T0 + timedelta(hours=hour, minutes=2))
    listed = await read_json(client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _preload_content=False))
    assert sorted(item["metadata"]["name"] for item in listed["items"]) == sorted([*names[1:], "teams-own"])
    assert declared["metadata"]["name"] == "teams-own"
    await delete_all(kube, namespace)
