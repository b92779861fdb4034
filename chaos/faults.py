"""One fault, as an experiment step declares it and as a pod's annotations carry it.

A :class:`Fault` is what is injected at one ramp step: a delay and/or an HTTP abort on a
share of requests, a bandwidth limit, CPU or memory stress. On a pod it travels as two
annotations the chaos sidecar reads::

    harbinger.io/chaos-fault:   {"abort_status": 503, "abort_percent": 25.0}
    harbinger.io/chaos-expires: 2025-01-01T12:00:30Z

A fault without an expiry is refused: whatever happens to the controller, every fault
ends on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harbinger import contract
from harbinger.clock import format_time, parse_time, parse_timestamp
from harbinger.errors import InvalidInput
from harbinger.quantity import parse_nonnegative

#: Ceilings that hold whatever an annotation asks: stress never takes the node down. The
#: sidecar holds tighter, platform-set ones (:class:`harbinger.sidecar.SidecarLimits`).
MAX_CPU_CORES = 8.0
MAX_DELAY_MS = 120_000.0
#: Quantities above these are refused before they become numbers: ``1e999999999`` must not
#: turn into a billion-digit integer.
MAX_MEMORY_BYTES = 2**40
MAX_BANDWIDTH_BPS = 1e15
#: An annotation longer than this is not a fault Harbinger wrote (its own are ~100 bytes).
MAX_FAULT_TEXT = 4096


def _quantity(value: str, *, what: str, ceiling: float) -> float:
    """A quantity string, ASCII only (a regex digit class takes Arabic-Indic digits too), at
    most ``ceiling``."""
    if not value.isascii():
        raise ValueError(f"{what}: {value!r} has non-ASCII characters")
    try:
        parsed = parse_nonnegative(value, what=what)
    except ArithmeticError as exc:  # decimal.Overflow: an exponent past what Decimal holds
        raise ValueError(f"{what}: {value!r} is out of range") from exc
    if parsed > ceiling:
        raise ValueError(f"{what}: {value!r} is above {ceiling:g}")
    return float(parsed)


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Added latency, on ``delay_percent`` % of requests.
    delay_ms: float | None = Field(None, gt=0, le=MAX_DELAY_MS, allow_inf_nan=False)
    #: The share of requests delayed, in percent.
    delay_percent: float = Field(100.0, gt=0, le=100, allow_inf_nan=False)
    #: Answer ``abort_status`` instead of forwarding, on ``abort_percent`` % of requests.
    abort_status: int | None = Field(None, ge=400, le=599)
    #: The share of requests aborted, in percent.
    abort_percent: float = Field(100.0, gt=0, le=100, allow_inf_nan=False)
    #: Response bandwidth limit in bits/s; a quantity (``1M``) or a number.
    bandwidth_bps: float | None = Field(None, gt=0, le=MAX_BANDWIDTH_BPS, allow_inf_nan=False)
    #: Busy CPU cores to burn next to the application.
    cpu_cores: float | None = Field(None, gt=0, le=MAX_CPU_CORES, allow_inf_nan=False)
    #: Memory to hold; a quantity (``64Mi``) or a number of bytes.
    memory_bytes: int | None = Field(None, gt=0, le=MAX_MEMORY_BYTES)

    @field_validator("bandwidth_bps", mode="before")
    @classmethod
    def _bandwidth_quantity(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _quantity(value, what="bandwidth_bps", ceiling=MAX_BANDWIDTH_BPS)
        return value

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _memory_quantity(cls, value: Any) -> Any:
        if isinstance(value, str):
            return int(_quantity(value, what="memory_bytes", ceiling=MAX_MEMORY_BYTES))
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Fault:
        if not self.effects():
            raise ValueError("a fault needs at least one of delay_ms, abort_status, bandwidth_bps, "
                             "cpu_cores, memory_bytes")
        return self

    def effects(self) -> list[str]:
        """Which effects this fault has, in a fixed order: delay, abort, bandwidth, cpu, memory."""
        present = {
            "delay": self.delay_ms is not None, "abort": self.abort_status is not None,
            "bandwidth": self.bandwidth_bps is not None, "cpu": self.cpu_cores is not None,
            "memory": self.memory_bytes is not None,
        }
        return [name for name, on in present.items() if on]

    def describe(self) -> str:
        parts = []
        if self.delay_ms is not None:
            parts.append(f"+{self.delay_ms:g} ms on {self.delay_percent:g}% of requests")
        if self.abort_status is not None:
            parts.append(f"HTTP {self.abort_status} on {self.abort_percent:g}% of requests")
        if self.bandwidth_bps is not None:
            parts.append(f"bandwidth limited to {self.bandwidth_bps / 1e6:g} Mbit/s")
        if self.cpu_cores is not None:
            parts.append(f"{self.cpu_cores:g} CPU cores burnt")
        if self.memory_bytes is not None:
            parts.append(f"{self.memory_bytes / 2**20:g} MiB held")
        return ", ".join(parts)

    def to_annotation(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ActiveFault:
    """A fault with its expiry and the experiment that set it, as read from annotations."""

    fault: Fault
    expires: datetime
    experiment: str

    def expired(self, now: datetime) -> bool:
        return now >= self.expires

    def annotations(self) -> dict[str, str]:
        return {
            contract.CHAOS_FAULT: self.fault.to_annotation(),
            contract.CHAOS_EXPIRES: format_time(self.expires),
            contract.CHAOS_EXPERIMENT: self.experiment,
        }


def fault_expired(annotations: dict[str, str] | None, now: datetime) -> bool:
    """Whether the fault an object's annotations carry is past its expiry. A missing or
    unreadable expiry counts as expired: a sweep must never keep a fault it cannot date."""
    expires = parse_timestamp((annotations or {}).get(contract.CHAOS_EXPIRES))
    return expires is None or expires <= now


#: The annotation keys a fault occupies; removing a fault removes exactly these.
FAULT_KEYS = (contract.CHAOS_FAULT, contract.CHAOS_EXPIRES, contract.CHAOS_EXPERIMENT)


def parse_fault(text: str, *, source: str) -> Fault:
    """The fault an annotation declares; :class:`InvalidInput` for anything else, whatever the
    text (a tenant can write it): too long, not JSON, nested too deep, numbers too long."""
    if len(text) > MAX_FAULT_TEXT:
        raise InvalidInput(f"{contract.CHAOS_FAULT} is {len(text)} characters long, more than {MAX_FAULT_TEXT}",
                           source=source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{contract.CHAOS_FAULT} is not JSON: {exc.msg}", source=source) from exc
    except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit; nesting past the stack
        raise InvalidInput(f"{contract.CHAOS_FAULT} is not a JSON fault: {type(exc).__name__}", source=source) from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{contract.CHAOS_FAULT} must be a JSON object", source=source)
    try:
        return Fault.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"{contract.CHAOS_FAULT}: {validation_message(exc)}", source=source) from exc


def fault_from_annotations(annotations: dict[str, str], *, source: str) -> ActiveFault | None:
    """The fault a pod's annotations carry, or None; a fault without a valid expiry is refused."""
    text = annotations.get(contract.CHAOS_FAULT)
    if not text:
        return None
    fault = parse_fault(text, source=source)
    expires_text = annotations.get(contract.CHAOS_EXPIRES)
    if not expires_text:
        raise InvalidInput(f"{contract.CHAOS_FAULT} is set without {contract.CHAOS_EXPIRES}; "
                           "a fault must carry its expiry", source=source)
    try:
        expires = parse_time(expires_text, what=contract.CHAOS_EXPIRES)
    except OverflowError as exc:  # 9999-12-31T23:59:59-23:59 is past the last representable instant
        raise InvalidInput(f"{expires_text!r} is out of range", source=contract.CHAOS_EXPIRES) from exc
    # The experiment's name is only shown; a tenant's megabyte of it is not.
    return ActiveFault(fault, expires, annotations.get(contract.CHAOS_EXPERIMENT, "")[:253])


def validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
