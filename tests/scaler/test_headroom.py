"""The short-horizon floor: its forecast, the policy learned on history only, and the floor
the replay computes being exactly the one the controller's code computes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from scaler.headroom import (
    DAY,
    FloorPolicy,
    ShortTermFloors,
    controller_floor_ticks,
    floor_ticks,
    horizon_steps,
    lead_seconds,
    learn_policy,
    planner_ticks,
    short_forecasts,
    spread_forecasts,
    spread_windows,
)
from scaler.replay import Service, observed_rate, run_hpa, score
from scaler.trace import load_trace


def daily_jumps(days: int, step: int = 60) -> pd.Series:
    """20 req/s, and every day at 12:00-12:10 a jump to 60 req/s: the delayed HPA is late for it."""
    index = pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=days * DAY // step, freq=f"{step}s")
    minute = index.hour * 60 + index.minute
    values = np.where((minute >= 720) & (minute < 730), 60.0, 20.0)
    return pd.Series(values, index=index, name="jumps")


def test_the_forecast_follows_the_daily_shape_from_the_recent_level() -> None:
    rate = daily_jumps(3).to_numpy()
    forecasts = short_forecasts(rate, 60, 3, level_intervals=1)
    # On day 3, the minute before the jump: the days before say the next minute is 3x this one.
    c = 2 * 1440 + 719
    assert forecasts[c].tolist() == pytest.approx([60.0, 60.0, 60.0])
    # Twice the traffic today: the same shape at today's level.
    doubled = rate.copy()
    doubled[2 * 1440:] *= 2
    assert short_forecasts(doubled, 60, 1)[c, 0] == pytest.approx(120.0)
    # Without a previous day: the level, flat.
    assert short_forecasts(rate, 60, 2)[719].tolist() == [20.0, 20.0]
    # An unknown level is no forecast.
    gappy = rate.copy()
    gappy[100:110] = np.nan
    assert np.isnan(short_forecasts(gappy, 60, 1, level_intervals=5)[109, 0])


def test_the_spread_floor_covers_a_quantile_of_recent_and_same_clock_time_rates() -> None:
    # 5-minute intervals: the recent window is 36 intervals, the seasonal one 18 either side.
    assert spread_windows(300) == (36, 18)
    period = 288
    rate = np.full(3 * period, 10.0)
    rate[period + 100] = 50.0  # one busy interval on day 2
    rate[2 * period - 5 :] = 20.0  # busier from day 2's last five intervals on
    forecasts = spread_forecasts(rate, 300, 2, 0.99)
    # Right after the first busier intervals: their quantile (day 1's windows are all 10).
    assert forecasts[2 * period - 1].tolist() == pytest.approx([20.0, 20.0])
    # Day 3, interval 90 (row 2 x 288 + 89): the windows centred on day 2's and day 1's
    # interval 90 (72..108) hold the 50 on day 2 only; their quantiles (35.6 and 10) averaged are
    # above the recent window's (all 20).
    c = 2 * period + 89
    day2 = float(np.quantile(np.r_[np.full(36, 10.0), 50.0], 0.99))
    assert day2 == pytest.approx(35.6)
    assert forecasts[c, 0] == pytest.approx((day2 + 10.0) / 2)
    # A coarse step without a whole number of intervals a day: the recent window only.
    assert spread_forecasts(np.r_[np.full(10, 1.0), 9.0], 7 * 3600, 1, 0.5)[-1, 0] == pytest.approx(1.0)
    with pytest.raises(InvalidInput, match="quantile"):
        spread_forecasts(rate, 300, 1, 1.0)


def test_where_the_hpa_never_falls_short_nothing_is_added() -> None:
    flat = np.full(3 * 1440, 20.0)
    policy = learn_policy(flat, 60, Service(saturation=1.0))
    assert policy.margin is None and policy.fallback_target == 0.8
    assert "nothing added" in policy.basis
    with pytest.raises(InvalidInput, match="too few"):
        learn_policy(np.ones(2), 60, Service(saturation=1.0))


def test_a_jump_the_delayed_hpa_misses_is_met_by_the_floor_learned_on_earlier_days() -> None:
    rate = daily_jumps(5)
    service = Service(saturation=1.0, warmup_seconds=60, max_replicas=500)
    values = rate.to_numpy()
    training = values[: 4 * 1440]
    policy = learn_policy(training, 60, service)
    assert policy.margin is not None
    # The fifth day, never seen while learning.
    demand = np.repeat(values, 4)
    metric = observed_rate(demand, 15, 60)
    first, last = 4 * 1440 * 4, len(demand)
    hpa = score(demand, 4, 15, service, run_hpa(demand, metric, 15, service, 0.8, first, last))
    floor = controller_floor_ticks(rate, policy, service, 15, first, last)
    harbinger = score(demand, 4, 15, service,
                      run_hpa(demand, metric, 15, service, policy.fallback_target, first, last, floor))
    assert hpa.violations >= 2  # the first minutes of the jump
    assert harbinger.violations == 0
    # The floor is above what the same HPA would hold by itself around the jump only.
    plain = run_hpa(demand, metric, 15, service, policy.fallback_target, first, last)
    above = np.flatnonzero(floor > plain.alive) // 4 % 1440
    assert above.size and above.min() >= 700 and above.max() <= 745


@pytest.mark.parametrize(("trace", "interval"), [("elb_request_count_8c0756", 300), ("nasa", 60)])
def test_the_replays_floor_is_the_controllers_floor(traces_dir: Path, trace: str, interval: int) -> None:
    loaded = load_trace(traces_dir / f"{trace}.csv")
    per = interval // 15
    first = 8 * DAY // 15
    last = first + DAY // 15 // 2
    service = Service(saturation=float(np.nanpercentile(loaded.demand[:first], 95)) / 20, warmup_seconds=90)
    values = loaded.rate.to_numpy(dtype=np.float64, na_value=np.nan)
    for policy in (FloorPolicy(0.7, 0.5, level_intervals=3), FloorPolicy(0.9, 0.3, level_intervals=1, exponent=1.0),
                   FloorPolicy(0.9, 0.0, exponent=1.0, quantile=0.9)):
        forecasts = policy.forecasts(values, interval, horizon_steps(interval, service.warmup_seconds))
        assert policy.margin is not None
        vectorized = floor_ticks(forecasts, policy.margin, service, interval, 15, first, last,
                                 exponent=policy.exponent)
        controller = controller_floor_ticks(loaded.rate, policy, service, 15, first, last)
        assert np.array_equal(vectorized, controller)
        assert vectorized.max() > service.min_replicas
    assert per > 0


def test_the_planner_runs_one_scrape_after_each_minute() -> None:
    assert planner_ticks(0, 20, 15).tolist() == [1, 5, 9, 13, 17]
    assert planner_ticks(6, 12, 15).tolist() == [9]


class MinuteHistory:
    """A HistorySource over one recorded per-minute series: only what had happened by ``end``."""

    def __init__(self, series: pd.Series) -> None:
        self.series = series

    async def history(self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta,
                      step_seconds: int) -> pd.Series:
        if step_seconds != 60:
            raise InvalidInput(f"only 60 s, not {step_seconds}", source="history")
        return self.series.loc[pd.Timestamp(end - lookback) : pd.Timestamp(end - timedelta(seconds=60))]


async def test_the_controllers_floor_rises_a_warmup_and_a_lead_before_the_jump() -> None:
    series = daily_jumps(3)
    floors = ShortTermFloors(MinuteHistory(series), lookback_seconds=2 * DAY)
    profile = CapacityProfile(rps_per_replica=10, warmup_seconds=120, max_replicas=50)  # saturation 12.5
    jump = datetime(2030, 1, 3, 12, 0, tzinfo=UTC)
    ahead = 120 + lead_seconds()

    async def floor_at(when: datetime) -> int:
        result = await floors.plan("svc", "ns", profile, when, stabilization_seconds=300)
        assert result is not None and result.policy.margin is not None
        return result.plan.floor_at(when)

    # Whichever floor was learned (the jump covered from its own time, or the spread of the
    # hours around it), it is raised by a warm-up and a lead before the jump, and only around it.
    assert await floor_at(jump - timedelta(hours=6)) == 2  # 20 req/s: ceil(1.6)
    assert await floor_at(jump - timedelta(seconds=ahead)) >= 5  # 60 req/s: ceil(4.8)
    assert await floor_at(jump + timedelta(hours=6)) == 2
    # A source that cannot give a 60 s or 300 s step: no short-horizon plan, logged, no error.
    assert await ShortTermFloors(MinuteHistory(series.iloc[:1])).plan(
        "svc", "ns", profile, jump, stabilization_seconds=300) is None


def test_a_declared_target_is_the_only_one_learned_for_against_the_whole_curve() -> None:
    rate = daily_jumps(3).to_numpy()
    policy = learn_policy(rate, 60, Service(saturation=1.0, max_replicas=500), targets=(0.7,))
    assert policy.fallback_target == 0.7 and policy.margin is not None
    assert {target for target, _, _ in policy.tried} == {0.7}
