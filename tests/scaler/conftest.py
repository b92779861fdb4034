"""Helpers shared by the planner's tests: scripted forecasts, a seasonal-naive stand-in
for replay tests (never shipped: ``harbinger simulate`` uses the real forecaster), and
Nodes, Deployments and HPAs on the local control plane."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kubernetes_asyncio import client

from harbinger import contract
from models.forecast import Forecast
from scaler.plan import ForecastLike

TEST_LABEL = "harbinger-test"
TEST_VALUE = "scaler"


def make_forecast(service: str, start: datetime, p90: Sequence[float], *, step_seconds: int = 300,
                  p50: Sequence[float] | None = None) -> Forecast:
    values = np.asarray(p90, dtype=np.float64)
    return Forecast(service=service, model_version="scripted", start=start, step_seconds=step_seconds,
                    p50=np.asarray(p50, dtype=np.float64) if p50 is not None else values * 0.8, p90=values)


class ScriptedForecasts:
    """A ForecastSource answering with forecasts a test wrote down."""

    def __init__(self, forecasts: Mapping[str, Forecast]) -> None:
        self.forecasts_by_service = dict(forecasts)
        self.asked: list[tuple[dict[str, str], datetime]] = []

    async def forecasts(self, services: Mapping[str, str], now: datetime) -> dict[str, ForecastLike]:
        """By key (``namespace/service``): the forecast written for that key, else the one
        written for the bare service name."""
        self.asked.append((dict(services), now))
        found: dict[str, ForecastLike] = {}
        for key in services:
            forecast = self.forecasts_by_service.get(key) or self.forecasts_by_service.get(key.partition("/")[2])
            if forecast is not None:
                found[key] = forecast
        return found


class SeasonalNaive:
    """Test stand-in for the forecaster: the same step one day earlier, P90 = P50 x spread."""

    def __init__(self, step_seconds: int, *, horizon_steps: int = 24, spread: float = 1.2) -> None:
        self.step_seconds = step_seconds
        self.horizon_steps = horizon_steps
        self.spread = spread

    def forecast(self, history: pd.Series, now: datetime | None = None,
                 horizon_steps: int | None = None) -> Forecast:
        assert now is not None
        start = pd.Timestamp(now).floor(f"{self.step_seconds}s")
        assert history.index[-1] < start, "the replay must not show the forecaster the future"
        steps = [start + pd.Timedelta(seconds=self.step_seconds * i) - pd.Timedelta(days=1)
                 for i in range(horizon_steps or self.horizon_steps)]
        values = history.reindex(steps).to_numpy(dtype=np.float64)
        values = np.nan_to_num(values, nan=float(np.nanmean(history.to_numpy(dtype=np.float64))))
        return Forecast(service=str(history.name), model_version="seasonal-naive", start=start.to_pydatetime(),
                        step_seconds=self.step_seconds, p50=values, p90=values * self.spread)


# --- the local control plane ---------------------------------------------------------------
@pytest.fixture
def scaler_nodes(make_nodes: Any) -> Callable[..., Awaitable[list[str]]]:
    """``await scaler_nodes(count, pods=110)``: Ready KWOK nodes only this module's pods fit on."""

    async def make(count: int, *, pods: int = 110) -> list[str]:
        names = {f"scl-{uuid.uuid4().hex[:6]}-{i}": {"cpu": "64", "memory": "256Gi", "pods": str(pods)}
                 for i in range(count)}
        result: list[str] = await make_nodes(names, labels={TEST_LABEL: TEST_VALUE}, taint=(TEST_LABEL, TEST_VALUE))
        return result

    return make


def deployment_body(name: str, *, service: str | None = None, replicas: int = 1,
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {contract.APP_NAME_LABEL: service or name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": "example.invalid/app:1",
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                    "nodeSelector": {TEST_LABEL: TEST_VALUE},
                    "tolerations": [{"key": TEST_LABEL, "operator": "Equal", "value": TEST_VALUE,
                                     "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


def hpa_body(name: str, *, min_replicas: int = 1, max_replicas: int = 20) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }


async def create_service(kube: client.ApiClient, namespace: str, name: str, *, with_hpa: bool = True,
                         min_replicas: int = 1, annotations: dict[str, str] | None = None) -> None:
    apps: Any = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(namespace, deployment_body(name, annotations=annotations,
                                                                       replicas=min_replicas))
    if with_hpa:
        autoscaling: Any = client.AutoscalingV2Api(kube)
        await autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa_body(name,
                                                                                          min_replicas=min_replicas))


async def running_pods(kube: client.ApiClient, namespace: str, service: str) -> int:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(
        namespace, label_selector=f"{contract.APP_NAME_LABEL}={service}")
    return sum(1 for p in pods.items if p.status.phase == "Running" and not p.metadata.deletion_timestamp)


def aligned(start: datetime, step_seconds: int) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    return epoch + ((start - epoch) // timedelta(seconds=step_seconds)) * timedelta(seconds=step_seconds)


# --- fixtures, so test modules need not import this file -----------------------------------
@pytest.fixture
def forecast() -> Callable[..., Forecast]:
    """``forecast(service, start, p90, step_seconds=300, p50=None)``."""
    return make_forecast


@pytest.fixture
def scripted() -> type[ScriptedForecasts]:
    return ScriptedForecasts


@pytest.fixture
def seasonal_naive() -> type[SeasonalNaive]:
    return SeasonalNaive


@pytest.fixture
def new_service() -> Callable[..., Awaitable[None]]:
    """``await new_service(kube, namespace, name, with_hpa=True, min_replicas=1, annotations=None)``."""
    return create_service


@pytest.fixture
def count_running() -> Callable[..., Awaitable[int]]:
    """``await count_running(kube, namespace, service)``: Running pods of the service."""
    return running_pods


NODE_SELECTOR = f"{TEST_LABEL}={TEST_VALUE}"
