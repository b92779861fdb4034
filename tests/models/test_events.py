"""The events file: valid events load, every bad one is named with its line and field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harbinger.errors import InvalidInput
from harbinger_dev.traces import EVENTS_DIR
from models.errors import BadEvents
from models.events import Event, events_for, load_events, parse_events


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "events.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, """
events:
  - name: spring-sale
    services: [checkout]
    start: 2024-03-01T08:00:00Z
    end: 2024-03-01T20:00:00+02:00
    multiplier: 2.5
  - name: easter
    start: 2024-03-31 00:00:00
    end: 2024-04-01 00:00:00
    kind: holiday
""")
    sale, easter = load_events(path)
    assert sale.multiplier == 2.5 and sale.services == ["checkout"]
    assert sale.end == datetime(2024, 3, 1, 18, 0, tzinfo=UTC)
    assert easter.start.tzinfo is not None  # a time without a zone is taken as UTC
    assert easter.kind == "holiday" and easter.multiplier is None
    assert [e.name for e in events_for([sale, easter], "cart")] == ["easter"]


def test_a_bare_list_and_an_empty_file_are_accepted(tmp_path: Path) -> None:
    assert load_events(write(tmp_path, "")) == []
    events = load_events(write(tmp_path, "- {name: a, start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z, "
                                         "kind: launch}\n"))
    assert events[0].name == "a"


@pytest.mark.parametrize(("item", "words"), [
    ("{name: x, start: 2024-01-02T00:00:00Z, end: 2024-01-01T00:00:00Z, multiplier: 2}", "end must be after start"),
    ("{name: x, start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z}", "give an expected effect"),
    ("{name: x, start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z, multiplier: -1}",
     "field 'multiplier'"),
    ("{name: x, start: 2024-01-01T00:00:00Z, multiplier: 2}", "field 'end': Field required"),
    ("{name: x, start: soon, end: 2024-01-02T00:00:00Z, multiplier: 2}", "field 'start'"),
    ("{name: x, start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z, multiplier: 2, colour: red}",
     "field 'colour': Extra inputs are not permitted"),
    ("{name: '', start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z, multiplier: 2}", "field 'name'"),
    ("just text", "expected a mapping of fields"),
])
def test_bad_event_names_event_line_and_field(tmp_path: Path, item: str, words: str) -> None:
    good = "{name: ok, start: 2024-01-01T00:00:00Z, end: 2024-01-02T00:00:00Z, multiplier: 2}"
    path = write(tmp_path, f"events:\n  - {good}\n  - {item}\n")
    with pytest.raises(BadEvents) as caught:
        load_events(path)
    assert isinstance(caught.value, InvalidInput)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: event 2")
    assert words in message


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "events:\n  - name: a\n    start: [unclosed\n")
    with pytest.raises(BadEvents, match="not valid YAML") as caught:
        load_events(path)
    assert caught.value.line is not None


@pytest.mark.parametrize(("document", "words"), [
    ({"event": []}, "unknown top-level keys"),
    ("a string", "expected a list of events"),
])
def test_wrong_shape_is_refused(document: object, words: str) -> None:
    with pytest.raises(BadEvents, match=words):
        parse_events(document)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadEvents, match="no such file"):
        load_events(tmp_path / "nope.yaml")


def test_shipped_trace_events_validate() -> None:
    for path in sorted(EVENTS_DIR.glob("*.yaml")):
        events = load_events(path)
        assert events and all(isinstance(e, Event) for e in events)
