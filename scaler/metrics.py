"""The planner's Prometheus metrics, registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PLANNED_REPLICAS = Gauge(
    "harbinger_planner_planned_replicas", "Replica floor the plan asks for now (after bottleneck allocation)",
    ["namespace", "service"])
ACTUAL_REPLICAS = Gauge(
    "harbinger_planner_actual_replicas", "Replicas the Deployment has (status.replicas)", ["namespace", "service"])
PEAK_TPS = Gauge(
    "harbinger_planner_next_peak_tps", "P90 requests/s of the next predicted peak in the horizon",
    ["namespace", "service"])
RUNS = Counter(
    "harbinger_planner_runs_total",
    "Planner runs by outcome: applied, forecast_only, follower (not the leader), refused (bad input), failed",
    ["outcome"])
ERRORS = Counter("harbinger_planner_errors_total", "Errors by kind", ["kind"])
FLOOR_CHANGES = Counter(
    "harbinger_planner_floor_changes_total", "Floors raised or lowered on the cluster",
    ["namespace", "service", "direction"])
IS_LEADER = Gauge("harbinger_planner_is_leader", "1 while this replica holds the planner Lease")
LEARNED_VALUE = Gauge(
    "harbinger_planner_learned_profile_value",
    "A capacity-profile field the operator did not declare, as learned from the cluster or the traffic "
    "history (absent while the default is used)",
    ["namespace", "service", "field"])
SKIPPED = Counter(
    "harbinger_planner_skipped_total",
    "Deployments left out of a run, by reason (InvalidCapacityProfile, AmbiguousService, PlanFailed); "
    "every other service is still planned",
    ["namespace", "reason"])
FLOOR_CAPPED = Counter(
    "harbinger_planner_floor_capped_total",
    "Runs in which a service's planned floor was cut to its namespace's cap (planner.max_floor_replicas)",
    ["namespace", "service"])
FLOORS_RELEASED = Counter(
    "harbinger_planner_floors_released_total",
    "Raised floors given back because their service is no longer managed (namespace opted out, "
    "Deployment no longer a service)",
    ["namespace"])
