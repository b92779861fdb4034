"""Rolling-origin backtest of the forecaster against seasonal-naive and Prophet.

Origins: ``folds`` origins one ``spacing`` apart (default one day), the last one a full
horizon before the end of the series, so that with a one-day horizon the folds tile the
last ``folds`` days. Every model is refitted at every origin on the history before it
(nothing after the origin is seen) and forecasts the full horizon. An origin is dropped
when less than ``min_train_days`` of history lie before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harbinger.clock import format_time
from models.adaptive import CoverageCheck, carried, next_level
from models.baselines import ProphetBaseline, seasonal_naive
from models.errors import BadRequest, HistoryTooShort
from models.events import Event
from models.forecast import Forecast
from models.metrics import FoldErrors, Scores, mase_scale, pooled_scores
from models.pooled import OWN, POOLED_CHOICE, Choice, choose, for_service, train_pooled
from models.serving import ForecastCore
from models.training import TrainedModel, TrainingConfig, train

HARBINGER = "harbinger"
#: Harbinger's two candidates when a pool is given; ``harbinger`` is the one chosen.
HARBINGER_OWN = "harbinger-own"
HARBINGER_POOLED = "harbinger-pooled"
NAIVE_DAILY = "seasonal-naive-daily"
NAIVE_WEEKLY = "seasonal-naive-weekly"
#: The better (lower MASE) of the daily and weekly seasonal-naive forecasts.
NAIVE_BEST = "seasonal-naive"
PROPHET = "prophet"
BASELINES = ("seasonal-naive", "prophet")

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BacktestConfig:
    folds: int = 14
    spacing_steps: int | None = None  # None: one day
    min_train_days: float = 7.0
    baselines: tuple[str, ...] = BASELINES
    #: With a pool: days before the first scored origin on which own and pooled are compared.
    validation_folds: int = 7


@dataclass
class FoldForecast:
    start: pd.Timestamp
    actual: np.ndarray
    p50: dict[str, np.ndarray] = field(default_factory=dict)
    p90: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class BacktestResult:
    trace: str
    step_seconds: int
    horizon_steps: int
    scores: dict[str, Scores]
    folds: list[FoldForecast]
    seconds: dict[str, float]
    #: Which seasonal-naive variant was the better one.
    naive_choice: str | None
    #: Which model served as ``harbinger``: own or pooled, and the validation that chose it.
    choice: Choice | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"trace": NAME, "models": {model: {mase, smape, under_p90, coverage_p90, ...}}, ...}``."""
        models: dict[str, dict[str, Any]] = {name: score.to_json() for name, score in self.scores.items()}
        if self.naive_choice:
            models[NAIVE_BEST] = {**self.scores[self.naive_choice].to_json(),
                                  "variant": self.naive_choice.rsplit("-", 1)[-1]}
        return {
            "trace": self.trace,
            "models": models,
            "folds": len(self.folds),
            "step_seconds": self.step_seconds,
            "horizon_steps": self.horizon_steps,
            "test_start": format_time(self.folds[0].start) if self.folds else None,
            "fit_seconds": {name: round(value, 2) for name, value in self.seconds.items()},
            "served_by": self.choice.served_by if self.choice else OWN,
            "choice": self.choice.as_dict() if self.choice else None,
        }


def fold_origins(n_steps: int, steps_per_day: int, horizon: int, config: BacktestConfig) -> list[int]:
    spacing = config.spacing_steps or steps_per_day
    last = n_steps - horizon
    earliest = int(np.ceil(config.min_train_days * steps_per_day))
    origins = [last - k * spacing for k in range(config.folds)]
    return sorted(o for o in origins if o >= earliest)


