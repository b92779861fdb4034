"""Scenario generation: from the dependency graph, the failure history and the forecast to a
ranked list of experiments, each within its blast-radius limit and scheduled in a
rehearsal window. Pure: no cluster, no clock (``now`` is an input).

Risk of a service, each term in 0..1:

- reach: the share of the other services whose requests depend on it;
- history: its recency-weighted past incidents, against the most-failing service's;
- load: its predicted peak, against the busiest service's;
- utilisation: how close the predicted peak plus headroom comes to what its
  ``max_replicas`` can serve (a service that cannot scale past the peak is a bottleneck).

An experiment's risk is its target's, plus a bonus when the target failed that way before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from chaos.blast import Capacity, allowed_fraction, degraded_fraction
from chaos.experiment import SLO, BackendKind, Experiment, FaultKind, Plan, Window
from chaos.faults import Fault
from chaos.forecasts import before_peak_window, max_load, quietest_window
from chaos.incidents import FailureWeights, Incident
from harbinger.graph import ServiceGraph
from harbinger.profile import CapacityProfile
from models.forecast import Forecast

RISK_WEIGHTS = {"reach": 0.35, "history": 0.25, "load": 0.2, "utilisation": 0.2}
KIND_HISTORY_BONUS = 0.25


class GenerateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = "default"
    backend: BackendKind = BackendKind.SIDECAR
    kinds: list[FaultKind] = Field(default_factory=lambda: list(FaultKind))
    #: ``before-peak``: a window ending ``rehearsal_lead_seconds`` before each service's next
    #: predicted peak (the planner has provisioned for it by then); ``low-traffic``: the
    #: quietest window of the horizon.
    schedule: str = Field("before-peak", pattern="^(before-peak|low-traffic)$")
    rehearsal_lead_seconds: float = Field(600.0, ge=0)
    rehearsal_window_seconds: float = Field(3600.0, gt=0)
    dwell_seconds: float | None = Field(None, gt=0)
    error_status: int = Field(503, ge=400, le=599)
    error_percents: list[float] = Field(default_factory=lambda: [1.0, 5.0, 10.0, 25.0, 50.0])
    latency_ms: list[float] = Field(default_factory=lambda: [100.0, 250.0, 500.0, 1000.0, 2000.0])
    latency_percent: float = Field(50.0, gt=0, le=100)
    cpu_cores: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0])
    memory_bytes: list[int] = Field(default_factory=lambda: [16 * 2**20, 32 * 2**20, 64 * 2**20])
    #: Falling limits: each step leaves less bandwidth.
    bandwidth_bps: list[float] = Field(default_factory=lambda: [100e6, 20e6, 5e6])
    #: Pods that resource faults stress.
    resource_pods: int = Field(1, ge=1)
    #: Without a forecast the load is unknown: degrade no more than this share.
    unknown_load_fraction: float = Field(0.1, ge=0, le=1)
    slo: SLO = SLO()
    half_life_days: float = Field(90.0, gt=0)
    max_experiments: int | None = Field(None, ge=1)


@dataclass
class _ServiceView:
    name: str
    profile: CapacityProfile
    forecast: Forecast | None
    callers: list[str]
    dependents: list[str]
    risk: float = 0.0
    reasons: list[str] = field(default_factory=list)


def service_risk(
    graph: ServiceGraph, profiles: dict[str, CapacityProfile], forecasts: dict[str, Forecast],
    failures: FailureWeights,
) -> dict[str, tuple[float, list[str]]]:
    """Each service's risk score and the reasons behind it."""
    others = max(len(graph.services) - 1, 1)
    peaks = {s: forecasts[s].peak_p90() if s in forecasts else 0.0 for s in graph.services}
    top_peak = max(peaks.values(), default=0.0)
    top_failures = max((failures.service(s) for s in graph.services), default=0.0)
    result: dict[str, tuple[float, list[str]]] = {}
    for name in graph.services:
        profile = profiles.get(name, CapacityProfile())
        dependents = graph.dependents(name)
        reach = len(dependents) / others
        history = failures.service(name) / top_failures if top_failures > 0 else 0.0
        load = peaks[name] / top_peak if top_peak > 0 else 0.0
        ceiling = profile.max_replicas * profile.rps_per_replica
        utilisation = min(peaks[name] * (1 + profile.headroom) / ceiling, 1.0)
        terms = {"reach": reach, "history": history, "load": load, "utilisation": utilisation}
        score = sum(RISK_WEIGHTS[k] * v for k, v in terms.items())
        reasons = []
        if dependents:
            names = ", ".join(sorted(dependents))
            reasons.append(f"{len(dependents)} of {others} other services depend on it ({names})")
        if history:
            reasons.append(f"past incidents weigh {failures.service(name):.2f} (most-failing service = 1.0 scale)")
        if peaks[name]:
            reasons.append(f"predicted peak {peaks[name]:.1f} req/s, {utilisation:.0%} of what max_replicas can serve")
        result[name] = (score, reasons)
    return result


