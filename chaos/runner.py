"""One experiment run, top to bottom: baseline, ramp, watch, roll back, record.

1. Baseline: sample the watched services for ``baseline_seconds``; if they are already
   outside the SLO, inject nothing.
2. Ramp: for each step, put its fault in place (with an expiry ``fault_ttl_seconds``
   ahead, renewed while the step is held) and sample every ``sample_interval_seconds``
   for ``dwell_seconds``. ``breach_samples`` breaching samples in a row end the ramp.
3. Roll back, always (``finally``): every fault removed, and how long that took from the
   breach's detection recorded. SIGTERM and SIGINT end the ramp the same way.
4. Recovery: keep sampling for ``recovery_seconds`` so the report shows the way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from chaos.backends.base import FaultBackend
from chaos.experiment import Experiment
from chaos.faults import Fault
from chaos.monitor import Baseline, Breach, Monitor, Sample, baseline_of, breaches, steady_state_violations
from chaos.record import (
    BaselineRecord,
    BreachRecord,
    RollbackRecord,
    RunRecord,
    RunStatus,
    SampleRecord,
    StepRecord,
)
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.lifecycle import stop_on_signals

log = logging.getLogger(__name__)

REMOVE_ATTEMPTS = 3


@dataclass(frozen=True)
class RunConfig:
    dwell_seconds: float = 30.0
    baseline_seconds: float = 30.0
    sample_interval_seconds: float = 2.0
    fault_ttl_seconds: float = 120.0
    recovery_seconds: float = 10.0


class _Run:
    def __init__(self, experiment: Experiment, backend: FaultBackend, monitor: Monitor, config: RunConfig,
                 abort: asyncio.Event, on_step: Callable[[int, Fault], None] | None, clock: Clock,
                 run_id: str | None = None) -> None:
        self.clock = clock
        self.experiment = experiment
        self.backend = backend
        self.monitor = monitor
        self.config = config
        self.abort = abort
        self.on_step = on_step
        self.dwell = experiment.dwell_seconds or config.dwell_seconds
        self.watched = experiment.watched()
        self.record = RunRecord(
            run_id=run_id or new_run_id(experiment, self.clock.now()),
            experiment=experiment, status=RunStatus.HELD, started=self.clock.now(), dwell_seconds=self.dwell)
        self.detected_monotonic: float | None = None

    def _keep(self, samples: list[Sample], phase: str, step: int | None) -> None:
        self.record.samples.extend(SampleRecord(
            time=s.time, phase=phase, step_index=step, service=s.service, error_rate=s.error_rate,
            p99_seconds=s.p99_seconds, throughput_rps=s.throughput_rps) for s in samples)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, waking early on abort; True when aborted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.abort.wait(), max(seconds, 0.0))
        return self.abort.is_set()

    async def baseline(self) -> dict[str, Baseline]:
        collected: list[Sample] = []
        deadline = time.monotonic() + self.config.baseline_seconds
        while True:
            samples = await self.monitor.sample(self.watched)
            collected.extend(samples)
            self._keep(samples, "baseline", None)
            if time.monotonic() >= deadline or await self._pause(self.config.sample_interval_seconds):
                break
        return {s: baseline_of([c for c in collected if c.service == s]) for s in self.watched}

    async def ramp(self, baselines: dict[str, Baseline]) -> None:
        streak: dict[str, int] = {}
        for index, fault in enumerate(self.experiment.steps):
            step = StepRecord(index=index, fault=fault, description=fault.describe(), started=self.clock.now())
            self.record.steps.append(step)
            log.info("%s: step %d/%d: %s", self.experiment.name, index + 1, len(self.experiment.steps),
                     step.description)
            applied_at = time.monotonic()
            await self.backend.apply(fault, self.clock.now() + timedelta(seconds=self.config.fault_ttl_seconds))
            if self.on_step:
                self.on_step(index, fault)
            step_end = applied_at + self.dwell
            while True:
                if await self._pause(min(self.config.sample_interval_seconds, max(step_end - time.monotonic(), 0))):
                    step.outcome, step.ended = "aborted", self.clock.now()
                    self.record.status = RunStatus.ABORTED
                    return
                samples = await self.monitor.sample(self.watched)
                self._keep(samples, "step", index)
                found = self._judge(samples, baselines, streak)
                if found:
                    self.detected_monotonic = time.monotonic()
                    worst = found[0]
                    self.record.breach = BreachRecord(
                        service=worst.service, metric=worst.metric, value=worst.value, limit=worst.limit,
                        step_index=index, detected_at=self.clock.now())
                    self.record.status = RunStatus.BREACHED
                    step.outcome, step.ended = "breached", self.clock.now()
                    log.warning("%s: breach at step %d: %s", self.experiment.name, index + 1,
                                "; ".join(b.describe() for b in found))
                    return
                now = time.monotonic()
                if now >= step_end:
                    break
                if now - applied_at > self.config.fault_ttl_seconds / 2:
                    # Renew the expiry: it must outlive the step, yet stay short enough that a
                    # dead controller's faults end soon.
                    await self.backend.apply(fault, self.clock.now() + timedelta(seconds=self.config.fault_ttl_seconds))
                    applied_at = now
            step.outcome, step.ended = "held", self.clock.now()

    def _judge(self, samples: list[Sample], baselines: dict[str, Baseline], streak: dict[str, int]) -> list[Breach]:
        needed = self.experiment.slo.breach_samples
        confirmed: list[Breach] = []
        for sample in samples:
            found = breaches(sample, baselines[sample.service], self.experiment.slo)
            streak[sample.service] = streak.get(sample.service, 0) + 1 if found else 0
            if streak[sample.service] >= needed:
                confirmed.extend(found)
        return confirmed

    async def rollback(self, reason: str) -> None:
        started_wall, started = self.clock.now(), time.monotonic()
        origin = self.detected_monotonic if self.detected_monotonic is not None else started
        restored, error = 0, None
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                restored += await self.backend.remove_all()
                error = None
                break
            except Exception as exc:  # every attempt counts; the expiry is the last line of defence
                error = f"{type(exc).__name__}: {exc}"
                log.error("%s: removing faults failed (attempt %d): %s", self.experiment.name, attempt + 1, error)
                await asyncio.sleep(0.2 * (attempt + 1))
        finished = time.monotonic()
        self.record.rollback = RollbackRecord(
            reason=reason, started=started_wall, finished=self.clock.now(), seconds=round(finished - origin, 4),
            objects_restored=restored, error=error)
        log.info("%s: faults removed (%s) in %.3fs after %s", self.experiment.name, restored,
                 finished - origin, "detection" if self.detected_monotonic is not None else "rollback start")

    async def recovery(self) -> None:
        deadline = time.monotonic() + self.config.recovery_seconds
        while time.monotonic() < deadline:
            if await self._pause(self.config.sample_interval_seconds):
                return
            self._keep(await self.monitor.sample(self.watched), "recovery", None)


def new_run_id(experiment: Experiment, now: datetime) -> str:
    """``<experiment>-<UTC time>-<random>``: unique, and sorted by time within an experiment."""
    return f"{experiment.name}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


async def run_experiment(
    experiment: Experiment, backend: FaultBackend, monitor: Monitor, config: RunConfig, *,
    abort: asyncio.Event | None = None, on_step: Callable[[int, Fault], None] | None = None,
    handle_signals: bool = True, clock: Clock = SYSTEM_CLOCK, run_id: str | None = None,
) -> RunRecord:
    """Run ``experiment`` to its end or first breach; faults are always removed before this returns.

    With ``handle_signals``, SIGTERM and SIGINT end the ramp (and roll back) while it runs;
    a caller with its own handlers (the controller) passes False and sets ``abort`` itself."""
    run = _Run(experiment, backend, monitor, config, abort or asyncio.Event(), on_step, clock, run_id)
    with stop_on_signals(run.abort) if handle_signals else contextlib.nullcontext(run.abort):
        injected = False
        try:
            baselines = await run.baseline()
            run.record.baseline = {s: BaselineRecord(error_rate=b.error_rate, p99_seconds=b.p99_seconds,
                                                     throughput_rps=b.throughput_rps) for s, b in baselines.items()}
            problems = steady_state_violations(baselines, experiment.slo)
            if run.abort.is_set():
                run.record.status = RunStatus.ABORTED
            elif problems:
                run.record.status = RunStatus.NOT_STEADY
                run.record.notes.extend(problems)
            else:
                injected = True
                await run.ramp(baselines)
        except Exception as exc:
            # Prometheus unreachable, the apiserver refusing: the run ends here, its faults come
            # off below, and the record (so the report) says why; the caller goes on.
            run.record.status = RunStatus.FAILED
            run.record.notes.append(f"ended by {type(exc).__name__}: {exc}")
            log.error("%s: ended by %s: %s", experiment.name, type(exc).__name__, exc)
        except BaseException as exc:
            run.record.status = RunStatus.ABORTED
            run.record.notes.append(f"ended by {type(exc).__name__}: {exc}")
            raise
        finally:
            if injected:
                reason = {RunStatus.BREACHED: "breach", RunStatus.HELD: "completed",
                          RunStatus.ABORTED: "aborted"}.get(run.record.status, "error")
                await asyncio.shield(run.rollback(reason))
            run.record.targets = backend.describe_targets()
        if injected and run.record.status not in (RunStatus.ABORTED, RunStatus.FAILED):
            try:
                await run.recovery()
            except Exception as exc:  # the faults are off already; only the recovery curve is lost
                run.record.notes.append(f"recovery not sampled: {type(exc).__name__}: {exc}")
    run.record.finished = clock.now()
    return run.record
