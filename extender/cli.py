"""``harbinger extender [--port N] [--host H] [--kubeconfig K] [--cert-dir DIR]``.

Flags override ``HARBINGER_EXTENDER__*`` / ``HARBINGER_KUBE__KUBECONFIG`` and the
settings file; plain HTTP unless ``--cert-dir`` names a directory with ``tls.crt`` and
``tls.key``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from harbinger.settings import load_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="port to listen on (default: 8888)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, beside the scheduler)")
    parser.add_argument("--kubeconfig", type=Path,
                        help="kubeconfig to watch nodes and pods with (default: $KUBECONFIG, then in-cluster)")
    parser.add_argument("--cert-dir", type=Path, help="serve HTTPS with tls.crt and tls.key from this directory")


def run(args: argparse.Namespace) -> int:
    from extender.server import run_extender  # aiohttp and numpy only when the command runs

    extender: dict[str, Any] = {}
    for flag in ("port", "host", "cert_dir"):
        if getattr(args, flag) is not None:
            extender[flag] = getattr(args, flag)
    overrides: dict[str, Any] = {"extender": extender} if extender else {}
    if args.kubeconfig is not None:
        overrides["kube"] = {"kubeconfig": args.kubeconfig}
    settings = load_settings(**overrides)
    asyncio.run(run_extender(settings))
    return 0
