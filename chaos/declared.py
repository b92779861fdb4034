"""A ChaosExperiment a team writes: its spec read as an :class:`~chaos.experiment.Experiment` and
a :class:`Schedule`, and the CRD that checks it when it is applied, generated from the same
models (``hack/crds.py``) so that what the apiserver accepts is what the controller runs.

The same kind also records the runs of the controller's plan: those objects carry
``spec.runId`` (the controller wrote them); an object without it is declared and waits for the
controller. Either way the spec cannot change once written: an experiment is a Job-like
one-shot, and a changed spec would make its status lie about what ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chaos.experiment import SLO, BackendKind, Experiment, FaultKind, Window
from chaos.faults import Fault
from chaos.forecasts import before_peak_window
from harbinger.clock import format_time
from harbinger.crd import camel, custom_resource_definition, model_properties, snake_fields
from harbinger.errors import InvalidInput
from harbinger.reference import field_comments
from models.forecast import Forecast

PLURAL = "chaosexperiments"
KIND = "ChaosExperiment"
#: Spec fields only the controller writes, on the record of a plan's run.
RECORD_FIELDS = ("experiment", "runId", "plannedSteps")
#: Experiment fields a team does not write: the object's name and namespace are the
#: experiment's; the rest are what ``chaos generate`` computes.
NOT_DECLARED = frozenset({"name", "namespace", "predicted_rps", "window", "risk", "rationale",
                          "max_degraded_fraction"})
PHASES = ["Pending", "Running", "Held", "Breached", "Aborted", "NotSteady", "Failed", "Interrupted", "Invalid",
          "Expired"]
WEEK = 7 * 86400.0


class ScheduleType(StrEnum):
    #: As soon as the controller is free.
    NOW = "Now"
    #: Between ``start`` and ``end``; ``Expired`` if the window passes first.
    WINDOW = "Window"
    #: Before the target's next predicted peak, as its CapacityPlan forecasts it.
    BEFORE_PEAK = "BeforePeak"


class Schedule(BaseModel):
    """When a declared experiment runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``Now``, ``Window`` (between start and end) or ``BeforePeak`` (in the windowSeconds that
    #: end leadSeconds before the target's next predicted peak, so the rehearsal runs at the
    #: capacity the planner has provisioned for it).
    type: ScheduleType = ScheduleType.NOW
    #: Window only: the earliest start (RFC 3339, with a time zone).
    start: datetime | None = None
    #: Window only: the whole run (baseline and every step) must end by then.
    end: datetime | None = None
    #: BeforePeak only: seconds between the end of the rehearsal window and the peak.
    lead_seconds: float = Field(600.0, ge=0, le=WEEK, allow_inf_nan=False)
    #: BeforePeak only: the length of the rehearsal window.
    window_seconds: float = Field(3600.0, gt=0, le=WEEK, allow_inf_nan=False)

    @model_validator(mode="after")
    def _window(self) -> Schedule:
        if self.type is ScheduleType.WINDOW:
            if self.start is None or self.end is None:
                raise ValueError("a Window schedule needs start and end")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end must carry a time zone (use Z for UTC)")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        elif self.start is not None or self.end is not None:
            raise ValueError("start and end belong to a Window schedule")
        return self


def _message(exc: ValidationError, prefix: str) -> str:
    """pydantic's errors with the API's camelCase paths, so the message names the field the user wrote."""
    parts = []
    for error in exc.errors():
        path = ".".join(camel(p) if isinstance(p, str) else f"[{p}]" for p in error["loc"]).replace(".[", "[")
        parts.append(f"{prefix}{'.' + path if path else ''}: {error['msg']}")
    return "; ".join(parts)


def is_declared(obj: dict[str, Any]) -> bool:
    return "runId" not in (obj.get("spec") or {})


def declared_experiment(obj: dict[str, Any]) -> tuple[Experiment, Schedule]:
    """A declared ChaosExperiment as the controller runs it; InvalidInput names what is wrong
    (the CRD's schema catches most of it at apply time; this catches the rest, and objects
    written before a schema change)."""
    meta = obj.get("metadata") or {}
    where = f"{KIND} {meta.get('namespace')}/{meta.get('name')}"
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise InvalidInput("spec is not an object", source=where)
    fields = {k: v for k, v in spec.items() if k not in (*RECORD_FIELDS, "schedule")}
    try:
        data = snake_fields(Experiment, fields, where="spec")
        if isinstance(data.get("steps"), list):
            data["steps"] = [snake_fields(Fault, s, where=f"spec.steps[{i}]") if isinstance(s, dict) else s
                             for i, s in enumerate(data["steps"])]
        if isinstance(data.get("slo"), dict):
            data["slo"] = snake_fields(SLO, data["slo"], where="spec.slo")
        schedule_data = spec.get("schedule") or {}
        schedule_fields = (snake_fields(Schedule, schedule_data, where="spec.schedule")
                           if isinstance(schedule_data, dict) else schedule_data)
    except ValueError as exc:
        raise InvalidInput(str(exc), source=where) from exc
    if NOT_DECLARED & set(data):
        raise InvalidInput(f"spec sets {', '.join(sorted(camel(f) for f in NOT_DECLARED & set(data)))}, which the "
                           "controller computes", source=where)
    try:
        experiment = Experiment.model_validate({**data, "name": meta.get("name"), "namespace": meta.get("namespace")})
    except ValidationError as exc:
        raise InvalidInput(_message(exc, "spec"), source=where) from exc
    try:
        schedule = Schedule.model_validate(schedule_fields)
    except ValidationError as exc:
        raise InvalidInput(_message(exc, "spec.schedule"), source=where) from exc
    return experiment, schedule


def record_spec(experiment: Experiment, run_id: str) -> dict[str, Any]:
    """The spec of the record of a plan's run: what ran, in the declared form, and its run."""
    spec: dict[str, Any] = {
        "experiment": experiment.name, "runId": run_id, "plannedSteps": len(experiment.steps),
        "target": experiment.target, "kind": experiment.kind.value, "backend": experiment.backend.value,
        "steps": [{camel(k): v for k, v in s.model_dump(exclude_none=True, exclude_defaults=True).items()}
                  for s in experiment.steps],
        "slo": {camel(k): v for k, v in experiment.slo.model_dump().items()},
    }
    if experiment.caller:
        spec["caller"] = experiment.caller
    if experiment.watch:
        spec["watch"] = list(experiment.watch)
    if experiment.pods is not None:
        spec["pods"] = experiment.pods
    if experiment.dwell_seconds is not None:
        spec["dwellSeconds"] = experiment.dwell_seconds
    return spec


# --- the CRD, generated from the models (hack/crds.py) -----------------------------------------
_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_TIME = {"type": "string", "format": "date-time"}


def _quantity(description: str) -> dict[str, Any]:
    return {"x-kubernetes-int-or-string": True, "description": description}


def _step_schema() -> dict[str, Any]:
    comments = field_comments(Fault)
    return {
        "type": "object",
        "description": "One ramp step: the fault injected while the step lasts.",
        "properties": model_properties(Fault, overrides={
            "bandwidth_bps": _quantity(comments["bandwidth_bps"]),
            "memory_bytes": _quantity(comments["memory_bytes"]),
        }),
        "x-kubernetes-validations": [{
            "rule": "has(self.delayMs) || has(self.abortStatus) || has(self.bandwidthBps) || has(self.cpuCores) "
                    "|| has(self.memoryBytes)",
            "message": "a step needs at least one of delayMs, abortStatus, bandwidthBps, cpuCores, memoryBytes"}],
    }


def _schedule_schema() -> dict[str, Any]:
    comments = field_comments(Schedule)
    return {
        "type": "object",
        "description": "When the experiment runs; left out: as soon as the controller is free.",
        "properties": model_properties(Schedule, overrides={
            "type": {"type": "string", "enum": [t.value for t in ScheduleType],
                     "description": f"{comments['type']} Default: Now."},
            "start": {**_TIME, "description": comments["start"]},
            "end": {**_TIME, "description": comments["end"]},
        }),
        "x-kubernetes-validations": [
            {"rule": "!has(self.type) || self.type != 'Window' || (has(self.start) && has(self.end) "
                     "&& timestamp(self.end) > timestamp(self.start))",
             "message": "a Window schedule needs start and end, end after start"},
            {"rule": "(has(self.type) && self.type == 'Window') || (!has(self.start) && !has(self.end))",
             "message": "start and end belong to a Window schedule"},
        ],
    }


_KIND_EFFECT_RULE = (
    "!has(self.steps) || self.steps.all(s, self.kind == 'latency' ? has(s.delayMs) "
    ": (self.kind == 'error' || self.kind == 'dependency-failure') ? has(s.abortStatus) "
    ": self.kind == 'cpu' ? has(s.cpuCores) : self.kind == 'memory' ? has(s.memoryBytes) : has(s.bandwidthBps))")


def spec_schema() -> dict[str, Any]:
    comments = field_comments(Experiment)
    declared = model_properties(Experiment, skip=NOT_DECLARED, overrides={
        "kind": {"type": "string", "enum": [k.value for k in FaultKind], "description": "What to break."},
        "backend": {"type": "string", "enum": [b.value for b in BackendKind],
                    "description": "How faults are injected: the chaos sidecar (pod annotations) or Istio "
                                   "VirtualServices. Default: sidecar."},
        "target": {**_NAME_SCHEMA, "description": comments["target"]},
        "caller": {**_NAME_SCHEMA, "description": comments["caller"]},
        "steps": {"type": "array", "minItems": 1, "maxItems": 20, "items": _step_schema(),
                  "description": comments["steps"]},
        "watch": {"type": "array", "maxItems": 50, "items": _NAME_SCHEMA, "description": comments["watch"]},
        "slo": {"type": "object", "description": "The steady state every watched service must keep.",
                "properties": model_properties(SLO)},
    })
    schedule = _schedule_schema()
    return {
        "type": "object",
        "required": ["target", "kind"],
        "properties": {
            "experiment": {"type": "string", "maxLength": 253,
                           "description": "Records only: the experiment's name in the controller's plan."},
            "runId": {"type": "string", "maxLength": 253,
                      "description": "Records only: the run the controller recorded (a declared experiment "
                                     "leaves it out; its run id is in status)."},
            "plannedSteps": {"type": "integer", "minimum": 1, "description": "Records only: the ramp's length."},
            **declared,
            "schedule": schedule,
        },
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf",
             "message": "a ChaosExperiment's spec cannot change; delete it and create another"},
            {"rule": "has(self.runId) || has(self.steps)",
             "message": "a declared experiment needs spec.steps, its ramp, mildest step first"},
            {"rule": _KIND_EFFECT_RULE, "fieldPath": ".steps",
             "message": "every step must carry the kind's fault: delayMs (latency), abortStatus (error, "
                        "dependency-failure), cpuCores (cpu), memoryBytes (memory), bandwidthBps (bandwidth)"},
            {"rule": "self.kind != 'dependency-failure' || !has(self.steps) "
                     "|| self.steps.all(s, !has(s.abortPercent) || s.abortPercent == 100.0)",
             "fieldPath": ".steps", "message": "a dependency-failure experiment aborts 100% of requests in every step"},
            {"rule": "!has(self.backend) || self.backend != 'istio' || (!has(self.pods) && (!has(self.steps) "
                     "|| self.steps.all(s, !has(s.cpuCores) && !has(s.memoryBytes) && !has(s.bandwidthBps))))",
             "fieldPath": ".backend",
             "message": "the istio backend injects only delays and aborts, on every pod: no cpuCores, memoryBytes, "
                        "bandwidthBps or pods"},
            {"rule": "!has(self.caller) || (has(self.backend) && self.backend == 'istio')", "fieldPath": ".caller",
             "message": "a fault on one call (caller) needs the istio backend"},
            {"rule": "!has(self.caller) || self.caller != self.target", "fieldPath": ".caller",
             "message": "caller and target are the same service"},
        ],
    }


