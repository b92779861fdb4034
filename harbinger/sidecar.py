"""The chaos sidecar's container, as the webhook injects it and ``harbinger chaos sidecar`` runs.

Defined here, not in ``webhooks/`` or ``chaos/``, because it is a contract between the
two: the webhook adds this container and a downward-API volume with the pod's
annotations; the sidecar reads its faults from that file (the kubelet refreshes it
when the chaos controller changes the pod's ``harbinger.io/chaos-*`` annotations).

A pod's author can write those annotations too, so the sidecar does not trust them: it
bounds every fault by :class:`SidecarLimits`, which the webhook passes as flags from the
platform's settings (``settings.chaos.sidecar_*``), and which default to the built-in
caps below when no flag is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from harbinger import contract
from harbinger.errors import InvalidInput

#: The proxy callers reach (the pod's traffic goes through it).
PROXY_PORT: Final = 15080
#: ``/metrics``, ``/healthz``, ``/readyz``. Not 15090: that is Envoy's Prometheus port in
#: every Istio pod, and two listeners on one port in one network namespace cannot both bind.
METRICS_PORT: Final = 15081
#: ``/fault`` (the fault in force, for people and tests on the node): bound to 127.0.0.1 only.
ADMIN_PORT: Final = 15082
PODINFO_VOLUME: Final = "harbinger-podinfo"
PODINFO_DIR: Final = "/etc/harbinger/podinfo"
ANNOTATIONS_FILE: Final = PODINFO_DIR + "/annotations"
#: Application port the proxy forwards to, when the pod does not say (annotation below).
DEFAULT_UPSTREAM_PORT: Final = 8080
#: What the proxy itself needs beside a fault's stress (its bodies stream: memory stays flat).
PROXY_CPU_CORES: Final = 0.25
PROXY_MEMORY_BYTES: Final = 64 * 2**20


@dataclass(frozen=True)
class SidecarLimits:
    """The most any fault may do in one pod, whatever its annotations ask. The defaults
    are the built-in caps a sidecar holds when it is given no flag."""

    #: A fault ends at most this long after the sidecar first reads it, whatever its expiry says.
    max_fault_seconds: float = 900.0
    max_delay_ms: float = 30_000.0
    max_cpu_cores: float = 2.0
    #: Below the sidecar container's own 128Mi limit, so stress never gets the sidecar killed.
    max_memory_bytes: int = 64 * 2**20
    #: A bandwidth limit never goes below this (bits/s): 1 bit/s would hold a response forever.
    min_bandwidth_bps: float = 64_000.0

    def __post_init__(self) -> None:
        checks = (("max_fault_seconds", self.max_fault_seconds, 1.0, 86_400.0),
                  ("max_delay_ms", self.max_delay_ms, 0.0, 120_000.0),
                  ("max_cpu_cores", self.max_cpu_cores, 0.0, 8.0),
                  ("max_memory_bytes", float(self.max_memory_bytes), 0.0, float(2**30)),
                  ("min_bandwidth_bps", self.min_bandwidth_bps, 1.0, 1e12))
        for name, value, low, high in checks:
            if not (math.isfinite(value) and low <= value <= high):
                raise InvalidInput(f"{value!r} is outside [{low:g}, {high:g}]", source=f"sidecar limit {name}")

    def flags(self) -> list[str]:
        return [f"--max-fault-seconds={self.max_fault_seconds:g}", f"--max-delay-ms={self.max_delay_ms:g}",
                f"--max-cpu={self.max_cpu_cores:g}", f"--max-memory={self.max_memory_bytes}",
                f"--min-bandwidth={self.min_bandwidth_bps:g}"]


def sidecar_args(upstream_port: int, limits: SidecarLimits | None = None) -> list[str]:
    return [
        "chaos", "sidecar",
        f"--listen=0.0.0.0:{PROXY_PORT}",
        f"--upstream=127.0.0.1:{upstream_port}",
        f"--annotations-file={ANNOTATIONS_FILE}",
        f"--metrics-port={METRICS_PORT}",
        f"--admin-port={ADMIN_PORT}",
        *(limits or SidecarLimits()).flags(),
    ]


def sidecar_container(image: str, upstream_port: int = DEFAULT_UPSTREAM_PORT,
                      limits: SidecarLimits | None = None) -> dict[str, Any]:
    """The container spec (camelCase, as in a Pod) of the chaos sidecar. Its CPU and memory
    limits cover the most stress its limits allow a fault (plus the proxy's own share), so a
    rehearsal never gets the sidecar throttled into a different experiment, or killed."""
    bounds = limits or SidecarLimits()
    cpu_limit = f"{math.ceil((bounds.max_cpu_cores + PROXY_CPU_CORES) * 1000)}m"
    memory_limit = f"{math.ceil((bounds.max_memory_bytes + PROXY_MEMORY_BYTES) / 2**20)}Mi"
    return {
        "name": contract.CHAOS_SIDECAR_NAME,
        "image": image,
        "command": ["harbinger"],
        "args": sidecar_args(upstream_port, limits),
        "ports": [
            {"name": "chaos-proxy", "containerPort": PROXY_PORT, "protocol": "TCP"},
            {"name": "chaos-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"cpu": cpu_limit, "memory": memory_limit}},
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True}],
    }


def podinfo_volume() -> dict[str, Any]:
    return {
        "name": PODINFO_VOLUME,
        "downwardAPI": {"items": [{"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]},
    }
