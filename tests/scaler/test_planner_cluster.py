"""The planner on the real control plane: floors raised one warm-up ahead of a scripted
peak and turned into pods by the real HPA and ReplicaSet controllers, lowered after the
stabilization window; bottlenecks first when Nodes are short; forecast-only changes nothing;
of two planners, one acts. What one tenant's bad objects do to the others: test_planner_tenancy."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from kubernetes_asyncio import client

from harbinger import contract
from harbinger.clock import ManualClock
from harbinger.errors import InvalidInput
from harbinger.graph import ServiceGraph
from harbinger.profile import CapacityProfile
from scaler.apply import DECLARED_MIN_REPLICAS, DECLARED_REPLICAS
from scaler.controller import Planner
from scaler.headroom import ShortTermFloors, lead_seconds
from scaler.inputs import PlannerInputs
from scaler.leader import LeaderElector

NODE_SELECTOR = "harbinger-test=scaler"
T0 = datetime(2031, 3, 2, 12, 0, tzinfo=UTC)
STEP = 300
WARMUP = 120
PROFILE = CapacityProfile(rps_per_replica=10, headroom=0.0, warmup_seconds=WARMUP, min_replicas=1, max_replicas=20)
#: Quiet, then a 40 req/s peak (4 replicas) for two steps from T0 + 20 min, then quiet.
PEAK_AT = T0 + timedelta(seconds=4 * STEP)
SHAPE = [10.0] * 4 + [40.0] * 2 + [10.0] * 6

V = TypeVar("V")


def bare(by_key: Mapping[str, V]) -> dict[str, V]:
    """A run's figures by service name (every test here plans in one namespace)."""
    return {key.partition("/")[2]: value for key, value in by_key.items()}


