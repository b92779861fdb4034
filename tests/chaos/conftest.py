"""What the chaos tests share: the local three-service system behind chaos sidecars, scraped
by the session's real Prometheus, with a short-dwell run configuration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from chaos.experiment import SLO, Experiment, FaultKind
from chaos.faults import Fault
from chaos.monitor import Queries
from chaos.runner import RunConfig
from harbinger_dev.chaosdemo import Topology, local_topology
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus

REPO = Path(__file__).resolve().parents[2]

#: Seconds-scale timings against a 1 s scrape interval: rate windows of 4 s see 3-4 scrapes.
FAST = RunConfig(dwell_seconds=4.0, baseline_seconds=3.0, sample_interval_seconds=0.5, fault_ttl_seconds=20.0,
                 recovery_seconds=2.0)
WINDOW_SECONDS = 4.0


@pytest.fixture(scope="session")
async def topology(prometheus: LocalPrometheus, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Topology]:
    """Started once per test session; its scrape jobs carry a unique prefix so no other
    target's series (or this one's stale ``up``) can be mistaken for it."""
    workdir = tmp_path_factory.mktemp("chaos-topology")
    async with local_topology(workdir, prometheus, job_prefix=f"chaos-{uuid.uuid4().hex[:6]}-") as topo:
        for service in topo.sidecars:
            await asyncio.to_thread(prometheus.wait_for, f'up{{job="{topo.job(service)}"}} == 1', 30.0)
        yield topo


@pytest.fixture
def queries(topology: Topology) -> Queries:
    return Queries(selector=topology.selector)


def _error_experiment(name: str = "error-payments", *, percents: tuple[float, ...] = (1.0, 2.0, 30.0),
                      dwell: float | None = None) -> Experiment:
    """Errors in payments; frontend and checkout must keep 10 % errors at most. Steps 1 and 2
    cannot reach that; step 3 (30 %) must break it."""
    return Experiment(
        name=name, kind=FaultKind.ERROR, target="payments", watch=["checkout", "frontend"],
        steps=[Fault(abort_status=503, abort_percent=p) for p in percents], dwell_seconds=dwell,
        slo=SLO(max_error_rate=0.10, max_p99_seconds=2.0, min_throughput_ratio=0.3, breach_samples=2),
        predicted_rps={"payments": 40.0, "checkout": 40.0, "frontend": 50.0},
    )


ErrorExperiment = Callable[..., Experiment]


@pytest.fixture
def error_experiment() -> ErrorExperiment:
    """``error_experiment(name=..., percents=(...), dwell=...)``."""
    return _error_experiment


@pytest.fixture
def fast_config() -> RunConfig:
    return FAST


@pytest.fixture
def window_seconds() -> float:
    return WINDOW_SECONDS


@pytest.fixture
def annotation_paths(topology: Topology) -> dict[str, list[Path]]:
    """Each local service's sidecar annotations file, as the file backend takes them."""
    return {s: [p.annotations_file] for s, p in topology.sidecars.items()}


@pytest.fixture(scope="module")
def virtual_service_crd(cluster: LocalCluster) -> None:
    """Istio's VirtualService CRD (as manifests/crds ships it) on the real apiserver."""
    cluster.kubectl("apply", "-k", str(REPO / "manifests" / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/virtualservices.networking.istio.io")


@pytest.fixture
async def custom(kube: client.ApiClient, virtual_service_crd: None) -> AsyncIterator[client.CustomObjectsApi]:
    yield client.CustomObjectsApi(kube)
