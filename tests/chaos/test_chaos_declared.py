"""A declared ChaosExperiment's spec, read as the controller runs it (errors name the field as
the user wrote it, in camelCase), and when each schedule says it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import numpy as np
import pytest

from chaos.declared import Schedule, ScheduleType, decide, declared_experiment, experiment_crd, record_spec
from chaos.experiment import BackendKind, Experiment, FaultKind
from chaos.experiments_api import refusal
from chaos.faults import Fault
from harbinger.errors import InvalidInput
from harbinger.policy import ChaosKind, ChaosLimits, PolicyIndex
from models.forecast import Forecast

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)


def declared(spec: dict[str, Any], name: str = "error-payments") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop"}, "spec": spec}


def test_a_declared_spec_is_the_experiment_the_controller_runs() -> None:
    experiment, schedule = declared_experiment(declared({
        "target": "payments", "kind": "memory", "watch": ["checkout"], "pods": 1, "dwellSeconds": 30,
        "steps": [{"memoryBytes": "64Mi"}, {"memoryBytes": 134217728}],
        "slo": {"maxErrorRate": 0.05, "breachSamples": 3},
        "schedule": {"type": "BeforePeak", "leadSeconds": 300}}))
    assert (experiment.name, experiment.namespace, experiment.target) == ("error-payments", "shop", "payments")
    assert [s.memory_bytes for s in experiment.steps] == [64 * 2**20, 128 * 2**20]
    assert (experiment.slo.max_error_rate, experiment.slo.breach_samples, experiment.slo.max_p99_seconds) == (
        0.05, 3, 1.0)
    assert (experiment.pods, experiment.dwell_seconds, experiment.watch) == (1, 30, ["checkout"])
    assert schedule == Schedule(type=ScheduleType.BEFORE_PEAK, lead_seconds=300)


def test_a_plan_runs_record_reads_back_as_the_same_experiment() -> None:
    experiment = Experiment(name="latency-checkout-to-payments", namespace="shop", kind=FaultKind.LATENCY,
                            target="payments", caller="checkout", backend=BackendKind.ISTIO, dwell_seconds=20,
                            steps=[Fault(delay_ms=ms, delay_percent=50) for ms in (100, 500)])
    obj = {"metadata": {"name": experiment.name, "namespace": "shop"}, "spec": record_spec(experiment, "run-1")}
    read, _ = declared_experiment(obj)
    assert read == experiment


@pytest.mark.parametrize(("spec", "message"), [
    ({"target": "payments", "kind": "memory", "steps": [{"memoryBytes": "lots"}]}, "spec.steps[0].memoryBytes"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503, "abortPrecent": 5}]},
     "spec.steps[0] has unknown field(s) abortPrecent"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503}], "slo": {"maxErrorRate": 2}},
     "spec.slo.maxErrorRate"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503}], "riskScore": 1},
     "spec has unknown field(s) riskScore"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503}], "predictedRps": {"payments": 1}},
     "predictedRps, which the controller computes"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503}],
      "schedule": {"type": "Window", "start": "2031-03-02T12:00:00Z"}}, "spec.schedule: Value error, a Window"),
    ({"target": "payments", "kind": "error", "steps": [{"abortStatus": 503}], "schedule": {"start": "2031-03-02"}},
     "start and end belong to a Window schedule"),
    ({"target": "payments", "kind": "latency", "steps": [{"abortStatus": 503}]}, "needs a delay fault"),
])
def test_what_the_schema_cannot_check_is_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        declared_experiment(declared(spec))
    assert message in str(refused.value)
    assert "ChaosExperiment shop/error-payments" in str(refused.value)


EXPERIMENT = Experiment(name="e", namespace="shop", kind=FaultKind.ERROR, target="payments",
                        steps=[Fault(abort_status=503)])


def forecast(peak_step: int | None) -> Forecast:
    p90 = np.full(72, 10.0)
    if peak_step is not None:
        p90[peak_step] = 100.0
    else:
        p90[:] = np.linspace(100, 10, 72)  # falling: the only local maximum is the start
    return Forecast("payments", "m1", T0, 300, p90 * 0.8, p90)


def test_now_is_due_at_once() -> None:
    assert decide(EXPERIMENT, Schedule(), now=T0, needed_seconds=60, forecast=None).state == "Due"


def test_a_window_waits_for_its_start_runs_inside_it_and_expires_when_the_run_no_longer_fits() -> None:
    window = Schedule(type=ScheduleType.WINDOW, start=T0, end=T0 + timedelta(minutes=10))
    at = [T0 - timedelta(minutes=1), T0 + timedelta(minutes=8), T0 + timedelta(minutes=9)]
    states = [decide(EXPERIMENT, window, now=t, needed_seconds=120, forecast=None) for t in at]
    assert [d.state for d in states] == ["Waiting", "Due", "Expired"]
    assert states[2].reason == "WindowPassed"


def test_before_peak_runs_in_the_window_that_ends_the_lead_before_the_predicted_peak() -> None:
    schedule = Schedule(type=ScheduleType.BEFORE_PEAK, lead_seconds=600, window_seconds=3600)
    peak = T0 + timedelta(hours=3)  # step 36
    waiting = decide(EXPERIMENT, schedule, now=T0, needed_seconds=120, forecast=forecast(36))
    assert waiting.state == "Waiting" and waiting.window is not None
    assert (waiting.window.start, waiting.window.end, waiting.window.peak) == (
        peak - timedelta(minutes=70), peak - timedelta(minutes=10), peak)
    inside = decide(EXPERIMENT, schedule, now=peak - timedelta(minutes=30), needed_seconds=120, forecast=forecast(36))
    assert inside.state == "Due" and inside.window is not None and inside.window.start == peak - timedelta(minutes=30)
    # Too close to the lead for the whole run: no window before this peak any more.
    late = decide(EXPERIMENT, schedule, now=peak - timedelta(minutes=11), needed_seconds=120, forecast=forecast(36))
    assert (late.state, late.reason) == ("Waiting", "NoPeakAhead")


def test_before_peak_without_a_forecast_or_a_peak_ahead_waits_and_says_why() -> None:
    schedule = Schedule(type=ScheduleType.BEFORE_PEAK)
    none = decide(EXPERIMENT, schedule, now=T0, needed_seconds=60, forecast=None)
    assert (none.state, none.reason) == ("Waiting", "NoForecast") and "payments" in none.message
    falling = decide(EXPERIMENT, schedule, now=T0, needed_seconds=60, forecast=forecast(None))
    assert (falling.state, falling.reason) == ("Waiting", "NoPeakAhead")


def test_the_crd_schema_is_generated_from_the_models() -> None:
    spec = experiment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    step = spec["properties"]["steps"]["items"]["properties"]
    assert set(step) == {"delayMs", "delayPercent", "abortStatus", "abortPercent", "bandwidthBps", "cpuCores",
                         "memoryBytes"}
    assert set(spec["properties"]["slo"]["properties"]) == {"maxErrorRate", "maxP99Seconds", "minThroughputRatio",
                                                            "breachSamples"}
    assert step["abortPercent"]["maximum"] == 100 and step["cpuCores"]["maximum"] == 8.0


def test_the_policys_chaos_kinds_are_the_controllers_fault_kinds() -> None:
    assert set(get_args(ChaosKind)) == {k.value for k in FaultKind}


def test_chaos_limits_tighten_layer_by_layer_and_name_what_is_beyond_them() -> None:
    platform = ChaosLimits(kinds=["latency", "error", "cpu"], max_request_percent=50, max_dwell_seconds=300)
    team = ChaosLimits(kinds=["error", "memory"], max_request_percent=80, max_pods=2)
    both = platform.tightened(team)
    assert both == ChaosLimits(kinds=["error"], max_request_percent=50, max_dwell_seconds=300, max_pods=2)
    assert ChaosLimits().tightened(ChaosLimits(enabled=False)).enabled is False
    assert both.refusals(kind="error", request_percents=[5, 25], dwell_seconds=60, pods=None, pod_faults=False) == []
    assert both.refusals(kind="cpu", request_percents=[], dwell_seconds=600, pods=None, pod_faults=True) == [
        "cpu faults are not allowed (spec.chaos.kinds: error)",
        "steps are held 600 s, above spec.chaos.maxDwellSeconds 300",
        "every pod of the target, above spec.chaos.maxPods 2"]
    assert both.refusals(kind="error", request_percents=[75], dwell_seconds=60, pods=None, pod_faults=False) == [
        "a step touches 75% of requests, above spec.chaos.maxRequestPercent 50"]


def test_a_refusal_names_every_policy_it_comes_from() -> None:
    policies = PolicyIndex.build([
        {"metadata": {"name": "platform"}, "spec": {"chaos": {"maxPods": 1}}},
        {"metadata": {"name": "limits", "namespace": "shop"}, "spec": {"service": "payments",
                                                                       "chaos": {"enabled": False}}},
    ])
    memory = Experiment(name="m", namespace="shop", kind=FaultKind.MEMORY, target="checkout", pods=2,
                        steps=[Fault(memory_bytes=2**20)])
    assert refusal(memory, policies, 30) == ("beyond the chaos limits of ClusterHarbingerPolicy platform: 2 pods of "
                                             "the target, above spec.chaos.maxPods 1")
    assert refusal(memory.model_copy(update={"pods": 1}), policies, 30) is None
    off = memory.model_copy(update={"target": "payments", "pods": 1})
    assert refusal(off, policies, 30) == ("beyond the chaos limits of ClusterHarbingerPolicy platform and "
                                          "HarbingerPolicy shop/limits: chaos is disabled here (spec.chaos.enabled: "
                                          "false)")
    # A dependency failure always aborts every request of its pods: bounded by pods, not by percent.
    down = Experiment(name="d", namespace="shop", kind=FaultKind.DEPENDENCY_FAILURE, target="checkout", pods=1,
                      steps=[Fault(abort_status=503)])
    strict = PolicyIndex.build([{"metadata": {"name": "p"}, "spec": {"chaos": {"maxRequestPercent": 10}}}])
    assert refusal(down, strict, 30) is None
