"""Scheduled rehearsals: run each declared ChaosExperiment when its schedule says, and each
planned experiment in its window, one at a time, and keep the cluster clean.

On start the controller sweeps every fault a previous controller left (it is the only
one: its Deployment runs one replica with the Recreate strategy), before it reads the
plan, so a bad plan never keeps leftovers in place. Then, every
``controller_interval_seconds``: sweep expired faults, then run the oldest declared
experiment that is due (a team asked for it), else the highest-ranked planned experiment
whose window is open and still long enough for it. Each (experiment, window) of the plan
runs once, each declared object once; reports go to ``reports_dir`` and, with the API
record, to a ConfigMap the experiment's object owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from chaos.backends.base import FaultBackend
from chaos.bands import with_bands
from chaos.experiment import Experiment, load_experiments
from chaos.experiments_api import ExperimentRecords, ObjectRef
from chaos.metrics import PLAN_ERRORS, PLAN_VALID, RUNS
from chaos.monitor import Monitor
from chaos.record import RunRecord
from chaos.report import write_report
from chaos.runner import RunConfig, new_run_id, run_experiment
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.errors import InvalidInput
from harbinger.lifecycle import stop_on_signals

log = logging.getLogger(__name__)

Sweep = Callable[[bool], Awaitable[int]]
BackendFactory = Callable[[Experiment], FaultBackend]


def due(experiments: list[Experiment], now: datetime, done: set[tuple[str, datetime]],
        config: RunConfig) -> Experiment | None:
    """The first experiment (in rank order) whose window is open, long enough, and not yet used."""
    for experiment in experiments:
        window = experiment.window
        if window is None or not window.contains(now) or (experiment.name, window.start) in done:
            continue
        needed = experiment.total_seconds(config.dwell_seconds, config.baseline_seconds)
        if now + timedelta(seconds=needed) <= window.end:
            return experiment
    return None


async def run_controller(
    plan: Path | None, *, config: RunConfig, reports_dir: Path, interval_seconds: float, make_backend: BackendFactory,
    make_monitor: Callable[[Experiment], Monitor], sweep: Sweep, stop: asyncio.Event | None = None, once: bool = False,
    clock: Clock = SYSTEM_CLOCK, experiment_records: ExperimentRecords | None = None,
) -> list[RunRecord]:
    """Sweep first (no plan needed for that), then rehearse from the plan until stopped. Nothing
    a cycle meets ends the controller: a bad plan is reported and read again next cycle, a
    failed sweep is retried, a rehearsal that fails (Prometheus gone, the apiserver refusing)
    is rolled back and reported like any other."""
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        swept = await _sweep(sweep, everything=True)
        if swept:
            log.warning("swept %d fault(s) left by a previous controller", swept)
        if experiment_records is not None:
            interrupted = await experiment_records.mark_interrupted(clock.now())
            if interrupted:
                log.warning("%d rehearsal(s) a previous controller left running are marked Interrupted", interrupted)
        done: set[tuple[str, datetime]] = set()
        records: list[RunRecord] = []
        experiments: list[Experiment] = []
        def needed(experiment: Experiment) -> float:
            return experiment.total_seconds(config.dwell_seconds, config.baseline_seconds)

        while not stop.is_set():
            await _sweep(sweep, everything=False)
            declared = (await experiment_records.due(clock.now(), needed, config.dwell_seconds)
                        if experiment_records is not None else [])
            if declared:
                record = await _rehearse(declared[0].experiment, config, reports_dir, make_backend, make_monitor,
                                         stop, clock, experiment_records, declared[0].ref)
                if record is not None:
                    records.append(record)
                continue
            experiments = _read_plan(plan, experiments) if plan is not None else []
            experiment = due(experiments, clock.now(), done, config)
            if experiment is not None and experiment.window is not None:
                done.add((experiment.name, experiment.window.start))
                refused = (await experiment_records.refused(experiment, config.dwell_seconds)
                           if experiment_records is not None else None)
                if refused:
                    RUNS.labels(status="refused").inc()
                    log.warning("planned rehearsal %s/%s skipped: %s", experiment.namespace, experiment.name, refused)
                    continue
                record = await _rehearse(experiment, config, reports_dir, make_backend, make_monitor, stop, clock,
                                         experiment_records)
                if record is not None:
                    records.append(record)
                continue
            if once:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)
    return records


async def _sweep(sweep: Sweep, *, everything: bool) -> int:
    try:
        return await sweep(everything)
    except Exception as exc:  # the apiserver away for a moment: the next cycle sweeps again
        log.error("sweep failed (retried next cycle): %s: %s", type(exc).__name__, exc)
        return 0


def _read_plan(plan: Path, previous: list[Experiment]) -> list[Experiment]:
    """The plan's experiments; on a bad plan, the previous ones (none at start), reported."""
    try:
        experiments = load_experiments(plan)
    except InvalidInput as exc:
        PLAN_ERRORS.inc()
        PLAN_VALID.set(0)
        log.error("the rehearsal plan is invalid (read again next cycle; %s): %s",
                  "keeping the previous plan" if previous else "nothing runs until it is fixed", exc)
        return previous
    PLAN_VALID.set(1)
    return experiments


async def _rehearse(experiment: Experiment, config: RunConfig, reports_dir: Path, make_backend: BackendFactory,
                    make_monitor: Callable[[Experiment], Monitor], stop: asyncio.Event,
                    clock: Clock, experiment_records: ExperimentRecords | None = None,
                    declared: ObjectRef | None = None) -> RunRecord | None:
    log.info("rehearsal: %s/%s (%s)", experiment.namespace, experiment.name,
             "declared" if declared else f"planned, risk {experiment.risk:.3f}")
    run_id = new_run_id(experiment, clock.now())
    ref = None
    if experiment_records is not None:
        ref = await experiment_records.started(experiment, run_id, clock.now(), declared)
    try:
        record = await run_experiment(experiment, make_backend(experiment), make_monitor(experiment), config,
                                      abort=stop, handle_signals=False, clock=clock, run_id=run_id)
        if experiment_records is not None:  # the planner's forecasts, for the report's band
            record = with_bands(record, await experiment_records.forecasts(experiment.namespace))
        analysis = write_report(record, reports_dir / record.run_id)
    except Exception as exc:  # run_experiment rolls back and records its own failures; this is the rest
        RUNS.labels(status="error").inc()
        log.error("rehearsal %s could not run: %s: %s", experiment.name, type(exc).__name__, exc)
        if experiment_records is not None and ref is not None:
            await experiment_records.failed(ref, run_id, f"{type(exc).__name__}: {exc}", clock.now())
        return None
    if experiment_records is not None and ref is not None:
        await experiment_records.finished(ref, record, reports_dir / record.run_id, clock.now())
    RUNS.labels(status=record.status.value).inc()
    log.info("%s: %s; report in %s", experiment.name, analysis["status"], reports_dir / record.run_id)
    return record
