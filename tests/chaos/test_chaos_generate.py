"""Scenario generation on a graph with known bottlenecks: they rank first, the blast-radius
limit holds against the forecast, and each experiment sits in a rehearsal window."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from chaos.blast import Capacity, allowed_fraction, degraded_fraction
from chaos.experiment import BackendKind, FaultKind, dump, load_experiments
from chaos.forecasts import max_load, peak_times
from chaos.generate import GenerateOptions, generate
from chaos.incidents import Incident
from harbinger.graph import ServiceGraph
from harbinger.profile import CapacityProfile
from models.forecast import Forecast

NOW = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
STEP = 900  # 15-minute forecast steps

# web and mobile both go through api; api calls auth and orders; orders calls db and email.
# auth and db are the bottlenecks: everything depends on db, and auth cannot scale past its peak.
GRAPH = ServiceGraph.build(
    ["web", "mobile", "api", "auth", "orders", "db", "email"],
    [("web", "api"), ("mobile", "api"), ("api", "auth"), ("api", "orders"), ("orders", "db"), ("orders", "email"),
     ("auth", "db")],
)
PROFILES = {
    "auth": CapacityProfile(rps_per_replica=50, max_replicas=4, headroom=0.2),
    "db": CapacityProfile(rps_per_replica=100, max_replicas=10, headroom=0.2),
}


def _daily(service: str, peak: float, trough: float, peak_hour: float = 12.0) -> Forecast:
    hours = np.arange(96) * STEP / 3600
    shape = (1 + np.cos((hours - peak_hour) / 24 * 2 * np.pi)) / 2
    p50 = trough + (peak - trough) * shape
    return Forecast(service, "test", NOW, STEP, p50 * 0.9, p50)


FORECASTS = {
    "web": _daily("web", 120, 10), "mobile": _daily("mobile", 60, 5), "api": _daily("api", 180, 15),
    "auth": _daily("auth", 150, 12), "orders": _daily("orders", 90, 8), "db": _daily("db", 240, 20),
    "email": _daily("email", 20, 1),
}


def _plan(**options: object) -> list:  # type: ignore[type-arg]
    return generate(GRAPH, profiles=PROFILES, forecasts=FORECASTS, options=GenerateOptions(**options), now=NOW
                    ).experiments


def test_known_bottlenecks_rank_first() -> None:
    experiments = _plan()
    first_targets = list(dict.fromkeys(e.target for e in experiments))
    assert first_targets[:2] == ["db", "auth"]
    assert experiments[0].risk >= experiments[-1].risk
    assert all(a.risk >= b.risk for a, b in itertools.pairwise(experiments))


def test_failure_history_lifts_a_service_and_its_failure_kind() -> None:
    incidents = [Incident(NOW - timedelta(days=d), "email", FaultKind.LATENCY) for d in (1, 3, 8, 20)]
    with_history = generate(GRAPH, profiles=PROFILES, forecasts=FORECASTS, history=incidents, now=NOW).experiments
    without = _plan()
    rank = {e.name: i for i, e in enumerate(with_history)}
    rank_before = {e.name: i for i, e in enumerate(without)}
    assert rank["latency-email"] < rank_before["latency-email"]
    email = [e.name for e in with_history if e.target == "email"]
    assert email[0] == "latency-email"
    assert any("failed this way before" in r for r in with_history[rank["latency-email"]].rationale)


def test_blast_radius_keeps_predicted_load_plus_headroom_covered() -> None:
    experiments = _plan()
    assert experiments
    for experiment in experiments:
        profile = PROFILES.get(experiment.target, CapacityProfile())
        forecast = FORECASTS[experiment.target]
        assert experiment.window is not None
        load = max_load(forecast, experiment.window.start, experiment.window.end)
        capacity = Capacity.at_peak(profile, forecast.peak_p90())
        for step in experiment.steps:
            lost = degraded_fraction(experiment.kind, step, profile, capacity, experiment.pods)
            remaining = capacity.total_rps * (1 - lost)
            assert remaining >= load * (1 + profile.headroom) - 1e-6, (experiment.name, step)


def test_steps_beyond_the_limit_are_cut_and_an_impossible_experiment_is_skipped() -> None:
    # auth before its peak needs 4 replicas (160 * 1.2 / 50 = 3.84) of the 4 it has: 4 % slack.
    tight = {"auth": _daily("auth", 160, 150)}
    plan = generate(GRAPH, profiles=PROFILES, forecasts=tight, now=NOW,
                    options=GenerateOptions(kinds=[FaultKind.ERROR, FaultKind.DEPENDENCY_FAILURE]))
    error_auth = next(e for e in plan.experiments if e.name == "error-auth")
    assert [s.abort_percent for s in error_auth.steps] == [1.0]  # 5 % would leave too little
    assert error_auth.max_degraded_fraction is not None and 0.01 < error_auth.max_degraded_fraction < 0.05
    assert any(s.startswith("dependency-failure-auth: blast radius") for s in plan.skipped)


def test_dependency_failure_spends_the_blast_radius_on_whole_pods() -> None:
    profiles = {**PROFILES, "orders": CapacityProfile(rps_per_replica=50, min_replicas=3)}
    plan = generate(GRAPH, profiles=profiles, forecasts=FORECASTS, now=NOW,
                    options=GenerateOptions(kinds=[FaultKind.DEPENDENCY_FAILURE], schedule="low-traffic"))
    orders = next(e for e in plan.experiments if e.target == "orders")
    # At night orders keeps its 3 replicas for ~8 req/s: two whole pods may fail, never all three.
    assert orders.steps[0].abort_percent == 100 and orders.pods == 2
    # db runs one replica at night: failing it whole would leave nothing, so it is not generated.
    assert any(s.startswith("dependency-failure-db: blast radius") for s in plan.skipped)


def test_rehearsal_windows_end_before_the_peak_or_sit_in_the_quietest_hours() -> None:
    lead = 1800.0
    for experiment in _plan(rehearsal_lead_seconds=lead, rehearsal_window_seconds=3600):
        window = experiment.window
        assert window is not None and window.peak is not None
        assert window.peak in peak_times(FORECASTS[experiment.target])
        assert window.end == window.peak - timedelta(seconds=lead)
        assert window.start >= NOW
    for experiment in _plan(schedule="low-traffic", rehearsal_window_seconds=3600):
        window = experiment.window
        assert window is not None and window.reason == "low-traffic"
        hour = (window.start - NOW).total_seconds() / 3600
        assert 22 <= hour <= 26 or hour <= 2  # around midnight, 12 h from the noon peak


def test_request_faults_skip_services_nobody_calls_and_istio_targets_each_call() -> None:
    plan = generate(GRAPH, forecasts=FORECASTS, now=NOW,
                    options=GenerateOptions(backend=BackendKind.ISTIO, kinds=[FaultKind.LATENCY, FaultKind.CPU]))
    names = {e.name for e in plan.experiments}
    assert "latency-web" not in names and any(s.startswith("latency-web:") for s in plan.skipped)
    assert {"latency-web-to-api", "latency-mobile-to-api"} <= names
    assert not any(e.kind is FaultKind.CPU for e in plan.experiments)


def test_no_forecast_caps_the_blast_radius() -> None:
    plan = generate(GRAPH, now=NOW, options=GenerateOptions(kinds=[FaultKind.ERROR], unknown_load_fraction=0.05))
    for experiment in plan.experiments:
        assert experiment.window is None
        assert max(s.abort_percent for s in experiment.steps) <= 5


def test_a_plan_round_trips_through_yaml_and_json(tmp_path: Path) -> None:
    plan = generate(GRAPH, profiles=PROFILES, forecasts=FORECASTS, now=NOW, options=GenerateOptions(max_experiments=5))
    for name in ("plan.yaml", "plan.json"):
        dump(plan, tmp_path / name)
        assert load_experiments(tmp_path / name) == plan.experiments
    assert len(plan.experiments) == 5 and any("below the top 5" in s for s in plan.skipped)


@pytest.mark.parametrize(("load", "expected"), [(0.0, 1.0), (100.0, 0.4), (250.0, 0.0)])
def test_allowed_fraction(load: float, expected: float) -> None:
    profile = CapacityProfile(rps_per_replica=50, headroom=0.2)
    assert allowed_fraction(profile, Capacity(4, 50), load) == pytest.approx(expected)
