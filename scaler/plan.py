"""The pure planning core: forecast + capacity profile + now -> a replica plan.

No I/O here. For each step of the forecast horizon the plan says how many replicas
must be *ready* when the step starts, within the profile's min and max (:func:`step_replicas`):

* ``plan_quantile: p90`` (the default): enough for the P90 forecast with the profile's
  headroom at ``rps_per_replica`` (what the HPA would want at that load);
* ``plan_quantile: p50``: enough that the median forecast's *in-step peak*
  (:func:`in_step_peak` of the P50, x (1 + headroom)) stays below the replicas' saturation
  (``rps_per_replica / target_utilization``). A forecast is a step mean; traffic peaks
  inside a step, and what overloads a pod is the peak, not the mean. The peak is the larger
  of P50 x ``burst_factor`` and P50 + ``burst_dispersion`` x sqrt(P50): request counts spread
  like a Poisson stream's, by the square root of the rate, so the margin a quiet step needs
  is a large share of its mean and a busy step's a small one. Sizing on the median peak
  instead of the P90 at the target keeps the floor close to what the load needs; the HPA,
  still targeting ``rps_per_replica``, adds replicas above the floor when the load stays
  above its target.

A replica takes ``warmup_seconds`` from creation to serving, so the floor the planner
applies at time ``t`` is the largest step need over ``[t, t + warmup]``: each replica is
requested its warm-up time before it is needed. Scale-down is held by a stabilization
window, as the HPA does, so that a dip between two forecast peaks does not throw away pods
that are needed again minutes later.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np

from harbinger.clock import format_time
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile


class ForecastLike(Protocol):
    """What the planner reads from :class:`models.forecast.Forecast`."""

    @property
    def service(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def step_seconds(self) -> int: ...
    @property
    def p50(self) -> np.ndarray: ...
    @property
    def p90(self) -> np.ndarray: ...


@dataclass(frozen=True)
class PlanStep:
    start: datetime
    p50_tps: float
    p90_tps: float
    #: Replicas that must be ready when the step starts (after the stabilization hold).
    replicas: int
    #: When the last of those replicas must be created: ``start - warmup``.
    request_at: datetime
    #: What the step's replicas need in total.
    cpu_cores: float
    memory_bytes: float
    bandwidth_bits: float


@dataclass(frozen=True)
class ServicePlan:
    service: str
    model_version: str
    made_at: datetime
    step_seconds: int
    warmup_seconds: float
    min_replicas: int
    steps: tuple[PlanStep, ...]
    #: How much further than the warm-up the floor looks (:func:`plan_service`).
    lead_seconds: float = 0.0

    def floor_at(self, when: datetime) -> int:
        """Replicas to have (ready or warming) at ``when``: the largest need of any step that
        overlaps ``[when, when + warmup + lead]``; the profile minimum outside the horizon."""
        until = when + timedelta(seconds=self.warmup_seconds + self.lead_seconds)
        step = timedelta(seconds=self.step_seconds)
        needs = [s.replicas for s in self.steps if s.start <= until and s.start + step > when]
        return max([self.min_replicas, *needs])

    def next_peak(self) -> PlanStep | None:
        """The first step with the largest P90 in the horizon."""
        if not self.steps:
            return None
        return max(self.steps, key=lambda s: (s.p90_tps, -s.start.timestamp()))

    def warmup_window(self) -> tuple[datetime, datetime] | None:
        """When pods created now are created ahead of need: the floor at ``made_at`` covers
        every step starting within one warm-up; if one of those needs more replicas than the
        step running now, the pods the raise makes are warming up for it, from its request
        time until it starts. ``None`` when nothing ahead needs more than now."""
        step = timedelta(seconds=self.step_seconds)
        until = self.made_at + timedelta(seconds=self.warmup_seconds)
        running = [s.replicas for s in self.steps if s.start <= self.made_at < s.start + step]
        need_now = max([self.min_replicas, *running])
        ahead = [s for s in self.steps if self.made_at < s.start <= until and s.replicas > need_now]
        if not ahead:
            return None
        target = max(ahead, key=lambda s: (s.replicas, -s.start.timestamp()))
        return target.request_at, target.start

    def annotation(self, floor: int) -> dict[str, Any]:
        """The JSON stored in ``harbinger.io/plan`` on the Deployment."""
        peak = self.next_peak()
        return {
            "service": self.service,
            "replicas": floor,
            "made_at": format_time(self.made_at),
            "model_version": self.model_version,
            "next_peak": format_time(peak.start) if peak else None,
            "peak_tps": round(peak.p90_tps, 3) if peak else None,
            "peak_replicas": peak.replicas if peak else None,
            "cpu_cores": round(peak.cpu_cores, 3) if peak else None,
            "memory_bytes": round(peak.memory_bytes) if peak else None,
            "bandwidth_bits": round(peak.bandwidth_bits) if peak else None,
            "warmup_seconds": self.warmup_seconds,
        }




def plan_service(
    forecast: ForecastLike,
    profile: CapacityProfile,
    now: datetime,
    *,
    stabilization_seconds: float,
    lead_seconds: float = 0.0,
) -> ServicePlan:
    """Turn one service's forecast into a plan (see the module docstring). ``lead_seconds``:
    how much earlier than one warm-up ahead a step's replicas are asked for (the short-horizon
    floor asks a planner interval and an HPA sync earlier, :mod:`scaler.headroom`)."""
    source = f"forecast for {forecast.service}"
    p50 = np.asarray(forecast.p50, dtype=np.float64)
    p90 = np.asarray(forecast.p90, dtype=np.float64)
    if p50.shape != p90.shape or p50.ndim != 1:
        raise InvalidInput(f"p50 and p90 must be 1-D arrays of one length, got {p50.shape} and {p90.shape}",
                           source=source)
    if not (np.all(np.isfinite(p90)) and np.all(np.isfinite(p50))) or np.any(p90 < 0) or np.any(p50 < 0):
        raise InvalidInput("the forecast has negative or non-finite values", source=source)
    if forecast.step_seconds <= 0:
        raise InvalidInput(f"step_seconds must be positive, got {forecast.step_seconds}", source=source)
    if forecast.start.tzinfo is None:
        raise InvalidInput("the forecast's start has no time zone", source=source)

    step = timedelta(seconds=forecast.step_seconds)
    raw = [step_replicas(float(low), float(high), profile) for low, high in zip(p50, p90, strict=True)]
    # Only whole steps can be held inside the plan; finer holds are the FloorHold's job.
    held = hold_scale_down(raw, int(stabilization_seconds // forecast.step_seconds))
    warmup = timedelta(seconds=profile.warmup_seconds)
    steps = []
    for i, replicas in enumerate(held):
        start = forecast.start + i * step
        per_replica = float(p90[i]) / replicas if replicas else 0.0
        steps.append(PlanStep(
            start=start,
            p50_tps=float(p50[i]),
            p90_tps=float(p90[i]),
            replicas=replicas,
            request_at=start - warmup,
            cpu_cores=replicas * profile.cpu_cores_for(per_replica),
            memory_bytes=replicas * profile.memory_bytes_for(per_replica),
            bandwidth_bits=replicas * profile.bandwidth_bits_for(per_replica),
        ))
    return ServicePlan(
        service=forecast.service,
        model_version=forecast.model_version,
        made_at=now,
        step_seconds=forecast.step_seconds,
        warmup_seconds=profile.warmup_seconds,
        min_replicas=profile.min_replicas,
        steps=tuple(steps),
        lead_seconds=lead_seconds,
    )


def in_step_peak(mean_tps: float, profile: CapacityProfile) -> float:
    """The rate traffic peaks at inside a forecast step whose mean is ``mean_tps``: the larger
    of the profile's ratio (``burst_factor``) and dispersion (``burst_dispersion``) peaks."""
    mean = max(mean_tps, 0.0)
    return max(mean * profile.burst_factor, mean + profile.burst_dispersion * math.sqrt(mean))


