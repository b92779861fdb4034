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
        import os
        drop = set(filter(None, os.environ.get("HDROP", "").split(",")))
        return tuple(n for n in names if n not in drop)

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


def recent_level(windows: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Mean TPS over the last day of each window (the whole window if the last day is mostly
    unknown); ``NaN`` when the window holds no value at all."""
    day = spec.steps_per_day
    last_day = _nanmean(windows[:, -day:], axis=1)
    known_last_day = np.count_nonzero(~np.isnan(windows[:, -day:]), axis=1)
    fallback = _nanmean(windows, axis=1)
    return np.where(known_last_day * 4 >= day, last_day, fallback)


class Features(NamedTuple):
    #: ``(n * H, F)`` float32, origin-major: the model's input.
    x: np.ndarray
    #: ``(n,)`` recent level ``L`` of each origin (TPS): the model predicts ``actual / L``.
    level: np.ndarray
    reference: np.ndarray


def build_features(windows: np.ndarray, origins_ns: np.ndarray, spec: FeatureSpec,
                   horizon_steps: int | None = None) -> Features:
    """Rows for every (origin, horizon step) of ``windows`` (``(n, spec.window_steps)``,
    de-evented, ``NaN`` where unknown)."""
    n, m = windows.shape
    if m != spec.window_steps:
        raise ValueError(f"windows have {m} steps, the spec needs {spec.window_steps}")
    h = spec.horizon_steps if horizon_steps is None else horizon_steps
    day = spec.steps_per_day
    level = np.maximum(recent_level(windows, spec), spec.level_floor)
    scale = 1.0 / level[:, None]
    j = np.arange(h)
    hour_steps = max(1, round(3600 / spec.step_seconds))

    def per_origin(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values[:, None], (n, h))

    columns: dict[str, np.ndarray] = {
        "horizon_step": np.broadcast_to((j + 1).astype(np.float64), (n, h)),
        "last_step": per_origin(windows[:, -1]) * scale,
        "recent_1h": per_origin(_nanmean(windows[:, -hour_steps:], axis=1)) * scale,
        "recent_3h_vs_day_before": per_origin(_ratio(
            _nanmean(windows[:, -3 * hour_steps:], axis=1),
            _nanmean(windows[:, m - day - 3 * hour_steps : m - day], axis=1), spec.level_floor)),
        "level_vs_day_before": per_origin(_ratio(
            level, _nanmean(windows[:, m - 2 * day : m - day], axis=1), spec.level_floor)),
        # How far the last day strayed from the day before, step by step: the recent volatility,
        # which sets how wide the P90 band must be.
        "day_over_day_change": per_origin(_nanmean(
            np.abs(windows[:, m - day :] - windows[:, m - 2 * day : m - day]), axis=1)) * scale,
    }
    if spec.seasonality != "none":
        seconds = origins_ns[:, None] // _NS + j[None, :] * spec.step_seconds
        smooth = _smooth3(windows)
        # Target t = o + j sits at window position m + j; the nearest known same time of day
        # is ``rounds`` days back, with rounds = ceil((j + 1) / day).
        rounds = (j // day) + 1
        back_1d = m + j - rounds * day
        columns["hour_of_day"] = (seconds % _DAY_S) / 3600.0
        columns["same_time_1d"] = windows[:, back_1d] * scale
        columns["same_time_2d"] = windows[:, back_1d - day] * scale
        # The profile gives the shape of a day, not its level: divided by the mean of the days it
        # averages. Divided by L instead, a week of decline (fifa after the final) read as "far
        # below the usual level" and the model, taught by the tournament's rest days, forecast a
        # rebound that never came (MASE 0.119 against 0.071 for the shape-only profile).
        days_mean = np.maximum(_nanmean(windows[:, m - PROFILE_DAYS * day :], axis=1), spec.level_floor)
        columns["profile_days"] = _nanmean(
            np.stack([smooth[:, back_1d - d * day] for d in range(PROFILE_DAYS)]), axis=0) / days_mean[:, None]
    if spec.seasonality == "weekly":
        week = 7 * day
        back_1w = m + j - week
        columns["day_of_week"] = ((seconds // _DAY_S + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
        columns["same_time_1w"] = windows[:, back_1w] * scale
        columns["same_time_2w"] = windows[:, back_1w - week] * scale
        columns["profile_weeks"] = _nanmean(
            np.stack([smooth[:, back_1w - r * week] for r in range(PROFILE_WEEKS)]), axis=0) * scale
        columns["level_vs_week_before"] = per_origin(_ratio(
            level, _nanmean(windows[:, m - week : m - week + day], axis=1), spec.level_floor))

    x = np.empty((n * h, len(spec.names)), dtype=np.float32)
    for i, name in enumerate(spec.names):
        x[:, i] = np.broadcast_to(columns[name], (n, h)).reshape(-1)
    import os
    if os.environ.get("HREF") and spec.seasonality == "daily":
        ref = smooth[:, back_1d]
        ref = np.where(np.isnan(ref), level[:, None], np.maximum(ref, 0.1 * level[:, None]))
        return Features(x, level, ref)
    return Features(x, level, np.broadcast_to(level[:, None], (n, h)))


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


def to_tps(ratio_p50: np.ndarray, ratio_p90: np.ndarray, level: np.ndarray, multipliers: np.ndarray,
           p90_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (ratios to the level, origin-major) to TPS, shaped ``(n, H)``.

    The P90 is the raw P90 plus the calibration offset; both are at least 0 and P90 >= P50
    (two independently fitted quantiles can cross).
    """
    n = level.shape[0]
    level = level if level.ndim == 2 else level[:, None]
    mid = np.maximum(ratio_p50.reshape(n, -1), 0.0)
    high = np.maximum(ratio_p90.reshape(n, -1) + p90_offset, mid)
    scale = level * multipliers.reshape(n, -1)
    return mid * scale, high * scale


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
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _smooth3(windows: np.ndarray) -> np.ndarray:
    """Mean of each step and its two neighbours inside the window, ignoring ``NaN``."""
    pad = np.full((windows.shape[0], 1), np.nan)
    stacked = np.stack((np.hstack((pad, windows[:, :-1])), windows, np.hstack((windows[:, 1:], pad))))
    return _nanmean(stacked, axis=0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, floor: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(numerator, floor) / np.maximum(denominator, floor)
