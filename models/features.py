"""The model's inputs, computed the same way for training and for serving.

One forecast origin ``o`` (the first step to predict) and its history window ``w`` (the
``window_steps`` TPS values before ``o``, ``NaN`` where unknown) give one row per
horizon step ``j`` (target ``t = o + j``). Training stacks many origins, serving one,
through the same :func:`build_features`, so the two cannot drift apart.

Scale-free by design: every traffic feature and the target are divided by the recent
level ``L`` (mean TPS over the last day). A tree ensemble cannot extrapolate to a level
it has never seen (fifa grows 70-fold in two months); as ratios, a quiet day in May
and a match day in July look alike. Training weights rows by ``L`` so that the loss
still counts requests, not ratios (see :mod:`models.training`).

Events are a multiplicative regressor: the history is divided by the expected multiplier
of the events active at each step before the features are made, and the forecast is
multiplied by it afterwards, so a declared campaign moves the forecast before any
history shows it, and a past campaign does not pollute the seasonal lags.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from models.events import Event
from models.seasonality import Seasonality

_NS = 1_000_000_000
_DAY_S = 86_400
#: Days averaged at the same time of day, and weeks at the same time of week.
PROFILE_DAYS = 7
PROFILE_WEEKS = 3
#: Bounds of the volatility that scales the P90 margin (share of the level).
MIN_VOLATILITY = 0.02
MAX_VOLATILITY = 2.0


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that turns a history window into model inputs; stored in the metadata."""

    step_seconds: int
    seasonality: Seasonality
    horizon_steps: int
    #: TPS below which the level is not trusted as a divisor (a fraction of the mean traffic).
    level_floor: float
    #: Learned multiplier per event kind for events that declare no multiplier.
    kind_effects: Mapping[str, float] = field(default_factory=dict)
    #: Set for a global model (one model for many services): each window's level floor is
    #: this share of the window's own mean, instead of the fixed ``level_floor`` of one service.
    level_floor_share: float | None = None
    #: When > 0, the level ``L`` is at least this share of the mean of the last 7 days: one
    #: collapsed day (a storm, an outage upstream) does not become the scale of tomorrow.
    #: 0 (older models): ``L`` is the last day's mean alone.
    level_week_share: float = 0.0

    @property
    def steps_per_day(self) -> int:
        return _DAY_S // self.step_seconds

    @property
    def window_steps(self) -> int:
        """History each origin sees: the oldest lag is 7 days back (3 weeks when weekly), because
        the nearest same-time-of-day for any horizon step lies within the last day."""
        days = 7 * PROFILE_WEEKS if self.seasonality == "weekly" else PROFILE_DAYS
        return days * self.steps_per_day

    @property
    def min_history_steps(self) -> int:
        """One day: what the recent level needs. Longer windows are used when given."""
        return self.steps_per_day

    @property
    def names(self) -> tuple[str, ...]:
        names = ["horizon_step", "last_step", "recent_1h", "recent_3h_vs_day_before", "level_vs_day_before",
                 "day_over_day_change"]
        if self.seasonality != "none":
            names += ["hour_of_day", "same_time_1d", "same_time_2d", "profile_days"]
        if self.seasonality == "weekly":
            names += ["day_of_week", "same_time_1w", "same_time_2w", "profile_weeks", "level_vs_week_before"]
        return tuple(names)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind_effects"] = dict(self.kind_effects)
        data["names"] = list(self.names)
        data["window_steps"] = self.window_steps
        data["min_history_steps"] = self.min_history_steps
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        spec = cls(step_seconds=int(data["step_seconds"]), seasonality=data["seasonality"],
                   horizon_steps=int(data["horizon_steps"]), level_floor=float(data["level_floor"]),
                   kind_effects={str(k): float(v) for k, v in dict(data.get("kind_effects", {})).items()},
                   level_floor_share=(None if data.get("level_floor_share") is None
                                      else float(data["level_floor_share"])),
                   level_week_share=float(data.get("level_week_share", 0.0)))
        if "names" in data and tuple(data["names"]) != spec.names:
            raise ValueError(f"feature names {data['names']} do not match this version's {list(spec.names)}")
        return spec


class Features(NamedTuple):
    #: ``(n * H, F)`` float32, origin-major: the model's input.
    x: np.ndarray
    #: ``(n,)`` recent level ``L`` of each origin (TPS): the model predicts ``actual / L``.
    level: np.ndarray
    #: ``(n,)`` mean |change| from the day before to the last day, over ``L``: how unsettled
    #: the traffic is now. The P90's calibrated margin is proportional to it.
    volatility: np.ndarray


