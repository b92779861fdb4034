"""Istio: faults as ``http[].fault`` on the target's VirtualServices.

A VirtualService that routes the target's host is patched, and only where Harbinger
injects: the ``fault`` of each HTTP route (or, for a fault on one caller, a copy of each
route matched to that caller's pods, placed before it). ``harbinger.io/chaos-original``
keeps what those routes' faults were before, which copies were added, and the fault
block written last; removal puts back exactly those fields, and a fault someone else
wrote meanwhile, or any other edit a team made mid-experiment, stays as they left it.
Where no VirtualService routes the target, one is created (labelled
``harbinger.io/chaos-owned=created``) and deleted afterwards.

Writes are JSON patches on those fields that first ``test`` the resourceVersion they
read, so a concurrent edit makes the patch fail and be recomputed from a fresh read
(route indices may have moved) instead of landing on the wrong route.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from chaos.backends.base import ORIGINAL_ANNOTATION, OWNED_CREATED, OWNED_PATCHED, FaultBackend
from chaos.backends.optin import require_namespace
from chaos.backends.sweeping import Sweep
from chaos.experiment import Experiment
from chaos.faults import Fault, fault_expired
from harbinger import contract
from harbinger.clock import SYSTEM_CLOCK, Clock, format_time
from harbinger.errors import HarbingerError, InvalidInput
from harbinger.kube import read_json

log = logging.getLogger(__name__)

GROUP: Final = "networking.istio.io"
VERSION: Final = "v1"
PLURAL: Final = "virtualservices"
#: Pod label Istio's ``sourceLabels`` match uses to pick the caller of a call.
CALLER_LABEL: Final = contract.APP_NAME_LABEL
CONFLICT_RETRIES: Final = 5
#: Name suffix of the caller-scoped copies of routes that chaos adds.
COPY_SUFFIX: Final = "-harbinger-chaos"
STASH_VERSION: Final = 2
OUR_ANNOTATIONS: Final = (ORIGINAL_ANNOTATION, contract.CHAOS_EXPIRES, contract.CHAOS_EXPERIMENT)

Spec = dict[str, Any]


def fault_block(fault: Fault) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if fault.delay_ms is not None:
        block["delay"] = {"fixedDelay": f"{fault.delay_ms / 1000:g}s", "percentage": {"value": fault.delay_percent}}
    if fault.abort_status is not None:
        block["abort"] = {"httpStatus": fault.abort_status, "percentage": {"value": fault.abort_percent}}
    return block


def _copy_name(route: dict[str, Any], index: int) -> str:
    return f"{route.get('name') or f'route-{index}'}{COPY_SUFFIX}"


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
    spec["http"] = [r for i, route in enumerate(routes) for r in (_scoped_copy(route, i, block, caller), route)]
    return spec


def _scoped_copy(route: dict[str, Any], index: int, block: dict[str, Any], caller: str) -> dict[str, Any]:
    """A copy of ``route`` that matches only ``caller``'s pods and carries the fault."""
    copy_ = copy.deepcopy(route)
    matches = copy_.get("match") or [{}]
    copy_["match"] = [{**m, "sourceLabels": {**(m.get("sourceLabels") or {}), CALLER_LABEL: caller}}
                      for m in matches if isinstance(m, dict)] or [{"sourceLabels": {CALLER_LABEL: caller}}]
    copy_["fault"] = copy.deepcopy(block)
    copy_["name"] = _copy_name(route, index)
    return copy_


