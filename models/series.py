"""Traffic series: from a ``timestamp,value`` CSV of counts to a regular series of TPS.

Everything downstream (training, serving, evaluation) works on one shape of data: a
``pandas.Series`` of requests per second on a regular, epoch-aligned grid of
``step_seconds``, indexed by the UTC start of each step, with ``NaN`` where nothing is
known. This module is the one place that makes that shape from a file.

Absent rows. A count CSV only lists the intervals its source has. What an absent row
means depends on the source, so it is a choice (``absent``), never a guess:

* ``"missing"`` (the default): an absent row is unknown. A step that is not fully
  covered by listed rows is ``NaN``; no zero is invented.
* ``"zero"``: the source only writes intervals in which something happened (per-minute
  counts made from access logs, like ``nasa.csv`` and ``fifa.csv``), so a *short* run of
  absent rows is real silence, i.e. zero. A run longer than ``max_zero_gap_seconds`` is
  an outage and stays ``NaN`` (nasa's 2-4 day log gaps; its longest silent run is 52 min).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from models.errors import BadSeries, HistoryTooShort

AbsentRows = Literal["missing", "zero"]

#: Finer steps than this only add noise for a 24 h capacity plan and cost training time.
DEFAULT_MIN_STEP_SECONDS = 900
DEFAULT_MAX_ZERO_GAP_SECONDS = 3600
HEADER = ("timestamp", "value")
_NS = 1_000_000_000


@dataclass(frozen=True)
class CountRows:
    """The rows of a count CSV exactly as written, validated but not yet regularised."""

    source: str
    timestamps_ns: np.ndarray  # int64, strictly increasing, UTC
    counts: np.ndarray  # float64, finite, >= 0
    interval_seconds: int  # the most common spacing of the rows: the source's bucket length


def read_counts_csv(path: Path | str) -> CountRows:
    """Read and validate a ``timestamp,value`` CSV; every problem names the file and line."""
    path = Path(path)
    source = str(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise BadSeries("no such file", source=source) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadSeries(f"cannot read the file: {exc}", source=source) from None
    if not rows:
        raise BadSeries("the file is empty; expected a header 'timestamp,value'", source=source, line=1)
    header = tuple(cell.strip().lower() for cell in rows[0])
    if header != HEADER:
        raise BadSeries(f"expected the header 'timestamp,value', found {','.join(rows[0])!r}",
                        source=source, line=1)
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != 2:
            what = "an empty line" if not any(cell.strip() for cell in row) else f"{len(row)} fields"
            raise BadSeries(f"expected 2 fields (timestamp,value), found {what}", source=source, line=number)
    if len(body) < 2:
        raise HistoryTooShort(f"only {len(body)} data row(s); at least 2 are needed to tell the interval",
                              source=source)
    raw_times = [row[0].strip() for row in body]
    raw_values = [row[1].strip() for row in body]

    times = pd.to_datetime(pd.Series(raw_times), format="ISO8601", utc=True, errors="coerce")
    bad_time = np.flatnonzero(times.isna().to_numpy())
    if bad_time.size:
        i = int(bad_time[0])
        raise BadSeries(f"unparseable timestamp {raw_times[i]!r} (expected ISO-8601, e.g. 2024-05-01T12:00:00Z)",
                        source=source, line=i + 2)
    values = pd.to_numeric(pd.Series(raw_values), errors="coerce").to_numpy(dtype=np.float64)
    bad_value = np.flatnonzero(~np.isfinite(values))
    if bad_value.size:
        i = int(bad_value[0])
        raise BadSeries(f"value {raw_values[i]!r} is not a finite number", source=source, line=i + 2)
    negative = np.flatnonzero(values < 0)
    if negative.size:
        i = int(negative[0])
        raise BadSeries(f"negative value {raw_values[i]!r}; a request count cannot be negative",
                        source=source, line=i + 2)

    stamps = pd.DatetimeIndex(times).as_unit("ns").asi8
    steps = np.diff(stamps)
    not_after = np.flatnonzero(steps <= 0)
    if not_after.size:
        i = int(not_after[0]) + 1
        problem = "duplicate timestamp" if steps[i - 1] == 0 else "timestamp earlier than the row before"
        raise BadSeries(f"{problem} {raw_times[i]!r} (rows must be strictly increasing)", source=source, line=i + 2)
    spacing, counts = np.unique(steps, return_counts=True)
    interval_ns = int(spacing[np.argmax(counts)])
    if interval_ns % _NS:
        raise BadSeries(f"the rows are {interval_ns / _NS:g} s apart; the interval must be whole seconds",
                        source=source)
    return CountRows(source=source, timestamps_ns=stamps, counts=values, interval_seconds=interval_ns // _NS)


def default_step_seconds(interval_seconds: int) -> int:
    """The model step for a source interval: at least 15 min, and a whole number of intervals."""
    return interval_seconds * max(1, math.ceil(DEFAULT_MIN_STEP_SECONDS / interval_seconds))


def counts_to_tps(
    rows: CountRows,
    *,
    step_seconds: int | None = None,
    absent: AbsentRows = "missing",
    max_zero_gap_seconds: int = DEFAULT_MAX_ZERO_GAP_SECONDS,
    name: str | None = None,
) -> pd.Series:
    """Sum counts into epoch-aligned steps and divide by the step: a regular TPS series.

    A step is known only when every source interval inside it is known (listed, or an
    absent row read as zero under ``absent="zero"``); otherwise it is ``NaN``, because a
    partial sum would look like a traffic drop.
    """
    interval = rows.interval_seconds
    step = step_seconds or default_step_seconds(interval)
    if step < interval or step % interval:
        raise BadSeries(f"a step of {step} s is not a whole multiple of the data's {interval} s interval",
                        source=rows.source)
    interval_ns, step_ns = interval * _NS, step * _NS
    offsets = rows.timestamps_ns - rows.timestamps_ns[0]
    if np.any(offsets % interval_ns):
        raise BadSeries(f"timestamps do not fall on a regular {interval} s grid; "
                        "resample the data to a fixed interval first", source=rows.source)

    # One slot per source interval between the first and last row; absent rows are NaN.
    slots = np.full(int(offsets[-1] // interval_ns) + 1, np.nan)
    slots[offsets // interval_ns] = rows.counts
    if absent == "zero":
        _fill_short_gaps(slots, max_gap_slots=max_zero_gap_seconds // interval)

    slot_times = rows.timestamps_ns[0] + np.arange(slots.size, dtype=np.int64) * interval_ns
    buckets = slot_times // step_ns
    first_bucket = int(buckets[0])
    index = buckets - first_bucket
    known = ~np.isnan(slots)
    n_buckets = int(index[-1]) + 1
    sums = np.bincount(index, weights=np.where(known, slots, 0.0), minlength=n_buckets)
    filled = np.bincount(index, weights=known.astype(np.float64), minlength=n_buckets)
    tps = np.where(filled == step // interval, sums / step, np.nan)

    start = pd.Timestamp(first_bucket * step_ns, unit="ns", tz="UTC")
    series = pd.Series(tps, index=pd.date_range(start, periods=n_buckets, freq=pd.Timedelta(seconds=step)),
                       name=name or Path(rows.source).stem)
    # The first and last steps usually straddle the ends of the file: partial, hence unknown.
    return _trim_unknown_ends(series)


def load_csv(
    path: Path | str,
    *,
    step_seconds: int | None = None,
    absent: AbsentRows = "missing",
    max_zero_gap_seconds: int = DEFAULT_MAX_ZERO_GAP_SECONDS,
    name: str | None = None,
) -> pd.Series:
    """Read a count CSV and return the regular TPS series (see the module docstring)."""
    rows = read_counts_csv(path)
    return counts_to_tps(rows, step_seconds=step_seconds, absent=absent,
                         max_zero_gap_seconds=max_zero_gap_seconds, name=name)


def regularize(history: pd.Series, step_seconds: int, *, source: str = "history") -> pd.Series:
    """Any TPS series (irregular, or at another step) onto the epoch-aligned grid: mean per step.

    Steps without a sample are ``NaN``. Already-regular input comes back unchanged.
    """
    start_ns = utc_stamps(history, source)
    values = _checked_values(history, source)
    step_ns = step_seconds * _NS
    if values.size == 0:
        raise HistoryTooShort("the history is empty", source=source)
    if _is_on_grid(start_ns, step_ns):
        return history.astype(np.float64)
    buckets = start_ns // step_ns
    index = buckets - buckets[0]
    n = int(index[-1]) + 1
    known = ~np.isnan(values)
    sums = np.bincount(index, weights=np.where(known, values, 0.0), minlength=n)
    seen = np.bincount(index, weights=known.astype(np.float64), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(seen > 0, sums / np.maximum(seen, 1.0), np.nan)
    start = pd.Timestamp(int(buckets[0]) * step_ns, unit="ns", tz="UTC")
    return pd.Series(means, index=pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=step_seconds)),
                     name=history.name)


def require_history(series: pd.Series, min_steps: int, step_seconds: int, *, source: str) -> None:
    """Refuse a series with fewer known steps than ``min_steps``, saying the minimum."""
    known = int(series.notna().sum())
    if known < min_steps:
        raise HistoryTooShort(
            f"{known} known steps ({_human(known * step_seconds)}) of history; the model needs at least "
            f"{min_steps} steps of {_human(step_seconds)} ({_human(min_steps * step_seconds)})",
            source=source)


def utc_stamps(history: pd.Series, source: str) -> np.ndarray:
    """The index as int64 UTC nanoseconds, after checking it is a strictly increasing UTC DatetimeIndex."""
    index = history.index
    if not isinstance(index, pd.DatetimeIndex):
        raise BadSeries("the history must be indexed by timestamps (a DatetimeIndex)", source=source)
    if index.tz is None:
        raise BadSeries("the history's timestamps have no time zone; give them in UTC", source=source)
    if not (index.is_monotonic_increasing and index.is_unique):
        raise BadSeries("the history's timestamps are not strictly increasing", source=source)
    # asi8 counts from the epoch in UTC whatever the zone; only the unit may need converting.
    return index.asi8 if index.unit == "ns" else index.as_unit("ns").asi8


def _checked_values(history: pd.Series, source: str) -> np.ndarray:
    return checked(float_values(history, source), source)


def float_values(history: pd.Series, source: str) -> np.ndarray:
    """The values as float64: a view when they already are (read-only under copy-on-write)."""
    if history.dtype == np.float64:
        return history.to_numpy()  # a view: no copy, no conversion on the hot path
    try:
        return history.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise BadSeries("the history's values are not numbers", source=source) from None


def checked(values: np.ndarray, source: str) -> np.ndarray:
    """``values``, or :class:`BadSeries` naming a negative or infinite one (``NaN`` is allowed)."""
    # fmin/fmax skip NaN (unknown steps are allowed); two reductions, no temporaries.
    if values.size and (np.fmin.reduce(values) < 0 or np.fmax.reduce(values) == np.inf):
        raise BadSeries("the history has negative or infinite values; TPS must be finite and >= 0",
                        source=source)
    return values


def _is_on_grid(stamps_ns: np.ndarray, step_ns: int) -> bool:
    return bool(stamps_ns.size == 0 or (not np.any(stamps_ns % step_ns)
                                        and (stamps_ns.size < 2 or np.all(np.diff(stamps_ns) >= step_ns))))


def _fill_short_gaps(slots: np.ndarray, *, max_gap_slots: int) -> None:
    """Set runs of at most ``max_gap_slots`` NaNs to zero, in place; longer runs stay NaN."""
    missing = np.isnan(slots).astype(np.int8)
    edges = np.diff(np.concatenate(([0], missing, [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for start, end in zip(starts, ends, strict=True):
        if end - start <= max_gap_slots:
            slots[start:end] = 0.0


def _trim_unknown_ends(series: pd.Series) -> pd.Series:
    known = np.flatnonzero(series.notna().to_numpy())
    if known.size == 0:
        return series.iloc[:0]
    return series.iloc[int(known[0]) : int(known[-1]) + 1]


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
