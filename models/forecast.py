"""A forecast: what the planner, the webhook and the chaos controller read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from harbinger.clock import format_time


@dataclass(frozen=True)
class Forecast:
    """P50 and P90 requests per second (TPS) for each step of the horizon.

    ``p50[i]`` and ``p90[i]`` are the mean TPS over the step starting at
    ``start + i * step_seconds``; ``start`` is tz-aware UTC.
    """

    service: str
    model_version: str
    start: datetime
    step_seconds: int
    p50: np.ndarray
    p90: np.ndarray

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("Forecast.start must be timezone-aware (UTC)")
        if self.p50.shape != self.p90.shape or self.p50.ndim != 1:
            raise ValueError("p50 and p90 must be 1-D arrays of the same length")

    @property
    def horizon_steps(self) -> int:
        return int(self.p50.size)

    @property
    def end(self) -> datetime:
        """End of the last forecast step."""
        return self.start + timedelta(seconds=self.step_seconds * self.horizon_steps)

    def timestamps(self) -> list[datetime]:
        """Start of each forecast step, UTC."""
        return [self.start + timedelta(seconds=self.step_seconds * i) for i in range(self.horizon_steps)]

    def peak_p90(self) -> float:
        """The highest P90 TPS over the horizon: what capacity must cover."""
        return float(np.max(self.p90)) if self.p90.size else 0.0

    def peak_time(self) -> datetime:
        """Start of the step with the highest P90."""
        return self.start + timedelta(seconds=self.step_seconds * int(np.argmax(self.p90)))

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "model_version": self.model_version,
            "start": format_time(self.start),
            "step_seconds": self.step_seconds,
            "timestamps": [format_time(t) for t in self.timestamps()],
            "p50": [round(float(v), 6) for v in self.p50],
            "p90": [round(float(v), 6) for v in self.p90],
            "peak_p90": round(self.peak_p90(), 6),
        }
