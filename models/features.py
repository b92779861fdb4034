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
import math
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
#: The volatility a window without a day before counts as: the median of the bounds.
_UNKNOWN_VOLATILITY = math.sqrt(MIN_VOLATILITY * MAX_VOLATILITY)


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
    """Where every feature reads its window, for one layout and horizon; computed once and cached.

    With the positions fixed in advance, a batch of any size (one service or ten thousand) costs a
    fixed number of numpy calls: one product for all the range means, one gather for all the
    seasonal lags with their neighbours. Per call, index building and one assignment per
    feature were most of a single forecast's time; what a window with no unknown step would
    count (steps per span, neighbours per profile point) is counted here once.
    """

    #: ``(tail, spans)`` 0/1: which of the window's last ``tail`` positions each range mean
    #: covers (see ``_SPANS``; none reaches further back than a week).
    spans: np.ndarray
    #: ``(spans,)`` the steps each span covers: a fully known window's counts.
    span_steps: np.ndarray
    #: ``(3, P, h)`` window positions of every profile point (``[1]``) and its two neighbours,
    #: clipped into the window; ``inside`` is False for the neighbours that fall off either end.
    gather: np.ndarray
    inside: np.ndarray
    #: ``(P, h)`` neighbours inside the window of each profile point (NaN where none is), and
    #: whether every point has one (then a fully known window's profiles have no NaN).
    inside_counts: np.ndarray
    every_point_inside: bool
    #: Seconds from the origin of each horizon step.
    offsets_s: np.ndarray
    #: ``1 .. h``, the ``horizon_step`` feature.
    steps: np.ndarray
    #: Column of ``x`` of each feature.
    column: Mapping[str, int]
    #: Profile points the lags read (``same_time_1d``, ``_2d``, and ``_1w``, ``_2w`` when weekly),
    #: and the lags' columns of ``x``.
    lag_points: np.ndarray
    lag_columns: np.ndarray
    #: The features with one value per origin, each a ratio of two of the values ``_RATIO_OF``
    #: names: their positions in the values (``_values_index``) and their columns of ``x``.
    ratio_numerators: np.ndarray
    ratio_denominators: np.ndarray
    ratio_columns: np.ndarray
    #: Whether each of the last seven days is mostly known in a fully known window (it is, unless
    #: the window is shorter than a week).
    full_days: np.ndarray


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


def _values_index(name: str) -> int:
    """Where ``name`` is in the values and their floored copy, side by side."""
    return _VALUES.index(name.rstrip("+")) + (len(_VALUES) if name.endswith("+") else 0)


