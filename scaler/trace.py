"""A traffic trace as the replay sees it: demand in requests/s every 15 s.

Traces are counts per interval (1 min, 5 min, 30 min), far coarser than the HPA's 15 s
loop. A count says how many requests arrived over the whole interval, not when, so the
replay adds no detail: **within a recorded interval demand is taken as uniform**, every
15 s tick of the interval carries the interval's rate (count / interval seconds). Nothing
is interpolated between intervals; figures are reported per recorded interval
(:mod:`scaler.replay`).

Absent rows follow the trace README: for per-minute traces made from access logs
(``nasa``, ``fifa``) a short run of absent minutes is real silence (zero), a run longer
than an hour is an outage; for coarser traces an absent row is unknown. Unknown demand
(outages) is ``NaN``: the HPA sees no metric and holds, and those intervals count in no figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from harbinger.errors import InvalidInput
from models.series import AbsentRows, counts_to_tps, read_counts_csv

TICK_SECONDS = 15
#: Traces at this interval or finer are access-log counts: an absent row is a zero.
ACCESS_LOG_INTERVAL_SECONDS = 60


@dataclass(frozen=True)
class Trace:
    name: str
    interval_seconds: int
    #: Requests/s per source interval, indexed by the interval's start (NaN = unknown);
    #: what a forecaster would have seen as history.
    rate: pd.Series
    #: Start of tick 0 (UTC).
    start: datetime
    tick_seconds: int
    #: Requests/s at each tick, NaN where unknown.
    demand: np.ndarray

    def tick_time(self, tick: int) -> datetime:
        return self.start + pd.Timedelta(seconds=tick * self.tick_seconds)

    def tick_at(self, when: datetime) -> int:
        return int((pd.Timestamp(when) - pd.Timestamp(self.start)).total_seconds() // self.tick_seconds)


def load_trace(path: Path | str, *, tick_seconds: int = TICK_SECONDS) -> Trace:
    """Read a ``timestamp,value`` count CSV (errors name the file and line)."""
    rows = read_counts_csv(path)
    absent: AbsentRows = "zero" if rows.interval_seconds <= ACCESS_LOG_INTERVAL_SECONDS else "missing"
    rate = counts_to_tps(rows, step_seconds=rows.interval_seconds, absent=absent, name=Path(path).stem)
    return trace_from_rate(rate, rows.interval_seconds, name=Path(path).stem, tick_seconds=tick_seconds)


def trace_from_rate(rate: pd.Series, interval_seconds: int, *, name: str, tick_seconds: int = TICK_SECONDS) -> Trace:
    """A regular rate series on ticks: each tick carries its interval's rate (module docstring)."""
    if len(rate) < 2:
        raise InvalidInput(f"{len(rate)} known interval(s); a replay needs at least two", source=name)
    if interval_seconds % tick_seconds:
        raise InvalidInput(f"a {interval_seconds} s interval is not a whole number of {tick_seconds} s ticks",
                           source=name)
    start = rate.index[0].to_pydatetime()
    demand = np.repeat(rate.to_numpy(dtype=np.float64), interval_seconds // tick_seconds)
    return Trace(name=name, interval_seconds=interval_seconds, rate=rate, start=start,
                 tick_seconds=tick_seconds, demand=demand)


#: The default share of traffic whose step peak the learned burst factor covers, and of
#: steps whose peak the learned burst dispersion covers.
BURST_QUANTILE = 0.9


def _check_quantile(quantile: float, source: str) -> None:
    if not 0 < quantile < 1:
        raise InvalidInput(f"the burst quantile must be between 0 and 1, got {quantile}", source=source)


def complete_steps(demand: np.ndarray, tick_seconds: int, step_seconds: int,
                   source: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, peak tick) of every forecast step of ``demand`` whose ticks are all known and
    whose mean is above zero; empty when a step is a single tick (nothing to peak inside)."""
    if step_seconds % tick_seconds:
        raise InvalidInput(f"a {step_seconds} s step is not a whole number of {tick_seconds} s ticks",
                           source=source)
    per_step = step_seconds // tick_seconds
    whole = (len(demand) // per_step) * per_step
    if per_step < 2 or whole == 0:
        return np.empty(0), np.empty(0)
    steps = np.asarray(demand[:whole], dtype=np.float64).reshape(-1, per_step)
    steps = steps[~np.isnan(steps).any(axis=1)]
    if not steps.size:
        return np.empty(0), np.empty(0)
    means = steps.mean(axis=1)
    busy = means > 0
    return means[busy], steps[busy].max(axis=1)


def burst_factor(demand: np.ndarray, tick_seconds: int, step_seconds: int, *,
                 quantile: float = BURST_QUANTILE) -> float:
    """How far demand peaks above its mean inside a forecast step, as a ratio, learned from history.

    ``demand`` is per-tick history from a step boundary (the training part, never the
    part to be replayed). For every step whose ticks are all known: peak tick / step mean.
    The factor is the ``quantile`` of those ratios weighted by the step's traffic, so busy
    steps (which size the cluster) count more than a quiet night whose few requests make
    every minute a "burst". 1.0 when history has no complete busy step, or when the step
    is a single tick (nothing to peak inside).
    """
    _check_quantile(quantile, "burst_factor")
    means, peaks = complete_steps(demand, tick_seconds, step_seconds, "burst_factor")
    if not means.size:
        return 1.0
    ratios = peaks / means
    order = np.argsort(ratios)
    cumulative = np.cumsum(means[order]) / means.sum()
    at = min(int(np.searchsorted(cumulative, quantile)), len(order) - 1)
    return max(1.0, float(ratios[order][at]))


def burst_dispersion(demand: np.ndarray, tick_seconds: int, step_seconds: int, *,
                     quantile: float = BURST_QUANTILE) -> float:
    """How far demand peaks above its mean inside a forecast step, as a dispersion, learned from
    history: the ``quantile`` over complete busy steps of (peak tick - step mean) / sqrt(step mean).

    ``demand`` is per-tick history from a step boundary (the training part, never the part to
    be replayed), in requests/s; the result is in sqrt(requests/s), so that
    ``mean + dispersion * sqrt(mean)`` is the step's peak at that quantile. Counts of
    independent requests spread by the square root of their rate, which keeps this
    normalised excess far more level-independent than peak / mean (docs/scaling.md has the
    figures per trace), so one unweighted quantile serves quiet and busy steps alike. 0.0
    when history has no complete busy step, or when the step is a single tick.
    """
    _check_quantile(quantile, "burst_dispersion")
    means, peaks = complete_steps(demand, tick_seconds, step_seconds, "burst_dispersion")
    return dispersion(means, peaks, quantile)


def dispersion(means: np.ndarray, peaks: np.ndarray, quantile: float = BURST_QUANTILE) -> float:
    """The ``quantile`` of (peak - mean) / sqrt(mean) over steps (see :func:`burst_dispersion`);
    0.0 without steps."""
    if not means.size:
        return 0.0
    return max(0.0, float(np.quantile((peaks - means) / np.sqrt(means), quantile)))
