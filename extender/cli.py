"""``harbinger extender [--port N] [--host H] [--kubeconfig K] [--cert-dir DIR]``.

Flags override ``HARBINGER_EXTENDER__*`` / ``HARBINGER_KUBE__KUBECONFIG`` and the
settings file; plain HTTP unless ``--cert-dir`` names a directory with ``tls.crt`` and
``tls.key``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from harbinger.flags import KUBE_FLAGS, add_kube_flags
from harbinger.settings import settings_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="port to listen on (default: 8888)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, beside the scheduler)")
    add_kube_flags(parser)
    parser.add_argument("--cert-dir", type=Path, help="serve HTTPS with tls.crt and tls.key from this directory")


def run(args: argparse.Namespace) -> int:
    from extender.server import run_extender  # aiohttp and numpy only when the command runs

    settings = settings_from_flags(args, {
        "port": "extender.port", "host": "extender.host", "cert_dir": "extender.cert_dir",
        **KUBE_FLAGS,
    })
    asyncio.run(run_extender(settings))
    return 0