async def read_hpa(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    response = await client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(
        name, namespace, _preload_content=False)
    body: dict[str, Any] = json.loads(await response.read())
    return body


async def read_deployment(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    response = await client.AppsV1Api(kube).read_namespaced_deployment(name, namespace, _preload_content=False)
    body: dict[str, Any] = json.loads(await response.read())
    return body


async def events(kube: client.ApiClient, namespace: str) -> list[str]:
    listed = await client.CoreV1Api(kube).list_namespaced_event(namespace)
    return [e.reason for e in listed.items if (e.source and e.source.component == "harbinger-planner")]


def planner(kube: client.ApiClient, namespace: str, clock: ManualClock, forecasts: Any, **kwargs: Any) -> Planner:
    inputs = kwargs.pop("inputs", PlannerInputs(profiles={}))
    return Planner(kube, forecasts=forecasts, clock=clock, inputs=inputs, stabilization_seconds=300,
                   namespaces=frozenset({namespace}), node_selector=NODE_SELECTOR, **kwargs)


def profile_annotation(profile: CapacityProfile = PROFILE) -> dict[str, str]:
    return {contract.CAPACITY_PROFILE: profile.model_dump_json()}


async def test_floors_rise_one_warmup_before_the_peak_and_fall_after_the_window(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, count_running: Any,
    eventually: Any, forecast: Any, scripted: Any,
) -> None:
    await scaler_nodes(2)
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", with_hpa=True, annotations=profile_annotation())
    await new_service(kube, namespace, "catalog", with_hpa=False, annotations=profile_annotation())
    source = scripted({s: forecast(s, T0, SHAPE, step_seconds=STEP) for s in ("checkout", "catalog")})
    clock = ManualClock(T0)
    plans = planner(kube, namespace, clock, source)

    report = await plans.run_once()
    assert report.outcome == "applied" and bare(report.floors) == {"checkout": 1, "catalog": 1}
    assert (await read_hpa(kube, namespace, "checkout"))["spec"]["minReplicas"] == 1

    # One second before the warm-up lead: still nothing to raise.
    await clock.advance((PEAK_AT - T0).total_seconds() - WARMUP - 1)
    report = await plans.run_once()
    assert bare(report.floors) == {"checkout": 1, "catalog": 1} and not report.changes

    # Exactly one warm-up before the peak: both floors go up.
    await clock.advance(1)
    report = await plans.run_once()
    assert {(c.service, c.field, c.before, c.after) for c in report.changes} == {
        ("checkout", "spec.minReplicas", 1, 4), ("catalog", "spec.replicas", 1, 4)}
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 4
    assert hpa["metadata"]["annotations"][DECLARED_MIN_REPLICAS] == "1"
    deployment = await read_deployment(kube, namespace, "checkout")
    annotations = deployment["metadata"]["annotations"]
    assert annotations[contract.NEXT_PEAK] == "2031-03-02T12:20:00Z"
    assert annotations[contract.WARMUP_FROM] == "2031-03-02T12:18:00Z"
    assert annotations[contract.WARMUP_UNTIL] == "2031-03-02T12:20:00Z"
    plan = json.loads(annotations[contract.PLAN])
    assert plan["replicas"] == 4 and plan["peak_tps"] == 40.0
    catalog = await read_deployment(kube, namespace, "catalog")
    assert catalog["spec"]["replicas"] == 4
    assert catalog["metadata"]["annotations"][DECLARED_REPLICAS] == "1"

    # The real HPA controller (minReplicas) and ReplicaSet controller turn that into pods.
    for service in ("checkout", "catalog"):
        await eventually(lambda s=service: _at_least(count_running(kube, namespace, s), 4), timeout=90,
                         what=f"4 Running {service} pods")
    assert await events(kube, namespace) == ["FloorRaised", "FloorRaised"]

    # The peak is over at +30 min, but the floor is held for the 300 s window ...
    await clock.advance((PEAK_AT - T0).total_seconds() + 2 * STEP - clock_offset(clock))
    report = await plans.run_once()
    assert bare(report.floors) == {"checkout": 4, "catalog": 4} and not report.changes
    # ... and lowered back to exactly what was declared once the window is over.
    await clock.advance(301)
    report = await plans.run_once()
    assert {(c.service, c.before, c.after) for c in report.changes} == {("checkout", 4, 1), ("catalog", 4, 1)}
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 1
    assert DECLARED_MIN_REPLICAS not in (hpa["metadata"].get("annotations") or {})
    catalog = await read_deployment(kube, namespace, "catalog")
    assert catalog["spec"]["replicas"] == 1
    assert DECLARED_REPLICAS not in (catalog["metadata"].get("annotations") or {})
    await eventually(lambda: _exactly(count_running(kube, namespace, "catalog"), 1), timeout=90,
                     what="catalog back to 1 Running pod")
    assert sorted(await events(kube, namespace)) == ["FloorLowered", "FloorLowered", "FloorRaised", "FloorRaised"]


async def assert_untouched(kube: client.ApiClient, namespace: str, name: str, hpa_before: dict[str, Any]) -> None:
    """Nothing of the planner's on the HPA or the Deployment (the HPA controller itself may
    still update the status), and no Event."""
    hpa = await read_hpa(kube, namespace, name)
    assert hpa["spec"] == hpa_before["spec"]
    deployment = await read_deployment(kube, namespace, name)
    for obj in (hpa, deployment):
        managers = {entry["manager"] for entry in obj["metadata"].get("managedFields") or []}
        assert contract.FIELD_MANAGER not in managers
    assert contract.PLAN not in (deployment["metadata"].get("annotations") or {})
    assert await events(kube, namespace) == []


def clock_offset(clock: ManualClock) -> float:
    return (clock.now() - T0).total_seconds()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


async def _exactly(count: Any, n: int) -> bool:
    return bool(await count == n)


async def test_short_capacity_goes_to_bottlenecks_and_callees_first(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, count_running: Any,
    eventually: Any, forecast: Any, scripted: Any,
) -> None:
    # One node with 8 pod slots: 3 taken by the current pods, 5 free for 9 wanted.
    await scaler_nodes(1, pods=8)
    namespace = await make_namespace(opted_in=True)
    chain = ("frontend", "checkout", "payments")
    for service in chain:
        await new_service(kube, namespace, service, annotations=profile_annotation())
    for service in chain:
        await eventually(lambda s=service: _exactly(count_running(kube, namespace, s), 1), timeout=90,
                         what=f"{service}'s first pod Running")
    graph = ServiceGraph.build(chain, [("frontend", "checkout"), ("checkout", "payments")])
    # The frontend is the most loaded; it still waits for what it calls.
    peaks = {"frontend": 40.0 * 3, "checkout": 40.0, "payments": 40.0}
    source = scripted({s: forecast(s, T0, [p] * 4, step_seconds=STEP) for s, p in peaks.items()})
    clock = ManualClock(T0)
    plans = planner(kube, namespace, clock, source, inputs=PlannerInputs(graph=graph))

    report = await plans.run_once()
    assert report.allocation is not None and report.allocation.short
    assert tuple(k.partition("/")[2] for k in report.allocation.order) == ("payments", "checkout", "frontend")
    assert bare(report.floors) == {"frontend": 12, "checkout": 4, "payments": 4}
    assert [(c.service, c.after) for c in report.changes] == [("payments", 4), ("checkout", 3)]
    assert (await read_hpa(kube, namespace, "frontend"))["spec"]["minReplicas"] == 1
    await eventually(lambda: _exactly(count_running(kube, namespace, "payments"), 4), timeout=90,
                     what="4 Running payments pods")


async def test_forecast_only_changes_nothing(
    kube: client.ApiClient, make_namespace: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile_annotation())
    before = await read_hpa(kube, namespace, "checkout")
    source = scripted({"checkout": forecast("checkout", T0, [80.0] * 4, step_seconds=STEP)})
    plans = planner(kube, namespace, ManualClock(T0), source, forecast_only=True)

    report = await plans.run_once()
    assert report.outcome == "forecast_only"
    assert bare(report.floors) == {"checkout": 8} and not report.changes
    await assert_untouched(kube, namespace, "checkout", before)


async def test_two_planners_only_the_lease_holder_acts(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    await scaler_nodes(1)
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile_annotation())
    source = scripted({"checkout": forecast("checkout", T0, [60.0] * 12, step_seconds=STEP)})
    clock = ManualClock(T0)
    lease = f"planner-{uuid.uuid4().hex[:6]}"
    electors = [LeaderElector(kube, name=lease, namespace=namespace, identity=who, duration_seconds=15,
                              clock=clock) for who in ("planner-a", "planner-b")]
    planners = [planner(kube, namespace, clock, source, elector=e, identity=e.identity) for e in electors]

    won = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
    assert sorted(won) == [False, True]
    leader, follower = (0, 1) if won[0] else (1, 0)
    # The follower keeps trying: it sees the leader's record (and when, on its own clock).
    assert not await electors[follower].try_acquire_or_renew()
    outcomes = [(await p.run_once()).outcome for p in planners]
    assert outcomes[leader] == "applied" and outcomes[follower] == "follower"
    assert (await read_hpa(kube, namespace, "checkout"))["spec"]["minReplicas"] == 6

    # The leader stops renewing: after the lease duration the other takes over, and the
    # old leader knows it no longer leads without asking the apiserver.
    await clock.advance(16)
    assert not electors[leader].is_leader()
    assert await electors[follower].try_acquire_or_renew()
    assert not await electors[leader].try_acquire_or_renew()
    body = await client.CoordinationV1Api(kube).read_namespaced_lease(lease, namespace)
    assert body.spec.holder_identity == electors[follower].identity
    assert body.spec.lease_transitions == 1


async def test_a_graph_naming_a_missing_service_orders_without_it(
    kube: client.ApiClient, make_namespace: Any, new_service: Any, forecast: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile_annotation())
    source = scripted({"checkout": forecast("checkout", T0, [80.0] * 4, step_seconds=STEP)})
    unknown = PlannerInputs(graph=ServiceGraph.build(["checkout", "ledger"], [("checkout", "ledger")]))
    report = await planner(kube, namespace, ManualClock(T0), source, inputs=unknown, forecast_only=True).run_once()
    assert report.outcome == "forecast_only" and bare(report.floors) == {"checkout": 8}
    assert report.inputs is not None and report.inputs.graph.calls == {f"{namespace}/checkout": frozenset()}


# --- the short-horizon floor (scaler.headroom) on the real control plane ----------------------
class SeriesHistory:
    """A HistorySource over recorded per-minute rates: only what had happened by ``end``."""

    def __init__(self, series: dict[str, pd.Series]) -> None:
        self.series = series

    async def history(self, service: str, *, namespace: str = "", end: datetime, lookback: timedelta,
                      step_seconds: int) -> pd.Series:
        if step_seconds != 60:
            raise InvalidInput(f"only 60 s steps, not {step_seconds}", source="history")
        known = self.series[service]
        return known.loc[pd.Timestamp(end - lookback) : pd.Timestamp(end - timedelta(seconds=step_seconds))]


def jumps_every_hour(service: str) -> pd.Series:
    """10 req/s (1 replica), and every hour from :20 to :30 40 req/s (4 replicas at
    saturation): the delayed HPA is short in the first minutes of every jump."""
    index = pd.date_range(T0 - timedelta(days=2), T0 + timedelta(hours=2), freq="60s", inclusive="left")
    minute = index.minute
    return pd.Series(np.where((minute >= 20) & (minute < 30), 40.0, 10.0), index=index, name=service)


def short_term_planner(kube: client.ApiClient, namespace: str, clock: ManualClock, scripted: Any,
                       **kwargs: Any) -> Planner:
    """No forecaster's forecast: the short-horizon floor alone plans."""
    history = SeriesHistory({"checkout": jumps_every_hour("checkout")})
    return planner(kube, namespace, clock, scripted({}),
                   short_term=ShortTermFloors(history, lookback_seconds=2 * 86400), **kwargs)


async def test_the_short_horizon_floor_rises_before_a_jump_the_hpa_would_miss_and_falls_after(
    kube: client.ApiClient, make_namespace: Any, scaler_nodes: Any, new_service: Any, count_running: Any,
    eventually: Any, scripted: Any,
) -> None:
    await scaler_nodes(1)
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", with_hpa=True, annotations=profile_annotation())
    clock = ManualClock(T0)
    plans = short_term_planner(kube, namespace, clock, scripted)
    # Learned on the two days before: the HPA falls short at every jump, so a floor is added.
    report = await plans.run_once()
    assert report.outcome == "applied" and bare(report.floors) == {"checkout": 1}
    learned = bare(report.learned)["checkout"]
    assert {"fallback_target", "margin"} <= set(learned)
    assert "quantile" in learned or {"exponent", "level_intervals"} <= set(learned), learned
    lead = WARMUP + lead_seconds()  # a warm-up, a planner interval and an HPA sync ahead
    jump = T0 + timedelta(minutes=20)

    await clock.advance((jump - T0).total_seconds() - lead - 1)
    report = await plans.run_once()
    assert bare(report.floors) == {"checkout": 1} and not report.changes
    await clock.advance(1)
    report = await plans.run_once()
    assert [(c.service, c.field, c.before, c.after) for c in report.changes] == [
        ("checkout", "spec.minReplicas", 1, 4)]
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 4
    plan = json.loads((await read_deployment(kube, namespace, "checkout"))["metadata"]["annotations"][contract.PLAN])
    assert plan["replicas"] == 4 and plan["model_version"] == "short-horizon"
    assert plan["learned"]["fallback_target"] == learned["fallback_target"]
    await eventually(lambda: _at_least(count_running(kube, namespace, "checkout"), 4), timeout=90,
                     what="4 Running checkout pods")

    # During the jump the floor stays; after its last minute it is held for the 300 s window ...
    for at in (jump + timedelta(minutes=5), jump + timedelta(minutes=9, seconds=30),
               jump + timedelta(minutes=14, seconds=30)):
        await clock.advance((at - clock.now()).total_seconds())
        report = await plans.run_once()
        assert bare(report.floors) == {"checkout": 4}, at
    # ... and lowered back to what was declared once it is over.
    await clock.advance(1)
    report = await plans.run_once()
    assert [(c.service, c.before, c.after) for c in report.changes] == [("checkout", 4, 1)]
    hpa = await read_hpa(kube, namespace, "checkout")
    assert hpa["spec"]["minReplicas"] == 1
    assert DECLARED_MIN_REPLICAS not in (hpa["metadata"].get("annotations") or {})


async def test_forecast_only_records_the_short_horizon_floor_and_changes_nothing(
    kube: client.ApiClient, make_namespace: Any, new_service: Any, scripted: Any,
) -> None:
    namespace = await make_namespace(opted_in=True)
    await new_service(kube, namespace, "checkout", annotations=profile_annotation())
    before = await read_hpa(kube, namespace, "checkout")
    jump = T0 + timedelta(minutes=20)
    clock = ManualClock(jump - timedelta(seconds=WARMUP + lead_seconds()))
    plans = short_term_planner(kube, namespace, clock, scripted, forecast_only=True)
    report = await plans.run_once()
    assert report.outcome == "forecast_only"
    assert bare(report.floors) == {"checkout": 4} and not report.changes
    assert bare(report.plans)["checkout"].model_version == "short-horizon"
    await assert_untouched(kube, namespace, "checkout", before)
