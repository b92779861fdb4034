"""What one experiment run did and saw: the input to its report, kept as ``run.json``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from chaos.experiment import Experiment
from chaos.faults import Fault, validation_message
from harbinger.documents import read_document, write_atomic
from harbinger.errors import InvalidInput


class RunStatus(StrEnum):
    #: Every step held.
    HELD = "held"
    #: A watched service left its steady state; faults were rolled back.
    BREACHED = "breached"
    #: Stopped by a signal or by the caller before the ramp ended.
    ABORTED = "aborted"
    #: The system was outside its SLO before anything was injected; nothing was injected.
    NOT_STEADY = "not-steady"
    #: An error (API, Prometheus) ended the run; faults were rolled back.
    FAILED = "failed"


class StepRecord(BaseModel):
    index: int
    fault: Fault
    description: str
    started: datetime
    ended: datetime | None = None
    #: ``held``, ``breached`` or ``aborted``.
    outcome: str = "running"


class SampleRecord(BaseModel):
    time: datetime
    #: ``baseline``, ``step`` or ``recovery``.
    phase: str
    step_index: int | None
    service: str
    error_rate: float | None
    p99_seconds: float | None
    throughput_rps: float | None


class BaselineRecord(BaseModel):
    error_rate: float
    p99_seconds: float
    throughput_rps: float


class BreachRecord(BaseModel):
    service: str
    metric: str
    value: float
    limit: float
    step_index: int
    detected_at: datetime


class RollbackRecord(BaseModel):
    #: Why the faults were removed: ``breach``, ``completed``, ``aborted`` or ``error``.
    reason: str
    started: datetime
    finished: datetime
    #: From breach detection (or the start of rollback, when no breach) to every fault removed.
    seconds: float
    objects_restored: int
    error: str | None = None


class ForecastBand(BaseModel):
    """One service's forecast over a run (``chaos.bands``): P50 and P90 per step from ``start``."""

    start: datetime
    step_seconds: int = Field(gt=0)
    # Finite and non-empty: JSON writes NaN as null, which would make the saved run.json
    # unreadable, and the report's mean and maximum need at least one step.
    p50: list[FiniteFloat] = Field(min_length=1)
    p90: list[FiniteFloat] = Field(min_length=1)
    model_version: str = ""

    @model_validator(mode="after")
    def _one_p90_per_p50(self) -> ForecastBand:
        if len(self.p50) != len(self.p90):
            raise ValueError(f"p50 has {len(self.p50)} steps but p90 has {len(self.p90)}")
        return self


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    experiment: Experiment
    status: RunStatus
    started: datetime
    finished: datetime | None = None
    targets: list[str] = []
    dwell_seconds: float
    baseline: dict[str, BaselineRecord] = {}
    steps: list[StepRecord] = []
    samples: list[SampleRecord] = []
    breach: BreachRecord | None = None
    rollback: RollbackRecord | None = None
    notes: list[str] = []
    #: The forecast of each involved service over the run (none when no forecast was known).
    forecasts: dict[str, ForecastBand] = {}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = read_document(path, "the run record", format="json")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(f"not a chaos run record: {validation_message(exc)}", source=str(path)) from exc
