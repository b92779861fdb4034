"""Shared fixtures for the forecaster's tests: real traces, cut short so training stays fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from harbinger_dev.traces import load_trace
from models.estimators import BoostingParams
from models.export import export_model
from models.training import TrainedModel, TrainingConfig, train

#: Small but real: a few thousand rows and 30 boosting rounds train in a fraction of a second.
FAST = TrainingConfig(max_rows=6000, params=BoostingParams(max_iter=30))

LoadTrace = Callable[[str], pd.Series]


@pytest.fixture(scope="session")
def trace(traces_dir: Path) -> LoadTrace:
    """``trace(name)``: a shipped trace as a regular TPS series (fails if the traces are missing)."""
    cache: dict[str, pd.Series] = {}

    def load(name: str) -> pd.Series:
        if name not in cache:
            cache[name] = load_trace(name)
        return cache[name]

    return load


def last_days(series: pd.Series, days: float) -> pd.Series:
    return series[series.index >= series.index[-1] - pd.Timedelta(days=days)]


@pytest.fixture(scope="session")
def recent(trace: LoadTrace) -> Callable[[str, float], pd.Series]:
    """``recent(name, days)``: the last ``days`` of a shipped trace."""
    return lambda name, days: last_days(trace(name), days)


@pytest.fixture(scope="session")
def fast() -> TrainingConfig:
    return FAST


@pytest.fixture(scope="session")
def nasa_model(trace: LoadTrace) -> TrainedModel:
    """A model trained on the last three weeks of nasa (weekly seasonality detected)."""
    return train(last_days(trace("nasa"), 21), service="nasa", config=FAST)


@pytest.fixture(scope="session")
def nasa_model_dir(nasa_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "nasa"
    export_model(nasa_model, path)
    return path