def backtest(series: pd.Series, *, events: Sequence[Event] = (), service: str | None = None,
             config: BacktestConfig | None = None, training: TrainingConfig | None = None,
             progress: Progress | None = None, pool: Mapping[str, pd.Series] | None = None) -> BacktestResult:
    """Score Harbinger and the baselines at every fold origin (see the module docstring).

    With a ``pool`` (other services' histories at the same step), Harbinger has two
    candidates: a model of the series' own and the pooled model (``models.pooled``) trained on
    the pool plus the series' history before the origin. Which one is ``harbinger`` is chosen
    on the ``validation_folds`` days before the first scored origin, never on the scored ones;
    both candidates' scores are reported beside it.
    """
    config = config or BacktestConfig()
    training = training or TrainingConfig()
    unknown = set(config.baselines) - set(BASELINES)
    if unknown:
        raise BadRequest(f"unknown baseline(s) {', '.join(sorted(unknown))}; choose from {', '.join(BASELINES)}")
    name = service or str(series.name or "series")
    step = int((series.index[1] - series.index[0]).total_seconds())
    day = 86_400 // step
    horizon = training.horizon_steps or day
    origins = fold_origins(len(series), day, horizon, config)
    if not origins:
        raise HistoryTooShort(f"{len(series)} steps: a backtest needs at least {config.min_train_days:g} days "
                              f"of training plus a {horizon}-step horizon", source=name)
    values = series.to_numpy(dtype=np.float64)
    candidates = Candidates(name, events, training, pool)
    choice = None
    if pool:
        if progress:
            progress(0, len(origins), "choosing own or pooled")
        before = series.iloc[: origins[0]]
        choice = choose(before, candidates.own, candidates.pooled, days=config.validation_folds,
                        horizon_steps=horizon)
    models = [HARBINGER, HARBINGER_OWN, HARBINGER_POOLED] if pool else [HARBINGER]
    if "seasonal-naive" in config.baselines:
        models += [NAIVE_DAILY, NAIVE_WEEKLY]
    if "prophet" in config.baselines:
        models.append(PROPHET)
    errors: dict[str, list[FoldErrors]] = {m: [] for m in models}
    seconds = dict.fromkeys(models, 0.0)
    folds: list[FoldForecast] = []
    for number, origin in enumerate(origins):
        if progress:
            progress(number, len(origins), f"fold {number + 1}/{len(origins)}")
        history = series.iloc[:origin]
        actual = values[origin : origin + horizon]
        fold = FoldForecast(start=series.index[origin], actual=actual)
        scale = mase_scale(values[:origin], day)
        for model in models:
            if model == HARBINGER and pool:
                continue  # the chosen candidate's forecast, copied below
            began = time.perf_counter()
            fold.p50[model], fold.p90[model] = _forecast(model, history, horizon, candidates, day)
            seconds[model] += time.perf_counter() - began
            errors[model].append(FoldErrors(actual, fold.p50[model], fold.p90[model], scale))
        if choice is not None:
            chosen = HARBINGER_POOLED if choice.served_by == POOLED_CHOICE else HARBINGER_OWN
            fold.p50[HARBINGER], fold.p90[HARBINGER] = fold.p50[chosen], fold.p90[chosen]
            errors[HARBINGER].append(errors[chosen][-1])
            seconds[HARBINGER] = seconds[chosen]
        folds.append(fold)
    if progress:
        progress(len(origins), len(origins), "done")
    scores = {model: pooled_scores(errors[model]) for model in models}
    naive_choice = None
    if NAIVE_DAILY in scores:
        naive_choice = min((NAIVE_DAILY, NAIVE_WEEKLY), key=lambda m: _or_inf(scores[m].mase))
    return BacktestResult(trace=name, step_seconds=step, horizon_steps=horizon, scores=scores, folds=folds,
                          seconds=seconds, naive_choice=naive_choice, choice=choice)


@dataclass
class Candidates:
    """Harbinger's forecasts at one origin, each trained on the history before it.

    Each candidate carries its P90's level from one origin to the next, as retraining in the
    cluster does (:mod:`models.adaptive`): every forecast is scored against the history of the
    next call, in time order (the own-or-pooled validation days first, then the folds).
    """

    service: str
    events: Sequence[Event]
    training: TrainingConfig
    pool: Mapping[str, pd.Series] | None
    checks: dict[str, CoverageCheck] = field(default_factory=dict)

    def own(self, history: pd.Series) -> Forecast:
        level = self._level(OWN, history)
        trained = train(history, service=self.service, events=self.events, config=self.training, p90_level=level)
        return self._forecast(OWN, trained, history)

    def pooled(self, history: pd.Series) -> Forecast:
        level = self._level(POOLED_CHOICE, history)
        # The series itself is one of the pooled histories, up to the origin: its recent
        # days are what the pooled model is weakest at without it.
        pooled = train_pooled({**(self.pool or {}), self.service: history}, config=self.training)
        model = for_service(pooled, history, self.training, events=self.events, service=self.service,
                            p90_level=level)
        return self._forecast(POOLED_CHOICE, model, history)

    def _level(self, candidate: str, history: pd.Series) -> float:
        return next_level(self.checks.get(candidate), history, rate=self.training.p90_adaptation_rate,
                          bounds=self.training.p90_level_bounds)

    def _forecast(self, candidate: str, model: TrainedModel, history: pd.Series) -> Forecast:
        core = ForecastCore(self.service, "backtest", model.spec, model.p90_margin)
        forecast = core.forecast_with(model.predict_ratios, history, events=list(self.events))
        check = carried(self.checks.get(candidate), history, model.p90_level, forecast)
        if check is not None:
            self.checks[candidate] = check
        return forecast


def _forecast(model: str, history: pd.Series, horizon: int, candidates: Candidates,
              day: int) -> tuple[np.ndarray, np.ndarray]:
    values = history.to_numpy(dtype=np.float64)
    if model in (HARBINGER, HARBINGER_OWN):
        forecast = candidates.own(history)
        return forecast.p50, forecast.p90
    if model == HARBINGER_POOLED:
        forecast = candidates.pooled(history)
        return forecast.p50, forecast.p90
    if model == NAIVE_DAILY:
        return seasonal_naive(values, horizon, day)
    if model == NAIVE_WEEKLY:
        return seasonal_naive(values, horizon, 7 * day)
    if model == PROPHET:
        prophet = ProphetBaseline(seed=candidates.training.seed).fit(history, candidates.events, candidates.service)
        return prophet.predict(_future_index(history, horizon))
    raise BadRequest(f"unknown model {model!r}")


def _future_index(history: pd.Series, horizon: int) -> pd.DatetimeIndex:
    step = history.index[1] - history.index[0]
    return pd.date_range(history.index[-1] + step, periods=horizon, freq=step)


def _or_inf(value: float) -> float:
    return value if np.isfinite(value) else float("inf")
