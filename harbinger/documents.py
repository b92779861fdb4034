"""Reading the files people write for Harbinger (settings, graphs, profiles, plans,
forecasts, run records): YAML or JSON, refused with the file, the line where the parser
knows it, and what was wrong, never a traceback. And writing a file so that no reader ever
sees half of it (:func:`write_atomic`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml

from harbinger.errors import InvalidInput

Format = Literal["yaml", "json"]


def read_document(path: Path | str, what: str, *, format: Format | None = None) -> Any:
    """The parsed document at ``path``: JSON for a ``.json`` file (or ``format="json"``),
    YAML otherwise (YAML also reads JSON). ``what`` names it in errors ("graph", "profiles")."""
    path = Path(path)
    source = str(path)
    kind = format or ("json" if path.suffix == ".json" else "yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read {what}: {reason}", source=source) from exc
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidInput(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=source,
                           line=mark.line + 1 if mark is not None else None) from exc


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader (a server reloading its
    certificate, the sidecar reading its annotations, a component loading a model) sees the
    old file or the new one, never half. The file is created with ``mode`` from the start, so
    a key is never readable by others, not even while it is written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)  # the umask may have narrowed what os.open asked for
    tmp.replace(path)
