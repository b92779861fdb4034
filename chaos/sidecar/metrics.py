"""The sidecar's Prometheus metrics, in a registry of its own (several sidecars can share a
process in tests). Names are what ``chaos.monitor``'s default queries read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SidecarMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "harbinger_chaos_requests", "Requests through the chaos sidecar, by the status answered",
            ["code"], registry=self.registry)
        self.duration = Histogram(
            "harbinger_chaos_request_duration_seconds", "Time from request to response end, faults included",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.injected = Counter(
            "harbinger_chaos_faults_injected", "Requests a fault was injected into, by effect",
            ["effect"], registry=self.registry)
        self.fault_active = Gauge(
            "harbinger_chaos_fault_active", "1 while an effect of an unexpired fault is in force",
            ["effect"], registry=self.registry)
        self.fault_expiry = Gauge(
            "harbinger_chaos_fault_expiry_timestamp_seconds", "When the fault in force expires (0: none)",
            registry=self.registry)
        self.annotation_errors = Counter(
            "harbinger_chaos_annotation_errors", "Annotation files refused as invalid (no fault applied)",
            registry=self.registry)
        self.fault_clamped = Counter(
            "harbinger_chaos_fault_clamped", "Faults held within the platform's limits, by the field cut",
            ["field"], registry=self.registry)
        self.stress_cpu = Gauge("harbinger_chaos_stress_cpu_cores", "CPU cores being burnt", registry=self.registry)
        self.stress_memory = Gauge("harbinger_chaos_stress_memory_bytes", "Memory being held", registry=self.registry)
