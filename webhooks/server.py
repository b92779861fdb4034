"""The webhook's aiohttp application: ``POST /mutate`` plus the standard
``/healthz``, ``/readyz`` and ``/metrics``; served over TLS by :func:`harbinger.httpserver.serve`.

Status codes are decided here, once: 200 with an AdmissionReview for every review
(allowed, with or without a patch), 400 with a message for a body that is not one,
413 for a body over ``max_body_bytes``. With ``failurePolicy: Ignore`` none of them
ever blocks a pod.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web

from harbinger.errors import InvalidInput
from harbinger.httpserver import add_standard_routes
from webhooks import metrics
from webhooks.mutate import Mutator

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
    started = time.perf_counter()
    try:
        answer = await request.app[MUTATOR].review(body)
    except InvalidInput as exc:
        return _error(400, "bad_request", str(exc))
    metrics.LATENCY.observe(time.perf_counter() - started)
    metrics.ANSWERED.inc()
    return web.Response(body=answer, content_type=JSON)


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
