"""The shared Prometheus client (:mod:`harbinger.prometheus`): what a secured Prometheus asks
for (bearer token, CA, headers), typed failures, and instant queries against the real one."""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from certs.serving_set import issue_serving_set
from harbinger.errors import PrometheusQueryError, PrometheusUnavailable
from harbinger.prometheus import PrometheusClient, PrometheusConnection
from harbinger_dev.localcluster import LocalPrometheus

if TYPE_CHECKING:
    from tests.conftest import ServeApp


def recording_app(seen: list[dict[str, Any]], answer: dict[str, Any]) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers)})
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/v1/query", handler)
    app.router.add_get("/api/v1/query_range", handler)
    return app


VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"job": "a"}, "value": [1.0, "2.5"]},
    {"metric": {"job": "b"}, "value": [1.0, "NaN"]},
]}}


async def test_bearer_token_is_reread_and_headers_are_sent(serve_app: ServeApp, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    token = tmp_path / "token"
    token.write_text("first\n")
    connection = PrometheusConnection(bearer_token_file=token, headers={"X-Scope-OrgID": "team-a"})
    async with serve_app(recording_app(seen, VECTOR)) as url, PrometheusClient(url, connection) as prometheus:
        samples = await prometheus.instant("up")
        token.write_text("rotated")
        await prometheus.instant("up")
    assert [dict(s.labels) for s in samples] == [{"job": "a"}, {"job": "b"}]
    assert samples[0].value == 2.5 and math.isnan(samples[1].value)
    assert [s["headers"]["Authorization"] for s in seen] == ["Bearer first", "Bearer rotated"]
    assert all(s["headers"]["X-Scope-OrgID"] == "team-a" for s in seen)


async def test_scalar_refuses_many_series_and_reads_nan_as_no_value(serve_app: ServeApp) -> None:
    one_nan = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}}
    async with serve_app(recording_app([], VECTOR)) as url, PrometheusClient(url) as prometheus:
        with pytest.raises(PrometheusQueryError, match="returned 2 series") as caught:
            await prometheus.scalar("up")
    assert caught.value.query == "up"
    async with serve_app(recording_app([], one_nan)) as url, PrometheusClient(url) as prometheus:
        assert await prometheus.scalar("up") is None


async def test_range_query_sends_unix_times_and_step(serve_app: ServeApp) -> None:
    seen: list[dict[str, Any]] = []
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[60, "1"], [120, "+Inf"]]}]}}
    async with serve_app(recording_app(seen, matrix)) as url, PrometheusClient(url) as prometheus:
        series = await prometheus.range("rate(x[1m])", 60, 120.5, 60)
    assert seen[0]["path"] == "/api/v1/query_range"
    assert seen[0]["query"] == {"query": "rate(x[1m])", "start": "60", "end": "120.500", "step": "60s"}
    assert series[0].points[0] == (60.0, 1.0) and math.isinf(series[0].points[1][1])


@contextlib.asynccontextmanager
async def https_prometheus(app: web.Application, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    serving = issue_serving_set(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    (tmp_path / "ca.crt").write_bytes(serving.ca_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"https://127.0.0.1:{port}", tmp_path / "ca.crt"
    finally:
        await runner.cleanup()


async def test_tls_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    async with https_prometheus(recording_app([], VECTOR), tmp_path) as (url, ca_file):
        async with PrometheusClient(url, PrometheusConnection(ca_file=ca_file)) as trusting:
            assert len(await trusting.instant("up")) == 2
        # Without the CA the system trust store does not know this certificate: unavailable, named.
        async with PrometheusClient(url) as untrusting:
            with pytest.raises(PrometheusUnavailable, match="certificate") as caught:
                await untrusting.instant("up")
    assert caught.value.url == url


async def test_bad_urls_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PrometheusUnavailable, match="must start with http"):
        PrometheusClient("prometheus:9090")
    missing = PrometheusConnection(bearer_token_file=tmp_path / "absent")
    async with PrometheusClient("http://127.0.0.1:9", missing) as prometheus:
        with pytest.raises(PrometheusUnavailable, match="bearer token file"):
            await prometheus.instant("up")


async def test_timeout_is_a_typed_failure(serve_app: ServeApp) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(VECTOR)

    app = web.Application()
    app.router.add_get("/api/v1/query", slow)
    async with serve_app(app) as url, PrometheusClient(url, timeout_seconds=0.2) as prometheus:
        with pytest.raises(PrometheusUnavailable):
            await prometheus.instant("up")


@pytest.mark.integration
async def test_instant_query_against_real_prometheus(prometheus: LocalPrometheus) -> None:
    async with PrometheusClient(prometheus.url) as client:
        assert await client.scalar("vector(3)") == 3.0
        with pytest.raises(PrometheusQueryError, match="parse error") as caught:
            await client.instant("sum(")
    assert caught.value.query == "sum("
