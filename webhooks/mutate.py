"""The path of one pod through the webhook, top to bottom: decode, decide, patch, encode.

Everything :meth:`Mutator.review` needs is in memory: namespaces and Deployments
from watch-fed caches (:mod:`webhooks.cluster`), forecasts from the forecast cache
(:mod:`webhooks.forecasts`). No Kubernetes API call and no training happen here.

A malformed body raises :class:`~harbinger.errors.InvalidInput` (HTTP 400). A bad
workload annotation (a capacity profile that is not JSON, a warm-up time that is not
RFC 3339) never fails the review: the stamps that depend on it are skipped and the
answer carries a warning naming the annotation, which ``kubectl`` shows to whoever
created the pod.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from harbinger import contract, sidecar
from harbinger.clock import parse_timestamp
from harbinger.errors import InvalidInput
from harbinger.profile import CapacityProfile, profile_from_annotation
from harbinger.quantity import format_cpu, format_decimal_si, format_memory, parse_quantity
from harbinger.settings import WebhookSettings
from webhooks import metrics
from webhooks.cluster import ClusterView, deployment_annotations, deployment_replicas, owning_deployment
from webhooks.forecasts import ForecastProvider, Outlook
from webhooks.patch import append_container, append_volume, set_annotations, set_requests, set_scheduler_name
from webhooks.review import JSONPatch, Pod, decode_pod, decode_review, encode_response

log = logging.getLogger(__name__)

#: The kubelet refuses bandwidth annotations outside [1k, 1P] bits/s.
MIN_BANDWIDTH_BITS: Final = Decimal(1000)
MAX_BANDWIDTH_BITS: Final = Decimal(10) ** 15
DEFAULT_PROFILE: Final = CapacityProfile()


@dataclass(frozen=True)
class Bounds:
    """Limits on forecast-sized requests; the values come from ``settings.webhook``."""

    min_cpu_cores: float
    max_cpu_cores: float
    min_memory_bytes: int
    max_memory_bytes: int

    @classmethod
    def of(cls, settings: WebhookSettings) -> Bounds:
        return cls(settings.min_cpu_cores, settings.max_cpu_cores, settings.min_memory_bytes,
                   settings.max_memory_bytes)


@dataclass
class Decision:
    """What a pod should carry after admission (absent keys are left as they are)."""

    annotations: dict[str, str] = field(default_factory=dict)
    requests: dict[int, dict[str, str]] = field(default_factory=dict)  # container index -> requests
    sidecar: dict[str, Any] | None = None
    scheduler_name: str | None = None
    warnings: list[str] = field(default_factory=list)
    stamps: set[str] = field(default_factory=set)


class Mutator:
    def __init__(
        self,
        view: ClusterView,
        forecasts: ForecastProvider,
        *,
        bounds: Bounds | None = None,
        sidecar_image: str = WebhookSettings().chaos_sidecar_image,
        sidecar_limits: sidecar.SidecarLimits | None = None,
        scheduler_name: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.scheduler_name = scheduler_name
        self.view = view
        self.forecasts = forecasts
        self.bounds = bounds or Bounds.of(WebhookSettings())
        self.sidecar_image = sidecar_image
        #: The platform's limits on any fault, handed to every sidecar as flags (the sidecar
        #: holds its built-in caps without them).
        self.sidecar_limits = sidecar_limits
        self.clock = clock

    async def review(self, body: bytes) -> bytes:
        """An AdmissionReview request body in, the response body out. Raises InvalidInput."""
        # 1. decode
        review = decode_review(body)
        request = review.request
        if request.operation != "CREATE" or not request.is_pod:
            return encode_response(request.uid)
        pod = decode_pod(request.object)
        raw: dict[str, Any] = request.object or {}
        namespace = request.namespace or pod.metadata.namespace
        if not namespace:
            raise InvalidInput("request.namespace: a pod CREATE review must name the namespace",
                               source="AdmissionReview")

        # 2. decide
        decision = await self.decide(namespace, pod)

        # 3. patch
        patch: JSONPatch = []
        patch += set_annotations(raw, decision.annotations)
        for index, requests in decision.requests.items():
            patch += set_requests(raw, index, requests)
        patch += set_scheduler_name(raw, decision.scheduler_name)
        if decision.sidecar:
            patch += append_container(raw, decision.sidecar)
            patch += append_volume(raw, sidecar.podinfo_volume())

        # 4. encode
        if patch:
            metrics.PATCHED.inc()
            for stamp in decision.stamps:
                metrics.STAMP_COUNTERS[stamp].inc()
        if decision.warnings:
            metrics.BAD_ANNOTATIONS.inc(len(decision.warnings))
            log.warning("pod %s/%s: %s", namespace, pod.metadata.name or "(generated)", "; ".join(decision.warnings))
        return encode_response(request.uid, patch, decision.warnings)

    async def decide(self, namespace: str, pod: Pod) -> Decision:
        decision = Decision()
        if namespace in contract.PROTECTED_NAMESPACES:
            return decision
        namespace_labels = self.view.namespace_labels(namespace)
        # A namespace the cache has not seen yet was just created; the apiserver only sent
        # this review because its namespaceSelector matched, so trust it for the opt-in.
        if namespace_labels is not None and not contract.is_opted_in(namespace, namespace_labels):
            return decision
        owner = owning_deployment(pod)
        deployment = self.view.deployment(namespace, owner) if owner else None
        pod_annotations = pod.metadata.annotations or {}
        # The Deployment's annotations speak for its pods; a pod's own annotations win.
        workload = {**deployment_annotations(deployment), **pod_annotations}
        if workload.get(contract.INJECT) == "false":
            return decision
        where = f"deployment {namespace}/{owner}" if deployment else f"pod {namespace}/{pod.metadata.name or ''}"
        now = self.clock()

        service = contract.service_of(pod.metadata.labels, workload)
        outlook = await self.forecasts.outlook(namespace, service, now) if service else None
        if outlook and service:
            self._stamp_forecast(decision, pod, deployment, workload, outlook, where, namespace, service)
        if _in_warmup_window(workload, now, decision, where):
            decision.annotations[contract.WARMUP] = "true"
            decision.stamps.add("warmup")
            # Only warm-up pods need bandwidth-aware placement; everything else keeps the
            # default scheduler, so a Harbinger scheduler outage cannot hold them Pending.
            decision.scheduler_name = self.scheduler_name
        chaos_opt_in = (namespace_labels or {}).get(contract.CHAOS) == contract.CHAOS_ENABLED
        if chaos_opt_in or workload.get(contract.CHAOS) == contract.CHAOS_ENABLED:
            self._stamp_chaos(decision, pod, pod_annotations, where)
        return decision

    def _profile(self, namespace: str, service: str, workload: dict[str, str], decision: Decision,
                 where: str) -> CapacityProfile | None:
        """The service's HarbingerPolicy over its namespace's; the capacity-profile annotation
        (deprecated) only where no policy applies."""
        fields = self.view.policies.fields_for(namespace, service)
        if fields is None:
            return _capacity_profile(workload, decision, where)
        if contract.CAPACITY_PROFILE in workload:
            decision.warnings.append(f"{where}: annotation {contract.CAPACITY_PROFILE} is ignored: a HarbingerPolicy "
                                     "applies; remove the annotation")
        return _policy_profile(tuple(sorted(fields.items())))

    def _stamp_forecast(
        self, decision: Decision, pod: Pod, deployment: dict[str, Any] | None, workload: dict[str, str],
        outlook: Outlook, where: str, namespace: str, service: str,
    ) -> None:
        replicas = _planned_replicas(deployment, decision, where)
        tps = outlook.peak_p90_tps / replicas
        decision.annotations[contract.PREDICTED_TPS] = f"{tps:.2f}"
        decision.annotations[contract.MODEL_VERSION] = outlook.model_version
        decision.stamps.add("forecast")
        profile = self._profile(namespace, service, workload, decision, where)
        if profile is None:
            return

        bandwidth, cpu, memory = _sizes(profile, tps, self.bounds)
        own = pod.metadata.annotations or {}
        for key in (contract.INGRESS_BANDWIDTH, contract.EGRESS_BANDWIDTH):
            if key not in own:  # a bandwidth the pod declares itself is its owner's choice
                decision.annotations[key] = bandwidth
                decision.stamps.add("bandwidth")

        if workload.get(contract.RESOURCES) != contract.RESOURCES_FORECAST:
            return
        for index, container in enumerate(pod.spec.containers):
            if container.name == contract.CHAOS_SIDECAR_NAME:
                continue
            limits = (container.resources.limits if container.resources else None) or {}
            requests = {
                "cpu": _within_limit(cpu, limits.get("cpu")),
                "memory": _within_limit(memory, limits.get("memory")),
            }
            decision.requests[index] = requests
            decision.stamps.add("resources")

    def _stamp_chaos(self, decision: Decision, pod: Pod, own: dict[str, str], where: str) -> None:
        port = _upstream_port(pod, own, decision, where)
        decision.sidecar = sidecar.sidecar_container(self.sidecar_image, port, self.sidecar_limits)
        decision.annotations[contract.CHAOS_SIDECAR_IMAGE] = self.sidecar_image
        # The chaos controller's pod backend reads the opt-in from the pod itself.
        decision.annotations[contract.CHAOS] = contract.CHAOS_ENABLED
        decision.annotations[contract.CHAOS_UPSTREAM_PORT] = str(port)
        decision.stamps.add("chaos")


# --- reading workload annotations: each bad value becomes a warning, never an error ---------


# Annotation texts repeat for every pod of a workload: each is parsed once, bounded caches.
_CACHE = 4096


@lru_cache(maxsize=_CACHE)
def _quantity(value: str | int | float) -> Decimal:
    return parse_quantity(value)


@lru_cache(maxsize=_CACHE)
def _profile(text: str) -> CapacityProfile | str:
    """The profile, or what is wrong with the annotation (CapacityProfile is frozen: shareable)."""
    try:
        return profile_from_annotation(text, source=f"annotation {contract.CAPACITY_PROFILE}")
    except InvalidInput as exc:
        return str(exc)


@lru_cache(maxsize=_CACHE)
def _policy_profile(fields: tuple[tuple[str, Any], ...]) -> CapacityProfile:
    """The profile of a policy's fields (checked by the apiserver, and again when indexed)."""
    return CapacityProfile.model_validate(dict(fields))


