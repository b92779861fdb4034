"""Registering locally running Harbinger processes with the local control plane, in the
shapes ``manifests/`` ships: the MutatingWebhookConfiguration pointed at a URL on
127.0.0.1 instead of the in-cluster Service, and the scheduler's extender entry pointed
at the extender's local port. Used by ``make demo``; reading the shipped manifests
keeps the demo honest about what a cluster gets.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import yaml

from harbinger_dev import REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests" / "base"
WEBHOOK_CONFIGURATION = MANIFESTS / "webhook" / "mutatingwebhookconfiguration.yaml"
SCHEDULER_CONFIG_MAP = MANIFESTS / "extender" / "scheduler-config.yaml"


def local_webhook_configuration(url: str, ca_pem: bytes) -> dict[str, Any]:
    """The shipped MutatingWebhookConfiguration, calling ``url`` with ``ca_pem`` as its caBundle."""
    configuration: dict[str, Any] = yaml.safe_load(WEBHOOK_CONFIGURATION.read_text())
    for webhook in configuration["webhooks"]:
        webhook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
    return configuration


def local_scheduler_extenders(url_prefix: str) -> list[dict[str, Any]]:
    """The shipped scheduler configuration's ``extenders``, calling ``url_prefix``."""
    config_map = yaml.safe_load(SCHEDULER_CONFIG_MAP.read_text())
    config = yaml.safe_load(config_map["data"]["kube-scheduler.yaml"])
    extenders = copy.deepcopy(config["extenders"])
    for extender in extenders:
        extender["urlPrefix"] = url_prefix
    return list(extenders)
