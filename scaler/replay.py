"""Replay a traffic trace through the Kubernetes HPA as it behaves in a cluster, with or without
a floor (Harbinger's planner), and through an oracle; score every strategy at the trace's own
resolution.

The model, tick by tick (15 s, the HPA's sync period):

* **Demand** is the trace's rate, uniform within each recorded interval
  (:mod:`scaler.trace`): nothing finer than the trace is invented.
* **The metric the HPA sees** (:func:`observed_rate`) is a rate over a window (default
  :data:`DEFAULT_WINDOW_SECONDS`, or the trace's own interval when coarser: a 30-minute trace
  cannot show a 1-minute rate), one scrape (:data:`SCRAPE_SECONDS`) late: at a sync at ``t``
  the HPA reads the mean demand over ``[t - 15 s - window, t - 15 s)``.
* **The HPA** (:mod:`scaler.hpa`) aims each ready pod at ``target x saturation``; a pod serves
  up to ``saturation`` requests/s, whatever the target (fixed pod capacity), and only
  ``warmup_seconds`` after it was created. Scale-down removes the newest pods first.
* **A floor** (``floor[t]``, Harbinger's) is the HPA's ``minReplicas`` at tick ``t``.
* **The oracle** knows future demand and creates each pod exactly its warm-up before it is
  needed: ``ceil(rate / saturation)`` ready at every tick, no tolerance, no hold.

Scored per recorded interval of the trace whose rate is known (:func:`score`):

* ``violations``: intervals whose rate exceeds the ready capacity averaged over the interval
  (mean over its ticks of ready pods x saturation);
* ``unserved_share``: requests above the ready capacity (tick by tick, with the interval's
  rate uniform inside it) over all requests;
* ``replica_hours``: pods alive (warming or ready) x hours; ``changes``: how many times the
  replica count changed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harbinger.errors import InvalidInput
from scaler.hpa import HorizontalPodAutoscaler

#: One Prometheus scrape: how late the HPA's metric is.
SCRAPE_SECONDS = 15
#: The HPA's rate window, unless the trace's interval is coarser.
DEFAULT_WINDOW_SECONDS = 60
#: The HPA target utilizations the baseline is swept over, at fixed pod capacity.
HPA_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The target the acceptance bar's "HPA" is (the common production CPU target).
REFERENCE_TARGET = 0.8


@dataclass(frozen=True)
class Service:
    """What one replica of the replayed Deployment can do, whatever autoscales it."""

    #: Requests/s one ready replica serves.
    saturation: float
    warmup_seconds: float = 60.0
    min_replicas: int = 1
    max_replicas: int = 1000

    def __post_init__(self) -> None:
        if not (self.saturation > 0 and math.isfinite(self.saturation)):
            raise InvalidInput(f"a replica's capacity must be a positive number, got {self.saturation}",
                               source="service")
        if self.warmup_seconds < 0 or not 0 <= self.min_replicas <= self.max_replicas:
            raise InvalidInput("warm-up must be >= 0 and 0 <= min_replicas <= max_replicas", source="service")

    def need(self, rate: np.ndarray) -> np.ndarray:
        """Replicas that serve ``rate`` at saturation, within min and max (NaN -> min)."""
        replicas = np.ceil(np.nan_to_num(rate, nan=0.0) / self.saturation - 1e-9)
        clipped: np.ndarray = np.clip(replicas, self.min_replicas, self.max_replicas).astype(np.int64)
        return clipped


def metric_window_seconds(interval_seconds: int, window_seconds: int | None = None) -> int:
    """The HPA's rate window: ``window_seconds`` (default 60 s), never finer than the trace."""
    return max(window_seconds or DEFAULT_WINDOW_SECONDS, interval_seconds)


