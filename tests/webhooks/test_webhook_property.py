"""Property test over generated and mutated AdmissionReviews, through the HTTP handler:
never a 5xx; every 200 is a valid AdmissionReview whose patch applies cleanly to the
object, and the webhook re-run on its own output patches nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import jsonpatch
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harbinger import contract
from webhooks.server import build_app

if TYPE_CHECKING:
    from conftest import World

keys = st.sampled_from([
    "a", "x/y", "t~1", "~", "kubernetes.io/egress-bandwidth", contract.PREDICTED_TPS, contract.INJECT,
    contract.CHAOS, contract.RESOURCES, contract.WARMUP_UNTIL, contract.CAPACITY_PROFILE,
    "harbinger.io/chaos-upstream-port",
])
values = st.one_of(st.sampled_from(["true", "false", "enabled", "forecast", "{}", "{bad", "10M", "8080",
                                    "2030-01-01T00:00:00Z", '{"bytes_per_request": 1e12}']), st.text(max_size=8))
quantities = st.sampled_from(["100m", "1", "0.5", "64Mi", "2Gi", "1e3", "0"])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)


@st.composite
def containers(draw: st.DrawFn) -> dict[str, Any]:
    container: dict[str, Any] = {"name": draw(st.sampled_from(["app", "b", contract.CHAOS_SIDECAR_NAME])),
                                 "image": "img"}
    if draw(st.booleans()):
        resources: dict[str, Any] = {}
        for part in ("requests", "limits"):
            if draw(st.booleans()):
                resources[part] = draw(st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities))
        container["resources"] = resources
    if draw(st.booleans()):
        container["ports"] = [{"containerPort": draw(st.integers(1, 65535))}]
    return container


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p", "labels": {contract.APP_NAME_LABEL: draw(st.sampled_from(["web", "x"]))}}
    if draw(st.booleans()):
        metadata["annotations"] = draw(st.one_of(st.none(), st.dictionaries(keys, values, max_size=4)))
    if draw(st.booleans()):
        metadata["labels"]["pod-template-hash"] = "abc12"
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": draw(st.sampled_from(["web-abc12", "x"])),
                                        "controller": True}]
    spec: dict[str, Any] = {"containers": draw(st.lists(containers(), min_size=1, max_size=3,
                                                        unique_by=lambda c: c["name"]))}
    if draw(st.booleans()):
        spec["volumes"] = draw(st.lists(st.builds(dict, name=st.sampled_from(["v", "harbinger-podinfo"])),
                                        max_size=2, unique_by=lambda v: v["name"]))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@st.composite
def mutated(draw: st.DrawFn, review: dict[str, Any]) -> dict[str, Any]:
    """Replace or drop one field somewhere in the review."""
    review = json.loads(json.dumps(review))
    node: Any = review
    path: list[Any] = []
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)) if isinstance(node, dict) else st.integers(0, len(node) - 1))
        path.append(key)
        node = node[key]
    if not path:
        return review
    parent = review
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return review


@pytest.fixture
async def client(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    world.namespace(chaos=True)
    world.namespace("other", opted_in=False)
    world.deployments.put(world.deployment(annotations={contract.RESOURCES: "forecast"}))
    world.forecasts.put(world.forecast("web", [10, 80]))
    async with TestClient(TestServer(build_app(world.mutator))) as test_client:
        yield test_client


def reviews(world_body: Any) -> st.SearchStrategy[dict[str, Any]]:
    base = st.builds(lambda pod, ns, op: json.loads(world_body(pod, namespace=ns, operation=op)),
                     pods(), st.sampled_from(["shop", "other", "kube-system"]),
                     st.sampled_from(["CREATE", "CREATE", "UPDATE"]))
    return st.one_of(base, base.flatmap(mutated))


async def check(client: TestClient[Any, Any], world: World, review: dict[str, Any]) -> None:
    response = await client.post("/mutate", data=json.dumps(review).encode())
    text = await response.text()
    assert response.status in (200, 400), text
    event(f"HTTP {response.status}")
    if response.status == 400:
        assert text.strip()
        return
    answer = json.loads(text)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == review["request"]["uid"] and answer["response"]["allowed"] is True
    if "patch" not in answer["response"]:
        return
    event("patched")
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert patch, "an empty patch is left out, not sent"
    obj = review["request"]["object"]
    patched = jsonpatch.apply_patch(obj, patch)  # raises when the patch does not apply
    review["request"]["object"] = patched
    again = await (await client.post("/mutate", data=json.dumps(review).encode())).json()
    assert "patch" not in again["response"], "re-invoking on our own output must change nothing"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
async def test_no_5xx_and_every_patch_applies(client: TestClient[Any, Any], world: World, data: st.DataObject) -> None:
    review = data.draw(reviews(world.body))
    await check(client, world, review)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=64), st.builds(lambda v: json.dumps(v).encode(), json_values)))
async def test_arbitrary_bytes_get_400_never_5xx(client: TestClient[Any, Any], body: bytes) -> None:
    response = await client.post("/mutate", data=body)
    assert response.status == 400, await response.text()
