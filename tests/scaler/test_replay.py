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
from scaler.replay import replay
from scaler.trace import load_trace, trace_from_rate

DAY = 86_400


def daily_peaks(days: int, step: int = 300) -> pd.Series:
    """A quiet baseline with a sharp daily peak at 12:00: what the HPA is slow for."""
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=days * DAY // step, freq=f"{step}s")
    hours = (index.hour + index.minute / 60).to_numpy()
    values = 20 + 180 * np.exp(-((hours - 12) ** 2) / 0.5)
    return pd.Series(values, index=index, name="peaks")


PROFILE = CapacityProfile(rps_per_replica=10, warmup_seconds=120, max_replicas=200)


def test_trace_demand_is_interpolated_between_interval_midpoints() -> None:
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=3, freq="60s")
    trace = trace_from_rate(pd.Series([1.0, 3.0, float("nan")], index=index), 60, name="t")
    # Midpoints at 30 s (1.0) and 90 s (3.0); ticks every 15 s.
    assert trace.demand[:8].tolist()[:7] == pytest.approx([1.0, 1.0, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert np.isnan(trace.demand[-1])


def test_a_visible_peak_is_met_by_the_planner_and_missed_by_the_hpa(seasonal_naive: Any) -> None:
    rate = daily_peaks(3)
    trace = trace_from_rate(rate, 300, name="peaks")
    first = 2 * DAY // 15
    result = replay(trace, PROFILE, seasonal_naive(300, horizon_steps=48, spread=1.1), first_tick=first)
    assert result.hpa.under_minutes > 10
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