def _window(view: _ServiceView, options: GenerateOptions, now: datetime) -> Window | None:
    forecast = view.forecast
    if forecast is None:
        return None
    if options.schedule == "low-traffic":
        start, end = quietest_window(forecast, options.rehearsal_window_seconds, not_before=now)
        return Window(start=max(start, now), end=end, reason="low-traffic") if end > now else None
    return before_peak_window(forecast, lead_seconds=options.rehearsal_lead_seconds,
                              window_seconds=options.rehearsal_window_seconds, now=now)


def _ramp(kind: FaultKind, options: GenerateOptions, allowed: float) -> list[Fault]:
    if kind is FaultKind.LATENCY:
        # Latency rises step by step on a share of requests the blast radius can afford.
        share = min(options.latency_percent, math.floor(allowed * 100))
        return [Fault(delay_ms=ms, delay_percent=share) for ms in options.latency_ms] if share >= 1 else []
    if kind is FaultKind.ERROR:
        return [Fault(abort_status=options.error_status, abort_percent=p) for p in options.error_percents]
    if kind is FaultKind.DEPENDENCY_FAILURE:
        return [Fault(abort_status=503, abort_percent=100.0)]
    if kind is FaultKind.CPU:
        return [Fault(cpu_cores=c) for c in options.cpu_cores]
    if kind is FaultKind.MEMORY:
        return [Fault(memory_bytes=m) for m in options.memory_bytes]
    return [Fault(bandwidth_bps=b) for b in options.bandwidth_bps]


def generate(
    graph: ServiceGraph,
    *,
    profiles: dict[str, CapacityProfile] | None = None,
    forecasts: dict[str, Forecast] | None = None,
    history: list[Incident] | None = None,
    options: GenerateOptions | None = None,
    now: datetime,
) -> Plan:
    profiles = profiles or {}
    forecasts = {k: v for k, v in (forecasts or {}).items() if k in graph.services}
    options = options or GenerateOptions()
    failures = FailureWeights.of(history or [], now=now, half_life_days=options.half_life_days)
    risks = service_risk(graph, profiles, forecasts, failures)
    top_kind_failures = max(failures.by_service_kind.values(), default=0.0)

    experiments: list[Experiment] = []
    skipped: list[str] = []
    for name in graph.services:
        view = _ServiceView(
            name, profiles.get(name, CapacityProfile()), forecasts.get(name),
            sorted(graph.callers(name)), sorted(graph.dependents(name)),
        )
        view.risk, view.reasons = risks[name]
        window = _window(view, options, now)
        if view.forecast is None:
            load = None
            capacity = Capacity(max(view.profile.min_replicas, 1), view.profile.rps_per_replica)
            allowed = options.unknown_load_fraction
            limit_reason = f"no forecast: blast radius capped at {allowed:.0%}"
        else:
            peak = view.forecast.peak_p90()
            span = (window.start, window.end) if window else (view.forecast.start, view.forecast.end)
            load = max_load(view.forecast, *span)
            planned = view.profile.replicas_for(peak) if options.schedule == "before-peak" else 0
            capacity = Capacity(max(planned, view.profile.replicas_for(load)), view.profile.rps_per_replica)
            allowed = allowed_fraction(view.profile, capacity, load)
            limit_reason = (f"{capacity.replicas} replicas serve {capacity.total_rps:.0f} req/s; predicted "
                            f"{load:.1f} req/s + {view.profile.headroom:.0%} headroom leaves {allowed:.0%} to degrade")
        for kind, caller in _scenarios(view, options):
            made = _experiment(kind, caller, view, options, window, capacity, allowed, limit_reason, forecasts,
                               skipped)
            if made is None:
                continue
            bonus = KIND_HISTORY_BONUS * failures.kind(name, kind) / top_kind_failures if top_kind_failures else 0.0
            rationale = [*view.reasons, limit_reason]
            if bonus:
                rationale.append(f"failed this way before ({kind.value})")
            experiments.append(made.model_copy(update={"risk": round(view.risk + bonus, 6), "rationale": rationale}))

    experiments.sort(key=lambda e: (-e.risk, e.name))
    if options.max_experiments is not None:
        cut = options.max_experiments
        skipped.extend(f"{e.name}: below the top {cut}" for e in experiments[cut:])
        experiments = experiments[:options.max_experiments]
    return Plan(generated_at=now, experiments=experiments, skipped=skipped)


