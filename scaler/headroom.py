"""The planner's floor: raise it where the HPA will miss, by as much as history says it misses.

Three parts, each the same in the replay (:mod:`scaler.simulate`) and in the controller
(:mod:`scaler.controller`):

* **A short-horizon forecast at the trace's own step** (:func:`short_forecasts`): for the next
  :func:`horizon_steps` intervals after the last complete one, the mean of the last ``m``
  intervals (``m`` from :data:`LEVEL_SECONDS`, at least one interval: the one with the smallest
  one-interval-ahead error on history, :func:`choose_level`) times the seasonal growth from that
  moment to the forecast interval, measured at the same clock time over the previous
  :data:`SEASON_DAYS` days (their sums' ratio; 1 where they hold nothing). The floor only ever
  needs the next warm-up window, so nothing longer is forecast.
* **A margin learned from how often and by how much the delayed HPA falls short**
  (:func:`learn_policy`): on history the HPA is replayed as it behaves in a cluster
  (:mod:`scaler.replay`) at each target; the share ``p`` of intervals it falls short in sets how
  far into the forecast's errors the floor reaches: the margins tried are the quantiles
  ``1 - k x p`` (k in :data:`MARGIN_SHARES`) of the rate's excess over the forecast made one
  interval before, in the shapes of :data:`EXPONENT_OF` (``x sqrt(f)``: request counts spread by
  the square root of their rate; ``x f``: bursts that scale with the level). An interval needs
  ``ceil((f + margin x f^shape) / saturation)`` replicas; the floor binds only where that is
  above what the HPA holds, i.e. where the HPA's delayed, tolerant count would be short.
* **Or the spread floor** (:func:`spread_forecasts`), for traffic whose intervals vary more
  than a forecast of their level can follow: the same quantiles ``1 - k x p``, of the rates of
  the last :data:`SPREAD_RECENT_SECONDS` and of those around the same clock time on the days
  before, are what an interval needs.
* **The HPA's target chosen together with the margin** (:func:`learn_policy`): every (target,
  floor, margin or quantile) is replayed on history with its floor, and the one with the fewest violations
  relative to the plain HPA's cost/violation curve (the whole sweep of
  :data:`scaler.replay.HPA_TARGETS`) at its own replica-hours is kept (ties: the cheaper), never
  one costlier than the most expensive plain HPA. Where the HPA at the reference target (0.8)
  falls short in fewer than :data:`RARE_SHORTFALL` of the intervals, nothing is added: the plain
  HPA at 0.8 is kept.

How the floor reaches the HPA (:func:`floor_ticks`, or :func:`scaler.plan.plan_service` with
:func:`planning_profile` in the controller): the planner runs every
:data:`PLANNER_INTERVAL_SECONDS`, sees intervals that ended one scrape ago, and sets the floor
to the largest need of the intervals overlapping the next warm-up plus one planner interval
and one HPA sync (a pod it asks for is ready then); the floor is held for the stabilization
window (:class:`scaler.plan.FloorHold`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import numpy as np
import pandas as pd

from harbinger.errors import InvalidInput, PrometheusQueryError
from harbinger.profile import CapacityProfile
from models.traffic import HistorySource
from scaler.hpa import SYNC_SECONDS
from scaler.plan import FloorHold, ServicePlan, plan_service
from scaler.replay import (
    HPA_TARGETS,
    REFERENCE_TARGET,
    SCRAPE_SECONDS,
    Figures,
    Service,
    curve_violations,
    metric_window_seconds,
    observed_rate,
    run_hpa,
    score,
)

log = logging.getLogger(__name__)

#: How often the planner runs (``harbinger plan``'s default interval).
PLANNER_INTERVAL_SECONDS = 60
#: The recent levels a forecast may start from (the mean of this many seconds, at least one
#: interval); the one with the smallest one-interval-ahead error on history is kept.
LEVEL_SECONDS = (60, 300, 900, 3600, 10800, 21600, 86400)
#: Days of history the seasonal growth is measured on.
SEASON_DAYS = 7
#: Below this share of short intervals for the HPA at the reference target, add nothing.
RARE_SHORTFALL = 0.001
#: Margins tried: the excess over the forecast that all but this many times the HPA's share of
#: short intervals stay below (so that the floor would cover about that share of its misses).
MARGIN_SHARES = (2.0, 1.0, 0.5, 0.25, 0.1)
#: The margin's shapes tried, by family name: x sqrt(forecast), x forecast.
EXPONENT_OF = {"level^0.5": 0.5, "level^1": 1.0}
#: The spread floor's recent window: the quantile of this many seconds of rates (at least three
#: intervals).
SPREAD_RECENT_SECONDS = 3 * 3600
#: The spread floor's seasonal window: this many seconds either side of the same clock time,
#: on each of the :data:`SEASON_DAYS` days before (at least one interval).
SPREAD_SEASON_HALF_SECONDS = 90 * 60
#: The planner's floor hold (``planner.stabilization_seconds``'s default).
HOLD_SECONDS = 300.0
DAY = 86_400


@dataclass(frozen=True)
class FloorPolicy:
    """What was learned: the HPA target to run at, and the margin over the forecast
    (None: add nothing, the HPA alone)."""

    fallback_target: float
    margin: float | None
    #: Intervals the level floor's recent level is the mean of (the spread floor has no level).
    level_intervals: int = 1
    #: The margin is ``margin x f ** exponent``: 0.5 (spread like a Poisson stream's) or 1 (a
    #: share of the forecast, for traffic whose bursts scale with its level).
    exponent: float = 0.5
    #: Set for the spread floor (:func:`spread_forecasts`): the quantile of recent and
    #: same-clock-time rates the floor covers (then ``margin`` is 0 and ``exponent`` 1).
    quantile: float | None = None
    basis: str = ""
    #: The candidates replayed on history: (target, family, margin or quantile) -> figures;
    #: the family is "hpa" (the plain HPA), "level^0.5", "level^1" or "spread".
    tried: dict[tuple[float, str, float | None], Figures] = field(default_factory=dict, compare=False,
                                                                  repr=False)

    def as_dict(self) -> dict[str, float | None]:
        """The learned values: a level floor's level, margin and exponent, or the spread floor's
        quantile."""
        values: dict[str, float | None] = {"fallback_target": self.fallback_target, "margin": self.margin}
        if self.quantile is not None:
            values["quantile"] = self.quantile
        else:
            values |= {"level_intervals": float(self.level_intervals), "exponent": self.exponent}
        return values

    def forecasts(self, rate: np.ndarray, interval_seconds: int, horizon: int) -> np.ndarray:
        """The forecasts this policy plans with (:func:`short_forecasts` or
        :func:`spread_forecasts`), rows as theirs."""
        if self.quantile is not None:
            return spread_forecasts(rate, interval_seconds, horizon, self.quantile)
        return short_forecasts(rate, interval_seconds, horizon, self.level_intervals)


def horizon_steps(interval_seconds: int, warmup_seconds: float) -> int:
    """Intervals a forecast covers: those the floor can look at (warm-up + planner interval +
    sync after the running one), and one more."""
    return 2 + math.ceil((warmup_seconds + lead_seconds()) / interval_seconds)


def lead_seconds() -> float:
    """Beyond the warm-up, how far ahead the floor looks: a pod the planner asks for now is
    created by the HPA within a sync and must serve before the next planner run can act."""
    return PLANNER_INTERVAL_SECONDS + SYNC_SECONDS


def short_forecasts(rate: np.ndarray, interval_seconds: int, horizon: int, level_intervals: int = 1) -> np.ndarray:
    """Row ``c``: the forecast rate of intervals ``c + 1 .. c + horizon`` made when interval
    ``c`` has just completed, from the mean of the last ``level_intervals`` (module docstring);
    NaN where the recent level is unknown."""
    series = pd.Series(np.asarray(rate, dtype=np.float64))
    n = len(series)
    m = max(1, level_intervals)
    level_series = series.rolling(m, min_periods=1).mean()
    level = level_series.to_numpy()
    out = np.empty((n, horizon))
    period = DAY // interval_seconds if DAY % interval_seconds == 0 else 0

    for h in range(1, horizon + 1):
        growth = np.ones(n)
        if period:
            numerator = np.zeros(n)
            denominator = np.zeros(n)
            for day in range(1, SEASON_DAYS + 1):
                # Row c reads the rate of c + h and the level at c, a whole number of days back.
                ahead = series.shift(day * period - h).to_numpy()
                base = level_series.shift(day * period).to_numpy()
                usable = ~np.isnan(ahead) & ~np.isnan(base)
                numerator += np.where(usable, ahead, 0.0)
                denominator += np.where(usable, base, 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                growth = np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), 1.0)
            growth = np.clip(growth, 0.25, 4.0)
        out[:, h - 1] = level * growth
    return out


def spread_windows(interval_seconds: int) -> tuple[int, int]:
    """The spread floor's recent window and seasonal half-width, in intervals."""
    return (max(3, SPREAD_RECENT_SECONDS // interval_seconds),
            max(1, SPREAD_SEASON_HALF_SECONDS // interval_seconds))


def spread_forecasts(rate: np.ndarray, interval_seconds: int, horizon: int, quantile: float) -> np.ndarray:
    """Row ``c``: the rate the floor covers in intervals ``c + 1 .. c + horizon``, made when
    interval ``c`` has just completed: the larger of the ``quantile`` of the recent window's
    rates and the mean, over the previous :data:`SEASON_DAYS` days, of the ``quantile`` of the
    rates around the forecast interval's clock time (:func:`spread_windows`); NaN where
    neither is known.

    For traffic whose intervals vary more than any forecast of their level can follow (request
    counts whose spread is as large as their mean), covering a share of what the rate was
    recently and at this time of day buys fewer misses per replica-hour than a level plus a
    margin: the level forecast's own errors widen the margin it needs."""
    if not 0 < quantile < 1:
        raise InvalidInput(f"the spread floor's quantile must be in (0, 1), got {quantile}", source="policy")
    values = pd.Series(np.asarray(rate, dtype=np.float64))
    n = len(values)
    recent, half = spread_windows(interval_seconds)
    latest = values.rolling(recent, min_periods=recent // 2 + 1).quantile(quantile).to_numpy()
    out = np.repeat(latest[:, None], horizon, axis=1)
    if DAY % interval_seconds:
        return out
    period = DAY // interval_seconds
    # The quantile of the 2 x half + 1 rates centred on each interval (known once its window is).
    around = values.rolling(2 * half + 1, center=True, min_periods=half + 1).quantile(quantile)
    for h in range(1, horizon + 1):
        total, count = np.zeros(n), np.zeros(n)
        for day in range(1, SEASON_DAYS + 1):
            by = day * period - h  # row c reads the window centred on c + h - day x period
            if by < half:
                continue  # the window would reach past c (never at a day's period)
            earlier = around.shift(by).to_numpy()
            usable = ~np.isnan(earlier)
            total += np.where(usable, earlier, 0.0)
            count += usable
        with np.errstate(invalid="ignore", divide="ignore"):
            seasonal = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out[:, h - 1] = np.fmax(out[:, h - 1], seasonal)
    return out


def history_intervals(interval_seconds: int, warmup_seconds: float, level_intervals: int) -> int:
    """Intervals of history one forecast reads (the seasonal days, the level or the spread
    floor's windows, the horizon)."""
    recent, half = spread_windows(interval_seconds)
    return (SEASON_DAYS * DAY // interval_seconds + max(level_intervals, recent) + half
            + horizon_steps(interval_seconds, warmup_seconds) + 2)


def level_candidates(interval_seconds: int) -> list[int]:
    """The level lengths tried, in intervals."""
    return sorted({max(1, seconds // interval_seconds) for seconds in LEVEL_SECONDS})


def choose_level(values: np.ndarray, interval_seconds: int, warm: int) -> int:
    """The level length whose one-interval-ahead forecast has the smallest mean absolute
    error over ``values[warm:]``."""
    errors = {}
    for m in level_candidates(interval_seconds):
        ahead = short_forecasts(values, interval_seconds, 1, m)[:, 0]
        error = np.abs(values[warm:] - ahead[warm - 1 : len(values) - 1]) if warm >= 1 else np.array([np.nan])
        errors[m] = float(np.nanmean(error)) if np.any(~np.isnan(error)) else math.inf
    return min(errors, key=lambda m: (errors[m], m))


def step_need(forecast: np.ndarray, margin: float, service: Service, exponent: float = 0.5) -> np.ndarray:
    """Replicas an interval forecast at ``forecast`` needs: its peak f + margin x f ** exponent
    at saturation (the same rule as :func:`scaler.plan.step_replicas` on :func:`planning_profile`)."""
    level = np.maximum(np.nan_to_num(forecast, nan=0.0), 0.0)
    peak = level * (1 + margin) if exponent == 1 else level + margin * np.sqrt(level)
    return service.need(peak)


def planner_ticks(first: int, last: int, tick_seconds: int) -> np.ndarray:
    """Ticks in ``[first, last)`` at which the planner runs: one scrape after each planner
    interval's boundary, so that it sees intervals that ended one scrape ago, as the HPA does."""
    every = PLANNER_INTERVAL_SECONDS // tick_seconds
    offset = SCRAPE_SECONDS // tick_seconds
    start = first + (offset - first) % every
    return np.arange(start, last, every)


def floor_ticks(forecasts: np.ndarray, margin: float, service: Service, interval_seconds: int,
                tick_seconds: int, first: int, last: int, hold_seconds: float = HOLD_SECONDS,
                exponent: float = 0.5) -> np.ndarray:
    """The floor at each tick of ``[first, last)`` (module docstring), vectorized; the same
    values as :func:`controller_floor_ticks`, which runs the controller's code."""
    per = interval_seconds // tick_seconds
    runs = planner_ticks(first, last, tick_seconds)
    horizon = forecasts.shape[1]
    seen = runs - SCRAPE_SECONDS // tick_seconds
    complete = seen // per - 1  # the last interval that ended by what the planner sees
    running = runs // per
    reach = (runs * tick_seconds + service.warmup_seconds + lead_seconds()) // interval_seconds
    needs = step_need(forecasts, margin, service, exponent)  # row c, column h - 1
    best = np.full(len(runs), service.min_replicas, dtype=np.int64)
    for h in range(1, horizon + 1):
        interval = complete + h
        covered = (interval >= running) & (interval <= reach) & (complete >= 0)
        rows = np.clip(complete, 0, len(needs) - 1)
        best = np.where(covered, np.maximum(best, needs[rows, h - 1]), best)
    # FloorHold: the largest recommendation of the runs within the hold window.
    window = int(hold_seconds // PLANNER_INTERVAL_SECONDS) + 1
    held = pd.Series(best).rolling(window, min_periods=1).max().to_numpy().astype(np.int64)
    floor = np.full(last - first, service.min_replicas, dtype=np.int64)
    if len(runs):
        index = np.searchsorted(runs, np.arange(first, last), side="right") - 1
        floor = np.where(index >= 0, held[np.clip(index, 0, None)], service.min_replicas)
    return floor


@dataclass(frozen=True)
class ShortForecast:
    """A :class:`scaler.plan.ForecastLike` of the short horizon (P90 = the planned peak)."""

    service: str
    model_version: str
    start: datetime
    step_seconds: int
    p50: np.ndarray
    p90: np.ndarray


def planning_profile(service: Service, policy: FloorPolicy, base: CapacityProfile | None = None) -> CapacityProfile:
    """The profile :func:`scaler.plan.plan_service` plans the policy's floor with: P50 (the
    short forecast) + margin x sqrt(P50) at saturation, nothing else (``base``'s resource
    fields kept)."""
    fields = {} if base is None else base.model_dump()
    fields.update(rps_per_replica=service.saturation * policy.fallback_target,
                  target_utilization=policy.fallback_target, warmup_seconds=service.warmup_seconds,
                  min_replicas=service.min_replicas, max_replicas=service.max_replicas, plan_quantile="p50",
                  headroom=0.0, burst_factor=1.0, burst_dispersion=0.0)
    if policy.exponent == 1:
        fields["burst_factor"] = 1.0 + (policy.margin or 0.0)
    else:
        fields["burst_dispersion"] = policy.margin or 0.0
    return CapacityProfile.model_validate(fields)


def short_forecast(name: str, history: pd.Series, interval_seconds: int, warmup_seconds: float,
                   policy: FloorPolicy) -> ShortForecast | None:
    """The forecast the controller plans with, from ``history`` (requests/s on the
    ``interval_seconds`` grid, the last complete interval last); None without history."""
    if history.empty or policy.margin is None:
        return None
    margin = policy.margin
    horizon = horizon_steps(interval_seconds, warmup_seconds)
    rows = policy.forecasts(history.to_numpy(dtype=np.float64, na_value=np.nan), interval_seconds, horizon)
    p50 = rows[-1]
    if np.isnan(p50).any():
        return None
    p50 = np.maximum(p50, 0.0)
    start = pd.Timestamp(history.index[-1]).to_pydatetime() + timedelta(seconds=interval_seconds)
    return ShortForecast(service=name, model_version="short-horizon", start=start, step_seconds=interval_seconds,
                         p50=p50, p90=p50 * (1 + margin) if policy.exponent == 1 else p50 + margin * np.sqrt(p50))


def controller_floor_ticks(rate: pd.Series, policy: FloorPolicy, service: Service, tick_seconds: int,
                           first: int, last: int, hold_seconds: float = HOLD_SECONDS) -> np.ndarray:
    """The floor at each tick of ``[first, last)`` computed by the controller's code:
    :func:`short_forecast` of the history seen, :func:`scaler.plan.plan_service` on
    :func:`planning_profile`, ``floor_at`` with the lead, :class:`scaler.plan.FloorHold`.
    ``rate`` is the trace's rate per interval; tick 0 is its first interval's start."""
    interval = int((rate.index[1] - rate.index[0]).total_seconds())
    per = interval // tick_seconds
    profile = planning_profile(service, policy)
    hold = FloorHold(hold_seconds)
    origin = pd.Timestamp(rate.index[0]).to_pydatetime()
    floor = np.full(last - first, service.min_replicas, dtype=np.int64)
    current = service.min_replicas
    runs = set(planner_ticks(first, last, tick_seconds).tolist())
    lookback = history_intervals(interval, service.warmup_seconds, policy.level_intervals)
    values = rate.to_numpy(dtype=np.float64, na_value=np.nan)
    made_for = -1
    forecast: ShortForecast | None = None
    for i, tick in enumerate(range(first, last)):
        if tick in runs:
            now = origin + timedelta(seconds=tick * tick_seconds)
            complete = (tick - SCRAPE_SECONDS // tick_seconds) // per  # intervals [0, complete) are over
            if complete != made_for:
                # The forecast cannot change until another interval completes.
                history = pd.Series(values[max(0, complete - lookback):complete],
                                    index=rate.index[max(0, complete - lookback):complete])
                forecast = short_forecast("replay", history, interval, service.warmup_seconds, policy)
                made_for = complete
            if forecast is None:
                recommended = service.min_replicas
            else:
                # Held across runs by the FloorHold, not inside one plan (its first step may be over).
                plan = plan_service(forecast, profile, now, stabilization_seconds=0, lead_seconds=lead_seconds())
                recommended = plan.floor_at(now)
            current = hold.update(now, recommended)
        floor[i] = current
    return floor


def learn_policy(rate: np.ndarray, interval_seconds: int, service: Service, *, tick_seconds: int = 15,
                 targets: tuple[float, ...] = HPA_TARGETS, window_seconds: int | None = None,
                 hold_seconds: float = HOLD_SECONDS, warm_intervals: int | None = None) -> FloorPolicy:
    """Choose the HPA target (one of ``targets``) and the margin together on ``rate`` (history
    at the trace's step, never the part to be scored; module docstring), against the curve of
    the plain HPA over the whole sweep. The first ``warm_intervals`` (default: a
    day) only warm up the forecast's seasonal history and the HPA; the rest is scored."""
    values = np.asarray(rate, dtype=np.float64)
    per = interval_seconds // tick_seconds
    warm = (DAY // interval_seconds) if warm_intervals is None else warm_intervals
    warm = min(warm, max(0, len(values) - 2))
    if len(values) < 3:
        raise InvalidInput(f"{len(values)} interval(s) of history are too few to learn from", source="history")
    demand = np.repeat(values, per)
    metric = observed_rate(demand, tick_seconds, metric_window_seconds(interval_seconds, window_seconds))
    first, last = warm * per, len(demand)
    reference = REFERENCE_TARGET if REFERENCE_TARGET in targets else targets[len(targets) // 2]

    def replay(target: float, floor: np.ndarray | None) -> tuple[Figures, np.ndarray]:
        run = run_hpa(demand, metric, tick_seconds, service, target, first, last, floor)
        figures = score(demand, per, tick_seconds, service, run)
        capacity = run.ready.reshape(-1, per).mean(axis=1) * service.saturation
        return figures, capacity

    tried: dict[tuple[float, str, float | None], Figures] = {}
    # The curve is always the whole sweep, whichever targets the policy may choose from.
    plain: dict[float, tuple[Figures, np.ndarray]] = {
        t: replay(t, None) for t in sorted(set(HPA_TARGETS) | set(targets))}
    for target in targets:
        tried[(target, "hpa", None)] = plain[target][0]
    base = plain[reference][0]
    if base.violation_share < RARE_SHORTFALL:
        return FloorPolicy(reference, None, basis=f"the HPA at {reference} fell short in {base.violations} of "
                           f"{base.intervals} intervals (< {RARE_SHORTFALL:.1%}): nothing added", tried=tried)

    warm = max(warm, 1)
    level = choose_level(values, interval_seconds, warm)
    horizon = horizon_steps(interval_seconds, service.warmup_seconds)
    forecasts = short_forecasts(values, interval_seconds, horizon, level)
    scored = values[warm:]
    # The forecast of each scored interval made one interval before it.
    ahead = forecasts[warm - 1 : len(values) - 1, 0]
    usable = (ahead > 0) & ~np.isnan(scored)
    curve = [(f.replica_hours, float(f.violations)) for f, _ in plain.values()]
    spreads: dict[float, np.ndarray] = {}  # quantile -> spread_forecasts, made once for every target

    def floor_of(family: str, value: float) -> np.ndarray:
        if family == "spread":
            if value not in spreads:
                spreads[value] = spread_forecasts(values, interval_seconds, horizon, value)
            return floor_ticks(spreads[value], 0.0, service, interval_seconds, tick_seconds, first, last,
                               hold_seconds, 1.0)
        return floor_ticks(forecasts, value, service, interval_seconds, tick_seconds, first, last, hold_seconds,
                           EXPONENT_OF[family])

    for target in targets:
        figures, _ = plain[target]
        if not figures.violations:
            continue
        # How often the HPA falls short sets how far into the forecast's errors (or the rates'
        # spread) the floor reaches.
        shares = sorted({min(0.999, max(0.5, 1 - k * figures.violation_share)) for k in MARGIN_SHARES})
        candidates: list[tuple[str, float]] = [("spread", round(q, 4)) for q in shares]
        for family, exponent in EXPONENT_OF.items():
            excess = (scored[usable] - ahead[usable]) / ahead[usable] ** exponent
            if excess.size:
                candidates += [(family, m) for m in sorted({round(max(0.0, float(np.quantile(excess, q))), 4)
                                                             for q in shares})]
        for family, value in candidates:
            tried[(target, family, value)], _ = replay(target, floor_of(family, value))
    best: tuple[float, float, tuple[float, str, float | None]] | None = None  # (score, cost, candidate)
    most = max(x for x, _ in curve)
    for candidate_key, result in tried.items():
        relative = max(result.violations, 0.5) / curve_violations(curve, result.replica_hours)
        # Never beyond the most expensive plain HPA: the curve would be extrapolated.
        if result.replica_hours > most * 1.0001 and candidate_key[2] is not None:
            continue
        key = (round(relative, 6), result.replica_hours, candidate_key)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    relative, _, (target, family, chosen_value) = best
    chosen = tried[(target, family, chosen_value)]
    measured = (f"{chosen.violations} violations at {chosen.replica_hours:.1f} replica-hours, "
                f"{relative:.2f}x the plain HPA's curve there")
    where = f"on {chosen.intervals} intervals of history: HPA at {target}"
    if chosen_value is None:
        return FloorPolicy(target, None, basis=f"{where} alone: {measured}", tried=tried)
    if family == "spread":
        return FloorPolicy(target, 0.0, exponent=1.0, quantile=chosen_value, tried=tried,
                           basis=f"{where} with the spread floor at quantile {chosen_value}: {measured}")
    return FloorPolicy(target, chosen_value, level, EXPONENT_OF[family], tried=tried,
                       basis=f"{where} with margin {chosen_value} x f^{EXPONENT_OF[family]}: {measured}")


# --- in the controller -------------------------------------------------------------------------
#: History steps tried for the controller's short horizon, finest first (a source that cannot
#: give 60 s, such as a 5-minute trace, gives 300 s).
FINE_STEPS_SECONDS = (60, 300)
#: The controller learns its policy on this much history (its first day only warms up the
#: forecast and the HPA): a week, 10,080 points at 60 s, under Prometheus' 11,000 per query.
LEARN_LOOKBACK_SECONDS = SEASON_DAYS * DAY
RELEARN_SECONDS = 3600.0
MIN_RELEARN_WALL_SECONDS = 60.0


@dataclass(frozen=True)
class ShortTermPlan:
    plan: ServicePlan
    policy: FloorPolicy

    def learned(self) -> dict[str, float]:
        """The policy as the plan annotation's ``learned`` values."""
        return {key: value for key, value in self.policy.as_dict().items() if value is not None}


class ShortTermFloors:
    """The controller's side of this module: per service, the policy learned hourly from the
    service's request-rate history (:func:`learn_policy`, the HPA target restricted to the
    profile's ``target_utilization`` when the operator declared it: the planner does not
    rewrite the team's HPA, so a target it may not choose is not one to learn for), and each
    run a plan of the short-horizon forecast (:func:`short_forecast`,
    :func:`scaler.plan.plan_service` on :func:`planning_profile`)."""

    def __init__(self, history: HistorySource, *, lookback_seconds: float = LEARN_LOOKBACK_SECONDS,
                 relearn_seconds: float = RELEARN_SECONDS) -> None:
        self.history = history
        self.lookback = timedelta(seconds=lookback_seconds)
        self.relearn = timedelta(seconds=relearn_seconds)
        self._policies: dict[str, tuple[datetime, FloorPolicy | None, str]] = {}
        #: Monotonic time of each service's last learning: on a replay clock running faster
        #: than time (rehearsals), an hour of trace time can pass in seconds; learning, which
        #: replays a week, is not repeated more often than :data:`MIN_RELEARN_WALL_SECONDS`.
        self._learned_at: dict[str, float] = {}

    @staticmethod
    def service_of(profile: CapacityProfile) -> Service:
        return Service(saturation=profile.saturation_rps_per_replica, warmup_seconds=profile.warmup_seconds,
                       min_replicas=profile.min_replicas, max_replicas=profile.max_replicas)

    async def _read(self, name: str, namespace: str, end: datetime) -> pd.Series:
        problems = []
        for step in FINE_STEPS_SECONDS:
            try:
                history = await self.history.history(name, namespace=namespace, end=end, lookback=self.lookback,
                                                     step_seconds=step)
            except (InvalidInput, PrometheusQueryError) as exc:  # this step cannot be had; try the next
                problems.append(f"{step} s: {exc}")
                continue
            if len(history) >= 2:
                return history
            problems.append(f"{step} s: {len(history)} point(s)")
        raise InvalidInput("no usable history (" + "; ".join(problems) + ")", source=name)

    async def plan(self, name: str, namespace: str, profile: CapacityProfile, now: datetime, *,
                   stabilization_seconds: float) -> ShortTermPlan | None:
        """The plan for one service now; None (logged) when its history cannot give one."""
        # What the planner sees ends one scrape ago, as the HPA's metric does.
        try:
            history = await self._read(name, namespace, now - timedelta(seconds=SCRAPE_SECONDS))
        except (InvalidInput, aiohttp.ClientError, TimeoutError) as exc:
            log.info("%s/%s: no short-horizon floor this run: %s", namespace, name, exc)
            return None
        step = int(pd.Timedelta(history.index[1] - history.index[0]).total_seconds())
        service = self.service_of(profile)
        targets = ((profile.target_utilization,) if "target_utilization" in profile.model_fields_set
                   else HPA_TARGETS)
        key = f"{namespace}/{name}"
        cached = self._policies.get(key)
        wall = time.monotonic()
        due = cached is None or (now - cached[0] >= self.relearn
                                 and wall - self._learned_at.get(key, -math.inf) >= MIN_RELEARN_WALL_SECONDS)
        if due:
            self._learned_at[key] = wall
            values = history.to_numpy(dtype=np.float64, na_value=np.nan)
            try:
                policy: FloorPolicy | None = await asyncio.to_thread(
                    learn_policy, values, step, service, targets=targets, hold_seconds=stabilization_seconds,
                    warm_intervals=min(DAY // step, len(values) // 2))
                basis = policy.basis if policy else ""
            except InvalidInput as exc:
                policy, basis = None, str(exc)
            self._policies[key] = (now, policy, basis)
            log.info("%s: short-horizon floor policy %s (%s)", key,
                     json.dumps(policy.as_dict()) if policy else "none", basis)
        policy = self._policies[key][1]
        if policy is None:
            return None
        forecast = short_forecast(name, history.iloc[-history_intervals(step, service.warmup_seconds,
                                                                        policy.level_intervals):],
                                  step, service.warmup_seconds, policy)
        if forecast is None:
            # Nothing to add (the HPA rarely falls short), or no recent level: the declared floor.
            p50 = np.zeros(1)
            forecast = ShortForecast(service=name, model_version="short-horizon", start=now, step_seconds=step,
                                     p50=p50, p90=p50)
        # Held across runs by the controller's FloorHold, not inside one plan: the plan's first
        # step may already be over, and its need must not be carried into the steps after it.
        plan = plan_service(forecast, planning_profile(service, policy, profile), now, stabilization_seconds=0,
                            lead_seconds=lead_seconds())
        return ShortTermPlan(plan, policy)
