"""Flags that mean the same in every command, defined once.

A command adds them with these helpers and passes the matching mapping to
:func:`harbinger.settings.settings_from_flags`, so ``--kubeconfig`` or ``--context`` is
spelled, explained and applied the same way by the webhook, the extender, the planner,
the chaos controller and the certificate job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: Flag attribute -> setting, for :func:`harbinger.settings.settings_from_flags`.
KUBE_FLAGS = {"kubeconfig": "kube.kubeconfig", "context": "kube.context"}


def add_kube_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path,
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
    parser.add_argument("--context", help="kubeconfig context to use (default: the file's current context)")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object on the last line of standard output")
