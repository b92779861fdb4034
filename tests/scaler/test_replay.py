"""The replay: demand uniform inside recorded intervals, the HPA on a windowed rate one scrape
late (hand-computed), violations and unserved requests per recorded interval, the oracle."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harbinger.errors import InvalidInput
from scaler.replay import (
    Run,
    Service,
    curve_violations,
    metric_window_seconds,
    observed_rate,
    oracle_alive,
    run_hpa,
    run_oracle,
    score,
)
from scaler.trace import burst_dispersion, burst_factor, load_trace, trace_from_rate

DAY = 86_400


def minutes(*rates: float) -> np.ndarray:
    """Per-tick demand of 1-minute intervals (4 ticks each)."""
    return np.repeat(np.asarray(rates, dtype=np.float64), 4)


def test_demand_is_uniform_inside_each_recorded_interval_and_nothing_is_interpolated() -> None:
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=3, freq="60s")
    trace = trace_from_rate(pd.Series([1.0, 3.0, float("nan")], index=index), 60, name="t")
    assert trace.demand[:8].tolist() == [1.0] * 4 + [3.0] * 4
    assert np.isnan(trace.demand[8:]).all() and len(trace.demand) == 12
    with pytest.raises(InvalidInput, match="whole number"):
        trace_from_rate(pd.Series([1.0, 2.0], index=index[:2]), 50, name="t")


def test_the_hpa_reads_a_one_minute_rate_one_scrape_late() -> None:
    demand = minutes(0, 100, 100)
    seen = observed_rate(demand, 15, 60)
    # At tick t: the mean over ticks [t - 5, t - 1), i.e. [t*15 - 75 s, t*15 - 15 s).
    assert np.isnan(seen[:2]).all()  # nothing seen yet: no metric
    assert seen[2:10].tolist() == [0, 0, 0, 0, 25, 50, 75, 100]
    # A coarser trace cannot show a finer rate: the window is its own interval.
    assert metric_window_seconds(60) == 60 and metric_window_seconds(1800) == 1800
    assert metric_window_seconds(60, 120) == 120
    # Unknown demand is left out; a window with none known is no metric.
    gappy = minutes(10, float("nan"), float("nan"), 30)
    observed = observed_rate(gappy, 15, 60)
    assert observed[5] == 10 and np.isnan(observed[9]) and observed[14] == 30
    with pytest.raises(InvalidInput, match="whole numbers"):
        observed_rate(demand, 15, 50)


def test_a_jump_is_met_late_by_the_delayed_hpa_hand_computed() -> None:
    # Saturation 10 req/s, target 0.5: the HPA aims each pod at 5 req/s; 60 s warm-up.
    # 10 req/s for three minutes (2 pods), then 40 req/s (4 pods at saturation).
    service = Service(saturation=10, warmup_seconds=60, max_replicas=100)
    demand = minutes(10, 10, 10, 40, 40, 40)
    run = run_hpa(demand, observed_rate(demand, 15, 60), 15, service, 0.5, first=8, last=24)
    # Tick 13 still sees 10; 14 sees (3 x 10 + 40) / 4 = 17.5: ratio 1.75 -> ceil(3.5) = 4;
    # 15 sees 25 with 2 of 4 pods ready: the unready count as serving nothing, 25 / 20 = 1.25
    # -> 5; 16: 32.5 / 25 = 1.3 -> ceil(6.5) = 7; 17: 40 / 35 -> 8; 18: 40 / 40 with 4 ready:
    # within tolerance, 8 stays.
    assert run.alive.tolist() == [2, 2, 2, 2, 2, 2, 4, 5, 7, 8, 8, 8, 8, 8, 8, 8]
    # Pods created at 210 s (tick 14) serve from 270 s (tick 18), and so on.
    assert run.ready.tolist() == [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 4, 5, 7, 8, 8, 8]
    figures = score(demand, 4, 15, service, run)
    # Minute 3 (ticks 12-15): 2 ready = 20 < 40; minute 4 (16-19): mean 3.25 ready = 32.5 < 40.
    assert (figures.intervals, figures.violations) == (4, 2)
    # Unserved: 4 ticks x 20 + 2 ticks x 20 of 4 ticks x 10 + 12 x 40 asked for.
    assert figures.unserved_share == pytest.approx(120 / 520)
    assert figures.replica_hours == pytest.approx(sum(run.alive) * 15 / 3600)
    assert figures.changes == 4


def test_within_an_interval_the_mean_ready_capacity_decides_a_violation() -> None:
    service = Service(saturation=10)
    demand = minutes(30)
    # 3 pods all minute: capacity 30, not above. 2, 2, 4, 4 pods ready: mean 30, not above either;
    # 2, 2, 3, 4: mean 27.5 < 30.
    for ready, violations in (([3, 3, 3, 3], 0), ([2, 2, 4, 4], 0), ([2, 2, 3, 4], 1)):
        run = Run(0, np.array([4, 4, 4, 4]), np.array(ready))
        assert score(demand, 4, 15, service, run).violations == violations
    with pytest.raises(InvalidInput, match="does not start"):
        score(demand, 4, 15, service, Run(1, np.array([4, 4, 4]), np.array([4, 4, 4])))


def test_the_oracle_has_each_pod_ready_exactly_when_needed() -> None:
    service = Service(saturation=10, warmup_seconds=30)
    demand = minutes(10, 35, 10)
    alive = oracle_alive(demand, 15, service, 0, 12)
    # 4 pods needed from tick 4: created two ticks (30 s) earlier, removed when no longer needed.
    assert alive.tolist() == [1, 1, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1]
    run = run_oracle(demand, 15, service, 0, 12)
    assert run.ready[4:8].tolist() == [4, 4, 4, 4]
    assert score(demand, 4, 15, service, run).violations == 0


def test_the_hpa_target_changes_its_pods_never_their_capacity() -> None:
    # 100 req/s, a replica saturates at 12.5: at 0.8 (10 req/s per pod) the HPA holds 10 pods,
    # which serve 125 req/s; at 0.5 (6.25 per pod) it holds 16.
    service = Service(saturation=12.5)
    demand = minutes(*([100.0] * 10))
    metric = observed_rate(demand, 15, 60)
    at_80, at_50 = (run_hpa(demand, metric, 15, service, t, 8, 40) for t in (0.8, 0.5))
    assert at_80.alive[-1] == 10 and at_50.alive[-1] == 16
    assert score(demand, 4, 15, service, at_80).violations == 0
    # Without a warm-up every pod serves from its first tick.
    instant = Service(saturation=12.5, warmup_seconds=0)
    jump = minutes(*([10.0] * 3 + [100.0] * 3))
    run = run_hpa(jump, observed_rate(jump, 15, 60), 15, instant, 0.8, 8, 24)
    assert run.alive.max() == 10 and np.array_equal(run.ready, run.alive)
    with pytest.raises(InvalidInput, match="target utilization"):
        run_hpa(demand, metric, 15, service, 1.5, 0, 4)
    with pytest.raises(InvalidInput, match="outside the trace"):
        run_hpa(demand, metric, 15, service, 0.8, 0, 10**6)


def test_the_hpa_curve_is_interpolated_on_a_log_scale_of_violations() -> None:
    curve = [(100.0, 1000.0), (200.0, 10.0), (300.0, 0.0)]
    assert curve_violations(curve, 100) == pytest.approx(1000)
    assert curve_violations(curve, 150) == pytest.approx(100)  # halfway between 1000 and 10 in log
    assert curve_violations(curve, 250) == pytest.approx((10 * 0.5) ** 0.5)  # zero counts as 0.5
    assert curve_violations(curve, 50) == pytest.approx(10_000)  # extrapolated along the nearest segment


def test_figures_on_a_slice_of_a_real_trace(traces_dir: Path) -> None:
    trace = load_trace(traces_dir / "elb_request_count_8c0756.csv")
    per = trace.interval_seconds // 15
    first, last = 8 * DAY // 15, 10 * DAY // 15
    service = Service(saturation=float(np.nanpercentile(trace.demand[:first], 95)) / 20)
    metric = observed_rate(trace.demand, 15, metric_window_seconds(trace.interval_seconds))
    hpa = [score(trace.demand, per, 15, service, run_hpa(trace.demand, metric, 15, service, t, first, last))
           for t in (0.5, 0.9)]
    oracle = score(trace.demand, per, 15, service, run_oracle(trace.demand, 15, service, first, last))
    # Two days of 5-minute intervals, less the absent one.
    assert all(f.intervals == 2 * 288 - 1 for f in (*hpa, oracle))
    assert oracle.violations == 0 and oracle.unserved_share == 0
    # A lower target buys fewer violations with more replica-hours.
    assert hpa[0].violations < hpa[1].violations and hpa[0].replica_hours > hpa[1].replica_hours
    assert oracle.replica_hours < hpa[1].replica_hours


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
    flat = [16.0] * 4  # mean 16, peak 16: 0
    busy = [97.0, 97.0, 97.0, 109.0]  # mean 100, peak 109: 9 / 10 = 0.9
    quiet = [3.0, 3.0, 3.0, 7.0]  # mean 4, peak 7: 3 / 2 = 1.5
    demand = np.array(flat * 10 + busy * 10 + quiet * 10 + [0.0] * 4 + [np.nan, 1.0, 1.0, 1.0] + [7.0])
    assert burst_dispersion(demand, 15, 60) == pytest.approx(1.5)
    assert burst_dispersion(demand, 15, 60, quantile=0.5) == pytest.approx(0.9)
    assert burst_dispersion(demand, 15, 60, quantile=0.2) == pytest.approx(0.0)
    assert burst_dispersion(demand, 15, 15) == 0.0
    with pytest.raises(InvalidInput, match="whole number"):
        burst_dispersion(demand, 15, 50)
