"""``harbinger webhook --cert-dir DIR [--port N] [--kubeconfig K] [--models-dir DIR]``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from harbinger.errors import InvalidInput
from harbinger.flags import KUBE_FLAGS, add_kube_flags
from harbinger.settings import settings_from_flags
from webhooks.server import run_webhook


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
    asyncio.run(run_webhook(settings))
    return 0
