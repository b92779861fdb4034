"""The P90's level, moved by the coverage it got (adaptive conformal inference).

The P90 margin is calibrated on the last third of the training history
(:func:`models.training.calibrate_p90`), which assumes that the days ahead look like it.
When the traffic changes regime they do not, and the band stays too wide or too narrow for
as long as the new regime lasts. Two of the traces show it:

- after fifa's tournament, the P90 kept the width the tournament's swings had taught it;
- in Auckland's Christmas weeks, the P90 was too narrow every other day.

So each training scores the previous model's first forecast against the traffic that has
arrived since (a :class:`CoverageCheck`, kept in the model's metadata), once all of it has
arrived (:func:`pending`). It then moves the quantile level at which the margin is read from
the held-out shortfalls by the miss:

    level' = clip(level + rate * (0.9 - coverage), 0.5, 0.99)

This is Gibbs and Candès' adaptive conformal inference ("Adaptive conformal inference under
distribution shift", NeurIPS 2021), with one update per training instead of one per step.
Without the clip, the realized coverage over many trainings tends to 90 % whatever the shift.
The clip keeps a "P90" between the held-out median and the 99th percentile, so a run of bad
days cannot turn it into no bound at all; the guarantee holds while the clip is not reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.forecast import Forecast

#: The coverage the P90 is for.
TARGET = 0.9


@dataclass(frozen=True)
class CoverageCheck:
    """A model's first forecast (its P90, from ``start``), and the level it was calibrated at."""

    level: float
    start: datetime
    step_seconds: int
    p90: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "start": self.start.astimezone(UTC).isoformat(),
                "step_seconds": self.step_seconds, "p90": [_finite_or_none(v) for v in self.p90]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CoverageCheck:
        """Raises ``ValueError`` (or ``KeyError``/``TypeError``) naming what is malformed."""
        level = float(data["level"])
        if not 0.0 < level < 1.0:
            raise ValueError(f"level {level} is not between 0 and 1")
        start = datetime.fromisoformat(str(data["start"]))
        if start.tzinfo is None:
            raise ValueError(f"start {data['start']!r} has no time zone")
        step = int(data["step_seconds"])
        if step <= 0:
            raise ValueError(f"step_seconds {step} is not positive")
        p90 = tuple(float("nan") if v is None else float(v) for v in data["p90"])
        return cls(level, start, step, p90)


def coverage_check(level: float, forecast: Forecast) -> CoverageCheck:
    """What the next training needs to score ``forecast``, a model's first, made at ``level``."""
    return CoverageCheck(level, forecast.start, forecast.step_seconds,
                         tuple(float(v) for v in np.asarray(forecast.p90, dtype=np.float64)))


def realized_coverage(check: CoverageCheck, series: pd.Series) -> float | None:
    """The share of the check's forecast steps whose traffic, now in ``series``, came in at or
    under the P90; ``None`` when no such step has arrived (or the series is at another step)."""
    if len(series) < 2 or int((series.index[1] - series.index[0]).total_seconds()) != check.step_seconds:
        return None
    p90 = np.asarray(check.p90, dtype=np.float64)
    stamps = pd.DatetimeIndex([check.start + timedelta(seconds=i * check.step_seconds) for i in range(p90.size)])
    actual = series.reindex(stamps).to_numpy(dtype=np.float64)
    known = ~np.isnan(actual) & ~np.isnan(p90)
    if not np.any(known):
        return None
    return float(np.mean(actual[known] <= p90[known]))


def pending(check: CoverageCheck | None, series: pd.Series) -> bool:
    """Whether the check's forecast has not all arrived yet in ``series``: the next model then
    keeps the level and carries the check on. Scoring only whole forecasts moves the level once
    per horizon, by its coverage over the whole horizon, however often the models are retrained
    (every six hours in the cluster): the first hours of a forecast cover more than its last."""
    if check is None or len(series) == 0:
        return False
    end = check.start + timedelta(seconds=(len(check.p90) - 1) * check.step_seconds)
    return bool(series.index[-1] < end)


def next_level(check: CoverageCheck | None, series: pd.Series, *, rate: float,
               bounds: tuple[float, float]) -> float:
    """The level the next model's P90 margin is calibrated at: the previous one moved by its
    miss on ``series`` once its whole forecast has arrived, unchanged before that (or when none
    of its steps is known); :data:`TARGET` without a previous model."""
    if check is None:
        return TARGET
    coverage = None if pending(check, series) else realized_coverage(check, series)
    level = check.level if coverage is None else check.level + rate * (TARGET - coverage)
    return min(max(level, bounds[0]), bounds[1])


def carried(check: CoverageCheck | None, series: pd.Series, level: float,
            first: Forecast | None) -> CoverageCheck | None:
    """The check the next model keeps: the previous one while its forecast is pending, else the
    next model's own ``first`` forecast (None when it could not forecast)."""
    if check is not None and pending(check, series):
        return check
    return coverage_check(level, first) if first is not None else None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
