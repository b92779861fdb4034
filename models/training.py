"""Training: a regular TPS series (+ events) in, a fitted P50/P90 model out.

The path reads top to bottom in :func:`train`:

1. mark the steps inside scheduled events and learn what undeclared event kinds do;
2. detect the cycle (daily, weekly, none) and fix the feature spec;
3. cut training rows: sampled forecast origins, every horizon step of each;
4. calibrate the P90 (normalised conformalised quantile regression): fit on all but the
   last third of the history, and find the margin that, added to the raw P90 in units of
   the recent volatility, puts 90 % of the held-out actuals at or under it (or the share
   :mod:`models.adaptive` moved the level to, after the previous model's misses). Quantile
   boosting is overconfident on the data it was fitted on. Scaling the P50-P90 band was
   unstable (scales from 0.7 to 6.4 between neighbouring folds of one trace, the band being
   thin); a fixed margin was too wide once fifa's tournament was over;
5. fit the final P50 and P90 on all rows.

Origins are drawn in proportion to their traffic level, so the loss counts requests (the
ratios of a quiet night would otherwise weigh as much as the peak that sizes the cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.errors import BadRequest
from models.estimators import BoostingParams, EstimatorName, make_quantile_estimator
from models.events import Event
from models.features import (
    FeatureSpec,
    build_features,
    event_multipliers,
    inside_events,
    p90_margin_unit,
    sliding_windows,
)
from models.seasonality import SeasonalityReport, detect_seasonality
from models.series import require_history

log = logging.getLogger(__name__)

_NS = 1_000_000_000
P90 = 0.9


@dataclass(frozen=True)
class TrainingConfig:
    estimator: EstimatorName = "hgb"
    params: BoostingParams = field(default_factory=BoostingParams)
    #: Forecast horizon; ``None`` means one day at the series' step.
    horizon_steps: int | None = None
    #: Cap on training rows (origins x horizon steps): bounds time and memory on long traces.
    max_rows: int = 60_000
    #: Share of the latest origins held out to calibrate the P90 band.
    calibration_share: float = 1 / 3
    #: How far one training moves the P90's level per unit of the previous model's miss
    #: (``models.adaptive``; 0 keeps it at 0.9).
    p90_adaptation_rate: float = 0.75
    #: The range the P90's level is kept in: between the held-out median and 99th percentile.
    p90_level_bounds: tuple[float, float] = (0.5, 0.99)
    #: Origins are drawn with probability level ** weight_power (1: the loss counts requests).
    weight_power: float = 1.0
    #: Threads for fitting (OpenMP inside scikit-learn).
    threads: int = 1
    #: The level floor, as a share of the mean TPS (avoids dividing by a silent night).
    level_floor_share: float = 0.01
    seed: int = 0


@dataclass
class TrainedModel:
    service: str
    spec: FeatureSpec
    p50: Any
    p90: Any
    #: Calibrated P90 margin, in units of the recent volatility (see models.features.to_tps).
    p90_margin: float
    training_start: datetime
    training_end: datetime
    seasonality: SeasonalityReport
    n_rows: int
    config: TrainingConfig
    #: The quantile level of the held-out shortfalls ``p90_margin`` was read at (models.adaptive).
    p90_level: float = P90
    #: The held-out shortfalls, to read the margin at another level; None: too little history.
    calibration: Calibration | None = None

    def at_level(self, level: float) -> TrainedModel:
        """This model with its P90 margin read at ``level`` (the same trees)."""
        if self.calibration is None:
            return replace(self, p90_level=level)
        return replace(self, p90_level=level, p90_margin=self.calibration.margin_at(level))

    def predict_ratios(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's raw outputs (ratios to the level) for feature rows ``x``."""
        return (np.asarray(self.p50.predict(x), dtype=np.float64),
                np.asarray(self.p90.predict(x), dtype=np.float64))


def min_training_steps(steps_per_day: int, horizon_steps: int) -> int:
    """Two days of origins' history plus one full horizon of targets."""
    return 2 * steps_per_day + horizon_steps