def status_schema() -> dict[str, Any]:
    text = {"type": "string", "maxLength": 1024}
    short = {"type": "string", "maxLength": 253}
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": PHASES, "description": (
                "Pending (declared, waiting for its window), Running; then Held (every step held), Breached "
                "(rolled back), Aborted, NotSteady (nothing injected), Failed (an error; rolled back), "
                "Interrupted (the controller stopped mid-run; a restarted one swept its faults), Invalid "
                "(never run: see the Accepted condition) or Expired (its window passed first).")},
            "runId": {**short, "description": "The run: its report and its faults' annotations carry it."},
            "scheduledFor": {"type": "object", "description": "The window the controller will run it in.",
                             "properties": {"start": _TIME, "end": _TIME, "reason": {"type": "string", "maxLength": 63},
                                            "peak": _TIME}},
            "startedAt": _TIME,
            "finishedAt": _TIME,
            "stepsRun": {"type": "integer", "minimum": 0},
            "steps": {"type": "array", "maxItems": 20, "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "description": {"type": "string", "maxLength": 512},
                "startedAt": _TIME, "endedAt": _TIME, "outcome": {"type": "string", "maxLength": 63}}}},
            "breach": {"type": "object", "properties": {
                "service": short, "metric": short, "value": {"type": "number"}, "limit": {"type": "number"},
                "step": {"type": "integer"}, "detectedAt": _TIME}},
            "rollback": {"type": "object", "properties": {
                "reason": short, "startedAt": _TIME, "finishedAt": _TIME, "seconds": {"type": "number"},
                "objectsRestored": {"type": "integer"}, "error": text}},
            "report": {"type": "object", "description": "Where the report is kept.", "properties": {
                "configMap": {**short, "description": "The ConfigMap in this namespace (owned by this object) "
                                                      "holding report.json and report.html."},
                "path": {**text, "description": "The report's directory on the controller's volume."}}},
            "notes": {"type": "array", "maxItems": 20, "items": text},
            "conditions": {"type": "array", "maxItems": 8, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"], "items": {
                               "type": "object", "required": ["type", "status"], "properties": {
                                   "type": {"type": "string", "maxLength": 63},
                                   "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                                   "reason": {"type": "string", "maxLength": 63}, "message": text,
                                   "lastTransitionTime": _TIME}}},
        },
    }