def build_features(windows: np.ndarray, origins_ns: np.ndarray, spec: FeatureSpec,
                   horizon_steps: int | None = None, *, level_floors: np.ndarray | None = None) -> Features:
    """Rows for every (origin, horizon step) of ``windows`` (``(n, spec.window_steps)``,
    de-evented, ``NaN`` where unknown).

    Written for the serving path as much as for training, for one origin as for ten
    thousand: every position the features read is fixed by the layout (step, seasonality,
    window, horizon), so it is worked out once (:func:`feature_plan`, cached) and each call
    is a fixed, small number of numpy operations whatever ``n`` is: one gather for all
    seasonal lags, one matrix product for every range mean and profile (sums and counts
    of known values), no per-row Python. ``level_floors`` (one per origin) lets services
    with different models but the same feature layout share one pass; a global model's
    spec (``level_floor_share``) takes each window's floor from its own mean.
    """
    n, m = windows.shape
    if m != spec.window_steps:
        raise ValueError(f"windows have {m} steps, the spec needs {spec.window_steps}")
    h = spec.horizon_steps if horizon_steps is None else horizon_steps
    plan = feature_plan(spec.step_seconds, spec.seasonality, m, h)
    day = plan.day

    # Range means from cumulative sums of the known values and of the known flags over the
    # window's tail (every range but the whole window lies in the last week), padded with a 0
    # in front so that a range [a, b) is one subtraction.
    tail = windows[:, m - plan.tail :]
    known = ~np.isnan(tail)
    padded = np.zeros((2, n, plan.tail + 1))
    np.copyto(padded[0, :, 1:], tail, where=known)
    padded[1, :, 1:] = known
    cumulative = np.cumsum(padded, axis=2)
    spans = cumulative[:, :, plan.span_stops] - cumulative[:, :, plan.span_starts]  # (2, n, spans)
    means = np.divide(spans[0], spans[1], out=np.full_like(spans[0], np.nan), where=spans[1] > 0)
    mostly_known = spans[1, :, _DAY] * 4 >= day
    week_mean = means[:, _DAYS]
    # The whole window's mean only where it is needed: a last day mostly unknown, or a
    # global model's floor when the last week is unknown too.
    needs_window = ~mostly_known | np.isnan(week_mean)
    window_mean = _nanmean(windows, axis=1) if np.any(needs_window) else week_mean
    # Profiles: one gather of every position they average (NaN outside the window).
    extended = np.empty((n, m + 1))
    extended[:, :m] = windows
    extended[:, m] = np.nan
    profiles = _nanmean(extended[:, plan.profiles], axis=1)  # (n, profiles * h)
    if level_floors is not None:
        floor = level_floors
    elif spec.level_floor_share is not None:
        floor = np.maximum(np.nan_to_num(np.where(np.isnan(week_mean), window_mean, week_mean))
                           * spec.level_floor_share, _MIN_FLOOR)
    else:
        floor = np.full(n, spec.level_floor)
    recent = np.where(mostly_known, means[:, _DAY], window_mean)
    if spec.level_week_share > 0:
        recent = np.fmax(recent, spec.level_week_share * means[:, _DAYS])
    level = np.maximum(recent, floor)
    volatility = _nanmean(np.abs(windows[:, m - day :] - windows[:, m - 2 * day : m - day]), axis=1) / level
    inverse = 1.0 / level

    x = np.empty((n, h, len(plan.names)), dtype=np.float32)
    x[:, :, 0] = plan.horizon_step
    x[:, :, 1] = (windows[:, -1] * inverse)[:, None]
    x[:, :, 2] = (means[:, _HOUR] * inverse)[:, None]
    x[:, :, 3] = _ratio(means[:, _3H], means[:, _3H_DAY_BEFORE], floor)[:, None]
    x[:, :, 4] = _ratio(level, means[:, _DAY_BEFORE], floor)[:, None]
    x[:, :, 5] = volatility[:, None]
    if spec.seasonality != "none":
        seconds = origins_ns[:, None] // _NS + plan.offsets_s
        lags = windows[:, plan.lags] * inverse[:, None, None]  # (n, lags, h)
        x[:, :, 6] = (seconds % _DAY_S) / 3600.0
        x[:, :, 7:9] = lags[:, :2].transpose(0, 2, 1)
        # The profile gives the shape of a day, not its level: divided by the mean of the days it
        # averages. Divided by L instead, a week of decline (fifa after the final) read as "far
        # below the usual level" and the model, taught by the tournament's rest days, forecast a
        # rebound that never came (MASE 0.119 against 0.071 for the shape-only profile).
        days_mean = np.maximum(means[:, _DAYS], floor)
        x[:, :, 9] = profiles[:, :h] / days_mean[:, None]
        if spec.seasonality == "weekly":
            x[:, :, 10] = ((seconds // _DAY_S + 3) % 7)  # 1970-01-01 was a Thursday
            x[:, :, 11:13] = lags[:, 2:].transpose(0, 2, 1)
            x[:, :, 13] = profiles[:, h:] * inverse[:, None]
            x[:, :, 14] = _ratio(level, means[:, _DAY_WEEK_BEFORE], floor)[:, None]
    return Features(x.reshape(n * h, -1), level, volatility)


# Columns of the range means (FeaturePlan.span_starts / span_stops).
_DAY, _HOUR, _3H, _3H_DAY_BEFORE, _DAY_BEFORE, _DAYS, _DAY_WEEK_BEFORE = range(7)
_MIN_FLOOR = 1e-6


@dataclass(frozen=True)
class FeaturePlan:
    """Every window position a layout's features read, worked out once per layout."""

    day: int
    names: tuple[str, ...]
    #: Steps at the window's end that hold every range mean (the last week).
    tail: int
    #: Range means: columns of the tail's padded cumulative sums (a range [a, b) is cs[b] - cs[a]).
    span_starts: np.ndarray
    span_stops: np.ndarray
    #: ``(3 * days, profiles * h)`` positions averaged by each profile step (with their two
    #: neighbours: 3-step smoothing); ``m`` (always unknown) outside the window.
    profiles: np.ndarray
    #: ``(lags, h)`` window positions of the same-time lags (1 and 2 days back, then 1 and 2 weeks).
    lags: np.ndarray
    horizon_step: np.ndarray  # (h,) 1..h
    offsets_s: np.ndarray  # (h,) seconds from the origin to each target step


@functools.lru_cache(maxsize=64)
def feature_plan(step_seconds: int, seasonality: Seasonality, window_steps: int, horizon_steps: int) -> FeaturePlan:
    """The positions read by :func:`build_features` for one layout (cached: it is the same for
    every service of that layout and every call)."""
    m, h = window_steps, horizon_steps
    day = _DAY_S // step_seconds
    hour = max(1, round(3600 / step_seconds))
    week = 7 * day
    names = FeatureSpec(step_seconds, seasonality, h, 0.0).names
    tail = min(week, m)
    spans = np.array([(m - day, m), (m - hour, m), (m - 3 * hour, m), (m - day - 3 * hour, m - day),
                      (m - 2 * day, m - day), (m - PROFILE_DAYS * day, m), (m - week, m - week + day)])
    spans = np.clip(spans - (m - tail), 0, tail)
    j = np.arange(h)
    # Target t = o + j sits at window position m + j; the nearest known same time of day
    # is ``rounds`` days back, with rounds = ceil((j + 1) / day).
    back_1d = m + j - ((j // day) + 1) * day
    back_1w = m + j - week
    lags = [back_1d, back_1d - day]
    centres = [np.stack([back_1d - d * day for d in range(PROFILE_DAYS)])]
    if seasonality == "weekly":
        lags += [back_1w, back_1w - week]
        centres.append(np.stack([back_1w - r * week for r in range(PROFILE_WEEKS)]))
    lag_positions = np.stack(lags)
    if np.any(lag_positions < 0):
        raise ValueError(f"a window of {m} steps is too short for a {seasonality} layout")
    columns = []
    for found in centres:
        smoothed = np.concatenate([found + shift for shift in (-1, 0, 1)])  # (3 * k, h) window positions
        columns.append(np.where((smoothed >= 0) & (smoothed < m), smoothed, m))
    width = max(c.shape[0] for c in columns)
    # Profiles of different depth (7 days, 3 weeks) share one gather: the shorter is padded with m + 1.
    profiles = np.concatenate([np.vstack((c, np.full((width - c.shape[0], h), m))) for c in columns], axis=1)
    return FeaturePlan(day=day, names=names, tail=tail, span_starts=spans[:, 0], span_stops=spans[:, 1],
                       profiles=profiles, lags=lag_positions, horizon_step=(j + 1).astype(np.float64),
                       offsets_s=j * step_seconds)


def event_multipliers(events: Sequence[Event], service: str, times_ns: np.ndarray, step_seconds: int,
                      kind_effects: Mapping[str, float], *, unknown: float = 1.0) -> np.ndarray:
    """The expected traffic multiplier of each step starting at ``times_ns``.

    A step is inside an event when it overlaps it; overlapping events multiply. An event
    without a multiplier uses its kind's learned effect; when there is none, ``unknown``:
    1 for the forecast (no evidence to move it), ``NaN`` for the history, so that a step
    disturbed by an unmeasured event is treated as unknown rather than as normal traffic.
    """
    multipliers = np.ones(times_ns.shape, dtype=np.float64)
    step_ns = step_seconds * _NS
    for event in events:
        if not event.applies_to(service):
            continue
        effect = event.multiplier if event.multiplier is not None else kind_effects.get(event.kind or "", unknown)
        if effect == 1.0:
            continue
        start_ns, end_ns = _ns(event.start), _ns(event.end)
        inside = (times_ns + step_ns > start_ns) & (times_ns < end_ns)
        multipliers[inside] *= effect
    return multipliers


def inside_events(events: Sequence[Event], service: str, times_ns: np.ndarray, step_seconds: int) -> np.ndarray:
    """Whether each step overlaps any of the service's events, whatever its effect."""
    inside = np.zeros(times_ns.shape, dtype=bool)
    step_ns = step_seconds * _NS
    for event in events:
        if event.applies_to(service):
            inside |= (times_ns + step_ns > _ns(event.start)) & (times_ns < _ns(event.end))
    return inside


def to_tps(ratio_p50: np.ndarray, ratio_p90: np.ndarray, features: Features, multipliers: np.ndarray,
           p90_margin: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (ratios to the level, origin-major) to TPS, shaped ``(n, H)``.

    The P90 is the raw P90 plus the calibrated margin (see :func:`p90_margin_unit`); both
    are at least 0 and P90 >= P50 (two independently fitted quantiles can cross).
    ``p90_margin`` is one number, or one per origin when a batch mixes models.
    """
    n = features.level.size
    mid = np.maximum(ratio_p50.reshape(n, -1), 0.0)
    margin = p90_margin * p90_margin_unit(features.volatility)
    high = np.maximum(ratio_p90.reshape(n, -1) + margin[:, None], mid)
    scale = features.level[:, None] * multipliers.reshape(n, -1)
    return mid * scale, high * scale


def p90_margin_unit(volatility: np.ndarray) -> np.ndarray:
    """What the calibrated P90 margin is measured in: the recent volatility, bounded.

    A margin proportional to how unsettled the traffic is now keeps the P90 honest both in
    fifa's tournament (days swing 3-fold) and in the calm weeks after it; one fixed margin
    was too narrow for the first and too wide for the second. Unknown volatility (no day
    before) counts as the median of the bounds.
    """
    bounded = np.clip(volatility, MIN_VOLATILITY, MAX_VOLATILITY)
    return np.asarray(np.where(np.isnan(bounded), np.sqrt(MIN_VOLATILITY * MAX_VOLATILITY), bounded))


def sliding_windows(values: np.ndarray, origins: np.ndarray, window_steps: int) -> np.ndarray:
    """``(len(origins), window_steps)``: the values before each origin index, ``NaN``-padded at the start."""
    padded = np.concatenate((np.full(window_steps, np.nan), values))
    view = np.lib.stride_tricks.sliding_window_view(padded, window_steps)
    return np.asarray(view[origins], dtype=np.float64)


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * _NS)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """``nanmean`` without the all-NaN warning: ``NaN`` where nothing is known.

    Three ufunc reductions, no temporary copy of ``values``: this runs on every forecast.
    """
    known = ~np.isnan(values)
    count = np.add.reduce(known, axis=axis, dtype=np.float64)
    total = np.add.reduce(values, axis=axis, where=known)
    return np.asarray(np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0))


def _ratio(numerator: np.ndarray, denominator: np.ndarray, floor: np.ndarray) -> np.ndarray:
    # Both sides are at least the floor (or NaN, which propagates quietly): no division by zero.
    return np.asarray(np.maximum(numerator, floor) / np.maximum(denominator, floor))
