"""The chaos sidecar's container, as the webhook injects it and ``harbinger chaos sidecar`` runs.

Defined here, not in ``webhooks/`` or ``chaos/``, because it is a contract between the
two: the webhook adds this container and a downward-API volume with the pod's
annotations; the sidecar reads its faults from that file (the kubelet refreshes it
when the chaos controller changes the pod's ``harbinger.io/chaos-*`` annotations).
"""

from __future__ import annotations

from typing import Any, Final

from harbinger import contract

PROXY_PORT: Final = 15080
METRICS_PORT: Final = 15090
PODINFO_VOLUME: Final = "harbinger-podinfo"
PODINFO_DIR: Final = "/etc/harbinger/podinfo"
ANNOTATIONS_FILE: Final = PODINFO_DIR + "/annotations"
#: Application port the proxy forwards to, when the pod does not say (annotation below).
DEFAULT_UPSTREAM_PORT: Final = 8080


def sidecar_args(upstream_port: int) -> list[str]:
    return [
        "chaos", "sidecar",
        f"--listen=0.0.0.0:{PROXY_PORT}",
        f"--upstream=127.0.0.1:{upstream_port}",
        f"--annotations-file={ANNOTATIONS_FILE}",
        f"--metrics-port={METRICS_PORT}",
    ]


def sidecar_container(image: str, upstream_port: int = DEFAULT_UPSTREAM_PORT) -> dict[str, Any]:
    """The container spec (camelCase, as in a Pod) of the chaos sidecar."""
    return {
        "name": contract.CHAOS_SIDECAR_NAME,
        "image": image,
        "command": ["harbinger"],
        "args": sidecar_args(upstream_port),
        "ports": [
            {"name": "chaos-proxy", "containerPort": PROXY_PORT, "protocol": "TCP"},
            {"name": "chaos-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
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
