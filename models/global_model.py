"""Global models: one model trained across many services, served from one session for all.

A per-service model learns one service's habits from that service's history alone: it
needs days of history before it can answer, and every service costs its own ONNX graph
and session (about 1.2 MiB resident each). The features are scale-free (every traffic
value and the target are ratios to the window's recent level, see :mod:`models.features`),
so one model can learn from many services at once, the way global gradient-boosting
forecasters are used in practice:

* **one model per layout**: a layout is a step and a seasonality class (daily, weekly,
  none), because the features differ between classes. A cluster needs a few global
  models, not one per service;
* **rows from every service, weighted alike**: each service contributes the same number
  of origins, drawn within the service in proportion to its level (the loss counts a
  service's requests, not its quiet nights), so a large service does not drown a small one;
* **level floor relative to each window** (``FeatureSpec.level_floor_share``): a global
  model cannot carry one service's absolute floor;
* **P90 calibration** as for one service (see :mod:`models.training`), the held-out part
  being the last third of each service's origins.

The result is an ordinary :class:`~models.training.TrainedModel`, exported with
:func:`models.export.export_model` and loaded with :class:`models.serving.Forecaster`;
:class:`models.serving.ForecasterBatch` serves every service without a model of its own
from the global model of its layout, in one ``session.run``.

Which model serves a service is measured, not chosen by hand: :func:`choose_model` runs
both on the last days of the service's history (a rolling-origin backtest inside the
training history) and keeps the per-service model only where it forecast better.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.errors import BadRequest, HistoryTooShort
from models.estimators import make_quantile_estimator
from models.events import Event
from models.features import FeatureSpec, event_multipliers
from models.seasonality import Seasonality, SeasonalityReport, detect_seasonality
from models.serving import ForecastCore
from models.training import (
    P90,
    TrainedModel,
    TrainingConfig,
    calibrate_p90_margin,
    feature_rows,
    fittable,
    learn_kind_effects,
    min_training_steps,
    sample_origins,
    step_seconds_of,
    train,
)

log = logging.getLogger(__name__)

_NS = 1_000_000_000
#: A global model's level floor: this share of each window's own mean TPS.
GLOBAL_FLOOR_SHARE = 0.01
#: Rows for a global model, all services together (each gets an equal share): a third more
#: than one service's model (60,000 by default), as it learns from several.
GLOBAL_ROWS_FACTOR = 4 / 3
GLOBAL: Final = "global"
PER_SERVICE: Final = "per-service"
ServedBy = Literal["global", "per-service"]
#: Days at the end of a service's history on which the two models are compared.
VALIDATION_DAYS = 7


def global_config(training: TrainingConfig | None = None) -> TrainingConfig:
    """A global model's training configuration, from a per-service one (more rows)."""
    training = training or TrainingConfig()
    return replace(training, max_rows=round(training.max_rows * GLOBAL_ROWS_FACTOR))


def global_spec(step_seconds: int, seasonality: Seasonality, horizon_steps: int,
                level_week_share: float = 0.0) -> FeatureSpec:
    """The feature spec of the global model for one layout."""
    return FeatureSpec(step_seconds=step_seconds, seasonality=seasonality, horizon_steps=horizon_steps,
                       level_floor=0.0, level_floor_share=GLOBAL_FLOOR_SHARE, level_week_share=level_week_share)


def global_name(step_seconds: int, seasonality: Seasonality) -> str:
    """The service name a global model is exported under, e.g. ``global-weekly-900s``."""
    return f"{GLOBAL}-{seasonality}-{step_seconds}s"


def resample(series: pd.Series, step_seconds: int) -> pd.Series | None:
    """``series`` (TPS) averaged onto a coarser, epoch-aligned step; a step is known only when
    every step inside it is. ``None`` when the series' own step does not divide ``step_seconds``."""
    own = step_seconds_of(series)
    if own == step_seconds:
        return series
    if step_seconds % own:
        return None
    ratio = step_seconds // own
    times = pd.DatetimeIndex(series.index).as_unit("ns").asi8
    first = int(np.argmax(times % (step_seconds * _NS) == 0))
    values = series.to_numpy(dtype=np.float64)[first:]
    usable = values.size // ratio * ratio
    if usable == 0:
        return None
    means = values[:usable].reshape(-1, ratio).mean(axis=1)  # NaN if any sub-step is unknown
    index = pd.date_range(series.index[first], periods=means.size, freq=pd.Timedelta(seconds=step_seconds))
    return pd.Series(means, index=index, name=series.name)


