"""The extender v1 wire format and the bandwidth arithmetic under it."""

from __future__ import annotations

import json

import pytest

from extender.bandwidth import Demand, describe, is_checked, node_capacity, pod_demand
from extender.wire import (
    ExtenderFilterResult,
    HostPriorityList,
    decode_args,
    encode_error,
    encode_filter_result,
    encode_priorities,
)
from harbinger import contract
from harbinger.errors import InvalidInput


def test_decode_reads_what_the_scheduler_sends() -> None:
    body = json.dumps({
        "Pod": {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                             "annotations": {contract.WARMUP: "true"}, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {}},
        "Nodes": None,
        "NodeNames": ["n1", "n2"],
    }).encode()
    args = decode_args(body)
    assert args.Pod is not None and args.Pod.metadata.uid == "u1"
    assert args.NodeNames == ["n1", "n2"]
    assert args.Pod.metadata.annotations == {contract.WARMUP: "true"}


@pytest.mark.parametrize(("body", "says"), [
    (b"", "empty request body"),
    (b"{not json", "Invalid JSON"),
    (b"[]", "body: Input should be an object"),
    (b'{"NodeNames": ["a"]}', "Pod is missing"),
    (b'{"Pod": {}, "NodeNames": null}', "NodeNames is missing"),
    (b'{"Pod": {}, "Nodes": {"items": []}}', "nodeCacheCapable: true"),
    (b'{"Pod": {}, "NodeNames": [1]}', "NodeNames.0"),
    (b'{"Pod": {"metadata": {"annotations": {"a": 5}}}, "NodeNames": []}', "Pod.metadata.annotations.a"),
])
def test_decode_refuses_bad_bodies_naming_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_args(body)
    assert says in str(caught.value)
    assert "ExtenderArgs" in str(caught.value)


def test_encoders_write_what_the_models_read() -> None:
    result = ExtenderFilterResult.model_validate_json(
        encode_filter_result(["a", "b"], {"c": "gone"}, {"d": "needs 1M egress bandwidth"}))
    assert result.NodeNames == ["a", "b"]
    assert result.FailedNodes == {"c": "gone"}
    assert result.FailedAndUnresolvableNodes == {"d": "needs 1M egress bandwidth"}
    assert result.Error == ""
    # An empty answer is an empty list, never null (null would filter out every node).
    assert json.loads(encode_filter_result([]))["NodeNames"] == []

    fast = HostPriorityList.validate_json(encode_priorities(["n1", "n-2.example"], [0, 10]))
    assert sorted((p.Host, p.Score) for p in fast) == [("n-2.example", 10), ("n1", 0)]
    # Names that need escaping take the slow path and still round-trip.
    odd = ['quote"d', "back\\slash", "ünï", "tab\t", 'x",', '",",']
    decoded = HostPriorityList.validate_json(encode_priorities(odd, [1, 2, 3, 4, 4, 1]))
    assert sorted((p.Host, p.Score) for p in decoded) == sorted(zip(odd, [1, 2, 3, 4, 4, 1], strict=True))
    # Without quotes in names the grouped path runs; order may change, pairs may not.
    names = [f"n{i}" for i in range(50)] + ["back\\slash\\", "tab\t", "ünï"]
    scores = [i % 11 for i in range(len(names))]
    decoded = HostPriorityList.validate_json(encode_priorities(names, scores))
    assert sorted((p.Host, p.Score) for p in decoded) == sorted(zip(names, scores, strict=True))
    assert encode_priorities([], []) == b"[]"
    assert json.loads(encode_error("bad"))["Error"] == "bad"
    assert json.loads(encode_error("bad"))["NodeNames"] == []


def test_pod_demand_reads_the_cni_annotations() -> None:
    assert pod_demand(None) == Demand()
    assert not pod_demand({})
    assert pod_demand({contract.INGRESS_BANDWIDTH: "10M", contract.EGRESS_BANDWIDTH: "1.5G"}) == Demand(
        10_000_000, 1_500_000_000)
    assert pod_demand({contract.EGRESS_BANDWIDTH: "1Ki"}) == Demand(0, 1024)
    assert pod_demand({contract.EGRESS_BANDWIDTH: "0.5"}) == Demand(0, 1)  # whole bits, rounded up
    with pytest.raises(InvalidInput, match=r"kubernetes\.io/egress-bandwidth.*not a Kubernetes quantity"):
        pod_demand({contract.EGRESS_BANDWIDTH: "fast"})
    with pytest.raises(InvalidInput, match=r"kubernetes\.io/ingress-bandwidth.*negative"):
        pod_demand({contract.INGRESS_BANDWIDTH: "-1M"})


def test_which_pods_are_checked() -> None:
    assert not is_checked(None)
    assert not is_checked({contract.WARMUP: "false", "other": "x"})
    assert is_checked({contract.WARMUP: "true"})
    assert is_checked({contract.INGRESS_BANDWIDTH: "1M"})
    assert is_checked({contract.EGRESS_BANDWIDTH: "1M"})


def test_node_capacity_label_first_then_annotation() -> None:
    label = {"name": "n", "labels": {contract.NODE_BANDWIDTH: "10G"},
             "annotations": {contract.NODE_BANDWIDTH: "1G"}}
    assert node_capacity(label) == 10_000_000_000
    assert node_capacity({"name": "n", "annotations": {contract.NODE_BANDWIDTH: "1G"}}) == 1_000_000_000
    assert node_capacity({"name": "n"}) is None
    with pytest.raises(InvalidInput, match=r"node n label harbinger\.io/bandwidth"):
        node_capacity({"name": "n", "labels": {contract.NODE_BANDWIDTH: "lots"}})


@pytest.mark.parametrize(("bits", "text"), [
    (0, "0"), (999, "999"), (1000, "1k"), (25_000_000, "25M"), (1_500_000_000, "1.5G"),
    (1_000_000_000, "1G"), (123_456_789, "123M"), (12_345_678, "12.3M"), (1_999_999, "1.99M"),
    (-5_000_000, "-5M"), (950_000_000, "950M"), (100_000, "100k"), (10**19, "10E"),
    (2_900_000_000, "2.9G"), (1_050_000, "1.05M"),
])
def test_describe_is_short_and_never_overstates(bits: int, text: str) -> None:
    assert describe(bits) == text
