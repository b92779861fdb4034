"""The pooled model: one model trained across services, served for each at its own level,
from one graph, chosen per service against its own model by a backtest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import BadRequest, HistoryTooShort, ModelMismatch
from models.evaluation import HARBINGER_OWN, HARBINGER_POOLED, BacktestConfig, backtest
from models.export import write_pooled_dirs
from models.forecast import Forecast
from models.metadata import METADATA_FILE
from models.pooled import OWN, POOLED_CHOICE, choose, for_service, level_floor, pooled_name, train_pooled
from models.serving import ForecastCore, Forecaster, ForecasterBatch
from models.training import TrainedModel, TrainingConfig, train
from tests.models.conftest import FAST

STEP = 900
DAY = 86_400 // STEP


def daily(days: float, scale: float, *, seed: int, end: str = "2024-03-04T00:00Z") -> pd.Series:
    """A daily cycle (night a fifth of the afternoon) at ``scale`` req/s, with 10 % noise."""
    index = pd.date_range(end=pd.Timestamp(end) - pd.Timedelta(seconds=STEP), periods=int(days * DAY),
                          freq=f"{STEP}s")
    hours = (index.hour + index.minute / 60).to_numpy()
    shape = 0.6 - 0.4 * np.cos(2 * np.pi * (hours - 3) / 24)
    noise = np.random.default_rng(seed).lognormal(0.0, 0.1, index.size)
    return pd.Series(scale * shape * noise, index=index)


@pytest.fixture(scope="module")
def pooled() -> TrainedModel:
    return train_pooled({"small": daily(21, 2.0, seed=1), "big": daily(21, 5000.0, seed=2),
                         "mid": daily(10, 60.0, seed=3)}, config=FAST)


def forecast(model: TrainedModel, history: pd.Series) -> Forecast:
    return ForecastCore("svc", "test", model.spec, model.p90_margin).forecast_with(model.predict_ratios, history)


def test_one_model_forecasts_services_at_any_scale(pooled: TrainedModel) -> None:
    assert pooled.service == pooled_name(STEP) and pooled.spec.seasonality == "weekly"
    for scale, seed in ((0.5, 4), (20_000.0, 5)):  # neither scale was in training
        series = daily(22, scale, seed=seed)
        history, actual = series.iloc[:-DAY], series.iloc[-DAY:].to_numpy()
        result = forecast(for_service(pooled, history, FAST), history)
        # Within 15 % of the truth on average, night and day: it learned the shape, not the size.
        assert np.mean(np.abs(result.p50 - actual)) / np.mean(actual) < 0.15
        assert np.mean(result.p90 >= actual) > 0.6


def test_a_new_service_is_served_after_hours_not_days(pooled: TrainedModel) -> None:
    young = daily(0.4, 30.0, seed=6)  # under ten hours
    with pytest.raises(HistoryTooShort):
        train(young, service="young", config=FAST)
    result = forecast(for_service(pooled, young, FAST), young)
    assert result.p50.size == DAY and 0 < result.p50.mean() < 100


def test_histories_at_different_steps_are_refused_by_name() -> None:
    coarse = daily(10, 5.0, seed=7).resample("1800s").mean()
    with pytest.raises(BadRequest, match="coarse"):
        train_pooled({"fine": daily(10, 5.0, seed=8), "coarse": coarse}, config=FAST)
    with pytest.raises(HistoryTooShort):
        train_pooled({"empty": pd.Series([np.nan] * 10, index=daily(10, 1.0, seed=9).index[:10])}, config=FAST)


def test_every_service_it_serves_shares_one_graph_and_one_session(pooled: TrainedModel, tmp_path: Path) -> None:
    histories = {"a": daily(8, 3.0, seed=10), "b": daily(8, 300.0, seed=11)}
    written = write_pooled_dirs(pooled, {name: (tmp_path / name, level_floor(h.to_numpy(), FAST))
                                         for name, h in histories.items()},
                                choices={"a": {"served_by": "pooled", "reason": "short history"}})
    assert written["a"].graph_sha256 == written["b"].graph_sha256 and written["a"].graph_service == pooled.service
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert written["a"].feature_spec["level_floor"] != written["b"].feature_spec["level_floor"]
    batch = ForecasterBatch.load_dirs([tmp_path / "a", tmp_path / "b"])
    assert len({id(f.session) for f in batch.forecasters.values()}) == 1
    forecasts = batch.forecast(histories)
    assert forecasts["b"].p50.mean() > 30 * forecasts["a"].p50.mean()
    assert batch.forecasters["a"].metadata.choice == {"served_by": "pooled", "reason": "short history"}
    # A metadata file that claims the pooled graph for another model's graph is refused.
    text = (tmp_path / "a" / METADATA_FILE).read_text().replace(pooled.service, "pooled-60s")
    (tmp_path / "a" / METADATA_FILE).write_text(text)
    with pytest.raises(ModelMismatch, match=r"harbinger\.service"):
        Forecaster.load(tmp_path / "a")


def test_choose_keeps_the_model_that_forecast_the_last_days_better() -> None:
    series = daily(12, 10.0, seed=12)
    day_values = series.to_numpy()

    def exact(history: pd.Series) -> Forecast:
        origin = len(history)
        return Forecast("s", "v", history.index[-1].to_pydatetime(), STEP, day_values[origin : origin + DAY],
                        day_values[origin : origin + DAY])

    def off(history: pd.Series) -> Forecast:
        flat = np.full(DAY, float(np.nanmean(history.to_numpy())))
        return Forecast("s", "v", history.index[-1].to_pydatetime(), STEP, flat, flat)

    def fails(history: pd.Series) -> Forecast:
        raise HistoryTooShort("too short")

    assert choose(series, exact, off, days=3, horizon_steps=DAY).served_by == OWN
    chosen = choose(series, off, exact, days=3, horizon_steps=DAY)
    assert chosen.served_by == POOLED_CHOICE and chosen.days == 3 and chosen.pooled_error == 0.0
    assert choose(series, None, off, days=3, horizon_steps=DAY).served_by == POOLED_CHOICE
    assert choose(series, fails, off, days=2, horizon_steps=DAY).served_by == POOLED_CHOICE


def test_the_backtest_chooses_on_days_before_the_scored_ones() -> None:
    series = daily(16, 40.0, seed=13)
    pool = {"other": daily(30, 7.0, seed=14, end="2024-03-01T00:00Z")}
    config: TrainingConfig = FAST
    result = backtest(series, service="svc", training=config, pool=pool,
                      config=BacktestConfig(folds=2, validation_folds=2, baselines=("seasonal-naive",)))
    report = result.to_json()
    assert report["served_by"] in (OWN, POOLED_CHOICE) and report["choice"]["days"] == 2
    chosen = HARBINGER_POOLED if report["served_by"] == POOLED_CHOICE else HARBINGER_OWN
    assert report["models"]["harbinger"]["mase"] == report["models"][chosen]["mase"]
    assert report["models"][HARBINGER_POOLED]["mase"] < 1.0  # better than yesterday's same time
    unpooled = backtest(series, service="svc", training=config,
                        config=BacktestConfig(folds=2, baselines=("seasonal-naive",))).to_json()
    assert unpooled["served_by"] == OWN and HARBINGER_OWN not in unpooled["models"]


