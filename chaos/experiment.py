"""A chaos experiment: what to break, how far, for how long, and what must keep holding.

Experiments are what ``harbinger chaos generate`` writes and ``harbinger chaos run``
reads, as YAML or JSON. One file holds one experiment (a mapping) or a plan (a mapping
with an ``experiments`` list, in rank order).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chaos.faults import Fault, validation_message
from harbinger.documents import read_document
from harbinger.errors import InvalidInput

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class FaultKind(StrEnum):
    LATENCY = "latency"
    ERROR = "error"
    CPU = "cpu"
    MEMORY = "memory"
    BANDWIDTH = "bandwidth"
    DEPENDENCY_FAILURE = "dependency-failure"

    @property
    def request_level(self) -> bool:
        """Faults on requests (a mesh can inject them) rather than on a pod's resources."""
        return self in (FaultKind.LATENCY, FaultKind.ERROR, FaultKind.DEPENDENCY_FAILURE)


#: Which effect each kind's steps must carry.
KIND_EFFECT: dict[FaultKind, str] = {
    FaultKind.LATENCY: "delay", FaultKind.ERROR: "abort", FaultKind.DEPENDENCY_FAILURE: "abort",
    FaultKind.CPU: "cpu", FaultKind.MEMORY: "memory", FaultKind.BANDWIDTH: "bandwidth",
}


class BackendKind(StrEnum):
    #: The Harbinger chaos sidecar, driven by pod annotations.
    SIDECAR = "sidecar"
    #: Istio VirtualService fault injection.
    ISTIO = "istio"


class SLO(BaseModel):
    """The steady state every watched service must keep while faults are on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The highest share of requests that may fail (5xx).
    max_error_rate: float = Field(0.01, ge=0, le=1)
    #: The highest p99 latency, in seconds.
    max_p99_seconds: float = Field(1.0, gt=0)
    #: Throughput must stay above this share of the baseline's.
    min_throughput_ratio: float = Field(0.5, ge=0, le=1)
    #: Consecutive breaching samples before a breach is declared (guards against one noisy scrape).
    breach_samples: int = Field(2, ge=1, le=10)


class Window(BaseModel):
    """When an experiment may start (scheduled rehearsals)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: datetime
    end: datetime
    #: Why this window: ``before-peak`` or ``low-traffic``.
    reason: str = "before-peak"
    #: The peak this window rehearses, when ``reason`` is ``before-peak``.
    peak: datetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window start and end must carry a time zone (use Z for UTC)")
        if self.end <= self.start:
            raise ValueError("window end must be after its start")
        return self

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: FaultKind
    #: The service faults are injected into.
    target: str
    #: For a fault on one call: the caller whose requests to ``target`` are degraded (Istio only).
    caller: str | None = None
    namespace: str = "default"
    backend: BackendKind = BackendKind.SIDECAR
    #: Ramp steps, mildest first.
    steps: list[Fault] = Field(min_length=1, max_length=20)
    #: Seconds each step is held; empty means the controller's setting.
    dwell_seconds: float | None = Field(None, gt=0)
    #: Resource and dependency faults: how many of the target's pods (empty: all of them).
    pods: int | None = Field(None, ge=1)
    #: Services whose steady state is judged; empty means the target's callers, or the target.
    watch: list[str] = Field(default_factory=list)
    slo: SLO = SLO()
    #: Predicted peak load (P90 requests/s) of each service involved, from the forecast.
    predicted_rps: dict[str, float] = Field(default_factory=dict)
    window: Window | None = None
    #: Ranking score (higher runs first) and why.
    risk: float = 0.0
    rationale: list[str] = Field(default_factory=list)
    #: The share of the target's capacity the blast-radius limit allows this experiment to degrade.
    max_degraded_fraction: float | None = Field(None, ge=0, le=1)

    @field_validator("name", "target", "namespace")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _NAME.match(value) or len(value) > 253:
            raise ValueError(f"{value!r} is not a lowercase DNS name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        effect = KIND_EFFECT[self.kind]
        for i, step in enumerate(self.steps):
            if effect not in step.effects():
                raise ValueError(f"steps[{i}]: a {self.kind.value} experiment needs a {effect} fault in every step")
        if self.kind is FaultKind.DEPENDENCY_FAILURE and any(s.abort_percent < 100 for s in self.steps):
            raise ValueError("a dependency-failure experiment aborts 100% of requests in every step")
        if self.backend is BackendKind.ISTIO:
            extra = {e for s in self.steps for e in s.effects()} - {"delay", "abort"}
            if extra:
                raise ValueError(f"the istio backend injects only delays and aborts, not {sorted(extra)}")
            if self.pods is not None:
                raise ValueError("the istio backend cannot pick pods; leave 'pods' empty")
        elif self.caller is not None:
            raise ValueError("a fault on one call ('caller') needs the istio backend; the sidecar "
                             "degrades every caller of the target")
        if self.caller == self.target:
            raise ValueError("caller and target are the same service")
        return self

    def watched(self) -> list[str]:
        return list(self.watch) or [self.target]

    def total_seconds(self, default_dwell: float, baseline_seconds: float) -> float:
        return baseline_seconds + len(self.steps) * (self.dwell_seconds or default_dwell)


class Plan(BaseModel):
    """What ``chaos generate`` writes: experiments in rank order, and what was left out and why."""

    model_config = ConfigDict(extra="forbid")

    generated_at: datetime
    experiments: list[Experiment]
    skipped: list[str] = Field(default_factory=list)


def _read_mapping(path: Path) -> Any:
    return read_document(path, "the experiment or plan")


def load_experiments(path: Path) -> list[Experiment]:
    """One experiment, or a plan's experiments in rank order."""
    data = _read_mapping(path)
    source = str(path)
    if not isinstance(data, dict):
        raise InvalidInput("expected an experiment (a mapping) or a plan (a mapping with 'experiments')",
                           source=source)
    try:
        if "experiments" in data:
            return Plan.model_validate(data).experiments
        return [Experiment.model_validate(data)]
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc), source=source) from exc


def dump(model: BaseModel, path: Path) -> None:
    """Write as JSON (``.json``) or YAML (anything else)."""
    data = model.model_dump(mode="json", exclude_none=True)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