def observed_rate(demand: np.ndarray, tick_seconds: int, window_seconds: int,
                  delay_seconds: int = SCRAPE_SECONDS) -> np.ndarray:
    """What the HPA reads at each tick: the mean known demand over
    ``[t - delay - window, t - delay)``; NaN where none of it is known (no metric)."""
    if window_seconds % tick_seconds or delay_seconds % tick_seconds or window_seconds <= 0:
        raise InvalidInput(f"window {window_seconds} s and delay {delay_seconds} s must be positive whole "
                           f"numbers of {tick_seconds} s ticks", source="metric")
    window, delay = window_seconds // tick_seconds, delay_seconds // tick_seconds
    known = ~np.isnan(demand)
    sums = np.concatenate([[0.0], np.cumsum(np.where(known, demand, 0.0))])
    counts = np.concatenate([[0], np.cumsum(known)])
    ticks = np.arange(len(demand))
    high = np.clip(ticks - delay, 0, len(demand))
    low = np.clip(ticks - delay - window, 0, len(demand))
    seen = counts[high] - counts[low]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, (sums[high] - sums[low]) / np.maximum(seen, 1), np.nan)


@dataclass(frozen=True)
class Run:
    """Pods alive (warming or ready) and ready at each tick of ``[first, first + len)``."""

    first: int
    alive: np.ndarray
    ready: np.ndarray


class PodSet:
    """The pods of one Deployment as their ready times, oldest first."""

    def __init__(self, replicas: int, now: float) -> None:
        self.ready_at: list[float] = [now] * replicas

    def scale(self, desired: int, now: float, warmup_seconds: float) -> None:
        if desired > len(self.ready_at):
            self.ready_at.extend([now + warmup_seconds] * (desired - len(self.ready_at)))
        else:
            del self.ready_at[desired:]  # newest (least ready) first

    def total(self) -> int:
        return len(self.ready_at)

    def ready(self, now: float) -> int:
        return bisect.bisect_right(self.ready_at, now)


def run_hpa(demand: np.ndarray, metric: np.ndarray, tick_seconds: int, service: Service, target: float,
            first: int, last: int, floor: np.ndarray | None = None) -> Run:
    """The HPA at ``target`` utilization over ticks ``[first, last)``, reading ``metric``
    (:func:`observed_rate`); ``floor[t - first]``, if given, is its minReplicas at tick ``t``.
    It starts with what its metric asks for (at least the floor), all ready."""
    if not 0 < target <= 1:
        raise InvalidInput(f"the HPA's target utilization must be in (0, 1], got {target}", source="hpa")
    if not 0 <= first < last <= len(demand):
        raise InvalidInput(f"replay window [{first}, {last}) is outside the trace's {len(demand)} ticks",
                           source="replay")
    hpa = HorizontalPodAutoscaler(target_per_pod=service.saturation * target,
                                  min_replicas=max(1, service.min_replicas), max_replicas=service.max_replicas)
    declared = hpa.min_replicas
    seen = metric[first]
    start = declared if math.isnan(seen) else math.ceil(seen / hpa.target_per_pod - 1e-9)
    if floor is not None:
        start = max(start, int(floor[0]))
    pods = PodSet(max(declared, min(service.max_replicas, start)), first * tick_seconds)
    alive = np.empty(last - first, dtype=np.int64)
    ready = np.empty(last - first, dtype=np.int64)
    warmup = service.warmup_seconds
    floors = None if floor is None else np.clip(floor, declared, service.max_replicas).astype(np.int64).tolist()
    readings = metric[first:last].tolist()
    for i in range(last - first):
        now = float((first + i) * tick_seconds)
        if floors is not None:
            hpa.min_replicas = floors[i]
        serving = pods.ready(now)
        desired = hpa.desired(now, readings[i], len(pods.ready_at), serving)
        pods.scale(desired, now, warmup)
        alive[i] = desired
        # New pods are not ready yet; removed ones were the newest, so the ready count only
        # drops when fewer pods than were ready are left.
        ready[i] = desired if warmup <= 0 else min(serving, desired)
    return Run(first, alive, ready)


def oracle_alive(demand: np.ndarray, tick_seconds: int, service: Service, first: int, last: int) -> np.ndarray:
    """Pods alive at ``t`` = the largest need over ``[t, t + warmup]``: a pod needed at ``s``
    must exist from ``s - warmup``, and none is kept longer."""
    level = pd.Series(demand[first:last]).ffill().fillna(0.0).to_numpy()
    need = service.need(level)
    ahead = math.ceil(service.warmup_seconds / tick_seconds)
    return pd.Series(need[::-1]).rolling(ahead + 1, min_periods=1).max().to_numpy()[::-1].astype(np.int64)


