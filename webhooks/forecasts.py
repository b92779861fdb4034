"""Where the webhook's forecasts come from: a cache the hot path reads, filled either
directly (tests, demos) or from trained models refreshed in the background.

The hot path asks one question, :meth:`ForecastProvider.outlook`: "what is this
service's peak P90 from now to the end of its horizon, and which model said so?". A
service is its namespace and name: two teams' ``frontend`` have their own models, history
and forecasts (:mod:`models.layout`).
A cached forecast answers it with one array lookup. Only on a miss, for a service
that has a trained model, does :class:`ModelForecasts` run the model inline, bounded
by ``miss_budget_seconds``; the run goes on in the background when the budget is
spent, so one slow Prometheus never holds a pod's admission past its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from harbinger import contract
from models.errors import BadEvents
from models.events import Event, load_events
from models.forecast import Forecast
from models.registry import ModelRegistry
from models.traffic import HistorySource
from webhooks import metrics

log = logging.getLogger(__name__)


class ServingModel(Protocol):
    """What the webhook needs of ``models.serving.Forecaster``."""

    @property
    def step_seconds(self) -> int: ...
    def forecast(
        self, history: pd.Series, now: datetime | None = None, horizon_steps: int | None = None,
        events: Sequence[Event] | None = None,
    ) -> Forecast: ...


@dataclass(frozen=True)
class Outlook:
    """A service's forecast as of one moment: the highest P90 still ahead in the horizon."""

    service: str
    model_version: str
    peak_p90_tps: float


class ForecastProvider(Protocol):
    async def outlook(self, namespace: str, service: str, now: datetime) -> Outlook | None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def ready(self) -> bool: ...


class _Entry:
    """A forecast with its suffix maxima, so "peak from step i on" is one index."""

    __slots__ = ("forecast", "peak_from")

    def __init__(self, forecast: Forecast) -> None:
        p90 = np.nan_to_num(np.asarray(forecast.p90, dtype=float), nan=0.0)
        self.forecast = forecast
        # peak_from[i] = max(p90[i:]); reversed running max.
        self.peak_from = np.maximum.accumulate(p90[::-1])[::-1] if len(p90) else p90

    def outlook(self, now: datetime) -> Outlook | None:
        """None once the whole horizon lies in the past (a stale forecast says nothing)."""
        elapsed = (now - self.forecast.start).total_seconds()
        step = max(math.floor(elapsed / self.forecast.step_seconds), 0) if self.forecast.step_seconds > 0 else 0
        if step >= len(self.peak_from):
            return None
        return Outlook(self.forecast.service, self.forecast.model_version, max(float(self.peak_from[step]), 0.0))


