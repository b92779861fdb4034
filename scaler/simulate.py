"""``harbinger simulate``: learn Harbinger's floor policy on the first part of a trace, then
replay the rest through the HPA swept over its target, Harbinger and the oracle
(:mod:`scaler.replay`), scored at the trace's own resolution.

* **Split.** The first ``train_fraction`` (0.7) of the trace's span, cut on an interval
  boundary, is history; the rest is scored. Nothing is chosen by looking at the scored part.
* **The service** (when no ``--profile`` is given): a replica saturates at the training
  part's 95th-percentile rate / (:data:`REPLICAS_AT_P95` x 0.8), so that every trace, whatever
  its units, runs at about 5-50 replicas; 60 s warm-up; min 1, max 1000. With a profile: its
  ``saturation_rps_per_replica``, ``warmup_seconds``, ``min_replicas``, ``max_replicas``.
  The pod's capacity is the same for every strategy and every HPA target.
* **HPA**: the Kubernetes algorithm (:mod:`scaler.hpa`) on a windowed rate one scrape late, at
  each target of :data:`scaler.replay.HPA_TARGETS`.
* **Harbinger**: the HPA at the learned fallback target with the learned floor
  (:mod:`scaler.headroom`), the floor computed by the controller's own code
  (:func:`scaler.headroom.controller_floor_ticks`). The policy is learned on the last
  :data:`TUNING_DAYS` days of the training part (plus a day that only warms up the forecast
  and the HPA), a bound on the replay's run time; the controller learns on its last week.
* **Oracle**: knows the future; **hindsight floor**: the HPA at the reference target (0.8)
  whose floor is the oracle's pods (a floor planner with a perfect forecast and no margin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, load_profiles, parse_profile
from models.series import AbsentRows, counts_to_tps, read_counts_csv
from scaler.headroom import DAY, FloorPolicy, controller_floor_ticks, learn_policy
from scaler.replay import (
    HPA_TARGETS,
    REFERENCE_TARGET,
    Figures,
    Run,
    Service,
    metric_window_seconds,
    observed_rate,
    oracle_alive,
    run_hpa,
    run_oracle,
    score,
)
from scaler.trace import ACCESS_LOG_INTERVAL_SECONDS, Trace, trace_from_rate

#: The default service puts the training part's 95th-percentile rate at this many replicas
#: at the reference target.
REPLICAS_AT_P95 = 25
DEFAULT_MAX_REPLICAS = 1000
DEFAULT_TRAIN_FRACTION = 0.7
#: Days at the end of the training part the policy is learned on.
TUNING_DAYS = 21


@dataclass(frozen=True)
class SimulationSetup:
    train_fraction: float = DEFAULT_TRAIN_FRACTION
    #: Score at most this many days after the training part (None: to the end of the trace).
    replay_days: float | None = None
    #: The HPA's rate window (None: 60 s, or the trace's interval when coarser).
    window_seconds: int | None = None
    tuning_days: float = TUNING_DAYS


def default_service(training_rate: np.ndarray) -> Service:
    """The documented default service (module docstring) from the training part's rates."""
    known = training_rate[~np.isnan(training_rate)]
    if known.size == 0 or float(np.percentile(known, 95)) <= 0:
        raise InvalidInput("the training part of the trace has no traffic to size a replica from", source="trace")
    return Service(saturation=float(np.percentile(known, 95)) / (REPLICAS_AT_P95 * REFERENCE_TARGET),
                   max_replicas=DEFAULT_MAX_REPLICAS)


def service_from_profile(profile: CapacityProfile) -> Service:
    return Service(saturation=profile.saturation_rps_per_replica, warmup_seconds=profile.warmup_seconds,
                   min_replicas=profile.min_replicas, max_replicas=profile.max_replicas)


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


def load(trace_path: Path) -> Trace:
    rows = read_counts_csv(trace_path)
    absent: AbsentRows = "zero" if rows.interval_seconds <= ACCESS_LOG_INTERVAL_SECONDS else "missing"
    name = trace_path.stem
    rate = counts_to_tps(rows, step_seconds=rows.interval_seconds, absent=absent, name=name)
    return trace_from_rate(rate, rows.interval_seconds, name=name)


@dataclass(frozen=True)
class Simulation:
    trace: Trace
    service: Service
    policy: FloorPolicy
    first_tick: int
    last_tick: int
    window_seconds: int
    hpa: dict[float, Figures]
    harbinger: Figures
    oracle: Figures
    hindsight: Figures
    #: The runs behind the figures, for plots: "hpa@0.8", "harbinger", "oracle", "hindsight".
    runs: dict[str, Run] = field(default_factory=dict, compare=False, repr=False)

    @property
    def intervals(self) -> int:
        return self.harbinger.intervals

    def summary(self) -> dict[str, Any]:
        """The documented JSON of ``harbinger simulate --json``."""
        return {
            "trace": self.trace.name,
            "step_seconds": self.trace.interval_seconds,
            "intervals": self.intervals,
            "hpa": [{"target": target, **figures.as_dict()} for target, figures in self.hpa.items()],
            "harbinger": {**self.harbinger.as_dict(), "fallback_target": self.policy.fallback_target},
            "oracle": self.oracle.as_dict(),
        }


