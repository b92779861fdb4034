"""10,000 annotation sets a tenant could write on a Deployment and its HPA, through every
planner step that reads them (targets, profile, plan, floor cap, declared and applied floors,
the change to write): none raises, every Deployment is planned or skipped with a reason, and
no floor leaves the platform's cap or the HPA's maximum. A fixed seed: a failure replays."""

from __future__ import annotations

import json
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from harbinger import contract
from models.forecast import Forecast
from scaler.apply import APPLIED_FLOOR, DECLARED_MIN_REPLICAS, DECLARED_REPLICAS, declared_floor, planned_change
from scaler.controller import plan_or_skip
from scaler.inputs import Skipped, build_targets
from scaler.tenancy import FloorCaps

SETS = 10_000
BATCH = 100  # Deployments read in one run
CAP = 50
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
FORECAST = Forecast(service="any", model_version="fuzz", start=T0, step_seconds=300,
                    p50=np.array([10.0, 400.0, 9e6, 0.0]), p90=np.array([12.0, 500.0, 1e7, 0.0]))
FIELDS = ("rps_per_replica", "target_utilization", "cpu_per_rps", "memory_per_rps_bytes", "warmup_seconds",
          "min_replicas", "max_replicas", "headroom", "plan_quantile", "burst_factor", "burst_dispersion",
          "bytes_per_request", "unknown_field")


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value a careless or hostile tenant might write for any field."""
    choice = rng.randrange(16)
    if choice == 0:
        return rng.randint(-10, 10)
    if choice == 1:
        return rng.choice([0, 1, 2, 5000, 10**9, 2**63, -(2**63), 10**400])
    if choice == 2:
        return rng.choice([0.0, -0.5, 0.25, 1e-300, 1e308, 3.5])
    if choice == 3:
        return rng.choice(["p50", "p90", "P90", "", "²", "٣", "1e309", "NaN", "Infinity", "two", "\x00"])
    if choice == 4:
        return None
    if choice == 5:
        return rng.choice([True, False])
    if choice == 6 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if choice == 7 and depth < 3:
        return {rng.choice(FIELDS): odd_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return rng.uniform(0, 200)


def profile_annotation(rng: random.Random) -> str:
    """A capacity-profile annotation: mostly JSON objects of (odd) fields, some not JSON at all."""
    choice = rng.randrange(10)
    if choice == 0:
        depth = rng.choice([10, 1000, 100_000])
        return "[" * depth + "]" * depth
    if choice == 1:
        return rng.choice(["", "{", "[]", "null", "nope", '{"min_replicas": 1,}', "\ud800", "NaN", "1e309"])
    if choice == 2:
        return json.dumps({"rps_per_replica": 1e308, "max_replicas": 10**6, "min_replicas": 10**6})
    fields = {rng.choice(FIELDS): odd_value(rng) for _ in range(rng.randrange(5))}
    return json.dumps(fields)


def count_text(rng: random.Random) -> str:
    return rng.choice(["1", "3", "0", "-1", "two", "", "²", "٣", "1e3", "99999999999999999999", " 4 ", "2.5",
                       str(rng.randint(0, 40))])


def tenant_objects(rng: random.Random, index: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    namespace = rng.choice(["team-a", "team-b", "team-c"])
    name = f"svc-{index}"
    annotations: dict[str, str] = {}
    if rng.random() < 0.9:
        annotations[contract.CAPACITY_PROFILE] = profile_annotation(rng)
    if rng.random() < 0.2:
        # Service names collide on purpose, within and across namespaces.
        annotations[contract.SERVICE] = rng.choice(["frontend", "checkout", "a/b", "ü", " ", name])
    if rng.random() < 0.2:
        annotations[DECLARED_REPLICAS] = count_text(rng)
    if rng.random() < 0.2:
        annotations[APPLIED_FLOOR] = count_text(rng)
    replicas = rng.choice([0, 1, 3, 40])
    deployment = {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{index}",
                               "labels": {contract.APP_NAME_LABEL: name}, "annotations": annotations},
                  "spec": {"replicas": replicas}, "status": {"replicas": replicas}}
    if rng.random() < 0.3:
        return deployment, None
    hpa_annotations = {key: count_text(rng) for key in (DECLARED_MIN_REPLICAS, APPLIED_FLOOR) if rng.random() < 0.3}
    hpa = {"metadata": {"name": name, "namespace": namespace, "annotations": hpa_annotations},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": name},
                    "minReplicas": rng.choice([1, 2, 10]), "maxReplicas": rng.choice([1, 10, 20, 200])}}
    return deployment, hpa


def test_ten_thousand_annotation_sets_never_break_a_run() -> None:
    rng = random.Random(20261205)
    caps = FloorCaps(default=CAP)
    planned = skipped = 0
    started = time.perf_counter()
    for batch in range(SETS // BATCH):
        objects = [tenant_objects(rng, batch * BATCH + i) for i in range(BATCH)]
        deployments = [d for d, _ in objects]
        found = build_targets(deployments, [h for _, h in objects if h is not None], {})
        reasons = [problem.reason for problem in found.skipped]
        assert set(reasons) <= {"InvalidCapacityProfile", "AmbiguousService"}
        labelled = sum(1 for d in deployments if contract.service_of(d["metadata"]["labels"],
                                                                     d["metadata"]["annotations"]))
        assert len(found.by_key) + len(found.skipped) == labelled
        for key, target in found.by_key.items():
            made = plan_or_skip(target, FORECAST, T0, 300)
            if isinstance(made, Skipped):
                assert made.reason == "PlanFailed" and made.message
                skipped += 1
                continue
            floor, _ = caps.bound(target.namespace, made.floor_at(T0))
            assert 0 <= floor <= CAP, key
            change = planned_change(target, floor)
            declared = declared_floor(target)
            assert change.after >= 0 and (change.after == max(floor, declared) or target.hpa is not None)
            if target.hpa is not None:
                assert change.after <= max(int(target.hpa["spec"]["maxReplicas"]), 0)
            assert not math.isnan(change.after)
            planned += 1
        skipped += len(found.skipped)
    elapsed = time.perf_counter() - started
    # The counts for docs/operations.md (run with -s to see them).
    print(f"planner fuzz: {SETS} annotation sets, {planned} planned, {skipped} skipped, 0 crashes, {elapsed:.1f} s")
    assert planned > SETS // 10 and skipped > SETS // 10  # both paths were exercised
