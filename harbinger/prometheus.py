"""The one Prometheus client every component uses: instant and range queries over Prometheus's
HTTP API (``/api/v1/query``, ``/api/v1/query_range``), with a timeout on every call and the
options a secured Prometheus asks for: a bearer token (inline or, as in a pod, a file
re-read on each request so a rotated token is picked up), a CA bundle for its TLS, and
extra headers (a tenant header for Thanos or Mimir, for example).

Failures are typed (:mod:`harbinger.errors`): :class:`PrometheusUnavailable` when
Prometheus cannot be reached or answers something that is not its API,
:class:`PrometheusQueryError` when it refuses the query. Callers decide what an empty
answer means; this module never invents a value.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from harbinger.errors import PrometheusQueryError, PrometheusUnavailable


class PrometheusConnection(BaseModel):
    """How to talk to Prometheus, whatever URL a component reads (settings section ``prometheus``)."""

    model_config = ConfigDict(extra="forbid")  # an unknown key is refused by name

    #: Every query gives up after this long.
    timeout_seconds: float = Field(10.0, gt=0)
    #: A file holding a bearer token (re-read on every request, so rotation needs no restart).
    bearer_token_file: Path | None = None
    #: CA bundle (PEM) that signs Prometheus's serving certificate; empty: the system's.
    ca_file: Path | None = None
    #: Extra request headers, such as ``X-Scope-OrgID`` for a multi-tenant Prometheus.
    headers: dict[str, str] = {}


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and value (NaN and ±Inf kept as Prometheus gave them)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range query: its labels and (unix time, value) points."""

    labels: Mapping[str, str]
    points: list[tuple[float, float]]


class PrometheusClient:
    """``async with PrometheusClient(url, connection) as prometheus: await prometheus.instant(q)``.

    The HTTP session is opened on first use (inside the running event loop) and closed by
    :meth:`close` or the ``async with`` block.
    """

    def __init__(self, url: str, connection: PrometheusConnection | None = None, *,
                 timeout_seconds: float | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusUnavailable(url, "the URL must start with http:// or https://")
        self.url = url.rstrip("/")
        self.connection = connection or PrometheusConnection()
        self.timeout_seconds = timeout_seconds or self.connection.timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            context: ssl.SSLContext | None = None
            if self.connection.ca_file is not None:
                try:
                    context = ssl.create_default_context(cafile=str(self.connection.ca_file))
                except (OSError, ssl.SSLError) as exc:
                    raise PrometheusUnavailable(self.url, f"cannot load the CA file {self.connection.ca_file}: {exc}"
                                                ) from exc
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                connector=aiohttp.TCPConnector(ssl=context) if context else None,
            )
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = dict(self.connection.headers)
        if self.connection.bearer_token_file is not None:
            try:
                token = self.connection.bearer_token_file.read_text().strip()
            except OSError as exc:
                raise PrometheusUnavailable(self.url, f"cannot read the bearer token file: {exc.strerror}") from exc
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        """The ``data`` of a successful API answer."""
        url = self.url + path
        try:
            async with self._open().get(url, params=params, headers=self._headers()) as response:
                try:
                    body: Any = await response.json(content_type=None)
                except ValueError:
                    raise PrometheusUnavailable(
                        self.url, f"{path} answered HTTP {response.status} with a body that is not JSON") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusUnavailable(self.url, str(exc) or type(exc).__name__) from exc
        if not isinstance(body, dict):
            raise PrometheusUnavailable(self.url, f"{path} answered {type(body).__name__}, not an API object")
        if body.get("status") != "success":
            raise PrometheusQueryError(params["query"], str(body.get("error") or "no error message"))
        return body.get("data") or {}

    async def instant(self, promql: str) -> list[Sample]:
        """Every series of an instant vector (a scalar answer is one series without labels)."""
        data = await self._get("/api/v1/query", {"query": promql})
        kind = data.get("resultType")
        if kind == "scalar":
            return [Sample({}, _number(data.get("result"), promql))]
        if kind != "vector":
            raise PrometheusQueryError(promql, f"expected an instant vector, got {kind!r}")
        return [Sample(_labels(series), _number(series.get("value"), promql)) for series in _series(data, promql)]

    async def scalar(self, promql: str) -> float | None:
        """An instant query's single value; None for no data, NaN or an infinity."""
        samples = await self.instant(promql)
        if len(samples) > 1:
            raise PrometheusQueryError(promql, f"returned {len(samples)} series; aggregate it to one, e.g. sum(...)")
        if not samples or not math.isfinite(samples[0].value):
            return None
        return samples[0].value

    async def range(self, promql: str, start: float, end: float, step_seconds: int) -> list[RangeSeries]:
        """Every series of a range query over unix times ``[start, end]`` at ``step_seconds``."""
        params = {"query": promql, "start": _unix(start), "end": _unix(end), "step": f"{step_seconds}s"}
        data = await self._get("/api/v1/query_range", params)
        if data.get("resultType") != "matrix":
            raise PrometheusQueryError(promql, f"expected a range vector (matrix), got {data.get('resultType')!r}")
        result = []
        for series in _series(data, promql):
            values = series.get("values")
            if not isinstance(values, list):
                raise PrometheusQueryError(promql, f"malformed series {str(series)[:200]} in the answer")
            result.append(RangeSeries(_labels(series), [_point(pair, promql) for pair in values]))
        return result


def _unix(moment: float) -> str:
    """A unix time as Prometheus reads it: whole seconds plainly, else to the millisecond."""
    return str(int(moment)) if float(moment).is_integer() else f"{moment:.3f}"


def _series(data: dict[str, Any], promql: str) -> list[dict[str, Any]]:
    result = data.get("result")
    if not isinstance(result, list) or not all(isinstance(s, dict) for s in result):
        raise PrometheusQueryError(promql, "malformed result in the answer")
    return result


def _labels(series: dict[str, Any]) -> dict[str, str]:
    metric = series.get("metric")
    return {str(k): str(v) for k, v in metric.items()} if isinstance(metric, dict) else {}


def _point(pair: Any, promql: str) -> tuple[float, float]:
    try:
        return float(pair[0]), float(pair[1])  # Prometheus writes values (and NaN, +Inf) as strings
    except (TypeError, ValueError, IndexError, KeyError):
        raise PrometheusQueryError(promql, f"malformed sample {pair!r} in the answer") from None


def _number(pair: Any, promql: str) -> float:
    return _point(pair, promql)[1]
