"""Kubernetes Events, the one way every component tells ``kubectl describe`` what it did to
an object (or why it left it alone)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from harbinger.clock import format_time

log = logging.getLogger(__name__)

#: The apiserver refuses an Event whose message is over 1 KiB.
MAX_MESSAGE = 1000


async def record_event(api: client.ApiClient, involved: dict[str, Any], reason: str, message: str, now: datetime, *,
                       component: str, instance: str, action: str, warning: bool = False,
                       namespace: str | None = None) -> None:
    """An Event on ``involved`` (``{"apiVersion", "kind", "metadata": {"name", "namespace"?, "uid"?}}``),
    in its namespace (``namespace`` for a cluster-scoped object; default ``default``)."""
    meta = involved["metadata"]
    where = meta.get("namespace") or namespace or "default"
    stamp = format_time(now)
    body = {
        "metadata": {"generateName": f"{meta['name']}.harbinger-", "namespace": where},
        "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                           **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                           **({"uid": meta["uid"]} if meta.get("uid") else {})},
        "reason": reason,
        "message": message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "...",
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "action": action,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    core: Any = client.CoreV1Api(api)  # the body is the Event's JSON, not a model object
    await core.create_namespaced_event(where, body)