def routes_host(vs: dict[str, Any], service: str, namespace: str) -> bool:
    names = {service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.cluster.local"}
    return any(host in names for host in (vs.get("spec") or {}).get("hosts") or [])


@dataclass
class RouteMark:
    """A route chaos put its fault on: found again by its name, or (unnamed) by its index."""

    name: str | None
    index: int
    #: The route's own fault before chaos's (None: it had none).
    fault: dict[str, Any] | None


@dataclass
class Stash:
    """``harbinger.io/chaos-original`` on a VirtualService chaos patched."""

    #: Whether the object had annotations / labels at all before (so removal leaves none).
    annotations: bool
    labels: bool
    #: The routes that carry chaos's fault (a fault on every caller).
    routes: list[RouteMark] = field(default_factory=list)
    #: The caller-scoped copies chaos added, by name (a fault on one caller).
    copies: list[str] = field(default_factory=list)
    #: The fault block chaos wrote last; a route whose fault differs was changed by someone
    #: else, and keeps their fault. None (a stash of an older Harbinger): any fault is chaos's.
    injected: dict[str, Any] | None = None

    def dumps(self) -> str:
        return json.dumps({"version": STASH_VERSION, "annotations": self.annotations, "labels": self.labels,
                           "routes": [{"name": r.name, "index": r.index, "fault": r.fault} for r in self.routes],
                           "copies": self.copies, "injected": self.injected},
                          sort_keys=True, separators=(",", ":"))


def parse_stash(text: str, current: Spec) -> Stash:
    """The stash, or InvalidInput naming what is wrong with it. A stash of an older Harbinger
    (the whole spec before the experiment) is read as the routes and copies it implies."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} is not JSON", source="VirtualService") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} is a JSON {type(data).__name__}, not an object",
                           source="VirtualService")
    annotations, labels = data.get("annotations"), data.get("labels")
    if not isinstance(annotations, bool) or not isinstance(labels, bool):
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} lacks the annotations/labels flags", source="VirtualService")
    if data.get("version") == STASH_VERSION:
        try:
            routes = [RouteMark(name=_opt_str(r["name"]), index=_index(r["index"]), fault=_opt_dict(r["fault"]))
                      for r in data["routes"]]
            copies = [c for c in data["copies"] if isinstance(c, str) and c.endswith(COPY_SUFFIX)]
            if len(copies) != len(data["copies"]):
                raise ValueError("copies")
            return Stash(annotations, labels, routes, copies, _opt_dict(data.get("injected")))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{ORIGINAL_ANNOTATION} is malformed ({type(exc).__name__}: {exc})",
                               source="VirtualService") from exc
    try:
        return _legacy_stash(data, current, annotations, labels)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} is malformed ({type(exc).__name__}: {exc})",
                           source="VirtualService") from exc


def _legacy_stash(data: dict[str, Any], current: Spec, annotations: bool, labels: bool) -> Stash:
    """A stash of an older Harbinger (the whole spec before the experiment), as the routes it
    faulted or the copies it added."""
    original = data.get("spec")
    if not isinstance(original, dict) or not isinstance(original.get("http", []), list):
        raise InvalidInput(f"{ORIGINAL_ANNOTATION} has neither a version nor a spec", source="VirtualService")
    old_routes = [r for r in original.get("http") or [] if isinstance(r, dict)]
    names = {r.get("name") for r in old_routes}
    http = _http({"spec": current})
    copies = [r["name"] for r in http if isinstance(r, dict) and isinstance(r.get("name"), str)
              and r["name"].endswith(COPY_SUFFIX) and r["name"] not in names]
    routes = [] if copies else [RouteMark(_opt_str(r.get("name")), i, _opt_dict(r.get("fault")))
                                for i, r in enumerate(old_routes)]
    return Stash(annotations, labels, routes, copies, None)


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{value!r} is not a name")
    return value


def _opt_dict(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{type(value).__name__} is not a fault block")
    return value


def _index(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10_000:
        raise ValueError(f"{value!r} is not a route index")
    return value


def _http(vs: dict[str, Any]) -> list[Any]:
    routes = (vs.get("spec") or {}).get("http")
    return routes if isinstance(routes, list) else []


def _locate(http: list[Any], mark: RouteMark) -> int | None:
    if mark.name is not None:
        return next((i for i, r in enumerate(http) if isinstance(r, dict) and r.get("name") == mark.name), None)
    if mark.index < len(http) and isinstance(http[mark.index], dict) and "name" not in http[mark.index]:
        return mark.index
    return None


def _copy_indices(http: list[Any], names: list[str]) -> list[int]:
    wanted = set(names)
    return [i for i, r in enumerate(http) if isinstance(r, dict) and r.get("name") in wanted]


def _metadata_ops(meta: dict[str, Any], annotations: dict[str, str], labels: dict[str, str],
                  had: Stash) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for name, values, existed in (("annotations", annotations, had.annotations), ("labels", labels, had.labels)):
        if values or existed:
            ops.append({"op": "add", "path": f"/metadata/{name}", "value": values})
        elif name in meta:
            ops.append({"op": "remove", "path": f"/metadata/{name}"})
    return ops


def inject_ops(vs: dict[str, Any], fault: Fault, expires: datetime, experiment: Experiment) -> list[dict[str, Any]]:
    """The JSON patch that puts ``fault`` on a VirtualService chaos did not create: on the
    ``fault`` field of each route it marked (first time: every route), or on the caller-scoped
    copies (first time: added). Nothing else in the spec is written."""
    meta = vs["metadata"]
    annotations = dict(meta.get("annotations") or {})
    labels = dict(meta.get("labels") or {})
    http = _http(vs)
    if not http:
        raise HarbingerError("the VirtualService has no http routes, so HTTP faults cannot be injected")
    block = fault_block(fault)
    stashed = annotations.get(ORIGINAL_ANNOTATION)
    try:
        stash = parse_stash(stashed, vs.get("spec") or {}) if stashed else None
    except InvalidInput as exc:
        # Not a stash chaos wrote (anyone who can edit the object can write it): start afresh.
        log.warning("VirtualService %s/%s: %s; stashing its current routes", meta.get("namespace"),
                    meta.get("name"), exc.message)
        stash = None
    if stash is None:
        stash = Stash("annotations" in meta, "labels" in meta)
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    caller = experiment.caller
    if caller is None:
        if not stash.routes:
            stash.routes = [RouteMark(r["name"] if isinstance(r.get("name"), str) else None, i,
                                      r["fault"] if isinstance(r.get("fault"), dict) else None)
                            for i, r in enumerate(http) if isinstance(r, dict)]
        for mark in stash.routes:
            index = _locate(http, mark)
            if index is not None:
                ops.append({"op": "add", "path": f"/spec/http/{index}/fault", "value": block})
    else:
        present = _copy_indices(http, stash.copies)
        if present:
            ops += [{"op": "add", "path": f"/spec/http/{i}/fault", "value": block} for i in present]
        else:
            copies = [(i, _scoped_copy(r, i, block, caller)) for i, r in enumerate(http) if isinstance(r, dict)]
            stash.copies = [c["name"] for _, c in copies]
            # Descending, so each insertion leaves the indices of the ones still to come as read.
            ops += [{"op": "add", "path": f"/spec/http/{i}", "value": c} for i, c in reversed(copies)]
    stash.injected = block
    annotations[ORIGINAL_ANNOTATION] = stash.dumps()
    annotations[contract.CHAOS_EXPIRES] = format_time(expires)
    annotations[contract.CHAOS_EXPERIMENT] = experiment.name
    labels[contract.CHAOS_OWNED_LABEL] = OWNED_PATCHED
    return ops + _metadata_ops(meta, annotations, labels, stash)


def restore_ops(vs: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that takes chaos's fault off a VirtualService it patched: each marked
    route's fault back to what it was (unless someone else changed it since), its copies
    removed, its annotations and label gone. Empty when there is nothing of chaos's on it;
    InvalidInput when the stash cannot be read (then nothing is changed)."""
    meta = vs["metadata"]
    annotations = dict(meta.get("annotations") or {})
    labels = dict(meta.get("labels") or {})
    stashed = annotations.get(ORIGINAL_ANNOTATION)
    if stashed is None:
        if contract.CHAOS_OWNED_LABEL not in labels:
            return []
        stash = Stash(annotations=bool(set(annotations) - set(OUR_ANNOTATIONS)), labels=len(labels) > 1)
    else:
        stash = parse_stash(stashed, vs.get("spec") or {})
    http = _http(vs)
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}]
    for mark in stash.routes:
        index = _locate(http, mark)
        if index is None:
            continue
        current = http[index].get("fault")
        if current is None or (stash.injected is not None and current != stash.injected):
            continue  # someone else's fault now, or none: theirs to keep
        if mark.fault is None:
            ops.append({"op": "remove", "path": f"/spec/http/{index}/fault"})
        else:
            ops.append({"op": "add", "path": f"/spec/http/{index}/fault", "value": mark.fault})
    ops += [{"op": "remove", "path": f"/spec/http/{i}"} for i in reversed(_copy_indices(http, stash.copies))]
    for key in OUR_ANNOTATIONS:
        annotations.pop(key, None)
    labels.pop(contract.CHAOS_OWNED_LABEL, None)
    return ops + _metadata_ops(meta, annotations, labels, stash)


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

    async def _discover(self) -> None:
        await require_namespace(self.core, self.namespace, allow_pod_opt_in=False)
        items = (await read_json(self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, _preload_content=False))).get("items") or []
        ours = [vs for vs in items if routes_host(vs, self.experiment.target, self.namespace)]
        self.names = sorted(vs["metadata"]["name"] for vs in ours)
        # One that a dead run created is ours to keep changing and to delete, never to stash.
        self.created = {vs["metadata"]["name"] for vs in ours
                        if (vs["metadata"].get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) == OWNED_CREATED}

    def _created_spec(self, fault: Fault) -> Spec:
        target = self.experiment.target
        return spec_with_fault({"hosts": [target], "http": [{"route": [{"destination": {"host": target}}]}]},
                               fault, self.experiment.caller)

    async def apply(self, fault: Fault, expires: datetime) -> None:
        if not self.names:
            await self._discover()
        if not self.names:
            await self._create(fault, expires)
            return
        for name in self.names:
            if name in self.created:
                await _patch_with_retry(self.custom, self.namespace, name,
                                        lambda vs: _created_ops(vs, self._created_spec(fault), expires))
            else:
                await _patch_with_retry(self.custom, self.namespace, name,
                                        lambda vs: inject_ops(vs, fault, expires, self.experiment))

    async def _create(self, fault: Fault, expires: datetime) -> None:
        name = f"harbinger-chaos-{self.experiment.target}"[:253]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualService",
            "metadata": {
                "name": name, "namespace": self.namespace,
                "labels": {contract.CHAOS_OWNED_LABEL: OWNED_CREATED},
                "annotations": {contract.CHAOS_EXPIRES: format_time(expires),
                                contract.CHAOS_EXPERIMENT: self.experiment.name},
            },
            "spec": self._created_spec(fault),
        }
        try:
            await self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            # One of ours left by a dead run (not yet expired) is adopted; anyone else's is refused.
            if exc.status != 409:
                raise
            existing = await _get(self.custom, self.namespace, name)
            if (existing["metadata"].get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) != OWNED_CREATED:
                raise HarbingerError(f"VirtualService {self.namespace}/{name} exists and is not chaos's own") from exc
            self.names, self.created = [name], {name}
            await _patch_with_retry(self.custom, self.namespace, name,
                                    lambda vs: _created_ops(vs, self._created_spec(fault), expires))
            return
        self.names = [name]
        self.created.add(name)

    async def remove_all(self) -> int:
        restored = 0
        for name in list(self.names):
            try:
                if name in self.created:
                    await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
                else:
                    await _patch_with_retry(self.custom, self.namespace, name, _restore_or_strip)
                restored += 1
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.names = []
        self.created.clear()
        return restored


