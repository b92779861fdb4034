"""The chaos controller as its own process (``harbinger chaos run``): killed mid-experiment,
its faults die at their expiry anyway (the sidecar drops them itself) and a sweep clears
the leftovers; stopped with SIGTERM, it removes every fault before it exits."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml

from chaos.experiment import SLO, Experiment
from chaos.faults import FAULT_KEYS, fault_from_annotations
from chaos.sidecar.podinfo import read_annotations
from harbinger_dev.chaosdemo import LoadGenerator, Topology
from harbinger_dev.localcluster import LocalPrometheus

TTL_SECONDS = 3.0


def _lenient(experiment: Experiment) -> Experiment:
    """Never breaches: the run stays mid-ramp until it is stopped."""
    return experiment.model_copy(update={"slo": SLO(max_error_rate=1.0, max_p99_seconds=30.0,
                                                    min_throughput_ratio=0.0)})


async def _start_run(experiment: Experiment, topology: Topology, prometheus: LocalPrometheus,
                     tmp_path: Path) -> asyncio.subprocess.Process:
    # The run measures a baseline first and injects nothing without traffic: wait until
    # Prometheus sees the load on every watched service.
    for service in experiment.watched():
        await asyncio.to_thread(
            prometheus.wait_for,
            f'sum(rate(harbinger_chaos_requests_total{{job="{topology.job(service)}"}}[4s])) > 0', 30.0)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json", exclude_none=True)))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harbinger.cli", "chaos", "run", str(path), *topology.annotation_flags(),
        f"--prometheus-url={prometheus.url}", f"--selector={topology.selector}", "--baseline=1",
        "--sample-interval=0.5", "--window=4", f"--ttl={TTL_SECONDS}", "--recovery=0",
        f"--reports-dir={tmp_path / 'reports'}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _wait_active(topology: Topology, service: str, process: asyncio.subprocess.Process,
                       timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (await topology.fault_states())[service]["active"]:
        if process.returncode is not None:
            out, err = await process.communicate()
            raise AssertionError(f"chaos run exited {process.returncode} before injecting: {out!r} {err!r}")
        assert time.monotonic() < deadline, f"no fault became active in {service} within {timeout}s"
        await asyncio.sleep(0.1)


async def test_killed_controller_leaves_no_fault_after_expiry(
    topology: Topology, prometheus: LocalPrometheus, tmp_path: Path, error_experiment: Callable[..., Experiment],
) -> None:
    experiment = _lenient(error_experiment("killed-run", percents=(50.0,), dwell=120.0))
    payments = topology.sidecars["payments"]
    async with LoadGenerator(topology.entry_url, rate=20, max_seconds=60):
        process = await _start_run(experiment, topology, prometheus, tmp_path)
        try:
            await _wait_active(topology, "payments", process)
        finally:
            if process.returncode is None:
                process.kill()
            await process.communicate()
        left = fault_from_annotations(read_annotations(payments.annotations_file), source="test")
        assert left is not None, "the killed run had no chance to clean up; its fault is still declared"
        # Wait out the expiry the dead controller last wrote, then the fault must be gone.
        await asyncio.sleep(max((left.expires - datetime.now(UTC)).total_seconds(), 0) + 0.3)
        state = (await topology.fault_states())["payments"]
        assert state["active"] is False, state
        async with aiohttp.ClientSession() as session:
            statuses = []
            for _ in range(30):
                async with session.get(f"http://127.0.0.1:{payments.listen_port}/") as response:
                    statuses.append(response.status)
        assert statuses == [200] * 30

    # A restarted controller sweeps what the dead one left in the annotations.
    sweep = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harbinger.cli", "chaos", "sweep", *topology.annotation_flags(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await sweep.communicate()
    assert sweep.returncode == 0, err.decode()
    assert b"swept 1 object" in err
    assert not FAULT_KEYS & read_annotations(payments.annotations_file).keys()


async def test_sigterm_mid_experiment_removes_every_fault_before_exit(
    topology: Topology, prometheus: LocalPrometheus, tmp_path: Path, error_experiment: Callable[..., Experiment],
) -> None:
    experiment = _lenient(error_experiment("terminated-run", percents=(50.0,), dwell=120.0))
    async with LoadGenerator(topology.entry_url, rate=20, max_seconds=60):
        process = await _start_run(experiment, topology, prometheus, tmp_path)
        try:
            await _wait_active(topology, "payments", process)
            process.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert process.returncode == 130, err.decode()
    for sidecar in topology.sidecars.values():
        assert not FAULT_KEYS & read_annotations(sidecar.annotations_file).keys()
    assert not any(s["active"] for s in (await topology.fault_states()).values())
    summary = json.loads(out)
    assert summary["status"] == "aborted"
    (run_dir,) = (tmp_path / "reports").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["rollback"]["reason"] == "aborted" and report["rollback"]["objects_restored"] == 1
