"""The planner learns what a profile leaves undeclared, on the real control plane: the
warm-up from the Deployment's own pods (scheduled late on purpose, so creation to Ready
takes seconds), the burst dispersion from a recorded trace; a declared value wins, and
what was learned is in the run's report, on the plan annotation and in the metrics."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.profile import CapacityProfile
from models.traffic import TraceHistory
from scaler.controller import Planner
from scaler.learn import learn_burst_dispersion
from scaler.plan import step_replicas

T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
STEP = 300
PEAK_AT = T0 + timedelta(seconds=4 * STEP)
#: 1 replica's worth, then a 4-replica peak for two steps from T0 + 20 min.
SHAPE = [10.0] * 4 + [40.0] * 2 + [10.0] * 6
TAINT = ("harbinger-test", "scaler")
#: Every field declared but ``warmup_seconds``.
NO_WARMUP = {k: v for k, v in CapacityProfile(rps_per_replica=10, headroom=0.0, max_replicas=20).model_dump().items()
             if k != "warmup_seconds"}

V = TypeVar("V")


def bare(by_key: Mapping[str, V]) -> dict[str, V]:
    """A run's figures by service name (every test here plans in one namespace)."""
    return {key.partition("/")[2]: value for key, value in by_key.items()}


def body(name: str, replicas: int, profile: dict[str, Any], node_label: dict[str, str]) -> dict[str, Any]:
    labels = {contract.APP_NAME_LABEL: name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {contract.CAPACITY_PROFILE: json.dumps(profile)}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                     "nodeSelector": node_label, "terminationGracePeriodSeconds": 0,
                     "tolerations": [{"key": TAINT[0], "operator": "Equal", "value": TAINT[1],
                                      "effect": "NoSchedule"}]}}},
    }


