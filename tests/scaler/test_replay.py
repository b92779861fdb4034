"""The replay: the oracle is never under capacity and is the cheapest; the planner, fed
a forecast, beats the HPA on a peak it can see coming; figures on a real trace slice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from scaler.replay import replay, run_hpa, run_oracle
from scaler.trace import burst_dispersion, burst_factor, load_trace, trace_from_rate

DAY = 86_400


def daily_peaks(days: int, step: int = 300) -> pd.Series:
    """A quiet baseline with a sharp daily peak at 12:00: what the HPA is slow for."""
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=days * DAY // step, freq=f"{step}s")
    hours = (index.hour + index.minute / 60).to_numpy()
    values = 20 + 180 * np.exp(-((hours - 12) ** 2) / 0.05)
    return pd.Series(values, index=index, name="peaks")


PROFILE = CapacityProfile(rps_per_replica=10, warmup_seconds=120, max_replicas=200)


def test_trace_demand_is_interpolated_between_interval_midpoints() -> None:
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=3, freq="60s")
    trace = trace_from_rate(pd.Series([1.0, 3.0, float("nan")], index=index), 60, name="t")
    # Midpoints at 30 s (1.0) and 90 s (3.0); ticks every 15 s.
    assert trace.demand[:8].tolist()[:7] == pytest.approx([1.0, 1.0, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert np.isnan(trace.demand[-1])


def test_under_capacity_is_measured_at_saturation_for_every_strategy() -> None:
    # 100 req/s (10 pods at the 10 req/s target), then 109 req/s: a ratio of 1.09 sits inside
    # the HPA's 0.1 tolerance, so it keeps 10 pods, which serve up to 125 req/s at 0.8.
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=24, freq="300s")
    rate = pd.Series([100.0] * 4 + [109.0] * 20, index=index)
    trace = trace_from_rate(rate, 300, name="flat")
    at_80 = CapacityProfile(rps_per_replica=10, target_utilization=0.8, max_replicas=50)
    at_100 = at_80.model_copy(update={"target_utilization": 1.0})
    hpa_80, hpa_100 = (run_hpa(trace, p, 0, len(trace.demand)) for p in (at_80, at_100))
    assert hpa_80.replicas[-1] == hpa_100.replicas[-1] == 10  # the HPA itself does not change
    assert hpa_80.under_minutes == 0
    assert hpa_100.under_minutes > 60  # 10 pods at saturation = 100 req/s < 109
    # The oracle sizes to the same capacity the figures measure: ceil(109 / 12.5) = 9 pods.
    oracle = run_oracle(trace, at_80, 0, len(trace.demand))
    assert oracle.replicas[-1] == 9 and oracle.under_minutes == 0


def test_burst_factor_is_the_traffic_weighted_peak_over_mean_inside_a_step() -> None:
    flat = [10.0] * 4  # peak / mean = 1
    spiky = [5.0, 5.0, 5.0, 25.0]  # mean 10, peak 25: 2.5
    quiet = [0.0, 0.0, 0.0, 0.4]  # mean 0.1, peak 4x: weighs almost nothing
    demand = np.array((flat * 10 + spiky * 10 + quiet * 50) + [np.nan, 1.0, 1.0, 1.0] + [7.0])
    assert burst_factor(demand, 15, 60) == pytest.approx(2.5)
    assert burst_factor(demand, 15, 60, quantile=0.4) == pytest.approx(1.0)
    assert burst_factor(demand, 15, 15) == 1.0  # one tick per step: nothing to peak inside
    assert burst_factor(np.zeros(16), 15, 60) == 1.0
    with pytest.raises(InvalidInput, match="quantile"):
        burst_factor(demand, 15, 60, quantile=1.0)


def test_burst_dispersion_is_the_quantile_of_the_peak_excess_over_the_root_of_the_mean() -> None:
    # Three kinds of step, each as common: (peak - mean) / sqrt(mean) = 0, 1 and 2. A quiet step
    # counts like a busy one, unlike in burst_factor: the root already scales its excess.
    flat = [16.0] * 4  # mean 16, peak 16: 0
    busy = [97.0, 97.0, 97.0, 109.0]  # mean 100, peak 109: 9 / 10 = 0.9
    quiet = [3.0, 3.0, 3.0, 7.0]  # mean 4, peak 7: 3 / 2 = 1.5
    demand = np.array(flat * 10 + busy * 10 + quiet * 10 + [0.0] * 4 + [np.nan, 1.0, 1.0, 1.0] + [7.0])
    assert burst_dispersion(demand, 15, 60) == pytest.approx(1.5)
    assert burst_dispersion(demand, 15, 60, quantile=0.5) == pytest.approx(0.9)
    assert burst_dispersion(demand, 15, 60, quantile=0.2) == pytest.approx(0.0)
    # The learned dispersion planned on a step's mean gives back its peak at that quantile.
    assert 4 + burst_dispersion(demand, 15, 60) * 4 ** 0.5 == pytest.approx(7.0)
    assert burst_dispersion(demand, 15, 15) == 0.0  # one tick per step: nothing to peak inside
    assert burst_dispersion(np.zeros(16), 15, 60) == 0.0
    with pytest.raises(InvalidInput, match="quantile"):
        burst_dispersion(demand, 15, 60, quantile=0.0)
    with pytest.raises(InvalidInput, match="whole number"):
        burst_dispersion(demand, 15, 50)


def test_a_visible_peak_is_met_by_the_planner_and_missed_by_the_hpa(seasonal_naive: Any) -> None:
    rate = daily_peaks(3)
    trace = trace_from_rate(rate, 300, name="peaks")
    first = 2 * DAY // 15
    result = replay(trace, PROFILE, seasonal_naive(300, horizon_steps=48, spread=1.1), first_tick=first)
    assert result.hpa.under_minutes > 5
    assert result.harbinger.under_minutes < 0.1 * result.hpa.under_minutes
    assert result.oracle.under_minutes == 0
    # The cheapest schedule that is never under capacity (the HPA is cheaper by being under).
    assert result.oracle.replica_hours <= result.harbinger.replica_hours
    summary = result.summary()
    assert set(summary) == {"trace", "hpa", "harbinger", "oracle"}
    assert set(summary["hpa"]) == {"under_minutes", "replica_hours", "changes"}  # type: ignore[arg-type]


def test_figures_on_a_slice_of_a_real_trace(traces_dir: Path, seasonal_naive: Any) -> None:
    trace = load_trace(traces_dir / "elb_request_count_8c0756.csv")
    first = 8 * DAY // 15
    history = trace.rate.resample("900s").mean()
    profile = CapacityProfile(rps_per_replica=float(np.nanpercentile(trace.demand[:first], 95)) / 25,
                              max_replicas=1000)
    result = replay(trace, profile, seasonal_naive(900, horizon_steps=96), first_tick=first,
                    last_tick=first + 2 * DAY // 15, history=history)
    for outcome in (result.hpa, result.harbinger, result.oracle):
        assert len(outcome.replicas) == 2 * DAY // 15
        assert np.all(outcome.ready <= outcome.replicas)
        assert 0 <= outcome.under_minutes <= 2 * 24 * 60
    # The planner only ever raises the HPA's floor.
    assert result.harbinger.replica_hours >= result.oracle.replica_hours
    assert result.oracle.under_minutes == 0


def test_a_window_outside_the_trace_is_refused(seasonal_naive: Any) -> None:
    trace = trace_from_rate(daily_peaks(1), 300, name="peaks")
    with pytest.raises(InvalidInput, match="outside the trace"):
        replay(trace, PROFILE, seasonal_naive(300), first_tick=10, last_tick=10**9)
