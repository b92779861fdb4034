"""Bottleneck-first allocation of short capacity, callees before callers."""

from __future__ import annotations

from harbinger.graph import ServiceGraph
from scaler.allocation import Capacity, ScaleRequest, allocate

PLENTY = Capacity(cpu_cores=1000, memory_bytes=1e15, pods=1000)


def request(service: str, current: int, wanted: int, utilization: float = 1.0) -> ScaleRequest:
    return ScaleRequest(service, current, wanted, cpu_per_replica=1.0, memory_per_replica=1e9,
                        utilization=utilization)


CHAIN = ServiceGraph.build(["frontend", "checkout", "payments"],
                           [("frontend", "checkout"), ("checkout", "payments")])


def test_everyone_gets_the_floor_when_capacity_suffices() -> None:
    requests = {s: request(s, 1, 5) for s in CHAIN.services}
    allocation = allocate(requests, CHAIN, PLENTY)
    assert allocation.granted == {"frontend": 5, "checkout": 5, "payments": 5}
    assert not allocation.short


def test_callees_are_served_before_callers_and_a_short_callee_holds_its_callers() -> None:
    # The frontend is the most loaded, but it calls checkout, which calls payments.
    requests = {"frontend": request("frontend", 1, 5, utilization=9.0),
                "checkout": request("checkout", 1, 5, utilization=2.0),
                "payments": request("payments", 1, 5, utilization=1.5)}
    allocation = allocate(requests, CHAIN, Capacity(cpu_cores=6, memory_bytes=1e15, pods=1000))
    assert allocation.order == ("payments", "checkout", "frontend")
    assert allocation.granted == {"payments": 5, "checkout": 3, "frontend": 1}
    assert allocation.short


def test_independent_services_are_ranked_by_utilization_times_dependents() -> None:
    graph = ServiceGraph.build(["web", "api", "search", "auth", "batch"],
                               [("web", "auth"), ("api", "auth"), ("search", "auth")])
    requests = {"batch": request("batch", 1, 3, utilization=3.0),
                "auth": request("auth", 1, 3, utilization=1.2)}  # 1.2 x (1 + 3 dependents) = 4.8
    allocation = allocate(requests, graph, Capacity(cpu_cores=2, memory_bytes=1e15, pods=1000))
    assert allocation.order == ("auth", "batch")
    assert allocation.granted == {"auth": 3, "batch": 1}


def test_pod_slots_and_memory_bound_the_allocation_too() -> None:
    requests = {"a": request("a", 2, 10)}
    assert allocate(requests, CHAIN, Capacity(cpu_cores=100, memory_bytes=1e15, pods=3)).granted == {"a": 5}
    assert allocate(requests, CHAIN, Capacity(cpu_cores=100, memory_bytes=2.5e9, pods=99)).granted == {"a": 4}


def test_a_lower_floor_needs_no_room() -> None:
    requests = {"a": request("a", 8, 2)}
    allocation = allocate(requests, CHAIN, Capacity(0, 0, 0))
    assert allocation.granted == {"a": 8}
    assert not allocation.short
