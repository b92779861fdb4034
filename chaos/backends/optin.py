"""Chaos touches only what teams opted into: a namespace labelled ``harbinger.io/enabled=true``
(never a protected one) and, for chaos, ``harbinger.io/chaos=enabled`` on the namespace or
on the pod (where the webhook copies a workload's opt-in)."""

from __future__ import annotations

from kubernetes_asyncio import client

from harbinger import contract
from harbinger.errors import InvalidInput


async def namespace_labels(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    found = await core.read_namespace(namespace)
    return dict(found.metadata.labels or {})


def chaos_allowed(namespace: str, labels: dict[str, str], pod_annotations: dict[str, str] | None = None) -> bool:
    if not contract.is_opted_in(namespace, labels):
        return False
    enabled = contract.CHAOS_ENABLED
    return labels.get(contract.CHAOS) == enabled or (pod_annotations or {}).get(contract.CHAOS) == enabled


async def require_namespace(core: client.CoreV1Api, namespace: str, *, allow_pod_opt_in: bool) -> dict[str, str]:
    """The namespace's labels, or InvalidInput when chaos may not run there at all."""
    labels = await namespace_labels(core, namespace)
    if not contract.is_opted_in(namespace, labels):
        raise InvalidInput(f"namespace {namespace!r} is not opted in ({contract.ENABLED_LABEL}="
                           f"{contract.ENABLED_VALUE}) or is protected; chaos will not touch it", source="namespace")
    if not allow_pod_opt_in and labels.get(contract.CHAOS) != contract.CHAOS_ENABLED:
        raise InvalidInput(f"namespace {namespace!r} has not opted into chaos ({contract.CHAOS}="
                           f"{contract.CHAOS_ENABLED})", source="namespace")
    return labels
