"""The planner as a process: ``run_planner(settings, inputs, stop)``, the way every Harbinger
component is started (the webhook's ``run_webhook``, the extender's ``run_extender``).

It builds the planner from the settings (history source, forecasters, the observed
graph, the short-horizon floors, the Lease), serves ``/metrics``, ``/healthz`` and
``/readyz``, plans every ``planner.interval_seconds`` while it holds the Lease, and stops
on SIGTERM/SIGINT or ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from harbinger.clock import SystemClock, clock_from_spec
from harbinger.httpserver import add_standard_routes, serve
from harbinger.kube import api_client
from harbinger.lifecycle import stop_on_signals, supervise
from harbinger.settings import Settings
from models.traffic import history_source
from scaler.capacityplans import CapacityPlans
from scaler.controller import Planner, RunReport
from scaler.forecasting import ModelForecasts
from scaler.headroom import ShortTermFloors
from scaler.inputs import PlannerInputs, PrometheusEdges
from scaler.leader import LeaderElector
from scaler.tenancy import FloorCaps


@dataclass(frozen=True)
class Wired:
    planner: Planner
    elector: LeaderElector


@contextlib.asynccontextmanager
async def wired(settings: Settings, inputs: PlannerInputs) -> AsyncIterator[Wired]:
    """A planner and its Lease elector on one API connection, closed on exit."""
    own = settings.planner
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    async with api_client(settings.kube.kubeconfig, settings.kube.context) as api:
        # The Lease is about which live process acts: always wall-clock time, even when the
        # plan runs on trace time (HARBINGER_REPLAY_CLOCK).
        elector = LeaderElector(api, name=own.lease_name, namespace=own.lease_namespace, identity=identity,
                                duration_seconds=own.lease_duration_seconds, clock=SystemClock())
        history = history_source(settings.history, settings.prometheus)
        forecasts = ModelForecasts(own.models_dir, history, lookback_seconds=settings.history.lookback_seconds,
                                   events=inputs.events)
        edges = (PrometheusEdges(own.graph_prometheus_url, own.graph_query, own.graph_window_seconds,
                                 settings.prometheus) if own.graph_prometheus_url else None)
        planner = Planner(api, forecasts=forecasts, clock=clock_from_spec(settings.replay_clock), inputs=inputs,
                          stabilization_seconds=own.stabilization_seconds, forecast_only=own.forecast_only,
                          elector=elector, identity=identity, history=history, graph_edges=edges,
                          short_term=ShortTermFloors(history) if own.short_horizon else None,
                          floor_caps=FloorCaps(own.max_floor_replicas, own.namespace_max_floor_replicas),
                          capacity_plans=CapacityPlans(api))
        yield Wired(planner, elector)


async def plan_once(settings: Settings, inputs: PlannerInputs) -> RunReport:
    """One run, taking the Lease if it is free (unless forecast-only), then giving it back."""
    async with wired(settings, inputs) as parts:
        if not settings.planner.forecast_only:
            await parts.elector.try_acquire_or_renew()
        try:
            return await parts.planner.run_once()
        finally:
            await parts.elector.release()


async def run_planner(settings: Settings, inputs: PlannerInputs, *, stop: asyncio.Event | None = None) -> None:
    """Plan until SIGTERM/SIGINT (or ``stop``)."""
    own = settings.planner
    stop = stop or asyncio.Event()
    async with wired(settings, inputs) as parts:
        planner = parts.planner
        app = web.Application()
        # Ready once a run has succeeded, and for as long as runs keep succeeding.
        add_standard_routes(app, ready=lambda: planner.healthy(3 * own.interval_seconds + 60))
        with stop_on_signals(stop):
            tasks = [
                asyncio.create_task(serve(app, host=own.metrics_host, port=own.metrics_port, stop=stop)),
                asyncio.create_task(supervise("planner", lambda: planner.run(stop, own.interval_seconds), stop)),
            ]
            if not own.forecast_only:
                tasks.append(asyncio.create_task(supervise("lease", lambda: parts.elector.run(stop), stop)))
            try:
                await asyncio.gather(*tasks)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
