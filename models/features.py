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
                   kind_effects={str(k): float(v) for k, v in dict(data.get("kind_effects", {})).items()})
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

    Written for the serving path as much as for training: a fixed number of vectorised
    numpy operations whatever ``n`` is (range means from cumulative sums, one gather for
    all seasonal lags), no per-row Python. ``level_floors`` (one per origin) lets services
    with different models but the same feature layout share one pass.
    """
    n, m = windows.shape
    if m != spec.window_steps:
        raise ValueError(f"windows have {m} steps, the spec needs {spec.window_steps}")
    h = spec.horizon_steps if horizon_steps is None else horizon_steps
    day = spec.steps_per_day
    floor = np.full(n, spec.level_floor) if level_floors is None else level_floors
    hour = max(1, round(3600 / spec.step_seconds))
    week = 7 * day

    # Every per-origin range mean in one gather: [start, stop) window positions.
    spans = {"day": (m - day, m), "window": (0, m), "hour": (m - hour, m), "3h": (m - 3 * hour, m),
             "3h_day_before": (m - day - 3 * hour, m - day), "day_before": (m - 2 * day, m - day),
             "days": (m - PROFILE_DAYS * day, m), "day_week_before": (m - week, m - week + day)}
    means, counts = _range_means(windows, np.array(list(spans.values())))
    mean = dict(zip(spans, means.T, strict=True))
    mostly_known = counts[:, 0] * 4 >= day
    level = np.maximum(np.where(mostly_known, mean["day"], mean["window"]), floor)
    volatility = _nanmean(np.abs(windows[:, m - day :] - windows[:, m - 2 * day : m - day]), axis=1) / level

    # One value per origin, repeated over the horizon when the rows are laid out.
    per_origin: dict[str, np.ndarray] = {
        "last_step": windows[:, -1] / level,
        "recent_1h": mean["hour"] / level,
        "recent_3h_vs_day_before": _ratio(mean["3h"], mean["3h_day_before"], floor),
        "level_vs_day_before": _ratio(level, mean["day_before"], floor),
        "day_over_day_change": volatility,
    }
    j = np.arange(h)
    per_row: dict[str, np.ndarray] = {"horizon_step": np.broadcast_to((j + 1).astype(np.float64), (n, h))}
    if spec.seasonality != "none":
        seconds = origins_ns[:, None] // _NS + j[None, :] * spec.step_seconds
        # Target t = o + j sits at window position m + j; the nearest known same time of day
        # is ``rounds`` days back, with rounds = ceil((j + 1) / day).
        back_1d = m + j - ((j // day) + 1) * day
        scale = 1.0 / level[:, None]
        per_row["hour_of_day"] = (seconds % _DAY_S) / 3600.0
        per_row["same_time_1d"] = windows[:, back_1d] * scale
        per_row["same_time_2d"] = windows[:, back_1d - day] * scale
        profile_at = [back_1d - d * day for d in range(PROFILE_DAYS)]
        if spec.seasonality == "weekly":
            back_1w = m + j - week
            per_row["day_of_week"] = ((seconds // _DAY_S + 3) % 7).astype(np.float64)  # 1970-01-01: Thursday
            per_row["same_time_1w"] = windows[:, back_1w] * scale
            per_row["same_time_2w"] = windows[:, back_1w - week] * scale
            per_origin["level_vs_week_before"] = _ratio(level, mean["day_week_before"], floor)
            profile_at += [back_1w - r * week for r in range(PROFILE_WEEKS)]
        smoothed = _smoothed_at(windows, np.stack(profile_at))  # (n, profiles, h)
        # The profile gives the shape of a day, not its level: divided by the mean of the days it
        # averages. Divided by L instead, a week of decline (fifa after the final) read as "far
        # below the usual level" and the model, taught by the tournament's rest days, forecast a
        # rebound that never came (MASE 0.119 against 0.071 for the shape-only profile).
        days_mean = np.maximum(mean["days"], floor)
        per_row["profile_days"] = _nanmean(smoothed[:, :PROFILE_DAYS], axis=1) / days_mean[:, None]
        if spec.seasonality == "weekly":
            per_row["profile_weeks"] = _nanmean(smoothed[:, PROFILE_DAYS:], axis=1) * scale

    x = np.empty((n, h, len(spec.names)), dtype=np.float32)
    for i, name in enumerate(spec.names):
        x[:, :, i] = per_origin[name][:, None] if name in per_origin else per_row[name]
    return Features(x.reshape(n * h, -1), level, volatility)


def _range_means(windows: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of known values of each window over each ``[start, stop)`` span: ``(n, spans)``."""
    known = ~np.isnan(windows)
    zero = np.zeros((windows.shape[0], 1))
    sums = np.hstack((zero, np.cumsum(np.where(known, windows, 0.0), axis=1)))
    counts = np.hstack((zero, np.cumsum(known, axis=1)))
    starts, stops = np.clip(spans[:, 0], 0, None), np.clip(spans[:, 1], 0, None)
    total, count = sums[:, stops] - sums[:, starts], counts[:, stops] - counts[:, starts]
    return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


def _smoothed_at(windows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mean of each position and its two neighbours inside the window, ignoring ``NaN``:
    shape ``(n, *positions.shape)``."""
    padding = np.full((windows.shape[0], 1), np.nan)
    padded = np.hstack((padding, windows, padding))
    # Position p of the window is p + 1 of the padded one; its neighbours p and p + 2.
    neighbours = padded[:, np.stack((positions, positions + 1, positions + 2))]
    return _nanmean(neighbours, axis=1)


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
    """``nanmean`` without the all-NaN warning: ``NaN`` where nothing is known."""
    known = ~np.isnan(values)
    count = np.count_nonzero(known, axis=axis)
    total = np.sum(np.where(known, values, 0.0), axis=axis)
    return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def _ratio(numerator: np.ndarray, denominator: np.ndarray, floor: np.ndarray) -> np.ndarray:
    # Both sides are at least the floor (or NaN, which propagates quietly): no division by zero.
    return np.asarray(np.maximum(numerator, floor) / np.maximum(denominator, floor))
