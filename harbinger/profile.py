"""Capacity profiles: what one replica of a service can serve and what it costs.

Shared by the planner (replicas per forecast), the webhook (requests and bandwidth
per pod) and the chaos controller (blast radius). Declared in YAML
(``services: {name: {...}}``) or as the JSON annotation ``harbinger.io/capacity-profile``
on a Deployment. Every field has a documented default, so an empty profile is valid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harbinger.documents import read_document
from harbinger.errors import InvalidInput

#: A profile has a dozen short fields; anything longer is not one (and is not parsed).
MAX_ANNOTATION_CHARS = 4096
#: Kubernetes counts replicas in an int32.
MAX_REPLICAS = 2**31 - 1


class CapacityProfile(BaseModel):
    # Non-finite numbers (1e309 parses as infinity) are refused like any other bad value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: Requests per second one replica serves at its target utilization.
    rps_per_replica: float = Field(50.0, gt=0)
    #: The utilization ``rps_per_replica`` stands for, as a share of what one replica serves
    #: at saturation (the HPA's target, e.g. ``averageUtilization: 80``): a replica saturates
    #: at ``rps_per_replica / target_utilization``. The default 0.8 is the common production
    #: CPU target; it keeps the HPA's own 0.1 tolerance band (up to 1.1x the target) inside
    #: what a replica can serve, which is why an operator picks a target below 1.
    target_utilization: float = Field(0.8, gt=0, le=1)
    #: CPU cores a replica needs per request/s, on top of ``cpu_base_cores``.
    cpu_per_rps: float = Field(0.005, ge=0)
    #: CPU cores a replica needs at no load.
    cpu_base_cores: float = Field(0.05, ge=0)
    #: Memory a replica needs per request/s, on top of ``memory_base_bytes``.
    memory_per_rps_bytes: float = Field(1_000_000, ge=0)
    #: Memory a replica needs at no load, in bytes.
    memory_base_bytes: float = Field(64 * 2**20, ge=0)
    #: Average request + response size; sizes the bandwidth annotations.
    bytes_per_request: float = Field(20_000, ge=0)
    #: Seconds from pod creation to serving traffic.
    warmup_seconds: float = Field(60.0, ge=0)
    #: The fewest replicas the planner plans (the HPA's own minReplicas is never lowered).
    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS)
    #: The most replicas the planner plans (also capped by the HPA's maxReplicas and the platform).
    max_replicas: int = Field(100, ge=1, le=MAX_REPLICAS)
    #: Extra capacity over the planned load, as a fraction (0.2 = 20 %).
    headroom: float = Field(0.2, ge=0, le=10)
    #: What the floor is sized on. ``p90`` (default): the P90 forecast x (1 + headroom) at
    #: ``rps_per_replica``, the count the HPA itself would want at that load. ``p50``: the
    #: median forecast's in-step peak (``burst_factor``, ``burst_dispersion``) x (1 + headroom)
    #: kept below saturation, leaving the HPA to restore its target utilization behind the floor.
    plan_quantile: Literal["p50", "p90"] = "p90"
    #: The peak rate inside one forecast step over the step's mean rate (a forecast is a step
    #: mean; traffic inside a step is not flat). 1 = flat steps; learn it from history with
    #: :func:`scaler.trace.burst_factor`.
    burst_factor: float = Field(1.0, ge=1, le=100)
    #: The in-step peak as a dispersion around the step mean, in sqrt(requests/s): the peak is
    #: taken as ``mean + burst_dispersion * sqrt(mean)``. Request counts vary like a Poisson
    #: stream's, whose spread grows with the square root of the rate, so a quiet step peaks far
    #: above its mean (relative to it) and a busy one barely does; one ratio
    #: (``burst_factor``) over-covers busy steps and under-covers quiet ones. The planner
    #: sizes on the larger of the two peaks. 0 (default) = no dispersion term, so profiles
    #: without it plan exactly as before; learn it from history with
    #: :func:`scaler.trace.burst_dispersion`.
    burst_dispersion: float = Field(0.0, ge=0, le=1e6)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> CapacityProfile:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self

    def replicas_for(self, rps: float) -> int:
        """Replicas needed to serve ``rps`` with headroom, within min and max."""
        needed = math.ceil(max(rps, 0.0) * (1 + self.headroom) / self.rps_per_replica - 1e-9)
        return max(self.min_replicas, min(self.max_replicas, needed))

    @property
    def saturation_rps_per_replica(self) -> float:
        """Requests per second one replica serves before it is overloaded."""
        return self.rps_per_replica / self.target_utilization

    def cpu_cores_for(self, rps_per_replica: float) -> float:
        return self.cpu_base_cores + self.cpu_per_rps * max(rps_per_replica, 0.0)

    def memory_bytes_for(self, rps_per_replica: float) -> float:
        return self.memory_base_bytes + self.memory_per_rps_bytes * max(rps_per_replica, 0.0)

    def bandwidth_bits_for(self, rps_per_replica: float) -> float:
        return max(rps_per_replica, 0.0) * self.bytes_per_request * 8


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'profile'}: {e['msg']}" for e in exc.errors())


def parse_profile(data: Any, *, source: str) -> CapacityProfile:
    if data is None:
        return CapacityProfile()
    if not isinstance(data, dict):
        raise InvalidInput("a capacity profile must be a mapping of fields", source=source)
    try:
        return CapacityProfile.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc), source=source) from exc


def profile_from_annotation(value: str, *, source: str) -> CapacityProfile:
    """The ``harbinger.io/capacity-profile`` annotation: a JSON object of profile fields."""
    if len(value) > MAX_ANNOTATION_CHARS:
        raise InvalidInput(f"capacity profile annotation is {len(value)} characters, more than "
                           f"{MAX_ANNOTATION_CHARS}", source=source)
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"capacity profile annotation is not JSON: {exc.msg}", source=source) from exc
    except RecursionError as exc:
        raise InvalidInput("capacity profile annotation is nested too deeply to be a profile", source=source) from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidInput(f"capacity profile annotation cannot be read: {exc}", source=source) from exc
    return parse_profile(data, source=source)


def load_profiles(path: Path) -> dict[str, CapacityProfile]:
    """A YAML file ``{defaults: {...}, services: {name: {...}}}``; each service inherits defaults."""
    source = str(path)
    data = read_document(path, "profiles")
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise InvalidInput("expected a mapping with a 'services' mapping of service name to profile", source=source)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InvalidInput("'defaults' must be a mapping of profile fields", source=source)
    parse_profile(defaults, source=f"{source}: defaults")
    return {
        str(name): parse_profile({**defaults, **(fields or {})}, source=f"{source}: services.{name}")
        for name, fields in data["services"].items()
    }
