"""``harbinger webhook --cert-dir DIR [--port N] [--kubeconfig K] [--models-dir DIR]``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from harbinger.errors import InvalidInput
from harbinger.serving import serve
from harbinger.settings import WebhookSettings, load_settings
from webhooks.cluster import WatchedCluster
from webhooks.forecasts import ModelForecasts, PrometheusHistory
from webhooks.mutate import Bounds, Mutator
from webhooks.server import build_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cert-dir", type=Path, required=True,
                        help="directory with tls.crt and tls.key (reloaded when they change)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTPS port (default 8443)")
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig (default $KUBECONFIG, then in-cluster)")
    parser.add_argument("--models-dir", type=Path, help="trained forecasters, one directory per service")
    parser.add_argument("--prometheus-url", help="Prometheus the models read recent traffic from")


def run(args: argparse.Namespace) -> int:
    webhook: dict[str, Any] = {"cert_dir": args.cert_dir}
    for flag in ("host", "port", "models_dir", "prometheus_url"):
        if getattr(args, flag) is not None:
            webhook[flag] = getattr(args, flag)
    kube: dict[str, Any] = {"kubeconfig": args.kubeconfig} if args.kubeconfig else {}
    settings = load_settings(webhook=webhook, kube=kube)
    if not (args.cert_dir / "tls.crt").is_file() or not (args.cert_dir / "tls.key").is_file():
        raise InvalidInput("needs tls.crt and tls.key ('harbinger certs --out DIR' makes them)",
                           source=f"--cert-dir {args.cert_dir}")
    asyncio.run(_serve(settings.webhook, settings.kube.kubeconfig, settings.kube.context))
    return 0


async def _serve(config: WebhookSettings, kubeconfig: Path | None, context: str | None) -> None:
    cluster = WatchedCluster(kubeconfig, context)
    forecasts = ModelForecasts(
        config.models_dir,
        PrometheusHistory(config.prometheus_url, config.history_query, config.history_lookback_seconds),
        refresh_seconds=config.forecast_refresh_seconds,
        miss_budget_seconds=config.forecast_miss_budget_seconds,
    )
    mutator = Mutator(
        cluster.view, forecasts,
        bounds=Bounds(config.min_cpu_cores, config.max_cpu_cores, config.min_memory_bytes, config.max_memory_bytes),
        sidecar_image=config.chaos_sidecar_image,
        scheduler_name=config.scheduler_name,
    )
    app = build_app(
        mutator, max_body_bytes=config.max_body_bytes,
        ready=lambda: cluster.synced() and forecasts.ready(), lifecycles=(cluster, forecasts),
    )
    await serve(
        app, host=config.host, port=config.port, cert_dir=config.cert_dir,
        cert_reload_seconds=config.cert_reload_seconds, shutdown_grace_seconds=config.shutdown_grace_seconds,
    )
