"""The chaos controller keeps running and keeps the cluster clean whatever its inputs do: a
bad plan does not stop the start-up sweep (it is reported and read again), and a Prometheus
that goes away ends the rehearsal safely (faults rolled back, the report says why)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from chaos.backends.files import AnnotationsFileBackend
from chaos.backends.pods import sweep_pods
from chaos.controller import run_controller
from chaos.experiment import SLO, Experiment, Plan, Window, dump
from chaos.faults import FAULT_KEYS, ActiveFault, Fault
from chaos.monitor import Monitor, Queries
from chaos.report import REPORT_JSON
from chaos.runner import RunConfig
from chaos.sidecar.podinfo import read_annotations, write_annotations
from harbinger import contract
from harbinger.prometheus import PrometheusClient
from harbinger_dev.chaosdemo import LoadGenerator, Topology
from harbinger_dev.localcluster import LocalCluster, LocalPrometheus
from harbinger_dev.localcluster.cluster import free_port

BAD_PLAN = "generated_at: 2025-01-01T00:00:00Z\nexperiments: [{name: BAD, kind: gremlins}]\n"
EMPTY_PLAN = "generated_at: 2025-01-01T00:00:00Z\nexperiments: []\n"


async def _left_pod(core: client.CoreV1Api, namespace: str) -> None:
    """A pod a dead controller left with a fault that has not expired yet."""
    annotations = ActiveFault(Fault(abort_status=503), datetime.now(UTC) + timedelta(hours=1), "left").annotations()
    annotations["harbinger.io/chaos-original"] = json.dumps({key: None for key in FAULT_KEYS})
    body: dict[str, Any] = {
        "metadata": {"name": "payments-a", "annotations": annotations,
                     "labels": {contract.APP_NAME_LABEL: "payments", contract.CHAOS_OWNED_LABEL: "patched"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    await core.create_namespaced_pod(namespace, body)  # type: ignore[arg-type]  # plain dicts work too


async def _pod_annotations(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    return dict((await core.read_namespaced_pod("payments-a", namespace)).metadata.annotations or {})


async def test_the_controller_process_sweeps_even_with_a_bad_plan_and_keeps_running(
    cluster: LocalCluster, kube: client.ApiClient, make_namespace: Any, tmp_path: Path, eventually: Any,
) -> None:
    core = client.CoreV1Api(kube)
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    await _left_pod(core, namespace)
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD_PLAN)
    metrics_port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harbinger.cli", "chaos", "controller", f"--plan={plan}",
        f"--kubeconfig={cluster.kubeconfig}", f"--prometheus-url=http://127.0.0.1:{free_port()}", "--cycle=0.2",
        f"--reports-dir={tmp_path / 'reports'}", f"--metrics-port={metrics_port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async def swept() -> bool:
            assert process.returncode is None, (await process.communicate())[1].decode()[-2000:]
            return not FAULT_KEYS & (await _pod_annotations(core, namespace)).keys()

        await eventually(swept, timeout=30, what="the start-up sweep despite the bad plan")

        async def metrics() -> str:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, \
                        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                    return await response.text()
            return ""

        async def plan_valid(value: str) -> bool:
            return f"harbinger_chaos_plan_valid {value}" in await metrics()

        await eventually(lambda: plan_valid("0.0"), timeout=30, what="the bad plan reported on /metrics")
        assert "harbinger_chaos_plan_errors_total 0.0" not in await metrics()
        plan.write_text(EMPTY_PLAN)  # fixed while it runs: read on the next cycle
        await eventually(lambda: plan_valid("1.0"), timeout=30, what="the fixed plan read again")
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert "the rehearsal plan is invalid" in err.decode() and "kind" in err.decode()


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_bad_plan_is_reported_and_read_again_while_sweeps_go_on(
    kube: client.ApiClient, make_namespace: Any, tmp_path: Path,
) -> None:
    core = client.CoreV1Api(kube)
    namespace = await make_namespace(opted_in=True, labels={contract.CHAOS: contract.CHAOS_ENABLED})
    await _left_pod(core, namespace)
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD_PLAN)
    errors_before = _metric("harbinger_chaos_plan_errors_total")
    stop = asyncio.Event()
    sweeps: list[bool] = []

    async def sweep(everything: bool) -> int:
        sweeps.append(everything)
        return await sweep_pods(kube, everything=everything)

    def no_runs(experiment: Experiment) -> Any:
        raise AssertionError(f"nothing is due, yet {experiment.name} was started")

    controller = asyncio.create_task(run_controller(
        plan, config=RunConfig(), reports_dir=tmp_path / "reports", interval_seconds=0.05, make_backend=no_runs,
        make_monitor=no_runs, sweep=sweep, stop=stop))
    try:
        while len(sweeps) < 3:
            assert not controller.done(), controller
            await asyncio.sleep(0.02)
        assert sweeps[0] is True  # the start-up sweep comes first, with no plan read yet
        assert not FAULT_KEYS & (await _pod_annotations(core, namespace)).keys()
        assert _metric("harbinger_chaos_plan_errors_total") >= errors_before + 2  # each cycle reads it again
        assert _metric("harbinger_chaos_plan_valid") == 0
        plan.write_text(EMPTY_PLAN)
        while _metric("harbinger_chaos_plan_valid") != 1:
            assert not controller.done(), controller
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        assert await asyncio.wait_for(controller, 30) == []


class TcpProxy:
    """A loopback TCP forwarder to a real server, which the test can cut: the server becomes
    unreachable for the controller while it stays up for everyone else."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None


