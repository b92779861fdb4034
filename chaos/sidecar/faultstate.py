"""The sidecar's view of its fault: read from the annotations file, re-read on change,
dropped at its expiry whatever the file still says.

The file is polled (cheap: a few hundred bytes) rather than watched with inotify, because
the kubelet updates downward-API volumes by swapping a symlink, which inotify on the file
itself does not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from chaos.faults import ActiveFault, fault_from_annotations
from chaos.sidecar.limits import bound
from chaos.sidecar.metrics import SidecarMetrics
from chaos.sidecar.podinfo import read_annotations
from chaos.sidecar.stress import Stress
from harbinger.clock import SYSTEM_CLOCK, Clock, format_time
from harbinger.errors import InvalidInput
from harbinger.sidecar import SidecarLimits

log = logging.getLogger(__name__)

EFFECTS = ("delay", "abort", "bandwidth", "cpu", "memory")


class FaultState:
    def __init__(self, annotations_file: Path, stress: Stress, metrics: SidecarMetrics,
                 clock: Clock = SYSTEM_CLOCK, limits: SidecarLimits | None = None) -> None:
        self.clock = clock
        self.annotations_file = annotations_file
        self.stress = stress
        self.metrics = metrics
        self.limits = limits or SidecarLimits()
        #: The fault in force: what the annotations declare, held within ``limits``.
        self._declared: ActiveFault | None = None
        #: What the annotations declared, as read, and when it was first read: the same
        #: declaration read again keeps its first reading's expiry cap.
        self._raw: ActiveFault | None = None
        self._first_seen: datetime | None = None
        self._last_text: str | None = None
        self.error: str | None = None
        self.clamped: list[str] = []

    def current(self, now: datetime | None = None) -> ActiveFault | None:
        """The fault in force now: declared, valid and not expired."""
        declared = self._declared
        if declared is None or declared.expired(now or self.clock.now()):
            return None
        return declared

    def reload(self) -> None:
        """Re-read the file if it changed. A file that cannot be read as a valid fault means no
        fault: the sidecar never injects what it does not understand."""
        try:
            text = self.annotations_file.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            text = f"<unreadable: {exc.strerror}>"
        if text == self._last_text:
            return
        self._last_text = text
        try:
            annotations = read_annotations(self.annotations_file)
            raw = fault_from_annotations(annotations, source=str(self.annotations_file))
            self.error = None
        except Exception as exc:  # InvalidInput, or anything else a tenant's text provokes: no fault
            raw = None
            self.error = str(exc) if isinstance(exc, InvalidInput) else f"unreadable: {type(exc).__name__}"
            self.metrics.annotation_errors.inc()
            log.warning("ignoring the chaos annotations: %s", self.error)
        declared = self._bounded(raw)
        if declared != self._declared:
            log.info("fault now: %s", f"{declared.fault.describe()} until {format_time(declared.expires)}"
                     if declared else "none")
        self._declared = declared

    def _bounded(self, raw: ActiveFault | None) -> ActiveFault | None:
        if raw is None:
            self._raw, self._first_seen, self.clamped = None, None, []
            return None
        if raw != self._raw or self._first_seen is None:
            self._raw, self._first_seen = raw, self.clock.now()
        declared, clamped = bound(raw, self.limits, self._first_seen)
        for field in set(clamped) - set(self.clamped):
            self.metrics.fault_clamped.labels(field=field).inc()
        if clamped and clamped != self.clamped:
            log.warning("fault held within the platform's limits: %s", ", ".join(clamped))
        self.clamped = clamped
        return declared

    async def sync(self) -> None:
        """Bring stress and gauges in line with the fault in force now."""
        active = self.current()
        fault = active.fault if active else None
        await self.stress.set(
            (fault.cpu_cores or 0.0) if fault else 0.0,
            (fault.memory_bytes or 0) if fault else 0,
            active.expires.timestamp() if active else 0.0,
        )
        effects = set(fault.effects()) if fault else set()
        for effect in EFFECTS:
            self.metrics.fault_active.labels(effect=effect).set(1 if effect in effects else 0)
        self.metrics.fault_expiry.set(active.expires.timestamp() if active else 0)
        self.metrics.stress_cpu.set(self.stress.cpu_cores)
        self.metrics.stress_memory.set(self.stress.memory_bytes)

    def _next_wake(self, poll_seconds: float) -> float:
        """Seconds until the next look: the poll interval, or sooner if the fault in force
        expires before then, so stress is released at the expiry rather than up to a poll late."""
        active = self.current()
        if active is None:
            return poll_seconds
        until_expiry = (active.expires - self.clock.now()).total_seconds()
        # 10 ms past the expiry: asyncio may fire a timer up to its clock resolution early,
        # and a wake just before the expiry would still see the fault and sleep a whole poll.
        return max(0.0, min(poll_seconds, until_expiry + 0.01))

    async def run(self, poll_seconds: float) -> None:
        try:
            while True:
                try:
                    self.reload()
                    await self.sync()
                except Exception:  # the loop that ends faults at their expiry must outlive any one error
                    log.exception("fault state loop: keeping on")
                await asyncio.sleep(self._next_wake(poll_seconds))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.stress.stop())

    def describe(self) -> dict[str, Any]:
        active = self.current()
        return {
            "active": active is not None,
            "fault": active.fault.model_dump(exclude_none=True) if active else None,
            "expires": format_time(active.expires) if active else None,
            "experiment": active.experiment if active else None,
            "error": self.error,
            "clamped": self.clamped,
            "stress": {"cpu_cores": self.stress.cpu_cores, "memory_bytes": self.stress.memory_bytes,
                       "burners": len(self.stress.burner_pids())},
            "now": format_time(self.clock.now()),
        }
