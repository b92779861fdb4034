"""The compiled loops of the serving path against their definitions in plain numpy.

The feature pass has its own test (test_features.py); here: cutting a history window, model
ratios to TPS, the P90 margin's unit, and what happens where numba cannot cache.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import kernels
from models.errors import BadSeries
from models.events import Event
from models.features import Features, FeatureSpec, p90_margin_unit, to_tps
from models.series import regularize
from models.serving import ForecastCore, warm_up
from models.window import window_before

STEP = 900
_NS = 10**9
BASE = pd.Timestamp("2024-01-01", tz="UTC")


@settings(max_examples=200, deadline=None)
@given(slots=st.lists(st.integers(0, 120), max_size=60, unique=True), end_slot=st.integers(0, 130),
       steps=st.integers(1, 60), unknown=st.lists(st.booleans(), min_size=60, max_size=60))
def test_a_window_on_the_grid_is_each_steps_value_or_unknown(slots: list[int], end_slot: int, steps: int,
                                                               unknown: list[bool]) -> None:
    slots = sorted(slots)
    values = np.array([np.nan if unknown[i] else 1.0 + slot for i, slot in enumerate(slots)])
    history = pd.Series(values, index=BASE + pd.to_timedelta(np.array(slots, dtype=np.int64) * STEP, unit="s"))
    end = BASE + pd.Timedelta(seconds=end_slot * STEP)
    expected = np.full(steps, np.nan)
    for slot, value in zip(slots, values, strict=True):
        if end_slot - steps <= slot < end_slot:
            expected[slot - (end_slot - steps)] = value
    values, known = window_before(history, int(end.value), steps, STEP)
    np.testing.assert_array_equal(values, expected)
    assert known == np.count_nonzero(~np.isnan(expected))


def test_a_window_off_the_grid_is_averaged_onto_it() -> None:
    stamps = [BASE + pd.Timedelta(minutes=m) for m in (0, 15, 20, 25, 45)]
    history = pd.Series([1.0, 2.0, 4.0, 6.0, 8.0], index=pd.DatetimeIndex(stamps))
    end = int((BASE + pd.Timedelta(hours=1)).value)
    expected = regularize(history, STEP).reindex(pd.date_range(BASE, periods=4, freq="15min")).to_numpy()
    values, known = window_before(history, end, 4, STEP)
    np.testing.assert_array_equal(values, expected)
    assert values[1] == 4.0 and known == 3  # 15, 20 and 25 minutes past: one step


@pytest.mark.parametrize("bad", [-1.0, np.inf, -np.inf])
def test_a_negative_or_infinite_value_in_the_window_is_refused_by_name(bad: float) -> None:
    history = pd.Series([1.0, bad, 3.0], index=pd.date_range(BASE, periods=3, freq="15min"))
    end = int((BASE + pd.Timedelta(minutes=45)).value)
    with pytest.raises(BadSeries, match="negative or infinite"):
        window_before(history, end, 3, STEP)
    # Outside the window the value is not read.
    values, known = window_before(history, end, 1, STEP)
    assert values.tolist() == [3.0] and known == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratios_to_tps_follow_their_definition(dtype: type) -> None:
    rng = np.random.default_rng(11)
    n, h = 6, 9
    ratio_p50 = rng.normal(1.0, 1.0, n * h).astype(dtype)
    ratio_p90 = (ratio_p50 + rng.normal(0.2, 0.5, n * h)).astype(dtype)
    ratio_p50[[3, 17]] = np.nan
    level = rng.gamma(2.0, 10.0, n)
    volatility = np.array([0.001, 0.3, np.nan, 5.0, 0.05, 1.0])
    multipliers = rng.choice([1.0, 2.5], n * h)
    margins = rng.gamma(2.0, 0.5, n)
    p50, p90 = to_tps(ratio_p50, ratio_p90, Features(np.empty((n * h, 1), np.float32), level, volatility),
                      multipliers, margins)
    unit = np.where(np.isnan(volatility), kernels.UNKNOWN_VOLATILITY,
                    np.clip(volatility, kernels.MIN_VOLATILITY, kernels.MAX_VOLATILITY))
    mid = np.maximum(ratio_p50.reshape(n, h).astype(np.float64), 0.0)
    high = np.maximum(ratio_p90.reshape(n, h) + (margins * unit)[:, None], mid)
    scale = level[:, None] * multipliers.reshape(n, h)
    np.testing.assert_array_equal(p50, mid * scale)
    np.testing.assert_array_equal(p90, high * scale)
    np.testing.assert_array_equal(p90_margin_unit(volatility), unit)
    assert np.isnan(p50[0, 3]) and np.isnan(p90[0, 3])  # an unknown ratio stays unknown, not 0


def test_without_a_writable_cache_each_process_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    # numba refuses cache=True outright where it finds no writable place (a read-only image
    # without NUMBA_CACHE_DIR): the loops are then compiled without a cache, not lost.
    real = numba.njit

    def refusing(**options: Any) -> Any:
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'double': no locator available for file '/ro/x.py'")
        return real(**options)

    monkeypatch.setattr(kernels.numba, "njit", refusing)

    def double(values: np.ndarray) -> float:
        return float(values.sum() * 2)

    assert kernels._compiled(double)(np.ones(3)) == 6.0


def test_after_the_warm_up_no_forecast_path_compiles_again() -> None:
    # numba compiles once per combination of array types, writability included: the first real
    # forecast must find every loop ready, whichever path it takes (pandas' read-only values or a
    # converted copy, the shared no-events multipliers or an event's own, one service or a batch).
    warm_up()
    loops = (kernels.fill_rows, kernels.cut_window, kernels.ratios_to_tps)
    compiled = [len(loop.signatures) for loop in loops]
    spec = FeatureSpec(step_seconds=STEP, seasonality="daily", horizon_steps=8, level_floor=0.1)
    core = ForecastCore("checkout", "v1", spec, 0.5)
    index = pd.date_range(BASE, periods=spec.window_steps, freq="15min")
    history = pd.Series(np.linspace(1.0, 5.0, spec.window_steps), index=index)

    def onnxruntime_like(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(len(rows), dtype=np.float32), np.full(len(rows), 1.5, dtype=np.float32)

    campaign = Event(name="sale", start=index[-1] + pd.Timedelta(hours=1), end=index[-1] + pd.Timedelta(hours=2),
                     multiplier=2.0)
    core.forecast_with(onnxruntime_like, history)
    core.forecast_with(onnxruntime_like, history.astype(np.float32))  # converted: a writable copy
    core.forecast_with(onnxruntime_like, history, events=[campaign])
    request = core.prepare_many([core.window(history), core.window(history, events=[campaign])])
    core.finish_many([core, core], request, np.ones(16), np.full(16, 1.5))  # a batch's float64 ratios
    assert [len(loop.signatures) for loop in loops] == compiled
