"""Whatever the scheduler (or anything else) sends, the extender answers well-formed,
never with a 5xx, and never names a node it was not asked about."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.answer import Extender
from extender.server import make_app
from extender.state import ClusterState
from extender.wire import ExtenderFilterResult, HostPriorityList
from harbinger import contract

Serve = Callable[..., contextlib.AbstractAsyncContextManager[int]]

CLUSTER_NODES = [f"node-{i}" for i in range(8)]

quantities = st.one_of(
    st.sampled_from(["0", "1", "10M", "1.5G", "250k", "1Gi", "10G", "999M", "1e9", "0.5"]),
    st.integers(0, 10**12).map(str),
    st.text(max_size=6),  # mostly not quantities at all
)
node_names = st.one_of(st.sampled_from([*CLUSTER_NODES, "ghost", ""]), st.text(max_size=12))
pod_annotations = st.dictionaries(
    st.sampled_from([contract.WARMUP, contract.INGRESS_BANDWIDTH, contract.EGRESS_BANDWIDTH,
                     contract.SERVICE, "other"]),
    st.one_of(st.just("true"), quantities),
    max_size=5,
)
pods = st.fixed_dictionaries(
    {"metadata": st.fixed_dictionaries({
        "name": st.text(max_size=8),
        "namespace": st.sampled_from(["shop", "", "kube-system"]),
        "uid": st.one_of(st.just(""), st.uuids().map(str), st.sampled_from(["u1", "u2"])),
        "annotations": st.one_of(st.none(), pod_annotations),
        "labels": st.one_of(st.none(), st.dictionaries(
            st.sampled_from([contract.APP_NAME_LABEL, contract.LEGACY_APP_LABEL]),
            st.sampled_from(["web", "cart"]))),
    }),
     "spec": st.just({"containers": [{"name": "c", "image": "i"}]})},
)
well_formed = st.builds(
    lambda pod, names: json.dumps({"Pod": pod, "Nodes": None, "NodeNames": names}).encode(),
    pods, st.lists(node_names, max_size=12),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["Pod", "NodeNames", "Nodes", "metadata", "annotations", "uid"]), inner, max_size=3),
    max_leaves=10,
)
malformed = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)
bodies = st.one_of(well_formed, well_formed, malformed)


def cluster_state() -> ClusterState:
    state = ClusterState()
    capacities = ["1G", "10G", "100M", None, "not-a-quantity", "0", "25M", "1Ti"]
    for i, (name, capacity) in enumerate(zip(CLUSTER_NODES, capacities, strict=True)):
        labels = {contract.ZONE_LABEL: f"z{i % 3}"} if i % 4 else {}
        if capacity is not None:
            labels[contract.NODE_BANDWIDTH] = capacity
        state.on_node_event("ADDED", {"metadata": {"name": name, "labels": labels}})
        state.on_pod_event("ADDED", {
            "metadata": {"name": f"p{i}", "namespace": "shop", "uid": f"bound-{i}",
                         "labels": {contract.APP_NAME_LABEL: "web"},
                         "annotations": {contract.EGRESS_BANDWIDTH: "20M", contract.INGRESS_BANDWIDTH: "5M"}},
            "spec": {"nodeName": name}, "status": {"phase": "Running"}})
    return state


def requested_names(body: bytes) -> list[str] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    names = value.get("NodeNames") if isinstance(value, dict) else None
    return names if isinstance(names, list) else None


def check_filter(body: bytes, status: int, answer: bytes) -> None:
    assert status in (200, 400), (status, answer)
    result = ExtenderFilterResult.model_validate_json(answer)
    assert result.NodeNames is not None  # null would filter out every node
    if status == 400:
        assert result.Error and result.NodeNames == []
        return
    asked = requested_names(body)
    assert asked is not None
    assert result.Error == ""
    assert set(result.NodeNames) <= set(asked)
    failed = set(result.FailedNodes) | set(result.FailedAndUnresolvableNodes)
    assert failed <= set(asked)
    # Every node asked about is accounted for, once: passed or failed with a reason.
    assert set(result.NodeNames) | failed == set(asked)
    assert not set(result.NodeNames) & failed
    assert all(result.FailedNodes.values()) and all(result.FailedAndUnresolvableNodes.values())


def check_prioritize(body: bytes, status: int, answer: bytes) -> None:
    assert status in (200, 400), (status, answer)
    if status == 400:
        assert json.loads(answer)["Error"]
        return
    priorities = HostPriorityList.validate_json(answer)  # scores are checked to be 0..10
    asked = requested_names(body)
    assert asked is not None
    assert {p.Host for p in priorities} <= set(asked)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_body_in_process(body: bytes) -> None:
    extender = Extender(cluster_state())
    check_filter(body, *extender.filter(body))
    check_prioritize(body, *extender.prioritize(body))


@pytest.fixture(scope="module")
async def extender_url(serve_app: Serve) -> AsyncIterator[str]:
    # One server (and one evolving state: assumptions pile up) for every example.
    async with serve_app(make_app(Extender(cluster_state()), ready=lambda: True)) as port:
        yield f"http://127.0.0.1:{port}"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies)
async def test_any_body_over_http(extender_url: str, body: bytes) -> None:
    async with aiohttp.ClientSession(extender_url) as http:
        for verb, check in (("/filter", check_filter), ("/prioritize", check_prioritize)):
            async with http.post(verb, data=body) as response:
                check(body, response.status, await response.read())
