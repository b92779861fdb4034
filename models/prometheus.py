"""Traffic history from Prometheus: ``GET /api/v1/query_range``, returned as a TPS series.

The PromQL must give one series of requests per second, for example
``sum(rate(istio_requests_total{destination_service_name="checkout"}[5m]))``. The
answer has the same shape as :func:`models.series.load_csv`'s: a regular, epoch-aligned
grid of ``step_seconds`` with ``NaN`` where Prometheus has no sample.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from models.errors import BadSeries

#: Prometheus refuses a range query of more than 11,000 points per series; stay under it.
MAX_POINTS_PER_QUERY = 10_000


async def query_range(
    base_url: str,
    promql: str,
    start: datetime,
    end: datetime,
    step_seconds: int,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout_seconds: float = 30.0,
    name: str | None = None,
) -> pd.Series:
    """Run ``promql`` over ``[start, end]`` at ``step_seconds`` and return the TPS series.

    ``start`` is aligned down to a whole step so that the grid matches the model's; long
    ranges are fetched in several queries. Raises :class:`BadSeries` naming the query
    when Prometheus answers with an error, with no data, or with more than one series.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise BadSeries("start and end must carry a time zone (UTC)", source=promql)
    if step_seconds <= 0 or end <= start:
        raise BadSeries("need end > start and a positive step", source=promql)
    first = math.floor(start.timestamp() / step_seconds) * step_seconds
    last = math.floor(end.timestamp() / step_seconds) * step_seconds
    n_steps = (last - first) // step_seconds + 1
    values = np.full(n_steps, np.nan)

    own_session = session is None
    client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))
    try:
        chunk_start = first
        while chunk_start <= last:
            chunk_end = min(last, chunk_start + (MAX_POINTS_PER_QUERY - 1) * step_seconds)
            points = await _fetch(client, base_url, promql, chunk_start, chunk_end, step_seconds)
            for stamp, value in points:
                position = round((stamp - first) / step_seconds)
                if 0 <= position < n_steps:
                    values[position] = value
            chunk_start = chunk_end + step_seconds
    finally:
        if own_session:
            await client.close()

    if np.all(np.isnan(values)):
        raise BadSeries("Prometheus returned no samples for this query and range", source=promql)
    if np.any(values[~np.isnan(values)] < 0):
        raise BadSeries("the query returned negative values; it must give requests per second", source=promql)
    index = pd.date_range(datetime.fromtimestamp(first, UTC), periods=n_steps,
                          freq=pd.Timedelta(seconds=step_seconds))
    return pd.Series(values, index=index, name=name or promql)


async def _fetch(client: aiohttp.ClientSession, base_url: str, promql: str, start: int, end: int,
                 step_seconds: int) -> list[tuple[float, float]]:
    url = base_url.rstrip("/") + "/api/v1/query_range"
    params = {"query": promql, "start": str(start), "end": str(end), "step": f"{step_seconds}s"}
    try:
        async with client.get(url, params=params) as response:
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                raise BadSeries(f"{url} answered HTTP {response.status} with a body that is not JSON",
                                source=promql) from None
    except aiohttp.ClientError as exc:
        raise BadSeries(f"cannot reach Prometheus at {base_url}: {exc}", source=promql) from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "no error message") if isinstance(body, dict) else "unexpected body"
        raise BadSeries(f"Prometheus refused the query: {error}", source=promql)
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise BadSeries(f"expected a range vector (matrix), got {data.get('resultType')!r}", source=promql)
    result = data.get("result") or []
    if len(result) > 1:
        labels = ", ".join(str(series.get("metric", {})) for series in result[:3])
        raise BadSeries(f"the query returned {len(result)} series ({labels}, ...); aggregate it to one, "
                        "e.g. with sum(...)", source=promql)
    if not result:
        return []
    points: list[tuple[float, float]] = []
    for pair in result[0].get("values", []):
        try:
            stamp, text = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            raise BadSeries(f"malformed sample {pair!r} in Prometheus's answer", source=promql) from None
        # Prometheus writes NaN and +Inf as strings; an infinite rate is as unknown as NaN.
        points.append((stamp, text if math.isfinite(text) else math.nan))
    return points
