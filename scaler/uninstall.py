"""What the planner gives back on ``harbinger uninstall`` (:mod:`harbinger.uninstall`): every
replica floor it raised (HPA ``minReplicas``, or a Deployment's ``replicas`` without an HPA),
restored to what the team declared, with its annotations taken off."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from kubernetes_asyncio import client

from harbinger.clock import SYSTEM_CLOCK
from harbinger.uninstall import Scope
from scaler.controller import Planner
from scaler.plan import ForecastLike


class _NoForecasts:
    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        return {}


async def give_back(api: client.ApiClient, scope: Scope) -> list[str]:
    planner = Planner(api, forecasts=_NoForecasts(), clock=SYSTEM_CLOCK, namespaces=scope.namespaces,
                      identity="harbinger-uninstall")
    changes = await planner.release_all(SYSTEM_CLOCK.now())
    return [f"{c.kind} {c.namespace}/{c.deployment} {c.field} {c.before} -> {c.after} (floor given back)"
            for c in changes]
