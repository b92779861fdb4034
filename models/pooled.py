"""One model for many services: trained on all their histories at once, served from one session.

A model per service costs one onnxruntime session per service (1,000 services took 1.19 GiB
resident), cannot serve a service whose history is shorter than its training needs, and
learns from one history only. The features make pooling possible: every traffic feature
and the target are ratios to the service's own recent level, so a quiet service and a busy
one look alike to the trees. The pooled model is the same estimator on the same features
(``models.features``), always in the weekly layout (lags a service lacks are ``NaN``,
which the trees learned to do without), with each service's own level floor.

Each service is then served by whichever of its own model and the pooled one did better on
a backtest of its own recent history (:func:`choose`): chosen per service, never by hand.
A service too new for a model of its own gets the pooled one after a few hours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models.errors import BadRequest, HistoryTooShort
from models.events import Event
from models.features import FeatureSpec
from models.forecast import Forecast
from models.seasonality import SeasonalityReport
from models.series import AbsentRows, counts_to_tps, read_counts_csv
from models.training import (
    P90,
    TrainedModel,
    TrainingConfig,
    calibrate_p90,
    calibration_split,
    feature_rows,
    fit_quantiles,
    learn_kind_effects,
    level_floor,
    sample_origins,
    step_seconds_of,
)

log = logging.getLogger(__name__)

#: The pooled model's name: its graph is stamped with it, and each service it serves names it.
POOLED = "pooled"
#: History a service needs before the pooled model forecasts it: enough for a level.
POOLED_MIN_HISTORY_HOURS = 6
#: Served by a model of its own or by the pooled one.
OWN, POOLED_CHOICE = "own", "pooled"


def pooled_name(step_seconds: int) -> str:
    return f"{POOLED}-{step_seconds}s"


def train_pooled(histories: Mapping[str, pd.Series], *, config: TrainingConfig | None = None,
                 horizon_steps: int | None = None) -> TrainedModel:
    """Fit one P50/P90 model on every history (regular TPS series, all at one step).

    Each service contributes the same number of rows, drawn within its history in proportion
    to its level (as :func:`models.training.train` does): a busy service does not drown a
    quiet one, since both are learned as ratios to their own level. The P90 margin is
    calibrated on every service's own latest third.
    """
    config = config or TrainingConfig()
    usable = {name: series for name, series in histories.items() if series.notna().sum() > 0}
    if not usable:
        raise HistoryTooShort("no service has any known traffic to train the pooled model on", source=POOLED)
    steps = {name: step_seconds_of(series, source=name) for name, series in usable.items()}
    step = next(iter(steps.values()))
    other = sorted(name for name, s in steps.items() if s != step)
    if other:
        raise BadRequest(f"the pooled model is trained at one step ({step} s); {', '.join(other[:5])} "
                         f"are at another", source=POOLED)
    day = 86_400 // step
    horizon = horizon_steps or config.horizon_steps or day
    spec = FeatureSpec(step_seconds=step, seasonality="weekly", horizon_steps=horizon, level_floor=1e-6,
                       min_history_hours=POOLED_MIN_HISTORY_HOURS)
    per_service = replace(config, max_rows=max(config.max_rows // len(usable), 4 * horizon))
    rng = np.random.default_rng(config.seed)
    parts: list[tuple[np.ndarray, ...]] = []
    for name, series in usable.items():
        values = series.to_numpy(dtype=np.float64)
        times_ns = pd.DatetimeIndex(series.index).as_unit("ns").asi8
        own = replace(spec, level_floor=level_floor(values, config))
        origins = sample_origins(values, own, per_service, rng, earliest=spec.min_history_steps)
        if origins.size == 0:
            log.info("pooled model: %s has no origin with %d h of history", name, POOLED_MIN_HISTORY_HOURS)
            continue
        try:
            x, y, level, unit, origin_of_row = feature_rows(values, times_ns, origins, own)
        except (ValueError, ArithmeticError) as exc:  # one bad history costs its own rows only
            log.warning("pooled model: %s left out: %s", name, exc)
            continue
        fit_rows, held_out = calibration_split(origin_of_row, horizon, config.calibration_share)
        parts.append((x, y, level, unit, fit_rows, held_out))
    if not parts:
        raise HistoryTooShort(f"no service has {POOLED_MIN_HISTORY_HOURS} h of history to train the pooled "
                              "model on", source=POOLED)
    x, y, level, unit, fit_rows, held_out = (np.concatenate(column) for column in zip(*parts, strict=True))
    with threadpool_limits(limits=config.threads):
        calibration = calibrate_p90(x, y, level, unit, fit_rows, held_out, config)
        p50, p90 = fit_quantiles(x, y, config)
    starts = [series.index[0].to_pydatetime() for series in usable.values()]
    ends = [series.index[-1].to_pydatetime() for series in usable.values()]
    model = TrainedModel(service=pooled_name(step), spec=spec, p50=p50, p90=p90, p90_margin=0.0,
                         training_start=min(starts), training_end=max(ends),
                         seasonality=SeasonalityReport("weekly", float("nan"), float("nan")),
                         n_rows=int(y.size), config=config, calibration=calibration).at_level(P90)
    log.info("pooled model: %d services, %d rows, step %d s, P90 margin %.3f", len(parts), y.size, step,
             model.p90_margin)
    return model


def for_service(pooled: TrainedModel, history: pd.Series, config: TrainingConfig | None = None, *,
                events: Sequence[Event] = (), service: str = "", p90_level: float = P90) -> TrainedModel:
    """The pooled model as one service's model: the same trees, the service's own level floor
    and the effects of its event kinds, learned from its own history as :func:`train` does
    (without them, the steps of an event kind that declares no multiplier would be unknown),
    and the P90 margin read at the service's own level (:mod:`models.adaptive`)."""
    values = history.to_numpy(dtype=np.float64)
    floor = level_floor(values, config or pooled.config)
    effects = {}
    if events:
        times_ns = pd.DatetimeIndex(history.index).as_unit("ns").asi8
        effects = learn_kind_effects(values, times_ns, events, service, pooled.spec.step_seconds)
    member = pooled if p90_level == pooled.p90_level else pooled.at_level(p90_level)
    return replace(member, spec=replace(pooled.spec, level_floor=floor, kind_effects=effects))