def train_global(histories: Mapping[str, pd.Series], *, seasonality: Seasonality, step_seconds: int | None = None,
                 horizon_steps: int | None = None, events: Mapping[str, Sequence[Event]] | None = None,
                 config: TrainingConfig | None = None, name: str | None = None,
                 point_only: bool = False) -> TrainedModel:
    """One model for the layout (``step_seconds``, ``seasonality``) from every service in ``histories``.

    Series at a finer step are averaged onto ``step_seconds`` (default: the first series'
    step); series at a coarser one, or with less than a day and a horizon, are left out.
    ``events`` (per service) are taken out of each service's history as in :func:`train`.
    ``point_only`` fits the P50 alone (the P90 is the P50): what a model comparison needs.
    """
    config = config or global_config()
    if not histories:
        raise BadRequest("a global model needs the history of at least one service")
    step = step_seconds or step_seconds_of(next(iter(histories.values())))
    day = 86_400 // step
    horizon = horizon_steps or config.horizon_steps or day
    spec = global_spec(step, seasonality, horizon, config.level_week_share)
    events = events or {}
    prepared: list[tuple[str, np.ndarray, np.ndarray]] = []
    for service, series in histories.items():
        regular = resample(series, step)
        if regular is None or int(regular.notna().sum()) < day + horizon:
            log.info("global %s: %s left out (step or history too short)", global_name(step, seasonality), service)
            continue
        values = regular.to_numpy(dtype=np.float64)
        times_ns = pd.DatetimeIndex(regular.index).as_unit("ns").asi8
        own = events.get(service, ())
        effects = learn_kind_effects(values, times_ns, own, service, step)
        prepared.append((service, values / event_multipliers(own, service, times_ns, step, effects, unknown=np.nan),
                         times_ns))
    if not prepared:
        raise HistoryTooShort(f"no service has a day and a horizon of history at a step of {step} s",
                              source=global_name(step, seasonality))
    rng = np.random.default_rng(config.seed)
    share = replace(config, max_rows=max(horizon, config.max_rows // len(prepared)))
    parts: list[tuple[np.ndarray, ...]] = []
    for _service, base, times_ns in prepared:
        mean = float(np.nanmean(base))
        own_spec = replace(spec, level_floor=max(mean * GLOBAL_FLOOR_SHARE, 1e-6))
        origins = sample_origins(base, own_spec, share, rng)
        if origins.size == 0:
            continue
        x, y, level, unit, origin_of_row = feature_rows(base, times_ns, origins, spec)
        # Held out for the P90 calibration: the last third of this service's origins.
        chosen = np.unique(origin_of_row)
        cut = chosen[int(chosen.size * (1 - config.calibration_share))] if chosen.size > 1 else chosen[-1] + 1
        parts.append((x, y, level / max(mean, 1e-9), unit, origin_of_row + horizon <= cut, origin_of_row >= cut))
    x, y, relative_level, unit, fit_rows, held_out = (np.concatenate(columns) for columns in zip(*parts, strict=True))
    with threadpool_limits(limits=config.threads):
        p50 = make_quantile_estimator(config.estimator, 0.5, seed=config.seed, params=config.params)
        p50.fit(fittable(x), y)
        if point_only:
            p90: Any = p50
            margin = 0.0
        else:
            weight = 1.0 / np.maximum(relative_level, 1e-9) ** config.weight_power
            margin = calibrate_p90_margin(x, y, unit, weight, fit_rows, held_out, config)
            p90 = make_quantile_estimator(config.estimator, P90, seed=config.seed, params=config.params)
            p90.fit(fittable(x), y)
    starts = [pd.Timestamp(int(t[0]), tz="UTC") for _, _, t in prepared]
    ends = [pd.Timestamp(int(t[-1]), tz="UTC") for _, _, t in prepared]
    log.info("global %s: %d services, %d rows", global_name(step, seasonality), len(parts), y.size)
    return TrainedModel(
        service=name or global_name(step, seasonality), spec=spec, p50=p50, p90=p90, p90_margin=margin,
        training_start=min(starts).to_pydatetime(), training_end=max(ends).to_pydatetime(),
        seasonality=SeasonalityReport(seasonality, float("nan"), float("nan")), n_rows=int(y.size), config=config)


def layout_of(series: pd.Series) -> tuple[int, Seasonality]:
    """The step and the seasonality class that decide which global model serves a series."""
    step = step_seconds_of(series)
    values = series.to_numpy(dtype=np.float64)
    floor = max(float(np.nanmean(values)) * GLOBAL_FLOOR_SHARE, 1e-6) if np.any(~np.isnan(values)) else 1e-6
    return step, detect_seasonality(values, 86_400 // step, floor=floor).seasonality


def core_for(model: TrainedModel, service: str, *, kind_effects: Mapping[str, float] | None = None) -> ForecastCore:
    """A scikit-learn-backed forecasting core answering for ``service`` (backtests, comparisons).

    For a global model, ``kind_effects`` are the service's own learned event effects."""
    spec = model.spec if kind_effects is None else replace(model.spec, kind_effects=dict(kind_effects))
    return ForecastCore(service, "backtest", spec, model.p90_margin)


@dataclass(frozen=True)
class ModelChoice:
    """Which model serves a service, and the validation that decided it."""

    served_by: ServedBy
    reason: str
    #: Mean absolute error of each candidate's P50 over the validation days (TPS).
    validation_mae: dict[str, float]
    validation_days: int

    def to_json(self) -> dict[str, Any]:
        return {"served_by": self.served_by, "reason": self.reason, "validation_days": self.validation_days,
                "validation_mae": {k: round(v, 6) for k, v in self.validation_mae.items()}}


def choose_model(series: pd.Series, *, service: str, events: Sequence[Event] = (),
                 pool: Mapping[str, pd.Series] | None = None, training: TrainingConfig | None = None,
                 global_training: TrainingConfig | None = None,
                 validation_days: int = VALIDATION_DAYS) -> ModelChoice:
    """Global or per-service for ``series``, by a rolling-origin backtest on its last days.

    Both candidates are trained on the history before the last ``validation_days`` days
    (fewer when the history is short: at least one) and forecast each of those days from
    the history before it; the per-service model is kept only when its P50's mean
    absolute error is lower. A history too short to train a per-service model on is
    served by the global model without a contest. Nothing after the end of ``series`` is seen.
    """
    training = training or TrainingConfig()
    step = step_seconds_of(series)
    day = 86_400 // step
    horizon = training.horizon_steps or day
    known = int(series.notna().sum())
    # Keep enough before the cut to train a per-service model: its minimum plus a day.
    room = (known - min_training_steps(day, horizon) - day) // day
    days = int(min(validation_days, room))
    if days < 1:
        return ModelChoice(GLOBAL, "history too short for a per-service model", {}, 0)
    cut = len(series) - days * day - (horizon - day if horizon > day else 0)
    before = series.iloc[:cut]
    try:
        own = train(before, service=service, events=events, config=training, point_only=True)
    except HistoryTooShort:
        return ModelChoice(GLOBAL, "history too short for a per-service model", {}, 0)
    step_, seasonality = layout_of(before)
    histories = {**(pool or {}), service: before}
    shared = train_global(histories, seasonality=seasonality, step_seconds=step_, horizon_steps=horizon,
                          events={service: events}, config=global_training or global_config(training),
                          point_only=True)
    effects = own.spec.kind_effects
    candidates = {PER_SERVICE: (own, core_for(own, service)),
                  GLOBAL: (shared, core_for(shared, service, kind_effects=effects))}
    errors = {name: 0.0 for name in candidates}
    steps = 0
    values = series.to_numpy(dtype=np.float64)
    for origin in range(cut, len(series) - horizon + 1, day):
        actual = values[origin : origin + horizon]
        known_steps = ~np.isnan(actual)
        if not np.any(known_steps):
            continue
        history = series.iloc[:origin]
        for name, (model, core) in candidates.items():
            forecast = core.forecast_with(model.predict_ratios, history, events=list(events))
            errors[name] += float(np.sum(np.abs(forecast.p50[known_steps] - actual[known_steps])))
        steps += int(np.count_nonzero(known_steps))
    if steps == 0:
        return ModelChoice(GLOBAL, "no known traffic in the validation days", {}, days)
    mae = {name: total / steps for name, total in errors.items()}
    if mae[PER_SERVICE] < mae[GLOBAL]:
        return ModelChoice(PER_SERVICE, "per-service model forecast the validation days better", mae, days)
    return ModelChoice(GLOBAL, "global model forecast the validation days at least as well", mae, days)
