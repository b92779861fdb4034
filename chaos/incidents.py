"""Failure history: past incidents as ``time, service, kind``, from CSV or JSON.

CSV has a header row with at least ``time,service,kind``; JSON is a list of objects
with those keys. ``kind`` is one of the experiment kinds, or a common incident word
mapped onto one (``timeout`` is latency, ``5xx`` is error, ``oom`` is memory, ...).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from chaos.experiment import FaultKind
from harbinger.clock import parse_time
from harbinger.errors import InvalidInput

ALIASES: dict[str, FaultKind] = {
    "timeout": FaultKind.LATENCY, "slow": FaultKind.LATENCY, "latency": FaultKind.LATENCY,
    "5xx": FaultKind.ERROR, "errors": FaultKind.ERROR, "error": FaultKind.ERROR,
    "cpu": FaultKind.CPU, "throttling": FaultKind.CPU,
    "oom": FaultKind.MEMORY, "memory": FaultKind.MEMORY,
    "network": FaultKind.BANDWIDTH, "bandwidth": FaultKind.BANDWIDTH,
    "outage": FaultKind.DEPENDENCY_FAILURE, "down": FaultKind.DEPENDENCY_FAILURE,
    "dependency-failure": FaultKind.DEPENDENCY_FAILURE,
}


@dataclass(frozen=True)
class Incident:
    time: datetime
    service: str
    kind: FaultKind


def _incident(row: dict[str, Any], *, source: str, line: int | None) -> Incident:
    missing = [key for key in ("time", "service", "kind") if not str(row.get(key) or "").strip()]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}", source=source, line=line)
    word = str(row["kind"]).strip().lower()
    kind = ALIASES.get(word)
    if kind is None:
        raise InvalidInput(f"unknown incident kind {word!r} (known: {', '.join(sorted(ALIASES))})",
                           source=source, line=line)
    try:
        moment = parse_time(str(row["time"]), what="time")
    except InvalidInput as exc:
        raise InvalidInput(exc.message, source=source, line=line) from exc
    return Incident(moment, str(row["service"]).strip(), kind)


def parse_incidents(text: str, *, source: str, json_format: bool) -> list[Incident]:
    if json_format:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from exc
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise InvalidInput("expected a JSON list of {time, service, kind} objects", source=source)
        return [_incident(item, source=f"{source}: item {i}", line=None) for i, item in enumerate(data)]
    reader = csv.DictReader(io.StringIO(text))
    header = set(reader.fieldnames or [])
    if not {"time", "service", "kind"} <= header:
        raise InvalidInput(f"CSV header must include time,service,kind (found {','.join(reader.fieldnames or [])})",
                           source=source, line=1)
    return [_incident(row, source=source, line=reader.line_num) for row in reader]


def load_incidents(path: Path) -> list[Incident]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read failure history: {exc.strerror}", source=str(path)) from exc
    return parse_incidents(text, source=str(path), json_format=path.suffix == ".json")


@dataclass(frozen=True)
class FailureWeights:
    """Recency-weighted incident counts: an incident ``half_life_days`` old counts half."""

    by_service: dict[str, float]
    by_service_kind: dict[tuple[str, FaultKind], float]

    @classmethod
    def of(
        cls, incidents: list[Incident], *, now: datetime, half_life_days: float = 90.0
    ) -> FailureWeights:
        by_service: dict[str, float] = {}
        by_kind: dict[tuple[str, FaultKind], float] = {}
        for incident in incidents:
            age_days = max((now - incident.time).total_seconds(), 0.0) / 86400
            weight = math.pow(0.5, age_days / half_life_days)
            by_service[incident.service] = by_service.get(incident.service, 0.0) + weight
            key = (incident.service, incident.kind)
            by_kind[key] = by_kind.get(key, 0.0) + weight
        return cls(by_service, by_kind)

    def service(self, name: str) -> float:
        return self.by_service.get(name, 0.0)

    def kind(self, name: str, kind: FaultKind) -> float:
        return self.by_service_kind.get((name, kind), 0.0)
