"""Global models: trained across services on the real traces, served from one session, chosen
per service by a validation backtest; and the one vectorised feature pass they rely on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import BadRequest, HistoryTooShort
from models.evaluation import BacktestConfig, backtest
from models.export import export_model
from models.features import FeatureSpec, build_features, feature_plan, sliding_windows
from models.global_model import (
    GLOBAL,
    PER_SERVICE,
    choose_model,
    core_for,
    global_config,
    global_name,
    resample,
    train_global,
)
from models.serving import Forecaster, ForecasterBatch
from models.training import TrainedModel, TrainingConfig, train

Recent = Callable[[str, float], pd.Series]


@pytest.fixture(scope="module")
def pool(recent: Recent) -> dict[str, pd.Series]:
    """Three services at 15 minutes, two weeks each: nasa, elb and fifa."""
    return {name: recent(name, 14) for name in ("nasa", "elb_request_count_8c0756", "fifa")}


@pytest.fixture(scope="module")
def global_daily(pool: dict[str, pd.Series], fast: TrainingConfig) -> TrainedModel:
    return train_global(pool, seasonality="daily", config=global_config(fast))


@pytest.fixture(scope="module")
def global_dir(global_daily: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("global") / global_daily.service
    export_model(global_daily, path)
    return path


def test_one_pass_for_many_windows_equals_one_by_one(recent: Recent) -> None:
    values = recent("nasa", 30).to_numpy()
    spec = FeatureSpec(step_seconds=900, seasonality="weekly", horizon_steps=96, level_floor=0.05)
    origins = np.array([2100, 2300, 2500, 2800])
    windows = sliding_windows(values, origins, spec.window_steps)
    windows[1, 100:400] = np.nan  # an outage inside one window
    times = (np.int64(1_700_000_000) + origins * 900) * 1_000_000_000
    together = build_features(windows, times, spec, 24)
    for i in range(origins.size):
        alone = build_features(windows[i : i + 1], times[i : i + 1], spec, 24)
        np.testing.assert_array_equal(alone.x, together.x[i * 24 : (i + 1) * 24])
        assert alone.level[0] == together.level[i]
    assert together.x.shape == (4 * 24, len(spec.names))
    # The positions the features read are worked out once per layout.
    assert feature_plan(900, "weekly", spec.window_steps, 24) is feature_plan(900, "weekly", spec.window_steps, 24)


def test_features_match_their_definition_on_a_known_window() -> None:
    spec = FeatureSpec(step_seconds=3600, seasonality="daily", horizon_steps=24, level_floor=0.01)
    hours = np.arange(spec.window_steps, dtype=np.float64)
    window = (10.0 + (hours % 24))[None, :]  # every day the same ramp 10..33
    x = build_features(window, np.array([0]), spec, 3).x
    names = spec.names
    level = np.mean(10.0 + np.arange(24))
    assert x[0, names.index("last_step")] == pytest.approx(33.0 / level, rel=1e-6)
    assert x[1, names.index("same_time_1d")] == pytest.approx(11.0 / level, rel=1e-6)
    assert x[2, names.index("hour_of_day")] == 2.0
    # The profile is 3-step smoothed and divided by the mean of its days: (11 + 12 + 13) / 3 / level.
    assert x[2, names.index("profile_days")] == pytest.approx(12.0 / level, rel=1e-6)
    assert x[0, names.index("level_vs_day_before")] == pytest.approx(1.0)


def test_global_spec_round_trips_and_is_marked_global(global_daily: TrainedModel, global_dir: Path) -> None:
    spec = global_daily.spec
    assert spec.level_floor_share is not None and spec.kind_effects == {}
    assert FeatureSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    forecaster = Forecaster.load(global_dir)
    assert forecaster.is_global and forecaster.service == global_name(900, "daily")


def test_global_model_learns_from_every_service_alike(pool: dict[str, pd.Series], fast: TrainingConfig) -> None:
    model = train_global(pool, seasonality="daily", config=global_config(fast))
    # Equal shares: each of the three services gives about a third of the rows, whatever its traffic.
    per_service = global_config(fast).max_rows // 3
    assert 0.6 * 3 * per_service < model.n_rows <= global_config(fast).max_rows
    assert model.p90_margin != 0.0  # calibrated on the last third of each service's origins


def test_batch_serves_services_without_a_model_from_one_global_session(
        global_dir: Path, nasa_model_dir: Path, recent: Recent) -> None:
    batch = ForecasterBatch.load_dirs([nasa_model_dir], global_dirs=[global_dir],
                                      layouts={"cart": (900, "daily"), "search": (900, "daily")})
    base = recent("fifa", 8)
    histories = {"nasa": recent("nasa", 21), "cart": base, "search": base * 40.0}
    forecasts = batch.forecast(histories, horizon_steps=24)
    assert set(forecasts) == {"nasa", "cart", "search"}
    shared = batch.global_models[(900, "daily")]
    assert forecasts["cart"].model_version == shared.model_version == forecasts["search"].model_version
    assert forecasts["nasa"].model_version == batch.forecasters["nasa"].model_version
    # Scale-free: forty times the traffic, forty times the forecast.
    np.testing.assert_allclose(forecasts["search"].p50, 40.0 * forecasts["cart"].p50, rtol=1e-4)
    # The batch answers as the global model does for one service.
    alone = shared.forecast(base, horizon_steps=24, service="cart")
    np.testing.assert_allclose(forecasts["cart"].p50, alone.p50, rtol=1e-5)
    assert alone.service == "cart" and np.all(alone.p90 >= alone.p50)


def test_a_short_history_gets_a_global_forecast(global_dir: Path, recent: Recent, fast: TrainingConfig) -> None:
    young = recent("elb_request_count_8c0756", 2)  # two days: too little to train a model of its own
    with pytest.raises(HistoryTooShort, match="at least"):
        train(young, service="young", config=fast)
    batch = ForecasterBatch.load_dirs([], global_dirs=[global_dir])
    forecast = batch.forecast({"young": young}, horizon_steps=96)["young"]
    assert forecast.service == "young" and forecast.horizon_steps == 96
    today = float(np.nanmean(young.iloc[-96:]))
    assert 0.3 * today < float(np.mean(forecast.p50)) < 3 * today


def test_a_batch_without_a_matching_model_is_refused(nasa_model_dir: Path, global_dir: Path, recent: Recent) -> None:
    with pytest.raises(BadRequest, match="no model"):
        ForecasterBatch.load_dirs([nasa_model_dir]).forecast({"cart": recent("fifa", 8)})
    batch = ForecasterBatch.load_dirs([], global_dirs=[global_dir], layouts={"cart": (1800, "daily")})
    with pytest.raises(BadRequest, match="no global model"):
        batch.forecast({"cart": recent("fifa", 8)})
    with pytest.raises(BadRequest, match="not a global model"):
        ForecasterBatch.load_dirs([], global_dirs=[nasa_model_dir])


def test_choice_is_made_on_a_validation_backtest(pool: dict[str, pd.Series], recent: Recent,
                                                 fast: TrainingConfig) -> None:
    series = recent("nasa", 16)
    others = {name: s for name, s in pool.items() if name != "nasa"}
    choice = choose_model(series, service="nasa", pool=others, training=fast, validation_days=2)
    assert choice.served_by in (GLOBAL, PER_SERVICE) and choice.validation_days == 2
    assert set(choice.validation_mae) == {GLOBAL, PER_SERVICE}
    better = min(choice.validation_mae, key=lambda kind: (choice.validation_mae[kind], kind != GLOBAL))
    assert choice.served_by == better
    short = choose_model(recent("nasa", 3.5), service="nasa", pool=others, training=fast)
    assert short.served_by == GLOBAL and "too short" in short.reason and short.validation_mae == {}


def test_backtest_says_which_model_served(recent: Recent, pool: dict[str, pd.Series], fast: TrainingConfig) -> None:
    series = recent("elb_request_count_8c0756", 10)
    others = {name: s for name, s in pool.items() if name != "elb_request_count_8c0756"}
    for serving in ("global", "per-service"):
        report = backtest(series, config=BacktestConfig(folds=2, baselines=("seasonal-naive",), serving=serving),
                          training=fast, pool=others).to_json()
        harbinger = report["models"]["harbinger"]
        assert harbinger["served_by"] == serving and harbinger["served_by_folds"] == {serving: 2}
        assert {"mase", "smape", "under_p90", "coverage_p90"} <= set(harbinger)


def test_core_for_a_global_model_carries_the_service_and_its_event_effects(global_daily: TrainedModel) -> None:
    core = core_for(global_daily, "cart", kind_effects={"holiday": 0.5})
    assert core.service == "cart" and core.spec.kind_effects == {"holiday": 0.5}
    assert global_daily.spec.kind_effects == {}


def test_resample_averages_whole_steps_only(recent: Recent) -> None:
    series = recent("elb_request_count_8c0756", 2).copy()
    series.iloc[5] = np.nan
    coarse = resample(series, 1800)
    assert coarse is not None
    assert (coarse.index[1] - coarse.index[0]) == pd.Timedelta(minutes=30)
    assert int(coarse.index[0].value) % (1800 * 10**9) == 0
    first = int(np.flatnonzero(series.index == coarse.index[0])[0])
    assert coarse.iloc[0] == pytest.approx(series.iloc[first : first + 2].mean())
    assert coarse.isna().sum() == 1  # the unknown 15 minutes make their half hour unknown
    assert resample(series, 900) is series
    assert resample(series, 1000) is None