def _due_now(experiment: Experiment) -> Experiment:
    now = datetime.now(UTC)
    return experiment.model_copy(update={
        "window": Window(start=now - timedelta(minutes=1), end=now + timedelta(hours=1)),
        "slo": SLO(max_error_rate=1.0, max_p99_seconds=30.0, min_throughput_ratio=0.0)})


async def _wait_report(reports: Path, controller: asyncio.Task[Any], timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while not list(reports.glob(f"*/{REPORT_JSON}")):
        assert not controller.done(), controller
        assert asyncio.get_running_loop().time() < deadline, "no report written"
        await asyncio.sleep(0.1)
    (path,) = reports.glob(f"*/{REPORT_JSON}")
    return dict(json.loads(path.read_text()))


@contextlib.asynccontextmanager
async def _controller(plan: Path, experiment: Experiment, annotation_paths: dict[str, list[Path]],
                      prometheus_url: str, queries: Queries, config: RunConfig,
                      reports: Path) -> AsyncIterator[asyncio.Task[Any]]:
    dump(Plan(generated_at=datetime.now(UTC), experiments=[experiment]), plan)
    stop = asyncio.Event()
    async with PrometheusClient(prometheus_url) as prometheus:
        def monitor(exp: Experiment) -> Monitor:
            return Monitor(prometheus, namespace=exp.namespace, window_seconds=4.0, queries=queries)

        task = asyncio.create_task(run_controller(
            plan, config=config, reports_dir=reports, interval_seconds=0.2,
            make_backend=lambda exp: AnnotationsFileBackend(exp, annotation_paths), make_monitor=monitor,
            sweep=lambda everything: asyncio.sleep(0, 0), stop=stop))
        try:
            yield task
            assert not task.done(), task  # it kept running after the failed rehearsal
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


async def test_prometheus_lost_mid_rehearsal_rolls_back_reports_and_the_controller_goes_on(
    topology: Topology, prometheus: LocalPrometheus, tmp_path: Path, queries: Queries, fast_config: RunConfig,
    annotation_paths: dict[str, list[Path]], error_experiment: Callable[..., Experiment],
) -> None:
    experiment = _due_now(error_experiment("prometheus-lost", percents=(50.0,), dwell=120.0))
    payments = topology.sidecars["payments"].annotations_file
    async with LoadGenerator(topology.entry_url, rate=20, max_seconds=90), TcpProxy(prometheus.url) as proxy:
        for service in experiment.watched():
            await asyncio.to_thread(
                prometheus.wait_for,
                f'sum(rate(harbinger_chaos_requests_total{{job="{topology.job(service)}"}}[4s])) > 0', 30.0)
        async with _controller(tmp_path / "plan.yaml", experiment, annotation_paths, proxy.url, queries,
                               fast_config, tmp_path / "reports") as controller:
            deadline = asyncio.get_running_loop().time() + 30
            while contract.CHAOS_FAULT not in read_annotations(payments):
                assert not controller.done(), controller
                assert asyncio.get_running_loop().time() < deadline, "the fault was never injected"
                await asyncio.sleep(0.05)
            await proxy.cut()  # Prometheus is gone for the controller, mid-step
            report = await _wait_report(tmp_path / "reports", controller)
    assert report["status"] == "failed"
    assert report["rollback"]["reason"] == "error" and report["rollback"]["objects_restored"] == 1
    assert any("PrometheusUnavailable" in note for note in report["notes"]), report["notes"]
    assert not FAULT_KEYS & read_annotations(payments).keys()


async def test_prometheus_unreachable_from_the_start_injects_nothing_and_reports_why(
    tmp_path: Path, queries: Queries, fast_config: RunConfig, error_experiment: Callable[..., Experiment],
) -> None:
    experiment = _due_now(error_experiment("prometheus-never", percents=(50.0,)))
    annotations = tmp_path / "payments.annotations"
    write_annotations(annotations, {"app": "payments"})
    async with _controller(tmp_path / "plan.yaml", experiment, {"payments": [annotations]},
                           f"http://127.0.0.1:{free_port()}", queries, fast_config, tmp_path / "reports") as controller:
        report = await _wait_report(tmp_path / "reports", controller)
    assert report["status"] == "failed" and report["rollback"] is None
    assert any("PrometheusUnavailable" in note for note in report["notes"]), report["notes"]
    assert read_annotations(annotations) == {"app": "payments"}