@functools.lru_cache(maxsize=64)
def _plan(spec_names: tuple[str, ...], m: int, day: int, hour: int, h: int, step_seconds: int) -> _Plan:
    tail = min(m, 7 * day)
    spans = np.zeros((tail, len(_SPANS)))
    for column, ((start_days, start_hours), (stop_days, stop_hours)) in enumerate(_SPANS.values()):
        start = max(tail + start_days * day + start_hours * hour, 0)
        stop = max(tail + stop_days * day + stop_hours * hour, 0)
        spans[start:stop, column] = 1.0
    j = np.arange(h)
    # Target t = o + j sits at window position m + j; the nearest known same time of day is
    # ``rounds`` days back, with rounds = ceil((j + 1) / day).
    back_1d = m + j - ((j // day) + 1) * day
    points = [back_1d - d * day for d in range(PROFILE_DAYS)]
    if "same_time_1w" in spec_names:
        points += [m + j - (r + 1) * 7 * day for r in range(PROFILE_WEEKS)]
    centre = np.stack(points)
    around = np.stack((centre - 1, centre, centre + 1))
    inside = (around >= 0) & (around < m)
    counts = np.add.reduce(inside, axis=0).astype(np.float64)
    counts[counts == 0] = np.nan
    # The lags the layout has (none without a cycle): their profile points and columns, from one list.
    lags = [lag for lag in _LAGS if lag in spec_names]
    lag_points = np.array([0, 1, PROFILE_DAYS, PROFILE_DAYS + 1][: len(lags)], dtype=np.int64)
    span_steps = spans.sum(axis=0)
    ratios = [name for name in spec_names if name in _RATIO_OF]
    plan = _Plan(spans, span_steps, np.clip(around, 0, m - 1), inside, counts, not np.isnan(counts).any(),
                 j * step_seconds, np.arange(1.0, h + 1), {name: i for i, name in enumerate(spec_names)},
                 lag_points, np.array([spec_names.index(lag) for lag in lags], dtype=np.int64),
                 np.array([_values_index(_RATIO_OF[name][0]) for name in ratios]),
                 np.array([_values_index(_RATIO_OF[name][1]) for name in ratios]),
                 np.array([spec_names.index(name) for name in ratios]),
                 span_steps[None, :_LAST_DAYS] * 4 >= day)
    for array in plan:
        if isinstance(array, np.ndarray):
            array.setflags(write=False)
    return plan


def build_features(windows: np.ndarray, origins_ns: np.ndarray, spec: FeatureSpec,
                   horizon_steps: int | None = None, *, level_floors: np.ndarray | None = None) -> Features:
    """Rows for every (origin, horizon step) of ``windows`` (``(n, spec.window_steps)``,
    de-evented, ``NaN`` where unknown).

    Written for the serving path as much as for training: a fixed number of vectorised
    numpy operations whatever ``n`` is (every range mean from one matrix product, every
    seasonal lag from one gather, both at positions cached per layout), no per-row Python.
    A batch with no unknown step (the usual serving case) skips the counting of known steps:
    the counts are the plan's, and the arithmetic is otherwise the same, to the last bit.
    ``level_floors`` (one per origin) lets services with different models but the same
    feature layout share one pass.
    """
    n, m = windows.shape
    if m != spec.window_steps:
        raise ValueError(f"windows have {m} steps, the spec needs {spec.window_steps}")
    h = spec.horizon_steps if horizon_steps is None else horizon_steps
    day = spec.steps_per_day
    plan = _plan(spec.names, m, day, max(1, round(3600 / spec.step_seconds)), h, spec.step_seconds)
    floor: float | np.ndarray = spec.level_floor if level_floors is None else level_floors
    weekly = spec.seasonality == "weekly"
    tail = plan.spans.shape[0]
    recent, before = windows[:, m - day :], windows[:, m - 2 * day : m - day]

    # Every range mean: known values summed and counted over each span, in two products.
    totals = np.add.reduce(windows, axis=1)
    grand = np.add.reduce(totals)
    counting = bool(grand != grand)  # NaN != NaN: some step of some window is unknown
    if counting:
        known = ~np.isnan(windows)
        filled, counted = np.where(known, windows, 0.0), known.astype(np.float64)
        counts = counted[:, m - tail :] @ plan.spans
        means = _divide(filled[:, m - tail :] @ plan.spans, counts)
        whole = _divide(np.add.reduce(filled, axis=1), np.add.reduce(counted, axis=1))
        change = _nanmean(np.abs(recent - before), axis=1)
        mostly_known = counts[:, :_LAST_DAYS] * 4 >= day  # a day with at least a quarter of its steps known
    else:
        means = (windows[:, m - tail :] @ plan.spans) / plan.span_steps
        whole = totals / m
        change = np.add.reduce(np.abs(recent - before), axis=1) / day
        mostly_known = plan.full_days
    last = _SPAN["day"]
    if counting:
        last_day = np.maximum(np.where(mostly_known[:, last], means[:, last], whole), floor)
    else:
        last_day = np.maximum(means[:, last] if mostly_known[0, last] else whole, floor)
    # The level L: the last day's mean; with a weekly cycle, the median of the last seven days'
    # means. A week's median shrugs off one anomalous day and spans every weekday, so a Sunday is
    # not the yardstick of a Monday. With the last day as L, the day after nyc_taxi's blizzard read
    # as a 4-fold rebound, a ratio the model had never seen (that fold's MASE 2.86, now 1.09).
    level = last_day
    if weekly and not counting and mostly_known.all():
        level = np.maximum(_nanmedian(means[:, :_LAST_DAYS], axis=1, known=True), floor)
    elif weekly:
        week = _nanmedian(np.where(mostly_known, means[:, :_LAST_DAYS], np.nan), axis=1)
        level = np.where(week != week, last_day, np.maximum(week, floor))
    volatility = change / level

    # Each feature written into its column of x: one value per origin ([:, None], broadcast over
    # the horizon steps) or one per row. (A ufunc's ``out`` straight into the float32 column is
    # slower: casting into a strided view costs more than the assignment it saves.)
    x = np.empty((n, h, len(spec.names)), dtype=np.float32)
    column = plan.column

    def put(name: str, value: np.ndarray) -> None:
        x[:, :, column[name]] = value

    put("horizon_step", plan.steps)
    # Every per-origin feature in one division: the values side by side with their floored copy,
    # numerators and denominators gathered from them (``_RATIO_OF``).
    values = np.concatenate((means, windows[:, -1:], level[:, None], last_day[:, None], change[:, None]), axis=1)
    floors = spec.level_floor if level_floors is None else level_floors[:, None]  # one per row of values
    values = np.concatenate((values, np.maximum(values, floors)), axis=1)
    x[:, :, plan.ratio_columns] = (values[:, plan.ratio_numerators] / values[:, plan.ratio_denominators])[:, None]
    if spec.seasonality != "none":
        seconds = origins_ns[:, None] // _NS + plan.offsets_s
        put("hour_of_day", (seconds % _DAY_S) / 3600.0)
        around = windows[:, plan.gather]  # (n, 3, P, h): each profile point with its two neighbours
        # Lags: the points themselves (P[0] one day back, P[1] two days, P[7] one week, P[8] two).
        scale = 1.0 / level[:, None]
        x[:, :, plan.lag_columns] = (around[:, 1, plan.lag_points] * scale[:, None]).transpose(0, 2, 1)
        # Profiles: each point smoothed with its neighbours, then the median over the days (weeks):
        # one storm day or holiday among them does not bend the profile.
        if counting:
            present = (around == around) & plan.inside
            smoothed = _divide(np.add.reduce(np.where(present, around, 0.0), axis=1),
                               np.add.reduce(present, axis=1))
        else:
            smoothed = np.add.reduce(np.where(plan.inside, around, 0.0), axis=1) / plan.inside_counts
        complete = not counting and plan.every_point_inside  # then no profile point is NaN
        # The daily profile gives the shape of a day, not its level: divided by the mean of the days it
        # averages. Divided by L instead, a week of decline (fifa after the final) read as "far below
        # the usual level" and the model, taught by the tournament's rest days, forecast a rebound that
        # never came (MASE 0.119 against 0.071 for the shape-only profile).
        days_mean = np.maximum(means[:, _SPAN["days"]], floor)[:, None]
        put("profile_days", _nanmedian(smoothed[:, :PROFILE_DAYS], axis=1, known=complete) / days_mean)
        if weekly:
            put("day_of_week", (seconds // _DAY_S + 3) % 7)  # 1970-01-01 was a Thursday
            put("profile_weeks", _nanmedian(smoothed[:, PROFILE_DAYS:], axis=1, known=complete) * scale)
    return Features(x.reshape(n * h, -1), level, volatility)


def _divide(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``total / count``, ``NaN`` where nothing was counted (no warning)."""
    return np.asarray(total / np.where(count > 0, count, np.nan))


def _nanmedian(values: np.ndarray, axis: int, *, known: bool = False) -> np.ndarray:
    """Median along ``axis`` ignoring ``NaN``, ``NaN`` where nothing is known; ``known``: the
    caller knows there is no ``NaN`` (the check is skipped).

    By sorting (``NaN`` sorts last) and picking the middle of the known values with one fancy
    index: ``np.nanmedian`` (warnings, masking) and ``np.take_along_axis`` cost tens of
    microseconds a call, a visible share of a forecast's budget.
    """
    length = values.shape[axis]
    if known or not np.isnan(np.add.reduce(values, axis=None)):
        ordered = np.sort(values, axis=axis)
        low, high = ordered.take((length - 1) // 2, axis=axis), ordered.take(length // 2, axis=axis)
        # An odd count has one middle: (a + a) / 2 is a, to the last bit; skip the arithmetic.
        return low if length % 2 else np.asarray((low + high) / 2)
    ordered = np.sort(np.swapaxes(values, axis, -1), axis=-1)
    shape = ordered.shape[:-1]
    rows = ordered.reshape(-1, length)
    count = np.add.reduce(rows == rows, axis=1)  # NaN != NaN: the known values, sorted first
    at = np.arange(rows.shape[0])
    middle = (rows[at, np.maximum(count - 1, 0) // 2] + rows[at, np.minimum(count // 2, length - 1)]) / 2
    middle[count == 0] = np.nan
    return np.asarray(middle.reshape(shape))


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
    bounded = np.minimum(np.maximum(volatility, MIN_VOLATILITY), MAX_VOLATILITY)  # NaN stays NaN
    return np.asarray(np.where(bounded == bounded, bounded, _UNKNOWN_VOLATILITY))


def sliding_windows(values: np.ndarray, origins: np.ndarray, window_steps: int) -> np.ndarray:
    """``(len(origins), window_steps)``: the values before each origin index, ``NaN``-padded at the start."""
    padded = np.concatenate((np.full(window_steps, np.nan), values))
    view = np.lib.stride_tricks.sliding_window_view(padded, window_steps)
    return np.asarray(view[origins], dtype=np.float64)


def _ns(moment: Any) -> int:
    return int(moment.timestamp() * _NS)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """``nanmean`` without the all-NaN warning: ``NaN`` where nothing is known.

    Written with ufunc reductions, not ``np.sum``: on the one-service path each wrapper's
    overhead is a visible share of the forecast."""
    known = ~np.isnan(values)
    return _divide(np.add.reduce(np.where(known, values, 0.0), axis=axis), np.add.reduce(known, axis=axis))
