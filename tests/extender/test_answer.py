"""Filter and prioritize as the scheduler calls them: bytes in, status and bytes out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from extender.answer import Extender
from extender.state import ClusterState
from extender.wire import ExtenderFilterResult, HostPriorityList

Build = Callable[..., dict[str, Any]]
Args = Callable[[dict[str, Any], list[str]], bytes]


@pytest.fixture
def state(make_node: Build, make_pod: Build) -> ClusterState:
    """Three nodes: n-small 1G with 975M egress used (25M free), n-mid 1G empty, n-big 10G."""
    state = ClusterState()
    state.on_node_event("ADDED", make_node("n-small", "1G", zone="a"))
    state.on_node_event("ADDED", make_node("n-mid", "1G", zone="a"))
    state.on_node_event("ADDED", make_node("n-big", "10G", zone="b"))
    state.on_pod_event("ADDED", make_pod(node_name="n-small", egress="975M", ingress="100M"))
    return state


def filtered(answer: tuple[int, bytes]) -> ExtenderFilterResult:
    status, body = answer
    assert status == 200, body
    return ExtenderFilterResult.model_validate_json(body)


def scored(answer: tuple[int, bytes]) -> dict[str, int]:
    status, body = answer
    assert status == 200, body
    return {p.Host: p.Score for p in HostPriorityList.validate_json(body)}


ALL = ["n-small", "n-mid", "n-big"]


def test_nodes_without_headroom_fail_with_needed_and_free(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    extender = Extender(state)
    result = filtered(extender.filter(extender_args(make_pod(egress="40M", warmup=True), ALL)))
    assert result.NodeNames == ["n-mid", "n-big"]
    assert result.FailedAndUnresolvableNodes == {"n-small": "needs 40M egress bandwidth, 25M free of 1G"}
    assert result.FailedNodes == {}

    # Both directions short: both are named.
    both = filtered(extender.filter(extender_args(make_pod(ingress="950M", egress="30M"), ALL)))
    assert both.NodeNames == ["n-mid", "n-big"]
    assert both.FailedAndUnresolvableNodes == {"n-small": (
        "needs 950M ingress bandwidth, 900M free of 1G; needs 30M egress bandwidth, 25M free of 1G")}
    too_big = filtered(extender.filter(extender_args(make_pod(ingress="1.5G"), ALL)))
    assert too_big.NodeNames == ["n-big"]
    assert too_big.FailedAndUnresolvableNodes["n-mid"] == "needs 1.5G ingress bandwidth, 1G free of 1G"


def test_a_pod_that_just_fits_passes(state: ClusterState, make_pod: Build, extender_args: Args) -> None:
    result = filtered(Extender(state).filter(extender_args(make_pod(egress="25M"), ["n-small"])))
    assert result.NodeNames == ["n-small"]


def test_other_pods_take_the_fast_path_untouched(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    extender = Extender(state)
    names = ["n-small", "not-a-node", "n-big"]
    plain = make_pod()
    assert filtered(extender.filter(extender_args(plain, names))).NodeNames == names
    assert extender.prioritize(extender_args(plain, names)) == (200, b"[]")
    assert state.assumed_count == 0


def test_unknown_nodes_fail_for_checked_pods(state: ClusterState, make_pod: Build, extender_args: Args) -> None:
    result = filtered(Extender(state).filter(extender_args(make_pod(warmup=True), ["n-mid", "ghost"])))
    assert result.NodeNames == ["n-mid"]
    assert result.FailedNodes == {"ghost": "node ghost is not in the Harbinger extender's cache yet"}


def test_nodes_that_declare_no_bandwidth(make_node: Build, make_pod: Build, extender_args: Args) -> None:
    state = ClusterState()
    state.on_node_event("ADDED", make_node("bare"))
    state.on_node_event("ADDED", make_node("rated", "1G"))
    body = extender_args(make_pod(egress="10M"), ["bare", "rated"])
    assert filtered(Extender(state).filter(body)).NodeNames == ["bare", "rated"]
    # ...but they rank below nodes with proven headroom.
    scores = scored(Extender(state).prioritize(body))
    assert scores["rated"] > scores["bare"]

    strict = filtered(Extender(state, admit_undeclared=False).filter(body))
    assert strict.NodeNames == ["rated"]
    assert "declares no harbinger.io/bandwidth" in strict.FailedAndUnresolvableNodes["bare"]
    # A warm-up pod that needs no bandwidth fits anywhere the cache knows.
    assert filtered(Extender(state, admit_undeclared=False).filter(
        extender_args(make_pod(warmup=True), ["bare", "rated"]))).NodeNames == ["bare", "rated"]


def test_a_pod_with_a_bad_annotation_stays_pending_with_the_reason(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    extender = Extender(state)
    body = extender_args(make_pod(egress="very fast"), ALL)
    result = filtered(extender.filter(body))
    assert result.NodeNames == []
    assert set(result.FailedAndUnresolvableNodes) == set(ALL)
    assert "kubernetes.io/egress-bandwidth" in result.FailedAndUnresolvableNodes["n-mid"]
    assert extender.prioritize(body) == (200, b"[]")


def test_prioritize_prefers_free_bandwidth_after_placement(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    scores = scored(Extender(state).prioritize(extender_args(make_pod(egress="20M"), ALL)))
    assert set(scores) == set(ALL)
    assert all(0 <= s <= 10 for s in scores.values())
    # Scores are whole numbers 0..10: n-mid (980M left) and n-small (5M left) may round alike.
    assert scores["n-big"] > scores["n-mid"] >= scores["n-small"]
    assert scores["n-big"] == 10


def test_one_services_warmup_replicas_spread_over_nodes_and_zones(
    make_node: Build, make_pod: Build, extender_args: Args
) -> None:
    """Six replicas of one service on six equal nodes in three zones: each replica the
    extender places is assumed at once, so the burst spreads before any watch event."""
    state = ClusterState()
    names = [f"n{i}" for i in range(6)]
    for i, name in enumerate(names):
        state.on_node_event("ADDED", make_node(name, "10G", zone=f"z{i % 3}"))
    extender = Extender(state)
    placed = []
    for _ in range(6):
        replica = make_pod(egress="10M", warmup=True, service="cart")
        body = extender_args(replica, names)
        assert filtered(extender.filter(body)).NodeNames == names
        scores = scored(extender.prioritize(body))
        best = max(scores.values())
        chosen = state.assumed_node(replica["metadata"]["uid"])
        assert chosen is not None and scores[chosen] == best
        placed.append(chosen)
    assert sorted(placed) == names  # one per node
    zones_of_first_three = {int(n[1:]) % 3 for n in placed[:3]}
    assert zones_of_first_three == {0, 1, 2}  # one per zone before any zone gets a second

    # Another service is not pushed around by cart's replicas.
    other = scored(extender.prioritize(extender_args(make_pod(warmup=True, service="search"), names)))
    assert len(set(other.values())) == 1


def test_filter_with_one_node_left_assumes_it(state: ClusterState, make_pod: Build, extender_args: Args) -> None:
    extender = Extender(state)
    replica = make_pod(egress="2G")
    assert filtered(extender.filter(extender_args(replica, ALL))).NodeNames == ["n-big"]
    assert state.assumed_node(replica["metadata"]["uid"]) == "n-big"
    # The next 9G pod sees n-big with 8G left.
    result = filtered(extender.filter(extender_args(make_pod(egress="9G"), ALL)))
    assert result.NodeNames == []
    assert result.FailedAndUnresolvableNodes["n-big"] == "needs 9G egress bandwidth, 8G free of 10G"


def test_a_rescheduled_pod_does_not_count_against_itself(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    extender = Extender(state)
    replica = make_pod(egress="6G")
    body = extender_args(replica, ["n-big"])
    assert filtered(extender.filter(body)).NodeNames == ["n-big"]
    # Binding failed, the scheduler tries the same pod again: its own earlier guess is dropped.
    assert filtered(extender.filter(body)).NodeNames == ["n-big"]
    assert state.assumed_count == 1


def test_malformed_bodies_get_400_with_error(state: ClusterState) -> None:
    extender = Extender(state)
    for verb in (extender.filter, extender.prioritize):
        status, body = verb(b'{"Pod": 3}')
        assert status == 400
        answer = json.loads(body)
        assert "Pod" in answer["Error"]
        assert answer["NodeNames"] == []


def test_prioritize_over_nodes_the_cache_does_not_know(
    state: ClusterState, make_pod: Build, extender_args: Args
) -> None:
    # Found by the property test: a service's pod asked about unknown nodes only.
    body = extender_args(make_pod(egress="0", service="web"), ["ghost", "ghost"])
    assert scored(Extender(state).prioritize(body)) == {"ghost": 0}
    assert state.assumed_count == 0
