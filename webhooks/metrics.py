"""The webhook's Prometheus metrics, served at ``/metrics``. All names start with
``harbinger_webhook_``; label values are a small fixed set (never a pod or service name)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "harbinger_webhook_requests", "Admission requests answered, by HTTP status code.", ["code"]
)
LATENCY = Histogram(
    "harbinger_webhook_review_seconds",
    "Time from a /mutate request's body read to its answer.",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)
PATCHED = Counter("harbinger_webhook_patched_pods", "Pods admitted with a non-empty patch.")
STAMPS = Counter(
    "harbinger_webhook_stamps",
    "Stamps applied, by kind (forecast, resources, bandwidth, warmup, chaos).",
    ["stamp"],
)
ERRORS = Counter(
    "harbinger_webhook_errors",
    "Problems met while reviewing, by reason (bad_request, too_large, bad_annotation).",
    ["reason"],
)
FORECAST_LOOKUPS = Counter(
    "harbinger_webhook_forecast_lookups",
    "Forecast lookups on the hot path: hit (cached), miss (model run inline), none (no model).",
    ["result"],
)
FORECAST_RUNS = Counter(
    "harbinger_webhook_forecast_runs", "Model runs (inline or background refresh), by result.", ["result"]
)

# Children bound once: ``.labels(...)`` on every review costs a lock and a dict lookup.
STAMP_COUNTERS = {stamp: STAMPS.labels(stamp) for stamp in ("forecast", "resources", "bandwidth", "warmup", "chaos")}
BAD_ANNOTATIONS = ERRORS.labels("bad_annotation")
LOOKUP_HIT = FORECAST_LOOKUPS.labels("hit")
LOOKUP_MISS = FORECAST_LOOKUPS.labels("miss")
LOOKUP_NONE = FORECAST_LOOKUPS.labels("none")
ANSWERED = REQUESTS.labels("200")
