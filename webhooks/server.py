"""The webhook's aiohttp application: ``POST /mutate`` plus the standard
``/healthz``, ``/readyz`` and ``/metrics``; served over TLS by :func:`harbinger.httpserver.serve`.

Status codes are decided here, once (:func:`answer`): 200 with an AdmissionReview for
every review (allowed, with or without a patch), 400 with a message for a body that is not
one, 413 for a body over ``max_body_bytes``. Never a 5xx: should deciding a pod ever fail on
something no parser foresaw, the pod is allowed unchanged with a warning, the error is logged
with its traceback and counted (``harbinger_webhook_errors_total{reason="internal"}``). With
``failurePolicy: Ignore`` none of them ever blocks a pod.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from harbinger.clock import clock_from_spec
from harbinger.errors import InvalidInput
from harbinger.httpserver import add_standard_routes, serve
from harbinger.settings import Settings
from models.traffic import history_source
from webhooks import metrics
from webhooks.cluster import WatchedCluster
from webhooks.forecasts import ModelForecasts
from webhooks.mutate import Bounds, Mutator
from webhooks.review import encode_response

log = logging.getLogger(__name__)

MUTATOR: web.AppKey[Mutator] = web.AppKey("mutator", Mutator)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body_bytes", int)

JSON = "application/json"


class Lifecycle(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _error(status: int, reason: str, message: str) -> web.Response:
    metrics.ERRORS.labels(reason).inc()
    metrics.REQUESTS.labels(str(status)).inc()
    return web.Response(status=status, text=message + "\n")


async def mutate(request: web.Request) -> web.Response:
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "too_large", f"AdmissionReview body of {request.content_length} bytes is over {limit}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # chunked bodies are only measured while read
        return _error(413, "too_large", f"AdmissionReview body is over {limit} bytes")
    status, reason, text = await answer(request.app[MUTATOR], body)
    if status != 200:
        return _error(status, reason, text.decode())
    return web.Response(body=text, content_type=JSON)


async def answer(mutator: Mutator, body: bytes) -> tuple[int, str, bytes]:
    """(status, error reason, body) for one AdmissionReview body (module docstring)."""
    started = time.perf_counter()
    try:
        reviewed = await mutator.review(body)
    except InvalidInput as exc:
        return 400, "bad_request", str(exc).encode()
    except Exception as exc:  # a bug must not become a 5xx: the pod goes in unchanged
        uid = _uid_of(body)
        log.exception("review %s failed; the pod is admitted unchanged", uid or "(no uid)")
        metrics.ERRORS.labels("internal").inc()
        if uid is None:
            return 400, "bad_request", b"AdmissionReview: request.uid is missing"
        reviewed = encode_response(uid, warnings=[f"harbinger: the pod was admitted unchanged ({type(exc).__name__})"])
    metrics.LATENCY.observe(time.perf_counter() - started)
    metrics.ANSWERED.inc()
    return 200, "", reviewed


def _uid_of(body: bytes) -> str | None:
    try:
        uid = json.loads(body)["request"]["uid"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return uid if isinstance(uid, str) and uid else None


def build_app(
    mutator: Mutator,
    *,
    max_body_bytes: int = 3 * 1024 * 1024,
    ready: Callable[[], bool] | None = None,
    lifecycles: tuple[Lifecycle, ...] = (),
) -> web.Application:
    """The application; each of ``lifecycles`` is started with the app and stopped after
    the last in-flight review has been answered."""
    app = web.Application(client_max_size=max_body_bytes)
    app[MUTATOR] = mutator
    app[MAX_BODY] = max_body_bytes
    app.router.add_post("/mutate", mutate)
    add_standard_routes(app, ready=ready)

    async def run_lifecycles(_: web.Application) -> AsyncIterator[None]:
        started: list[Lifecycle] = []
        try:
            for part in lifecycles:
                await part.start()
                started.append(part)
            yield
        finally:
            for part in reversed(started):
                await part.stop()

    app.cleanup_ctx.append(run_lifecycles)
    return app


async def run_webhook(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Watch namespaces and Deployments, keep forecasts fresh, and answer the apiserver over
    TLS until SIGTERM (or ``stop``)."""
    config = settings.webhook
    clock = clock_from_spec(settings.replay_clock)
    cluster = WatchedCluster(settings.kube.kubeconfig, settings.kube.context)
    forecasts = ModelForecasts(
        config.models_dir, history_source(settings.history, settings.prometheus),
        lookback_seconds=settings.history.lookback_seconds, clock=clock.now,
        refresh_seconds=config.forecast_refresh_seconds,
        miss_budget_seconds=config.forecast_miss_budget_seconds,
        events_file=config.events_file,
    )
    mutator = Mutator(
        cluster.view, forecasts,
        bounds=Bounds.of(config),
        sidecar_image=config.chaos_sidecar_image,
        sidecar_limits=settings.chaos.sidecar_limits(),
        scheduler_name=config.scheduler_name,
        clock=clock.now,
    )
    app = build_app(
        mutator, max_body_bytes=config.max_body_bytes,
        ready=lambda: cluster.fresh() and forecasts.ready(), lifecycles=(cluster, forecasts),
    )
    await serve(
        app, host=config.host, port=config.port, cert_dir=config.cert_dir,
        cert_reload_seconds=config.cert_reload_seconds, shutdown_grace_seconds=config.shutdown_grace_seconds,
        stop=stop,
    )
