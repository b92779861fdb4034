"""``PrometheusHistory``: a service's recent traffic from a real Prometheus, by the
configured PromQL template, on the model's step grid."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from harbinger.localcluster import LocalPrometheus
from harbinger.localcluster.cluster import free_port
from models.errors import BadSeries
from webhooks.forecasts import PrometheusHistory


async def test_history_comes_from_prometheus_by_service(prometheus: LocalPrometheus) -> None:
    job = f"webhook-history-{uuid.uuid4().hex[:6]}"
    registry = CollectorRegistry()
    requests = Counter("shop_requests", "requests served", ["service"], registry=registry)

    async def metrics(_: web.Request) -> web.Response:
        requests.labels("web").inc(50)  # 50 per scrape, one scrape a second: about 50/s
        requests.labels("other").inc(1)
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    prometheus.add_target(job, f"127.0.0.1:{port}")
    try:
        template = f'sum(rate(shop_requests_total{{job="{job}",service="{{service}}"}}[5s]))'
        source = PrometheusHistory(prometheus.url, template, lookback_seconds=30)
        history = None
        for _ in range(120):  # until two scrapes of the target fall inside one whole-second step
            try:
                history = await source("web", 1)
                break
            except BadSeries:
                await asyncio.sleep(0.5)
        assert history is not None, "Prometheus never had the series"
        known = history.dropna()
        assert len(known) >= 1 and str(history.index.tz) == "UTC"
        assert known.max() > 10 and np.all(known < 500), known  # web's rate (about 50/s), not other's (1/s)
    finally:
        prometheus.remove_job(job)
        await runner.cleanup()
