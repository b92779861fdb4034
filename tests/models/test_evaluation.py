"""Metrics, baselines and the rolling-origin backtest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.baselines import ProphetBaseline, seasonal_naive
from models.evaluation import BacktestConfig, backtest, fold_origins
from models.events import Event
from models.metrics import FoldErrors, mase_scale, pooled_scores
from models.plots import plot_backtest
from models.training import TrainingConfig

#: ``recent(trace, days)``: the last days of a shipped trace (conftest's ``recent`` fixture).
Recent = Callable[[str, float], pd.Series]



def test_metrics_on_a_hand_computed_case() -> None:
    actual = np.array([10.0, 0.0, 4.0, np.nan])
    p50 = np.array([8.0, 0.0, 6.0, 5.0])
    p90 = np.array([9.0, 1.0, 7.0, 9.0])
    scores = pooled_scores([FoldErrors(actual, p50, p90, scale=2.0)])
    assert scores.steps == 3  # the unknown actual is left out
    assert scores.mae == pytest.approx(4 / 3)
    assert scores.mase == pytest.approx(2 / 3)
    # sMAPE: 2*2/18, 0 (both zero), 2*2/10 -> mean in percent
    assert scores.smape == pytest.approx(100 * (4 / 18 + 0 + 4 / 10) / 3)
    assert scores.under_p90 == pytest.approx(1 / 3) and scores.coverage_p90 == pytest.approx(2 / 3)


def test_mase_scale_is_the_in_sample_seasonal_naive_error() -> None:
    history = np.array([1.0, 2.0, 3.0, 2.0, 4.0, np.nan, 3.0])
    # lag 2 pairs: |3-1|, |2-2|, |4-3|, (nan), |3-4| -> mean of 2, 0, 1, 1
    assert mase_scale(history, 2) == pytest.approx(1.0)


def test_seasonal_naive_repeats_the_last_season_and_fills_gaps() -> None:
    history = np.array([1.0, 2.0, 3.0, 10.0, np.nan, 30.0])
    p50, p90 = seasonal_naive(history, horizon=4, season_steps=3)
    # step 1 <- 10, step 2 <- nan -> the season before (2), step 3 <- 30, step 4 <- 10 (two seasons back)
    np.testing.assert_allclose(p50, [10.0, 2.0, 30.0, 10.0])
    assert np.all(p90 >= p50)


def test_fold_origins_tile_the_last_days() -> None:
    origins = fold_origins(n_steps=20 * 96, steps_per_day=96, horizon=96, config=BacktestConfig(folds=3))
    assert origins == [17 * 96, 18 * 96, 19 * 96]  # the last one a full horizon before the end
    # Never fewer than min_train_days of training before an origin.
    assert fold_origins(8 * 96, 96, 96, BacktestConfig(folds=14)) == [7 * 96]


def test_backtest_scores_every_model_and_plots(tmp_path: Path, recent: Recent, fast: TrainingConfig) -> None:
    series = recent("elb_request_count_8c0756", 10)
    result = backtest(series, config=BacktestConfig(folds=2, baselines=("seasonal-naive",)), training=fast)
    report = result.to_json()
    assert set(report["models"]) == {"harbinger", "seasonal-naive-daily", "seasonal-naive-weekly", "seasonal-naive"}
    assert report["folds"] == 2 and report["models"]["seasonal-naive"]["variant"] in ("daily", "weekly")
    for scores in report["models"].values():
        assert {"mase", "smape", "under_p90", "coverage_p90"} <= set(scores)
        assert scores["under_p90"] + scores["coverage_p90"] == pytest.approx(1.0)
    path = plot_backtest(result, tmp_path / "elb.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prophet_baseline_gets_the_same_events(recent: Recent) -> None:
    series = recent("elb_request_count_8c0756", 9)
    start = series.index[-40]
    events = [Event(name="promo", kind="promo", start=start.to_pydatetime(),
                    end=(start + pd.Timedelta(hours=3)).to_pydatetime())]
    prophet = ProphetBaseline().fit(series.iloc[:-10], events, "elb")
    assert prophet.regressors == ["event_promo"]
    future = pd.date_range(series.index[-10], periods=10, freq="15min")
    p50, p90 = prophet.predict(future)
    assert p50.shape == (10,) and np.all(p90 >= p50) and np.all(p50 >= 0)
