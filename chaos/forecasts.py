"""Reading forecasts (as ``harbinger forecast`` writes them, or as the planner records them in
a CapacityPlan's status) and finding what chaos needs in them: the predicted peaks, the
rehearsal window before one, the load in a window, the quietest window.

The forecaster itself lives in ``models/``; this module only reads its output.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from chaos.experiment import Window
from harbinger.clock import parse_time
from harbinger.documents import read_document
from harbinger.errors import InvalidInput
from models.forecast import Forecast


def forecast_from_json(data: Any, *, source: str) -> Forecast:
    """The JSON form of :meth:`models.forecast.Forecast.to_json`."""
    if not isinstance(data, dict):
        raise InvalidInput("a forecast must be a JSON object", source=source)
    missing = [k for k in ("service", "start", "step_seconds", "p50", "p90") if k not in data]
    if missing:
        raise InvalidInput(f"forecast lacks {', '.join(missing)}", source=source)
    try:
        p50 = np.asarray(data["p50"], dtype=float)
        p90 = np.asarray(data["p90"], dtype=float)
        step = int(data["step_seconds"])
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"forecast values must be numbers: {exc}", source=source) from exc
    if step <= 0:
        raise InvalidInput("step_seconds must be positive", source=source)
    if p50.ndim != 1 or p50.shape != p90.shape or p50.size == 0:
        raise InvalidInput("p50 and p90 must be non-empty lists of the same length", source=source)
    if not (np.all(np.isfinite(p90)) and np.all(p90 >= 0)):
        raise InvalidInput("p90 must be finite and non-negative", source=source)
    start = parse_time(str(data["start"]), what=f"{source}: start")
    return Forecast(str(data["service"]), str(data.get("model_version", "")), start, step, p50, p90)


def forecast_from_capacity_plan(obj: dict[str, Any]) -> Forecast | None:
    """The forecast a CapacityPlan (harbinger.io/v1alpha1) records in its status, or None when
    it records none (a Deployment the planner skipped) or one that cannot be read."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    recorded = status.get("forecast")
    if not isinstance(recorded, dict) or not recorded.get("p90"):
        return None
    meta = obj.get("metadata") or {}
    try:
        return forecast_from_json({"service": spec.get("service"), "model_version": status.get("model", ""),
                                   "start": recorded.get("start"), "step_seconds": recorded.get("stepSeconds"),
                                   "p50": recorded.get("p50"), "p90": recorded.get("p90")},
                                  source=f"CapacityPlan {meta.get('namespace')}/{meta.get('name')}")
    except InvalidInput:
        return None


def load_forecasts(path: Path) -> dict[str, Forecast]:
    """A JSON file with one forecast object or a list of them; by service."""
    data = read_document(path, "forecasts", format="json")
    items = data if isinstance(data, list) else [data]
    forecasts = [forecast_from_json(item, source=f"{path}: forecast {i}") for i, item in enumerate(items)]
    return {f.service: f for f in forecasts}


def _index(forecast: Forecast, moment: datetime) -> int:
    return int((moment - forecast.start).total_seconds() // forecast.step_seconds)


def peak_times(forecast: Forecast, *, min_fraction: float = 0.8, min_gap_steps: int = 6) -> list[datetime]:
    """Start of each predicted peak: local maxima of P90 within ``min_fraction`` of the
    highest, at least ``min_gap_steps`` apart, in time order."""
    p90 = forecast.p90
    top = float(p90.max())
    if top <= 0:
        return []
    left = np.concatenate(([-np.inf], p90[:-1]))
    right = np.concatenate((p90[1:], [-np.inf]))
    local_max = (p90 >= left) & (p90 >= right) & (p90 >= min_fraction * top)
    chosen: list[int] = []
    for i in np.argsort(-p90, kind="stable"):
        if local_max[i] and all(abs(int(i) - c) >= min_gap_steps for c in chosen):
            chosen.append(int(i))
    return [forecast.start + timedelta(seconds=forecast.step_seconds * i) for i in sorted(chosen)]


def before_peak_window(forecast: Forecast, *, lead_seconds: float, window_seconds: float, now: datetime,
                       needed_seconds: float = 0.0) -> Window | None:
    """The rehearsal window before the next predicted peak: ``window_seconds`` long, ending
    ``lead_seconds`` before the peak (the planner has provisioned for the peak by then), with at
    least ``needed_seconds`` of it still ahead; None when no peak in the forecast leaves that."""
    lead, length = timedelta(seconds=lead_seconds), timedelta(seconds=window_seconds)
    for peak in peak_times(forecast):
        end = peak - lead
        if end - timedelta(seconds=needed_seconds) >= now and end > now:
            return Window(start=max(end - length, now), end=end, reason="before-peak", peak=peak)
    return None


def max_load(forecast: Forecast, start: datetime, end: datetime) -> float:
    """The highest P90 over the steps that overlap ``[start, end)``; the nearest step outside the horizon."""
    first = max(0, min(_index(forecast, start), forecast.horizon_steps - 1))
    last = max(first, min(_index(forecast, end - timedelta(microseconds=1)), forecast.horizon_steps - 1))
    return float(forecast.p90[first:last + 1].max())


def quietest_window(forecast: Forecast, seconds: float, *, not_before: datetime) -> tuple[datetime, datetime]:
    """The window of ``seconds`` (whole steps) with the lowest summed P90, starting no earlier than ``not_before``."""
    steps = max(1, int(np.ceil(seconds / forecast.step_seconds)))
    first = max(0, _index(forecast, not_before) + (1 if not_before > forecast.start else 0))
    p90 = forecast.p90
    if first + steps > p90.size:
        first = max(0, p90.size - steps)
    sums = np.convolve(p90[first:], np.ones(steps), mode="valid")
    best = first + int(np.argmin(sums)) if sums.size else first
    start = forecast.start + timedelta(seconds=forecast.step_seconds * best)
    return start, start + timedelta(seconds=forecast.step_seconds * steps)
