"""``harbinger simulate``: train the real forecaster on the first part of a trace, then replay
the rest through the HPA, Harbinger and the oracle (:mod:`scaler.replay`).

The forecaster is the shipped one end to end: :func:`models.training.train` on the
training part at the model's default step, exported to ONNX with
:func:`models.export.export_model`, loaded by :class:`models.serving.Forecaster`, and
asked to forecast from the history the replay has seen so far, rolling forward.

The default profile (used when no ``--profile`` is given) is learned from the *training*
part of the trace only (no peek at the replayed part), by one rule for every trace:

* ``rps_per_replica``: the training part's 95th-percentile demand / :data:`REPLICAS_AT_P95`,
  so that every trace exercises a realistic 5-50 replicas whatever its units;
* ``target_utilization``: the profile default, 0.8 (a replica saturates at 1.25x its target);
* ``burst_dispersion``: :func:`scaler.trace.burst_dispersion` at the forecaster's step, the
  90th percentile over training steps of (peak - mean) / sqrt(mean): the in-step peak is
  planned as P50 + dispersion x sqrt(P50), a margin that is a large share of a quiet step's
  mean and a small share of a busy one's; ``burst_factor`` stays 1 (no ratio term);
* ``plan_quantile: p50`` and ``headroom`` 0: the floor keeps the median forecast's in-step
  peak below saturation (the learned dispersion is the margin; see :mod:`scaler.plan`);
* ``max_replicas`` 1000 so the bound never hides a difference between strategies; every
  other field is the :class:`CapacityProfile` default (60 s warm-up, min 1).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, load_profiles, parse_profile
from models.export import export_model
from models.series import AbsentRows, counts_to_tps, default_step_seconds, read_counts_csv
from models.serving import Forecaster
from models.training import TrainingConfig, train
from scaler.replay import Replay, replay
from scaler.trace import ACCESS_LOG_INTERVAL_SECONDS, TICK_SECONDS, Trace, burst_dispersion, trace_from_rate

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


def default_profile(training_demand: np.ndarray, *, tick_seconds: int = TICK_SECONDS,
                    step_seconds: int | None = None) -> CapacityProfile:
    """The documented default profile (module docstring), from per-tick training demand that
    starts on a forecast-step boundary; without ``step_seconds`` no burst is learned."""
    known = training_demand[~np.isnan(training_demand)]
    if known.size == 0 or float(np.percentile(known, 95)) <= 0:
        raise InvalidInput("the training part of the trace has no traffic to size a replica from", source="trace")
    dispersion = 0.0 if step_seconds is None else burst_dispersion(training_demand, tick_seconds, step_seconds)
    return CapacityProfile(rps_per_replica=float(np.percentile(known, 95)) / REPLICAS_AT_P95,
                           max_replicas=DEFAULT_MAX_REPLICAS, plan_quantile="p50", headroom=0.0,
                           burst_dispersion=dispersion)


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


@dataclass(frozen=True)
class Prepared:
    """A trace split into training and replay, with the forecaster trained on the former."""

    trace: Trace
    forecaster: Forecaster
    #: The trace's rate at the model's step: what the forecaster is fed.
    history: pd.Series
    first_tick: int
    last_tick: int
    #: The documented default profile, learned from the training part (None: the training
    #: part has no traffic to learn one from, so only a declared profile can be replayed).
    profile: CapacityProfile | None
    #: Why there is no default profile.
    no_profile_reason: InvalidInput | None = None
    #: The first tick of the training part on the forecaster's step grid: what the burst
    #: terms of a profile are learned from is ``trace.demand[training_start_tick:first_tick]``.
    training_start_tick: int = 0


def prepare(trace_path: Path, *, setup: SimulationSetup = SimulationSetup(),
            models_dir: Path | None = None) -> Prepared:
    """Read the trace, train on the first ``train_fraction`` and learn the default profile."""
    if not 0 < setup.train_fraction < 1:
        raise InvalidInput(f"the training fraction must be between 0 and 1, got {setup.train_fraction}",
                           source="--train-fraction")
    rows = read_counts_csv(trace_path)
    name = trace_path.stem
    absent: AbsentRows = "zero" if rows.interval_seconds <= ACCESS_LOG_INTERVAL_SECONDS else "missing"
    rate = counts_to_tps(rows, step_seconds=rows.interval_seconds, absent=absent, name=name)
    trace = trace_from_rate(rate, rows.interval_seconds, name=name)
    model_step = default_step_seconds(rows.interval_seconds)
    split = rate.index[0] + (rate.index[-1] - rate.index[0]) * setup.train_fraction
    split = split.floor(f"{model_step}s")

    model_rate = counts_to_tps(rows, step_seconds=model_step, absent=absent, name=name)
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
    # The burst dispersion is learned on whole forecast steps, which start on the model's grid.
    aligned = trace.tick_at(pd.Timestamp(trace.start).ceil(f"{forecaster.step_seconds}s").to_pydatetime())
    try:
        profile: CapacityProfile | None = default_profile(
            trace.demand[aligned:first], tick_seconds=trace.tick_seconds, step_seconds=forecaster.step_seconds)
        reason = None
    except InvalidInput as exc:
        profile, reason = None, exc
    return Prepared(trace=trace, forecaster=forecaster, history=model_rate, first_tick=first, last_tick=last,
                    profile=profile, no_profile_reason=reason, training_start_tick=aligned)


def simulate(trace_path: Path, *, profile: CapacityProfile | None = None,
             setup: SimulationSetup = SimulationSetup(), models_dir: Path | None = None) -> Replay:
    """Train on the first ``train_fraction`` of the trace and replay the rest."""
    prepared = prepare(trace_path, setup=setup, models_dir=models_dir)
    profile = profile or prepared.profile
    if profile is None:
        assert prepared.no_profile_reason is not None
        raise prepared.no_profile_reason
    return replay_prepared(prepared, profile)


def replay_prepared(prepared: Prepared, profile: CapacityProfile) -> Replay:
    return replay(prepared.trace, profile, prepared.forecaster, first_tick=prepared.first_tick,
                  last_tick=prepared.last_tick, history=prepared.history)


def plot(result: Replay, path: Path) -> None:
    """Demand and the ready capacity of each strategy over the replayed window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demand = result.demand
    figure, axis = plt.subplots(figsize=(14, 5))
    axis.plot(demand.index, demand.to_numpy(), color="black", linewidth=0.7, label="demand (req/s)")
    # Ready pods at saturation: the capacity the under-capacity figures are measured against.
    per_replica = result.profile.saturation_rps_per_replica
    colours = {"hpa": "tab:red", "harbinger": "tab:blue", "oracle": "tab:green"}
    for outcome in (result.hpa, result.harbinger, result.oracle):
        axis.step(demand.index, outcome.ready * per_replica, where="post", color=colours[outcome.strategy],
                  linewidth=0.8, label=f"{outcome.strategy}: ready capacity at saturation "
                  f"({outcome.under_minutes:.0f} min under, {outcome.replica_hours:.0f} replica-h)")
    axis.set_title(f"{result.trace}: demand and ready capacity ({per_replica:.3g} req/s per replica at saturation, "
                   f"HPA target {result.profile.rps_per_replica:.3g})")
    axis.set_ylabel("requests/s")
    axis.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summary_json(result: Replay) -> dict[str, Any]:
    return result.summary()
