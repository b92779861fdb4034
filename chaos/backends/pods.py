"""The chaos sidecar on a cluster: a fault is a set of ``harbinger.io/chaos-*`` annotations on
the target's pods, which the kubelet mirrors into each sidecar's annotations file.

Each patched pod also gets ``harbinger.io/chaos-owned=patched`` and, in
``harbinger.io/chaos-original``, the values the fault keys had before, so that a restore
(now, or by a later sweep) puts back exactly what was there.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.base import ORIGINAL_ANNOTATION, OWNED_PATCHED, FaultBackend
from chaos.backends.optin import chaos_allowed, require_namespace
from chaos.experiment import Experiment
from chaos.faults import FAULT_KEYS, ActiveFault, Fault, fault_expired
from harbinger import contract
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.errors import HarbingerError
from harbinger.kube import read_json

log = logging.getLogger(__name__)


def _is_live(pod: dict[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed")


class PodAnnotationBackend(FaultBackend):
    def __init__(self, experiment: Experiment, api: client.ApiClient) -> None:
        super().__init__(experiment)
        self.core = client.CoreV1Api(api)
        self.pods: list[str] = []

    def describe_targets(self) -> list[str]:
        return [f"pod {self.experiment.namespace}/{name}" for name in self.pods]

    async def _select(self) -> list[str]:
        labels = await require_namespace(self.core, self.experiment.namespace, allow_pod_opt_in=True)
        items = (await read_json(self.core.list_namespaced_pod(self.experiment.namespace, _preload_content=False))
                 ).get("items") or []
        names = sorted(
            p["metadata"]["name"] for p in items
            if _is_live(p) and contract.service_of(p["metadata"].get("labels"), p["metadata"].get("annotations"))
            == self.experiment.target
            and chaos_allowed(self.experiment.namespace, labels, p["metadata"].get("annotations"))
        )
        if not names:
            raise HarbingerError(f"no running pods of service {self.experiment.target!r} that opted into chaos "
                                 f"({contract.CHAOS}={contract.CHAOS_ENABLED}) in namespace "
                                 f"{self.experiment.namespace!r}")
        return names[: self.experiment.pods] if self.experiment.pods else names

    async def apply(self, fault: Fault, expires: datetime) -> None:
        if not self.pods:
            self.pods = await self._select()
        active = ActiveFault(fault, expires, self.experiment.name)
        for name in self.pods:
            try:
                pod = await read_json(self.core.read_namespaced_pod(name, self.experiment.namespace,
                                                                _preload_content=False))
            except ApiException as exc:
                if exc.status == 404:  # the pod went away mid-experiment: nothing to put a fault on
                    continue
                raise
            annotations = pod["metadata"].get("annotations") or {}
            patch_annotations: dict[str, str | None] = dict(active.annotations())
            if ORIGINAL_ANNOTATION not in annotations:
                original = {key: annotations.get(key) for key in FAULT_KEYS}
                patch_annotations[ORIGINAL_ANNOTATION] = json.dumps(original, sort_keys=True)
            await self.core.patch_namespaced_pod(name, self.experiment.namespace, {"metadata": {
                "labels": {contract.CHAOS_OWNED_LABEL: OWNED_PATCHED}, "annotations": patch_annotations}})

    async def remove_all(self) -> int:
        restored = 0
        for name in self.pods:
            if await restore_pod(self.core, self.experiment.namespace, name):
                restored += 1
        return restored


async def restore_pod(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    """Put a pod's fault keys back as they were; False when the pod is gone."""
    try:
        pod = await read_json(core.read_namespaced_pod(name, namespace, _preload_content=False))
        annotations = pod["metadata"].get("annotations") or {}
        try:
            original: dict[str, str | None] = json.loads(annotations.get(ORIGINAL_ANNOTATION) or "{}")
        except json.JSONDecodeError:
            original = {}
        patch: dict[str, str | None] = {key: original.get(key) for key in FAULT_KEYS}
        patch[ORIGINAL_ANNOTATION] = None
        await core.patch_namespaced_pod(name, namespace, {"metadata": {
            "labels": {contract.CHAOS_OWNED_LABEL: None}, "annotations": patch}})
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


async def sweep_pods(api: client.ApiClient, *, everything: bool, clock: Clock = SYSTEM_CLOCK) -> int:
    """Restore pods the chaos controller left patched: expired ones, or all of them."""
    core = client.CoreV1Api(api)
    now = clock.now()
    listed = await read_json(core.list_pod_for_all_namespaces(
        label_selector=contract.CHAOS_OWNED_LABEL, _preload_content=False))
    swept = 0
    for pod in listed.get("items") or []:
        meta = pod["metadata"]
        expired = fault_expired(meta.get("annotations"), now)
        if (everything or expired) and await restore_pod(core, meta["namespace"], meta["name"]):
            log.info("swept chaos fault from pod %s/%s", meta["namespace"], meta["name"])
            swept += 1
    return swept
