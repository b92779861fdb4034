"""The fault-injecting reverse proxy in front of the application, the sidecar's metrics
port (``/metrics``, ``/healthz``, ``/readyz``) and its admin port (``/fault``, loopback only).

One request's path, top to bottom: look up the fault in force, maybe delay, maybe abort
with the fault's status, otherwise forward to the application and stream its answer
back, paced to the bandwidth limit if there is one. Every request is counted and timed,
faults included, because that is what the callers see.

Bodies stream both ways in chunks, never read whole: the sidecar's memory does not grow
with the size or the number of uploads in flight (its container has a 128Mi limit, the
application behind it may take far larger bodies).
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from harbinger.sidecar import SidecarLimits

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
    # client_max_size bounds only request.read(), which the proxy never calls: bodies stream.
    app = web.Application()
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
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            # The request's own stream: aiohttp reads it as the upstream takes it (flow control
            # both ways), with the caller's Content-Length when it sent one, chunked otherwise.
            body = request.content if request.body_exists else None
            try:
                async with request.app[SESSION].request(
                    request.method, base + request.path_qs, headers=headers, data=body,
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


def build_metrics_app(metrics: SidecarMetrics, state: FaultState | None = None) -> web.Application:
    """``/metrics``, ``/healthz``, ``/readyz``; ``/fault`` too when ``state`` is given (only
    for a listener on a loopback address)."""
    app = web.Application()
    add_standard_routes(app, registry=metrics.registry)
    if state is not None:
        _add_fault_route(app, state)
    return app


def build_admin_app(state: FaultState) -> web.Application:
    """``/fault`` and ``/healthz``, for the admin port on 127.0.0.1."""
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    _add_fault_route(app, state)
    return app


def _add_fault_route(app: web.Application, state: FaultState) -> None:
    async def fault(_: web.Request) -> web.Response:
        return web.json_response(state.describe())

    app.router.add_get("/fault", fault)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def run_sidecar(
    *, listen: str, upstream: str, annotations_file: Path, metrics_port: int, admin_port: int | None = None,
    poll_seconds: float = 0.2, limits: SidecarLimits | None = None, upstream_timeout: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the proxy on ``listen``, metrics on the same host at ``metrics_port``, and the fault
    state on 127.0.0.1 at ``admin_port``, until SIGTERM or ``stop``. Without ``admin_port`` the
    fault state is served on the metrics port only when that is bound to a loopback address:
    it is never exposed beyond the pod."""
    host, port = parse_hostport(listen, flag="--listen")
    parse_hostport(upstream, flag="--upstream")
    for flag, number in (("--metrics-port", metrics_port), ("--admin-port", admin_port)):
        if number is not None and not 0 < number < 65536:
            raise InvalidInput(f"{number} is not a port", source=flag)
    limits = limits or SidecarLimits()
    metrics = SidecarMetrics()
    state = FaultState(annotations_file, Stress(max_cpu_cores=limits.max_cpu_cores,
                                                max_memory_bytes=limits.max_memory_bytes), metrics, limits=limits)
    state.reload()
    stop = stop or asyncio.Event()
    watcher = asyncio.create_task(state.run(poll_seconds), name="chaos-fault-state")
    fault_on_metrics = admin_port is None and is_loopback(host)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(serve(build_proxy_app(upstream, state, metrics, timeout=upstream_timeout),
                                    host=host, port=port, stop=stop, shutdown_grace_seconds=5.0))
            group.create_task(serve(build_metrics_app(metrics, state if fault_on_metrics else None),
                                    host=host, port=metrics_port, stop=stop, shutdown_grace_seconds=1.0))
            if admin_port is not None:
                group.create_task(serve(build_admin_app(state), host="127.0.0.1", port=admin_port, stop=stop,
                                        shutdown_grace_seconds=1.0))
    except* InvalidInput as group_error:
        # One port could not be bound: the TaskGroup has stopped the others; report the cause.
        raise group_error.exceptions[0] from None
    finally:
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await state.stress.stop()
