"""Serving: recent history + now -> :class:`Forecast`, on onnxruntime, without scikit-learn.

The path of one forecast reads top to bottom in :meth:`Forecaster.forecast`: the origin
(the step ``now`` falls in), the history window before it, events taken out of the
history, features, one ``session.run``, ratios back to TPS, events put back in.

One :class:`onnxruntime.InferenceSession` per graph, created once at load, single-threaded
inside (``intra_op_num_threads=1``): a 24-step forecast is tens of microseconds of tree
walking, which thread hand-offs would only slow down; callers parallelise across services.
:class:`ForecasterBatch` forecasts many services at once: one compiled feature pass for all
services whose models share a feature layout, then one ``run`` per graph.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from harbinger.clock import format_time
from models.errors import BadRequest, HistoryTooShort, ModelMismatch
from models.events import Event
from models.features import Features, FeatureSpec, build_features, event_multipliers, to_tps
from models.forecast import Forecast
from models.metadata import (
    INPUT_NAME,
    OUTPUT_P50,
    OUTPUT_P90,
    SERVICE_PROP,
    VERSION_PROP,
    ModelMetadata,
    read_metadata,
)
from models.series import utc_stamps
from models.window import window_before

log = logging.getLogger(__name__)

_NS = 1_000_000_000
#: Services forecast in one feature pass and one ``session.run`` by :class:`ForecasterBatch`.
BATCH_CHUNK = 1024
#: Feature rows (float32, origin-major) -> raw P50 and P90 ratios.
RatioPredictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def new_session(graph: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class HistoryWindow:
    """One service's history before its forecast origin, with the events taken out."""

    values: np.ndarray  # (window_steps,) TPS, NaN where unknown
    start_ns: int  # the first forecast step
    multipliers: np.ndarray  # (horizon,) the events' expected effect on each forecast step


@dataclass(frozen=True)
class PreparedRequest:
    """Model inputs for ``n`` origins (one per service in a batch), all with the same horizon."""

    inputs: Features
    multipliers: np.ndarray  # (n, horizon)
    start_ns: np.ndarray  # (n,)
    horizon_steps: int

    @property
    def features(self) -> np.ndarray:
        return self.inputs.x


