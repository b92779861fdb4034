"""Bottlenecks first: sharing short cluster capacity between the services' plans.

When the free capacity of the cluster (CPU, memory, pod slots on ready nodes) covers
every plan, every service gets its floor. When it does not, services are served in
order of *pressure*: predicted utilization (the peak P90 over what the current
replicas can serve) times one plus the number of services whose requests reach it
(``graph.dependents``) -- a saturated service that half the graph calls is the first
bottleneck to remove. The order never scales a caller before its callees: the next
service is always the highest-pressure one whose callees are all done, and a caller
whose callee could not get its full floor gets nothing more this round (its extra
requests would only queue at the callee).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

from harbinger.graph import ServiceGraph


@dataclass(frozen=True)
class Capacity:
    cpu_cores: float
    memory_bytes: float
    pods: int

    def fits(self, cpu: float, memory: float, pods: int) -> bool:
        return cpu <= self.cpu_cores + 1e-9 and memory <= self.memory_bytes + 1e-9 and pods <= self.pods

    def minus(self, cpu: float, memory: float, pods: int) -> Capacity:
        return Capacity(self.cpu_cores - cpu, self.memory_bytes - memory, self.pods - pods)


@dataclass(frozen=True)
class ScaleRequest:
    service: str
    current: int
    wanted: int
    cpu_per_replica: float
    memory_per_replica: float
    #: Predicted peak load over what ``current`` replicas serve (1.0 = exactly full).
    utilization: float


@dataclass(frozen=True)
class Allocation:
    #: Replicas each service may have (>= current, <= wanted).
    granted: dict[str, int]
    #: The order services were served in.
    order: tuple[str, ...]
    #: True when some service got less than it wanted.
    short: bool


def pressure(request: ScaleRequest, graph: ServiceGraph) -> float:
    dependents = len(graph.dependents(request.service)) if request.service in graph.services else 0
    return request.utilization * (1 + dependents)


def allocate(requests: Mapping[str, ScaleRequest], graph: ServiceGraph, free: Capacity) -> Allocation:
    """Grant each service as much of its increase as fits, bottlenecks first (module docstring).

    Services outside the graph have no callees and no dependents.
    """
    callees = {s: set(graph.callees(s)) & set(requests) for s in requests}
    waiting_on = {s: len(c) for s, c in callees.items()}
    callers: dict[str, list[str]] = {s: [] for s in requests}
    for service, called in callees.items():
        for callee in called:
            callers[callee].append(service)

    ready = [(-pressure(requests[s], graph), s) for s, n in waiting_on.items() if n == 0]
    heapq.heapify(ready)
    granted: dict[str, int] = {}
    complete: set[str] = set()
    order: list[str] = []
    short = False
    while ready:
        _, service = heapq.heappop(ready)
        order.append(service)
        request = requests[service]
        increase = max(0, request.wanted - request.current)
        if not callees[service] <= complete:
            increase = 0  # a callee is short: do not pile more callers onto it
        fitted = 0
        while fitted < increase and free.fits(request.cpu_per_replica, request.memory_per_replica, 1):
            free = free.minus(request.cpu_per_replica, request.memory_per_replica, 1)
            fitted += 1
        granted[service] = request.current + fitted
        if fitted == max(0, request.wanted - request.current):
            complete.add(service)
        else:
            short = True
        for caller in callers[service]:
            waiting_on[caller] -= 1
            if waiting_on[caller] == 0:
                heapq.heappush(ready, (-pressure(requests[caller], graph), caller))
    return Allocation(granted=granted, order=tuple(order), short=short)
