"""Istio: faults as ``http[].fault`` on the target's VirtualServices.

A VirtualService that routes the target's host is patched: its spec before the
experiment is kept in the ``harbinger.io/chaos-original`` annotation, and every step
rewrites the spec from that original, so the restore is the original, byte for byte.
Where no VirtualService routes the target, one is created (labelled
``harbinger.io/chaos-owned=created``) and deleted afterwards.

Writes are JSON patches that first ``test`` the resourceVersion they read, so a
concurrent edit makes the patch fail and be retried from a fresh read instead of being
overwritten.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from datetime import datetime
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.base import ORIGINAL_ANNOTATION, OWNED_CREATED, OWNED_PATCHED, FaultBackend
from chaos.backends.optin import require_namespace
from chaos.experiment import Experiment
from chaos.faults import Fault, fault_expired
from harbinger import contract
from harbinger.clock import SYSTEM_CLOCK, Clock, format_time
from harbinger.errors import HarbingerError
from harbinger.kube import read_json

log = logging.getLogger(__name__)

GROUP: Final = "networking.istio.io"
VERSION: Final = "v1"
PLURAL: Final = "virtualservices"
#: Pod label Istio's ``sourceLabels`` match uses to pick the caller of a call.
CALLER_LABEL: Final = contract.APP_NAME_LABEL
CONFLICT_RETRIES: Final = 5
OUR_ANNOTATIONS: Final = (ORIGINAL_ANNOTATION, contract.CHAOS_EXPIRES, contract.CHAOS_EXPERIMENT)

Spec = dict[str, Any]


def _escape(key: str) -> str:
    """A JSON-pointer path segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def fault_block(fault: Fault) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if fault.delay_ms is not None:
        block["delay"] = {"fixedDelay": f"{fault.delay_ms / 1000:g}s", "percentage": {"value": fault.delay_percent}}
    if fault.abort_status is not None:
        block["abort"] = {"httpStatus": fault.abort_status, "percentage": {"value": fault.abort_percent}}
    return block


def spec_with_fault(original: Spec, fault: Fault, caller: str | None) -> Spec:
    """``original`` with ``fault`` on every HTTP route, or, for one caller, on a copy of each route
    matched to that caller's pods and placed before it."""
    spec = copy.deepcopy(original)
    routes = spec.get("http")
    if not isinstance(routes, list) or not routes:
        raise HarbingerError("the VirtualService has no http routes, so HTTP faults cannot be injected")
    block = fault_block(fault)
    if caller is None:
        for route in routes:
            route["fault"] = copy.deepcopy(block)
        return spec
    scoped: list[dict[str, Any]] = []
    for route in routes:
        copy_ = copy.deepcopy(route)
        matches = copy_.get("match") or [{}]
        copy_["match"] = [{**m, "sourceLabels": {**(m.get("sourceLabels") or {}), CALLER_LABEL: caller}}
                          for m in matches]
        copy_["fault"] = copy.deepcopy(block)
        if "name" in copy_:
            copy_["name"] = f"{copy_['name']}-harbinger-chaos"
        scoped.extend([copy_, route])
    spec["http"] = scoped
    return spec


def routes_host(vs: dict[str, Any], service: str, namespace: str) -> bool:
    names = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.cluster.local"}
    return any(host in names for host in (vs.get("spec") or {}).get("hosts") or [])


class IstioBackend(FaultBackend):
    def __init__(self, experiment: Experiment, api: client.ApiClient) -> None:
        super().__init__(experiment)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.names: list[str] = []
        self.created: set[str] = set()

    @property
    def namespace(self) -> str:
        return self.experiment.namespace

    def describe_targets(self) -> list[str]:
        return [f"VirtualService {self.namespace}/{n}" + (" (created)" if n in self.created else "")
                for n in self.names]

    async def _get(self, name: str) -> dict[str, Any]:
        return await read_json(self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, _preload_content=False))

    async def _discover(self) -> None:
        await require_namespace(self.core, self.namespace, allow_pod_opt_in=False)
        items = (await read_json(self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, _preload_content=False))).get("items") or []
        ours = [vs for vs in items if routes_host(vs, self.experiment.target, self.namespace)]
        self.names = sorted(vs["metadata"]["name"] for vs in ours)
        # One that a dead run created is ours to keep changing and to delete, never to stash.
        self.created = {vs["metadata"]["name"] for vs in ours
                        if (vs["metadata"].get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) == OWNED_CREATED}

    async def apply(self, fault: Fault, expires: datetime) -> None:
        if not self.names:
            await self._discover()
        if not self.names:
            await self._create(fault, expires)
            return
        for name in self.names:
            await self._patch_with_retry(name, fault, expires)

    async def _create(self, fault: Fault, expires: datetime) -> None:
        target = self.experiment.target
        name = f"harbinger-chaos-{target}"[:253]
        original = {"hosts": [target], "http": [{"route": [{"destination": {"host": target}}]}]}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
            "metadata": {
                "name": name, "namespace": self.namespace,
                "labels": {contract.CHAOS_OWNED_LABEL: OWNED_CREATED},
                "annotations": {contract.CHAOS_EXPIRES: format_time(expires),
                                contract.CHAOS_EXPERIMENT: self.experiment.name},
            },
            "spec": spec_with_fault(original, fault, self.experiment.caller),
        }
        try:
            await self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            # One of ours left by a dead run (not yet expired) is adopted; anyone else's is refused.
            if exc.status != 409:
                raise
            existing = await self._get(name)
            if (existing["metadata"].get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) != OWNED_CREATED:
                raise HarbingerError(f"VirtualService {self.namespace}/{name} exists and is not chaos's own") from exc
            self.names, self.created = [name], {name}
            await self._patch_with_retry(name, fault, expires)
            return
        self.names = [name]
        self.created.add(name)

    async def _patch_with_retry(self, name: str, fault: Fault | None, expires: datetime | None) -> None:
        for attempt in range(CONFLICT_RETRIES):
            vs = await self._get(name)
            if name in self.created and fault is not None:
                original: Spec = {"hosts": [self.experiment.target],
                                  "http": [{"route": [{"destination": {"host": self.experiment.target}}]}]}
                ops = _created_ops(vs, spec_with_fault(original, fault, self.experiment.caller), expires)
            else:
                ops = _fault_ops(vs, fault, expires, self.experiment)
            try:
                await self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, ops)
                return
            except ApiException as exc:
                if exc.status not in (409, 422) or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("VirtualService %s/%s changed under us; retrying", self.namespace, name)
                await asyncio.sleep(0.05 * (attempt + 1))

    async def remove_all(self) -> int:
        restored = 0
        for name in list(self.names):
            try:
                if name in self.created:
                    await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
                else:
                    await self._patch_with_retry(name, None, None)
                restored += 1
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.names = []
        self.created.clear()
        return restored


