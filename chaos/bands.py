"""The forecast a rehearsal ran against: each involved service's P50-P90 band over the run, so
the report can show the traffic that was predicted next to the traffic that came (a run whose
load was far from the forecast proves less about the predicted peak)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from chaos.record import ForecastBand, RunRecord, SampleRecord

if TYPE_CHECKING:  # the report (and with it the sidecar's command line) must not pull numpy in
    from models.forecast import Forecast


def forecast_bands(forecasts: Mapping[str, Forecast], services: Iterable[str], start: datetime,
                   end: datetime) -> dict[str, ForecastBand]:
    """Each service's forecast steps overlapping ``[start, end]`` and one step either side; a
    service whose forecast misses the run, or has non-finite values there, has no band."""
    bands: dict[str, ForecastBand] = {}
    for service in dict.fromkeys(services):
        forecast = forecasts.get(service)
        # The step either side is context for a run the forecast covers, not a reason to show a
        # band beside a run that falls wholly before or after the forecast ([start, end] is closed,
        # the forecast's steps are half-open).
        if forecast is None or forecast.horizon_steps == 0 or not (start < forecast.end and end >= forecast.start):
            continue
        step = forecast.step_seconds
        first = math.floor((start - forecast.start).total_seconds() / step) - 1
        last = math.floor((end - forecast.start).total_seconds() / step) + 1
        first, last = max(first, 0), min(last, forecast.horizon_steps - 1)
        if first > last:
            continue
        p50 = [float(v) for v in forecast.p50[first:last + 1]]
        p90 = [float(v) for v in forecast.p90[first:last + 1]]
        if not all(math.isfinite(v) for v in (*p50, *p90)):
            continue
        bands[service] = ForecastBand(start=forecast.start + timedelta(seconds=step * first), step_seconds=step,
                                      p50=p50, p90=p90, model_version=forecast.model_version)
    return bands


def band_at(band: ForecastBand, moment: datetime) -> tuple[float, float] | None:
    """(P50, P90) of the step covering ``moment``, or None outside the band."""
    index = math.floor((moment - band.start).total_seconds() / band.step_seconds)
    if 0 <= index < len(band.p50):
        return band.p50[index], band.p90[index]
    return None


def band_summary(band: ForecastBand, samples: Iterable[SampleRecord]) -> dict[str, float | str | None]:
    """How the measured throughput compared with the band: its mean, the share of samples
    inside [P50, P90] of their step, and the share at or below P90 (a calibrated forecast's
    P90 covers about nine in ten)."""
    measured = [s for s in samples if s.phase in ("baseline", "step") and s.throughput_rps is not None]
    inside = [band_at(band, s.time) for s in measured]
    judged = [(s.throughput_rps or 0.0, b) for s, b in zip(measured, inside, strict=True) if b is not None]
    return {
        "model_version": band.model_version,
        "p50_mean": round(sum(band.p50) / len(band.p50), 4),
        "p90_max": round(max(band.p90), 4),
        "actual_mean": round(sum(s.throughput_rps or 0.0 for s in measured) / len(measured), 4) if measured else None,
        "share_within_band": round(sum(1 for v, (lo, hi) in judged if lo <= v <= hi) / len(judged), 4)
        if judged else None,
        "share_below_p90": round(sum(1 for v, (_, hi) in judged if v <= hi) / len(judged), 4) if judged else None,
    }


def with_bands(record: RunRecord, forecasts: Mapping[str, Forecast]) -> RunRecord:
    """The record with the forecast band of its target and every watched service over the run."""
    experiment = record.experiment
    end = record.finished or (record.samples[-1].time if record.samples else record.started)
    bands = forecast_bands(forecasts, [*experiment.watched(), experiment.target], record.started, end)
    return record.model_copy(update={"forecasts": bands}) if bands else record
