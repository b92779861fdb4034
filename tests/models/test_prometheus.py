"""History from Prometheus's range-query API: a fake of its HTTP answers, and the real thing."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from harbinger.errors import PrometheusQueryError, PrometheusUnavailable
from harbinger.prometheus import PrometheusClient
from harbinger_dev.localcluster import LocalPrometheus
from models import prometheus as prom
from models.errors import BadSeries

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import ScrapeTarget, ServeApp

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def fake_prometheus(serve_app: ServeApp) -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``url = await serve(handler)``: a local HTTP server answering ``/api/v1/query_range``."""
    async with contextlib.AsyncExitStack() as servers:

        async def serve(handler: Handler) -> str:
            app = web.Application()
            app.router.add_get("/api/v1/query_range", handler)
            return await servers.enter_async_context(serve_app(app))

        yield serve


async def query_range(url: str, promql: str, start: datetime, end: datetime, step: int,
                      name: str | None = None) -> Any:
    async with PrometheusClient(url) as prometheus:
        return await prom.query_range(prometheus, promql, start, end, step, name=name)


def matrix(*series: list[list[Any]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix",
                                          "result": [{"metric": {"i": str(i)}, "values": v}
                                                     for i, v in enumerate(series)]}}


async def test_range_query_becomes_a_regular_tps_series(fake_prometheus: Any) -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        start, end, step = int(request.query["start"]), int(request.query["end"]), 60
        # Every minute but one, and one sample Prometheus reports as NaN.
        values = [[t, "NaN" if t == start + 120 else str(t - start)] for t in range(start, end + 1, step)
                  if t != start + 180]
        return web.json_response(matrix(values))

    url = await fake_prometheus(handler)
    series = await query_range(url, "sum(rate(x[5m]))", START + timedelta(seconds=30),
                                    START + timedelta(minutes=5), 60)
    assert seen[0]["query"] == "sum(rate(x[5m]))" and seen[0]["step"] == "60s"
    assert int(seen[0]["start"]) == int(START.timestamp())  # aligned down to a whole step
    assert series.index[0] == START and series.index.freq is not None
    assert len(series) == 6
    assert series.iloc[1] == 60.0 and math.isnan(series.iloc[2]) and math.isnan(series.iloc[3])


async def test_long_ranges_are_fetched_in_chunks(fake_prometheus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prom, "MAX_POINTS_PER_QUERY", 10)
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        start, end = int(request.query["start"]), int(request.query["end"])
        assert (end - start) // 60 + 1 <= 10
        return web.json_response(matrix([[t, "1.5"] for t in range(start, end + 1, 60)]))

    url = await fake_prometheus(handler)
    series = await query_range(url, "q", START, START + timedelta(minutes=24), 60)
    assert calls == 3 and len(series) == 25 and np.all(series.to_numpy() == 1.5)


@pytest.mark.parametrize(("status", "body", "error", "words"), [
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"},
     PrometheusQueryError, "parse error"),
    (200, matrix([[0, "1"]], [[0, "2"]]), BadSeries, "returned 2 series"),
    (200, {"status": "success", "data": {"resultType": "vector", "result": []}},
     PrometheusQueryError, "expected a range vector"),
    (200, matrix(), BadSeries, "no samples"),
    (200, matrix([["x", "1"]]), PrometheusQueryError, "malformed sample"),
    (200, "<html>", PrometheusUnavailable, "not JSON"),
])
async def test_prometheus_errors_say_what_failed(fake_prometheus: Any, status: int, body: Any,
                                                 error: type[Exception], words: str) -> None:
    """A series that cannot be a model's history is bad input naming the query; Prometheus
    refusing or garbling the answer is the shared client's typed error."""
    async def handler(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(text=body, status=status)
        return web.json_response(body, status=status)

    url = await fake_prometheus(handler)
    with pytest.raises(error, match=words) as caught:
        await query_range(url, "sum(rate(x[5m]))", START, START + timedelta(minutes=5), 60)
    if isinstance(caught.value, BadSeries):
        assert caught.value.source == "sum(rate(x[5m]))"
    elif isinstance(caught.value, PrometheusQueryError):
        assert caught.value.query == "sum(rate(x[5m]))"
    else:
        assert isinstance(caught.value, PrometheusUnavailable) and caught.value.url == url


async def test_unreachable_prometheus() -> None:
    with pytest.raises(PrometheusUnavailable, match=re.escape("Prometheus at http://127.0.0.1:9 is unavailable")):
        await query_range("http://127.0.0.1:9", "q", START, START + timedelta(minutes=5), 60)


async def test_real_prometheus_range_query(prometheus: LocalPrometheus, scrape: ScrapeTarget) -> None:
    """Debian's Prometheus scrapes a counter that grows by 20 a second; the rate reads ~20 TPS."""
    registry = CollectorRegistry()
    requests = Counter("models_probe_requests", "Requests the probe served", registry=registry)

    async def serve_traffic() -> None:
        while True:
            requests.inc(2)
            await asyncio.sleep(0.1)

    traffic = asyncio.create_task(serve_traffic())
    try:
        async with scrape("models-probe", lambda: generate_latest(registry)):
            await asyncio.to_thread(prometheus.wait_for, 'models_probe_requests_total{job="models-probe"}', 30.0)
            await asyncio.sleep(8)
            end = datetime.now(UTC)
            series = await query_range(prometheus.url, 'sum(rate(models_probe_requests_total[4s]))',
                                            end - timedelta(seconds=6), end, 1, name="probe")
    finally:
        traffic.cancel()
    known = series.dropna()
    assert len(known) >= 3 and series.name == "probe"
    assert series.index.tz is not None and (series.index[1] - series.index[0]).total_seconds() == 1
    # The first points may still see the probe's start; the rest is the steady 20 per second.
    assert np.all(np.abs(known.to_numpy()[-3:] - 20.0) < 2.0)
