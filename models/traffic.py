"""Where a service's recent traffic comes from when a forecaster serves it.

One question, asked by the webhook's forecast cache and by the planner alike: "the
requests per second of this service over the last ``lookback``, up to ``end``, on the
model's step". Two answers:

- :class:`PrometheusHistory`: a PromQL template (``{service}``, ``{namespace}``) run as
  a range query; what production uses (``istio_requests_total`` or any rate).
- :class:`TraceHistory`: a recorded trace (a count CSV), cut at ``end``; what rehearsals
  and ``make demo`` use together with the replay clock (:mod:`harbinger.clock`), so a
  week of recorded traffic can be replayed through the real components in minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import pandas as pd

from harbinger.errors import InvalidInput
from harbinger.prometheus import PrometheusClient, PrometheusConnection
from harbinger.settings import HistorySettings
from models.prometheus import query_range
from models.series import AbsentRows, load_csv


class HistorySource(Protocol):
    async def history(
        self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta, step_seconds: int
    ) -> pd.Series:
        """TPS of ``service`` over ``[end - lookback, end)`` on a ``step_seconds`` grid; NaN where unknown."""
        ...


class PrometheusHistory:
    def __init__(self, url: str, query_template: str, connection: PrometheusConnection | None = None) -> None:
        self.url = url
        self.query_template = query_template
        self.connection = connection

    def promql(self, service: str, namespace: str = "") -> str:
        return self.query_template.replace("{service}", service).replace("{namespace}", namespace)

    async def history(
        self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta, step_seconds: int
    ) -> pd.Series:
        async with PrometheusClient(self.url, self.connection) as prometheus:
            return await query_range(prometheus, self.promql(service, namespace), end - lookback, end, step_seconds,
                                     name=service)


class TraceHistory:
    """Recorded traces by service: ``{service: (csv_path, scale)}``; ``scale`` multiplies
    the trace's TPS, so one trace can stand for several services of different sizes."""

    def __init__(self, traces: dict[str, tuple[Path, float]], *, absent: AbsentRows = "missing") -> None:
        self.traces = traces
        self.absent = absent
        self._loaded: dict[tuple[str, int], pd.Series] = {}

    @classmethod
    def parse(cls, specs: list[str]) -> TraceHistory:
        """``SERVICE=PATH`` or ``SERVICE=PATH*SCALE`` items, as flags and settings give them."""
        traces: dict[str, tuple[Path, float]] = {}
        for spec in specs:
            service, sep, rest = spec.partition("=")
            path, star, scale = rest.partition("*")
            if not sep or not service or not path:
                raise InvalidInput(f"trace history {spec!r}: expected SERVICE=PATH or SERVICE=PATH*SCALE",
                                   source="history")
            try:
                factor = float(scale) if star else 1.0
            except ValueError:
                raise InvalidInput(f"trace history {spec!r}: scale {scale!r} is not a number",
                                   source="history") from None
            if factor <= 0:
                raise InvalidInput(f"trace history {spec!r}: scale must be positive", source="history")
            traces[service] = (Path(path), factor)
        return cls(traces)

    def _series(self, service: str, step_seconds: int) -> pd.Series:
        key = (service, step_seconds)
        if key not in self._loaded:
            if service not in self.traces:
                raise InvalidInput(f"no trace is configured for service {service!r}", source="history")
            path, scale = self.traces[service]
            self._loaded[key] = load_csv(path, step_seconds=step_seconds, absent=self.absent, name=service) * scale
        return self._loaded[key]

    async def history(
        self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta, step_seconds: int
    ) -> pd.Series:
        series = self._series(service, step_seconds)
        # Only what had happened by ``end``: a step is known once it is over.
        last_start = pd.Timestamp(end - timedelta(seconds=step_seconds))
        window: pd.Series = series.loc[pd.Timestamp(end - lookback):last_start]
        if window.empty:
            raise InvalidInput(f"the trace for {service!r} has no data before {end.isoformat()}", source="history")
        return window


def history_source(settings: HistorySettings, connection: PrometheusConnection | None = None) -> HistorySource:
    """Recorded traces when the settings name any (rehearsals), else Prometheus."""
    if settings.traces:
        return TraceHistory.parse(settings.traces)
    return PrometheusHistory(settings.prometheus_url, settings.query, connection)