def _restore_or_strip(vs: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's own removal: when someone broke the stash meanwhile, chaos's marks still come
    off (the routes' faults are left, as the stash no longer says which are chaos's)."""
    try:
        return restore_ops(vs)
    except InvalidInput as exc:
        meta = vs["metadata"]
        log.error("VirtualService %s/%s: %s; removing chaos's marks only", meta.get("namespace"), meta.get("name"),
                  exc.message)
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in OUR_ANNOTATIONS}
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != contract.CHAOS_OWNED_LABEL}
        return [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
                *_metadata_ops(meta, annotations, labels, Stash(bool(annotations), bool(labels)))]


async def _get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return await read_json(custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))


async def _patch_with_retry(custom: client.CustomObjectsApi, namespace: str, name: str,
                            make_ops: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> bool:
    """Read, compute the patch from what was read, apply it; on a conflict (the resourceVersion
    test failed: someone edited it), again from a fresh read. False when there was nothing to do."""
    for attempt in range(CONFLICT_RETRIES):
        ops = make_ops(await _get(custom, namespace, name))
        if len(ops) <= 1:  # the resourceVersion test alone
            return False
        try:
            await custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, ops)
            return True
        except ApiException as exc:
            if exc.status not in (409, 422) or attempt == CONFLICT_RETRIES - 1:
                raise
            log.info("VirtualService %s/%s changed under us; retrying", namespace, name)
            await asyncio.sleep(0.05 * (attempt + 1))
    return False


def _created_ops(vs: dict[str, Any], spec: Spec, expires: datetime | None) -> list[dict[str, Any]]:
    """The next step's fault on a VirtualService chaos created itself (nothing to restore)."""
    annotations = dict(vs["metadata"].get("annotations") or {})
    if expires is not None:
        annotations[contract.CHAOS_EXPIRES] = format_time(expires)
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": vs["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec", "value": spec},
            {"op": "add", "path": "/metadata/annotations", "value": annotations}]


