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
from chaos.backends.sweeping import Sweep
from chaos.experiment import Experiment
from chaos.faults import FAULT_KEYS, ActiveFault, Fault, fault_expired
from harbinger import contract
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.errors import HarbingerError, InvalidInput
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
            if not _valid_stash(annotations.get(ORIGINAL_ANNOTATION)):
                # No stash yet, or one chaos did not write (a pod's author can write any
                # annotation): what the pod carries now is what goes back.
                original = {key: annotations.get(key) for key in FAULT_KEYS}
                patch_annotations[ORIGINAL_ANNOTATION] = json.dumps(original, sort_keys=True)
            await self.core.patch_namespaced_pod(name, self.experiment.namespace, {"metadata": {
                "labels": {contract.CHAOS_OWNED_LABEL: OWNED_PATCHED}, "annotations": patch_annotations}})

    async def remove_all(self) -> int:
        restored = 0
        for name in self.pods:
            # force: this run's own fault comes off even if someone broke the stash meanwhile.
            if await restore_pod(self.core, self.experiment.namespace, name, force=True):
                restored += 1
        return restored


def _valid_stash(text: str | None) -> bool:
    if text is None:
        return False
    try:
        parse_pod_stash(text)
    except InvalidInput:
        return False
    return True


def parse_pod_stash(text: str | None) -> dict[str, str | None]:
    """The values the fault keys had before chaos patched the pod; InvalidInput when the
    stash is not what chaos writes (a JSON object of those keys to strings or null)."""
    if text is None:
        return {}  # labelled but never stashed: nothing to put back, the fault keys just go
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} is not JSON", source="pod") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} is a JSON {type(data).__name__}, not an object", source="pod")
    unknown = set(data) - set(FAULT_KEYS)
    if unknown:
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} has keys chaos never stashes: {sorted(unknown)[:5]}", source="pod")
    if not all(v is None or isinstance(v, str) for v in data.values()):
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} has values that are not strings", source="pod")
    return data


async def restore_pod(core: client.CoreV1Api, namespace: str, name: str, *, force: bool = False) -> bool:
    """Put a pod's fault keys back as they were; False when the pod is gone. When its stash
    cannot be read: InvalidInput and nothing changed, or with ``force`` the fault keys removed."""
    try:
        pod = await read_json(core.read_namespaced_pod(name, namespace, _preload_content=False))
        annotations = pod["metadata"].get("annotations") or {}
        try:
            original = parse_pod_stash(annotations.get(ORIGINAL_ANNOTATION))
        except InvalidInput as exc:
            if not force:
                raise
            log.warning("pod %s/%s: %s; removing the fault keys", namespace, name, exc.message)
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
    """Restore pods the chaos controller left patched: expired ones, or all of them. Only in
    opted-in namespaces; a pod that cannot be restored is skipped and reported, the rest
    are still swept."""
    core = client.CoreV1Api(api)
    sweep = Sweep(api, clock)
    now = clock.now()
    listed = await read_json(core.list_pod_for_all_namespaces(
        label_selector=contract.CHAOS_OWNED_LABEL, _preload_content=False))
    for pod in listed.get("items") or []:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        try:
            if not await sweep.may_touch(namespace):
                continue
            if not (everything or fault_expired(meta.get("annotations"), now)):
                continue
            if await restore_pod(core, namespace, name):
                sweep.restored("Pod", namespace, name)
        except InvalidInput as exc:
            await sweep.skip(pod, "Pod", "v1", "bad-stash", exc.message)
        except Exception as exc:  # one object's failure never ends the sweep of the others
            await sweep.skip(pod, "Pod", "v1", "error", f"{type(exc).__name__}: {exc}"[:300])
    return sweep.swept
