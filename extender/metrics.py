"""The extender's Prometheus metrics, served at ``/metrics`` by ``harbinger.httpserver``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "harbinger_extender_requests_total",
    "Scheduler calls by verb (filter, prioritize) and outcome (checked, fast_path, bad_request, "
    "not_ready, error).",
    ["verb", "outcome"],
)
LATENCY = Histogram(
    "harbinger_extender_request_seconds",
    "Time to answer one scheduler call, from body read to encoded answer.",
    ["verb"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
NODES_REJECTED = Counter(
    "harbinger_extender_nodes_rejected_total",
    "Nodes the filter turned down, by reason (no_headroom, undeclared_capacity, unknown_node, "
    "bad_pod_annotation).",
    ["reason"],
)
BAD_QUANTITIES = Counter(
    "harbinger_extender_bad_quantities_total",
    "Bandwidth values that are not quantities, on nodes (treated as declaring none) or on bound "
    "pods (counted as using none).",
    ["kind"],
)
ASSUMPTIONS_EXPIRED = Counter(
    "harbinger_extender_assumptions_expired_total",
    "Assumed placements dropped because the watch did not confirm them in time.",
)
ASSUMED = Gauge("harbinger_extender_assumed_placements", "Placements counted but not yet seen bound.")
NODES = Gauge("harbinger_extender_cached_nodes", "Nodes in the extender's watch cache.")
PODS = Gauge("harbinger_extender_tracked_pods", "Bound pods that carry bandwidth or a service.")