def train(series: pd.Series, *, service: str | None = None, events: Sequence[Event] = (),
          config: TrainingConfig | None = None, p90_level: float = P90) -> TrainedModel:
    """Fit a forecaster on a regular TPS series (see :mod:`models.series`), its P90 margin
    read at ``p90_level`` (:func:`models.adaptive.next_level`)."""
    config = config or TrainingConfig()
    service = service or str(series.name or "service")
    if not 0.0 < p90_level < 1.0:
        raise BadRequest(f"P90 level {p90_level:g}: it must be between 0 and 1", source=service)
    step = step_seconds_of(series, source=service)
    steps_per_day = 86_400 // step
    horizon = config.horizon_steps or steps_per_day
    if not 1 <= horizon <= 7 * steps_per_day:
        raise BadRequest(f"horizon of {horizon} steps: it must be between 1 step and 7 days")
    require_history(series, min_training_steps(steps_per_day, horizon), step, source=service)

    values = series.to_numpy(dtype=np.float64)
    times_ns = pd.DatetimeIndex(series.index).as_unit("ns").asi8
    floor = level_floor(values, config)

    kind_effects = learn_kind_effects(values, times_ns, events, service, step)
    multipliers = event_multipliers(events, service, times_ns, step, kind_effects, unknown=np.nan)
    base = values / multipliers
    report = detect_seasonality(base, steps_per_day, floor=floor)
    spec = FeatureSpec(step_seconds=step, seasonality=report.seasonality, horizon_steps=horizon,
                       level_floor=floor, kind_effects=kind_effects)
    log.info("%s: %s seasonality (daily autocorrelation %.2f, weekly gain %.2f), step %d s, horizon %d",
             service, report.seasonality, report.daily_autocorrelation, report.weekly_gain, step, horizon)

    rng = np.random.default_rng(config.seed)
    origins = sample_origins(base, spec, config, rng)
    x, y, level, unit, origin_of_row = feature_rows(base, times_ns, origins, spec)
    # One thread: on a shared machine OpenMP's spinning threads made fits 3x slower, and
    # the planner trains many services side by side anyway.
    with threadpool_limits(limits=config.threads):
        fit_rows, held_out = calibration_split(origin_of_row, spec.horizon_steps, config.calibration_share)
        calibration = calibrate_p90(x, y, level, unit, fit_rows, held_out, config)
        p50, p90 = fit_quantiles(x, y, config)
    return TrainedModel(
        service=service, spec=spec, p50=p50, p90=p90, p90_margin=0.0,
        training_start=series.index[0].to_pydatetime(), training_end=series.index[-1].to_pydatetime(),
        seasonality=report, n_rows=int(y.size), config=config, calibration=calibration).at_level(p90_level)


def learn_kind_effects(values: np.ndarray, times_ns: np.ndarray, events: Sequence[Event], service: str,
                       step_seconds: int) -> dict[str, float]:
    """Multiplier per event kind, from past events of that kind that declare none.

    Each past occurrence compares the traffic inside the event with the same steps one
    week earlier (a full cycle, whatever the series' seasonality), or two or three weeks
    earlier where the week before was itself inside an event or unknown. A kind's effect is
    the median over its occurrences; a kind never seen in the history gets none (its steps
    are then unknown in the history and unchanged in the forecast).
    """
    week = 7 * 86_400 // step_seconds
    disturbed = inside_events(events, service, times_ns, step_seconds) | np.isnan(values)
    ratios: dict[str, list[float]] = {}
    for event in events:
        if event.multiplier is not None or event.kind is None or not event.applies_to(service):
            continue
        inside = np.flatnonzero(inside_events([event], service, times_ns, step_seconds) & ~np.isnan(values))
        baseline = np.full(inside.size, -1)
        for weeks_back in (1, 2, 3):
            candidate = inside - weeks_back * week
            valid = (baseline < 0) & (candidate >= 0)
            valid[valid] &= ~disturbed[candidate[valid]]
            baseline[valid] = candidate[valid]
        usable = baseline >= 0
        normal = float(np.sum(values[baseline[usable]]))
        if np.any(usable) and normal > 0:
            ratios.setdefault(event.kind, []).append(float(np.sum(values[inside[usable]])) / normal)
    return {kind: float(np.median(found)) for kind, found in sorted(ratios.items())}


