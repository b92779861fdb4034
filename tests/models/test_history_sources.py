"""Where a forecaster's recent traffic comes from: a real Prometheus by a PromQL
template, or a recorded trace cut at the (replay) clock's now."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, generate_latest

from harbinger.errors import InvalidInput
from harbinger.settings import HistorySettings
from harbinger_dev.localcluster import LocalPrometheus
from models.errors import BadSeries
from models.traffic import PrometheusHistory, TraceHistory, history_source

if TYPE_CHECKING:  # the fixture's type; pytest loads the conftest itself
    from tests.conftest import ScrapeTarget


async def test_history_comes_from_prometheus_by_service(prometheus: LocalPrometheus, scrape: ScrapeTarget) -> None:
    job = f"webhook-history-{uuid.uuid4().hex[:6]}"
    registry = CollectorRegistry()
    requests = Counter("shop_requests", "requests served", ["service"], registry=registry)

    def render() -> bytes:
        requests.labels("web").inc(50)  # 50 per scrape, one scrape a second: about 50/s
        requests.labels("other").inc(1)
        return generate_latest(registry)

    async with scrape(job, render):
        template = f'sum(rate(shop_requests_total{{job="{job}",service="{{service}}"}}[5s]))'
        source = PrometheusHistory(prometheus.url, template)
        history = None
        for _ in range(120):  # until two scrapes of the target fall inside one whole-second step
            try:
                history = await source.history("web", end=datetime.now(UTC), lookback=timedelta(seconds=30),
                                               step_seconds=1)
                break
            except BadSeries:
                await asyncio.sleep(0.5)
        assert history is not None, "Prometheus never had the series"
        known = history.dropna()
        assert len(known) >= 1 and str(history.index.tz) == "UTC"
        assert known.max() > 10 and np.all(known < 500), known  # web's rate (about 50/s), not other's (1/s)


async def test_trace_history_gives_only_what_had_happened_by_now(tmp_path: Path) -> None:
    csv = tmp_path / "web.csv"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [f"{(start + timedelta(minutes=m)).isoformat().replace('+00:00', 'Z')},{60 * (m + 1)}" for m in range(120)]
    csv.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    source = history_source(HistorySettings(traces=[f"web={csv}*2"]))
    assert isinstance(source, TraceHistory)
    end = start + timedelta(minutes=30, seconds=20)  # inside the minute that starts at 00:30
    history = await source.history("web", end=end, lookback=timedelta(minutes=10, seconds=20), step_seconds=60)
    # Whole minutes 00:20..00:29 are over by 00:30:20; 00:30 is not. Counts/60 s, times the scale 2.
    assert list(history.index) == [start + timedelta(minutes=m) for m in range(20, 30)]
    assert list(history.values) == [2.0 * (m + 1) for m in range(20, 30)]


def test_trace_history_flags_are_checked() -> None:
    for bad in ("web", "=x.csv", "web=x.csv*fast", "web=x.csv*-2"):
        try:
            TraceHistory.parse([bad])
        except InvalidInput as exc:
            assert repr(bad) in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
