"""The model's inputs, computed the same way for training and for serving.

One forecast origin ``o`` (the first step to predict) and its history window ``w`` (the
``window_steps`` TPS values before ``o``, ``NaN`` where unknown) give one row per
horizon step ``j`` (target ``t = o + j``). Training stacks many origins, serving one,
through the same :func:`build_features`, so the two cannot drift apart.

Scale-free by design: every traffic feature and the target are divided by the recent
level ``L`` (mean TPS over the last day; with a weekly cycle, the median of the last seven
days' means, see :func:`build_features`). A tree ensemble cannot extrapolate to a level
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
from models.kernels import fill_rows, margin_units, ratios_to_tps, read_only
from models.seasonality import Seasonality

_NS = 1_000_000_000
_DAY_S = 86_400
#: Days averaged at the same time of day, and weeks at the same time of week.
PROFILE_DAYS = 7
PROFILE_WEEKS = 3


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
    #: History a forecast needs. A service's own model needs a day (its level); the pooled model,
    #: trained on origins with as little, serves a new service after a few hours.
    min_history_hours: int = 24

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
        """What the recent level needs (one day, by default). Longer windows are used when given."""
        return max(1, self.min_history_hours * 3600 // self.step_seconds)

    @functools.cached_property
    def plans(self) -> dict[int, _Plan]:
        """The feature positions of each horizon asked for (:func:`_plan`), kept on the spec: looked
        up on every forecast, where building the cache key alone cost a microsecond."""
        return {}

    @functools.cached_property
    def names(self) -> tuple[str, ...]:  # cached: read on every forecast
        names = ["horizon_step", "last_step", "recent_1h", "recent_3h_vs_day_before", "level_vs_day_before",
                 "day_over_day_change"]
        if self.seasonality == "weekly":
            names += ["last_day_vs_level"]
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
                   min_history_hours=int(data.get("min_history_hours", 24)))
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


class _Plan(NamedTuple):
    """Where every feature reads its window, for one layout and horizon; computed once and cached,
    in the integer arrays :func:`models.kernels.fill_rows` walks."""

    #: ``(S, 2)`` window positions ``[start, stop)`` of each range mean (``_SPANS``, in order).
    spans: np.ndarray
    #: ``(3, P, h)`` window positions of every profile point (``[1]``) and its two neighbours,
    #: clipped into the window; ``inside`` is False for the neighbours that fall off either end.
    gather: np.ndarray
    inside: np.ndarray
    #: Seconds from the origin of each horizon step.
    offsets_s: np.ndarray
    #: ``(R, 3)`` each per-origin feature (a ratio of two of the values ``_RATIO_OF`` names): its
    #: numerator's and denominator's positions in the values (``_values_index``), its column.
    ratios: np.ndarray
    #: ``(L, 2)`` each lag the layout has (``_LAGS``): its profile point and its column.
    lags: np.ndarray
    #: Columns of horizon_step, hour_of_day, day_of_week, profile_days, profile_weeks (-1: absent).
    columns: np.ndarray


#: Range means each origin needs, as ``(start, stop)`` offsets from the window's end in units of
#: (day, hour) steps: ``day_before`` is ``[m - 2 day, m - day)``. ``day``, ``day_before`` and
#: ``day_2`` ... ``day_6`` are the last seven days, the weekly level's median.
_SPANS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "day": ((-1, 0), (0, 0)), "day_before": ((-2, 0), (-1, 0)),
    **{f"day_{d}": ((-d - 1, 0), (-d, 0)) for d in range(2, 7)},
    "hour": ((0, -1), (0, 0)), "3h": ((0, -3), (0, 0)), "3h_day_before": ((-1, -3), (-1, 0)),
    "days": ((-PROFILE_DAYS, 0), (0, 0)), "day_week_before": ((-7, 0), (-6, 0)),
}
_SPAN = {name: column for column, name in enumerate(_SPANS)}
_LAST_DAYS = 7  # the first seven spans
_LAGS = ("same_time_1d", "same_time_2d", "same_time_1w", "same_time_2w")
#: The profile point each lag reads: one and two days back, one and two weeks back.
_LAG_POINTS = (0, 1, PROFILE_DAYS, PROFILE_DAYS + 1)
#: The values every per-origin feature is a ratio of, after the range means: the last step, the
#: level L, the last day's mean and the day-over-day change (see :func:`build_features`).
_VALUES = (*_SPANS, "last_step", "level", "last_day", "change")
#: Each per-origin feature as (numerator, denominator); a name ending in "+" is that value at
#: least the level floor (both sides of a ratio between two levels are: no division by zero).
_RATIO_OF = {
    "last_step": ("last_step", "level"),
    "recent_1h": ("hour", "level"),
    "recent_3h_vs_day_before": ("3h+", "3h_day_before+"),
    "level_vs_day_before": ("level+", "day_before+"),
    "day_over_day_change": ("change", "level"),
    "last_day_vs_level": ("last_day", "level"),
    "level_vs_week_before": ("level+", "day_week_before+"),
}
#: The features with a column of their own in ``_Plan.columns``, in its order.
_OWN_COLUMNS = ("horizon_step", "hour_of_day", "day_of_week", "profile_days", "profile_weeks")


def _values_index(name: str) -> int:
    """Where ``name`` is in the values and their floored copy, side by side."""
    return _VALUES.index(name.rstrip("+")) + (len(_VALUES) if name.endswith("+") else 0)


@functools.lru_cache(maxsize=64)
def _plan(spec_names: tuple[str, ...], m: int, day: int, hour: int, h: int, step_seconds: int) -> _Plan:
    spans = np.array([[max(m + start[0] * day + start[1] * hour, 0), max(m + stop[0] * day + stop[1] * hour, 0)]
                      for start, stop in _SPANS.values()], dtype=np.int64)
    j = np.arange(h)
    # Target t = o + j sits at window position m + j; the nearest known same time of day is
    # ``rounds`` days back, with rounds = ceil((j + 1) / day).
    back_1d = m + j - ((j // day) + 1) * day
    points = [back_1d - d * day for d in range(PROFILE_DAYS)]
    if "same_time_1w" in spec_names:
        points += [m + j - (r + 1) * 7 * day for r in range(PROFILE_WEEKS)]
    centre = np.stack(points)
    around = np.stack((centre - 1, centre, centre + 1))
    ratios = [[_values_index(numerator), _values_index(denominator), spec_names.index(name)]
              for name, (numerator, denominator) in _RATIO_OF.items() if name in spec_names]
    lags = [[point, spec_names.index(lag)] for lag, point in zip(_LAGS, _LAG_POINTS, strict=True) if lag in spec_names]
    plan = _Plan(spans, np.ascontiguousarray(np.clip(around, 0, m - 1), dtype=np.int64), (around >= 0) & (around < m),
                 (j * step_seconds).astype(np.int64), np.array(ratios, dtype=np.int64).reshape(-1, 3),
                 np.array(lags, dtype=np.int64).reshape(-1, 2),
                 np.array([spec_names.index(name) if name in spec_names else -1 for name in _OWN_COLUMNS],
                          dtype=np.int64))
    for array in plan:
        array.setflags(write=False)
    return plan


def build_features(windows: np.ndarray, origins_ns: np.ndarray, spec: FeatureSpec,
                   horizon_steps: int | None = None, *, level_floors: np.ndarray | None = None) -> Features:
    """Rows for every (origin, horizon step) of ``windows`` (``(n, spec.window_steps)``,
    de-evented, ``NaN`` where unknown).

    The one pass for training (hundreds of thousands of origins) and serving (one service, or a
    batch of thousands): :func:`models.kernels.fill_rows`, compiled, at positions cached
    per layout (:func:`_plan`). What each feature is:

    - The level L: the last day's mean (the whole window's when the last day is mostly unknown);
      with a weekly cycle, the median of the last seven days' means. A week's median shrugs off
      one anomalous day and spans every weekday, so a Sunday is not the yardstick of a Monday.
      With the last day as L, the day after nyc_taxi's blizzard read as a 4-fold rebound, a ratio
      the model had never seen (that fold's MASE 2.86, now 1.09).
    - One value per origin, each a ratio of two range means or levels (``_RATIO_OF``).
    - The lags: the same time of day one and two days back (one and two weeks when weekly), over L.
    - The profiles: each point smoothed with its neighbours, then the median over the days
      (weeks), so one storm day or holiday among them does not bend the profile. The daily profile
      gives the shape of a day, not its level: divided by the mean of the days it averages.
      Divided by L instead, a week of decline (fifa after the final) read as "far below the usual
      level" and the model, taught by the tournament's rest days, forecast a rebound that never
      came (MASE 0.119 against 0.071 for the shape-only profile).

    ``level_floors`` (one per origin) lets services with different models but the same feature
    layout share one pass.
    """
    n, m = windows.shape
    if m != spec.window_steps:
        raise ValueError(f"windows have {m} steps, the spec needs {spec.window_steps}")
    h = spec.horizon_steps if horizon_steps is None else horizon_steps
    day = spec.steps_per_day
    plan = spec.plans.get(h)
    if plan is None:
        plan = spec.plans[h] = _plan(spec.names, m, day, max(1, round(3600 / spec.step_seconds)), h,
                                     spec.step_seconds)
    floors = np.full(n, spec.level_floor) if level_floors is None else np.asarray(level_floors, dtype=np.float64)
    x = np.empty((n, h, len(spec.names)), dtype=np.float32)
    level, volatility = np.empty(n), np.empty(n)
    fill_rows(np.ascontiguousarray(windows, dtype=np.float64), np.asarray(origins_ns, dtype=np.int64), floors,
              plan.spans, plan.gather, plan.inside, plan.offsets_s, plan.ratios, plan.lags, plan.columns,
              day, _LAST_DAYS, _SPAN["days"], PROFILE_DAYS, x, level, volatility)
    return Features(x.reshape(n * h, -1), level, volatility)


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
    margins = (np.full(n, float(p90_margin)) if isinstance(p90_margin, int | float)
               else np.asarray(p90_margin, dtype=np.float64))
    p50, p90 = np.empty((n, ratio_p50.size // n)), np.empty((n, ratio_p50.size // n))
    ratios_to_tps(ratio_p50.reshape(n, -1), ratio_p90.reshape(n, -1), features.level, features.volatility,
                  read_only(multipliers.reshape(n, -1)), margins, p50, p90)
    return p50, p90


def p90_margin_unit(volatility: np.ndarray) -> np.ndarray:
    """What the calibrated P90 margin is measured in: the recent volatility, bounded.

    A margin proportional to how unsettled the traffic is now keeps the P90 honest both in
    fifa's tournament (days swing 3-fold) and in the calm weeks after it; one fixed margin
    was too narrow for the first and too wide for the second. Unknown volatility (no day
    before) counts as the median of the bounds (:func:`models.kernels.margin_unit`).
    """
    units = np.empty(volatility.shape)
    margin_units(np.ascontiguousarray(volatility, dtype=np.float64).reshape(-1), units.reshape(-1))
    return units


def sliding_windows(values: np.ndarray, origins: np.ndarray, window_steps: int) -> np.ndarray:
    """``(len(origins), window_steps)``: the values before each origin index, ``NaN``-padded at the start."""
    padded = np.concatenate((np.full(window_steps, np.nan), values))
    view = np.lib.stride_tricks.sliding_window_view(padded, window_steps)
    return np.asarray(view[origins], dtype=np.float64)


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * _NS)

