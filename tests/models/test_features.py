"""The vectorised feature pass against the definitions written out one origin at a time."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import PROFILE_DAYS, PROFILE_WEEKS, FeatureSpec, build_features

STEP = 3600
DAY = 24


def _mean(values: np.ndarray) -> float:
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else float("nan")


def _median(values: np.ndarray) -> float:
    known = values[~np.isnan(values)]
    return float(np.median(known)) if known.size else float("nan")


def _reference(window: np.ndarray, origin_s: int, spec: FeatureSpec, h: int) -> dict[str, np.ndarray]:
    """Each feature from its definition (features.py's docstrings), with plain indexing."""
    m = window.size

    def day_mean(back: int) -> float:  # the mean of the day ``back`` days before the last, if mostly known
        day = window[m - (back + 1) * DAY : m - back * DAY]
        return _mean(day) if np.count_nonzero(~np.isnan(day)) * 4 >= DAY else float("nan")

    last_day = max(_mean(window[m - DAY :]) if not np.isnan(day_mean(0)) else _mean(window), spec.level_floor)
    level = last_day
    if spec.seasonality == "weekly" and not np.isnan(week := _median(np.array([day_mean(d) for d in range(7)]))):
        level = max(week, spec.level_floor)
    rows: dict[str, list[float]] = {name: [] for name in spec.names}
    for j in range(h):
        back = m + j - (j // DAY + 1) * DAY  # the nearest same time of day already seen

        def smoothed(p: int) -> float:
            return _mean(np.array([window[q] for q in (p - 1, p, p + 1) if 0 <= q < m]))

        days = np.array([smoothed(back - d * DAY) for d in range(PROFILE_DAYS)])
        weeks = np.array([smoothed(m + j - (r + 1) * 7 * DAY) for r in range(PROFILE_WEEKS)])
        values = {
            "horizon_step": j + 1.0, "last_step": window[-1] / level, "recent_1h": window[-1] / level,
            "last_day_vs_level": last_day / level,
            "hour_of_day": ((origin_s + j * STEP) % 86_400) / 3600.0,
            "day_of_week": float(((origin_s + j * STEP) // 86_400 + 3) % 7),
            "same_time_1d": window[back] / level, "same_time_2d": window[back - DAY] / level,
            "same_time_1w": window[m + j - 7 * DAY] / level, "same_time_2w": window[m + j - 14 * DAY] / level,
            "profile_days": _median(days) / max(_mean(window[m - PROFILE_DAYS * DAY :]), spec.level_floor),
            "profile_weeks": _median(weeks) / level,
        }
        for name in rows:
            if name in values:
                rows[name].append(values[name])
    return {name: np.array(found) for name, found in rows.items() if found}


@pytest.mark.parametrize("seasonality", ["none", "daily", "weekly"])
@pytest.mark.parametrize("h", [1, 24, 60])
@pytest.mark.parametrize("gaps", [True, False], ids=["unknown-steps", "all-known"])
def test_batch_features_match_their_definitions(seasonality: str, h: int, gaps: bool) -> None:
    spec = FeatureSpec(step_seconds=STEP, seasonality=seasonality, horizon_steps=72, level_floor=0.05)  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    windows = rng.gamma(2.0, 1.0, (4, spec.window_steps))
    if gaps:  # the counting path; without gaps, the path that takes the counts from the plan
        windows[rng.random(windows.shape) < 0.15] = np.nan
        windows[1, -20:] = np.nan  # the last day mostly unknown: the level falls back to the window's mean
        windows[2, :3] = np.nan  # a profile point's outer neighbour off the window's start
        windows[3, -3 * DAY : -2 * DAY] = np.nan  # a day unknown: the weekly level is the median of six
    origins_s = 1_700_000_000 + np.arange(4) * 4_000
    x = build_features(windows, origins_s * 10**9, spec, h).x.reshape(4, h, -1)
    for i in range(4):
        expected = _reference(windows[i, :], int(origins_s[i]), spec, h)
        for name, values in expected.items():
            column = spec.names.index(name)
            np.testing.assert_allclose(x[i, :, column], values, rtol=2e-6, equal_nan=True,
                                       err_msg=f"origin {i}, feature {name}")


def test_one_window_and_a_batch_give_the_same_rows() -> None:
    spec = FeatureSpec(step_seconds=900, seasonality="weekly", horizon_steps=96, level_floor=0.01)
    rng = np.random.default_rng(3)
    windows = rng.gamma(2.0, 1.0, (5, spec.window_steps))
    origins = (1_700_000_000 + np.arange(5) * 900) * 10**9
    batch = build_features(windows, origins, spec, 24).x.reshape(5, 24, -1)
    for i in range(5):
        single = build_features(windows[i : i + 1], origins[i : i + 1], spec, 24).x
        np.testing.assert_array_equal(single, batch[i])
    # A batch with an unknown step somewhere counts known steps for every window: the fully known
    # ones get the very same rows as alone, where the counts come from the plan.
    gappy = windows.copy()
    gappy[0, 100] = np.nan
    counted = build_features(gappy, origins, spec, 24).x.reshape(5, 24, -1)
    for i in range(1, 5):
        np.testing.assert_array_equal(counted[i], batch[i])
