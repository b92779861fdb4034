"""The shipped traffic traces (``../shared/data/traces``) and how to read each one.

How an absent row reads differs per trace; this table records what the traces'
README says, so that tests, the backtest and the benchmark read them the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harbinger_dev import REPO_ROOT
from models.errors import BadSeries
from models.events import Event, load_events
from models.series import AbsentRows, load_csv

TRACES_ENV = "HARBINGER_TRACES_DIR"
#: Public, dated events for the shipped traces (holidays, storms), given to every model alike.
EVENTS_DIR = Path(__file__).resolve().parent / "trace_events"


@dataclass(frozen=True)
class TraceProfile:
    name: str
    #: README: nasa and fifa list only minutes with a logged request; absent minutes outside
    #: the outages are zeros. elb (CloudWatch) and nyc_taxi (a DST merge) have true gaps.
    absent: AbsentRows


TRACES: tuple[TraceProfile, ...] = (
    TraceProfile("nasa", "zero"),
    TraceProfile("fifa", "zero"),
    TraceProfile("elb_request_count_8c0756", "missing"),
    TraceProfile("nyc_taxi", "missing"),
)


def traces_dir() -> Path:
    """``$HARBINGER_TRACES_DIR``, else ``<repo>/../shared/data/traces``; refuses a missing directory."""
    path = Path(os.environ.get(TRACES_ENV) or REPO_ROOT.parent / "shared" / "data" / "traces")
    if not path.is_dir():
        raise BadSeries(f"the traces directory {path} does not exist; set {TRACES_ENV} to the directory "
                        "holding nasa.csv, fifa.csv, ...", source=TRACES_ENV)
    return path


def profile(name: str) -> TraceProfile:
    for trace in TRACES:
        if trace.name == name:
            return trace
    raise BadSeries(f"unknown trace {name!r}; known: {', '.join(t.name for t in TRACES)}")


def trace_events(name: str) -> list[Event]:
    """The events shipped for a trace (``harbinger_dev/trace_events/<name>.yaml``); none if there is no file."""
    path = EVENTS_DIR / f"{profile(name).name}.yaml"
    return load_events(path) if path.exists() else []


def load_trace(name: str, *, step_seconds: int | None = None) -> pd.Series:
    """A shipped trace as a regular TPS series, read as its README says."""
    trace = profile(name)
    return load_csv(traces_dir() / f"{name}.csv", step_seconds=step_seconds, absent=trace.absent, name=name)