def step_replicas(p50_tps: float, p90_tps: float, profile: CapacityProfile) -> int:
    """Replicas one forecast step needs (see the module docstring), within min and max."""
    # The in-step peak of the median forecast, kept below saturation. With the defaults
    # (``burst_factor`` 1, ``burst_dispersion`` 0) this never exceeds the P90 rule (P50 <= P90
    # and saturation >= the target), so profiles that do not opt in plan exactly as before.
    peak = in_step_peak(p50_tps, profile) * (1 + profile.headroom)
    by_peak = math.ceil(peak / profile.saturation_rps_per_replica - 1e-9)
    by_peak = max(profile.min_replicas, min(profile.max_replicas, by_peak))
    if profile.plan_quantile == "p50":
        return by_peak
    return max(profile.replicas_for(p90_tps), by_peak)


def hold_scale_down(needs: Sequence[int], window_steps: int) -> list[int]:
    """Each value becomes the max of itself and the ``window_steps`` values before it."""
    out = []
    for i in range(len(needs)):
        out.append(max(needs[max(0, i - window_steps) : i + 1]))
    return out


class FloorHold:
    """Holds a floor up for ``window_seconds`` after it was last recommended, the way the
    HPA holds scale-down: the applied value is the max of every recommendation in the window.

    Used by the controller across runs (seeded from what is on the cluster, so a new leader
    does not drop a floor its predecessor raised) and by the replay, identically.
    """

    def __init__(self, window_seconds: float) -> None:
        self.window = timedelta(seconds=window_seconds)
        self._recent: deque[tuple[datetime, int]] = deque()

    def update(self, now: datetime, recommended: int) -> int:
        self._recent.append((now, recommended))
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()
        return max(value for _, value in self._recent)