@dataclass(frozen=True)
class Choice:
    """Which model serves a service, and the backtest that decided it."""

    served_by: str  # OWN or POOLED_CHOICE
    own_error: float  # mean absolute error over the held-out days, in TPS (NaN: no own model)
    pooled_error: float
    days: int

    def as_dict(self) -> dict[str, object]:
        return {"served_by": self.served_by, "own_mae": _rounded(self.own_error),
                "pooled_mae": _rounded(self.pooled_error), "days": self.days}


#: A forecast from the history before an origin (the function trains, or uses a trained model).
ForecastFrom = Callable[[pd.Series], Forecast]


def choose(series: pd.Series, own: ForecastFrom | None, pooled: ForecastFrom, *, days: int,
           horizon_steps: int) -> Choice:
    """Backtest both forecasts (each a function of the history before an origin, which may train
    on it or use a model trained before the first origin) at one origin a day over the last
    ``days`` days of ``series`` and keep the one with the lower mean absolute error of its P50.
    A forecast that cannot answer scores infinity. The pooled model wins a tie: one session is
    cheaper than two."""
    step = step_seconds_of(series, source=str(series.name))
    day = 86_400 // step
    origins = [len(series) - horizon_steps - k * day for k in range(days)]
    origins = [o for o in sorted(origins) if o > 0]
    errors = {OWN: [], POOLED_CHOICE: []}  # type: dict[str, list[float]]
    values = series.to_numpy(dtype=np.float64)
    for origin in origins:
        history = series.iloc[:origin]
        actual = values[origin : origin + horizon_steps]
        known = ~np.isnan(actual)
        if not np.any(known):
            continue
        for name, forecast in ((OWN, own), (POOLED_CHOICE, pooled)):
            if forecast is None:
                continue
            try:
                p50 = forecast(history).p50
            except HistoryTooShort:
                errors[name].append(float("inf"))
                continue
            error = float(np.mean(np.abs(p50[: actual.size][known] - actual[known])))
            errors[name].append(error if np.isfinite(error) else float("inf"))  # no answer is the worst one
    own_error = float(np.mean(errors[OWN])) if errors[OWN] else float("nan")
    pooled_error = float(np.mean(errors[POOLED_CHOICE])) if errors[POOLED_CHOICE] else float("nan")
    # NaN (no day scored) never wins: own serves only when it scored, and better or alone.
    own_wins = not np.isnan(own_error) and (np.isnan(pooled_error) or own_error < pooled_error)
    return Choice(OWN if own_wins else POOLED_CHOICE, own_error, pooled_error, len(errors[POOLED_CHOICE]))


def load_pool(sources: Sequence[tuple[Path, AbsentRows]], step_seconds: int, *,
              exclude: str | None = None) -> tuple[dict[str, pd.Series], list[str]]:
    """Count CSVs as a pool at ``step_seconds`` (each named by its file's stem), leaving out
    ``exclude`` and any file whose rows are not a whole divisor of the step (they cannot be put
    on its grid). Returns the pool and one note per file left out."""
    pool: dict[str, pd.Series] = {}
    notes = []
    for path, absent in sources:
        name = Path(path).stem
        if name == exclude or name in pool:
            continue
        rows = read_counts_csv(path)
        if step_seconds % rows.interval_seconds:
            notes.append(f"{name} left out: its {rows.interval_seconds} s rows do not fit the {step_seconds} s step")
            continue
        pool[name] = counts_to_tps(rows, step_seconds=step_seconds, absent=absent, name=name)
    return pool, notes


def _rounded(value: float) -> float | None:
    return round(value, 4) if np.isfinite(value) else None
