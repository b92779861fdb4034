"""The ``harbinger.io/`` contract with the cluster: every label and annotation key, once.

Each component imports its keys from here, never spells them itself, so that the
webhook, the extender, the planner and the chaos controller cannot drift apart.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "harbinger.io/"

# --- opt-in -------------------------------------------------------------------------
#: Namespace label. Only namespaces labelled ``harbinger.io/enabled=true`` are touched.
ENABLED_LABEL: Final = PREFIX + "enabled"
ENABLED_VALUE: Final = "true"
#: Pod or workload annotation. ``"false"`` keeps the webhook away from this pod.
INJECT: Final = PREFIX + "inject"

#: Namespaces Harbinger never mutates, whatever their labels say.
PROTECTED_NAMESPACES: Final = frozenset({"kube-system", "kube-public", "kube-node-lease", "harbinger-system"})

# --- which service a workload or pod belongs to -------------------------------------
#: Workload annotation naming the service when it is not the ``app.kubernetes.io/name`` label.
SERVICE: Final = PREFIX + "service"
APP_NAME_LABEL: Final = "app.kubernetes.io/name"
#: Older charts still label with plain ``app``; used only when the two above are absent.
LEGACY_APP_LABEL: Final = "app"

# --- stamped onto pods by the webhook -----------------------------------------------
PREDICTED_TPS: Final = PREFIX + "predicted-tps"
MODEL_VERSION: Final = PREFIX + "model-version"
WARMUP: Final = PREFIX + "warmup"
#: Workload annotation: ``forecast`` lets the webhook size CPU and memory requests.
RESOURCES: Final = PREFIX + "resources"
RESOURCES_FORECAST: Final = "forecast"

# The CNI bandwidth plugin reads these two itself; Harbinger writes and the extender sums them.
INGRESS_BANDWIDTH: Final = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH: Final = "kubernetes.io/egress-bandwidth"

# --- chaos -----------------------------------------------------------------------
#: Namespace label or workload annotation: ``enabled`` opts into chaos experiments.
CHAOS: Final = PREFIX + "chaos"
CHAOS_ENABLED: Final = "enabled"
CHAOS_PREFIX: Final = PREFIX + "chaos-"
CHAOS_EXPERIMENT: Final = CHAOS_PREFIX + "experiment"
CHAOS_FAULT: Final = CHAOS_PREFIX + "fault"
CHAOS_EXPIRES: Final = CHAOS_PREFIX + "expires"
#: On an object the chaos controller changed: its spec before the experiment, restored exactly.
CHAOS_ORIGINAL: Final = CHAOS_PREFIX + "original"
CHAOS_SIDECAR_NAME: Final = "harbinger-chaos"
#: Pod annotation the webhook sets when it injects the sidecar: the image it injected.
CHAOS_SIDECAR_IMAGE: Final = CHAOS_PREFIX + "sidecar"
#: Pod annotation: the application port the chaos sidecar forwards to (the webhook writes it).
CHAOS_UPSTREAM_PORT: Final = CHAOS_PREFIX + "upstream-port"
#: Label on the ConfigMap that keeps a rehearsal's report (owned by its ChaosExperiment).
CHAOS_REPORT_LABEL: Final = CHAOS_PREFIX + "report"
# --- models on the Kubernetes API (trained in the cluster) -----------------------------
#: Label on each ConfigMap that stores a trained model (in Harbinger's own namespace).
MODEL_LABEL: Final = PREFIX + "model"
#: On a model's ConfigMap: the service it serves (``namespace/service``), when it was trained,
#: and the SHA-256 of its files (a model is rewritten, and reloaded, only when this changes).
MODEL_FOR: Final = PREFIX + "model-for"
MODEL_TRAINED_AT: Final = PREFIX + "model-trained-at"
MODEL_SHA256: Final = PREFIX + "model-sha256"
#: Label put on every object the chaos controller creates, so a sweep can find leftovers.
CHAOS_OWNED_LABEL: Final = PREFIX + "chaos-owned"

# --- planner -> webhook (Deployment annotations) ------------------------------------
PLAN: Final = PREFIX + "plan"
NEXT_PEAK: Final = PREFIX + "next-peak"
WARMUP_FROM: Final = PREFIX + "warmup-from"
WARMUP_UNTIL: Final = PREFIX + "warmup-until"
#: The floor the team declared, remembered while the planner holds a higher one, so it
#: is restored exactly (on the HPA, and on a Deployment without an HPA).
DECLARED_MIN_REPLICAS: Final = PREFIX + "declared-min-replicas"
DECLARED_REPLICAS: Final = PREFIX + "declared-replicas"
#: The floor the planner last wrote (beside the declared one): a value on the object that
#: differs from it is a person's edit, which the planner then keeps instead of restoring.
APPLIED_FLOOR: Final = PREFIX + "applied-floor"
#: Label on every HPA or Deployment whose floor the planner holds raised, so it finds (and
#: gives back) a floor whose namespace opted out or whose Deployment stopped being a service.
FLOOR_RAISED_LABEL: Final = PREFIX + "floor-raised"
#: Capacity profile of a service, as a JSON annotation on its Deployment.
CAPACITY_PROFILE: Final = PREFIX + "capacity-profile"

# --- nodes (extender) ----------------------------------------------------------------
#: Node label or annotation: network bandwidth capacity, a quantity in bits/s (``10G``).
NODE_BANDWIDTH: Final = PREFIX + "bandwidth"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
#: The second scheduler (kube-scheduler + the extender) that manifests/ installs; the
#: webhook points warm-up pods at it when configured to (settings.webhook.scheduler_name).
SCHEDULER_NAME: Final = "harbinger-scheduler"

#: Field manager name for every server-side apply and patch Harbinger makes.
FIELD_MANAGER: Final = "harbinger"

# --- API objects (manifests/base/crds) -------------------------------------------------
API_GROUP: Final = "harbinger.io"
API_VERSION: Final = "v1alpha1"
#: One per managed Deployment, named after it and owned by it: the planner's intent and record.
CAPACITY_PLAN_KIND: Final = "CapacityPlan"
CAPACITY_PLANS: Final = "capacityplans"


def service_of(labels: dict[str, str] | None, annotations: dict[str, str] | None) -> str | None:
    """The service a pod or workload belongs to, by the one rule every component uses.

    ``harbinger.io/service`` wins, then ``app.kubernetes.io/name``, then ``app``.
    """
    annotations = annotations or {}
    labels = labels or {}
    return annotations.get(SERVICE) or labels.get(APP_NAME_LABEL) or labels.get(LEGACY_APP_LABEL) or None


def service_key(namespace: str, service: str) -> str:
    """A service's identity across the cluster: ``namespace/service``. Two teams may both run
    a ``frontend``; models, forecasts, the graph, plans and metrics never mix them up."""
    return f"{namespace}/{service}"


def split_service_key(key: str) -> tuple[str, str]:
    """``(namespace, service)`` of a :func:`service_key`."""
    namespace, _, service = key.partition("/")
    if not namespace or not service:
        raise ValueError(f"not a namespace/service key: {key!r}")
    return namespace, service


def is_opted_in(namespace: str, namespace_labels: dict[str, str] | None) -> bool:
    """True when Harbinger may touch objects in this namespace."""
    if namespace in PROTECTED_NAMESPACES:
        return False
    return (namespace_labels or {}).get(ENABLED_LABEL) == ENABLED_VALUE
