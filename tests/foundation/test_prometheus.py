"""A real Prometheus scrapes a target the test starts and answers through its HTTP API."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from harbinger.httpserver import add_standard_routes
from harbinger_dev.localcluster import LocalPrometheus

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import ServeApp


async def test_prometheus_scrapes_a_local_metrics_endpoint(prometheus: LocalPrometheus, serve_app: ServeApp) -> None:
    registry = CollectorRegistry()
    hits = Counter("foundation_probe_hits", "Requests the probe served", registry=registry)
    hits.inc(7)
    app = web.Application()
    add_standard_routes(app, registry=registry)
    async with serve_app(app) as url:
        try:
            prometheus.add_target("foundation-probe", url.removeprefix("http://"))
            result = await asyncio.to_thread(
                prometheus.wait_for, 'foundation_probe_hits_total{job="foundation-probe"}', 30.0
            )
            assert float(result[0]["value"][1]) == 7.0
            up = await asyncio.to_thread(prometheus.query, 'up{job="foundation-probe"}')
            assert up and up[0]["value"][1] == "1"
        finally:
            prometheus.remove_job("foundation-probe")
