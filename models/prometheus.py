"""Traffic history from Prometheus: ``GET /api/v1/query_range``, returned as a TPS series.

The PromQL must give one series of requests per second, for example
``sum(rate(istio_requests_total{destination_service_name="checkout"}[5m]))``. The
answer has the same shape as :func:`models.series.load_csv`'s: a regular, epoch-aligned
grid of ``step_seconds`` with ``NaN`` where Prometheus has no sample.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from harbinger.prometheus import PrometheusClient
from models.errors import BadSeries

#: Prometheus refuses a range query of more than 11,000 points per series; stay under it.
MAX_POINTS_PER_QUERY = 10_000


async def query_range(
    prometheus: PrometheusClient,
    promql: str,
    start: datetime,
    end: datetime,
    step_seconds: int,
    *,
    name: str | None = None,
) -> pd.Series:
    """Run ``promql`` over ``[start, end]`` at ``step_seconds`` and return the TPS series.

    ``start`` is aligned down to a whole step so that the grid matches the model's; long
    ranges are fetched in several queries. Raises :class:`BadSeries` naming the query
    when the answer is no data, more than one series or negative rates; Prometheus being
    unreachable or refusing the query raises the shared client's typed errors.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise BadSeries("start and end must carry a time zone (UTC)", source=promql)
    if step_seconds <= 0 or end <= start:
        raise BadSeries("need end > start and a positive step", source=promql)
    first = math.floor(start.timestamp() / step_seconds) * step_seconds
    last = math.floor(end.timestamp() / step_seconds) * step_seconds
    n_steps = (last - first) // step_seconds + 1
    values = np.full(n_steps, np.nan)

    chunk_start = first
    while chunk_start <= last:
        chunk_end = min(last, chunk_start + (MAX_POINTS_PER_QUERY - 1) * step_seconds)
        series = await prometheus.range(promql, chunk_start, chunk_end, step_seconds)
        if len(series) > 1:
            labels = ", ".join(str(dict(s.labels)) for s in series[:3])
            raise BadSeries(f"the query returned {len(series)} series ({labels}, ...); aggregate it to one, "
                            "e.g. with sum(...)", source=promql)
        for stamp, value in series[0].points if series else []:
            position = round((stamp - first) / step_seconds)
            if 0 <= position < n_steps:
                # An infinite rate is as unknown as NaN.
                values[position] = value if math.isfinite(value) else math.nan
        chunk_start = chunk_end + step_seconds

    if np.all(np.isnan(values)):
        raise BadSeries("Prometheus returned no samples for this query and range", source=promql)
    if np.any(values[~np.isnan(values)] < 0):
        raise BadSeries("the query returned negative values; it must give requests per second", source=promql)
    index = pd.date_range(datetime.fromtimestamp(first, UTC), periods=n_steps,
                          freq=pd.Timedelta(seconds=step_seconds))
    return pd.Series(values, index=index, name=name or promql)
