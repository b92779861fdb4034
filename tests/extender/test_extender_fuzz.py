"""100,000 ExtenderArgs bodies through the extender's filter and prioritize (exactly what
the HTTP handler calls), over a cluster state fed with random pod and namespace events
carrying odd bandwidth annotations: never a 5xx, never an internal error, every 200 a
well-formed answer, and the node budgets stay consistent. A fixed seed: a failure replays."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from extender.answer import Extender
from extender.bandwidth import MAX_NODE_BITS
from extender.state import ClusterState
from harbinger import contract

BODIES = 100_000
EVENTS = 20_000
NODES = [f"n{i}" for i in range(12)]
QUANTITIES = ["10M", "1G", "0", "-1", "1P", "10E", "1e999999999", "1e30", "²", "٣", "", "NaN", "9" * 400, "1.5Gi",
              "100m", "1e3", "0.0001", "1Ei", "  5M ", "5MM", "M"]


def odd(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice([0, -1, 2**63, 10**30, 1.5, 1e308])
    if choice == 1:
        return rng.choice(QUANTITIES)
    if choice == 2:
        return None
    if choice == 3:
        return rng.choice([True, False])
    if choice == 4 and depth < 3:
        return [odd(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 5 and depth < 3:
        return {rng.choice(["metadata", "uid", "name", "annotations", "x"]): odd(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    return "".join(rng.choice("abn0-/") for _ in range(rng.randrange(6)))


def annotations(rng: random.Random) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in (contract.INGRESS_BANDWIDTH, contract.EGRESS_BANDWIDTH, contract.WARMUP, contract.SERVICE):
        if rng.random() < 0.5:
            found[key] = "true" if key == contract.WARMUP else rng.choice([*QUANTITIES, "cart", "a/b"])
    return found


def pod(rng: random.Random, uid: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p{uid}", "namespace": rng.choice(["shop", "other", "kube-system", ""]),
                         "uid": f"u{uid}", "annotations": annotations(rng),
                         "labels": {contract.APP_NAME_LABEL: rng.choice(["cart", "web", "x"])}},
            "spec": {"nodeName": rng.choice([*NODES, None, "unknown"]),
                     "schedulerName": rng.choice([contract.SCHEDULER_NAME, "default-scheduler", ""])},
            "status": {"phase": rng.choice(["Running", "Pending", "Succeeded"])}}


def body(rng: random.Random, uid: int) -> bytes:
    args: dict[str, Any] = {"Pod": pod(rng, uid), "Nodes": None,
                            "NodeNames": rng.sample([*NODES, "unknown", ""], rng.randrange(0, 8))}
    choice = rng.randrange(10)
    if choice < 7:
        return json.dumps(args).encode()
    if choice < 9:
        key = rng.choice(["Pod", "NodeNames", "Nodes"])
        args[key] = odd(rng)
        if rng.random() < 0.5:
            args["Pod"] = {"metadata": odd(rng)}
        return json.dumps(args).encode()
    return rng.choice([b"", b"{", b"[]", b"null", b"\xff", b"[" * 5000 + b"]" * 5000, rng.randbytes(32)])


def feed(state: ClusterState, rng: random.Random) -> None:
    for name in NODES:
        value = rng.choice(["1G", "10G", "1P", "10E", "bad", "1e40"])
        state.on_node_event("ADDED", {"metadata": {"name": name, "labels": {contract.NODE_BANDWIDTH: value}}})
    for _ in range(EVENTS):
        if rng.random() < 0.05:
            state.on_namespace_event(rng.choice(["ADDED", "MODIFIED", "DELETED"]), {"metadata": {
                "name": rng.choice(["shop", "other"]),
                "labels": {contract.ENABLED_LABEL: rng.choice(["true", "false"])}}})
            continue
        state.on_pod_event(rng.choice(["ADDED", "MODIFIED", "DELETED"]), pod(rng, rng.randrange(2000)))


def test_a_hundred_thousand_scheduler_calls_and_odd_pods_never_break_the_extender() -> None:
    rng = random.Random(20261205)
    state = ClusterState(clock=lambda: 0.0)
    started = time.perf_counter()
    feed(state, rng)
    capacity = state.capacity[1:len(state.slot_names)]
    assert int(capacity.max()) <= MAX_NODE_BITS
    assert (state.used_egress >= 0).all() and (state.used_ingress >= 0).all()
    extender = Extender(state)
    errors_before = sum(REGISTRY.get_sample_value("harbinger_extender_requests_total",
                                                  {"verb": verb, "outcome": "error"}) or 0.0
                        for verb in ("filter", "prioritize"))
    statuses: dict[int, int] = {}
    for uid in range(BODIES):
        sent = body(rng, uid)
        verb: Callable[[bytes], tuple[int, bytes]] = extender.filter if uid % 2 else extender.prioritize
        status, answer = verb(sent)
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400), (status, sent[:200])
        decoded = json.loads(answer)
        if status == 200 and verb == extender.filter:
            assert set(decoded) >= {"NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
        elif status == 200:
            assert isinstance(decoded, list) and all(0 <= p["Score"] <= 10 for p in decoded)
        else:
            assert decoded["Error"]
    elapsed = time.perf_counter() - started
    errors = sum(REGISTRY.get_sample_value("harbinger_extender_requests_total", {"verb": verb, "outcome": "error"})
                 or 0.0 for verb in ("filter", "prioritize"))
    print(f"extender fuzz: {BODIES} bodies and {EVENTS} watch events, answers {statuses}, "
          f"{errors - errors_before:.0f} internal errors, {elapsed:.1f} s")
    assert errors == errors_before
    assert statuses.get(200, 0) > BODIES // 2 and statuses.get(400, 0) > BODIES // 20
