"""End to end on this machine: three services behind chaos sidecars, a bounded load, a real
Prometheus. An experiment ramps, the breach is detected, the faults are gone within 5 s and
the report names the service and step that broke."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from chaos.backends.files import AnnotationsFileBackend
from chaos.experiment import Experiment
from chaos.monitor import Monitor, Queries
from chaos.record import RunStatus
from chaos.report import write_report
from chaos.runner import RunConfig, run_experiment
from harbinger.prometheus import PrometheusClient
from harbinger_dev.chaosdemo import LoadGenerator, Topology
from harbinger_dev.localcluster import LocalPrometheus


async def test_ramp_breaks_at_the_step_that_overwhelms_callers_and_rolls_back(
    topology: Topology, prometheus: LocalPrometheus, fast_config: RunConfig, tmp_path: Path,
    error_experiment: Callable[..., Experiment], annotation_paths: dict[str, list[Path]], window_seconds: float,
    queries: Queries,
) -> None:
    experiment = error_experiment()
    backend = AnnotationsFileBackend(experiment, annotation_paths)
    client = PrometheusClient(prometheus.url)
    monitor = Monitor(client, namespace="default", window_seconds=window_seconds, queries=queries)
    faults_seen: list[int] = []
    try:
        async with LoadGenerator(topology.entry_url, rate=40, max_seconds=90):
            await asyncio.sleep(window_seconds)  # let the rate window fill with steady traffic
            record = await run_experiment(experiment, backend, monitor, fast_config,
                                          on_step=lambda i, _: faults_seen.append(i))
            # The moment run_experiment returns, rollback is done; check the sidecars agree.
            cleared = time.monotonic()
            states = await topology.fault_states()
    finally:
        await client.close()

    assert record.status is RunStatus.BREACHED
    assert record.breach is not None
    assert record.breach.service in {"frontend", "checkout"}
    assert record.breach.step_index == 2, record.breach  # 1 % and 2 % stay under the 10 % SLO; 30 % does not
    assert faults_seen == [0, 1, 2]
    assert [s.outcome for s in record.steps] == ["held", "held", "breached"]
    assert record.rollback is not None and record.rollback.error is None
    assert record.rollback.seconds < 5.0
    assert not any(state["active"] for state in states.values()), states
    del cleared

    analysis = write_report(record, tmp_path / record.run_id)
    assert analysis["breach"]["service"] == record.breach.service
    assert analysis["breach"]["step"] == 3
    assert "HTTP 503 on 30% of requests" in analysis["breach"]["intensity"]
    broke = {s["service"]: s["broke"] for s in analysis["services"]}
    assert broke[record.breach.service]["step"] == 3
    assert analysis["weaknesses"] and "retry" in analysis["weaknesses"][0]["change"]
    html = (tmp_path / record.run_id / "report.html").read_text()
    assert "data:image/png;base64," in html and record.breach.service in html
