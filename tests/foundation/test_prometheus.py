"""A real Prometheus scrapes a target the test starts and answers through its HTTP API."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from harbinger.localcluster import LocalPrometheus
from harbinger.serving import add_standard_routes


async def test_prometheus_scrapes_a_local_metrics_endpoint(prometheus: LocalPrometheus) -> None:
    registry = CollectorRegistry()
    hits = Counter("foundation_probe_hits", "Requests the probe served", registry=registry)
    hits.inc(7)
    app = web.Application()
    add_standard_routes(app, registry=registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        prometheus.add_target("foundation-probe", f"127.0.0.1:{port}")
        result = await asyncio.to_thread(
            prometheus.wait_for, 'foundation_probe_hits_total{job="foundation-probe"}', 30.0
        )
        assert float(result[0]["value"][1]) == 7.0
        up = await asyncio.to_thread(prometheus.query, 'up{job="foundation-probe"}')
        assert up and up[0]["value"][1] == "1"
    finally:
        prometheus.remove_job("foundation-probe")
        await runner.cleanup()
