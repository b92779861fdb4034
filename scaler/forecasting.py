"""Where the controller's forecasts come from.

A :class:`ForecastSource` answers "the forecast for these services, now". The shipped
one, :class:`ModelForecasts`, loads each service's trained forecaster from
``<models_dir>/<service>/`` (as ``harbinger train`` writes it) and feeds it the recent
request rate from a :mod:`models.traffic` source (Prometheus, or a recorded trace in
rehearsals); tests inject their own source with scripted forecasts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp

from harbinger.errors import InvalidInput
from models.events import Event
from models.serving import Forecaster
from models.traffic import HistorySource
from scaler.plan import ForecastLike

log = logging.getLogger(__name__)


class ForecastSource(Protocol):
    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        """Forecasts for ``services`` (service -> namespace); a service may be left out when
        there is nothing to forecast it with, and then keeps its declared floor."""
        ...


class ModelForecasts:
    def __init__(self, models_dir: Path, history: HistorySource, *, lookback_seconds: float = 8 * 86400.0,
                 events: Sequence[Event] = ()) -> None:
        self.models_dir = models_dir
        self.history = history
        self.lookback = timedelta(seconds=lookback_seconds)
        self.events = list(events)
        self._loaded: dict[str, tuple[float, Forecaster]] = {}

    def forecaster(self, service: str) -> Forecaster | None:
        """The service's model, reloaded when its directory changes (a retrained model)."""
        directory = self.models_dir / service
        try:
            stamp = max(p.stat().st_mtime for p in [directory, *directory.iterdir()])
        except (FileNotFoundError, ValueError):
            return None
        cached = self._loaded.get(service)
        if cached is None or cached[0] != stamp:
            self._loaded[service] = (stamp, Forecaster.load(directory))
        return self._loaded[service][1]

    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        results = await asyncio.gather(*(self._one(service, namespace, now) for service, namespace in services.items()))
        return {forecast.service: forecast for forecast in results if forecast is not None}

    async def _one(self, service: str, namespace: str, now: datetime) -> ForecastLike | None:
        try:
            forecaster = self.forecaster(service)
        except InvalidInput as exc:
            log.warning("%s: cannot load its model: %s", service, exc)
            return None
        if forecaster is None:
            log.debug("%s: no model in %s", service, self.models_dir / service)
            return None
        try:
            history = await self.history.history(service, namespace=namespace, end=now, lookback=self.lookback,
                                                 step_seconds=forecaster.step_seconds)
            return forecaster.forecast(history, now=now, events=self.events)
        except (InvalidInput, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: no forecast this run: %s", service, exc)
            return None
