"""Learning undeclared profile fields: the pure functions (pod timestamps to a warm-up,
request-rate history to a burst dispersion, bounds, declared beats learned) and the
learner's fallbacks. The learner on the real apiserver is in test_learn_cluster.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, load_profiles, profile_from_annotation
from models.errors import BadSeries
from scaler.inputs import Target
from scaler.learn import (
    MIN_DISPERSION_STEPS,
    ProfileLearner,
    bounded,
    is_declared,
    label_selector,
    learn_burst_dispersion,
    learn_warmup,
    pod_warmup_seconds,
    with_learned,
)
from scaler.trace import burst_dispersion

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
#: These tests list no pods: every warm-up is declared, or the Deployment is broken.
NO_API: Any = None


def pod(created: Any = "2031-03-02T12:00:00Z", ready: Any = "2031-03-02T12:00:42Z", *, status: str = "True",
        restarts: Any = 0) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2031-03-02T12:00:01Z"},
                                      {"type": "Ready", "status": status, "lastTransitionTime": ready}],
                       "containerStatuses": [{"name": "app", "restartCount": restarts}]}}


def test_a_pods_warmup_is_creation_to_ready() -> None:
    assert pod_warmup_seconds(pod()) == 42.0
    assert pod_warmup_seconds(pod(ready="2031-03-02T12:01:30.5+00:00")) == 90.5


@pytest.mark.parametrize("bad", [
    pod(status="False"),  # not ready: no warm-up to read
    pod(restarts=1),  # its Ready time is the restart's
    pod(restarts="two"),
    pod(created=None), pod(created="yesterday"), pod(created=1234), pod(ready=""),
    pod(ready="2031-03-02T12:00:42"),  # no time zone: cannot be placed
    pod(ready="2031-03-02T11:59:00Z"),  # ready before created
    pod(ready="2031-03-02T14:00:00Z"),  # a readiness flap two hours later, not the warm-up
    {"metadata": {}, "status": None}, {},
])
def test_garbage_pods_teach_nothing(bad: dict[str, Any]) -> None:
    assert pod_warmup_seconds(bad) is None


def test_the_warmup_is_the_p90_of_ready_pods_and_no_ready_pod_keeps_the_default() -> None:
    ready = [pod(ready=f"2031-03-02T12:00:{s:02d}Z") for s in (10, 12, 14, 16, 18, 20, 22, 24, 26, 50)]
    learned = learn_warmup([*ready, pod(status="False"), pod(created="garbage")])
    assert learned.value == pytest.approx(float(np.quantile([10, 12, 14, 16, 18, 20, 22, 24, 26, 50], 0.9)))
    assert "10 pod(s)" in learned.basis
    nothing = learn_warmup([pod(status="False")])
    assert nothing.value is None and "no Ready pod" in nothing.basis
    assert learn_warmup([]).value is None


def test_learned_values_stay_within_the_fields_validation_range() -> None:
    assert bounded("warmup_seconds", -3.0) == 0.0
    assert bounded("warmup_seconds", 1e9) == 1e9  # no upper bound declared
    assert bounded("burst_dispersion", 5e6) == 1e6
    assert bounded("burst_factor", 0.5) == 1.0
    assert 0 < bounded("rps_per_replica", 0.0) < 1e-300  # gt=0: just above
    assert bounded("target_utilization", 2.0) == 1.0


def test_a_declared_value_beats_a_learned_one(tmp_path: Path) -> None:
    learned = {"warmup_seconds": 7.0, "burst_dispersion": 1.5}
    declared = profile_from_annotation(json.dumps({"warmup_seconds": 120, "plan_quantile": "p50"}), source="t")
    effective = with_learned(declared, learned)
    assert effective.warmup_seconds == 120 and effective.burst_dispersion == 1.5
    assert effective.plan_quantile == "p50"
    # A value the YAML's defaults give is declared too.
    path = tmp_path / "profiles.yaml"
    path.write_text("defaults: {burst_dispersion: 0.25}\nservices:\n  checkout: {}\n")
    checkout = load_profiles(path)["checkout"]
    assert is_declared(checkout, "burst_dispersion") and not is_declared(checkout, "warmup_seconds")
    assert with_learned(checkout, learned).burst_dispersion == 0.25
    assert with_learned(checkout, learned).warmup_seconds == 7.0
    # Nothing learned: the very same profile, defaults and all.
    assert with_learned(CapacityProfile(), {}) == CapacityProfile()
    # Out of range learned values are bounded, not refused.
    assert with_learned(CapacityProfile(), {"warmup_seconds": -5.0}).warmup_seconds == 0.0


def test_a_deployments_selector_becomes_a_label_selector() -> None:
    selector = {"matchLabels": {"app": "web", "tier": "front"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]},
                                     {"key": "debug", "operator": "DoesNotExist"},
                                     {"key": "env", "operator": "NotIn", "values": ["test"]},
                                     {"key": "team", "operator": "Exists"}]}
    assert label_selector(selector) == "app=web,tier=front,track in (stable,canary),!debug,env notin (test),team"
    with pytest.raises(InvalidInput, match="no selector"):
        label_selector({})
    with pytest.raises(InvalidInput, match="Near"):
        label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def minute_history(days: float, *, start: datetime = T0 - timedelta(days=3), seed: int = 1) -> pd.Series:
    """Poisson-like requests/s per minute around 20/s, with a burst minute now and then."""
    rng = np.random.default_rng(seed)
    n = int(days * 1440)
    values = rng.poisson(20 * 60, n) / 60.0
    values[rng.random(n) < 0.02] *= 3
    return pd.Series(values, index=pd.date_range(start, periods=n, freq="60s"), name="checkout")


def test_the_dispersion_is_learned_from_whole_forecast_steps_of_fine_history() -> None:
    # Starting 7 minutes into a 15-minute step: the partial step is not a step.
    history = minute_history(2, start=T0 - timedelta(days=2, minutes=-7))
    learned = learn_burst_dispersion(history, 900)
    aligned = history.to_numpy()[8:]
    assert learned.value == pytest.approx(burst_dispersion(aligned, 60, 900))
    assert learned.value is not None and learned.value > 0
    assert learned.basis == "P90 over 191 900 s steps of 60 s history"


def test_too_little_or_too_coarse_history_keeps_the_default() -> None:
    short = minute_history(MIN_DISPERSION_STEPS * 900 / 86400 - 0.02)
    assert learn_burst_dispersion(short, 900).value is None
    assert "needed" in learn_burst_dispersion(short, 900).basis
    coarse = minute_history(3).resample("900s").mean()
    assert "cannot show the peak" in learn_burst_dispersion(coarse, 900).basis
    assert learn_burst_dispersion(minute_history(0.0), 900).value is None
    irregular = minute_history(2).drop(minute_history(2).index[5])
    assert "regular" in learn_burst_dispersion(irregular, 900).basis


def test_garbage_rates_are_unknown_not_traffic() -> None:
    history = minute_history(3)
    clean = learn_burst_dispersion(history, 900).value
    spoiled = history.copy()
    spoiled.iloc[100] = -50.0
    spoiled.iloc[200] = np.inf
    spoiled.iloc[300] = np.nan
    value = learn_burst_dispersion(spoiled, 900).value
    assert value is not None and clean is not None and np.isfinite(value)
    assert value == pytest.approx(clean, rel=0.05)  # three steps fewer, same spread


class FakeHistory:
    """A history source answering from a series, or refusing some steps, or failing."""

    def __init__(self, series: pd.Series | None, *, refuse_steps: tuple[int, ...] = (), fail: bool = False) -> None:
        self.series = series
        self.refuse_steps = refuse_steps
        self.fail = fail
        self.asked: list[tuple[int, datetime]] = []

    async def history(self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta,
                      step_seconds: int) -> pd.Series:
        self.asked.append((step_seconds, end))
        if self.fail:
            raise RuntimeError("the disk is on fire")
        if step_seconds in self.refuse_steps or self.series is None:
            raise BadSeries(f"a step of {step_seconds} s is not a whole multiple", source="trace")
        window = self.series.loc[pd.Timestamp(end - lookback):pd.Timestamp(end - timedelta(seconds=step_seconds))]
        return window.resample(f"{step_seconds}s").mean() if step_seconds != 60 else window


def target(profile: CapacityProfile, service: str = "checkout") -> Target:
    deployment = {"metadata": {"name": service, "namespace": "shop"}, "spec": {"selector": {}}}
    return Target(service, deployment, None, profile)


def gauge(service: str, field: str) -> float | None:
    return REGISTRY.get_sample_value("harbinger_planner_learned_profile_value",
                                     {"namespace": "shop", "service": service, "field": field})


DECLARED_WARMUP = {"warmup_seconds": 30}


async def test_the_learner_learns_the_dispersion_only_where_p50_plans_use_it(forecast: Any) -> None:
    history = FakeHistory(minute_history(3))
    learner = ProfileLearner(NO_API, history=history)
    step = forecast("checkout", T0, [10.0] * 4, step_seconds=900)
    p50 = CapacityProfile.model_validate({**DECLARED_WARMUP, "plan_quantile": "p50"})
    learned = await learner.learn(target(p50, "lrn-a"), step, T0)
    expected = learn_burst_dispersion(history.series.loc[:T0 - timedelta(seconds=60)], 900)
    assert learned == {"burst_dispersion": pytest.approx(expected.value)}
    assert gauge("lrn-a", "burst_dispersion") == pytest.approx(expected.value)
    # P90 plans: P90 and headroom are the margin; nothing is learned, nothing asked.
    asked = len(history.asked)
    assert await learner.learn(target(CapacityProfile.model_validate(DECLARED_WARMUP), "lrn-b"), step, T0) == {}
    assert len(history.asked) == asked and gauge("lrn-b", "burst_dispersion") is None
    # Declared: never learned, and the gauge of an earlier learned value goes away.
    declared = CapacityProfile.model_validate({**DECLARED_WARMUP, "plan_quantile": "p50", "burst_dispersion": 0.5})
    assert await learner.learn(target(declared, "lrn-a"), step, T0) == {}
    assert gauge("lrn-a", "burst_dispersion") is None


async def test_the_dispersion_is_relearned_hourly_and_a_coarse_source_is_asked_at_300_s(forecast: Any) -> None:
    history = FakeHistory(minute_history(3), refuse_steps=(60,))
    learner = ProfileLearner(NO_API, history=history)
    step = forecast("checkout", T0, [10.0] * 4, step_seconds=1800)
    profile = CapacityProfile.model_validate({**DECLARED_WARMUP, "plan_quantile": "p50"})
    learned = await learner.learn(target(profile, "lrn-c"), step, T0)
    assert [step for step, _ in history.asked] == [60, 300]
    assert learned["burst_dispersion"] > 0
    await learner.learn(target(profile, "lrn-c"), step, T0 + timedelta(minutes=59))
    assert len(history.asked) == 2  # cached
    await learner.learn(target(profile, "lrn-c"), step, T0 + timedelta(minutes=60))
    assert len(history.asked) == 4


async def test_learning_never_crashes_a_run(caplog: pytest.LogCaptureFixture, forecast: Any) -> None:
    step = forecast("checkout", T0, [10.0] * 4, step_seconds=900)
    profile = CapacityProfile.model_validate({**DECLARED_WARMUP, "plan_quantile": "p50"})
    for source in (FakeHistory(None, fail=True), FakeHistory(None), None,
                   FakeHistory(minute_history(0.5))):
        learner = ProfileLearner(NO_API, history=source)
        caplog.clear()
        with caplog.at_level("INFO", logger="scaler.learn"):
            assert await learner.learn(target(profile, "lrn-d"), step, T0) == {}
        assert "burst_dispersion not learned, default 0.0 kept" in caplog.text
    # An undeclared warm-up of a Deployment without a selector: the default, and a log line.
    caplog.clear()
    with caplog.at_level("INFO", logger="scaler.learn"):
        assert await ProfileLearner(NO_API).learn(target(CapacityProfile(), "lrn-e"), step, T0) == {}
    assert "warmup_seconds not learned, default 60.0 kept: learning failed" in caplog.text
