"""How every Harbinger HTTP server starts, reports health, serves TLS, and stops.

The webhook, the extender, the planner's metrics endpoint and the chaos sidecar all
start through :func:`serve`: an ``AppRunner`` without its own signal handling,
``/healthz``, ``/readyz`` and ``/metrics`` added the same way, and SIGTERM/SIGINT
(:mod:`harbinger.lifecycle`) draining in-flight requests for up to
``shutdown_grace_seconds`` before the process exits.

TLS follows certificate rotation without a restart: ``ssl.SSLContext.load_cert_chain``
may be called again on a live context; handshakes after the call use the new pair,
connections already open keep theirs. So rotation is a periodic hash of the two files
and a reload when it changes; no connection is dropped and no listener is re-created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import platform
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest

from harbinger import __version__
from harbinger.errors import InvalidInput
from harbinger.lifecycle import stop_on_signals

log = logging.getLogger(__name__)

#: Which Harbinger a /metrics endpoint belongs to (always 1), as Prometheus exporters do.
BUILD_INFO = Gauge("harbinger_build_info", "Harbinger's version and Python, always 1", ["version", "python"])
BUILD_INFO.labels(__version__, platform.python_version()).set(1)

#: The file names of a ``kubernetes.io/tls`` Secret mounted as a directory.
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"


class ReloadingServerTLS:
    """An SSL server context over ``cert_dir/tls.crt`` and ``cert_dir/tls.key``."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_path = Path(cert_dir) / CERT_FILE
        self.key_path = Path(cert_dir) / KEY_FILE
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.reloads = 0
        self._digest = ""
        self.reload()

    def _current_digest(self) -> str:
        try:
            return hashlib.sha256(self.cert_path.read_bytes() + self.key_path.read_bytes()).hexdigest()
        except OSError as exc:
            raise InvalidInput(f"cannot read serving certificate: {exc.strerror}", source=str(exc.filename)) from exc

    def reload(self) -> bool:
        """Load the pair if it changed; returns whether it did. A half-written pair (the
        key of one rotation, the certificate of another) fails to load and is retried
        on the next check, while the old pair keeps serving."""
        digest = self._current_digest()
        if digest == self._digest:
            return False
        try:
            self.context.load_cert_chain(self.cert_path, self.key_path)
        except ssl.SSLError as exc:
            if not self._digest:
                raise InvalidInput(f"certificate and key do not load: {exc}", source=str(self.cert_path)) from exc
            log.warning("rotated certificate does not load yet (%s); keeping the previous one", exc)
            return False
        self._digest = digest
        self.reloads += 1
        log.info("serving certificate loaded from %s", self.cert_path)
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(InvalidInput):
                self.reload()

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
    reloader = asyncio.create_task(tls.watch(cert_reload_seconds)) if tls else None
    try:
        with stop_on_signals(stop):
            await stop.wait()
        log.info("shutting down: draining in-flight requests for up to %.0fs", shutdown_grace_seconds)
    finally:
        if reloader:
            reloader.cancel()
        await runner.cleanup()
