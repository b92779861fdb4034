"""Steady state, measured: error rate, p99 latency and throughput per service, by PromQL
against a real Prometheus, judged against a baseline and the experiment's SLO.

Queries are templates with ``{selector}`` (the label matchers that pick one service's
series, from ``selector`` with ``{service}`` and ``{namespace}`` filled in) and
``{window}`` (the rate window). The defaults read the chaos sidecar's own metrics; the
``istio`` preset reads ``istio_requests_total`` and its duration histogram.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from chaos.experiment import SLO
from harbinger.clock import SYSTEM_CLOCK, Clock
from harbinger.prometheus import PrometheusClient


class Queries(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: str = 'job="{service}"'
    throughput: str = "sum(rate(harbinger_chaos_requests_total{{{selector}}}[{window}]))"
    error_rate: str = ('sum(rate(harbinger_chaos_requests_total{{{selector},code=~"5.."}}[{window}]))'
                       " / sum(rate(harbinger_chaos_requests_total{{{selector}}}[{window}]))")
    p99_seconds: str = ("histogram_quantile(0.99, sum by (le) "
                        "(rate(harbinger_chaos_request_duration_seconds_bucket{{{selector}}}[{window}])))")

    @classmethod
    def istio(cls) -> Queries:
        return cls(
            selector='reporter="destination",destination_service_name="{service}",'
                     'destination_service_namespace="{namespace}"',
            throughput="sum(rate(istio_requests_total{{{selector}}}[{window}]))",
            error_rate=('sum(rate(istio_requests_total{{{selector},response_code=~"5.."}}[{window}]))'
                        " / sum(rate(istio_requests_total{{{selector}}}[{window}]))"),
            p99_seconds=("histogram_quantile(0.99, sum by (le) "
                         "(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{window}]))) / 1000"),
        )

    def render(self, which: str, service: str, namespace: str, window_seconds: float) -> str:
        selector = self.selector.format(service=service, namespace=namespace)
        template: str = getattr(self, which)
        return template.format(selector=selector, window=f"{max(math.ceil(window_seconds), 1)}s")


@dataclass(frozen=True)
class Sample:
    """One service's steady-state figures at one moment; None where Prometheus had no data."""

    service: str
    time: datetime
    error_rate: float | None
    p99_seconds: float | None
    throughput_rps: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "time": self.time.isoformat(), "error_rate": self.error_rate,
                "p99_seconds": self.p99_seconds, "throughput_rps": self.throughput_rps}


@dataclass(frozen=True)
class Baseline:
    error_rate: float
    p99_seconds: float
    throughput_rps: float


@dataclass(frozen=True)
class Breach:
    service: str
    metric: str
    value: float
    limit: float

    def describe(self) -> str:
        return f"{self.service}: {self.metric} {self.value:.4g} beyond {self.limit:.4g}"


class Monitor:
    def __init__(self, prometheus: PrometheusClient, *, namespace: str, window_seconds: float,
                 queries: Queries | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.prometheus = prometheus
        self.namespace = namespace
        self.window_seconds = window_seconds
        self.queries = queries or Queries()

    async def sample(self, services: list[str]) -> list[Sample]:
        now = self.clock.now()
        metrics = ("error_rate", "p99_seconds", "throughput")
        values = await asyncio.gather(*(
            self.prometheus.scalar(self.queries.render(m, s, self.namespace, self.window_seconds))
            for s in services for m in metrics))
        samples = []
        for i, service in enumerate(services):
            error_rate, p99, throughput = values[3 * i: 3 * i + 3]
            if error_rate is None and throughput:
                error_rate = 0.0  # traffic but no 5xx series at all: no errors, not "unknown"
            samples.append(Sample(service, now, error_rate, p99, throughput or 0.0))
        return samples


def baseline_of(samples: list[Sample]) -> Baseline:
    """Mean of each figure over the samples that had data (0 where none had)."""
    def mean(values: list[float | None]) -> float:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else 0.0
    return Baseline(mean([s.error_rate for s in samples]), mean([s.p99_seconds for s in samples]),
                    mean([s.throughput_rps for s in samples]))


def breaches(sample: Sample, baseline: Baseline, slo: SLO) -> list[Breach]:
    """Where ``sample`` leaves the steady state: the SLO's error and latency bounds (never
    tighter than the baseline itself), and throughput against the baseline."""
    found = []
    error_limit = max(slo.max_error_rate, baseline.error_rate)
    if sample.error_rate is not None and sample.error_rate > error_limit:
        found.append(Breach(sample.service, "error_rate", sample.error_rate, error_limit))
    p99_limit = max(slo.max_p99_seconds, baseline.p99_seconds)
    if sample.p99_seconds is not None and sample.p99_seconds > p99_limit:
        found.append(Breach(sample.service, "p99_seconds", sample.p99_seconds, p99_limit))
    throughput_floor = baseline.throughput_rps * slo.min_throughput_ratio
    if baseline.throughput_rps > 0 and (sample.throughput_rps or 0.0) < throughput_floor:
        found.append(Breach(sample.service, "throughput_rps", sample.throughput_rps or 0.0, throughput_floor))
    return found


def steady_state_violations(baselines: dict[str, Baseline], slo: SLO) -> list[str]:
    """A system already outside its SLO is not rehearsed: the experiment would prove nothing."""
    problems = []
    for service, base in baselines.items():
        if base.error_rate > slo.max_error_rate:
            problems.append(f"{service}: error rate {base.error_rate:.4g} already above {slo.max_error_rate:g}")
        if base.p99_seconds > slo.max_p99_seconds:
            problems.append(f"{service}: p99 {base.p99_seconds:.4g}s already above {slo.max_p99_seconds:g}s")
        if base.throughput_rps <= 0:
            problems.append(f"{service}: no traffic in the baseline, so nothing to judge")
    return problems
