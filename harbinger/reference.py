"""Reference documentation read from the models themselves, so that it cannot drift: each
field's ``#:`` comment (the comment block right above it in the class body), its type and its
default. Used for the HarbingerPolicy CRD (:mod:`harbinger.policy`) and the settings reference
(``hack/settings_docs.py``)."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's ``#:`` comment, across the class and its bases, as plain text."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in source:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = re.match(r"(\w+)\s*:", stripped)
            if match and match.group(1) in model.model_fields and pending:
                text = re.sub(r":\w+:`([^`]+)`", r"\1", " ".join(pending))  # Sphinx roles
                found[match.group(1)] = re.sub(r"``([^`]+)``", r"\1", text)
            pending = []
    return found


def type_name(annotation: Any) -> str:
    """A field's type as people read it (``float``, ``str | None``, ``"text" | "json"``)."""
    if get_origin(annotation) is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"\b(?:typing|pathlib|collections\.abc)\.", "", str(text))
