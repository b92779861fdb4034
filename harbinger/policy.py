"""HarbingerPolicy (harbinger.io/v1alpha1): a namespace's capacity settings, as an API object
the apiserver checks when it is applied, instead of a JSON annotation checked only when the
planner runs.

One policy without ``spec.service`` sets the defaults of every service in its namespace; one
with ``spec.service`` sets that service's, field by field over the namespace's defaults; a
``ClusterHarbingerPolicy`` (the platform team's) sets the defaults under both, for every
opted-in namespace.
``spec.capacity`` holds :class:`harbinger.profile.CapacityProfile`'s fields in camelCase; its
schema in the CRD is generated from that model (``hack/crds.py``), so that what the apiserver
accepts is exactly what the components accept. Two policies for the same service (or two
namespace defaults) are a mistake the planner reports; the one whose name sorts first is used.

What a service is planned with, first match wins field by field: its policy, its namespace's
policy, the cluster's policy, the ``harbinger.io/capacity-profile`` annotation (deprecated: read only when no policy
applies, with a warning), the planner's ``--profiles`` file, the documented defaults.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from harbinger import contract
from harbinger.crd import camel, custom_resource_definition, model_properties, number_text
from harbinger.errors import InvalidInput
from harbinger.kube import read_json
from harbinger.profile import CapacityProfile

log = logging.getLogger(__name__)

POLICY_KIND = "HarbingerPolicy"
POLICIES = "harbingerpolicies"
#: The platform team's defaults for every opted-in namespace (cluster-scoped, no service).
CLUSTER_POLICY_KIND = "ClusterHarbingerPolicy"
CLUSTER_POLICIES = "clusterharbingerpolicies"


#: ``spec.capacity`` key -> CapacityProfile field.
SNAKE = {camel(name): name for name in CapacityProfile.model_fields}

#: The chaos fault kinds (chaos.experiment.FaultKind's values; a test keeps them equal).
ChaosKind = Literal["latency", "error", "cpu", "memory", "bandwidth", "dependency-failure"]


class ChaosLimits(BaseModel):
    """What rehearsals may do to a namespace or one service. Every layer (the cluster's, the
    namespace's, the service's) is a bound: the most restrictive value of each field wins, so
    a team can tighten what the platform allows and never loosen it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: false: no rehearsal runs here, whatever the namespace's labels say.
    enabled: bool = True
    #: The fault kinds rehearsals may use; empty: every kind.
    kinds: list[ChaosKind] = Field(default_factory=list, max_length=6)
    #: The highest share of requests a step may delay or abort, in percent.
    max_request_percent: float = Field(100.0, gt=0, le=100, allow_inf_nan=False)
    #: The longest a step may be held, in seconds; empty: no bound beyond the controller's.
    max_dwell_seconds: float | None = Field(None, gt=0, le=86400, allow_inf_nan=False)
    #: The most pods a resource or dependency fault may touch; empty: no bound.
    max_pods: int | None = Field(None, ge=1, le=10_000)

    def tightened(self, other: ChaosLimits) -> ChaosLimits:
        def least(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        kinds = ([k for k in self.kinds if k in other.kinds] if self.kinds and other.kinds
                 else list(self.kinds or other.kinds))
        pods = least(self.max_pods, other.max_pods)
        return ChaosLimits(enabled=self.enabled and other.enabled, kinds=kinds,
                           max_request_percent=min(self.max_request_percent, other.max_request_percent),
                           max_dwell_seconds=least(self.max_dwell_seconds, other.max_dwell_seconds),
                           max_pods=None if pods is None else int(pods))

    def refusals(self, *, kind: str, request_percents: Iterable[float], dwell_seconds: float,
                 pods: int | None, pod_faults: bool) -> list[str]:
        """What a rehearsal would do beyond these limits (empty: nothing). ``pods`` (None: every
        pod of the target) counts only for faults on pods (``pod_faults``: resource and
        dependency faults), not for faults on a share of requests."""
        found = []
        if not self.enabled:
            return ["chaos is disabled here (spec.chaos.enabled: false)"]
        if self.kinds and kind not in self.kinds:
            found.append(f"{kind} faults are not allowed (spec.chaos.kinds: {', '.join(self.kinds)})")
        highest = max(request_percents, default=0.0)
        if highest > self.max_request_percent:
            found.append(f"a step touches {highest:g}% of requests, above spec.chaos.maxRequestPercent "
                         f"{self.max_request_percent:g}")
        if self.max_dwell_seconds is not None and dwell_seconds > self.max_dwell_seconds:
            found.append(f"steps are held {dwell_seconds:g} s, above spec.chaos.maxDwellSeconds "
                         f"{self.max_dwell_seconds:g}")
        if pod_faults and self.max_pods is not None and (pods is None or pods > self.max_pods):
            found.append(f"{'every pod' if pods is None else f'{pods} pods'} of the target, above "
                         f"spec.chaos.maxPods {self.max_pods}")
        return found


CHAOS_SNAKE = {camel(name): name for name in ChaosLimits.model_fields}


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    #: None: every service of the namespace.
    service: str | None
    #: CapacityProfile fields (snake_case) the policy sets.
    capacity: dict[str, Any] = field(default_factory=dict)
    #: Its chaos limits, if it sets any.
    chaos: ChaosLimits | None = None


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """A HarbingerPolicy object as the apiserver returns it; InvalidInput names what is wrong
    (the CRD's schema makes that rare: an object from before a schema change, say)."""
    meta = obj.get("metadata") or {}
    where = f"HarbingerPolicy {meta.get('namespace')}/{meta.get('name')}"
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise InvalidInput("spec is not an object", source=where)
    service = spec.get("service")
    if service is not None and (not isinstance(service, str) or not service):
        raise InvalidInput("spec.service must be a service name", source=where)
    capacity = spec.get("capacity") or {}
    if not isinstance(capacity, dict):
        raise InvalidInput("spec.capacity is not an object", source=where)
    unknown = sorted(set(capacity) - set(SNAKE))
    if unknown:
        raise InvalidInput(f"spec.capacity has unknown fields {', '.join(unknown)}", source=where)
    fields = {SNAKE[key]: value for key, value in capacity.items()}
    try:
        CapacityProfile.model_validate(fields)
    except ValueError as exc:
        raise InvalidInput(f"spec.capacity: {exc}", source=where) from exc
    chaos = spec.get("chaos")
    limits = None
    if chaos is not None:
        if not isinstance(chaos, dict):
            raise InvalidInput("spec.chaos is not an object", source=where)
        unknown = sorted(set(chaos) - set(CHAOS_SNAKE))
        if unknown:
            raise InvalidInput(f"spec.chaos has unknown fields {', '.join(unknown)}", source=where)
        try:
            limits = ChaosLimits.model_validate({CHAOS_SNAKE[k]: v for k, v in chaos.items()})
        except ValueError as exc:
            raise InvalidInput(f"spec.chaos: {exc}", source=where) from exc
    return Policy(str(meta.get("namespace") or ""), str(meta.get("name") or ""), service, fields, limits)


@dataclass(frozen=True)
class PolicyIndex:
    """The policies in force, by namespace and service; and the mistakes found among them."""

    by_target: dict[tuple[str, str | None], Policy]
    problems: list[str]

    @classmethod
    def build(cls, objects: Iterable[Mapping[str, Any]]) -> PolicyIndex:
        chosen: dict[tuple[str, str | None], Policy] = {}
        problems: list[str] = []
        parsed = []
        for obj in objects:
            try:
                parsed.append(parse_policy(obj))
            except InvalidInput as exc:
                problems.append(str(exc))
        for policy in sorted(parsed, key=lambda p: (p.namespace, p.name)):
            key = (policy.namespace, policy.service)
            if key in chosen:
                what = (f"service {policy.service}" if policy.service else
                        "the namespace's defaults" if policy.namespace else "the cluster's defaults")
                kind = POLICY_KIND if policy.namespace else CLUSTER_POLICY_KIND
                problems.append(f"{kind} {policy.namespace + '/' if policy.namespace else ''}{policy.name} is "
                                f"ignored: {chosen[key].name} already sets {what}")
                continue
            chosen[key] = policy
        return cls(chosen, problems)

    def _layers(self, namespace: str, service: str) -> list[Policy | None]:
        return [self.by_target.get(key) for key in (("", None), (namespace, None), (namespace, service))]

    def chaos_for(self, namespace: str, service: str) -> tuple[ChaosLimits, list[str]]:
        """The chaos limits in force for the service (every layer tightens), and the policies
        they come from (``kind namespace/name``), to name in a refusal."""
        limits, sources = ChaosLimits(), []
        for layer in self._layers(namespace, service):
            if layer is not None and layer.chaos is not None:
                limits = limits.tightened(layer.chaos)
                sources.append(f"{POLICY_KIND} {layer.namespace}/{layer.name}" if layer.namespace
                               else f"{CLUSTER_POLICY_KIND} {layer.name}")
        return limits, sources

    def fields_for(self, namespace: str, service: str) -> dict[str, Any] | None:
        """The fields set for the service (its policy over its namespace's over the cluster's,
        which is keyed by the empty namespace); None when no policy applies."""
        layers = self._layers(namespace, service)
        if not any(layers):
            return None
        fields: dict[str, Any] = {}
        for layer in layers:
            if layer is not None:
                fields.update(layer.capacity)
        return fields


class PolicyCache:
    """The policies of every namespace, kept current by watch events (the webhook's hot path
    reads it; no API call per admission): ``on_event`` is a Reflector's handler."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[str, Mapping[str, Any]]] = {}  # namespace -> name -> object
        self._index: dict[str, PolicyIndex] = {}  # namespace -> index, rebuilt when it changes

    def on_event(self, kind: str, obj: Mapping[str, Any], _old: Mapping[str, Any] | None = None) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        objects = self._objects.setdefault(namespace, {})
        if kind == "DELETED":
            objects.pop(name, None)
        else:
            objects[name] = obj
        if namespace:
            self._index.pop(namespace, None)
        else:  # the cluster's policy is under every namespace's
            self._index.clear()

    def fields_for(self, namespace: str, service: str) -> dict[str, Any] | None:
        index = self._index.get(namespace)
        if index is None:
            objects = [*self._objects.get("", {}).values(), *self._objects.get(namespace, {}).values()]
            index = self._index[namespace] = PolicyIndex.build(objects)
        return index.fields_for(namespace, service)


class PolicyLister:
    """Lists every ClusterHarbingerPolicy and HarbingerPolicy for a component that reads them
    each run (the planner; the chaos controller, for their chaos limits). A kind whose CRD is
    not installed is said once and not asked for again; a 429 right after a CRD is installed
    or changed ("storage is (re)initializing") is retried."""

    ATTEMPTS = 5

    def __init__(self, api: client.ApiClient) -> None:
        self.custom: Any = client.CustomObjectsApi(api)  # bodies are the apiserver's JSON dicts
        self._missing: set[str] = set()

    async def fetch(self, *, tolerant: bool = False) -> list[dict[str, Any]]:
        """Every policy of the kinds installed. ``tolerant``: a kind the apiserver refuses is
        logged and left out (the other kind is still read) instead of raising."""
        found: list[dict[str, Any]] = []
        for plural in (CLUSTER_POLICIES, POLICIES):
            if plural in self._missing:
                continue
            try:
                items = await self._kind(plural)
            except ApiException as exc:
                if not tolerant:
                    raise
                log.warning("%s unreadable (%s %s): left out this time", plural, exc.status, exc.reason)
                continue
            if items is None:
                self._missing.add(plural)
                log.warning("the %s.%s CRD is not installed: those policies are not read; apply "
                            "manifests/base/crds and restart", plural, contract.API_GROUP)
                continue
            found += items
        return found

    async def _kind(self, plural: str) -> list[dict[str, Any]] | None:
        """One kind of policy; None when its CRD is not installed."""
        for attempt in range(self.ATTEMPTS):
            try:
                listed = await read_json(self.custom.list_cluster_custom_object(
                    contract.API_GROUP, contract.API_VERSION, plural, _preload_content=False))
                return list(listed.get("items") or [])
            except ApiException as exc:
                if exc.status == 429 and attempt + 1 < self.ATTEMPTS:
                    await asyncio.sleep(1.0)
                    continue
                if exc.status != 404:
                    raise
                return None
        return None


# --- the CRD, generated from the model (hack/crds.py) ------------------------------------------
def capacity_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Capacity-profile fields (docs/configuration.md); a field left out keeps the namespace's "
                       "value, then the planner's profiles file, then the default.",
        "properties": model_properties(CapacityProfile),
        "x-kubernetes-validations": [{
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must not be above maxReplicas",
            "fieldPath": ".minReplicas",
        }],
    }


def chaos_schema() -> dict[str, Any]:
    kinds = list(get_args(ChaosKind))
    return {
        "type": "object",
        "description": "Limits on chaos rehearsals here; every layer (cluster, namespace, service) is a bound and "
                       "the most restrictive value wins.",
        "properties": model_properties(ChaosLimits, overrides={
            "kinds": {"type": "array", "maxItems": len(kinds), "items": {"type": "string", "enum": kinds},
                      "description": "The fault kinds rehearsals may use; empty: every kind."},
        }),
    }


def policy_crd(*, cluster: bool = False) -> dict[str, Any]:
    kind, plural = (CLUSTER_POLICY_KIND, CLUSTER_POLICIES) if cluster else (POLICY_KIND, POLICIES)
    spec: dict[str, Any] = {"capacity": capacity_schema(), "chaos": chaos_schema()}
    if not cluster:
        spec = {"service": {"type": "string", "minLength": 1, "maxLength": 253,
                            "description": "The service (harbinger.io/service, else app.kubernetes.io/name, else "
                                           "app) this policy is for; left out: every service of the namespace."},
                **spec}
    columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    if not cluster:
        columns.insert(0, {"name": "Service", "type": "string", "jsonPath": ".spec.service",
                           "description": "the service it is for (empty: every service of the namespace)"})
    return custom_resource_definition(
        kind=kind, plural=plural, short_name="chpol" if cluster else "hpol", namespaced=not cluster, columns=columns,
        description=("The platform's capacity defaults for every opted-in namespace, checked when applied."
                     if cluster else "Capacity settings for a namespace, or one service of it, checked when applied."),
        spec={"type": "object", "properties": spec})


def capacity_reference() -> str:
    """The Markdown table of ``spec.capacity``'s fields, generated like the CRD (docs/api.md)."""
    rows = ["| field | type | bounds | default | meaning |", "| --- | --- | --- | --- | --- |"]
    schema = capacity_schema()["properties"]
    defaults = CapacityProfile.model_json_schema()["properties"]
    for name, prop in schema.items():
        low = prop.get("minimum")
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if prop.get('exclusiveMinimum') else '>='} {number_text(low)}")
        if "maximum" in prop:
            bounds.append(f"<= {number_text(prop['maximum'])}")
        if "enum" in prop:
            bounds.append(" or ".join(f"`{v}`" for v in prop["enum"]))
        meaning = prop.get("description", "").split(" Default: ")[0]
        default = defaults[SNAKE[name]].get("default")
        rows.append(f"| `{name}` | {prop['type']} | {', '.join(bounds)} | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"
