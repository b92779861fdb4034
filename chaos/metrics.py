"""The chaos controller's and sweeper's Prometheus metrics (the process-wide registry; the
sidecar's own are in :mod:`chaos.sidecar.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SWEPT = Counter("harbinger_chaos_swept", "Objects a sweep restored or deleted, by kind", ["kind"])
SWEEP_SKIPPED = Counter(
    "harbinger_chaos_sweep_skipped",
    "Objects a sweep left alone because they could not be restored safely, by kind and reason",
    ["kind", "reason"])
PLAN_ERRORS = Counter("harbinger_chaos_plan_errors", "Reads of the rehearsal plan that failed (the plan is retried)")
PLAN_VALID = Gauge("harbinger_chaos_plan_valid",
                   "1 while the last read of the rehearsal plan was valid, 0 while it was not (NaN: not read yet)")
# Not 0 before the first read: that would say "invalid" (and alert) about a plan nobody has read.
PLAN_VALID.set(float("nan"))
RUNS = Counter("harbinger_chaos_runs", "Rehearsals run by the controller, by outcome", ["status"])