def _created_ops(vs: dict[str, Any], spec: Spec, expires: datetime | None) -> list[dict[str, Any]]:
    """The next step's fault on a VirtualService chaos created itself (nothing to restore)."""
    annotations = dict(vs["metadata"].get("annotations") or {})
    if expires is not None:
        annotations[contract.CHAOS_EXPIRES] = format_time(expires)
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec", "value": spec},
            {"op": "add", "path": "/metadata/annotations", "value": annotations}]


def _fault_ops(vs: dict[str, Any], fault: Fault | None, expires: datetime | None,
               experiment: Experiment | None) -> list[dict[str, Any]]:
    """The JSON patch that puts ``fault`` on a VirtualService we did not create, or (``fault`` None)
    restores its original spec and metadata."""
    meta = vs["metadata"]
    annotations = dict(meta.get("annotations") or {})
    labels = dict(meta.get("labels") or {})
    stashed = annotations.get(ORIGINAL_ANNOTATION)
    # A stash from an earlier (crashed) run is the true original: never overwrite it.
    original: Spec = json.loads(stashed)["spec"] if stashed else vs.get("spec") or {}
    had = json.loads(stashed) if stashed else {"annotations": "annotations" in meta, "labels": "labels" in meta}
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    if fault is None:
        if not stashed:
            return []
        for key in OUR_ANNOTATIONS:
            annotations.pop(key, None)
        labels.pop(contract.CHAOS_OWNED_LABEL, None)
        ops.append({"op": "replace", "path": "/spec", "value": original})
    else:
        assert expires is not None and experiment is not None
        if not stashed:
            annotations[ORIGINAL_ANNOTATION] = json.dumps(
                {"spec": original, "annotations": had["annotations"], "labels": had["labels"]},
                sort_keys=True, separators=(",", ":"))
        annotations[contract.CHAOS_EXPIRES] = format_time(expires)
        annotations[contract.CHAOS_EXPERIMENT] = experiment.name
        labels[contract.CHAOS_OWNED_LABEL] = OWNED_PATCHED
        ops.append({"op": "replace" if "spec" in vs else "add", "path": "/spec",
                    "value": spec_with_fault(original, fault, experiment.caller)})
    for field, values in (("annotations", annotations), ("labels", labels)):
        if values or had[field]:
            ops.append({"op": "add", "path": f"/metadata/{field}", "value": values})
        elif field in meta:
            ops.append({"op": "remove", "path": f"/metadata/{field}"})
    return ops


async def sweep_virtual_services(api: client.ApiClient, *, everything: bool, clock: Clock = SYSTEM_CLOCK) -> int:
    """Restore (or delete, if chaos made them) VirtualServices left with faults: expired ones,
    or all of them."""
    custom = client.CustomObjectsApi(api)
    now = clock.now()
    try:
        listed = await read_json(custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=contract.CHAOS_OWNED_LABEL, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:  # no VirtualService CRD on this cluster: nothing to sweep
            return 0
        raise
    swept = 0
    for vs in listed.get("items") or []:
        meta = vs["metadata"]
        expired = fault_expired(meta.get("annotations"), now)
        if not (everything or expired):
            continue
        try:
            if (meta.get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) == OWNED_CREATED:
                await custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
            else:
                ops = _fault_ops(vs, None, None, None)
                if ops:
                    await custom.patch_namespaced_custom_object(
                        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], ops)
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                raise
            continue  # gone, or changed since we listed: the next sweep sees it again
        log.info("swept chaos fault from VirtualService %s/%s", meta["namespace"], meta["name"])
        swept += 1
    return swept
