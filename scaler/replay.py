"""Replay a traffic trace through three ways of scaling one Deployment, tick by tick:

* ``hpa``: the Kubernetes HPA algorithm alone (:mod:`scaler.hpa`);
* ``harbinger``: the same HPA with its ``minReplicas`` raised by Harbinger's planner,
  exactly the code the controller runs (:func:`scaler.plan.plan_service`,
  :class:`scaler.plan.FloorHold`), fed by a forecaster that sees only the past;
* ``oracle``: knows the future demand and creates each pod exactly its warm-up before
  it is needed: the cheapest schedule that is never under capacity.

Every pod takes ``warmup_seconds`` from creation to serving. The HPA aims each pod at the
profile's ``rps_per_replica`` (the load at its target utilization); a pod *serves* up to
``rps_per_replica / target_utilization`` (saturation), and that is the capacity every
strategy is measured against and the oracle sizes to. Scale-down removes the newest pods
first, as the ReplicaSet controller removes not-ready and younger pods first. Figures, over
the evaluation window, on ticks whose demand is known:

* ``under_minutes``: minutes in which demand was above what the ready pods serve at saturation;
* ``replica_hours``: pods alive (warming or ready) x hours, what the cluster pays for;
* ``changes``: how many times the replica count changed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd

from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile
from scaler.hpa import SYNC_SECONDS, HorizontalPodAutoscaler
from scaler.plan import FloorHold, ForecastLike, ServicePlan, plan_service
from scaler.trace import Trace

#: How often the planner runs in the replay, as ``harbinger plan`` does by default.
PLANNER_INTERVAL_SECONDS = 60
#: The forecaster is fed this much trailing history on each call.
HISTORY_DAYS = 28


class HistoryForecaster(Protocol):
    """What the replay needs of :class:`models.serving.Forecaster`."""

    def forecast(self, history: pd.Series, now: datetime | None = None,
                 horizon_steps: int | None = None) -> ForecastLike: ...


@dataclass(frozen=True)
class Outcome:
    strategy: str
    #: Pods alive and pods ready at each tick of the evaluation window.
    replicas: np.ndarray
    ready: np.ndarray
    under_minutes: float
    replica_hours: float
    changes: int

    def figures(self) -> dict[str, float | int]:
        return {"under_minutes": round(self.under_minutes, 2), "replica_hours": round(self.replica_hours, 2),
                "changes": self.changes}


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


def _figures(strategy: str, trace: Trace, first: int, replicas: np.ndarray, ready: np.ndarray,
             profile: CapacityProfile) -> Outcome:
    demand = trace.demand[first : first + len(replicas)]
    known = ~np.isnan(demand)
    # Under capacity = demand above what the ready pods serve at *saturation*, for every
    # strategy alike (the HPA still aims each pod at ``rps_per_replica``, below saturation).
    # In replica units with the same rounding slack as every ceil() here, so that demand a
    # hair above a whole number of replicas is not "under" by float noise alone.
    under = known & (demand / profile.saturation_rps_per_replica > ready + 1e-9)
    changes = int(np.count_nonzero(np.diff(replicas)))
    return Outcome(
        strategy=strategy,
        replicas=replicas,
        ready=ready,
        under_minutes=float(np.count_nonzero(under)) * trace.tick_seconds / 60,
        replica_hours=float(replicas[known].sum()) * trace.tick_seconds / 3600,
        changes=changes,
    )


def _initial_replicas(trace: Trace, first: int, profile: CapacityProfile) -> int:
    """Start every strategy from what the current demand needs, all pods ready."""
    window = trace.demand[max(0, first - 4) : first + 1]
    level = float(np.nanmax(window)) if np.any(~np.isnan(window)) else 0.0
    return max(profile.min_replicas, min(profile.max_replicas, math.ceil(level / profile.rps_per_replica)))


def _hpa_for(profile: CapacityProfile) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(target_per_pod=profile.rps_per_replica, min_replicas=max(1, profile.min_replicas),
                                   max_replicas=profile.max_replicas)


def run_hpa(trace: Trace, profile: CapacityProfile, first: int, last: int,
            floor: Callable[[int], int] | None = None, strategy: str = "hpa") -> Outcome:
    """The HPA over ticks ``[first, last)``; ``floor(tick)``, if given, is its minReplicas."""
    hpa = _hpa_for(profile)
    declared_min = hpa.min_replicas
    tick = trace.tick_seconds
    pods = PodSet(_initial_replicas(trace, first, profile), first * tick)
    sync_every = max(1, round(SYNC_SECONDS / tick))
    replicas = np.empty(last - first, dtype=np.int64)
    ready = np.empty(last - first, dtype=np.int64)
    for i, t in enumerate(range(first, last)):
        now = t * tick
        if floor is not None:
            hpa.min_replicas = max(declared_min, min(profile.max_replicas, floor(t)))
        if (t - first) % sync_every == 0:
            desired = hpa.desired(now, float(trace.demand[t]), pods.total(), pods.ready(now))
            pods.scale(desired, now, profile.warmup_seconds)
        replicas[i] = pods.total()
        ready[i] = pods.ready(now)
    return _figures(strategy, trace, first, replicas, ready, profile)


def run_oracle(trace: Trace, profile: CapacityProfile, first: int, last: int) -> Outcome:
    """Pods alive at ``t`` = the largest need over ``[t, t + warmup]``: a pod needed at ``s``
    must exist from ``s - warmup``, and none is kept longer than that."""
    tick = trace.tick_seconds
    demand = trace.demand[first:last]
    level = pd.Series(demand).ffill().fillna(0.0).to_numpy()
    # Just enough pods never to be saturated: the same capacity the figures measure against.
    need = np.clip(np.ceil(level / profile.saturation_rps_per_replica - 1e-9), profile.min_replicas,
                   profile.max_replicas)
    ahead = math.ceil(profile.warmup_seconds / tick)
    # Reverse rolling max: the max of need[t : t + ahead + 1].
    alive = pd.Series(need[::-1]).rolling(ahead + 1, min_periods=1).max().to_numpy()[::-1].astype(np.int64)
    pods = PodSet(int(alive[0]), first * tick)
    replicas = np.empty(last - first, dtype=np.int64)
    ready = np.empty(last - first, dtype=np.int64)
    for i in range(last - first):
        now = (first + i) * tick
        pods.scale(int(alive[i]), now, profile.warmup_seconds)
        replicas[i] = pods.total()
        ready[i] = pods.ready(now)
    return _figures("oracle", trace, first, replicas, ready, profile)


class RollingPlanner:
    """Harbinger's planner in the replay: every planner interval it computes the floor
    from the latest plan; it asks the forecaster again whenever a new forecast step of
    history has completed (the forecast cannot change in between)."""

    def __init__(self, trace: Trace, profile: CapacityProfile, forecaster: HistoryForecaster,
                 *, history: pd.Series | None = None, stabilization_seconds: float = 300.0) -> None:
        self.trace = trace
        #: What the forecaster is fed: the trace's rate at any regular step (the model's is cheapest).
        self.history = trace.rate if history is None else history
        self._history_step = pd.Timedelta(self.history.index[1] - self.history.index[0])
        self.profile = profile
        self.forecaster = forecaster
        self.stabilization_seconds = stabilization_seconds
        self.hold = FloorHold(stabilization_seconds)
        self.plan: ServicePlan | None = None
        self._next_forecast: datetime | None = None
        self._planner_every = max(1, round(PLANNER_INTERVAL_SECONDS / trace.tick_seconds))
        self._floor = profile.min_replicas
        self.forecasts = 0

    def floor(self, tick: int) -> int:
        if tick % self._planner_every:
            return self._floor
        now = self.trace.tick_time(tick)
        if self._next_forecast is None or now >= self._next_forecast:
            self._replan(now)
        assert self.plan is not None
        self._floor = self.hold.update(now, self.plan.floor_at(now))
        return self._floor

    def _replan(self, now: datetime) -> None:
        # Only steps that are over by ``now`` are history; the forecaster must not see the future.
        index = self.history.index
        end = index.searchsorted(pd.Timestamp(now) - self._history_step, side="right")
        begin = index.searchsorted(pd.Timestamp(now) - pd.Timedelta(days=HISTORY_DAYS), side="left")
        forecast = self.forecaster.forecast(self.history.iloc[begin:end], now=now)
        self.forecasts += 1
        self.plan = plan_service(forecast, self.profile, now, stabilization_seconds=self.stabilization_seconds)
        step = timedelta(seconds=forecast.step_seconds)
        # The next forecast is worth asking for once the step that contains ``now`` is over.
        epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
        self._next_forecast = epoch + ((now - epoch) // step + 1) * step


def run_harbinger(trace: Trace, profile: CapacityProfile, first: int, last: int,
                  forecaster: HistoryForecaster, history: pd.Series | None = None) -> Outcome:
    planner = RollingPlanner(trace, profile, forecaster, history=history)
    return run_hpa(trace, profile, first, last, floor=planner.floor, strategy="harbinger")


@dataclass(frozen=True)
class Replay:
    trace: str
    profile: CapacityProfile
    first_tick: int
    #: Demand (req/s) at each replayed tick, indexed by time.
    demand: pd.Series
    hpa: Outcome
    harbinger: Outcome
    oracle: Outcome

    def summary(self) -> dict[str, object]:
        return {"trace": self.trace, "hpa": self.hpa.figures(), "harbinger": self.harbinger.figures(),
                "oracle": self.oracle.figures()}


def replay(trace: Trace, profile: CapacityProfile, forecaster: HistoryForecaster, *,
           first_tick: int, last_tick: int | None = None, history: pd.Series | None = None) -> Replay:
    """All three strategies over ticks ``[first_tick, last_tick)``."""
    last = len(trace.demand) if last_tick is None else last_tick
    if not 0 <= first_tick < last <= len(trace.demand):
        raise InvalidInput(f"replay window [{first_tick}, {last}) is outside the trace's {len(trace.demand)} ticks",
                           source=trace.name)
    times = pd.date_range(trace.tick_time(first_tick), periods=last - first_tick,
                          freq=pd.Timedelta(seconds=trace.tick_seconds))
    return Replay(
        trace=trace.name,
        profile=profile,
        first_tick=first_tick,
        demand=pd.Series(trace.demand[first_tick:last], index=times, name=trace.name),
        hpa=run_hpa(trace, profile, first_tick, last),
        harbinger=run_harbinger(trace, profile, first_tick, last, forecaster, history),
        oracle=run_oracle(trace, profile, first_tick, last),
    )