async def pods(kube: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    response = await client.CoreV1Api(kube).list_namespaced_pod(
        namespace, label_selector=f"{contract.APP_NAME_LABEL}={name}", _preload_content=False)
    items: list[dict[str, Any]] = json.loads(await response.read())["items"]
    return items


def ready_after(pod: dict[str, Any]) -> float | None:
    ready = [c for c in pod["status"].get("conditions") or [] if c["type"] == "Ready" and c["status"] == "True"]
    if not ready:
        return None
    created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return (datetime.fromisoformat(ready[0]["lastTransitionTime"].replace("Z", "+00:00")) - created).total_seconds()


def learned_gauge(namespace: str, service: str, field: str) -> float | None:
    return REGISTRY.get_sample_value("harbinger_planner_learned_profile_value",
                                     {"namespace": namespace, "service": service, "field": field})


async def plan_annotation(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    deployment = await client.AppsV1Api(kube).read_namespaced_deployment(name, namespace)
    plan: dict[str, Any] = json.loads(deployment.metadata.annotations[contract.PLAN])
    return plan


async def test_the_warmup_is_learned_from_the_deployments_own_pods_and_a_declared_one_wins(
    kube: client.ApiClient, make_namespace: Any, make_nodes: Any, eventually: Any, forecast: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    gate = {"harbinger-learn": uuid.uuid4().hex[:8]}
    apps: Any = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, body("checkout", 3, NO_WARMUP, gate))
    await apps.create_namespaced_deployment(namespace, body("catalog", 1, {**NO_WARMUP, "warmup_seconds": 120},
                                                            gate))
    # No node takes the pods yet: creation to Ready includes the wait, as a real slow start would.
    await asyncio.sleep(4)
    await make_nodes({f"lrn-{gate['harbinger-learn']}": {"cpu": "64", "memory": "256Gi"}},
                     labels={**gate, TAINT[0]: TAINT[1]}, taint=TAINT)

    async def all_ready() -> list[float] | None:
        seen = [ready_after(p) for name in ("checkout", "catalog") for p in await pods(kube, namespace, name)]
        return [s for s in seen if s is not None] if len(seen) == 4 and None not in seen else None

    await eventually(all_ready, timeout=90, what="4 Ready pods")
    observed = [ready_after(p) for p in await pods(kube, namespace, "checkout")]
    expected = float(np.quantile(np.asarray(observed, dtype=np.float64), 0.9))
    assert 4 <= expected < 60

    clock = ManualClock(T0)
    source = scripted({s: forecast(s, T0, SHAPE, step_seconds=STEP) for s in ("checkout", "catalog")})
    planner = Planner(kube, forecasts=source, clock=clock, stabilization_seconds=300,
                      namespaces=frozenset({namespace}), node_selector="harbinger-test=scaler")
    # Half a minute before the peak: the learned warm-up (seconds) does not reach it yet, the
    # default 60 s would have; catalog's declared 120 s does.
    await clock.advance((PEAK_AT - T0).total_seconds() - 30)
    report = await planner.run_once()
    assert bare(report.learned) == {"checkout": {"warmup_seconds": pytest.approx(expected)}, "catalog": {}}
    assert bare(report.plans)["checkout"].warmup_seconds == pytest.approx(expected)
    assert bare(report.plans)["catalog"].warmup_seconds == 120
    assert bare(report.floors) == {"checkout": 1, "catalog": 4}
    assert learned_gauge(namespace, "checkout", "warmup_seconds") == pytest.approx(expected)
    assert learned_gauge(namespace, "catalog", "warmup_seconds") is None

    # Exactly the learned warm-up before the peak: checkout's floor goes up.
    await clock.advance(30 - expected)
    report = await planner.run_once()
    assert bare(report.floors)["checkout"] == 4
    assert [(c.service, c.before, c.after) for c in report.changes] == [("checkout", 3, 4)]
    plan = await plan_annotation(kube, namespace, "checkout")
    assert plan["learned"] == {"warmup_seconds": pytest.approx(expected)}
    assert plan["warmup_seconds"] == pytest.approx(expected)
    assert (await plan_annotation(kube, namespace, "catalog"))["learned"] == {}


async def test_the_burst_dispersion_is_learned_from_history_for_p50_plans(
    kube: client.ApiClient, make_namespace: Any, forecast: Any, scripted: Any, tmp_path: Path,
) -> None:
    namespace = await make_namespace(opted_in=True)
    # Three days of per-minute counts before T0: about 100 req/s, one minute in ten at 150.
    rng = np.random.default_rng(7)
    minutes = 3 * 1440
    counts = rng.poisson(100 * 60, minutes) * np.where(rng.random(minutes) < 0.1, 1.5, 1.0)
    start = T0 - timedelta(days=3)
    csv = tmp_path / "search.csv"
    csv.write_text("timestamp,value\n" + "".join(
        f"{(start + timedelta(minutes=m)):%Y-%m-%dT%H:%M:%SZ},{int(c)}\n" for m, c in enumerate(counts)))
    history = TraceHistory({"search": (csv, 1.0)})
    p50 = {**NO_WARMUP, "warmup_seconds": 60, "plan_quantile": "p50"}
    p50.pop("burst_dispersion")
    await client.AppsV1Api(kube).create_namespaced_deployment(namespace, body("search", 1, p50, {"nowhere": "x"}))

    clock = ManualClock(T0)
    source = scripted({"search": forecast("search", T0, [100.0] * 8, p50=[100.0] * 8, step_seconds=900)})
    planner = Planner(kube, forecasts=source, clock=clock, stabilization_seconds=300, forecast_only=True,
                      namespaces=frozenset({namespace}), history=history)
    report = await planner.run_once()

    seen = await history.history("search", end=T0, lookback=timedelta(days=7), step_seconds=60)
    expected = learn_burst_dispersion(seen, 900).value
    assert expected is not None and expected > 1
    assert bare(report.learned) == {"search": {"burst_dispersion": pytest.approx(expected)}}
    declared = CapacityProfile.model_validate(p50)
    learned_profile = declared.model_copy(update={"burst_dispersion": expected})
    floor = step_replicas(100.0, 100.0, learned_profile)
    assert floor > step_replicas(100.0, 100.0, declared) == 8  # 100 / 12.5 without the margin
    assert bare(report.floors) == {"search": floor}
    assert learned_gauge(namespace, "search", "burst_dispersion") == pytest.approx(expected)
