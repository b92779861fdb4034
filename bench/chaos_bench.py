"""Chaos benchmark: seconds from an SLO breach to every fault removed, p50 and p99 over
repeated runs, on this machine.

Each run: the three local services behind chaos sidecars (frontend -> checkout ->
payments), a 40 req/s open-loop load, a real Prometheus scraping every second, and an
error experiment on payments whose second step (30 %) breaks the callers' 10 % SLO.

Figures per run:
- detect: from the breaking step's fault being written to the breach being declared
  (scrape interval + rate window + ``breach_samples`` consecutive samples);
- remove: from the declared breach to the backend having removed every fault;
- cleared: from the declared breach to the payments sidecar reporting no fault in force
  (what callers see: the sidecar re-reads its annotations file every 100 ms).

Writes ``bench/results/chaos.json`` and ``chaos.md``. Run: ``.venv/bin/python bench/chaos_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chaos.backends.files import AnnotationsFileBackend  # noqa: E402
from chaos.experiment import SLO, Experiment, FaultKind  # noqa: E402
from chaos.faults import Fault  # noqa: E402
from chaos.monitor import Monitor, Queries  # noqa: E402
from chaos.record import RunStatus  # noqa: E402
from chaos.runner import RunConfig, run_experiment  # noqa: E402
from harbinger.prometheus import PrometheusClient  # noqa: E402
from harbinger_dev.chaosdemo import LoadGenerator, Topology, local_topology  # noqa: E402
from harbinger_dev.localcluster import LocalPrometheus  # noqa: E402

RESULTS = REPO / "bench" / "results"
CONFIG = RunConfig(dwell_seconds=4.0, baseline_seconds=2.0, sample_interval_seconds=0.5, fault_ttl_seconds=20.0,
                   recovery_seconds=0.0)
WINDOW_SECONDS = 4.0


def _experiment(run: int) -> Experiment:
    return Experiment(
        name=f"bench-{run}", kind=FaultKind.ERROR, target="payments", watch=["checkout", "frontend"],
        steps=[Fault(abort_status=503, abort_percent=p) for p in (1.0, 30.0)],
        slo=SLO(max_error_rate=0.10, max_p99_seconds=2.0, min_throughput_ratio=0.3, breach_samples=2))


async def _watch_sidecar(topology: Topology, cleared: list[float], stop: asyncio.Event) -> None:
    """Record the wall time whenever payments' sidecar goes from a fault in force to none."""
    url = f"{topology.sidecars['payments'].admin_url}/fault"
    was_active = False
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url) as response:
                active = (await response.json())["active"]
            if was_active and not active:
                cleared.append(time.time())
            was_active = active
            await asyncio.sleep(0.02)


async def _one(run: int, topology: Topology, monitor: Monitor) -> dict[str, Any]:
    experiment = _experiment(run)
    backend = AnnotationsFileBackend(experiment, {s: [p.annotations_file] for s, p in topology.sidecars.items()})
    applied: dict[int, float] = {}
    cleared: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_sidecar(topology, cleared, stop))
    try:
        record = await run_experiment(experiment, backend, monitor, CONFIG,
                                      on_step=lambda i, _: applied.__setitem__(i, time.time()))
        await asyncio.sleep(1.0)  # the watcher polls every 20 ms; give it time to see the sidecar clear
    finally:
        stop.set()
        await watcher
    if record.status is not RunStatus.BREACHED or record.breach is None or record.rollback is None:
        return {"run": run, "status": record.status.value}
    detected = record.breach.detected_at.timestamp()
    return {
        "run": run, "status": record.status.value, "breached_service": record.breach.service,
        "breached_step": record.breach.step_index + 1,
        "detect_seconds": round(detected - applied[record.breach.step_index], 4),
        "remove_seconds": record.rollback.seconds,
        "cleared_seconds": round(cleared[0] - detected, 4) if cleared else None,
    }


def _summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(array, 50)), 4), "p99": round(float(np.percentile(array, 99)), 4),
            "max": round(float(array.max()), 4), "n": int(array.size)}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("aiohttp", "prometheus-client", "pydantic", "kubernetes-asyncio", "numpy"):
        versions[package] = metadata.version(package)
    try:
        out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=10)
        versions["prometheus"] = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        versions["prometheus"] = "unknown"
    return versions


async def main(runs: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with LocalPrometheus(scrape_interval="1s") as prometheus, tempfile.TemporaryDirectory() as workdir:
        async with local_topology(Path(workdir), prometheus, job_prefix="bench-") as topology:
            for service in topology.sidecars:
                prometheus.wait_for(f'up{{job="{topology.job(service)}"}} == 1', 30.0)
            client = PrometheusClient(prometheus.url)
            monitor = Monitor(client, namespace="default", window_seconds=WINDOW_SECONDS,
                              queries=Queries(selector=topology.selector))
            try:
                async with LoadGenerator(topology.entry_url, rate=40, max_seconds=60 + runs * 20) as load:
                    await asyncio.sleep(WINDOW_SECONDS + 1)
                    for run in range(runs):
                        results.append(await _one(run, topology, monitor))
                        print(json.dumps(results[-1]), file=sys.stderr)
                        await asyncio.sleep(WINDOW_SECONDS + 1)  # let the rate window forget the errors
                    sent = load.stats.sent
            finally:
                await client.close()
    breached = [r for r in results if r["status"] == "breached"]
    return {
        "benchmark": "chaos: seconds from SLO breach to faults removed",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
        "versions": _versions(),
        "setup": {"runs": runs, "load_rps": 40, "requests_sent": sent, "scrape_interval_s": 1,
                  "rate_window_s": WINDOW_SECONDS, "sample_interval_s": CONFIG.sample_interval_seconds,
                  "breach_samples": 2, "sidecar_poll_s": 0.1, "backend": "local annotations files"},
        "breached_runs": len(breached),
        "detect_seconds": _summary([r["detect_seconds"] for r in breached]) if breached else None,
        "remove_seconds": _summary([r["remove_seconds"] for r in breached]) if breached else None,
        "cleared_seconds": _summary([r["cleared_seconds"] for r in breached if r["cleared_seconds"] is not None])
        if breached else None,
        "runs": results,
    }


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['benchmark']}", "", f"{result['when']} on {result['machine']['platform']}, "
             f"{result['machine']['cpus']} CPUs; " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), "",
             f"{result['breached_runs']} of {result['setup']['runs']} runs breached as designed "
             f"(load {result['setup']['load_rps']} req/s, scrape 1 s, rate window {WINDOW_SECONDS:g} s).", "",
             "| seconds | p50 | p99 | max | n |", "| --- | --- | --- | --- | --- |"]
    for key, label in (("detect_seconds", "fault on -> breach detected"),
                       ("remove_seconds", "breach detected -> faults removed (backend)"),
                       ("cleared_seconds", "breach detected -> sidecar has no fault in force")):
        s = result.get(key)
        if s:
            lines.append(f"| {label} | {s['p50']} | {s['p99']} | {s['max']} | {s['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    options = parser.parse_args()
    outcome = asyncio.run(main(options.runs))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(outcome, indent=2))
    (RESULTS / "chaos.md").write_text(_markdown(outcome))
    print(_markdown(outcome))
