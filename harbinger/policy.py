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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harbinger import contract
from harbinger.crd import camel, model_properties, number_text
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile

POLICY_KIND = "HarbingerPolicy"
POLICIES = "harbingerpolicies"
#: The platform team's defaults for every opted-in namespace (cluster-scoped, no service).
CLUSTER_POLICY_KIND = "ClusterHarbingerPolicy"
CLUSTER_POLICIES = "clusterharbingerpolicies"


#: ``spec.capacity`` key -> CapacityProfile field.
SNAKE = {camel(name): name for name in CapacityProfile.model_fields}


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    #: None: every service of the namespace.
    service: str | None
    #: CapacityProfile fields (snake_case) the policy sets.
    capacity: dict[str, Any] = field(default_factory=dict)


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
    return Policy(str(meta.get("namespace") or ""), str(meta.get("name") or ""), service, fields)


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

    def fields_for(self, namespace: str, service: str) -> dict[str, Any] | None:
        """The fields set for the service (its policy over its namespace's over the cluster's,
        which is keyed by the empty namespace); None when no policy applies."""
        layers = [self.by_target.get(key) for key in (("", None), (namespace, None), (namespace, service))]
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


def policy_crd(*, cluster: bool = False) -> dict[str, Any]:
    kind, plural = (CLUSTER_POLICY_KIND, CLUSTER_POLICIES) if cluster else (POLICY_KIND, POLICIES)
    spec: dict[str, Any] = {"capacity": capacity_schema()}
    if not cluster:
        spec = {"service": {"type": "string", "minLength": 1, "maxLength": 253,
                            "description": "The service (harbinger.io/service, else app.kubernetes.io/name, else "
                                           "app) this policy is for; left out: every service of the namespace."},
                **spec}
    columns = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    if not cluster:
        columns.insert(0, {"name": "Service", "type": "string", "jsonPath": ".spec.service",
                           "description": "the service it is for (empty: every service of the namespace)"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{contract.API_GROUP}", "labels": {"app.kubernetes.io/part-of": "harbinger"}},
        "spec": {
            "group": contract.API_GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": ["chpol" if cluster else "hpol"], "categories": ["harbinger"]},
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [{
                "name": contract.API_VERSION, "served": True, "storage": True,
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": ("The platform's capacity defaults for every opted-in namespace, checked when "
                                    "applied." if cluster else
                                    "Capacity settings for a namespace, or one service of it, checked when applied."),
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {"type": "object", "properties": spec},
                    },
                }},
            }],
        },
    }


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
