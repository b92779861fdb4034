"""Minimal JSONPatch (RFC 6902) operations against the pod exactly as the apiserver sent it.

Each helper compares what the pod already holds with what it should hold and emits an
operation only for a difference, so a pod that already carries Harbinger's stamps gets
an empty patch: the webhook is idempotent on its own output and
``reinvocationPolicy: IfNeeded`` cannot make it stamp twice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from harbinger.errors import InvalidInput
from harbinger.quantity import parse_quantity
from webhooks.review import JSONPatch


def escape(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` -> ``~0`` first, then ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def set_annotations(pod: dict[str, Any], wanted: dict[str, str]) -> JSONPatch:
    """Make ``metadata.annotations`` hold ``wanted`` (other annotations untouched)."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": dict(wanted)}}] if wanted else []
    current = metadata.get("annotations")
    if not isinstance(current, dict):  # missing or null: one operation creates the whole map
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(wanted)}] if wanted else []
    return [
        {"op": "add", "path": f"/metadata/annotations/{escape(key)}", "value": value}
        for key, value in wanted.items()
        if current.get(key) != value
    ]


@lru_cache(maxsize=4096)
def _same_quantity(current: str | int | float, wanted: str) -> bool:
    try:
        return parse_quantity(current) == parse_quantity(wanted)
    except InvalidInput:
        return False


def set_requests(pod: dict[str, Any], index: int, wanted: dict[str, str]) -> JSONPatch:
    """Make container ``index``'s ``resources.requests`` hold ``wanted`` (by quantity value:
    ``0.5`` and ``500m`` are the same request and need no change)."""
    if not wanted:
        return []
    base = f"/spec/containers/{index}"
    container = pod["spec"]["containers"][index]
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return [{"op": "add", "path": f"{base}/resources", "value": {"requests": dict(wanted)}}]
    requests = resources.get("requests")
    if not isinstance(requests, dict):
        return [{"op": "add", "path": f"{base}/resources/requests", "value": dict(wanted)}]
    return [
        {"op": "add", "path": f"{base}/resources/requests/{escape(name)}", "value": value}
        for name, value in wanted.items()
        if not (isinstance(current := requests.get(name), str | int | float) and _same_quantity(current, value))
    ]


#: Values of ``spec.schedulerName`` that mean "whatever the cluster's default is".
_DEFAULT_SCHEDULERS = frozenset({None, "", "default-scheduler"})


def set_scheduler_name(pod: dict[str, Any], name: str | None) -> JSONPatch:
    """Point the pod at scheduler ``name``, unless it asked for a scheduler of its own."""
    current = pod["spec"].get("schedulerName")
    if not name or current == name or current not in _DEFAULT_SCHEDULERS:
        return []
    return [{"op": "add", "path": "/spec/schedulerName", "value": name}]


def append_container(pod: dict[str, Any], container: dict[str, Any]) -> JSONPatch:
    """Append ``container`` unless a container (or init container) of that name exists."""
    spec = pod["spec"]
    names = {c.get("name") for key in ("containers", "initContainers") for c in spec.get(key) or []}
    if container["name"] in names:
        return []
    return [{"op": "add", "path": "/spec/containers/-", "value": container}]


def append_volume(pod: dict[str, Any], volume: dict[str, Any]) -> JSONPatch:
    """Append ``volume`` unless a volume of that name exists; creates ``spec.volumes`` if needed."""
    volumes = pod["spec"].get("volumes")
    if not isinstance(volumes, list):
        return [{"op": "add", "path": "/spec/volumes", "value": [volume]}]
    if any(v.get("name") == volume["name"] for v in volumes):
        return []
    return [{"op": "add", "path": "/spec/volumes/-", "value": volume}]
