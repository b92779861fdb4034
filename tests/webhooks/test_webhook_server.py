"""The HTTP layer: status codes, size limit, standard routes, and TLS serving through
:func:`harbinger.httpserver.serve` with certificates from ``certs/`` and a graceful stop."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from certs.serving_set import issue_serving_set
from harbinger.httpserver import serve
from harbinger_dev.localcluster.cluster import free_port
from webhooks.cluster import ClusterView, StaticStore
from webhooks.forecasts import Outlook
from webhooks.mutate import Mutator
from webhooks.server import build_app

if TYPE_CHECKING:
    from conftest import World


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    world.namespace()
    async with TestClient(TestServer(build_app(world.mutator, max_body_bytes=4096))) as test_client:
        yield test_client


async def test_statuses(client: TestClient[Any, Any], world: World) -> None:
    ok = await client.post("/mutate", data=world.body(world.pod()))
    assert ok.status == 200 and ok.content_type == "application/json"
    bad = await client.post("/mutate", data=b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}')
    assert bad.status == 400 and "request: Field required" in await bad.text()
    big = await client.post("/mutate", data=b" " * 5000)
    assert big.status == 413 and "over 4096" in await big.text()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: measured while read
        for _ in range(5):
            yield b" " * 1000

    chunked = await client.post("/mutate", data=chunks())
    assert chunked.status == 413
    assert (await client.get("/mutate")).status == 405


async def test_health_ready_and_metrics(client: TestClient[Any, Any], world: World) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await client.post("/mutate", data=b"{")
    metrics = await (await client.get("/metrics")).text()
    assert 'harbinger_webhook_requests_total{code="400"}' in metrics
    assert 'harbinger_webhook_errors_total{reason="bad_request"}' in metrics
    assert "harbinger_webhook_review_seconds_bucket" in metrics


class GatedForecasts:
    """A provider whose answer waits for a gate: holds a review in flight on purpose."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def outlook(self, namespace: str, service: str, now: datetime) -> Outlook | None:
        self.entered.set()
        await self.gate.wait()
        return Outlook(service, "v-gated", 42.0)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True


async def test_tls_serving_and_in_flight_review_finishes_on_stop(tmp_path: Path, world: World) -> None:
    issue_serving_set(["127.0.0.1"]).write(tmp_path)
    forecasts = GatedForecasts()
    mutator = Mutator(ClusterView(StaticStore(), StaticStore()), forecasts)
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(build_app(mutator), host="127.0.0.1", port=port, cert_dir=tmp_path,
                                       shutdown_grace_seconds=5, stop=stop))
    tls = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
            for _ in range(100):  # until the listener is up
                try:
                    async with session.get(f"https://127.0.0.1:{port}/healthz") as health:
                        assert health.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            in_flight = asyncio.create_task(session.post(f"https://127.0.0.1:{port}/mutate",
                                                         data=world.body(world.pod(namespace="x"), namespace="x")))
            await asyncio.wait_for(forecasts.entered.wait(), 5)
            stop.set()  # what SIGTERM does
            await asyncio.sleep(0.2)
            assert not server.done(), "the server must wait for the review in flight"
            forecasts.gate.set()
            response = await asyncio.wait_for(in_flight, 5)
            assert response.status == 200
            answer = json.loads(await response.read())
            assert answer["response"]["allowed"] is True and "patch" in answer["response"]
        await asyncio.wait_for(server, 10)
    finally:
        stop.set()
        forecasts.gate.set()
        if not server.done():
            server.cancel()