def experiment_crd() -> dict[str, Any]:
    columns = [("Target", "string", ".spec.target"), ("Kind", "string", ".spec.kind"),
               ("Phase", "string", ".status.phase"), ("Steps", "integer", ".status.stepsRun"),
               ("Started", "date", ".status.startedAt"), ("Age", "date", ".metadata.creationTimestamp")]
    return custom_resource_definition(
        kind=KIND, plural=PLURAL, short_name="hcx", namespaced=True, spec_required=True,
        columns=[{"name": n, "type": t, "jsonPath": p} for n, t, p in columns],
        description="One rehearsal: declared by a team (the controller runs it when its schedule says), or the "
                    "record of a run of the controller's plan.",
        spec=spec_schema(), status=status_schema())


# --- when a declared experiment runs -------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """What the controller does with a declared experiment this cycle."""

    #: ``Due`` (run it now), ``Waiting`` (Pending, with ``window`` when one is known) or ``Expired``.
    state: str
    reason: str
    message: str
    window: Window | None = None


def decide(experiment: Experiment, schedule: Schedule, *, now: datetime, needed_seconds: float,
           forecast: Forecast | None) -> Decision:
    """Whether a declared experiment runs now; pure, so each schedule's rule is a unit test.
    ``needed_seconds`` is the whole run (baseline and every step); ``forecast`` the target's
    (from its CapacityPlan), needed only for ``BeforePeak``."""
    needed = timedelta(seconds=needed_seconds)
    if schedule.type is ScheduleType.NOW:
        return Decision("Due", "Now", "runs as soon as the controller is free")
    if schedule.type is ScheduleType.WINDOW:
        assert schedule.start is not None and schedule.end is not None  # the model's validator
        window = Window(start=schedule.start, end=schedule.end, reason="declared")
        if now + needed > schedule.end:
            return Decision("Expired", "WindowPassed", f"the window ends at {format_time(schedule.end)}, before a "
                            f"run of {needed_seconds:g} s started now could finish", window)
        if now < schedule.start:
            return Decision("Waiting", "WaitingForWindow", f"runs from {format_time(schedule.start)}", window)
        return Decision("Due", "InWindow", f"in its window, until {format_time(schedule.end)}", window)
    if forecast is None:
        return Decision("Waiting", "NoForecast", f"waiting for a forecast of {experiment.target}: no CapacityPlan "
                        f"in {experiment.namespace} records one yet (is {experiment.target} managed by the planner?)")
    ahead = before_peak_window(forecast, lead_seconds=schedule.lead_seconds, window_seconds=schedule.window_seconds,
                               now=now, needed_seconds=needed_seconds)
    if ahead is None:
        return Decision("Waiting", "NoPeakAhead", f"no predicted peak of {experiment.target} in its forecast "
                        f"(until {format_time(forecast.end)}) leaves a {schedule.window_seconds:g} s window "
                        f"{schedule.lead_seconds:g} s before it")
    peak = format_time(ahead.peak) if ahead.peak else "?"
    if now < ahead.start:
        return Decision("Waiting", "WaitingForWindow", f"runs from {format_time(ahead.start)}, before the "
                        f"predicted peak at {peak}", ahead)
    return Decision("Due", "BeforePeak", f"before the predicted peak at {peak}", ahead)
