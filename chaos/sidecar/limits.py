"""The platform's limits on a fault, applied by the sidecar itself to whatever its pod's
annotations declare (a pod's author can write them, not only the chaos controller).

A fault beyond a limit is held to it, not refused: a rehearsal that asks for 4 cores
where the platform allows 2 still rehearses 2, and says so (``clamped`` in ``/fault``,
``harbinger_chaos_fault_clamped_total``). The expiry is held to ``max_fault_seconds``
after the sidecar first read the declaration, so a fault dated year 9999 ends anyway.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from chaos.faults import ActiveFault
from harbinger.sidecar import SidecarLimits


def bound(declared: ActiveFault, limits: SidecarLimits, first_seen: datetime) -> tuple[ActiveFault, list[str]]:
    """``declared`` held within ``limits``, and the names of the fields that were cut."""
    fault = declared.fault
    update: dict[str, float | int] = {}
    if fault.delay_ms is not None and fault.delay_ms > limits.max_delay_ms:
        update["delay_ms"] = limits.max_delay_ms
    if fault.cpu_cores is not None and fault.cpu_cores > limits.max_cpu_cores:
        update["cpu_cores"] = limits.max_cpu_cores
    if fault.memory_bytes is not None and fault.memory_bytes > limits.max_memory_bytes:
        update["memory_bytes"] = limits.max_memory_bytes
    if fault.bandwidth_bps is not None and fault.bandwidth_bps < limits.min_bandwidth_bps:
        update["bandwidth_bps"] = limits.min_bandwidth_bps
    clamped = sorted(update)
    latest = first_seen + timedelta(seconds=limits.max_fault_seconds)
    expires = declared.expires
    if expires > latest:
        expires = latest
        clamped.append("expires")
    if not clamped:
        return declared, []
    # A limit of 0 turns an effect off; a fault left with no effect at all is still a
    # (harmless) fault, so model_copy, which does not re-run the "does something" check.
    return ActiveFault(fault.model_copy(update=update), expires, declared.experiment), clamped
