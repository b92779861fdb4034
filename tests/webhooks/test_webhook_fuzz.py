"""100,000 AdmissionReview bodies a tenant (or a broken client) could send, through the
webhook's answer (the HTTP handler's whole decision, without the socket): valid pods with
odd harbinger.io annotations, mutated reviews, wrong types, deep nesting, huge numbers,
unicode digits, random bytes. Never a 5xx, never an internal error, every 200 an allowing
AdmissionReview whose patch applies to the pod. A fixed seed: a failure replays."""

from __future__ import annotations

import base64
import copy
import json
import random
import time
from typing import TYPE_CHECKING, Any

import jsonpatch
from prometheus_client import REGISTRY

from harbinger import contract
from webhooks.server import answer

if TYPE_CHECKING:
    from conftest import World

BODIES = 100_000
KEYS = [contract.CAPACITY_PROFILE, contract.CHAOS_UPSTREAM_PORT, contract.CHAOS, contract.RESOURCES,
        contract.WARMUP_FROM, contract.WARMUP_UNTIL, contract.PLAN, contract.INJECT, contract.SERVICE,
        "kubernetes.io/egress-bandwidth", "kubernetes.io/ingress-bandwidth", contract.CHAOS_FAULT, "a/b", "~1"]
ODD_TEXT = ["", "²", "٣", "8080", "99999999", "-1", "0", "1e309", "NaN", "10E", "1P", "1e999999999", "true",
            "enabled", "forecast", "{", "[]", "null", '{"replicas": 1e400}', '{"replicas": 3}',
            '{"rps_per_replica": 1e308, "bytes_per_request": 1e308}', '{"min_replicas": 9, "max_replicas": 3}',
            "2030-01-01T00:00:00Z", "2030-13-45T99:00:00Z", "9999-12-31T23:59:59Z", "\x00", "\ud800", "é" * 300]


def odd_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9)
    if choice == 0:
        return rng.choice([0, -1, 2**63, 10**30, 1.5, float("1e308")])
    if choice == 1:
        return rng.choice(ODD_TEXT)
    if choice == 2:
        return None
    if choice == 3:
        return rng.choice([True, False])
    if choice == 4 and depth < 4:
        return [odd_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    if choice == 5 and depth < 4:
        return {rng.choice(["name", "containers", "annotations", "x"]): odd_json(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    return "".join(rng.choice("abc09²/-.{}") for _ in range(rng.randrange(6)))


def annotation_value(rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        depth = rng.choice([50, 5000])
        return "[" * depth + "]" * depth
    if choice == 1:
        return json.dumps({rng.choice(["rps_per_replica", "min_replicas", "bytes_per_request", "headroom", "zz"]):
                           odd_json(rng) for _ in range(rng.randrange(4))})
    return rng.choice(ODD_TEXT)


def pod(rng: random.Random) -> dict[str, Any]:
    annotations = {rng.choice(KEYS): annotation_value(rng) for _ in range(rng.randrange(6))}
    containers: list[dict[str, Any]] = [{"name": "app", "image": "img"}]
    if rng.random() < 0.5:
        containers[0]["ports"] = [{"containerPort": rng.choice([1, 80, 65535, 9000])}]
    if rng.random() < 0.5:
        containers[0]["resources"] = {rng.choice(["requests", "limits"]): {
            rng.choice(["cpu", "memory"]): rng.choice(["100m", "1", "64Mi", "1e3", "0"])}}
    if rng.random() < 0.2:
        containers.append({"name": contract.CHAOS_SIDECAR_NAME, "image": "x"})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "annotations": annotations,
                         "labels": {contract.APP_NAME_LABEL: rng.choice(["web", "x", "ü"])}},
            "spec": {"containers": containers}}


def mutate_structure(rng: random.Random, review: dict[str, Any]) -> dict[str, Any]:
    """Put an odd value somewhere in the review."""
    broken = copy.deepcopy(review)
    path = rng.choice([("request",), ("request", "object"), ("request", "object", "metadata"),
                       ("request", "object", "spec"), ("request", "object", "spec", "containers"),
                       ("request", "uid"), ("request", "operation"), ("request", "kind"), ("request", "namespace"),
                       ("request", "object", "metadata", "annotations")])
    node: Any = broken
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node[path[-1]] = odd_json(rng)
    return broken


def body(rng: random.Random, world: World) -> bytes:
    choice = rng.randrange(10)
    review = json.loads(world.body(pod(rng), namespace=rng.choice(["shop", "chaotic", "elsewhere", "kube-system"])))
    if choice < 6:
        return json.dumps(review).encode()
    if choice < 9:
        return json.dumps(mutate_structure(rng, review)).encode()
    return rng.choice([b"", b"{", b"[]", b"null", b"\xff\xfe", b"[" * 10_000 + b"]" * 10_000,
                       rng.randbytes(rng.randrange(64))])


async def test_a_hundred_thousand_reviews_never_give_a_5xx(world: World) -> None:
    world.namespace("shop")
    world.namespace("chaotic", chaos=True)
    world.namespace("elsewhere", opted_in=False)
    world.deployments.put(world.deployment("web", "shop", annotations={contract.PLAN: '{"replicas": 2}'}))
    world.forecasts.put(world.forecast("web", [10.0, 40.0]), "shop")
    rng = random.Random(20261205)
    internal_before = REGISTRY.get_sample_value("harbinger_webhook_errors_total", {"reason": "internal"}) or 0.0
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    for _ in range(BODIES):
        sent = body(rng, world)
        status, _, reply = await answer(world.mutator, sent)
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400), (status, sent[:300])
        if status == 200:
            response = json.loads(reply)["response"]
            assert response["allowed"] is True
            if "patch" in response:
                obj = json.loads(sent)["request"]["object"]
                jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
    elapsed = time.perf_counter() - started
    internal = (REGISTRY.get_sample_value("harbinger_webhook_errors_total", {"reason": "internal"}) or 0.0)
    print(f"webhook fuzz: {BODIES} bodies, answers {statuses}, {internal - internal_before:.0f} internal errors, "
          f"{elapsed:.1f} s")
    assert internal == internal_before  # no review needed the last-resort path
    assert statuses.get(200, 0) > BODIES // 2 and statuses.get(400, 0) > BODIES // 20
