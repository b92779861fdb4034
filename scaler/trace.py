"""A traffic trace as the replay sees it: demand in requests/s every 15 s.

Traces are counts per interval (1 min, 5 min, 30 min), far coarser than the HPA's 15 s
loop. A count says how many requests arrived over the whole interval, not when, so the
replay places each interval's rate (count / interval seconds) at the interval's
*midpoint* and interpolates linearly between midpoints: a smooth rate with the same
mean over each interval, instead of a staircase whose artificial jumps every 30 minutes
would be a test of the staircase, not of the autoscaler.

Absent rows follow the trace README: for per-minute traces made from access logs
(``nasa``, ``fifa``) a short run of absent minutes is real silence (zero), a run longer
than an hour is an outage; for coarser traces an absent row is unknown. Unknown demand
(outages) is ``NaN``: the HPA sees no metric and holds, and those ticks count in no figure.
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
    """Interpolate a regular rate series onto ticks (see the module docstring)."""
    if len(rate) < 2:
        raise InvalidInput(f"{len(rate)} known interval(s); a replay needs at least two", source=name)
    start = rate.index[0].to_pydatetime()
    span = len(rate) * interval_seconds
    ticks = np.arange(0, span, tick_seconds, dtype=np.float64)
    midpoints = (np.arange(len(rate), dtype=np.float64) + 0.5) * interval_seconds
    values = rate.to_numpy(dtype=np.float64)
    right = np.clip(np.searchsorted(midpoints, ticks, side="right"), 1, len(rate) - 1)
    left = right - 1
    weight = np.clip((ticks - midpoints[left]) / interval_seconds, 0.0, 1.0)
    # Written so that a tick exactly on a midpoint takes that interval's value even when
    # its neighbour is unknown.
    demand = np.where(weight <= 0, values[left],
                      np.where(weight >= 1, values[right], (1 - weight) * values[left] + weight * values[right]))
    # Before the first midpoint and after the last, hold the edge value (NaN stays NaN).
    demand = np.where(ticks < midpoints[0], values[0], demand)
    demand = np.where(ticks > midpoints[-1], values[-1], demand)
    return Trace(name=name, interval_seconds=interval_seconds, rate=rate, start=start,
                 tick_seconds=tick_seconds, demand=demand)