class ForecastCache:
    """``namespace/service`` -> latest forecast. Reads are dictionary lookups on the event loop.

    A forecast put without a namespace (:class:`StaticForecasts` in tests and benchmarks)
    answers for its service in every namespace; models always put theirs with one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def put(self, forecast: Forecast, namespace: str | None = None, service: str | None = None) -> None:
        """``service`` (default: the forecast's own) is the service it is for: a model may have
        been trained under another name."""
        service = service or forecast.service
        key = contract.service_key(namespace, service) if namespace else service
        self._entries[key] = _Entry(forecast)

    def cached(self, namespace: str, service: str, now: datetime) -> Outlook | None:
        entry = self._entries.get(contract.service_key(namespace, service)) or self._entries.get(service)
        return entry.outlook(now) if entry else None

    def services(self) -> list[str]:
        return list(self._entries)


class StaticForecasts(ForecastCache):
    """Forecasts handed in directly; services without one get no forecast stamps."""

    def __init__(self, forecasts: list[Forecast] | None = None) -> None:
        super().__init__()
        for forecast in forecasts or []:
            self.put(forecast)

    async def outlook(self, namespace: str, service: str, now: datetime) -> Outlook | None:
        found = self.cached(namespace, service, now)
        (metrics.LOOKUP_HIT if found else metrics.LOOKUP_NONE).inc()
        return found

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True


ModelLoader = Callable[[Path], ServingModel]


class ModelForecasts(ForecastCache):
    """Forecasts from trained models in ``models_dir/<namespace>/<service>/``
    (:mod:`models.layout`), fed by the service's own history in its namespace.

    A background task re-runs every model that has been asked for, every
    ``refresh_seconds``, and rescans ``models_dir`` for new or retrained models, and
    ``events_file`` (the forecaster's scheduled-events YAML) for changes: a declared
    campaign moves the stamped forecast before any traffic shows it. A file that turns
    bad keeps the last good events (and says so in the log); one that is bad at start is
    refused, so a typo never silently drops every event.
    """

    def __init__(
        self,
        models_dir: Path,
        history: HistorySource,
        *,
        lookback_seconds: float = 8 * 86400.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_seconds: float = 60.0,
        miss_budget_seconds: float = 0.5,
        load_model: ModelLoader | None = None,
        events_file: Path | None = None,
    ) -> None:
        super().__init__()
        self.events_file = events_file
        self.events: list[Event] = []
        self._events_mtime: float | None = None
        self.models_dir = models_dir
        self._history = history
        self._lookback = timedelta(seconds=lookback_seconds)
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._miss_budget = miss_budget_seconds
        #: Which model serves which service, known by content, loaded off the loop, bounded.
        self.registry = ModelRegistry(models_dir, load=load_model)
        self._wanted: set[tuple[str, str]] = set()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._failed_at: dict[str, float] = {}
        self._refresher: asyncio.Task[None] | None = None

    # --- hot path ---------------------------------------------------------------------
    async def outlook(self, namespace: str, service: str, now: datetime) -> Outlook | None:
        found = self.cached(namespace, service, now)
        if found:
            metrics.LOOKUP_HIT.inc()
            return found
        if self._model_of(namespace, service) is None:
            metrics.LOOKUP_NONE.inc()
            return None
        self._wanted.add((namespace, service))
        key = contract.service_key(namespace, service)
        failed_at = self._failed_at.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self._refresh_seconds:
            # The last run failed: wait for the background refresh rather than make every
            # pod of this service pay the budget again.
            metrics.LOOKUP_NONE.inc()
            return None
        metrics.LOOKUP_MISS.inc()
        task = self._compute(namespace, service)
        # shield: when the budget runs out the run goes on and fills the cache for the next pod.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self._miss_budget)
        return self.cached(namespace, service, now)

    def _model_of(self, namespace: str, service: str) -> str | None:
        """The scanned model directory serving the service: namespaced, else the flat layout."""
        return self.registry.key_of(namespace, service)

    # --- background -------------------------------------------------------------------
    async def start(self) -> None:
        if self.events_file is not None:
            await asyncio.to_thread(self._load_events, strict=True)
        await asyncio.to_thread(self._scan)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="webhook-forecast-refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._refresher, *self._inflight.values()) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def ready(self) -> bool:
        return self.registry.scanned

    def _scan(self) -> None:
        self.registry.scan()

    def _load_events(self, *, strict: bool) -> None:
        """(Re)read ``events_file`` when it changed; ``strict`` raises :class:`BadEvents` on a bad file."""
        assert self.events_file is not None
        try:
            try:
                mtime = self.events_file.stat().st_mtime
            except OSError as exc:
                raise BadEvents(f"cannot read the file: {exc.strerror}", source=str(self.events_file)) from None
            if mtime == self._events_mtime:
                return
            events = load_events(self.events_file)
        except BadEvents as exc:
            if strict:
                raise
            log.warning("keeping the %d events read before: %s", len(self.events), exc)
            return
        self.events, self._events_mtime = events, mtime
        log.info("read %d scheduled events from %s", len(events), self.events_file)

    def _compute(self, namespace: str, service: str) -> asyncio.Task[None]:
        """One run per service at a time: concurrent misses share it."""
        key = contract.service_key(namespace, service)
        task = self._inflight.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._run_model(namespace, service), name=f"webhook-forecast-{key}")
            self._inflight[key] = task
        return task

    async def _run_model(self, namespace: str, service: str) -> None:
        key = contract.service_key(namespace, service)
        try:
            model: ServingModel | None = await self.registry.get(namespace, service)
            if model is None:
                return
            # This namespace's history, up to "now" (the replay clock's, in rehearsals): the
            # model forecasts from the end of what it is given.
            history = await self._history.history(service, namespace=namespace, end=self._clock(),
                                                  lookback=self._lookback, step_seconds=model.step_seconds)
            forecast = await asyncio.to_thread(model.forecast, history, None, None, self.events)
            self.put(forecast, namespace, service)
            self._failed_at.pop(key, None)
            metrics.FORECAST_RUNS.labels("ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bad model or a Prometheus outage must not end the cache
            self._failed_at[key] = time.monotonic()
            metrics.FORECAST_RUNS.labels("error").inc()
            log.warning("forecast for service %s failed: %s", key, exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            if self.events_file is not None:
                await asyncio.to_thread(self._load_events, strict=False)
            await asyncio.to_thread(self._scan)
            for namespace, service in sorted(self._wanted):
                if self._model_of(namespace, service) is not None:
                    await self._compute(namespace, service)
