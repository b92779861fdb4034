"""The watch-fed cluster picture: aggregates follow every event, assumptions end when
the watch confirms them or their time is up, and nothing bad in an object crashes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from extender import metrics
from extender.bandwidth import Demand
from extender.state import UNDECLARED, ClusterState
from harbinger import contract

Build = Callable[..., dict[str, Any]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def used(state: ClusterState, name: str) -> tuple[int, int]:
    slot = state.slots[name]
    return int(state.used_ingress[slot]), int(state.used_egress[slot])


def test_nodes_and_bound_pods_make_the_aggregates(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G", zone="a"))
    state.on_node_event("ADDED", make_node("n2", "10G", as_annotation=True))
    assert state.node_count == 2
    assert state.capacity[state.slots["n1"]] == 1_000_000_000
    assert state.capacity[state.slots["n2"]] == 10_000_000_000
    assert state.zone[state.slots["n1"]] == state.zone_ids["a"]

    web = make_pod(node_name="n1", ingress="10M", egress="40M", service="web")
    state.on_pod_event("ADDED", web)
    state.on_pod_event("ADDED", make_pod(node_name="n1", egress="5M"))
    assert used(state, "n1") == (10_000_000, 45_000_000)
    assert state.service_slots["shop/web"] == {state.slots["n1"]: 1}

    # A MODIFIED event replaces the pod's share; it is never counted twice.
    web["metadata"]["annotations"][contract.EGRESS_BANDWIDTH] = "60M"
    state.on_pod_event("MODIFIED", web)
    assert used(state, "n1") == (10_000_000, 65_000_000)

    # A pod that finishes frees its bandwidth, as does a deleted one.
    web["status"]["phase"] = "Succeeded"
    state.on_pod_event("MODIFIED", web)
    assert used(state, "n1") == (0, 5_000_000)
    assert "shop/web" not in state.service_slots


def test_pods_that_matter_to_nothing_are_not_tracked(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G"))
    state.on_pod_event("ADDED", make_pod(node_name="n1"))
    state.on_pod_event("ADDED", make_pod(node_name=None, egress="1M"))  # not bound yet
    assert state.tracked_pods == 0


def test_a_pod_can_arrive_before_its_node(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    state.on_pod_event("ADDED", make_pod(node_name="late", egress="5M"))
    assert state.node_count == 0  # not schedulable until the node itself is seen
    state.on_node_event("ADDED", make_node("late", "1G"))
    assert state.node_count == 1
    assert used(state, "late") == (0, 5_000_000)


def test_bad_quantities_are_counted_not_fatal(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    bad_nodes = metrics.BAD_QUANTITIES.labels(kind="node")._value.get()
    bad_pods = metrics.BAD_QUANTITIES.labels(kind="pod")._value.get()
    state.on_node_event("ADDED", make_node("n1", "a lot"))
    assert state.capacity[state.slots["n1"]] == UNDECLARED
    state.on_pod_event("ADDED", make_pod(node_name="n1", egress="-3M", service="web"))
    assert used(state, "n1") == (0, 0)
    assert state.service_slots["shop/web"]  # still counts for spreading
    assert metrics.BAD_QUANTITIES.labels(kind="node")._value.get() == bad_nodes + 1
    assert metrics.BAD_QUANTITIES.labels(kind="pod")._value.get() == bad_pods + 1
    # Objects without the fields the cache keys on are skipped.
    state.on_node_event("ADDED", {"metadata": {}})
    state.on_pod_event("ADDED", {"metadata": {"name": "no-uid"}, "spec": {"nodeName": "n1"}})
    state.on_pod_event("ADDED", {})


def test_assumption_counts_until_the_watch_confirms(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G"))
    state.on_node_event("ADDED", make_node("n2", "1G"))
    state.assume("u1", "n1", Demand(0, 100_000_000), "shop/web")
    assert used(state, "n1") == (0, 100_000_000)
    assert state.assumed_node("u1") == "n1"

    # The scheduler chose n2 after all: the watch moves the pod's share there.
    bound = make_pod(uid="u1", node_name="n2", egress="100M", service="web")
    state.on_pod_event("ADDED", bound)
    assert used(state, "n1") == (0, 0)
    assert used(state, "n2") == (0, 100_000_000)
    assert state.assumed_count == 0
    # Assuming a pod the watch already shows bound changes nothing.
    state.assume("u1", "n1", Demand(0, 100_000_000), "shop/web")
    assert used(state, "n1") == (0, 0)


def test_assumptions_expire_and_are_replaced(make_node: Build) -> None:
    clock = Clock()
    state = ClusterState(assumed_placement_seconds=30, clock=clock)
    state.on_node_event("ADDED", make_node("n1", "1G"))
    state.on_node_event("ADDED", make_node("n2", "1G"))
    state.assume("u1", "n1", Demand(0, 1_000), None)
    clock.now += 20
    state.assume("u2", "n1", Demand(0, 2_000), None)
    clock.now += 5
    state.assume("u1", "n2", Demand(0, 1_000), None)  # re-decided at +25: the old guess goes
    assert used(state, "n1") == (0, 2_000)
    assert used(state, "n2") == (0, 1_000)
    clock.now += 24  # +49
    assert state.expire() == 0
    clock.now += 2  # +51: u2 (assumed at +20) is past its 30 s, u1 (+25) is not
    assert state.expire() == 1
    assert used(state, "n1") == (0, 0)
    assert state.assumed_node("u1") == "n2"
    clock.now += 5
    assert state.expire() == 1
    assert state.assumed_count == 0
    assert used(state, "n2") == (0, 0)
    state.forget("never-assumed")


def test_deleted_pod_drops_its_assumption(make_node: Build, make_pod: Build) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n1", "1G"))
    state.assume("u9", "n1", Demand(5, 5), None)
    state.on_pod_event("DELETED", make_pod(uid="u9"))
    assert state.assumed_count == 0
    assert used(state, "n1") == (0, 0)


def test_node_slots_are_reused_after_churn(make_node: Build, make_pod: Build) -> None:
    state = ClusterState(initial_slots=4)
    for i in range(10):  # more than the initial arrays hold: they grow
        state.on_node_event("ADDED", make_node(f"n{i}", "1G", zone=f"z{i % 3}"))
    assert state.node_count == 10
    pinned = make_pod(node_name="n3", egress="1M")
    state.on_pod_event("ADDED", pinned)
    for i in range(10):
        state.on_node_event("DELETED", make_node(f"n{i}"))
    assert state.node_count == 0
    assert set(state.slots) == {"n3"}  # still referenced by a pod
    state.on_pod_event("DELETED", pinned)
    assert state.slots == {}
    slots_before = len(state.slot_names)
    for i in range(10):
        state.on_node_event("ADDED", make_node(f"fresh{i}", "2G"))
    assert len(state.slot_names) == slots_before  # freed slots taken again, arrays did not grow
    assert all(state.used_egress[state.slots[f"fresh{i}"]] == 0 for i in range(10))
