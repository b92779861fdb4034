"""Local sidecars: the fault is written into each sidecar's annotations file, in the
downward-API format the kubelet would write. For running Harbinger's chaos on one
machine (the end-to-end test, the benchmark, a demo) without a cluster.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from chaos.backends.base import FaultBackend
from chaos.experiment import Experiment
from chaos.faults import FAULT_KEYS, ActiveFault, Fault, fault_from_annotations
from chaos.sidecar.podinfo import read_annotations, write_annotations
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.errors import InvalidInput


def parse_file_mapping(items: list[str]) -> dict[str, list[Path]]:
    """``SERVICE=PATH`` flags (repeatable; a service may have several sidecars)."""
    mapping: dict[str, list[Path]] = {}
    for item in items:
        service, sep, path = item.partition("=")
        if not sep or not service or not path:
            raise InvalidInput(f"expected SERVICE=PATH, got {item!r}", source="--annotations-file")
        mapping.setdefault(service, []).append(Path(path))
    return mapping


class AnnotationsFileBackend(FaultBackend):
    def __init__(self, experiment: Experiment, files: dict[str, list[Path]]) -> None:
        super().__init__(experiment)
        paths = files.get(experiment.target)
        if not paths:
            raise InvalidInput(f"no annotations file for the target service {experiment.target!r}",
                               source="--annotations-file")
        self.paths = sorted(paths)[: experiment.pods] if experiment.pods else sorted(paths)
        #: Each file's values of the fault keys before the experiment (None: absent).
        self._originals: dict[Path, dict[str, str | None]] = {}

    def describe_targets(self) -> list[str]:
        return [f"annotations file {p}" for p in self.paths]

    async def apply(self, fault: Fault, expires: datetime) -> None:
        active = ActiveFault(fault, expires, self.experiment.name)
        for path in self.paths:
            annotations = read_annotations(path)
            if path not in self._originals:
                self._originals[path] = {key: annotations.get(key) for key in FAULT_KEYS}
            write_annotations(path, {**annotations, **active.annotations()})

    async def remove_all(self) -> int:
        restored = 0
        for path, original in list(self._originals.items()):
            annotations = {k: v for k, v in read_annotations(path).items() if k not in FAULT_KEYS}
            annotations.update({k: v for k, v in original.items() if v is not None})
            write_annotations(path, annotations)
            del self._originals[path]
            restored += 1
        return restored


def sweep_files(paths: list[Path], *, everything: bool, clock: Clock = SYSTEM_CLOCK) -> int:
    """Drop faults left in annotation files: expired ones, or all of them."""
    now = clock.now()
    swept = 0
    for path in paths:
        annotations = read_annotations(path)
        try:
            active = fault_from_annotations(annotations, source=str(path))
        except InvalidInput:
            active = None  # unreadable faults are dropped too: the sidecar ignores them anyway
            stale = True
        else:
            stale = active is not None and (everything or active.expired(now))
        if stale or (everything and any(k in annotations for k in FAULT_KEYS)):
            write_annotations(path, {k: v for k, v in annotations.items() if k not in FAULT_KEYS})
            swept += 1
    return swept
