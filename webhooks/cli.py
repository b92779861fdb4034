"""``harbinger webhook --cert-dir DIR [--port N] [--kubeconfig K] [--models-dir DIR]``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from harbinger.clock import clock_from_spec
from harbinger.errors import InvalidInput
from harbinger.flags import KUBE_FLAGS, add_kube_flags
from harbinger.httpserver import serve
from harbinger.settings import Settings, settings_from_flags
from models.traffic import history_source
from webhooks.cluster import WatchedCluster
from webhooks.forecasts import ModelForecasts
from webhooks.mutate import Bounds, Mutator
from webhooks.server import build_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert-dir", type=Path, required=True,
                        help="directory with tls.crt and tls.key (reloaded when they change)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTPS port (default 8443)")
    add_kube_flags(parser)
    parser.add_argument("--models-dir", type=Path, help="trained forecasters, one directory per service")
    parser.add_argument("--events", dest="events_file", type=Path, metavar="YAML",
                        help="scheduled events given to every forecast (the forecaster's format), re-read on change")
    parser.add_argument("--prometheus-url", help="Prometheus the models read recent traffic from")
    parser.add_argument("--history-trace", action="append", metavar="SERVICE=CSV[*SCALE]",
                        help="rehearsals: read SERVICE's traffic from a recorded trace instead of Prometheus "
                             "(repeatable; use with HARBINGER_REPLAY_CLOCK)")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_flags(args, {
        "cert_dir": "webhook.cert_dir", "host": "webhook.host", "port": "webhook.port",
        "models_dir": "webhook.models_dir", "events_file": "webhook.events_file",
        **KUBE_FLAGS,
        "prometheus_url": "history.prometheus_url", "history_trace": "history.traces",
    })
    if not (args.cert_dir / "tls.crt").is_file() or not (args.cert_dir / "tls.key").is_file():
        raise InvalidInput("needs tls.crt and tls.key ('harbinger certs --out DIR' makes them)",
                           source=f"--cert-dir {args.cert_dir}")
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: Settings) -> None:
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
        bounds=Bounds(config.min_cpu_cores, config.max_cpu_cores, config.min_memory_bytes, config.max_memory_bytes),
        sidecar_image=config.chaos_sidecar_image,
        scheduler_name=config.scheduler_name,
        clock=clock.now,
    )
    app = build_app(
        mutator, max_body_bytes=config.max_body_bytes,
        ready=lambda: cluster.synced() and forecasts.ready(), lifecycles=(cluster, forecasts),
    )
    await serve(
        app, host=config.host, port=config.port, cert_dir=config.cert_dir,
        cert_reload_seconds=config.cert_reload_seconds, shutdown_grace_seconds=config.shutdown_grace_seconds,
    )
