"""The serving path's loops, compiled with numba: cutting a history window, the feature pass,
and model ratios back to TPS.

Why compiled: in numpy the feature pass was about forty vectorised calls on small arrays, and
each call's fixed cost (dispatch, temporaries, the caches they evict) was most of one service's
forecast: ~75 µs of the 127 µs end to end, against 18 µs for the model run. One compiled loop
reads each window position it needs once, allocates nothing per origin, and costs about 5 µs
for one service; for training's hundreds of thousands of origins it is about 20 times faster
than numpy was.

The feature loop computes exactly what :mod:`models.features` documents, origin by origin,
with the unknown steps (``NaN``) skipped wherever a mean or a median is taken; its rows equal
the numpy pass's to the last float32 bit. Where the layout lacks a feature its column is
``-1``. Divisions follow numpy's rules (``error_model="numpy"``): a division by zero gives
``inf`` or ``NaN``, never an exception, as the numpy pass did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numpy as np

_DAY_S = 86_400
_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(func: _F) -> _F:
    """``numba.njit``, cached on disk where numba finds a writable place (next to this file, or
    ``NUMBA_CACHE_DIR``): a process then loads the machine code in a fraction of a second instead
    of compiling it for about five. In a read-only image without ``NUMBA_CACHE_DIR``, numba
    refuses ``cache=True`` outright; there each process compiles once, when it loads its first
    model (see :func:`models.serving.warm_up`)."""
    options: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(func)  # type: ignore[no-any-return]
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(**options)(func)  # type: ignore[no-any-return]


def read_only(array: np.ndarray) -> np.ndarray:
    """``array``, or a read-only view of it.

    numba compiles a loop once per combination of its arrays' types, and whether an array is
    writable is part of the type. An input that is read-only on one path and writable on another
    (pandas' values under copy-on-write and after a conversion; the shared no-events multipliers
    and an events' fresh ones) would compile the loop a second time on the first forecast that
    takes the other path. Passed through here, such an input has one type.
    """
    if array.flags.writeable:
        array = array.view()
        array.setflags(write=False)
    return array


@_compiled
def _floored(value: float, floor: float) -> float:
    """``np.maximum(value, floor)``: ``NaN`` stays ``NaN``."""
    if value != value:
        return value
    return value if value >= floor else floor


@_compiled
def _median_of_known(values: np.ndarray, first: int, stop: int, scratch: np.ndarray) -> float:
    """The median of the known values in ``values[first:stop]`` (``NaN`` when none is known):
    an insertion sort into ``scratch``, a handful of values at most."""
    count = 0
    for position in range(first, stop):
        value = values[position]
        if value != value:
            continue
        slot = count
        while slot > 0 and scratch[slot - 1] > value:
            scratch[slot] = scratch[slot - 1]
            slot -= 1
        scratch[slot] = value
        count += 1
    if count == 0:
        return np.nan
    middle: float = (scratch[(count - 1) // 2] + scratch[count // 2]) / 2
    return middle


@_compiled
def _known_sum(values: np.ndarray) -> tuple[float, int]:
    """The sum and the count of the known (not ``NaN``) values."""
    total = 0.0
    count = 0
    for value in values:
        if value == value:
            total += value
            count += 1
    return total, count


@_compiled
def fill_rows(windows: np.ndarray, origins_ns: np.ndarray, floors: np.ndarray, spans: np.ndarray,
              gather: np.ndarray, inside: np.ndarray, offsets_s: np.ndarray, ratios: np.ndarray,
              lags: np.ndarray, columns: np.ndarray, day: int, last_days: int, days_span: int,
              profile_days: int, x: np.ndarray, level: np.ndarray, volatility: np.ndarray) -> None:
    """Write the rows of every origin into ``x`` (``(n, h, F)``), and its level and volatility.

    ``spans`` ``(S, 2)``: window positions ``[start, stop)`` of each range mean, the first
    ``last_days`` being the last days (the weekly level's median). ``gather``/``inside``
    ``(3, P, h)``: each profile point and its two neighbours, and whether each is in the window.
    ``ratios`` ``(R, 3)``: numerator and denominator in the values (the range means, the last
    step, the level, the last day, the change; then the same at least the level floor) and the
    column. ``lags`` ``(L, 2)``: profile point and column. ``columns``: the columns of
    horizon_step, hour_of_day, day_of_week, profile_days and profile_weeks (``-1``: absent).
    """
    n, m = windows.shape
    n_spans = spans.shape[0]
    n_points, h = gather.shape[1], gather.shape[2]
    n_values = n_spans + 4
    values = np.empty(2 * n_values)
    counts = np.zeros(n_spans, dtype=np.int64)
    smoothed = np.empty(n_points)
    scratch = np.empty(max(n_points, last_days))
    days = np.empty(last_days)
    col_step, col_hour, col_dow, col_days, col_weeks = columns[0], columns[1], columns[2], columns[3], columns[4]
    for i in range(n):
        w = windows[i]
        floor = floors[i]
        # Every range mean over the known steps of its span.
        for k in range(n_spans):
            total, count = _known_sum(w[spans[k, 0] : spans[k, 1]])
            counts[k] = count
            values[k] = total / count if count > 0 else np.nan
        # The change: the mean |difference| between the last day and the day before, step by step.
        total = 0.0
        count = 0
        for q in range(m - day, m):
            d = w[q] - w[q - day]
            if d == d:
                total += abs(d)
                count += 1
        change = total / count if count > 0 else np.nan
        # A day counts when at least a quarter of its steps are known; without the last day, the
        # level falls back to the whole window's mean.
        if counts[0] * 4 >= day:
            last_day = _floored(values[0], floor)
        else:
            total, count = _known_sum(w)
            last_day = _floored(total / count if count > 0 else np.nan, floor)
        level_i = last_day
        if col_dow >= 0:  # weekly: the median of the last seven days' means
            for k in range(last_days):
                days[k] = values[k] if counts[k] * 4 >= day else np.nan
            week = _median_of_known(days, 0, last_days, scratch)
            if week == week:
                level_i = _floored(week, floor)
        level[i] = level_i
        volatility[i] = change / level_i
        values[n_spans] = w[m - 1]
        values[n_spans + 1] = level_i
        values[n_spans + 2] = last_day
        values[n_spans + 3] = change
        for k in range(n_values):
            values[n_values + k] = _floored(values[k], floor)
        scale = 1.0 / level_i
        days_mean = _floored(values[days_span], floor)
        for j in range(h):
            row = x[i, j]
            row[col_step] = j + 1.0
            for r in range(ratios.shape[0]):
                row[ratios[r, 2]] = values[ratios[r, 0]] / values[ratios[r, 1]]
            if col_hour < 0:
                continue
            sec = origins_ns[i] // 1_000_000_000 + offsets_s[j]
            row[col_hour] = (sec % _DAY_S) / 3600.0
            for lag in range(lags.shape[0]):
                row[lags[lag, 1]] = w[gather[1, lags[lag, 0], j]] * scale
            # Each profile point smoothed with its neighbours (the known ones inside the window).
            for p in range(n_points):
                total = 0.0
                count = 0
                for a in range(3):
                    if inside[a, p, j]:
                        v = w[gather[a, p, j]]
                        if v == v:
                            total += v
                            count += 1
                smoothed[p] = total / count if count > 0 else np.nan
            row[col_days] = _median_of_known(smoothed, 0, profile_days, scratch) / days_mean
            if col_dow >= 0:
                row[col_dow] = (sec // _DAY_S + 3) % 7  # 1970-01-01 was a Thursday
                row[col_weeks] = _median_of_known(smoothed, profile_days, n_points, scratch) * scale


#: Bounds of the volatility that scales the P90 margin (share of the level).
MIN_VOLATILITY = 0.02
MAX_VOLATILITY = 2.0
#: The volatility a window without a day before counts as: the median of the bounds.
UNKNOWN_VOLATILITY = math.sqrt(MIN_VOLATILITY * MAX_VOLATILITY)


@_compiled
def margin_unit(volatility: float) -> float:
    """What the calibrated P90 margin is measured in: the recent volatility, bounded; unknown
    volatility (no day before) counts as the median of the bounds."""
    if volatility != volatility:
        return UNKNOWN_VOLATILITY
    return min(max(volatility, MIN_VOLATILITY), MAX_VOLATILITY)


@_compiled
def margin_units(volatility: np.ndarray, out: np.ndarray) -> None:
    for i in range(volatility.size):
        out[i] = margin_unit(volatility[i])


@_compiled
def ratios_to_tps(ratio_p50: np.ndarray, ratio_p90: np.ndarray, level: np.ndarray, volatility: np.ndarray,
                  multipliers: np.ndarray, p90_margins: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> None:
    """Model outputs (``(n, H)`` ratios to the level) to TPS in ``p50`` and ``p90``: both at least 0,
    the P90 the raw P90 plus the origin's margin and at least the P50 (two independently fitted
    quantiles can cross), both times the level and the events' multipliers."""
    n, h = p50.shape
    for i in range(n):
        margin = p90_margins[i] * margin_unit(volatility[i])
        for j in range(h):
            mid = float(ratio_p50[i, j])
            if mid < 0.0:  # NaN stays NaN, as with np.maximum
                mid = 0.0
            high = ratio_p90[i, j] + margin
            if high != high or mid != mid:
                high = np.nan
            elif high < mid:
                high = mid
            scale = level[i] * multipliers[i, j]
            p50[i, j] = mid * scale
            p90[i, j] = high * scale


#: What :func:`cut_window` returns instead of a count.
BAD_VALUE = -1
OFF_GRID = -2


@_compiled
def cut_window(stamps: np.ndarray, values: np.ndarray, first_ns: int, step_ns: int, out: np.ndarray) -> int:
    """Copy the values of the steps ``[first_ns, first_ns + len(out) * step_ns)`` into ``out``
    (``NaN`` where no value is) and return how many of them are known; ``stamps`` strictly
    increase. ``BAD_VALUE``: a value in that span is negative or infinite. ``OFF_GRID``: a stamp in
    it is not on the step's grid, so the span must be averaged onto it first (``out`` is not)."""
    n = out.size
    lo = np.searchsorted(stamps, first_ns)
    hi = np.searchsorted(stamps, first_ns + n * step_ns)
    known = 0
    bad = False
    for q in range(lo, hi):  # branch-free, so that it vectorises
        value = values[q]
        bad |= (value < 0.0) | (value == np.inf)
        known += value == value
    if bad:
        return BAD_VALUE
    if hi > lo and stamps[lo] % step_ns == 0 and stamps[hi - 1] - stamps[lo] == (hi - lo - 1) * step_ns:
        # On the grid from its ends: the stamps strictly increase, so n stamps spanning n - 1 steps
        # are every step (no division per stamp: that was most of this loop's time).
        offset = (stamps[lo] - first_ns) // step_ns
        out[:offset] = np.nan
        out[offset : offset + hi - lo] = values[lo:hi]
        out[offset + hi - lo :] = np.nan
        return known
    out[:] = np.nan
    for q in range(lo, hi):
        if stamps[q] % step_ns:
            return OFF_GRID
    for q in range(lo, hi):
        out[(stamps[q] - first_ns) // step_ns] = values[q]
    return known