class ForecastCore:
    """What turns a history into model inputs and model outputs into a :class:`Forecast`.

    Shared by the onnxruntime :class:`Forecaster` and the scikit-learn twin used by the
    benchmark and the backtest, so that both answer from the very same inputs.
    """

    def __init__(self, service: str, model_version: str, spec: FeatureSpec, p90_margin: float) -> None:
        self.service = service
        self.model_version = model_version
        self.spec = spec
        self.p90_margin = p90_margin

    @property
    def step_seconds(self) -> int:
        return self.spec.step_seconds

    @property
    def min_history_steps(self) -> int:
        return self.spec.min_history_steps

    @property
    def horizon_steps(self) -> int:
        return self.spec.horizon_steps

    def window(self, history: pd.Series, now: datetime | None = None, horizon_steps: int | None = None,
               events: Sequence[Event] | None = None) -> HistoryWindow:
        """The history window before the origin (the step ``now`` falls in), events taken out."""
        spec = self.spec
        step_ns = spec.step_seconds * _NS
        h = self._checked_horizon(horizon_steps)
        stamps = utc_stamps(history, self.service)
        start_ns = self._origin_ns(stamps, now)
        values, known = window_before(history, start_ns, spec.window_steps, spec.step_seconds,
                                      source=self.service, stamps=stamps)
        multipliers = _no_events(h)
        if events:
            past = start_ns - np.arange(spec.window_steps, 0, -1, dtype=np.int64) * step_ns
            # A step inside an event of unmeasured effect becomes unknown, not normal traffic.
            values = values / event_multipliers(events, self.service, past, spec.step_seconds,
                                                spec.kind_effects, unknown=np.nan)
            known = int(np.count_nonzero(values == values))
            future = start_ns + np.arange(h, dtype=np.int64) * step_ns
            multipliers = event_multipliers(events, self.service, future, spec.step_seconds, spec.kind_effects)
        if known < spec.min_history_steps:
            raise HistoryTooShort(
                f"{known} known steps in the {spec.window_steps} steps before "
                f"{_iso(start_ns)}{' outside events of unmeasured effect' if events else ''}; the model "
                f"needs at least {spec.min_history_steps} steps of {spec.step_seconds} s "
                f"({spec.min_history_hours} h)", source=self.service)
        return HistoryWindow(values, start_ns, multipliers)

    def prepare_many(self, windows: Sequence[HistoryWindow]) -> PreparedRequest:
        """Features for several windows (same spec, same horizon) in one compiled pass."""
        h = windows[0].multipliers.size
        if len(windows) == 1:  # the one-service path: views, not copies
            stacked, multipliers = windows[0].values[None, :], windows[0].multipliers[None, :]
        else:
            stacked, multipliers = np.stack([w.values for w in windows]), np.stack([w.multipliers for w in windows])
        starts = np.array([w.start_ns for w in windows], dtype=np.int64)
        inputs = build_features(stacked, starts, self.spec, h)
        return PreparedRequest(inputs, multipliers, starts, h)

    def prepare(self, history: pd.Series, now: datetime | None = None, horizon_steps: int | None = None,
                events: Sequence[Event] | None = None) -> PreparedRequest:
        return self.prepare_many([self.window(history, now, horizon_steps, events)])

    def finish_many(self, members: Sequence[ForecastCore], request: PreparedRequest, ratio_p50: np.ndarray,
                    ratio_p90: np.ndarray) -> list[Forecast]:
        """One :class:`Forecast` per member (in the order of the request's windows)."""
        p50, p90 = to_tps(ratio_p50, ratio_p90, request.inputs, request.multipliers, self.p90_margin)
        return [Forecast(service=member.service, model_version=member.model_version,
                         start=datetime.fromtimestamp(int(start) / _NS, UTC),
                         step_seconds=self.spec.step_seconds, p50=p50[i], p90=p90[i])
                for i, (member, start) in enumerate(zip(members, request.start_ns, strict=True))]

    def finish(self, request: PreparedRequest, ratio_p50: np.ndarray, ratio_p90: np.ndarray) -> Forecast:
        return self.finish_many([self], request, ratio_p50, ratio_p90)[0]

    def forecast_with(self, predict: RatioPredictor, history: pd.Series, now: datetime | None = None,
                      horizon_steps: int | None = None, events: Sequence[Event] | None = None) -> Forecast:
        request = self.prepare(history, now, horizon_steps, events)
        ratio_p50, ratio_p90 = predict(request.features)
        return self.finish(request, ratio_p50, ratio_p90)

    def _checked_horizon(self, horizon_steps: int | None) -> int:
        h = self.spec.horizon_steps if horizon_steps is None else horizon_steps
        if not 1 <= h <= self.spec.horizon_steps:
            raise BadRequest(f"a horizon of {h} steps; this model forecasts 1 to {self.spec.horizon_steps} "
                             f"steps of {self.spec.step_seconds} s", source=self.service)
        return h

    def _origin_ns(self, stamps: np.ndarray, now: datetime | None) -> int:
        step_ns = self.spec.step_seconds * _NS
        if now is None:
            if stamps.size == 0:
                raise HistoryTooShort(f"the history is empty; the model needs at least "
                                      f"{self.spec.min_history_steps} steps", source=self.service)
            return (int(stamps[-1]) // step_ns + 1) * step_ns
        if now.tzinfo is None:
            raise BadRequest("'now' must be timezone-aware (UTC)", source=self.service)
        # The forecast starts with the step ``now`` falls in: it is not complete yet.
        return (int(pd.Timestamp(now).value) // step_ns) * step_ns


class Forecaster(ForecastCore):
    """One service's trained model, served by onnxruntime."""

    def __init__(self, metadata: ModelMetadata, session: ort.InferenceSession, graph_sha256: str) -> None:
        try:
            spec = FeatureSpec.from_json(metadata.feature_spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelMismatch(f"the feature spec in the metadata is not usable: {exc}",
                                source=metadata.service) from None
        super().__init__(metadata.service, metadata.model_version, spec, metadata.p90_margin)
        self.metadata = metadata
        self.session = session
        self.graph_sha256 = graph_sha256
        _check_graph_signature(session, len(spec.names), metadata)
        self._outputs = [OUTPUT_P50, OUTPUT_P90]
        warm_up()

    @classmethod
    def load(cls, model_dir: Path, *, sessions: dict[str, ort.InferenceSession] | None = None) -> Forecaster:
        """Load a model directory; refuses a graph whose sha256 or signature does not match the metadata.

        ``sessions`` (sha256 -> session) lets many services that share a graph share one session.
        """
        metadata, graph = read_metadata(Path(model_dir))
        session = sessions.get(metadata.graph_sha256) if sessions is not None else None
        if session is None:
            try:
                session = new_session(graph)
            except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
                raise ModelMismatch(f"onnxruntime cannot load the graph: {exc}",
                                    source=str(Path(model_dir) / metadata.graph_file)) from None
            if sessions is not None:
                sessions[metadata.graph_sha256] = session
        return cls(metadata, session, metadata.graph_sha256)

    def predict_ratios(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p50, p90 = self.session.run(self._outputs, {INPUT_NAME: features})
        return p50.reshape(-1), p90.reshape(-1)

    def forecast(self, history: pd.Series, now: datetime | None = None, horizon_steps: int | None = None,
                 events: Sequence[Event] | None = None) -> Forecast:
        """P50/P90 TPS for the ``horizon_steps`` steps from the step ``now`` falls in.

        ``history`` is TPS indexed by UTC timestamps (``NaN`` = unknown), at the model's step
        or any other (it is then averaged onto the model's grid). ``now`` defaults to just
        after the last history step. ``events`` should include past events overlapping the
        history window, so that their effect is taken out of the lags.
        """
        return self.forecast_with(self.predict_ratios, history, now, horizon_steps, events)


class ForecasterBatch:
    """Many services at once: one ``session.run`` per distinct graph and horizon."""

    def __init__(self, forecasters: Iterable[Forecaster]) -> None:
        self.forecasters: dict[str, Forecaster] = {}
        for forecaster in forecasters:
            if forecaster.service in self.forecasters:
                raise BadRequest(f"two models for service {forecaster.service!r}")
            self.forecasters[forecaster.service] = forecaster

    @classmethod
    def load_dirs(cls, model_dirs: Iterable[Path]) -> ForecasterBatch:
        """Load model directories; identical graphs share one session."""
        sessions: dict[str, ort.InferenceSession] = {}
        return cls(Forecaster.load(path, sessions=sessions) for path in model_dirs)

    def forecast(self, histories: Mapping[str, pd.Series], now: datetime | None = None,
                 horizon_steps: int | None = None, events: Sequence[Event] | None = None) -> dict[str, Forecast]:
        """A forecast per service in ``histories``; a service without a model is a :class:`BadRequest`.

        Services whose models share a feature layout (step and seasonality) get their
        features in one pass; services that share a graph share one
        ``session.run``. Per service, what is left is cutting its history window and
        walking its own trees.
        """
        unknown = sorted(set(histories) - set(self.forecasters))
        if unknown:
            raise BadRequest(f"no model for service(s) {', '.join(unknown[:5])}")
        layouts: dict[tuple[int, str, int], list[tuple[Forecaster, HistoryWindow]]] = {}
        for service, history in histories.items():
            forecaster = self.forecasters[service]
            window = forecaster.window(history, now, horizon_steps, events)
            key = (forecaster.spec.step_seconds, forecaster.spec.seasonality, window.multipliers.size)
            layouts.setdefault(key, []).append((forecaster, window))
        results: dict[str, Forecast] = {}
        for members in layouts.values():
            # In chunks: the feature pass holds a few copies of the windows (10,000 services of
            # three weeks at 15 minutes are 160 MB each); a chunk bounds that, and is already
            # large enough that per-call overheads vanish.
            for first in range(0, len(members), BATCH_CHUNK):
                for forecast in _forecast_layout(members[first : first + BATCH_CHUNK]):
                    results[forecast.service] = forecast
        return results


def _forecast_layout(members: Sequence[tuple[Forecaster, HistoryWindow]]) -> list[Forecast]:
    """Forecasts for services whose models take the same features (same step and seasonality)."""
    lead = members[0][0]
    forecasters = [forecaster for forecaster, _ in members]
    h = members[0][1].multipliers.size
    starts = np.array([window.start_ns for _, window in members], dtype=np.int64)
    inputs = build_features(np.stack([window.values for _, window in members]), starts, lead.spec, h,
                            level_floors=np.array([f.spec.level_floor for f in forecasters]))
    rows = inputs.x.reshape(len(members), h, -1)
    p50 = np.empty((len(members), h))
    p90 = np.empty((len(members), h))
    by_session: dict[int, list[int]] = {}
    for i, forecaster in enumerate(forecasters):
        by_session.setdefault(id(forecaster.session), []).append(i)
    for positions in by_session.values():
        ratio_p50, ratio_p90 = forecasters[positions[0]].predict_ratios(rows[positions].reshape(-1, rows.shape[2]))
        p50[positions], p90[positions] = ratio_p50.reshape(-1, h), ratio_p90.reshape(-1, h)
    margins = np.array([f.p90_margin for f in forecasters])
    tps50, tps90 = to_tps(p50, p90, inputs, np.stack([window.multipliers for _, window in members]), margins)
    return [Forecast(service=f.service, model_version=f.model_version,
                     start=datetime.fromtimestamp(int(start) / _NS, UTC), step_seconds=f.spec.step_seconds,
                     p50=tps50[i], p90=tps90[i])
            for i, (f, start) in enumerate(zip(forecasters, starts, strict=True))]


def _check_graph_signature(session: ort.InferenceSession, n_features: int, metadata: ModelMetadata) -> None:
    service = metadata.service
    stamped = session.get_modelmeta().custom_metadata_map
    for key, expected in ((SERVICE_PROP, metadata.graph_service or metadata.service),
                          (VERSION_PROP, metadata.model_version)):
        if stamped.get(key) != expected:
            raise ModelMismatch(f"the graph says {key}={stamped.get(key)!r}, the metadata {expected!r}",
                                source=service)
    inputs = session.get_inputs()
    outputs = {output.name for output in session.get_outputs()}
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].shape[-1] != n_features:
        found = [(i.name, i.shape) for i in inputs]
        raise ModelMismatch(f"the graph takes {found}; the metadata's feature spec needs "
                            f"{INPUT_NAME!r} with {n_features} features", source=service)
    if not {OUTPUT_P50, OUTPUT_P90} <= outputs:
        raise ModelMismatch(f"the graph outputs {sorted(outputs)}; expected {OUTPUT_P50} and {OUTPUT_P90}",
                            source=service)


@functools.cache
def warm_up() -> None:
    """Forecast once from a made-up history through the serving path's own steps (cut, features,
    ratios to TPS as onnxruntime and as a batch give them), so that numba's loops are ready,
    loaded from its cache or compiled, before the first real forecast. Once per process: the
    loops' types do not depend on the model. A model's load pays for it, off the webhook's and
    the planner's event loops, not an admission request."""
    spec = FeatureSpec(step_seconds=3600, seasonality="weekly", horizon_steps=1, level_floor=1.0)
    history = pd.Series(np.ones(spec.window_steps),
                        index=pd.date_range("2024-01-01", periods=spec.window_steps, freq="h", tz="UTC"))
    core = ForecastCore("warm-up", "warm-up", spec, 0.5)
    request = core.prepare(history)
    for dtype in (np.float32, np.float64):
        core.finish(request, np.ones(1, dtype=dtype), np.ones(1, dtype=dtype))


@functools.lru_cache(maxsize=32)
def _no_events(h: int) -> np.ndarray:
    """Multipliers of a horizon without events: all 1, shared and read-only (only ever read)."""
    ones = np.ones(h)
    ones.setflags(write=False)
    return ones


def _iso(ns: int) -> str:
    return format_time(datetime.fromtimestamp(ns / _NS, UTC))
