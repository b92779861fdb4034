"""Every call to the apiserver ends: a server that accepts and never answers gives a timeout,
not a hung planner run or a silently stale cache; a cache says when it is stale; a crashed
background loop is restarted, not left dead in a live process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from harbinger.kube import Reflector, with_default_timeout
from harbinger.lifecycle import supervise
from tests.conftest import ServeApp


def silent_apiserver(answered: list[str]) -> web.Application:
    """Answers nothing: every request waits until the test ends (a half-open connection)."""

    async def hang(request: web.Request) -> web.Response:
        answered.append(request.path_qs)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    return app


def api_for(url: str, seconds: float) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    return with_default_timeout(client.ApiClient(configuration=configuration), seconds)


async def test_a_call_without_its_own_timeout_gets_the_default(serve_app: ServeApp) -> None:
    seen: list[str] = []
    async with serve_app(silent_apiserver(seen)) as url:
        api = api_for(url, 0.3)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.CoreV1Api(api).list_namespace(_preload_content=False)
        finally:
            await api.close()
    assert seen == ["/api/v1/namespaces"]


async def test_a_call_naming_its_timeout_keeps_it(serve_app: ServeApp) -> None:
    seen: list[str] = []
    async with serve_app(silent_apiserver(seen)) as url:
        api = api_for(url, 3600)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.CoreV1Api(api).list_namespace(_preload_content=False, _request_timeout=0.3)
        finally:
            await api.close()


async def test_a_half_open_watch_is_cut_and_retried(serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    # The list answers; the watch then hangs. Without a client-side bound the reflector would
    # wait forever on it; with one it gives up and watches again.
    monkeypatch.setattr("harbinger.kube.WATCH_GRACE_SECONDS", 0.2)
    watches: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "True", "1"):
            watches.append(request.path_qs)
            response = web.StreamResponse()
            await response.prepare(request)
            await asyncio.Event().wait()
        return web.json_response({"kind": "NamespaceList", "metadata": {"resourceVersion": "7"}, "items": []})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces", handle)
    async with serve_app(app) as url:
        api = api_for(url, 5)
        reflector = Reflector(client.CoreV1Api(api).list_namespace, name="namespaces", watch_timeout_seconds=0)
        reflector.start()
        try:
            await reflector.wait_synced(10)
            assert reflector.healthy()
            for _ in range(200):
                if len(watches) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await reflector.stop()
            await api.close()
    assert len(watches) >= 2, watches
    # Its list answered, its watches never did: after max_age it is no longer fresh.
    assert reflector.last_contact is not None and not reflector.healthy(0)


async def test_a_crashed_background_loop_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise KeyError("a field the loop did not expect")
        stop.set()

    before = REGISTRY.get_sample_value("harbinger_task_restarts_total", {"task": "flaky"}) or 0.0
    await asyncio.wait_for(supervise("flaky", flaky, stop, first_backoff=0.01), 10)
    assert runs == [0, 1, 2]
    assert REGISTRY.get_sample_value("harbinger_task_restarts_total", {"task": "flaky"}) == before + 2
    assert caplog.text.count("background task flaky crashed") == 2 and "KeyError" in caplog.text


async def test_an_object_the_handler_cannot_take_is_skipped_and_the_cache_goes_on(
    serve_app: ServeApp, caplog: pytest.LogCaptureFixture,
) -> None:
    items = [{"metadata": {"name": name, "resourceVersion": "1"}} for name in ("a", "poison", "c")]

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "True", "1"):
            response = web.StreamResponse()
            await response.prepare(request)
            await asyncio.Event().wait()
        return web.json_response({"kind": "NamespaceList", "metadata": {"resourceVersion": "7"}, "items": items})

    seen: list[str] = []

    def on_event(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if obj["metadata"]["name"] == "poison":
            raise OverflowError("Python int too large to convert to C long")
        seen.append(obj["metadata"]["name"])

    app = web.Application()
    app.router.add_get("/api/v1/namespaces", handle)
    before = REGISTRY.get_sample_value("harbinger_reflector_event_errors_total", {"reflector": "ns"}) or 0.0
    async with serve_app(app) as url:
        api = api_for(url, 5)
        reflector = Reflector(client.CoreV1Api(api).list_namespace, name="ns", on_event=on_event)
        reflector.start()
        try:
            await reflector.wait_synced(10)
        finally:
            await reflector.stop()
            await api.close()
    assert seen == ["a", "c"] and set(reflector.store) == {"a", "poison", "c"}
    assert REGISTRY.get_sample_value("harbinger_reflector_event_errors_total", {"reflector": "ns"}) == before + 1
    assert "ADDED poison could not be handled" in caplog.text
