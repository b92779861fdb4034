"""Forecast accuracy metrics, on steps where the actual is known.

* MASE: mean absolute error over the mean absolute error that "same time yesterday" makes
  inside the training history (one day is the season for every trace and every model, so
  MASE values of different models on one trace compare directly; < 1 beats that naive
  forecast as it did in-sample).
* sMAPE: mean of 2|y - f| / (|y| + |f|), in percent (0 when both are 0).
* under_p90: share of steps whose actual is above the P90 forecast: how often capacity
  planned on the P90 would have been short.
* coverage_p90: share of steps at or under the P90 (1 - under_p90); 0.9 is calibrated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    mase: float
    smape: float
    under_p90: float
    coverage_p90: float
    mae: float
    steps: int

    def to_json(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def mase_scale(history: np.ndarray, season_steps: int) -> float:
    """In-sample MAE of the seasonal-naive forecast with ``season_steps`` lag (``NaN`` pairs skipped)."""
    if history.size <= season_steps:
        return float("nan")
    errors = np.abs(history[season_steps:] - history[:-season_steps])
    return float(np.nanmean(errors)) if np.any(~np.isnan(errors)) else float("nan")


@dataclass(frozen=True)
class FoldErrors:
    """One fold's per-step comparison, kept so that folds pool into one score."""

    actual: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    scale: float


def pooled_scores(folds: list[FoldErrors]) -> Scores:
    """MASE averaged over folds (each with its own in-sample scale); the rest pooled over all steps."""
    mases, actual_all, p50_all, p90_all = [], [], [], []
    for fold in folds:
        known = ~np.isnan(fold.actual)
        if not np.any(known):
            continue
        actual, p50, p90 = fold.actual[known], fold.p50[known], fold.p90[known]
        if fold.scale > 0:
            mases.append(float(np.mean(np.abs(actual - p50))) / fold.scale)
        actual_all.append(actual)
        p50_all.append(p50)
        p90_all.append(p90)
    if not actual_all:
        nan = float("nan")
        return Scores(nan, nan, nan, nan, nan, 0)
    actual, p50, p90 = np.concatenate(actual_all), np.concatenate(p50_all), np.concatenate(p90_all)
    total = np.abs(actual) + np.abs(p50)
    with np.errstate(invalid="ignore", divide="ignore"):
        smape = np.where(total > 0, 2 * np.abs(actual - p50) / total, 0.0)
    under = float(np.mean(actual > p90))
    return Scores(mase=float(np.mean(mases)) if mases else float("nan"), smape=float(100 * np.mean(smape)),
                  under_p90=under, coverage_p90=1.0 - under, mae=float(np.mean(np.abs(actual - p50))),
                  steps=int(actual.size))