async def sweep_virtual_services(api: client.ApiClient, *, everything: bool, clock: Clock = SYSTEM_CLOCK) -> int:
    """Restore (or delete, if chaos made them) VirtualServices left with faults: expired ones,
    or all of them. Only in opted-in namespaces; one that cannot be restored (its stash does
    not parse, the apiserver refuses) is skipped and reported, the others are still swept."""
    custom = client.CustomObjectsApi(api)
    sweep = Sweep(api, clock)
    now = clock.now()
    try:
        listed = await read_json(custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=contract.CHAOS_OWNED_LABEL, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:  # no VirtualService CRD on this cluster: nothing to sweep
            return 0
        raise
    for vs in listed.get("items") or []:
        meta = vs.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        try:
            if not await sweep.may_touch(namespace):
                continue
            if not (everything or fault_expired(meta.get("annotations"), now)):
                continue
            if (meta.get("labels") or {}).get(contract.CHAOS_OWNED_LABEL) == OWNED_CREATED:
                await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                sweep.restored("VirtualService", namespace, name)
            elif await _patch_with_retry(custom, namespace, name, restore_ops):
                sweep.restored("VirtualService", namespace, name)
        except InvalidInput as exc:
            await sweep.skip(vs, "VirtualService", f"{GROUP}/{VERSION}", "bad-stash", exc.message)
        except ApiException as exc:
            if exc.status == 404:
                continue  # gone since the list
            await sweep.skip(vs, "VirtualService", f"{GROUP}/{VERSION}", "api-error",
                             f"HTTP {exc.status} {exc.reason}"[:300])
        except Exception as exc:  # one object's failure never ends the sweep of the others
            await sweep.skip(vs, "VirtualService", f"{GROUP}/{VERSION}", "error", f"{type(exc).__name__}: {exc}"[:300])
    return sweep.swept
