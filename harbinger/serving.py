"""How every Harbinger HTTP server starts, reports health, and stops.

The webhook, the extender and the chaos sidecar all start through :func:`serve`: an
``AppRunner`` without its own signal handling, ``/healthz``, ``/readyz`` and
``/metrics`` added the same way, and SIGTERM/SIGINT draining in-flight requests for
up to ``shutdown_grace_seconds`` before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from certs.reload import ReloadingServerTLS
from harbinger.errors import InvalidInput

log = logging.getLogger(__name__)

READY_CHECK: web.AppKey[Callable[[], bool]] = web.AppKey("ready_check", Callable[[], bool])  # type: ignore[arg-type]


def add_standard_routes(
    app: web.Application, *, ready: Callable[[], bool] | None = None, registry: CollectorRegistry = REGISTRY
) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (``ready()`` holds), ``/metrics``."""
    app[READY_CHECK] = ready or (lambda: True)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        if request.app[READY_CHECK]():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    cert_dir: Path | None = None,
    cert_reload_seconds: float = 10.0,
    shutdown_grace_seconds: float = 10.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``stop`` is set), then drain and return."""
    tls = ReloadingServerTLS(cert_dir) if cert_dir else None
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_grace_seconds)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls.context if tls else None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}", source="--port") from exc
    log.info("serving on %s://%s:%d", "https" if tls else "http", host, port)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    reloader = asyncio.create_task(tls.watch(cert_reload_seconds)) if tls else None
    try:
        await stop.wait()
        log.info("shutting down: draining in-flight requests for up to %.0fs", shutdown_grace_seconds)
    finally:
        if reloader:
            reloader.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
