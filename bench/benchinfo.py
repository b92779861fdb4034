"""What every benchmark records about where it ran, and the one realistic pod the
webhook and extender benchmarks send (a Deployment's pod as the apiserver has it)."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from harbinger import contract


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def machine(packages: Iterable[str], **extra: Any) -> dict[str, Any]:
    """Platform, CPUs, Python, the load average at the start (a 2-core machine shared with
    anything else measures that too), and the versions of ``packages``."""
    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {p: version(p) for p in packages},
        **extra,
    }


def realistic_pod(*, annotations: dict[str, str] | None = None, memory_limit: str = "512Mi") -> dict[str, Any]:
    """A pod of Deployment ``cart`` at CREATE, with the fields a real one carries (env,
    probes, tolerations), so that parsing costs what it costs in production."""
    metadata_: dict[str, Any] = {
        "generateName": "cart-7d9f8-", "namespace": "shop",
        "labels": {contract.APP_NAME_LABEL: "cart", "pod-template-hash": "7d9f8"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-7d9f8",
                             "uid": "0b5e", "controller": True, "blockOwnerDeletion": True}],
    }
    if annotations is not None:
        metadata_["annotations"] = annotations
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": metadata_,
        "spec": {
            "containers": [{
                "name": "cart", "image": "registry.example/shop/cart:1.42.0",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": f"SETTING_{i}", "value": "x" * 24} for i in range(12)],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": memory_limit}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "schedulerName": "default-scheduler", "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
        },
    }
