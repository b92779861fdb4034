"""The P90's adaptive level (models.adaptive): scoring a model's first forecast, moving the level
by its miss, carrying a check until its forecast has arrived, and a backtest that does so."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.adaptive import TARGET, CoverageCheck, carried, next_level, pending, realized_coverage
from models.errors import BadRequest
from models.evaluation import BacktestConfig, backtest
from models.forecast import Forecast
from models.training import Calibration, TrainingConfig, train

START = datetime(2026, 1, 5, tzinfo=UTC)
STEP = 3600
RATE, BOUNDS = 0.75, (0.5, 0.99)


def hourly(values: list[float], start: datetime = START) -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="1h", tz="UTC"), dtype=float)


def check(p90: list[float], level: float = 0.9, start: datetime = START) -> CoverageCheck:
    return CoverageCheck(level, start, STEP, tuple(p90))


def test_coverage_is_the_share_of_arrived_known_steps_at_or_under_the_p90() -> None:
    # Two hours of history before the forecast, then its four steps: 5 <= 5, 7 > 6, unknown, 1 <= 9.
    series = hourly([1.0, 1.0, 5.0, 7.0, float("nan"), 1.0], start=START - timedelta(hours=2))
    assert realized_coverage(check([5.0, 6.0, 8.0, 9.0]), series) == pytest.approx(2 / 3)
    # A NaN P90 (a step the model could not forecast) is not scored either.
    assert realized_coverage(check([5.0, float("nan"), 8.0, 9.0]), series) == 1.0


def test_nothing_arrived_or_another_step_scores_nothing() -> None:
    before = hourly([1.0] * 3, start=START - timedelta(hours=3))
    assert realized_coverage(check([5.0, 6.0]), before) is None
    five_minutes = pd.Series([1.0] * 30, index=pd.date_range(START, periods=30, freq="5min", tz="UTC"))
    assert realized_coverage(check([5.0, 6.0]), five_minutes) is None


def test_the_level_moves_by_the_miss_and_stays_within_its_bounds() -> None:
    arrived = hourly([1.0, 1.0, 9.0, 9.0])  # half the steps over the P90 of 5
    assert next_level(None, arrived, rate=RATE, bounds=BOUNDS) == TARGET
    assert next_level(check([5.0] * 4, level=0.6), arrived, rate=RATE, bounds=BOUNDS) == pytest.approx(0.6 + 0.75 * 0.4)
    assert next_level(check([5.0] * 4), arrived, rate=RATE, bounds=BOUNDS) == 0.99
    low = next_level(check([5.0] * 4, level=0.6), hourly([1.0] * 4), rate=RATE, bounds=BOUNDS)
    assert low == pytest.approx(0.6 - 0.75 * 0.1)
    assert next_level(check([5.0] * 4, level=0.52), hourly([1.0] * 4), rate=RATE, bounds=BOUNDS) == 0.5
    assert next_level(check([5.0] * 4, level=0.7), arrived, rate=0.0, bounds=BOUNDS) == 0.7


def test_a_check_is_carried_until_its_whole_forecast_has_arrived() -> None:
    previous = check([5.0] * 4, level=0.6)
    part = hourly([9.0, 9.0])  # two of its four steps, both missed
    assert pending(previous, part)
    assert next_level(previous, part, rate=RATE, bounds=BOUNDS) == 0.6  # not moved by the first hours
    first = Forecast("svc", "v", START + timedelta(hours=2), STEP, np.ones(4), np.full(4, 3.0))
    assert carried(previous, part, 0.6, first) is previous
    whole = hourly([9.0, 9.0, 1.0, 1.0])
    assert not pending(previous, whole)
    level = next_level(previous, whole, rate=RATE, bounds=BOUNDS)
    assert level == pytest.approx(0.6 + 0.75 * 0.4)
    after = carried(previous, whole, level, first)
    assert after == CoverageCheck(level, first.start, STEP, (3.0, 3.0, 3.0, 3.0))


def test_a_check_round_trips_through_json_and_malformed_ones_are_refused_by_name() -> None:
    made = check([1.5, float("nan"), 2.0], level=0.83)
    data = made.to_json()
    assert data["p90"] == [1.5, None, 2.0]
    back = CoverageCheck.from_json(data)
    assert back.level == 0.83 and back.start == START and back.p90[0] == 1.5 and np.isnan(back.p90[1])
    bad: list[tuple[dict[str, Any], str]] = [
        ({**data, "level": 1.5}, "level 1.5"),
        ({**data, "start": "2026-01-05T00:00:00"}, "no time zone"),
        ({**data, "step_seconds": 0}, "step_seconds 0"),
    ]
    for broken, said in bad:
        with pytest.raises(ValueError, match=said):
            CoverageCheck.from_json(broken)
    with pytest.raises(KeyError):
        CoverageCheck.from_json({k: v for k, v in data.items() if k != "p90"})


def test_a_level_outside_zero_to_one_is_refused_by_name(fast: TrainingConfig) -> None:
    series = hourly([100.0] * 24 * 4)
    with pytest.raises(BadRequest, match=r"P90 level 1\.2: it must be between 0 and 1"):
        train(series, service="svc", config=fast, p90_level=1.2)


def test_the_margin_at_a_level_is_the_weighted_quantile_of_the_shortfalls() -> None:
    rng = np.random.default_rng(3)
    shortfalls, weights = rng.normal(size=500), rng.uniform(0.5, 2.0, size=500)
    calibration = Calibration.of(shortfalls, weights)
    for level in (0.5, 0.9, 0.99):
        order = np.argsort(shortfalls)
        share = np.cumsum(weights[order]) / weights.sum()
        expected = shortfalls[order][np.searchsorted(share, level - 1e-12)]
        assert calibration.margin_at(level) == pytest.approx(expected)
    margins = [calibration.margin_at(level) for level in np.linspace(0.5, 0.99, 20)]
    assert margins == sorted(margins)


def test_a_backtest_brings_the_coverage_towards_ninety_percent_after_a_regime_change(fast: TrainingConfig) -> None:
    """Eleven calm days after five wild weeks: the margin learned on the held-out days, wild and
    calm mixed, misses the calm days' coverage. With the level adapting, the folds after the
    first come closer to 90 %; the P50 is the same."""
    rng = np.random.default_rng(7)
    days = 49
    shape = np.tile(1.0 + 0.5 * np.sin(np.arange(24) * 2 * np.pi / 24), days)
    wild = np.arange(days * 24) < 38 * 24
    noise = np.where(wild, rng.lognormal(0, 0.5, days * 24), rng.lognormal(0, 0.05, days * 24))
    series = hourly(list(100 * shape * noise))
    config = BacktestConfig(folds=7, baselines=())
    fixed = backtest(series, service="calm", config=config, training=replace(fast, p90_adaptation_rate=0.0))
    adapted = backtest(series, service="calm", config=config, training=fast)
    before = [float(np.mean(f.actual <= f.p90["harbinger"])) for f in fixed.folds]
    after = [float(np.mean(f.actual <= f.p90["harbinger"])) for f in adapted.folds]
    assert before[0] == after[0]  # the first fold has nothing to learn from
    assert before[1:] != after[1:]
    assert abs(np.mean(after[1:]) - TARGET) < abs(np.mean(before[1:]) - TARGET)
    np.testing.assert_array_equal(np.concatenate([f.p50["harbinger"] for f in adapted.folds]),
                                  np.concatenate([f.p50["harbinger"] for f in fixed.folds]))