def run_schedule(alive: np.ndarray, tick_seconds: int, service: Service, first: int) -> Run:
    """Pods follow ``alive`` exactly (pods created at ``t`` ready at ``t + warmup``)."""
    pods = PodSet(int(alive[0]), first * tick_seconds)
    ready = np.empty(len(alive), dtype=np.int64)
    for i, count in enumerate(alive.tolist()):
        now = float((first + i) * tick_seconds)
        pods.scale(count, now, service.warmup_seconds)
        ready[i] = pods.ready(now)
    return Run(first, alive.astype(np.int64), ready)


def run_oracle(demand: np.ndarray, tick_seconds: int, service: Service, first: int, last: int) -> Run:
    return run_schedule(oracle_alive(demand, tick_seconds, service, first, last), tick_seconds, service, first)


@dataclass(frozen=True)
class Figures:
    violations: int
    intervals: int
    replica_hours: float
    unserved_share: float
    changes: int

    @property
    def violation_share(self) -> float:
        return self.violations / self.intervals if self.intervals else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"violations": self.violations, "replica_hours": round(self.replica_hours, 2),
                "unserved_share": round(self.unserved_share, 6), "changes": self.changes}


def score(demand: np.ndarray, ticks_per_interval: int, tick_seconds: int, service: Service, run: Run) -> Figures:
    """The figures of ``run`` (module docstring), over the recorded intervals that lie wholly
    inside it and whose rate is known. ``run.first`` must start an interval."""
    if run.first % ticks_per_interval:
        raise InvalidInput(f"tick {run.first} does not start a recorded interval", source="score")
    whole = (len(run.alive) // ticks_per_interval) * ticks_per_interval
    rates = demand[run.first : run.first + whole].reshape(-1, ticks_per_interval)
    ready = run.ready[:whole].reshape(-1, ticks_per_interval)
    alive = run.alive[:whole].reshape(-1, ticks_per_interval)
    known = ~np.isnan(rates[:, 0])
    rate = rates[known, 0]
    capacity = ready[known].mean(axis=1)
    # In replica units, with slack for float noise: a rate a hair above a whole number of
    # replicas is not a violation by rounding alone.
    violations = int(np.count_nonzero(rate / service.saturation > capacity + 1e-9))
    short = rates[known] - ready[known] * service.saturation
    # The same float slack as for violations.
    short = np.where(short > 1e-9 * service.saturation, short, 0.0)
    total = float(rates[known].sum())
    unserved = float(short.sum()) / total if total > 0 else 0.0
    return Figures(violations=violations, intervals=int(known.sum()),
                   replica_hours=float(alive[known].sum()) * tick_seconds / 3600,
                   unserved_share=max(unserved, 0.0),
                   changes=int(np.count_nonzero(np.diff(run.alive))))


def curve_violations(points: list[tuple[float, float]], replica_hours: float) -> float:
    """The HPA sweep's violations at ``replica_hours``: ``points`` are its (replica-hours,
    violations), interpolated linearly in replica-hours and on a log scale of violations
    (zero counted as half an interval, so that the log is defined), extrapolated along the
    nearest segment outside the swept range."""
    ordered = sorted(points)
    xs = np.array([x for x, _ in ordered])
    ys = np.log(np.maximum([y for _, y in ordered], 0.5))
    if len(ordered) == 1 or np.ptp(xs) == 0:
        return float(np.exp(ys.mean()))
    # Segments of equal cost carry no slope; keep the cheaper point's violations.
    unique_x, index = np.unique(xs, return_index=True)
    xs, ys = unique_x, ys[index]
    if len(xs) == 1:
        return float(np.exp(ys[0]))
    j = int(np.clip(np.searchsorted(xs, replica_hours) - 1, 0, len(xs) - 2))
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return float(np.exp(ys[j] + slope * (replica_hours - xs[j])))
