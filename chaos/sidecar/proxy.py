"""The fault-injecting reverse proxy in front of the application, and the sidecar's admin
port (``/healthz``, ``/readyz``, ``/metrics``, ``/fault``).

One request's path, top to bottom: look up the fault in force, maybe delay, maybe abort
with the fault's status, otherwise forward to the application and stream its answer
back, paced to the bandwidth limit if there is one. Every request is counted and timed,
faults included, because that is what the callers see.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from chaos.sidecar.faultstate import FaultState
from chaos.sidecar.metrics import SidecarMetrics
from chaos.sidecar.stress import Stress
from harbinger.errors import InvalidInput
from harbinger.httpserver import add_standard_routes, serve

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailers", "transfer-encoding", "upgrade", "host"})
CHUNK = 16 * 1024

STATE: web.AppKey[FaultState] = web.AppKey("fault_state", FaultState)
METRICS: web.AppKey[SidecarMetrics] = web.AppKey("sidecar_metrics", SidecarMetrics)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("upstream_session", aiohttp.ClientSession)


class Pacer:
    """Paces all responses of the sidecar together to one byte rate (a shared token bucket
    with no burst: each chunk waits until the link would have finished sending it)."""

    def __init__(self) -> None:
        self._free_at = 0.0

    async def take(self, nbytes: int, bytes_per_second: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._free_at = max(now, self._free_at) + nbytes / bytes_per_second
        await asyncio.sleep(self._free_at - now)


PACER: web.AppKey[Pacer] = web.AppKey("pacer", Pacer)


def parse_hostport(text: str, *, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"expected HOST:PORT, got {text!r}", source=flag)
    return host.strip("[]"), int(port)


def build_proxy_app(upstream: str, state: FaultState, metrics: SidecarMetrics, *, timeout: float) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = state
    app[METRICS] = metrics
    app[PACER] = Pacer()
    base = f"http://{upstream}"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # auto_decompress off: bytes pass through untouched, Content-Length stays true.
        async with aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=256),
        ) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", _proxy(base))
    return app


def _proxy(base: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        metrics = request.app[METRICS]
        loop = asyncio.get_running_loop()
        started = loop.time()
        code = 502
        try:
            active = request.app[STATE].current()
            fault = active.fault if active else None
            if fault and fault.delay_ms is not None and random.random() * 100 < fault.delay_percent:
                metrics.injected.labels(effect="delay").inc()
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault and fault.abort_status is not None and random.random() * 100 < fault.abort_percent:
                metrics.injected.labels(effect="abort").inc()
                code = fault.abort_status
                return web.Response(status=code, text="fault injected by harbinger chaos\n")
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                async with request.app[SESSION].request(
                    request.method, base + request.path_qs, headers=headers, data=body or None,
                    allow_redirects=False,
                ) as upstream:
                    response = web.StreamResponse(status=upstream.status, headers={
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
                    await response.prepare(request)
                    rate = fault.bandwidth_bps / 8 if fault and fault.bandwidth_bps else None
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        if rate:
                            await request.app[PACER].take(len(chunk), rate)
                        await response.write(chunk)
                    await response.write_eof()
                    code = upstream.status
                    return response
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("upstream %s failed: %s", base, exc)
                code = 504 if isinstance(exc, TimeoutError) else 502
                return web.Response(status=code, text=f"upstream unavailable: {type(exc).__name__}\n")
        finally:
            metrics.requests.labels(code=str(code)).inc()
            metrics.duration.observe(loop.time() - started)

    return handle


def build_admin_app(state: FaultState, metrics: SidecarMetrics) -> web.Application:
    app = web.Application()
    add_standard_routes(app, registry=metrics.registry)

    async def fault(_: web.Request) -> web.Response:
        return web.json_response(state.describe())

    app.router.add_get("/fault", fault)
    return app


async def run_sidecar(
    *, listen: str, upstream: str, annotations_file: Path, metrics_port: int, poll_seconds: float = 0.2,
    max_cpu_cores: float = 2.0, max_memory_bytes: int = 64 * 2**20, upstream_timeout: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the proxy on ``listen`` and the admin port on the same host until SIGTERM or ``stop``."""
    host, port = parse_hostport(listen, flag="--listen")
    parse_hostport(upstream, flag="--upstream")
    if not 0 < metrics_port < 65536:
        raise InvalidInput(f"{metrics_port} is not a port", source="--metrics-port")
    metrics = SidecarMetrics()
    state = FaultState(annotations_file, Stress(max_cpu_cores=max_cpu_cores, max_memory_bytes=max_memory_bytes),
                       metrics)
    state.reload()
    stop = stop or asyncio.Event()
    watcher = asyncio.create_task(state.run(poll_seconds), name="chaos-fault-state")
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(serve(build_proxy_app(upstream, state, metrics, timeout=upstream_timeout),
                                    host=host, port=port, stop=stop, shutdown_grace_seconds=5.0))
            group.create_task(serve(build_admin_app(state, metrics), host=host, port=metrics_port, stop=stop,
                                    shutdown_grace_seconds=1.0))
    except* InvalidInput as group_error:
        # One port could not be bound: the TaskGroup has stopped the other server; report the cause.
        raise group_error.exceptions[0] from None
    finally:
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await state.stress.stop()
