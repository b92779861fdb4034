"""Where the controller's forecasts come from.

A :class:`ForecastSource` answers "the forecast for these services, now". The shipped
one, :class:`ModelForecasts`, loads each service's trained forecaster from
``<models_dir>/<namespace>/<service>/`` through the model registry (:mod:`models.registry`) and feeds it the recent
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
from models.registry import ModelRegistry
from models.serving import Forecaster
from models.traffic import HistorySource
from scaler.plan import ForecastLike

log = logging.getLogger(__name__)


class ForecastSource(Protocol):
    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        """Forecasts for ``services`` (key ``namespace/service`` -> namespace), by key; a service
        may be left out when there is nothing to forecast it with, and then keeps its declared floor."""
        ...


class ModelForecasts:
    def __init__(self, models_dir: Path, history: HistorySource, *, lookback_seconds: float = 8 * 86400.0,
                 events: Sequence[Event] = ()) -> None:
        self.models_dir = models_dir
        self.history = history
        self.lookback = timedelta(seconds=lookback_seconds)
        self.events = list(events)
        #: The webhook's registry too: known by content, loaded off the loop, bounded.
        self.registry = ModelRegistry(models_dir)

    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        await self.registry.rescan()  # new and retrained models, every run
        keys = list(services)
        results = await asyncio.gather(*(self._one(key, services[key], now) for key in keys))
        return {key: forecast for key, forecast in zip(keys, results, strict=True) if forecast is not None}

    async def _one(self, key: str, namespace: str, now: datetime) -> ForecastLike | None:
        service = key.partition("/")[2] or key
        try:
            forecaster: Forecaster | None = await self.registry.get(namespace, service)
        except InvalidInput as exc:
            log.warning("%s: cannot load its model: %s", key, exc)
            return None
        if forecaster is None:
            log.debug("%s: no model in %s", key, self.models_dir / namespace / service)
            return None
        try:
            history = await self.history.history(service, namespace=namespace, end=now, lookback=self.lookback,
                                                 step_seconds=forecaster.step_seconds)
            return forecaster.forecast(history, now=now, events=self.events)
        except (InvalidInput, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("%s: no forecast this run: %s", key, exc)
            return None
