"""Scheduled events (campaigns, launches, holidays): the YAML file and its validation.

An event file is a list of events, or a mapping with an ``events:`` list::

    events:
      - name: spring-sale
        services: [checkout, cart]      # empty or absent: every service
        start: 2024-03-01T08:00:00Z     # a time without a zone is taken as UTC
        end: 2024-03-01T20:00:00Z
        multiplier: 2.5                 # expected traffic / normal traffic
      - name: easter
        start: 2024-03-31T00:00:00Z
        end: 2024-04-01T00:00:00Z
        kind: holiday                   # effect learned from past holidays in the history

Each event needs an expected effect: a ``multiplier``, or a ``kind`` whose effect the
model learns from earlier events of the same kind (see :mod:`models.features`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import BadEvents


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    #: Services the event concerns; empty means every service.
    services: list[str] = Field(default_factory=list)
    start: datetime
    end: datetime
    #: Expected traffic during the event divided by normal traffic (2.0 = double).
    multiplier: float | None = Field(default=None, gt=0)
    #: A label such as ``holiday``; without a multiplier its effect is learned from history.
    kind: str | None = Field(default=None, min_length=1)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> Event:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.multiplier is None and self.kind is None:
            raise ValueError("give an expected effect: a multiplier, or a kind to learn it from past events")
        return self

    def applies_to(self, service: str) -> bool:
        return not self.services or service in self.services


def load_events(path: Path | str) -> list[Event]:
    """Read and validate an event file; errors name the file, the event (and its line) and the field."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadEvents("no such file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadEvents(f"cannot read the file: {exc}", source=source) from None
    try:
        document = yaml.safe_load(text)
        lines = _item_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise BadEvents(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source,
                        line=mark.line + 1 if mark is not None else None) from None
    return parse_events(document, source=source, lines=lines)


def parse_events(document: Any, *, source: str = "events", lines: Sequence[int] | None = None) -> list[Event]:
    """Validate already-parsed YAML/JSON (a list, or ``{events: [...]}``; empty is no events)."""
    if document is None:
        return []
    if isinstance(document, dict):
        if set(document) - {"events"}:
            raise BadEvents(f"unknown top-level keys {sorted(set(document) - {'events'})}; expected 'events'",
                            source=source)
        document = document.get("events") or []
    if not isinstance(document, list):
        raise BadEvents("expected a list of events (or a mapping with an 'events' list)", source=source)
    events: list[Event] = []
    for number, item in enumerate(document, start=1):
        line = lines[number - 1] if lines is not None and number - 1 < len(lines) else None
        label = f"event {number}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']!r})"
        if not isinstance(item, dict):
            raise BadEvents(f"{label}: expected a mapping of fields, got {type(item).__name__}",
                            source=source, line=line)
        try:
            events.append(Event.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            where = f"field {field!r}: " if field else ""
            raise BadEvents(f"{label}: {where}{first['msg']}", source=source, line=line) from None
    return events


def events_for(events: Sequence[Event], service: str) -> list[Event]:
    return [event for event in events if event.applies_to(service)]


def _item_lines(text: str) -> list[int]:
    """1-based line of each event item, so that an error can point into the file."""
    node = yaml.compose(text)
    if isinstance(node, yaml.MappingNode):
        node = next((value for key, value in node.value if getattr(key, "value", None) == "events"), None)
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in node.value]