def step_seconds_of(series: pd.Series, *, source: str) -> int:
    """The step of a regular, UTC-indexed series whose step divides a day; refused otherwise."""
    index = series.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None or len(index) < 2:
        raise BadRequest("training needs a regular, UTC-indexed series (use models.series.load_csv)", source=source)
    steps = np.diff(index.as_unit("ns").asi8)
    if np.any(steps != steps[0]) or steps[0] % _NS or 86_400 * _NS % steps[0]:
        raise BadRequest("training needs a regular series whose step divides a day", source=source)
    return int(steps[0] // _NS)


def level_floor(values: np.ndarray, config: TrainingConfig) -> float:
    """TPS below which a service's level is not trusted as a divisor: a share of its mean traffic
    (a silent night would otherwise divide by zero)."""
    known = values[~np.isnan(values)]
    return max(float(known.mean()) * config.level_floor_share if known.size else 0.0, 1e-6)


def sample_origins(values: np.ndarray, spec: FeatureSpec, config: TrainingConfig,
                   rng: np.random.Generator, *, earliest: int | None = None) -> np.ndarray:
    """Origins with at least ``earliest`` steps of history (default: a day), drawn (seeded) with
    probability proportional to ``level ** weight_power``, at most ``max_rows / horizon`` of them, in time order.

    Drawing by level instead of weighting rows gives the same expected loss (it counts
    requests), and the boosting then fits unweighted, which is about three times faster.
    """
    day = spec.steps_per_day
    candidates = np.arange(day if earliest is None else earliest, values.size)
    wanted = max(1, config.max_rows // spec.horizon_steps)
    level = np.maximum(_trailing_mean(values, day)[candidates], spec.level_floor)
    usable = np.isfinite(level)
    candidates, level = candidates[usable], level[usable]
    if candidates.size == 0:
        return np.asarray(candidates)
    if candidates.size <= wanted and config.weight_power == 0:
        return np.asarray(candidates)
    weight = level ** config.weight_power
    # Systematic sampling: evenly spaced points on the cumulative weight, one random offset.
    # Same expectation as independent draws, far less spread between seeds.
    cumulative = np.cumsum(weight) / np.sum(weight)
    points = (rng.uniform() + np.arange(wanted)) / wanted
    return np.asarray(candidates[np.minimum(np.searchsorted(cumulative, points), candidates.size - 1)])


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the ``window`` steps before each index, ignoring NaN (NaN if none known)."""
    known = ~np.isnan(values)
    sums = np.concatenate(([0.0], np.cumsum(np.where(known, values, 0.0))))
    counts = np.concatenate(([0], np.cumsum(known)))
    end = np.arange(values.size + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)[:-1]


def feature_rows(values: np.ndarray, times_ns: np.ndarray, origins: np.ndarray,
                 spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, targets (ratios to the level), level, P90 margin unit and origin of every usable row."""
    h = spec.horizon_steps
    windows = sliding_windows(values, origins, spec.window_steps)
    x, level, volatility = build_features(windows, times_ns[origins], spec)
    target_index = origins[:, None] + np.arange(h)[None, :]
    inside = target_index < values.size
    targets = np.where(inside, values[np.minimum(target_index, values.size - 1)], np.nan)
    y = (targets / level[:, None]).reshape(-1)
    level_of_row = np.repeat(level, h)
    unit_of_row = np.repeat(p90_margin_unit(volatility), h)
    origin_of_row = np.repeat(origins, h)
    keep = ~np.isnan(y) & np.isfinite(level_of_row)
    return x[keep], y[keep], level_of_row[keep], unit_of_row[keep], origin_of_row[keep]


def calibration_split(origin_of_row: np.ndarray, horizon_steps: int,
                      share: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit the calibration P90 on and rows to measure it on: the origins before the last
    ``share`` of them (their targets end before the held-out origins start), and the rest."""
    origins = np.unique(origin_of_row)
    if origins.size < 2:
        none = np.zeros(origin_of_row.shape, dtype=bool)
        return none, none
    cut = origins[int(origins.size * (1 - share))]
    return origin_of_row + horizon_steps <= cut, origin_of_row >= cut


@dataclass(frozen=True)
class Calibration:
    """The held-out shortfalls of the calibration P90 (in margin units), sorted, and their
    cumulative weights: the margin that puts any share of held-out steps at or under the P90."""

    shortfalls: np.ndarray
    cumulative: np.ndarray

    @classmethod
    def of(cls, shortfalls: np.ndarray, weights: np.ndarray) -> Calibration:
        order = np.argsort(shortfalls)
        return cls(shortfalls[order], np.cumsum(weights[order]))

    def margin_at(self, level: float) -> float:
        position = int(np.searchsorted(self.cumulative, level * self.cumulative[-1], side="left"))
        return float(self.shortfalls[min(position, self.shortfalls.size - 1)])


def calibrate_p90(x: np.ndarray, y: np.ndarray, level: np.ndarray, unit: np.ndarray, fit_rows: np.ndarray,
                  held_out: np.ndarray, config: TrainingConfig) -> Calibration | None:
    """The held-out shortfalls of a P90 fitted on earlier origins, in units of ``unit`` (the
    recent volatility): their quantile at 0.9 is the margin that puts 90 % of held-out steps at
    or under the P90. ``None`` (keep the raw P90) when the history is too short to hold out.

    Fits the P90 on ``fit_rows`` (earlier origins) and measures it on ``held_out`` (later ones).
    Rows were drawn by level; weighting them by ``1 / level ** weight_power`` counts every
    step once, as the backtest's coverage does.
    """
    if np.count_nonzero(fit_rows) < 1000 or np.count_nonzero(held_out) < 100:
        log.warning("too little history to calibrate the P90; keeping the raw P90")
        return None
    p90 = make_quantile_estimator(config.estimator, P90, seed=config.seed, params=config.params)
    p90.fit(_fittable(x[fit_rows]), y[fit_rows])
    shortfall = (y[held_out] - p90.predict(x[held_out])) / unit[held_out]
    return Calibration.of(shortfall, 1.0 / level[held_out] ** config.weight_power)


def fit_quantiles(x: np.ndarray, y: np.ndarray, config: TrainingConfig) -> tuple[Any, Any]:
    """The final P50 and P90 regressors, fitted on every row."""
    p50 = make_quantile_estimator(config.estimator, 0.5, seed=config.seed, params=config.params)
    p90 = make_quantile_estimator(config.estimator, P90, seed=config.seed, params=config.params)
    p50.fit(_fittable(x), y)
    p90.fit(_fittable(x), y)
    return p50, p90


def _fittable(x: np.ndarray) -> np.ndarray:
    """``x`` with all-unknown columns set to 0.

    A short history has no value two weeks back in any row; scikit-learn's binning fails on
    a column without a single value. As a constant the column is never split on, so the
    fitted model ignores it, as it should.
    """
    empty = np.all(np.isnan(x), axis=0)
    if not np.any(empty):
        return x
    fixed = x.copy()
    fixed[:, empty] = 0.0
    return fixed


