"""The pure planning core: P90 x headroom within min/max, warm-up lead, scale-down hold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, parse_profile
from models.forecast import Forecast
from scaler.plan import FloorHold, in_step_peak, plan_service, step_replicas

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def fc(service: str, start: datetime, p90: Sequence[float], p50: Sequence[float] | None = None) -> Forecast:
    values = np.asarray(p90, dtype=np.float64)
    return Forecast(service=service, model_version="test", start=start, step_seconds=300,
                    p50=values * 0.8 if p50 is None else np.asarray(p50, dtype=np.float64), p90=values)


PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.2, warmup_seconds=120, min_replicas=2, max_replicas=30)


def test_each_step_gets_p90_with_headroom_within_min_and_max() -> None:
    made = fc("checkout", T0, [1, 50, 100, 1000])
    plan = plan_service(made, PROFILE, T0, stabilization_seconds=0)
    # 1 -> below min (2); 50 * 1.2 / 10 = 6; 100 * 1.2 / 10 = 12; 1000 -> capped at max (30)
    assert [s.replicas for s in plan.steps] == [2, 6, 12, 30]
    assert plan.steps[1].request_at == plan.steps[1].start - timedelta(seconds=120)
    step = plan.steps[2]
    per_replica = 100 / 12
    assert step.cpu_cores == pytest.approx(12 * PROFILE.cpu_cores_for(per_replica))
    assert step.memory_bytes == pytest.approx(12 * PROFILE.memory_bytes_for(per_replica))
    assert step.bandwidth_bits == pytest.approx(100 * PROFILE.bytes_per_request * 8)


def test_p50_plans_keep_the_in_step_peak_below_saturation() -> None:
    # Saturation = 8 / 0.8 = 10 req/s per replica; the median's in-step peak is 1.5x the mean.
    profile = CapacityProfile(rps_per_replica=8, target_utilization=0.8, plan_quantile="p50", burst_factor=1.5,
                              headroom=0.0, min_replicas=1, max_replicas=50)
    made = fc("checkout", T0, p90=[1000, 1000, 1000, 1000], p50=[0, 10, 40, 400])
    plan = plan_service(made, profile, T0, stabilization_seconds=0)
    # 10 * 1.5 / 10 = 1.5 -> 2; 40 * 1.5 / 10 = 6; 400 -> capped at 50. The P90 does not size it.
    assert [s.replicas for s in plan.steps] == [1, 2, 6, 50]
    with_headroom = profile.model_copy(update={"headroom": 0.5})
    assert step_replicas(40, 1000, with_headroom) == 9  # 40 * 1.5 * 1.5 / 10


def test_p90_plans_also_cover_a_declared_burst() -> None:
    # P90 rule: 100 * 1.0 / 10 = 10; the burst rule: 80 * 3 / 12.5 = 19.2 -> 20 wins.
    bursty = CapacityProfile(rps_per_replica=10, headroom=0.0, burst_factor=3, max_replicas=100)
    assert step_replicas(80, 100, bursty) == 20
    # With no burst declared the P90 rule is the whole rule (the burst term is never larger).
    assert step_replicas(80, 100, bursty.model_copy(update={"burst_factor": 1.0})) == 10


def test_a_dispersion_margin_covers_quiet_steps_more_than_busy_ones() -> None:
    # Saturation = 8 / 0.8 = 10 req/s per replica; peak = mean + 4 * sqrt(mean).
    profile = CapacityProfile(rps_per_replica=8, plan_quantile="p50", burst_dispersion=4.0, headroom=0.0,
                              max_replicas=100)
    assert in_step_peak(4, profile) == pytest.approx(12)  # 3x a quiet step's mean
    assert in_step_peak(400, profile) == pytest.approx(480)  # 1.2x a busy one's
    made = fc("checkout", T0, p90=[1000] * 4, p50=[0, 4, 100, 400])
    plan = plan_service(made, profile, T0, stabilization_seconds=0)
    # 0 -> min 1; 12 / 10 -> 2; (100 + 40) / 10 = 14; 480 / 10 = 48.
    assert [s.replicas for s in plan.steps] == [1, 2, 14, 48]
    # Beside a ratio, the larger peak sizes the step: 400 * 1.5 = 600 beats 480; 4 * 1.5 = 6 does not beat 12.
    both = profile.model_copy(update={"burst_factor": 1.5})
    assert (step_replicas(400, 1000, both), step_replicas(4, 1000, both)) == (60, 2)
    # A profile without the field plans as before: no dispersion term at all.
    assert CapacityProfile().burst_dispersion == 0.0
    plain = profile.model_copy(update={"burst_dispersion": 0.0})
    assert [step_replicas(m, 1000, plain) for m in (4, 100, 400)] == [1, 10, 40]


def test_a_negative_dispersion_is_refused() -> None:
    with pytest.raises(InvalidInput, match="burst_dispersion"):
        parse_profile({"burst_dispersion": -1}, source="profile.yaml")


def test_floor_rises_exactly_one_warmup_before_the_step_that_needs_it() -> None:
    made = fc("checkout", T0, [10, 10, 10, 100, 10, 10])  # peak at T0 + 15 min
    plan = plan_service(made, PROFILE, T0, stabilization_seconds=0)
    peak = T0 + timedelta(minutes=15)
    assert plan.floor_at(peak - timedelta(seconds=121)) == 2
    assert plan.floor_at(peak - timedelta(seconds=120)) == 12
    assert plan.floor_at(peak + timedelta(minutes=4)) == 12
    assert plan.floor_at(peak + timedelta(minutes=5)) == 2
    assert plan.floor_at(T0 + timedelta(days=1)) == PROFILE.min_replicas  # beyond the horizon
    # With a lead (a planner interval and an HPA sync, for the short-horizon floor) it rises
    # that much earlier.
    early = plan_service(made, PROFILE, T0, stabilization_seconds=0, lead_seconds=75)
    assert early.floor_at(peak - timedelta(seconds=196)) == 2
    assert early.floor_at(peak - timedelta(seconds=195)) == 12


def test_next_peak_and_the_warmup_window_of_pods_created_ahead_of_need() -> None:
    made = fc("checkout", T0, [10, 20, 40, 100, 60, 10])
    plan = plan_service(made, PROFILE, T0, stabilization_seconds=0)
    peak = plan.next_peak()
    assert peak is not None and peak.start == T0 + timedelta(minutes=15)
    # At T0 nothing starting within one warm-up (120 s) needs more than now: no window.
    assert plan.warmup_window() is None
    # A minute before the peak step, the floor is raised for it: pods created now warm up for it.
    before_peak = T0 + timedelta(minutes=14)
    later = plan_service(fc("checkout", T0, [10, 20, 40, 100, 60, 10]), PROFILE, before_peak,
                         stabilization_seconds=0)
    assert later.warmup_window() == (peak.start - timedelta(seconds=120), peak.start)
    # After the peak starts, the pods it needs are no longer "ahead": no window.
    after = plan_service(fc("checkout", T0, [10, 20, 40, 100, 60, 10]), PROFILE, peak.start + timedelta(minutes=1),
                         stabilization_seconds=0)
    assert after.warmup_window() is None
    annotation = plan.annotation(floor=12)
    assert annotation["next_peak"] == "2030-01-01T00:15:00Z"
    assert annotation["peak_tps"] == 100
    assert annotation["replicas"] == 12


def test_stabilization_holds_whole_steps_inside_the_plan() -> None:
    made = fc("checkout", T0, [100, 10, 10, 10])
    held = plan_service(made, PROFILE, T0, stabilization_seconds=600)
    assert [s.replicas for s in held.steps] == [12, 12, 12, 2]


def test_floor_hold_keeps_the_largest_recommendation_of_the_window() -> None:
    hold = FloorHold(300)
    assert hold.update(T0, 10) == 10
    assert hold.update(T0 + timedelta(seconds=60), 3) == 10
    assert hold.update(T0 + timedelta(seconds=300), 3) == 10
    assert hold.update(T0 + timedelta(seconds=301), 3) == 3


@pytest.mark.parametrize(("p90", "why"), [
    ([1.0, float("nan")], "non-finite"),
    ([1.0, -2.0], "negative"),
])
def test_a_bad_forecast_is_refused(p90: list[float], why: str) -> None:
    made = fc("checkout", T0, p90, p50=[1.0, 1.0])
    with pytest.raises(InvalidInput, match=why) as caught:
        plan_service(made, PROFILE, T0, stabilization_seconds=0)
    assert "checkout" in str(caught.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 2000), min_size=1, max_size=30), st.floats(0, 3600))
def test_plans_always_cover_p90_and_respect_bounds(values: list[float], offset: float) -> None:
    made = fc("svc", T0, values)
    plan = plan_service(made, PROFILE, T0, stabilization_seconds=300)
    for step in plan.steps:
        assert PROFILE.min_replicas <= step.replicas <= PROFILE.max_replicas
        if step.p90_tps * 1.2 <= PROFILE.max_replicas * PROFILE.rps_per_replica:
            assert step.replicas * PROFILE.rps_per_replica >= step.p90_tps * 1.2 - 1e-6
    when = T0 + timedelta(seconds=offset)
    assert plan.floor_at(when) >= max([PROFILE.min_replicas] + [
        s.replicas for s in plan.steps if s.request_at <= when < s.start + timedelta(seconds=300)])
    assert np.all(np.diff([s.start.timestamp() for s in plan.steps]) == 300)
