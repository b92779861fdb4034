"""The forecast cache: horizon arithmetic, and :class:`ModelForecasts` running a real model
(trained here on the tail of the nasa trace, exported to ONNX, served by onnxruntime)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from harbinger_dev.traces import load_trace
from models.errors import BadEvents
from models.estimators import BoostingParams
from models.export import export_model
from models.serving import Forecaster
from models.training import TrainingConfig, train
from webhooks import metrics
from webhooks.forecasts import ModelForecasts, StaticForecasts

if TYPE_CHECKING:
    from conftest import World


async def test_peak_is_the_highest_p90_still_ahead(world: World) -> None:
    start = world.now
    cache = StaticForecasts([world.forecast("web", [5, 9, 3, 7], start=start, step_seconds=60)])
    peaks = []
    for minute in (-5, 0, 1, 2, 3, 4):
        outlook = await cache.outlook("shop", "web", start + timedelta(minutes=minute, seconds=30))
        peaks.append(outlook.peak_p90_tps if outlook else None)
    assert peaks == [9, 9, 9, 7, 7, None]
    nan = StaticForecasts([world.forecast("nan", [float("nan"), -1.0])])
    assert (await nan.outlook("shop", "nan", world.now)) is not None
    assert (await nan.outlook("shop", "nan", world.now)).peak_p90_tps == 0.0  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.Series]:
    """A small real model: six days of nasa, an 8-step horizon, few trees (about a second)."""
    history = load_trace("nasa").iloc[-96 * 6:]
    models_dir = tmp_path_factory.mktemp("models")
    # One thread: OpenMP spinning on a shared 2-core machine costs far more than it gives.
    with threadpool_limits(1):
        model = train(history, service="nasa", config=TrainingConfig(
            max_rows=1500, horizon_steps=8, params=BoostingParams(max_iter=20, min_samples_leaf=20)))
    export_model(model, models_dir / "shop" / "nasa")
    return models_dir, history


class TraceHistory:
    """A history source that serves a fixed series and counts the calls."""

    def __init__(self, series: pd.Series) -> None:
        self.series = series
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def history(
        self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta, step_seconds: int
    ) -> pd.Series:
        self.calls += 1
        if self.gate:
            await self.gate.wait()
        return self.series


async def test_a_miss_runs_the_model_inline_then_hits(trained: tuple[Path, pd.Series]) -> None:
    models_dir, history = trained
    source = TraceHistory(history)
    provider = ModelForecasts(models_dir, source, miss_budget_seconds=30)
    await provider.start()
    try:
        assert provider.ready()
        now = history.index[-1].to_pydatetime() + timedelta(minutes=20)  # inside the first forecast step
        assert await provider.outlook("shop", "checkout", now) is None  # no model for it: nothing is run
        assert source.calls == 0
        outlook = await provider.outlook("shop", "nasa", now)
        expected = Forecaster.load(models_dir / "shop" / "nasa").forecast(history)
        assert outlook is not None
        assert outlook.model_version == expected.model_version
        assert outlook.peak_p90_tps == pytest.approx(float(np.max(expected.p90)))
        hits = metrics.FORECAST_LOOKUPS.labels("hit")._value.get()
        assert await provider.outlook("shop", "nasa", now) == outlook
        assert metrics.FORECAST_LOOKUPS.labels("hit")._value.get() == hits + 1
        assert source.calls == 1
    finally:
        await provider.stop()


async def test_concurrent_misses_share_one_run_and_a_spent_budget_fills_the_cache_later(
    trained: tuple[Path, pd.Series]
) -> None:
    models_dir, history = trained
    source = TraceHistory(history)
    source.gate = asyncio.Event()
    provider = ModelForecasts(models_dir, source, miss_budget_seconds=0.05)
    await provider.start()
    try:
        now = history.index[-1].to_pydatetime() + timedelta(minutes=1)
        answers = await asyncio.gather(*(provider.outlook("shop", "nasa", now) for _ in range(5)))
        assert answers == [None] * 5  # the budget ran out: these pods go unstamped
        assert source.calls == 1
        source.gate.set()
        for _ in range(200):
            if provider.cached("shop", "nasa", now):
                break
            await asyncio.sleep(0.05)
        assert provider.cached("shop", "nasa", now) is not None
        assert source.calls == 1
    finally:
        await provider.stop()


async def test_a_broken_model_is_not_retried_on_every_pod(tmp_path: Path, trained: tuple[Path, pd.Series]) -> None:
    _, history = trained
    (tmp_path / "shop" / "broken").mkdir(parents=True)
    (tmp_path / "shop" / "broken" / "model.onnx").write_bytes(b"not a graph")
    (tmp_path / "shop" / "broken" / "metadata.json").write_text("{not json")
    source = TraceHistory(history)
    provider = ModelForecasts(tmp_path, source, miss_budget_seconds=5, refresh_seconds=3600)
    await provider.start()
    try:
        errors = metrics.FORECAST_RUNS.labels("error")._value.get()
        now = history.index[-1].to_pydatetime()
        assert await provider.outlook("shop", "broken", now) is None
        assert metrics.FORECAST_RUNS.labels("error")._value.get() == errors + 1
        assert await provider.outlook("shop", "broken", now) is None
        assert metrics.FORECAST_RUNS.labels("error")._value.get() == errors + 1  # not run again
        assert await provider.outlook("shop", "../escape", now) is None  # never a path outside models_dir
    finally:
        await provider.stop()


async def test_background_refresh_picks_up_new_models_and_reruns_wanted_ones(
    tmp_path: Path, trained: tuple[Path, pd.Series]
) -> None:
    models_dir, history = trained
    source = TraceHistory(history)
    provider = ModelForecasts(tmp_path, source, miss_budget_seconds=5, refresh_seconds=0.05)
    await provider.start()
    try:
        now = history.index[-1].to_pydatetime()
        assert await provider.outlook("shop", "nasa", now) is None  # not trained yet
        (tmp_path / "shop").mkdir()
        (tmp_path / "shop" / "nasa").symlink_to(models_dir / "shop" / "nasa", target_is_directory=True)
        for _ in range(200):
            if await provider.outlook("shop", "nasa", now):
                break
            await asyncio.sleep(0.05)
        assert await provider.outlook("shop", "nasa", now) is not None
        calls = source.calls
        for _ in range(200):  # the refresher re-runs the model for a service that was asked for
            if source.calls > calls:
                break
            await asyncio.sleep(0.05)
        assert source.calls > calls
    finally:
        await provider.stop()


async def test_a_declared_event_moves_the_stamped_peak_and_a_bad_events_file_keeps_the_last_good_one(
    tmp_path: Path, trained: tuple[Path, pd.Series]
) -> None:
    models_dir, history = trained
    now = history.index[-1].to_pydatetime() + timedelta(minutes=20)
    plain = Forecaster.load(models_dir / "shop" / "nasa").forecast(history)
    events_file = tmp_path / "events.yaml"
    # A campaign over the whole forecast horizon, expected to triple the traffic.
    begin, end = plain.start.isoformat(), (plain.start + timedelta(days=1)).isoformat()
    events_file.write_text(f"events:\n  - {{name: launch, start: '{begin}', end: '{end}', multiplier: 3}}\n")
    provider = ModelForecasts(models_dir, TraceHistory(history), miss_budget_seconds=30, refresh_seconds=0.05,
                              events_file=events_file)
    await provider.start()
    try:
        outlook = await provider.outlook("shop", "nasa", now)
        assert outlook is not None
        assert outlook.peak_p90_tps == pytest.approx(3 * float(np.max(plain.p90)), rel=1e-6)
        # Broken while running: the refresher logs and keeps the campaign.
        events_file.write_text("events:\n  - {name: launch, start: nonsense}\n")
        await asyncio.sleep(0.3)
        assert [e.name for e in provider.events] == ["launch"]
        assert (await provider.outlook("shop", "nasa", now)) == outlook
    finally:
        await provider.stop()

    broken = ModelForecasts(models_dir, TraceHistory(history), events_file=events_file)
    with pytest.raises(BadEvents, match=r"events\.yaml"):
        await broken.start()  # bad at start: refused, never silently without events


async def test_each_namespace_has_its_own_model_and_the_flat_layout_is_still_read(
    tmp_path: Path, trained: tuple[Path, pd.Series], caplog: pytest.LogCaptureFixture,
) -> None:
    models_dir, history = trained
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "nasa").symlink_to(models_dir / "shop" / "nasa", target_is_directory=True)
    source = TraceHistory(history)
    provider = ModelForecasts(tmp_path, source, miss_budget_seconds=30)
    await provider.start()
    try:
        now = history.index[-1].to_pydatetime() + timedelta(minutes=20)
        assert await provider.outlook("shop", "nasa", now) is not None
        # Another team's "nasa" has no model of its own: it is not given shop's forecast.
        assert await provider.outlook("blog", "nasa", now) is None
        # A model in the layout of earlier releases serves every namespace, with a warning.
        (tmp_path / "legacy").symlink_to(models_dir / "shop" / "nasa", target_is_directory=True)
        await asyncio.to_thread(provider._scan)
        assert await provider.outlook("blog", "legacy", now) is not None
        assert "flat layout" in caplog.text
    finally:
        await provider.stop()
