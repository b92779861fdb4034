"""Where trained models live on disk, one rule for the planner, the webhook and training.

A service is known by its namespace and name (two teams may both run a ``frontend``), so its
model is ``<models_dir>/<namespace>/<service>/`` (``model.onnx`` and ``metadata.json``, as
``harbinger train --out`` writes them). The flat ``<models_dir>/<service>/`` of earlier
releases is still read for a service whose namespaced directory is absent, with a deprecation
warning once per service; it will not be read in the next release. Names that are not DNS
labels (a ``/``, ``..``, a leading dot) are never turned into paths.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from models.metadata import GRAPH_FILE

log = logging.getLogger(__name__)

#: A namespace or service name that can safely be a directory name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")
_warned: set[str] = set()


def namespaced(models_dir: Path, namespace: str, service: str) -> Path:
    """Where ``harbinger train`` should write the service's model."""
    return models_dir / namespace / service


def find(models_dir: Path, namespace: str, service: str) -> Path | None:
    """The service's model directory (namespaced first, then the deprecated flat layout);
    None when there is none or a name is not safe as a path."""
    if not (SAFE_NAME.match(namespace) and SAFE_NAME.match(service)):
        return None
    for directory in (namespaced(models_dir, namespace, service), models_dir / service):
        if (directory / GRAPH_FILE).is_file():
            if directory.parent == models_dir:
                warn_flat(models_dir, namespace, service)
            return directory
    return None


def warn_flat(models_dir: Path, namespace: str, service: str) -> None:
    """Say once per service that its model is read from the deprecated flat layout."""
    if service in _warned:
        return
    _warned.add(service)
    log.warning("%s/%s: model read from the flat layout %s; move it to %s (the flat layout will not be read "
                "in the next release)", namespace, service, models_dir / service,
                namespaced(models_dir, namespace, service))


def scan(models_dir: Path) -> dict[str, float]:
    """Every model under ``models_dir``, by ``namespace/service`` (or ``service`` for the flat
    layout), with the newest modification time of its files (a model rewritten in place, which
    keeps its directory's mtime, is still seen as new)."""
    found: dict[str, float] = {}
    try:
        children = [c for c in os.scandir(models_dir) if c.is_dir() and SAFE_NAME.match(c.name)]
    except OSError as exc:
        log.warning("cannot list models directory %s: %s", models_dir, exc.strerror)
        return found
    for child in children:
        stamp = _stamp(Path(child.path))
        if stamp is not None:
            found[child.name] = stamp
            continue
        try:
            services = [s for s in os.scandir(child.path) if s.is_dir() and SAFE_NAME.match(s.name)]
        except OSError:
            continue
        for service in services:
            stamp = _stamp(Path(service.path))
            if stamp is not None:
                found[f"{child.name}/{service.name}"] = stamp
    return found


def _stamp(directory: Path) -> float | None:
    """The newest mtime of a model directory's files; None when it holds no model."""
    try:
        if not (directory / GRAPH_FILE).is_file():
            return None
        return max(entry.stat().st_mtime for entry in os.scandir(directory))
    except (OSError, ValueError):
        return None