def _scenarios(view: _ServiceView, options: GenerateOptions) -> list[tuple[FaultKind, str | None]]:
    """Each kind once per service; with a mesh, latency once per call (caller -> service)."""
    result: list[tuple[FaultKind, str | None]] = []
    for kind in options.kinds:
        if kind is FaultKind.LATENCY and options.backend is BackendKind.ISTIO and view.callers:
            result.extend((kind, caller) for caller in view.callers)
        else:
            result.append((kind, None))
    return result


def _experiment(
    kind: FaultKind, caller: str | None, view: _ServiceView, options: GenerateOptions, window: Window | None,
    capacity: Capacity, allowed: float, limit_reason: str, forecasts: dict[str, Forecast], skipped: list[str],
) -> Experiment | None:
    name = f"{kind.value}-{caller}-to-{view.name}" if caller else f"{kind.value}-{view.name}"
    if kind.request_level and not view.callers:
        skipped.append(f"{name}: no service calls {view.name}, so there is no caller whose resilience to test")
        return None
    if not kind.request_level and options.backend is BackendKind.ISTIO:
        skipped.append(f"{name}: the istio backend cannot exhaust resources; use the sidecar backend")
        return None
    pods: int | None = None
    if kind is FaultKind.DEPENDENCY_FAILURE:
        # An upstream fully failing: every request of the pods in scope fails, so the
        # blast radius is spent on how many pods, not on a share of requests.
        allowed_pods = math.floor(allowed * capacity.replicas + 1e-9)
        if allowed_pods < 1 or (options.backend is BackendKind.ISTIO and allowed_pods < capacity.replicas):
            skipped.append(f"{name}: blast radius: {limit_reason}")
            return None
        pods = None if allowed_pods >= capacity.replicas else allowed_pods
    elif not kind.request_level:
        pods = options.resource_pods
    steps = [s for s in _ramp(kind, options, allowed)
             if degraded_fraction(kind, s, view.profile, capacity, pods) <= allowed + 1e-9]
    if not steps:
        skipped.append(f"{name}: blast radius: even the mildest step degrades too much ({limit_reason})")
        return None
    if caller:
        watch = [caller, *sorted(set(view.dependents) - {caller})]
    else:
        watch = view.dependents if kind.request_level else [view.name, *view.dependents]
    involved = [view.name, *view.dependents]
    predicted = {s: round(forecasts[s].peak_p90(), 3) for s in involved if s in forecasts}
    return Experiment(
        name=name, kind=kind, target=view.name, caller=caller, namespace=options.namespace, backend=options.backend,
        steps=steps, dwell_seconds=options.dwell_seconds, pods=pods, watch=watch, slo=options.slo,
        predicted_rps=predicted, window=window, max_degraded_fraction=round(allowed, 6),
    )
