"""The blast-radius limit: how much of a service's capacity one fault takes away, and how
much may be taken while the predicted load plus headroom stays covered.

Capacity is what the planner provisions ahead of the peak (``replicas_for(peak P90)``
replicas of ``rps_per_replica`` each). A fault degrades a share of it:

- a delay or an abort on p % of requests (of the pods in scope): p % of that share;
- CPU or memory stress on a pod: what the stress takes of the pod's sized request;
- a bandwidth limit: the requests/s the pod can no longer send at ``bytes_per_request``.

Counting a delayed request as lost capacity is deliberately pessimistic: a slow
request holds a worker, and we would rather stop early than overload a service.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.experiment import FaultKind
from chaos.faults import Fault
from harbinger.profile import CapacityProfile


@dataclass(frozen=True)
class Capacity:
    replicas: int
    rps_per_replica: float

    @property
    def total_rps(self) -> float:
        return self.replicas * self.rps_per_replica

    @classmethod
    def at_peak(cls, profile: CapacityProfile, peak_rps: float) -> Capacity:
        return cls(profile.replicas_for(peak_rps), profile.rps_per_replica)


def degraded_fraction(
    kind: FaultKind, fault: Fault, profile: CapacityProfile, capacity: Capacity, pods: int | None
) -> float:
    """The share of ``capacity`` that ``fault`` takes away (0..1)."""
    if capacity.replicas <= 0:
        return 1.0
    scope = min(pods, capacity.replicas) / capacity.replicas if pods else 1.0
    per_pod = 0.0
    if kind is FaultKind.LATENCY and fault.delay_ms is not None:
        per_pod = fault.delay_percent / 100
    elif kind in (FaultKind.ERROR, FaultKind.DEPENDENCY_FAILURE) and fault.abort_status is not None:
        per_pod = fault.abort_percent / 100
    elif kind is FaultKind.CPU and fault.cpu_cores is not None:
        per_pod = fault.cpu_cores / max(profile.cpu_cores_for(profile.rps_per_replica), 1e-9)
    elif kind is FaultKind.MEMORY and fault.memory_bytes is not None:
        per_pod = fault.memory_bytes / max(profile.memory_bytes_for(profile.rps_per_replica), 1.0)
    elif kind is FaultKind.BANDWIDTH and fault.bandwidth_bps is not None:
        bits_per_request = profile.bytes_per_request * 8
        if bits_per_request > 0:
            per_pod = 1 - (fault.bandwidth_bps / bits_per_request) / profile.rps_per_replica
    return scope * min(max(per_pod, 0.0), 1.0)


def allowed_fraction(profile: CapacityProfile, capacity: Capacity, load_rps: float) -> float:
    """The most capacity that may be degraded while ``load_rps`` plus headroom stays served."""
    if capacity.total_rps <= 0:
        return 0.0
    needed = max(load_rps, 0.0) * (1 + profile.headroom)
    return min(max(1 - needed / capacity.total_rps, 0.0), 1.0)