@lru_cache(maxsize=_CACHE)
def _plan_replicas(text: str) -> int | None:
    try:
        replicas = json.loads(text).get("replicas")
    except (ValueError, AttributeError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 1 else None


#: Warm-up window annotations repeat across a Deployment's pods: parse each once.
_moment = lru_cache(maxsize=_CACHE)(parse_timestamp)


@lru_cache(maxsize=_CACHE)
def _sizes(profile: CapacityProfile, tps: float, bounds: Bounds) -> tuple[str, str, str]:
    """Bandwidth (bits/s), CPU and memory requests for one replica serving ``tps``, as quantities.
    The same forecast gives the same figures to every pod of a service: computed once."""
    bits = Decimal(str(profile.bandwidth_bits_for(tps)))
    bandwidth = format_decimal_si(min(max(bits, MIN_BANDWIDTH_BITS), MAX_BANDWIDTH_BITS))
    cpu = min(max(profile.cpu_cores_for(tps), bounds.min_cpu_cores), bounds.max_cpu_cores)
    memory = min(max(profile.memory_bytes_for(tps), bounds.min_memory_bytes), bounds.max_memory_bytes)
    return bandwidth, format_cpu(cpu), format_memory(memory)


def _within_limit(request: str, limit: str | int | float | None) -> str:
    """A request never exceeds the container's limit (the apiserver would refuse the pod):
    above it, the request becomes the limit itself."""
    if limit is None:
        return request
    try:
        return request if _quantity(request) <= _quantity(limit) else str(limit)
    except InvalidInput:
        return request


def _planned_replicas(deployment: dict[str, Any] | None, decision: Decision, where: str) -> int:
    """The planner's ``harbinger.io/plan`` replicas, else the Deployment's, else 1."""
    plan = deployment_annotations(deployment).get(contract.PLAN)
    if plan is not None:
        replicas = _plan_replicas(plan)
        if replicas is not None:
            return replicas
        decision.warnings.append(
            f"{where}: annotation {contract.PLAN} is not a JSON object with a positive integer 'replicas'"
        )
    replicas = deployment_replicas(deployment)
    return replicas if isinstance(replicas, int) and replicas >= 1 else 1


def _capacity_profile(workload: dict[str, str], decision: Decision, where: str) -> CapacityProfile | None:
    text = workload.get(contract.CAPACITY_PROFILE)
    if text is None:
        return DEFAULT_PROFILE
    profile = _profile(text)
    if isinstance(profile, str):
        decision.warnings.append(f"{where}: {profile}; requests and bandwidth not sized")
        return None
    return profile


def _rfc3339(workload: dict[str, str], key: str, decision: Decision, where: str) -> datetime | None:
    text = workload.get(key)
    if text is None:
        return None
    moment = _moment(text)
    if moment is None:
        decision.warnings.append(f"{where}: annotation {key}={text!r} is not an RFC 3339 time with a zone")
    return moment


def _in_warmup_window(workload: dict[str, str], now: datetime, decision: Decision, where: str) -> bool:
    """Inside ``[warmup-from, warmup-until)``; a window without a start began long ago."""
    if contract.WARMUP_UNTIL not in workload:
        return False
    until = _rfc3339(workload, contract.WARMUP_UNTIL, decision, where)
    start = _rfc3339(workload, contract.WARMUP_FROM, decision, where)
    if until is None or (start is None and contract.WARMUP_FROM in workload):
        return False
    return (start is None or start <= now) and now < until


def _upstream_port(pod: Pod, own: dict[str, str], decision: Decision, where: str) -> int:
    """The application port the chaos proxy forwards to: the pod's annotation, else the
    first declared port of its first container, else the sidecar's default."""
    declared = own.get(contract.CHAOS_UPSTREAM_PORT)
    if declared is not None:
        # isascii: "²" and "٣" are digits to str.isdigit, and not to int().
        if declared.isascii() and declared.isdigit() and len(declared) <= 5 and 1 <= int(declared) <= 65535:
            return int(declared)
        decision.warnings.append(
            f"{where}: annotation {contract.CHAOS_UPSTREAM_PORT}={declared!r} is not a port number"
        )
    for container in pod.spec.containers:
        if container.name != contract.CHAOS_SIDECAR_NAME and container.ports:
            port = container.ports[0].container_port
            if 1 <= port <= 65535:
                return port
    return sidecar.DEFAULT_UPSTREAM_PORT