def split_tick(trace: Trace, train_fraction: float) -> int:
    """The first scored tick: ``train_fraction`` of the span, on an interval boundary."""
    if not 0 < train_fraction < 1:
        raise InvalidInput(f"the training fraction must be between 0 and 1, got {train_fraction}",
                           source="--train-fraction")
    intervals = len(trace.rate)
    split = int(intervals * train_fraction)
    if not 2 <= split <= intervals - 2:
        raise InvalidInput(f"{intervals} intervals cannot be split into training and scored parts", source=trace.name)
    return split * (trace.interval_seconds // trace.tick_seconds)


def simulate(trace_path: Path, *, profile: CapacityProfile | None = None,
             setup: SimulationSetup = SimulationSetup()) -> Simulation:
    """Learn on the first ``train_fraction`` of the trace and score the rest (module docstring)."""
    trace = load(trace_path)
    return simulate_trace(trace, profile=profile, setup=setup)


def simulate_trace(trace: Trace, *, profile: CapacityProfile | None = None,
                   setup: SimulationSetup = SimulationSetup()) -> Simulation:
    tick = trace.tick_seconds
    per = trace.interval_seconds // tick
    first = split_tick(trace, setup.train_fraction)
    last = len(trace.demand)
    if setup.replay_days is not None:
        last = min(last, first + max(1, int(setup.replay_days * DAY // trace.interval_seconds)) * per)
    values = trace.rate.to_numpy(dtype=np.float64, na_value=np.nan)
    training = values[: first // per]
    service = service_from_profile(profile) if profile is not None else default_service(training)
    keep = int((setup.tuning_days * DAY + DAY) // trace.interval_seconds)
    tuning = training[-keep:]
    policy = learn_policy(tuning, trace.interval_seconds, service, tick_seconds=tick,
                          window_seconds=setup.window_seconds, warm_intervals=min(DAY // trace.interval_seconds,
                                                                                  len(tuning) // 2))
    window = metric_window_seconds(trace.interval_seconds, setup.window_seconds)
    metric = observed_rate(trace.demand, tick, window)

    def scored(run: Run) -> Figures:
        return score(trace.demand, per, tick, service, run)

    runs: dict[str, Run] = {}
    hpa: dict[float, Figures] = {}
    for target in HPA_TARGETS:
        run = run_hpa(trace.demand, metric, tick, service, target, first, last)
        runs[f"hpa@{target}"] = run
        hpa[target] = scored(run)
    floor = None if policy.margin is None else controller_floor_ticks(trace.rate, policy, service, tick, first, last)
    runs["harbinger"] = run_hpa(trace.demand, metric, tick, service, policy.fallback_target, first, last, floor)
    runs["oracle"] = run_oracle(trace.demand, tick, service, first, last)
    runs["hindsight"] = run_hpa(trace.demand, metric, tick, service, REFERENCE_TARGET, first, last,
                                oracle_alive(trace.demand, tick, service, first, last))
    return Simulation(trace=trace, service=service, policy=policy, first_tick=first, last_tick=last,
                      window_seconds=window, hpa=hpa, harbinger=scored(runs["harbinger"]),
                      oracle=scored(runs["oracle"]), hindsight=scored(runs["hindsight"]), runs=runs)


def plot_curve(result: Simulation, path: Path) -> None:
    """The HPA's cost/violation curve over its targets, Harbinger's point, the oracle and
    the hindsight floor, on one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    xs = [f.replica_hours for f in result.hpa.values()]
    ys = [max(f.violations, 0.5) for f in result.hpa.values()]
    axis.plot(xs, ys, "o-", color="tab:red", label="HPA, target swept (fixed pod capacity)")
    for target, x, y in zip(result.hpa, xs, ys, strict=True):
        axis.annotate(f"{target}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    points = {"Harbinger": (result.harbinger, "tab:blue", "*"), "oracle": (result.oracle, "tab:green", "s"),
              "hindsight floor": (result.hindsight, "tab:purple", "D")}
    for label, (figures, colour, marker) in points.items():
        extra = f" (fallback target {result.policy.fallback_target})" if label == "Harbinger" else ""
        axis.plot([figures.replica_hours], [max(figures.violations, 0.5)], marker, color=colour, markersize=10,
                  label=f"{label}{extra}: {figures.violations} violations, {figures.replica_hours:.0f} replica-h")
    axis.set_yscale("log")
    axis.set_xlabel("replica-hours over the scored part")
    axis.set_ylabel(f"violations (of {result.intervals} intervals; 0 drawn at 0.5)")
    axis.set_title(f"{result.trace.name}: {result.trace.interval_seconds} s intervals, "
                   f"HPA metric {result.window_seconds} s rate one scrape late")
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
