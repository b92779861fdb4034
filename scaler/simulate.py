"""``harbinger simulate``: train the real forecaster on the first part of a trace, then replay
the rest through the HPA, Harbinger and the oracle (:mod:`scaler.replay`).

The forecaster is the shipped one end to end: :func:`models.training.train` on the
training part at the model's default step, exported to ONNX with
:func:`models.export.export_model`, loaded by :class:`models.serving.Forecaster`, and
asked to forecast from the history the replay has seen so far, rolling forward.

The default profile (used when no ``--profile`` is given) sizes one replica to the
trace's own level, so that every trace exercises a realistic 5-50 replicas whatever its
units: ``rps_per_replica`` is the 95th percentile of the *training* part's demand divided
by :data:`REPLICAS_AT_P95` (no peek at the replayed part); every other field is the
:class:`CapacityProfile` default (60 s warm-up, 20 % headroom, min 1) except
``max_replicas``, raised to 1000 so the bound never hides a difference between strategies.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, load_profiles, parse_profile
from models.export import export_model
from models.series import AbsentRows, counts_to_tps, default_step_seconds, read_counts_csv
from models.serving import Forecaster
from models.training import TrainingConfig, train
from scaler.replay import Replay, replay
from scaler.trace import ACCESS_LOG_INTERVAL_SECONDS, trace_from_rate

#: The default profile puts the training part's 95th-percentile demand at this many replicas.
REPLICAS_AT_P95 = 25
DEFAULT_MAX_REPLICAS = 1000
DEFAULT_TRAIN_FRACTION = 0.7


@dataclass(frozen=True)
class SimulationSetup:
    train_fraction: float = DEFAULT_TRAIN_FRACTION
    #: Replay at most this many days after the training part (None: to the end of the trace).
    replay_days: float | None = None
    training: TrainingConfig | None = None


def default_profile(training_demand: np.ndarray) -> CapacityProfile:
    known = training_demand[~np.isnan(training_demand)]
    if known.size == 0 or float(np.percentile(known, 95)) <= 0:
        raise InvalidInput("the training part of the trace has no traffic to size a replica from", source="trace")
    return CapacityProfile(rps_per_replica=float(np.percentile(known, 95)) / REPLICAS_AT_P95,
                           max_replicas=DEFAULT_MAX_REPLICAS)


def read_profile(path: Path, service: str) -> CapacityProfile:
    """A profile YAML: either one profile's fields, or ``{defaults, services}`` as the
    planner reads it (the trace's name picks the service, else the defaults)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read the profile: {exc.strerror}", source=str(path)) from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f"not valid YAML: {exc}", source=str(path)) from exc
    if isinstance(data, dict) and "services" in data:
        profiles = load_profiles(path)
        if service in profiles:
            return profiles[service]
        return parse_profile(data.get("defaults") or {}, source=f"{path}: defaults")
    return parse_profile(data, source=str(path))


def simulate(trace_path: Path, *, profile: CapacityProfile | None = None,
             setup: SimulationSetup = SimulationSetup(), models_dir: Path | None = None) -> Replay:
    """Train on the first ``train_fraction`` of the trace and replay the rest."""
    if not 0 < setup.train_fraction < 1:
        raise InvalidInput(f"the training fraction must be between 0 and 1, got {setup.train_fraction}",
                           source="--train-fraction")
    rows = read_counts_csv(trace_path)
    name = trace_path.stem
    absent: AbsentRows = "zero" if rows.interval_seconds <= ACCESS_LOG_INTERVAL_SECONDS else "missing"
    rate = counts_to_tps(rows, step_seconds=rows.interval_seconds, absent=absent, name=name)
    trace = trace_from_rate(rate, rows.interval_seconds, name=name)
    split = rate.index[0] + (rate.index[-1] - rate.index[0]) * setup.train_fraction
    split = split.floor(f"{default_step_seconds(rows.interval_seconds)}s")

    model_rate = counts_to_tps(rows, step_seconds=default_step_seconds(rows.interval_seconds), absent=absent,
                               name=name)
    training = model_rate[model_rate.index < split]
    model = train(training, service=name, config=setup.training)
    with tempfile.TemporaryDirectory(prefix="harbinger-simulate-") as scratch:
        directory = (models_dir or Path(scratch)) / name
        export_model(model, directory)
        forecaster = Forecaster.load(directory)

    first = trace.tick_at(split.to_pydatetime())
    last = len(trace.demand)
    if setup.replay_days is not None:
        last = min(last, first + int(setup.replay_days * 86_400 // trace.tick_seconds))
    profile = profile or default_profile(trace.demand[:first])
    return replay(trace, profile, forecaster, first_tick=first, last_tick=last, history=model_rate)


def plot(result: Replay, path: Path) -> None:
    """Demand and the ready capacity of each strategy over the replayed window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demand = result.demand
    figure, axis = plt.subplots(figsize=(14, 5))
    axis.plot(demand.index, demand.to_numpy(), color="black", linewidth=0.7, label="demand (req/s)")
    per_replica = result.profile.rps_per_replica
    colours = {"hpa": "tab:red", "harbinger": "tab:blue", "oracle": "tab:green"}
    for outcome in (result.hpa, result.harbinger, result.oracle):
        axis.step(demand.index, outcome.ready * per_replica, where="post", color=colours[outcome.strategy],
                  linewidth=0.8, label=f"{outcome.strategy}: ready capacity "
                  f"({outcome.under_minutes:.0f} min under, {outcome.replica_hours:.0f} replica-h)")
    axis.set_title(f"{result.trace}: demand and ready capacity ({per_replica:.3g} req/s per replica)")
    axis.set_ylabel("requests/s")
    axis.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summary_json(result: Replay) -> dict[str, Any]:
    return result.summary()
